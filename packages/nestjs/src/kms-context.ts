import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { type EncryptionContext, runWithEncryptionContext, runWithRequestId } from "@kms/core";
import { coversField } from "@kms/http-signatures";
import type { ExecutionContext } from "@nestjs/common";
import type { PlatformRequest } from "./internal/http.ts";
import { verifiedSignatureOf } from "./internal/verified-signatures.ts";

/** What a request contributes to KMS calls made while it is handled. */
export interface RequestKmsContext {
  /**
   * Bound into every ciphertext written inside the request (by the field engine and ORM
   * adapters). Keep it to stable facts such as the tenant: anything per-request here (route,
   * request id) would make the data unreadable from any other request.
   */
  readonly encryptionContext: EncryptionContext;
  /** Who is calling, for authorization and audit (user id, service name). */
  readonly principal: string | undefined;
  /** The route pattern, for audit. */
  readonly route: string;
  /** Correlates audit events with the request. */
  readonly requestId: string;
}

/** The request as `setup` sees it (Express's request on the default platform). */
export type KmsContextRequest = PlatformRequest;

export interface KmsContextOptions {
  /**
   * Builds the context from the request, like nestjs-cls's `setup`. Runs after guards, so an
   * authentication guard's `req.user` is there. Default `defaultKmsContext`. Return undefined
   * (or null) when the request has no usable tenant. A thrown value that is not an Error
   * reaches Nest's exception layer as a `KMSInternalException`.
   */
  readonly setup?: (
    request: KmsContextRequest,
    execution: ExecutionContext,
  ) => RequestKmsContext | null | undefined | Promise<RequestKmsContext | null | undefined>;
  /**
   * Header naming the tenant for the default setup when no authenticated user names one (e.g.
   * `x-tenant-id`). Unset by default: the client writes this header, so the default setup reads
   * it only when you opt in, behind something that vouches for it (a gateway that sets it after
   * authenticating the caller, or a signature policy that covers it). A signature proves only
   * that some accepted key named the tenant: with several keys, bind each to its tenants in
   * `setup` (README).
   */
  readonly tenantHeader?: string;
  /** Encryption context key the tenant is stored under; default `tenant`. */
  readonly tenantKey?: string;
  /**
   * Refuse a request without a context with 400 problem+json (default true). With false the
   * handler runs without an encryption context.
   */
  readonly required?: boolean;
  /**
   * Take the request id from the client's `x-request-id` when it is well-formed (1–128
   * characters of `A-Z a-z 0-9 _ . -`) instead of choosing one. Off by default: the id names
   * the request's KMS audit events (the guard's verification and the response signing
   * included), and a client that chooses it can file its calls under another request's id. Set
   * it only where something the client cannot bypass (a gateway) sets the header.
   */
  readonly trustRequestIdHeader?: boolean;
}

const TENANT = /^[A-Za-z0-9._:-]{1,128}$/;
const REQUEST_ID = /^[\w.-]{1,128}$/;

interface MaybeUser {
  readonly id?: unknown;
  readonly sub?: unknown;
  readonly tenantId?: unknown;
}

function header(request: KmsContextRequest, name: string): string | undefined {
  const value = request.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The tenant `name` names, unless the signature `SignatureGuard` accepted leaves the header
 * out. Such a signature vouches for the request but not for the header: anyone who saw the
 * request (a proxy on the way, a replay where nonces are off) could resend it naming another
 * tenant. Without an accepted signature the header is taken as the gateway set it.
 */
function tenantFromHeader(request: KmsContextRequest, name: string): string | undefined {
  const verified = verifiedSignatureOf(request);
  if (verified !== undefined && !coversField(verified.covered, name)) return undefined;
  return header(request, name);
}

/**
 * The default setup: tenant from the authenticated `req.user.tenantId`, or else from the
 * `tenantHeader` when one is configured (never by default: the client controls it), principal
 * from `req.user.id` (or `sub`), route from the matched route pattern (Express
 * `req.route.path`, Fastify `request.routeOptions.url`) or `METHOD /*` when there is none, never
 * the URL, request id `requestIdOf(request, options)`: the one `SignatureGuard` verified under, a
 * random UUID, or with `trustRequestIdHeader` the client's well-formed `x-request-id`. Exported
 * so a custom `setup` can extend it.
 */
export function defaultKmsContext(
  request: KmsContextRequest,
  options: KmsContextOptions = {},
): RequestKmsContext | undefined {
  const user = (
    typeof request.user === "object" && request.user !== null ? request.user : {}
  ) as MaybeUser;
  // A user's tenant wins also when it is not a usable string (a number, null): falling back to
  // the header would let the client pick the tenant.
  const tenant =
    user.tenantId !== undefined
      ? user.tenantId
      : options.tenantHeader !== undefined
        ? tenantFromHeader(request, options.tenantHeader)
        : undefined;
  if (typeof tenant !== "string" || !TENANT.test(tenant)) return undefined;
  const principal =
    typeof user.id === "string" ? user.id : typeof user.sub === "string" ? user.sub : undefined;
  // Express names the matched pattern in `route.path`, Fastify in `routeOptions.url`: never
  // the URL itself, whose ids, emails and query string would reach the audit trail. Without
  // one (no route matched) `/*` stands in, as in @kms/express.
  const pattern =
    typeof request.route?.path === "string"
      ? request.route.path
      : typeof request.routeOptions?.url === "string"
        ? request.routeOptions.url
        : "/*";
  return {
    encryptionContext: { [options.tenantKey ?? "tenant"]: tenant },
    principal,
    route: `${request.method ?? "GET"} ${pattern}`,
    requestId: requestIdOf(request, options),
  };
}

const requestIds = new WeakMap<object, string>();

/**
 * The id under which the request's KMS calls are audited (and that `KmsContextInterceptor`
 * echoes in `x-request-id`): a random UUID, or with `trustRequestIdHeader` the client's
 * well-formed `x-request-id`. Decided once per request, by the first to ask (`SignatureGuard`
 * before `KmsContextInterceptor`, both reading the module's `context` options), so the
 * signature check's KMS call, the handler's and the response signing's carry the same id. A
 * `setup` that builds its context by hand takes it from here too.
 */
export function requestIdOf(
  request: KmsContextRequest,
  options: Pick<KmsContextOptions, "trustRequestIdHeader"> = {},
): string {
  const known = requestIds.get(request);
  if (known !== undefined) return known;
  const sent = options.trustRequestIdHeader === true ? header(request, "x-request-id") : undefined;
  const requestId = sent !== undefined && REQUEST_ID.test(sent) ? sent : randomUUID();
  requestIds.set(request, requestId);
  return requestId;
}

/** The request id decided for `request` so far, if any. @internal */
export function decidedRequestId(request: object): string | undefined {
  return requestIds.get(request);
}

const storage = new AsyncLocalStorage<RequestKmsContext>();
const byRequest = new WeakMap<object, RequestKmsContext>();

/**
 * Runs `fn` with `context` as the current KMS context, its encryption context as core's ambient
 * one (`currentEncryptionContext()`) and its request id as core's ambient request id
 * (`currentRequestId()`: the in-process Kms records it in the audit events of calls that pass
 * no request id, the field engine's included), across awaits. The three are entered together,
 * so whatever runs below sees all of them or none.
 * @throws ValidationException when the request id is not a string or a context value is not
 *   a string; `fn` does not run then.
 */
export function runWithKmsContext<T>(context: RequestKmsContext, fn: () => T): T {
  return runWithRequestId(context.requestId, () =>
    storage.run(context, () => runWithEncryptionContext(context.encryptionContext, fn)),
  );
}

/** The KMS context of the request being handled, anywhere below `KmsContextInterceptor`. */
export function currentKmsContext(): RequestKmsContext | undefined {
  return storage.getStore();
}

/** The KMS context `KmsContextInterceptor` set for `request`. */
export function kmsContextOf(request: object): RequestKmsContext | undefined {
  return byRequest.get(request);
}

/** @internal */
export function setKmsContext(request: object, context: RequestKmsContext): void {
  byRequest.set(request, context);
}
