import { applyDecorators, SetMetadata, UseInterceptors } from "@nestjs/common";
import { SIGN_RESPONSE_METADATA } from "./kms.constants.ts";
import type { ResponseSigningPolicy } from "./kms-module.options.ts";
import { SignResponseInterceptor } from "./sign-response.interceptor.ts";

/**
 * Signs the route's (method) or every route's (class) responses with `SignResponseInterceptor`,
 * `options` layered over the module's `responseSigning` (method over class over module).
 */
export function SignResponse(
  options: ResponseSigningPolicy = {},
): MethodDecorator & ClassDecorator {
  return applyDecorators(
    SetMetadata(SIGN_RESPONSE_METADATA, options),
    UseInterceptors(SignResponseInterceptor),
  );
}

/** The name for `SignResponse`: sign the route's responses. */
export const Signed: typeof SignResponse = SignResponse;
