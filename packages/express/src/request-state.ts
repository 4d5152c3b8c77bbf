import type { RequestMessage } from "@kms/http-signatures";
import type { RouteEntry } from "./internal/route-entry.ts";
import type { RequestKmsContext } from "./kms-context.ts";
import type { VerifiedSignature } from "./verify-signature.ts";

/** What the middleware remembers about one request. */
export interface RequestState {
  rawBody?: Uint8Array;
  /** A body parser undid the body's Content-Encoding: the bytes digests cover are gone. */
  bodyDecoded?: boolean;
  message?: RequestMessage;
  verified?: VerifiedSignature;
  context?: RequestKmsContext;
  /** The header a context took the tenant from before any signature was verified. */
  tenantHeader?: string;
  /** The id the request's KMS calls are audited under, once decided (`requestIdOf`). */
  requestId?: string;
  /** Whether that id was decided trusting the client's `x-request-id`. */
  requestIdTrusted?: boolean;
  /** The last route `routePattern` saw matched, and its pattern as read inside it. */
  route?: { readonly matched: object; readonly pattern: string } | undefined;
  /** Set once `req.route` is watched: the application the request was in then. */
  routeWatch?: { readonly app: unknown };
  /** Once watched, the route the router entered last and the request as it was then. */
  enteredRoute?: RouteEntry;
}

const STATE = Symbol("kms.express.request");
type Holder = { [STATE]?: RequestState };

// Kept on the request object rather than in WeakMaps keyed by it: V8 keeps WeakMap entries with
// young keys alive through scavenges, so at thousands of requests per second every request's
// data is promoted and garbage collection dominates (measured about 10× plain properties).

/** The request's state, created on first use. */
export function requestState(req: object): RequestState {
  const holder = req as Holder;
  let state = holder[STATE];
  if (state === undefined) {
    state = {};
    holder[STATE] = state;
  }
  return state;
}

/** The request's state if any middleware stored some. */
export function existingRequestState(req: object): RequestState | undefined {
  return (req as Holder)[STATE];
}
