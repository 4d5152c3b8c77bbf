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
  /** Upper bound on remembered nonces; beyond it new nonces are refused (fail closed). */
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
  #nextSweep = 0;

  /** @throws ValidationException when maxEntries is not a positive integer. */
  constructor(options: MemoryNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries <= 0) {
      throw new ValidationError('"maxEntries" must be a positive integer');
    }
  }

  async checkAndStore(nonce: string, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    if (now >= this.#nextSweep || this.#seen.size >= this.#maxEntries) this.#sweep(now);
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
    this.#nextSweep = now + 10_000;
  }
}
