import type { IncomingMessage, ServerResponse } from "node:http";
import { KmsInternalError, ValidationError } from "@kms/core";
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
  StreamableFile,
} from "@nestjs/common";
import { Reflector } from "@nestjs/core";
import { map, type Observable } from "rxjs";
import {
  httpObjects,
  keptRawBody,
  type PlatformRequest,
  platformRequestMessage,
} from "./internal/http.ts";
import { asServerFault } from "./internal/server-fault.ts";
import { SIGN_RESPONSE_METADATA } from "./kms.constants.ts";
import { KMS_MODULE_OPTIONS } from "./kms.module-definition.ts";
import { decidedRequestId, kmsContextOf } from "./kms-context.ts";
import type { KmsModuleOptions, ResponseSigningPolicy } from "./kms-module.options.ts";
import { verifiedSignatureOf } from "./signature.guard.ts";

/** Responses a `SignResponseInterceptor` already signs, and the interceptor that does. */
const signing = new WeakMap<ServerResponse, SignResponseInterceptor>();

/**
 * Signs the response (RFC 9421) with Content-Digest, bound to the request it answers (`;req`:
 * the request's `@method`, `@target-uri` and, when `SignatureGuard` accepted one, its
 * signature). Options: `@SignResponse(...)` over the module's `responseSigning`. The bytes
 * actually sent are signed (the Node response is buffered until it ends), so serializers,
 * exception filters and `@Res()` handlers are all covered. A signer failure answers 500
 * problem+json instead of an unsigned response. A KMS signer's call is audited under the
 * request's id (its KMS context's, or the one `SignatureGuard` verified under), although Nest
 * writes the reply after the handler's scope has ended.
 * A response is signed once: bound app-wide and by `@SignResponse`, the first interceptor to run
 * (app-wide, then controller, then method) signs it with the options it resolves for the route,
 * and the others pass it through. Two bound from different `KmsModule`s: the first one's module
 * options are the base. A later one passes it through only when the first is of its class (or a
 * subclass of it): a subclass's hooks that would never run (the plain interceptor app-wide, a
 * subclass by `@UseInterceptors`) are a server fault, answered 500, rather than a response
 * signed as that subclass was written not to sign.
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
   * @throws KMSInternalException (a `ValidationException` in `cause`) when no signer is
   * configured for the route, or when an interceptor of a class that is not this one's (nor a
   * subclass of it) already signs the response: a server fault, answered 500 even by
   * `KmsExceptionFilter`.
   */
  intercept(execution: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (execution.getType() !== "http") return next.handle();
    const { request, incoming, response } = httpObjects(execution);
    // Bound app-wide and by @SignResponse, each interceptor would add its own signature under
    // the same label (a 500). The outermost signs, with the options it resolves for the route;
    // a later one's options are not even resolved (its module may configure no signer).
    const first = signing.get(response);
    if (first !== undefined) {
      if (first instanceof this.constructor) return next.handle();
      throw new KmsInternalError(
        `response signing bound twice with different interceptor classes: ${first.constructor.name} signs, so ${this.constructor.name}'s hooks would never run`,
      );
    }
    let options: ResponseSigningOptions;
    try {
      options = this.optionsFor(execution);
    } catch (error) {
      throw asServerFault(error, "response signing setup");
    }
    signing.set(response, this);
    signNodeResponse(response, options, () => this.binding(request, incoming));
    return next
      .handle()
      .pipe(
        map((value: unknown) =>
          value instanceof StreamableFile ? this.heldStreamFile(value, response) : value,
        ),
      );
  }

  /**
   * A `StreamableFile` whose stream fails after some of it was read: the response is held for
   * signing, so Nest sees no headers sent and answers 400 with `send`, which would be appended
   * to the bytes already held — a signed 400 carrying part of the file. Once the stream has
   * been read the connection is closed instead, as Nest does when an unsigned answer has
   * started; a stream that fails before any data keeps the file's own error handler.
   */
  protected heldStreamFile(file: StreamableFile, response: ServerResponse): StreamableFile {
    const handle = file.errorHandler;
    return file.setErrorHandler((error, res) => {
      if (!file.getStream().readableDidRead) {
        handle(error, res);
        return;
      }
      file.errorLogger(error);
      response.destroy();
    });
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

  /**
   * What the response is bound to: the request as received and its accepted signature; and the
   * request id its signing is audited under.
   */
  protected binding(request: PlatformRequest, incoming: IncomingMessage): ResponseBinding {
    return {
      request: platformRequestMessage(request, incoming, keptRawBody(request)),
      verifiedLabel: verifiedSignatureOf(request)?.label,
      requestId: kmsContextOf(request)?.requestId ?? decidedRequestId(request),
    };
  }
}
