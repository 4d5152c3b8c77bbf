import { type EncryptionContext as Context, currentEncryptionContext } from "@kms/core";
import { createParamDecorator, type ExecutionContext } from "@nestjs/common";
import { kmsContextOf } from "./kms-context.ts";

function requestOf(execution: ExecutionContext): object {
  return execution.switchToHttp().getRequest<object>();
}

/**
 * Handler parameter: the request's encryption context (set by `KmsContextInterceptor`), or
 * undefined when none was set.
 */
export const EncryptionContext: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, execution: ExecutionContext): Context | undefined =>
    kmsContextOf(requestOf(execution))?.encryptionContext ?? currentEncryptionContext(),
);

/** Handler parameter: the request's principal (user id or service), or undefined. */
export const KmsPrincipal: () => ParameterDecorator = createParamDecorator(
  (_data: unknown, execution: ExecutionContext): string | undefined =>
    kmsContextOf(requestOf(execution))?.principal,
);
