/**
 * A cache of plaintext data keys with usage limits, shared by the envelope message layer and
 * the field encryption engine: one instance may serve both, under one capacity and one set of
 * limits. Reusing a data key saves a KMS round trip per message (or value); the limits bound
 * how much data one key protects and how long its plaintext stays in memory.
 *
 * Entries are keyed by an opaque string: {@link dataKeyCacheKey} builds the message layer's
 * from (keyring identity, encryption context, algorithm suite), the field engine builds its own
 * under a per-engine prefix, so a key made for one context, keyring or engine is never handed to
 * another.
 */
import { hash } from "node:crypto";
import { type Clock, systemClock } from "../clock.ts";
import { ValidationError } from "../errors.ts";
import { assertInteger } from "../internal/assert.ts";
import { redactDataKey } from "../internal/redacted.ts";
import type { EncryptedDataKey } from "../keyring/keyring.ts";

/**
 * What a cache entry holds: the plaintext data key and the encrypted copies that go with it
 * (the copies an encryptor writes into each message; a decryptor, which only needs the key,
 * stores none).
 */
export interface CachedDataKey {
  readonly dataKey: Uint8Array;
  readonly encryptedDataKeys: readonly EncryptedDataKey[];
}

export interface DataKeyCacheOptions {
  /** Entries kept at most; the least recently used goes first. Default 100. */
  readonly capacity?: number;
  /**
   * An entry older than this is never returned, and is dropped (its key zeroed) by the next use of
   * the cache at most `maxAgeMs` later; `clear()` drops everything at once. A clock that reads
   * earlier than it did before (or NaN) expires every entry, whenever they were made: ages
   * counted from the earlier reading would grow back only as the clock catches up again.
   * Required: there is no safe default.
   */
  readonly maxAgeMs: number;
  /** Messages (or fields) one data key may protect. Default 2^32. */
  readonly maxMessages?: number;
  /** Plaintext bytes one data key may protect. Default 2^53 − 1. */
  readonly maxBytes?: number;
  /** Time source for `maxAgeMs`; ManualClock from "@kms/core/testing" in tests. */
  readonly clock?: Clock;
}

/**
 * A consumer's ready-to-use form of a cached key (the field engine's imported KeyObject and
 * precomputed headers), kept beside the entry so that a hot path neither copies nor re-imports
 * key bytes per use.
 */
export interface PreparedDataKey {
  /** Called once when the entry leaves the cache (limit, age, capacity, replace, clear). */
  release?(): void;
}

/**
 * One use of a cached key: how many messages and plaintext bytes it is charged (non-negative
 * safe integers).
 */
export interface DataKeyUsage {
  readonly messages: number;
  readonly bytes: number;
}

interface Entry {
  /** The key bytes, for consumers that take copies; absent when only a prepared form is kept. */
  readonly value: CachedDataKey | undefined;
  readonly prepared: PreparedDataKey | undefined;
  readonly createdAt: number;
  messages: number;
  bytes: number;
}

/**
 * LRU cache of data keys with age, message and byte limits. An entry that a use would push past
 * a limit is evicted (and its plaintext key zeroed), so the caller makes a fresh data key.
 */
export class DataKeyCache {
  readonly capacity: number;
  readonly maxAgeMs: number;
  readonly maxMessages: number;
  readonly maxBytes: number;
  readonly #clock: Clock;
  readonly #entries = new Map<string, Entry>();
  /**
   * The most recently used entry and its key: using it again needs neither a lookup nor LRU
   * reordering (the hot path; callers that keep their key string match it by identity).
   */
  #newest: Entry | undefined;
  #newestKey: string | undefined;
  /** When expired entries were last swept out (see {@link DataKeyCacheOptions.maxAgeMs}). */
  #sweptAt: number;
  /** The clock's last reading: one earlier than it is a clock set back. */
  #latest: number;
  #setBacks = 0;
  #hits = 0;
  #misses = 0;

  /** @throws ValidationException when a limit is not a positive integer. */
  constructor(options: DataKeyCacheOptions) {
    this.capacity = assertInteger("capacity", options.capacity ?? 100, 1, 1_000_000);
    this.maxAgeMs = assertInteger("maxAgeMs", options.maxAgeMs, 1, Number.MAX_SAFE_INTEGER);
    this.maxMessages = assertInteger("maxMessages", options.maxMessages ?? 2 ** 32, 1, 2 ** 32);
    this.maxBytes = assertInteger(
      "maxBytes",
      options.maxBytes ?? Number.MAX_SAFE_INTEGER,
      1,
      Number.MAX_SAFE_INTEGER,
    );
    this.#clock = options.clock ?? systemClock;
    this.#sweptAt = this.#clock.now();
    this.#latest = this.#sweptAt;
  }

  /** The time source of `maxAgeMs`. */
  get clock(): Clock {
    return this.#clock;
  }

  /**
   * The clock, read as a use reads it: a reading earlier than the last one (any user's), or NaN,
   * expires every entry. A consumer that ages keys of its own beside the cache (the field
   * engine's stable keys) reads time here, so that one stream of readings, whoever takes them,
   * decides when the clock was set back; it lets its own keys go when {@link clockSetBacks}
   * changes.
   */
  now(): number {
    return this.#now();
  }

  /** How many readings have been earlier than the one before them (or NaN) since creation. */
  get clockSetBacks(): number {
    return this.#setBacks;
  }

  /** Entries currently held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Hit and miss counts since creation, for tests and metrics. */
  get stats(): { hits: number; misses: number } {
    return { hits: this.#hits, misses: this.#misses };
  }

  /**
   * Returns a copy of the cached key and its encrypted copies for `key` (the caller's to use or
   * change: nothing it does reaches the entry) and charges `usage` to it, or undefined when
   * there is none or when this use would exceed a limit (the entry is then evicted).
   * @throws ValidationException when a count of `usage` is not a non-negative safe integer.
   */
  take(key: string, usage: DataKeyUsage): CachedDataKey | undefined {
    const value = this.#charge(key, usage)?.value;
    return value === undefined ? undefined : copy(value);
  }

  /**
   * Like {@link take}, but returns the prepared form stored with the entry by {@link put}
   * instead of a copy of the key bytes. `P` is the type the same consumer stored under `key`;
   * the key prefixes keep consumers apart.
   * @throws ValidationException as {@link take}.
   */
  use<P extends PreparedDataKey>(key: string, usage: DataKeyUsage): P | undefined {
    return this.#charge(key, usage)?.prepared as P | undefined;
  }

  #charge(key: string, usage: DataKeyUsage): Entry | undefined {
    assertUsage(usage);
    // One clock read per use, and no cheaper stand-in: an entry's age is checked against the
    // time of this very use, so `maxAgeMs` holds to the millisecond (a timer or a batch-wide
    // reading would let a key serve past its age by the timer's lateness or the batch's length).
    const now = this.#now();
    const newest = this.#newest;
    const entry = newest !== undefined && key === this.#newestKey ? newest : this.#entries.get(key);
    if (entry === undefined) {
      this.#misses++;
      return undefined;
    }
    if (
      this.#expired(entry, now) ||
      entry.messages + usage.messages > this.maxMessages ||
      entry.bytes + usage.bytes > this.maxBytes
    ) {
      this.#evict(key, entry);
      this.#misses++;
      return undefined;
    }
    entry.messages += usage.messages;
    entry.bytes += usage.bytes;
    if (entry !== this.#newest) {
      // Re-insert to mark as most recently used (Map keeps insertion order).
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      this.#newest = entry;
      this.#newestKey = key;
    }
    this.#hits++;
    return entry;
  }

  /**
   * Stores a fresh data key, already charged with its first `usage`. Nothing is stored when that
   * first use alone reaches a limit (then `prepared` is released at once). The cache keeps its
   * own copy of the key bytes and of each encrypted copy's ciphertext, if given, so an entry
   * never holds on to the caller's memory (a view into a whole message would keep the message
   * alive for `maxAgeMs`); `prepared`, if given, is what {@link use} returns for
   * the entry. A consumer that only ever uses the prepared form (the field engine's KeyObject)
   * passes no bytes, so no extra plaintext copy of the key lives in the cache.
   * @throws ValidationException as {@link take} (then `prepared` is released).
   */
  put(
    key: string,
    value: CachedDataKey | undefined,
    usage: DataKeyUsage,
    prepared?: PreparedDataKey,
  ): void {
    try {
      assertUsage(usage);
    } catch (error) {
      prepared?.release?.();
      throw error;
    }
    if (usage.messages >= this.maxMessages || usage.bytes >= this.maxBytes) {
      prepared?.release?.();
      return;
    }
    const now = this.#now();
    const existing = this.#entries.get(key);
    if (existing !== undefined) this.#evict(key, existing);
    const entry: Entry = {
      value: value === undefined ? undefined : own(value),
      prepared,
      createdAt: now,
      messages: usage.messages,
      bytes: usage.bytes,
    };
    this.#entries.set(key, entry);
    this.#newest = entry;
    this.#newestKey = key;
    while (this.#entries.size > this.capacity) {
      const oldest = this.#entries.keys().next().value as string;
      this.#evict(oldest, this.#entries.get(oldest)!);
    }
  }

  /**
   * Moves the entry under `from` to `to`, keeping its age and the uses charged so far, when
   * `to` is free (e.g. a key cached for one transaction becomes usable by every writer once
   * the transaction commits). Returns false, changing nothing, when `from` holds no entry or
   * `to` already holds one.
   */
  move(from: string, to: string): boolean {
    const entry = this.#entries.get(from);
    if (entry === undefined || this.#entries.has(to)) return false;
    this.#entries.delete(from);
    this.#entries.set(to, entry);
    if (this.#newest === entry) this.#newestKey = to;
    return true;
  }

  /** Drops one entry, zeroing its key. */
  delete(key: string): void {
    const entry = this.#entries.get(key);
    if (entry !== undefined) this.#evict(key, entry);
  }

  /** Drops every entry, zeroing the keys. */
  clear(): void {
    for (const [key, entry] of [...this.#entries]) {
      // A `release` that dropped or replaced another entry has evicted it already: once only.
      if (this.#entries.get(key) === entry) this.#evict(key, entry);
    }
  }

  /**
   * The clock, read for one use or put. A reading earlier than the last (a wall clock set back)
   * drops every entry: their ages, counted from it, would have shrunk by the step, and an entry
   * made just before it could serve for the step's length past `maxAgeMs`. A reading that is no
   * number (NaN) is taken as set back too, and so is the next after it.
   */
  #now(): number {
    const now = this.#clock.now();
    if (!(now >= this.#latest)) {
      this.#setBacks++;
      this.#sweptAt = now;
      this.clear();
    } else if (now - this.#sweptAt >= this.maxAgeMs) {
      this.#sweepExpired(now);
    }
    this.#latest = now;
    return now;
  }

  /**
   * An entry past its age, or created "after" now (or at no time): a wall clock set back must
   * not stretch an entry's life by the size of the step.
   */
  #expired(entry: Entry, now: number): boolean {
    const age = now - entry.createdAt;
    return !(age >= 0 && age < this.maxAgeMs);
  }

  /**
   * Drops every expired entry, at most once per `maxAgeMs` (amortised: O(size) per `maxAgeMs`),
   * so a key nobody asks for again does not stay in memory until capacity pushes it out.
   */
  #sweepExpired(now: number): void {
    this.#sweptAt = now;
    // Deleting the current entry while iterating a Map is well defined.
    for (const [key, entry] of this.#entries) {
      if (this.#expired(entry, now)) this.#evict(key, entry);
    }
  }

  #evict(key: string, entry: Entry): void {
    this.#entries.delete(key);
    if (this.#newest === entry) {
      this.#newest = undefined;
      this.#newestKey = undefined;
    }
    entry.value?.dataKey.fill(0);
    entry.prepared?.release?.();
  }
}

/**
 * Checked on every use: a count that is negative would give back uses already charged, and one
 * that is NaN would make every later comparison with the limit false, lifting it for good.
 */
function assertUsage(usage: DataKeyUsage): void {
  const { messages, bytes } = usage;
  if (!(Number.isSafeInteger(messages) && messages >= 0)) {
    throw new ValidationError(`"usage.messages" must be a non-negative safe integer`);
  }
  if (!(Number.isSafeInteger(bytes) && bytes >= 0)) {
    throw new ValidationError(`"usage.bytes" must be a non-negative safe integer`);
  }
}

/**
 * What `take` hands out: the key and the encrypted copies, all in memory of their own. Were the
 * entry's own copies handed out, whatever one caller did to them (bytes written into, an element
 * replaced) would travel in every later message drawn from the entry; a readonly type guards
 * against neither a cast nor a write into the bytes, and a typed array cannot be frozen. The
 * cost is one small allocation per encrypted copy per message (a KMS copy is under 200 bytes),
 * beside the message's own key derivation and AES work.
 */
function copy(value: CachedDataKey): CachedDataKey {
  return redactDataKey<CachedDataKey>(own(value));
}

/** The key and every ciphertext in memory of their own (the cache's copy, or a caller's). */
function own(value: CachedDataKey): CachedDataKey {
  // new Uint8Array(x) copies; Buffer#slice would return a view of the same memory.
  return {
    dataKey: new Uint8Array(value.dataKey),
    encryptedDataKeys: value.encryptedDataKeys.map((edk) => ({
      providerId: edk.providerId,
      providerInfo: edk.providerInfo,
      ciphertext: new Uint8Array(edk.ciphertext),
    })),
  };
}

/** What identifies a reusable data key. */
export interface DataKeyCacheKeyParts {
  /** "encrypt" and "decrypt" entries never mix. */
  readonly purpose: "encrypt" | "decrypt" | (string & {});
  /** `Keyring.identity`: unique per keyring instance. */
  readonly keyringIdentity: string;
  /** Canonical encoding (encodeEncryptionContext) of the context the key is bound to. */
  readonly encryptionContext: Uint8Array;
  /** Algorithm suite id, or any label of the consumer's algorithm (label "1" is not suite 1). */
  readonly suite: number | string;
  /** Decrypt entries: the encrypted data keys the plaintext key was recovered from. */
  readonly encryptedDataKeys?: readonly EncryptedDataKey[];
}

/**
 * Longest canonical context kept verbatim in an encrypt key (the caller's own contexts are short
 * and this is the hot path); a longer one goes into the digest instead.
 */
const MAX_VERBATIM_CONTEXT = 256;

/**
 * Builds a cache key: purpose, keyring identity and suite, each length-prefixed, then either the
 * context, length-prefixed (encrypt entries with a context of up to 256 bytes), or `#` and the
 * SHA-256 (base64) of the length-prefixed context and encrypted data keys. No two distinct part
 * lists give one key: the fields cannot run into each other, and the tail starts with a digit
 * when it is a verbatim context, with `#` when it is a digest. Decrypt entries always take the digest: their context and copies are the
 * message's, chosen by the sender (up to 64 KiB per field, 16 copies by default), and a key that
 * embedded them would let each entry hold megabytes where the cache bounds entries, not bytes.
 * Nothing in it is secret (identities, the public context, wrapped keys).
 */
export function dataKeyCacheKey(parts: DataKeyCacheKeyParts): string {
  const field = (value: string): string => `${value.length}:${value}`;
  // Typed: a label that spells a suite id in decimal is another algorithm than that suite.
  const suite = typeof parts.suite === "number" ? `n${parts.suite}` : `s${parts.suite}`;
  const head = field(parts.purpose) + field(parts.keyringIdentity) + field(suite);
  const context = parts.encryptionContext;
  if (parts.encryptedDataKeys === undefined && context.length <= MAX_VERBATIM_CONTEXT) {
    return head + field(view(context).toString("latin1"));
  }
  return `${head}#${bindingDigest(context, parts.encryptedDataKeys)}`;
}

/**
 * SHA-256 over the context and the copies, each field length-prefixed (u32), the copies after a
 * count (0xffffffff for none given), and strings as UTF-16 code units, which any JS string has
 * exactly (UTF-8 would write a lone surrogate as U+FFFD, making two provider ids one).
 */
function bindingDigest(context: Uint8Array, edks: readonly EncryptedDataKey[] | undefined): string {
  let size = 8 + context.length;
  for (const edk of edks ?? []) {
    size += 12 + 2 * edk.providerId.length + 2 * edk.providerInfo.length + edk.ciphertext.length;
  }
  const out = Buffer.alloc(size);
  let at = out.writeUInt32BE(context.length, 0);
  out.set(context, at);
  at = out.writeUInt32BE(edks === undefined ? 0xffffffff : edks.length, at + context.length);
  for (const edk of edks ?? []) {
    for (const text of [edk.providerId, edk.providerInfo]) {
      at = out.writeUInt32BE(2 * text.length, at);
      at += out.write(text, at, "utf16le");
    }
    at = out.writeUInt32BE(edk.ciphertext.length, at);
    out.set(edk.ciphertext, at);
    at += edk.ciphertext.length;
  }
  return hash("sha256", out, "base64");
}

/** A Buffer over the same memory (Buffer.from(uint8Array) would copy it first). */
function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
