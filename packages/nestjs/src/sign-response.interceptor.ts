import type { IncomingMessage } from "node:http";
import { ValidationError } from "@kms/core";
import {
  type ResponseBinding,
  type ResponseSigningOptions,
  signNodeResponse,
} from "@kms/http-signatures";
import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
} from "@nestjs/common";
import { Reflector } from "@nestjs/core";
import type { Observable } from "rxjs";
import {
  httpObjects,
  keptRawBody,
  type PlatformRequest,
  platformRequestMessage,
} from "./internal/http.ts";
import { SIGN_RESPONSE_METADATA } from "./kms.constants.ts";
import { KMS_MODULE_OPTIONS } from "./kms.module-definition.ts";
import type { KmsModuleOptions, ResponseSigningPolicy } from "./kms-module.options.ts";
import { verifiedSignatureOf } from "./signature.guard.ts";

/**
 * Signs the response (RFC 9421) with Content-Digest, bound to the request it answers (`;req`:
 * the request's `@method`, `@target-uri` and, when `SignatureGuard` accepted one, its
 * signature). Options: `@SignResponse(...)` over the module's `responseSigning`. The bytes
 * actually sent are signed (the Node response is buffered until it ends), so serializers,
 * exception filters and `@Res()` handlers are all covered. A signer failure answers 500
 * problem+json instead of an unsigned response.
 */
@Injectable()
export class SignResponseInterceptor implements NestInterceptor {
  protected readonly reflector: Reflector;
  protected readonly options: KmsModuleOptions;

  constructor(
    @Inject(Reflector) reflector: Reflector,
    @Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions,
  ) {
    this.reflector = reflector;
    this.options = options;
  }

  /**
   * @throws ValidationException when no signer is configured for the route.
   */
  intercept(execution: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (execution.getType() !== "http") return next.handle();
    const options = this.optionsFor(execution);
    const { request, incoming, response } = httpObjects(execution);
    signNodeResponse(response, options, () => this.binding(request, incoming));
    return next.handle();
  }

  /** The route's signing options: module defaults, then class and method decorators. */
  protected optionsFor(execution: ExecutionContext): ResponseSigningOptions {
    const [onMethod, onClass] = this.reflector.getAll<(ResponseSigningPolicy | undefined)[]>(
      SIGN_RESPONSE_METADATA,
      [execution.getHandler(), execution.getClass()],
    );
    const { signer, ...rest } = { ...this.options.responseSigning, ...onClass, ...onMethod };
    if (signer === undefined) {
      throw new ValidationError(
        '"signer" is not configured: set responseSigning.signer in KmsModule options or pass ' +
          "it to @SignResponse(...)",
      );
    }
    return { ...rest, signer };
  }

  /** What the response is bound to: the request as received and its accepted signature. */
  protected binding(request: PlatformRequest, incoming: IncomingMessage): ResponseBinding {
    return {
      request: platformRequestMessage(request, incoming, keptRawBody(request)),
      verifiedLabel: verifiedSignatureOf(request)?.label,
    };
  }
}
