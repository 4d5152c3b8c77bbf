/**
 * Replay protection: a signature's nonce is accepted once per key while the signature could
 * still be valid.
 */
import { hash } from "node:crypto";
import { ValidationError } from "@kms/core";
import { detachedString } from "./internal/detached-string.ts";

/**
 * One replay domain: every verifier given the same store accepts a `keyid` + nonce once between
 * them. Verifiers that should each accept a message once (a gateway and the service behind it)
 * need a store each (for Redis, a `prefix` each); instances of one service share one.
 */
export interface NonceStore {
  /**
   * Records `nonce` for `ttlMs` milliseconds. Resolves true when it was not seen before (the
   * request may proceed), false when it is a replay. Must be atomic across callers.
   * Verification passes the signature's `keyid`, U+0000 and its nonce: the separator cannot
   * occur in either (structured-field strings are printable ASCII), so a store may take the
   * part before it as the key the nonce belongs to.
   */
  checkAndStore(nonce: string, ttlMs: number): Promise<boolean>;
}

export interface MemoryNonceStoreOptions {
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
  /**
   * Upper bound on remembered nonces; beyond it new nonces are refused (fail closed) until some
   * expire, which a full store looks for once a second. Default 1,000,000.
   */
  readonly maxEntries?: number;
  /**
   * Upper bound on the nonces remembered for one key (the part of a nonce before its first
   * U+0000, the `keyid` as verification passes it); beyond it that key's new nonces are refused
   * (fail closed) until some of them expire, while other keys' are still accepted. One signer
   * cannot then fill the store and have every other signer's requests refused. Default: a tenth
   * of `maxEntries` (100,000, about 300 nonces a second per key kept for the default 330 s
   * signature lifetime); `maxEntries` or more turns it off. A nonce without U+0000 belongs to no
   * key and counts only against `maxEntries`.
   */
  readonly maxEntriesPerKey?: number;
}

/** A remembered nonce: when it may be forgotten, and the key it is charged to, if any. */
interface Entry {
  expiry: number;
  readonly key: KeyShare | undefined;
}

/** How many remembered nonces belong to one key. */
interface KeyShare {
  readonly id: string;
  count: number;
}

/**
 * In-process nonce store with expiry. One process only: several instances need a shared store
 * such as `RedisNonceStore`. Each nonce is remembered as its SHA-256 digest, 32 bytes whatever
 * the string passed in: that string may be cut from a request's Signature-Input field (V8 keeps
 * such a substring as a view of the whole field), so keeping it would keep every verified
 * request's header for the signature's lifetime, kilobytes per nonce.
 */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, Entry>();
  /** Keys that have nonces remembered, by key (a copy, not a view of a header). */
  readonly #keys = new Map<string, KeyShare>();
  readonly #now: () => number;
  readonly #maxEntries: number;
  readonly #maxEntriesPerKey: number;
  #lastSweep = Number.NEGATIVE_INFINITY;

  /** @throws ValidationException when maxEntries or maxEntriesPerKey is not a positive integer. */
  constructor(options: MemoryNonceStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    if (!Number.isInteger(this.#maxEntries) || this.#maxEntries <= 0) {
      throw new ValidationError('"maxEntries" must be a positive integer');
    }
    this.#maxEntriesPerKey =
      options.maxEntriesPerKey ?? Math.ceil(this.#maxEntries / PER_KEY_DIVISOR);
    if (!Number.isInteger(this.#maxEntriesPerKey) || this.#maxEntriesPerKey <= 0) {
      throw new ValidationError('"maxEntriesPerKey" must be a positive integer');
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
    const separator = nonce.indexOf("\u0000");
    const keyId = separator === -1 ? undefined : nonce.slice(0, separator);
    let key = keyId === undefined ? undefined : this.#keys.get(keyId);
    // A sweep walks every entry (tens of milliseconds at a million, the event loop held): when
    // full it runs at most once a second, not on each call, which would stall the process under
    // the very load that filled it. Until some nonce expires, a sweep would free nothing anyway.
    // A key at its share is pressed the same way, or its own expired nonces would hold it back
    // until the next regular sweep.
    const pressed =
      this.#seen.size >= this.#maxEntries ||
      (key !== undefined && key.count >= this.#maxEntriesPerKey);
    const interval = pressed ? FULL_SWEEP_INTERVAL_MS : SWEEP_INTERVAL_MS;
    if (now - this.#lastSweep >= interval) {
      this.#sweep(now);
      // The sweep forgets keys left without nonces.
      if (key !== undefined && key.count === 0) key = undefined;
    }
    // "binary": the 32 digest bytes as one-byte characters, the smallest string for them.
    const id = hash("sha256", nonce, "binary");
    const expiry = now + Math.max(ttlMs, 1);
    const known = this.#seen.get(id);
    if (known !== undefined) {
      if (known.expiry > now) return false;
      // Expired but not yet swept: its place (and its key's count) is taken over.
      known.expiry = expiry;
      return true;
    }
    if (this.#seen.size >= this.#maxEntries) return false;
    if (keyId !== undefined) {
      if (key === undefined) {
        key = { id: detachedString(keyId), count: 0 };
        this.#keys.set(key.id, key);
      }
      if (key.count >= this.#maxEntriesPerKey) return false;
      key.count++;
    }
    this.#seen.set(id, { expiry, key });
    return true;
  }

  /** How many nonces are remembered (expired ones may linger until the next sweep). */
  get size(): number {
    return this.#seen.size;
  }

  #sweep(now: number): void {
    for (const [id, entry] of this.#seen) {
      if (entry.expiry > now) continue;
      this.#seen.delete(id);
      const key = entry.key;
      if (key !== undefined && --key.count === 0) this.#keys.delete(key.id);
    }
    this.#lastSweep = now;
  }
}

/** `maxEntriesPerKey` defaults to this fraction of `maxEntries`. */
const PER_KEY_DIVISOR = 10;

/** How often a store drops expired nonces. */
const SWEEP_INTERVAL_MS = 10_000;

/** How often a full store, or one whose key is at its share, looks for expired nonces. */
const FULL_SWEEP_INTERVAL_MS = 1_000;
