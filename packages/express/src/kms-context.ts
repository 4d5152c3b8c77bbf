import { AsyncLocalStorage } from "node:async_hooks";
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
  /** The route pattern (`GET /notes/:id`) or, before routing, the path, for audit. */
  readonly route: string;
  /** Correlates audit events with the request. */
  readonly requestId: string;
}

export interface KmsContextOptions {
  /**
   * Builds the context from the request. Default `defaultKmsContext`: tenant from
   * `req.user.tenantId` (or `tenantHeader` when set), principal from `req.user.id` (or `sub`),
   * request id from `x-request-id` or random. Return undefined (or null) to refuse the request
   * (answered 400 problem+json). What it throws goes to `next(error)`, a value that is not an
   * Error as a `KmsInternalError`.
   */
  readonly resolve?: (
    req: Request,
  ) => RequestKmsContext | null | undefined | Promise<RequestKmsContext | null | undefined>;
  /**
   * Header the default resolver takes the tenant from when no authenticated user names one.
   * Unset by default: the client controls its headers, so a header naming the tenant lets any
   * caller choose whose data it reads. Set it only where something the client cannot forge
   * vouches for the header — a `verifySignature` whose `requiredComponents` include it, or a
   * gateway that sets it after authenticating.
   */
  readonly tenantHeader?: string;
  /** Encryption context key the tenant is stored under; default `tenant`. */
  readonly tenantKey?: string;
}

const storage = new AsyncLocalStorage<RequestKmsContext>();

/** The context `kmsContext` built for this request. */
export function kmsContextOf(req: Request): RequestKmsContext | undefined {
  return existingRequestState(req)?.context;
}

/**
 * The context of the request being handled, anywhere below `kmsContext` and across awaits
 * (the principal, route and request id for audit, which `currentEncryptionContext()` of
 * @kms/core does not carry). Undefined outside a request scope.
 */
export function currentKmsContext(): RequestKmsContext | undefined {
  return storage.getStore();
}

interface MaybeUser {
  user?: { id?: unknown; sub?: unknown; tenantId?: unknown };
}

const TENANT = /^[A-Za-z0-9._:-]{1,128}$/;
const REQUEST_ID = /^[\w.-]{1,128}$/;

/**
 * `METHOD pattern` once Express has matched a route, like the Nest layer's route: the pattern
 * keeps ids out of the audit trail. `kmsContext` mounted with `app.use` runs before routing,
 * so the pattern is looked up when read, and kept per matched route (a router restores
 * `baseUrl` on its way out).
 */
function routeOf(req: Request): () => string {
  let matched: object | undefined;
  let pattern = "";
  return () => {
    const route: unknown = req.route;
    const path = (route as { path?: unknown } | undefined)?.path;
    if (typeof path !== "string") return `${req.method} ${req.baseUrl}${req.path}`;
    if (route !== matched) {
      matched = route as object;
      pattern = `${req.method} ${req.baseUrl}${path}`;
    }
    return pattern;
  };
}

/**
 * The default resolver; exported so custom resolvers can extend it. The tenant comes from the
 * authenticated `req.user.tenantId`, or — only when `options.tenantHeader` is set and no user
 * names a tenant — from that header. `route` is read lazily (see `RequestKmsContext.route`):
 * a resolver that spreads this result copies the path it has at that moment.
 */
export function defaultKmsContext(
  req: Request,
  options: KmsContextOptions = {},
): RequestKmsContext | undefined {
  const user = (req as MaybeUser).user;
  // An authenticated user's tenant wins over a header the client controls, also when it is not
  // a usable string (a number, null): falling back to the header would let the client pick it.
  const tenant =
    user?.tenantId !== undefined
      ? user.tenantId
      : options.tenantHeader !== undefined
        ? req.get(options.tenantHeader)
        : undefined;
  if (typeof tenant !== "string" || !TENANT.test(tenant)) return undefined;
  const requestId = req.get("x-request-id");
  const route = routeOf(req);
  return {
    encryptionContext: { [options.tenantKey ?? "tenant"]: tenant },
    principal:
      typeof user?.id === "string" ? user.id : typeof user?.sub === "string" ? user.sub : undefined,
    get route() {
      return route();
    },
    requestId: requestId !== undefined && REQUEST_ID.test(requestId) ? requestId : randomUUID(),
  };
}

/**
 * Runs the rest of the request inside an AsyncLocalStorage scope holding the request's context:
 * `currentKmsContext()` returns it, and `currentEncryptionContext()` from @kms/core its
 * encryption context — which the field engine and the ORM adapters read to bind data to the
 * tenant without anything passed by hand. A request without a usable tenant is answered 400
 * `application/problem+json` and goes no further.
 */
export function kmsContext(options: KmsContextOptions = {}): RequestHandler {
  const resolve = options.resolve ?? ((req: Request) => defaultKmsContext(req, options));
  const sources =
    options.tenantHeader === undefined
      ? "an authenticated user"
      : `header ${options.tenantHeader} or an authenticated user`;
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
        detail: `the request names no valid tenant (${sources})`,
      });
      return;
    }
    requestState(req).context = context;
    res.setHeader("x-request-id", context.requestId);
    storage.run(context, () => runWithEncryptionContext(context.encryptionContext, () => next()));
  };
}
