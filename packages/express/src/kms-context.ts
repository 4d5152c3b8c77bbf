import { AsyncLocalStorage } from "node:async_hooks";
import {
  type EncryptionContext,
  KmsInternalError,
  runWithEncryptionContext,
  runWithRequestId,
} from "@kms/core";
import { coversField } from "@kms/http-signatures";
import type { Request, RequestHandler } from "express";
import { callbackError } from "./internal/callback-error.ts";
import { type RequestView, routeChain } from "./internal/route-chain.ts";
import { watchRouteEntry } from "./internal/route-entry.ts";
import { PROBLEM_TYPE_BASE, sendProblem } from "./problem.ts";
import { type RequestIdOptions, requestIdOf } from "./request-id.ts";
import { existingRequestState, requestState } from "./request-state.ts";
import { verifiedSignatureOf } from "./verify-signature.ts";

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
  /**
   * The route pattern with its mount patterns (`GET /users/:email/notes/:id`), or `METHOD /*`
   * before routing and where no route matched, for audit: never a part of the URL.
   */
  readonly route: string;
  /** Correlates audit events with the request. */
  readonly requestId: string;
}

export interface KmsContextOptions extends RequestIdOptions {
  /**
   * Builds the context from the request. Default `defaultKmsContext`: tenant from
   * `req.user.tenantId` (or `tenantHeader` when set), principal from `req.user.id` (or `sub`),
   * request id `requestIdOf(req)` (random; the client's `x-request-id` only with
   * `trustRequestIdHeader`). To take the tenant from your own authentication,
   * return `defaultKmsContext(req, { tenant, … })`: `route` then stays the matched pattern.
   * Return undefined (or null) to refuse the request (answered 400 problem+json). What it
   * throws goes to `next(error)`, a value that is not an Error as a `KmsInternalError`.
   */
  readonly resolve?: (
    req: Request,
  ) => RequestKmsContext | null | undefined | Promise<RequestKmsContext | null | undefined>;
  /**
   * Header the default resolver takes the tenant from when no authenticated user names one.
   * Unset by default: the client controls its headers, so a header naming the tenant lets any
   * caller choose whose data it reads. Set it only where something the client cannot forge
   * vouches for the header — a `verifySignature` whose `requiredComponents` include it, or a
   * gateway that sets it after authenticating. A signature proves only that some accepted key
   * named the tenant: with several keys, bind each to its tenants in `resolve` (README).
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

/**
 * `METHOD pattern` once Express has matched a route, as the Nest layer reports it: the mount
 * patterns of the routers and sub-applications on the way, then the route's own
 * (`GET /users/:email/notes/:id`). Never a part of the URL, so no id or address reaches the
 * audit trail. A RegExp appears as its literal (`GET /^\/v\d+//orders/:id`). `/*` stands for
 * what no pattern names: the path before routing and where no route matched (`GET /*`), and
 * mount paths the router stack does not give, in front of the route's pattern (a router older
 * than 2.3). Behind `kmsContext`, which notes where the request was when the router entered the
 * route, the pattern is the same wherever it is read: in the route, in an error handler after
 * the routers, in middleware the route passed the request on to, when a signed response ends.
 * Without it, the request is read as it is now: a sub-application that has returned, or one
 * mounted by `router.use` (it has no `parent`), leaves `/*` for the mounts in front of it. A
 * context of your own should read it when used — `get route() { return routePattern(req); }`
 * — as `defaultKmsContext` does, since `kmsContext` mounted with `app.use` runs before routing.
 * The pattern is kept per route entered: read once, later reads give the same.
 */
export function routePattern(req: Request): string {
  const route: unknown = req.route;
  if (typeof route !== "object" || route === null) return `${req.method} ${UNSHOWN}`;
  const state = requestState(req);
  const known = state.route;
  if (known !== undefined && known.matched === route) return known.pattern;
  const entry = state.enteredRoute;
  const entered = entry !== undefined && entry.route === route;
  const view: RequestView = entered ? entry : req;
  let chain: ReturnType<typeof routeChain>;
  try {
    chain = routeChain(view, route, { outer: state.routeWatch?.app, entered });
  } catch {
    // Read from audit and error paths, where a throw would lose what they record: a stack that
    // cannot be read (a layer's getter that throws) is one the pattern cannot come from.
    chain = { readable: false };
  }
  const pattern = `${req.method} ${chain.pattern ?? unresolved(view, route, chain.readable)}`;
  state.route = { matched: route, pattern };
  return pattern;
}

/** Where `route` shows a part of the path it cannot name by pattern. */
const UNSHOWN = "/*";

/**
 * The matched route's pattern where the router stack does not say how the request reached it:
 * `/*` for the mount paths in front, and for a route of several patterns, since which one
 * matched is unknown. A stack that cannot be read (a router older than 2.3) leaves no mount
 * path to show when `baseUrl` is empty; one that can, but does not lead to the route, does
 * (the route is in a sub-application that has returned).
 */
function unresolved(view: RequestView, route: object, readable: boolean): string {
  const path: unknown = (route as { path?: unknown }).path;
  const own = typeof path === "string" ? path : path instanceof RegExp ? String(path) : undefined;
  if (own === undefined) return UNSHOWN;
  return view.baseUrl === "" && !readable ? own : `${UNSHOWN}${own}`;
}

/** Options of `defaultKmsContext`: where it looks, and what a resolver of your own knows. */
export interface DefaultKmsContextOptions
  extends Pick<KmsContextOptions, "tenantHeader" | "tenantKey" | "trustRequestIdHeader"> {
  /**
   * The tenant, from your own authentication. When the property is present — even undefined —
   * neither `req.user` nor `tenantHeader` is read: a request your authentication did not vouch
   * for must not fall back to a tenant the client names. Refused (undefined returned) unless it
   * is 1–128 characters of `A-Z a-z 0-9 . _ : -`, like any tenant.
   */
  readonly tenant?: string | undefined;
  /** Who is calling. When the property is present — even undefined — `req.user` is not read. */
  readonly principal?: string | undefined;
  /** Entries bound beside the tenant's (`region`…); the tenant's own entry wins over these. */
  readonly encryptionContext?: EncryptionContext;
  /**
   * The request id; default `requestIdOf(req)`: the id `verifySignature` used if it ran, else a
   * random UUID (with `trustRequestIdHeader`, a well-formed `x-request-id` from the client).
   */
  readonly requestId?: string;
}

/**
 * The default resolver, exported so resolvers of your own can build on it. The tenant comes
 * from `options.tenant` when given, else the authenticated `req.user.tenantId`, else — only
 * when `options.tenantHeader` is set — that header. `route` is `routePattern(req)` read when
 * used, so pass what you know as options (`tenant`, `principal`, `encryptionContext`,
 * `requestId`) rather than spreading the result: a spread copies `route` as it is at that
 * moment, `GET /*` when `kmsContext` runs before routing.
 */
export function defaultKmsContext(
  req: Request,
  options: DefaultKmsContextOptions = {},
): RequestKmsContext | undefined {
  const user = (req as MaybeUser).user;
  // An authenticated user's tenant wins over a header the client controls, also when it is not
  // a usable string (a number, null): falling back to the header would let the client pick it.
  const tenant: unknown =
    "tenant" in options
      ? options.tenant
      : user?.tenantId !== undefined
        ? user.tenantId
        : options.tenantHeader !== undefined
          ? tenantFromHeader(req, options.tenantHeader)
          : undefined;
  if (typeof tenant !== "string" || !TENANT.test(tenant)) return undefined;
  const principal =
    "principal" in options
      ? options.principal
      : typeof user?.id === "string"
        ? user.id
        : typeof user?.sub === "string"
          ? user.sub
          : undefined;
  const requestId = options.requestId ?? requestIdOf(req, options);
  return {
    encryptionContext: { ...options.encryptionContext, [options.tenantKey ?? "tenant"]: tenant },
    principal,
    get route() {
      return routePattern(req);
    },
    requestId,
  };
}

/**
 * The tenant `header` names, unless the signature `verifySignature` accepted leaves it out.
 * Such a signature vouches for the request but not for the header: anyone who saw the request
 * (a replay of a signature without a nonce, a proxy on the way) could resend it naming another
 * tenant. Without an accepted signature the header is taken as the gateway set it, and noted:
 * a `verifySignature` that runs later refuses a signature that does not cover it.
 */
function tenantFromHeader(req: Request, header: string): string | undefined {
  const verified = verifiedSignatureOf(req);
  if (verified !== undefined) {
    return coversField(verified.covered, header) ? req.get(header) : undefined;
  }
  const tenant = req.get(header);
  if (tenant !== undefined) requestState(req).tenantHeader = header;
  return tenant;
}

/**
 * Runs the rest of the request inside an AsyncLocalStorage scope holding the request's context:
 * `currentKmsContext()` returns it, `currentEncryptionContext()` from @kms/core its
 * encryption context — which the field engine and the ORM adapters read to bind data to the
 * tenant without anything passed by hand — and `currentRequestId()` from @kms/core its request
 * id, which the in-process Kms records in the audit events of calls made below (the field
 * engine's included) that pass no request id of their own. A request without a usable tenant
 * is answered 400 `application/problem+json` and goes no further.
 */
export function kmsContext(options: KmsContextOptions = {}): RequestHandler {
  // Only the options kmsContext takes: an options object that also carried defaultKmsContext's
  // `tenant` (or `requestId`) would otherwise give every request that one tenant (or id).
  const defaults: DefaultKmsContextOptions = {
    ...(options.tenantHeader === undefined ? {} : { tenantHeader: options.tenantHeader }),
    ...(options.tenantKey === undefined ? {} : { tenantKey: options.tenantKey }),
    ...(options.trustRequestIdHeader === undefined
      ? {}
      : { trustRequestIdHeader: options.trustRequestIdHeader }),
  };
  const resolve = options.resolve ?? ((req: Request) => defaultKmsContext(req, defaults));
  const sources =
    options.tenantHeader === undefined
      ? "an authenticated user"
      : `header ${options.tenantHeader} or an authenticated user`;
  return async (req, res, next) => {
    // Before anything can route the request: `route` is then read as the router entered it.
    watchRouteEntry(req);
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
    if (typeof context.requestId !== "string") {
      // A resolver's bug, not the client's: refused before anything runs with the context.
      next(new KmsInternalError('"resolve" returned a context whose requestId is not a string'));
      return;
    }
    requestState(req).context = context;
    res.setHeader("x-request-id", context.requestId);
    // All three scopes are entered together, around next(): whatever runs below sees all or none.
    runWithRequestId(context.requestId, () =>
      storage.run(context, () => runWithEncryptionContext(context.encryptionContext, () => next())),
    );
  };
}
