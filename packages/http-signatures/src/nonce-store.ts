/**
 * Replay protection: a signature's nonce is accepted once per key while the signature could
 * still be valid.
 */
import { ValidationError } from "@kms/core";

/**
 * One replay domain: every verifier given the same store accepts a `keyid` + nonce once between
 * them. Verifiers that should each accept a message once (a gateway and the service behind it)
 * need a store each (for Redis, a `prefix` each); instances of one service share one.
 */
export interface NonceStore {
  /**
   * Records `nonce` for `ttlMs` milliseconds. Resolves true when it was not seen before (the
   * request may proceed), false when it is a replay. Must be atomic across callers.
   */
  checkAndStore(nonce: string, ttlMs: number): Promise<boolean>;
}

export interface MemoryNonceStoreOptions {
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
  /**
   * Upper bound on remembered nonces; beyond it new nonces are refused (fail closed) until some
   * expire, which a full store looks for once a second.
   */
  readonly maxEntries?: number;
}

/**
 * In-process nonce store with expiry. One process only: several instances need a shared store
 * such as `RedisNonceStore`.
 */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, number>();
  readonly #now: () => number;
  readonly #maxEntries: number;
  #lastSweep = Number.NEGATIVE_INFINITY;

  /** @throws ValidationException when maxEntries is not a positive integer. */
  constructor(options: MemoryNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries <= 0) {
      throw new ValidationError('"maxEntries" must be a positive integer');
    }
  }

  /** @throws ValidationException when `ttlMs` is not a number (NaN included). */
  async checkAndStore(nonce: string, ttlMs: number): Promise<boolean> {
    // A NaN expiry is never later than now, nor ever swept: the nonce would be forgotten at once
    // and its message accepted again and again.
    if (typeof ttlMs !== "number" || Number.isNaN(ttlMs)) {
      throw new ValidationError('"ttlMs" must be a number of milliseconds');
    }
    const now = this.#now();
    // A sweep walks every entry (tens of milliseconds at a million, the event loop held): when
    // full it runs at most once a second, not on each call, which would stall the process under
    // the very load that filled it. Until some nonce expires, a sweep would free nothing anyway.
    const full = this.#seen.size >= this.#maxEntries;
    const interval = full ? FULL_SWEEP_INTERVAL_MS : SWEEP_INTERVAL_MS;
    if (now - this.#lastSweep >= interval) this.#sweep(now);
    const expiry = this.#seen.get(nonce);
    if (expiry !== undefined && expiry > now) return false;
    if (this.#seen.size >= this.#maxEntries) return false;
    this.#seen.set(nonce, now + Math.max(ttlMs, 1));
    return true;
  }

  /** How many nonces are remembered (expired ones may linger until the next sweep). */
  get size(): number {
    return this.#seen.size;
  }

  #sweep(now: number): void {
    for (const [nonce, expiry] of this.#seen) if (expiry <= now) this.#seen.delete(nonce);
    this.#lastSweep = now;
  }
}

/** How often a store drops expired nonces. */
const SWEEP_INTERVAL_MS = 10_000;

/** How often a full store looks for expired nonces to make room. */
const FULL_SWEEP_INTERVAL_MS = 1_000;
