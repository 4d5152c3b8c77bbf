import { KmsInternalError } from "@kms/core";
import { PROBLEM_TYPE_BASE } from "@kms/http-signatures";
import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
} from "@nestjs/common";
import { Observable } from "rxjs";
import { httpObjects } from "./internal/http.ts";
import { asError } from "./internal/server-fault.ts";
import { KMS_MODULE_OPTIONS } from "./kms.module-definition.ts";
import {
  defaultKmsContext,
  type KmsContextOptions,
  type KmsContextRequest,
  type RequestKmsContext,
  runWithKmsContext,
  setKmsContext,
} from "./kms-context.ts";
import type { KmsModuleOptions } from "./kms-module.options.ts";
import { ProblemDetailsException } from "./problem-details.exception.ts";

/**
 * Builds the request's KMS context (encryption context, principal, route, request id) and runs
 * the handler inside it: `currentEncryptionContext()` from @kms/core — and so the field engine
 * and ORM adapters — sees the tenant's context in the handler and everything it awaits, and
 * `currentRequestId()` the request id, which the in-process Kms records in the audit events of
 * calls made there without a request id of their own (the field engine's included). A
 * request without a usable tenant is answered 400 problem+json (unless `context.required` is
 * false). What `setup` throws propagates to Nest's exception layer, a value that is not an
 * Error as a `KMSInternalException` with that value in `cause`. Bind it app-wide
 * (`{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }`) or per controller
 * (`@UseInterceptors(KmsContextInterceptor)`).
 */
@Injectable()
export class KmsContextInterceptor implements NestInterceptor {
  protected readonly options: KmsContextOptions;

  constructor(@Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions) {
    this.options = options.context ?? {};
  }

  async intercept(execution: ExecutionContext, next: CallHandler): Promise<Observable<unknown>> {
    if (execution.getType() !== "http") return next.handle();
    const { request, response } = httpObjects(execution);
    let context: RequestKmsContext | null | undefined;
    try {
      context = await this.resolveContext(request, execution);
    } catch (error) {
      throw asError(error, "the KMS context setup");
    }
    if (context === undefined || context === null) {
      if (this.options.required === false) return next.handle();
      throw this.missingContext();
    }
    if (typeof context.requestId !== "string") {
      // A setup's bug, not the client's: refused (500) before the handler runs.
      throw new KmsInternalError("the KMS context setup returned a requestId that is not a string");
    }
    setKmsContext(request, context);
    if (!response.headersSent) response.setHeader("x-request-id", context.requestId);
    // Nest binds the handler's async scope when `handle()` is called, so both the call and
    // the subscription happen inside the context (its request id included): the handler, its
    // awaits and an Observable or stream it returns, subscribed to later, inherit it.
    return new Observable((subscriber) =>
      runWithKmsContext(context, () => next.handle().subscribe(subscriber)),
    );
  }

  /**
   * Builds the context; default `options.setup` or `defaultKmsContext`. Override to extend.
   * Undefined or null: the request has no context.
   */
  protected resolveContext(
    request: KmsContextRequest,
    execution: ExecutionContext,
  ): RequestKmsContext | null | undefined | Promise<RequestKmsContext | null | undefined> {
    return this.options.setup !== undefined
      ? this.options.setup(request, execution)
      : defaultKmsContext(request, this.options);
  }

  /** The error for a request without a usable tenant. */
  protected missingContext(): Error {
    const { tenantHeader } = this.options;
    const source =
      tenantHeader !== undefined
        ? `header ${tenantHeader} or an authenticated user`
        : "an authenticated user";
    return new ProblemDetailsException({
      type: `${PROBLEM_TYPE_BASE}context/tenant-missing`,
      title: "No tenant for this request",
      status: 400,
      detail: `the request names no valid tenant (${source})`,
    });
  }
}
