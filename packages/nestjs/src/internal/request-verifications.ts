/**
 * What the signature guards of one request have checked already: the verifications that
 * accepted it, and the nonces they recorded, so that a verification is not repeated and a
 * request's own nonce is not taken for a replay by a later guard.
 */
import type { NonceStore } from "@kms/http-signatures";

/**
 * Everything a verification's outcome depends on, compared by value: two guards whose keys
 * are equal would accept and refuse the same requests, whatever their classes or instances.
 */
export interface VerificationKey {
  /** The guard that verified (a guard bound twice is the same check, whatever it computes). */
  readonly guard: object;
  /**
   * The route's handler and controller: `keyLookup` sees the execution context, so a policy's
   * outcome may differ by route. One request meets several routes when a handler injects
   * `@Next()` and calls it: Express hands the same request to the next route matching the
   * path, whose guards run again with its own handler.
   */
  readonly handler: object;
  readonly controller: object;
  /**
   * Whose hooks build the message and resolve keys: one shared token while they are the
   * defaults, else the guard itself, since an overridden hook may read the instance's own
   * state (a registry injected into its constructor).
   */
  readonly hooks: object;
  /** The KMS the key lookup is given. */
  readonly kms: object;
  /** The replay domain: the store object itself (two objects are two domains), or none. */
  readonly nonceStore: NonceStore | false;
  /** The rest of the effective policy, compared member by member. */
  readonly policy: object;
}

/** Per request: the checks that accepted it, and the nonces they recorded. */
export interface RequestVerification {
  readonly accepted: VerificationKey[];
  /**
   * Per nonce store, the nonces this request's checks recorded in it. A nonce recorded in
   * another store is no proof for this one: a subclass with its own store (a shared Redis store
   * next to an instance's memory) must still record it there, or a replay to another instance
   * would meet neither.
   */
  readonly nonces: WeakMap<NonceStore, Set<string>>;
}

const verifications = new WeakMap<object, RequestVerification>();

export function requestVerification(request: object): RequestVerification {
  let state = verifications.get(request);
  if (state === undefined) {
    state = { accepted: [], nonces: new WeakMap() };
    verifications.set(request, state);
  }
  return state;
}

/** Whether a verification that already accepted this request is the very one `key` describes. */
export function acceptedAlready(state: RequestVerification, key: VerificationKey): boolean {
  return state.accepted.some(
    (earlier) =>
      earlier.handler === key.handler &&
      earlier.controller === key.controller &&
      (earlier.guard === key.guard ||
        (earlier.hooks === key.hooks &&
          earlier.kms === key.kms &&
          earlier.nonceStore === key.nonceStore &&
          sameValue(earlier.policy, key.policy, 0))),
  );
}

/**
 * `store` as one more guard on the same request sees it: a nonce that this request's earlier
 * verification recorded in this same store is the request's own, not a replay. Every other
 * nonce (one recorded only in another store object included) goes to `store`, whose answer
 * stands: a replay that the earlier guard's store had not seen (another instance's memory) is
 * still refused here.
 */
export function withRequestNonces(store: NonceStore, state: RequestVerification): NonceStore {
  let recorded = state.nonces.get(store);
  if (recorded === undefined) {
    recorded = new Set();
    state.nonces.set(store, recorded);
  }
  const own = recorded;
  return {
    checkAndStore: async (nonce, ttlMs) => {
      if (own.has(nonce)) return true;
      const fresh = await store.checkAndStore(nonce, ttlMs);
      if (fresh) own.add(nonce);
      return fresh;
    },
  };
}

/** Deeper than any policy nests (`requiredComponents` → component → its fields). */
const MAX_DEPTH = 8;

/**
 * Equal as policy values: primitives and plain data member by member, anything else
 * (functions, stores, verifiers, class instances) by identity. Beyond `MAX_DEPTH`, or on a
 * cycle, only identity counts: a verification is then repeated, never skipped wrongly.
 */
function sameValue(a: unknown, b: unknown, depth: number): boolean {
  if (Object.is(a, b)) return true;
  if (depth >= MAX_DEPTH || typeof a !== "object" || typeof b !== "object") return false;
  if (a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => sameValue(item, b[i], depth + 1));
  }
  if (!isPlainData(a) || !isPlainData(b)) return false;
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  for (const name of new Set([...Object.keys(left), ...Object.keys(right)])) {
    if (!sameValue(left[name], right[name], depth + 1)) return false;
  }
  return true;
}

function isPlainData(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
