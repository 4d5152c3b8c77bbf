import { randomUUID } from "node:crypto";
import { type EncryptionContext, runWithEncryptionContext } from "@kms/core";
import type { Request, RequestHandler } from "express";
import { callbackError } from "./internal/callback-error.ts";
import { PROBLEM_TYPE_BASE, sendProblem } from "./problem.ts";
import { existingRequestState, requestState } from "./request-state.ts";

/** What a request contributes to KMS calls made while it is handled. */
export interface RequestKmsContext {
  /**
   * Bound into every ciphertext written inside the request (by the field engine). Keep it to
   * stable facts such as the tenant: anything per-request here (route, request id) would make
   * the data unreadable from any other request.
   */
  readonly encryptionContext: EncryptionContext;
  /** Who is calling, for authorization and audit (user id, service name). */
  readonly principal: string | undefined;
  /** The route pattern or path, for audit. */
  readonly route: string;
  /** Correlates audit events with the request. */
  readonly requestId: string;
}

export interface KmsContextOptions {
  /**
   * Builds the context from the request. Default: tenant from `tenantHeader` or
   * `req.user.tenantId`, principal from `req.user.id`, request id from `x-request-id` or random.
   * Return undefined (or null) to refuse the request (answered 400 problem+json). What it
   * throws goes to `next(error)`, a value that is not an Error as a `KmsInternalError`.
   */
  readonly resolve?: (
    req: Request,
  ) => RequestKmsContext | null | undefined | Promise<RequestKmsContext | null | undefined>;
  /** Header naming the tenant for the default resolver; default `x-tenant-id`. */
  readonly tenantHeader?: string;
  /** Encryption context key the tenant is stored under; default `tenant`. */
  readonly tenantKey?: string;
}

/** The context `kmsContext` built for this request. */
export function kmsContextOf(req: Request): RequestKmsContext | undefined {
  return existingRequestState(req)?.context;
}

interface MaybeUser {
  user?: { id?: unknown; tenantId?: unknown };
}

const TENANT = /^[A-Za-z0-9._:-]{1,128}$/;

/** The default resolver; exported so custom resolvers can extend it. */
export function defaultKmsContext(
  req: Request,
  options: KmsContextOptions = {},
): RequestKmsContext | undefined {
  const user = (req as MaybeUser).user;
  // An authenticated user's tenant wins over a header the client controls, also when it is not
  // a usable string (a number, null): falling back to the header would let the client pick it.
  const tenant =
    user?.tenantId !== undefined ? user.tenantId : req.get(options.tenantHeader ?? "x-tenant-id");
  if (typeof tenant !== "string" || !TENANT.test(tenant)) return undefined;
  const requestId = req.get("x-request-id");
  return {
    encryptionContext: { [options.tenantKey ?? "tenant"]: tenant },
    principal: typeof user?.id === "string" ? user.id : undefined,
    route: `${req.method} ${req.baseUrl}${req.path}`,
    requestId:
      requestId !== undefined && /^[\w.-]{1,128}$/.test(requestId) ? requestId : randomUUID(),
  };
}

/**
 * Runs the rest of the request inside an AsyncLocalStorage scope whose encryption context is
 * the request's (so `currentEncryptionContext()` from @kms/core, and the ORM adapters reading
 * it, bind data to the tenant without passing anything by hand). A request without a usable
 * tenant is answered 400 `application/problem+json` and goes no further.
 */
export function kmsContext(options: KmsContextOptions = {}): RequestHandler {
  const resolve = options.resolve ?? ((req: Request) => defaultKmsContext(req, options));
  return async (req, res, next) => {
    let context: RequestKmsContext | null | undefined;
    try {
      context = await resolve(req);
    } catch (error) {
      next(callbackError(error, '"resolve"'));
      return;
    }
    if (context === undefined || context === null) {
      sendProblem(res, {
        type: `${PROBLEM_TYPE_BASE}context/tenant-missing`,
        title: "No tenant for this request",
        status: 400,
        detail: `the request names no valid tenant (header ${options.tenantHeader ?? "x-tenant-id"} or an authenticated user)`,
      });
      return;
    }
    requestState(req).context = context;
    res.setHeader("x-request-id", context.requestId);
    runWithEncryptionContext(context.encryptionContext, () => next());
  };
}
