import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { DataKeyCache, DataKeyUsage, PreparedDataKey } from "../caching/data-key-cache.ts";
import type { Clock } from "../clock.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { KmsInternalError } from "../errors.ts";
import { type AesKey, importAesKey } from "../hsm/aes-gcm.ts";
import { randomBytes } from "../hsm/random.ts";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import { encodeBinding, type FieldBinding, holdsKeyContext } from "./binding.ts";
import type { DataKeyRecord, DataKeyStore } from "./data-key-store.ts";
import {
  DATA_KEY_ID_LENGTH,
  FORMAT_RANDOMIZED,
  invalidFieldCiphertext as generic,
  HEADER_LENGTH,
  hexOf,
} from "./field-format.ts";

/**
 * A randomized data key in use for writing: the prepared form of a "w" entry of the shared
 * DataKeyCache, which counts its uses against the limits.
 */
export interface Materials extends PreparedDataKey {
  readonly id: string;
  readonly header: Uint8Array;
  /** header || binding per binding (cached binding encodings are stable objects). */
  readonly aads: WeakMap<Uint8Array, Uint8Array>;
  /** The binding sealed last and its entry of `aads`: a column's values come in runs. */
  lastBinding: Uint8Array | undefined;
  lastAad: Uint8Array | undefined;
  readonly key: AesKey;
  readonly kmsKeyId: string;
}

/** A decrypted data key for reading: the prepared form of an "r" entry of the DataKeyCache. */
export interface LoadedKey extends PreparedDataKey {
  readonly key: AesKey;
  /**
   * The key context the data key is wrapped under (its data-key row's). A value opens under it
   * only when its binding's context holds every one of these pairs (FORMAT §6.2).
   */
  readonly context: Readonly<EncryptionContext>;
  /** When the cache took it, on the cache's clock. */
  readonly loadedAt: number;
  /** header || binding per binding encoding (cached encodings are stable objects). */
  readonly aads: WeakMap<Uint8Array, Uint8Array>;
  /** The binding opened last and its entry of `aads` (a binding that passed the key check). */
  lastBinding: Uint8Array | undefined;
  lastAad: Uint8Array | undefined;
  /** Set when the cache let go of the entry. */
  released: boolean;
}

/**
 * The data key of (KMS key, context) behind deterministic values and blind indexes. Its raw
 * bytes (and the subkeys derived from them) are read only inside `FieldDataKeys.useStable`.
 */
export interface StableKey {
  readonly id: string;
  readonly raw: Uint8Array;
  readonly kmsKeyId: string;
  /** As LoadedKey.context. */
  readonly context: Readonly<EncryptionContext>;
  /** `useStable` calls running on it (more than one when a caller's getter re-enters). */
  holds: number;
  /** Set by `clear()`: never used again, and zeroed as soon as no use holds it. */
  dropped: boolean;
}

export interface FieldDataKeysOptions {
  readonly kms: KmsLike;
  readonly store: DataKeyStore;
  readonly keyId: (context: EncryptionContext) => string;
  readonly clock: Clock;
  /** Randomized data keys, for writing and reading; possibly shared with other engines. */
  readonly cache: DataKeyCache;
}

const encoder = new TextEncoder();
const DET_SALT = encoder.encode("kms1 deterministic");
const BIDX_SALT = encoder.encode("kms1 blind index");
const STABLE_ID_PREFIX = encoder.encode("kms1 stable data key");
const MAX_DERIVED_KEYS = 4096;
const MAX_DURABLE_KEYS = 4096;
/** Data-key rows and stable keys kept per engine; the oldest go first (reloaded on demand). */
const MAX_RECORDS = 4096;
const MAX_STABLE_KEYS = 4096;
/** Size of the live stable key set below which it is not swept for collected keys. */
const MIN_LIVE_SWEEP = 1024;
const NO_USE: DataKeyUsage = { messages: 0, bytes: 0 };
let engines = 0;

/**
 * The data keys of a field engine (docs/FORMAT.md §6.1, §6.4): randomized keys for writing,
 * replaced at the cache limits, and decrypted keys for reading, by id — both held in a
 * DataKeyCache, which may be shared with the message layer and other engines; stable keys per
 * (KMS key, context) and their derived subkeys, held here (they are never replaced by limits:
 * equal values must keep encrypting equally). Every KMS call of the engine happens here, at
 * most once per data key at a time (concurrent callers share the pending call).
 */
export class FieldDataKeys {
  readonly #kms: KmsLike;
  readonly #store: DataKeyStore;
  readonly #selectKey: (context: EncryptionContext) => string;
  readonly #clock: Clock;
  readonly #cache: DataKeyCache;
  /**
   * Cache key prefixes of this engine's entries. Not a digit: the message layer's keys
   * (dataKeyCacheKey) start with one, so the two never collide in a shared cache.
   */
  readonly #writePrefix: string;
  readonly #readPrefix: string;
  readonly #materialsInFlight = new Map<string, Promise<Materials>>();
  readonly #readKeysInFlight = new Map<string, Promise<LoadedKey>>();
  readonly #stableByScope = new Map<string, Promise<StableKey>>();
  readonly #stableById = new Map<string, Promise<StableKey>>();
  /** The settled entries of #stableById, for synchronous reads. */
  readonly #stableReady = new Map<string, StableKey>();
  /**
   * The read key last found by header, so that a result set under one data key costs a
   * 16-byte comparison per value instead of a hex id and a cache lookup. It does not refresh
   * the entry's LRU position; under capacity pressure a hot key may be evicted and is then
   * unwrapped again (one KMS call), never used after release.
   */
  #lastHeader = new Uint8Array(HEADER_LENGTH);
  #lastLoaded: LoadedKey | undefined;
  /** Subkeys per stable key object: ids repeat when a rolled-back key is created again. */
  readonly #derived = new WeakMap<StableKey, Map<string, Uint8Array>>();
  readonly #records = new Map<string, Promise<DataKeyRecord | undefined>>();
  readonly #scopedStable = new Map<string, Promise<StableKey>>();
  /** Transaction scope → the write cache keys (durable form) of keys created inside it. */
  readonly #scopedWrites = new Map<string, Set<string>>();
  /**
   * Every stable key made since the last clear(), weakly: clear() must zero the ones any map or
   * in-flight call still reaches, including keys that bounded maps forgot but a caller holds.
   */
  readonly #liveStable = new Set<WeakRef<StableKey>>();
  #liveStableLimit = MIN_LIVE_SWEEP;
  /** Counts clear() calls: a key loaded across one is dropped on arrival. */
  #generation = 0;
  /** ctxKey → KMS key id → write cache key (see #durableKey). */
  readonly #durableKeys = new Map<string, Map<string, string>>();
  /** The (KMS key id, ctxKey) #durableKey answered last and its answer: writes come in runs. */
  #lastDurable:
    | { readonly keyId: string; readonly ctxKey: string; readonly key: string }
    | undefined;

  constructor(options: FieldDataKeysOptions) {
    this.#kms = options.kms;
    this.#store = options.store;
    this.#selectKey = options.keyId;
    this.#clock = options.clock;
    this.#cache = options.cache;
    engines += 1;
    this.#writePrefix = `field ${engines} w\u0000`;
    this.#readPrefix = `field ${engines} r\u0000`;
  }

  /**
   * Writing materials for `context` if a cached data key can take `bytes` more (charging it),
   * without any KMS call; undefined otherwise.
   */
  cachedMaterials(
    context: EncryptionContext,
    ctxKey: string,
    bytes: number,
    transactionScope: string | undefined,
  ): Materials | undefined {
    const durableKey = this.#durableKey(this.#selectKey(context), ctxKey);
    return this.#cachedWrite(durableKey, { messages: 1, bytes }, transactionScope);
  }

  /**
   * The write cache key of (KMS key, context), kept once built: a key string made afresh per
   * value would be flattened and hashed by every cache lookup, which cost as much as the
   * lookup itself; a kept one carries its hash and matches the cache's own key by identity.
   */
  #durableKey(keyId: string, ctxKey: string): string {
    const seen = this.#lastDurable;
    if (seen !== undefined && seen.keyId === keyId && seen.ctxKey === ctxKey) return seen.key;
    const key = this.#durableKeyMiss(keyId, ctxKey);
    this.#lastDurable = { keyId, ctxKey, key };
    return key;
  }

  #durableKeyMiss(keyId: string, ctxKey: string): string {
    let byKeyId = this.#durableKeys.get(ctxKey);
    let key = byKeyId?.get(keyId);
    if (key !== undefined) return key;
    if (byKeyId === undefined) {
      // Bounded: contexts may be attacker-chosen (tenant ids from requests).
      if (this.#durableKeys.size >= MAX_DURABLE_KEYS) this.#durableKeys.clear();
      byKeyId = new Map();
      this.#durableKeys.set(ctxKey, byKeyId);
    }
    // A key selector may pick among many KMS keys for one context (rotation): bound that too.
    if (byKeyId.size >= MAX_DURABLE_KEYS) byKeyId.clear();
    key = `${this.#writePrefix}${keyId}\u0000${ctxKey}`;
    byKeyId.set(keyId, key);
    return key;
  }

  /** The engine's own write key, else (inside a transaction) the one made in that scope. */
  #cachedWrite(
    durableKey: string,
    usage: DataKeyUsage,
    transactionScope: string | undefined,
  ): Materials | undefined {
    const durable = this.#cache.use<Materials>(durableKey, usage);
    if (durable !== undefined || transactionScope === undefined) return durable;
    return this.#cache.use<Materials>(scopedKey(transactionScope, durableKey), usage);
  }

  /**
   * The cached read key of a randomized value, found by its header (format byte and data key
   * id, bytes 0–16), if the cache still holds it. `now`, on the cache's clock, may be read once
   * for a batch of values (the key's age is then checked against the batch's start).
   */
  cachedReadKeyOf(stored: Uint8Array, now?: number): LoadedKey | undefined {
    let loaded = this.#lastLoaded;
    if (loaded !== undefined) {
      const last = this.#lastHeader;
      for (let i = 1; i < HEADER_LENGTH; i++) {
        if (stored[i] !== last[i]) {
          loaded = undefined;
          break;
        }
      }
      if (
        loaded !== undefined &&
        !loaded.released &&
        (now ?? this.#cache.clock.now()) - loaded.loadedAt < this.#cache.maxAgeMs
      ) {
        return loaded;
      }
    }
    loaded = this.#cache.use<LoadedKey>(this.#readPrefix + hexOf(stored, 1, HEADER_LENGTH), NO_USE);
    if (loaded === undefined) return undefined;
    this.#lastHeader.set(stored.subarray(0, HEADER_LENGTH));
    this.#lastLoaded = loaded;
    return loaded;
  }

  /** Now on the cache's clock, for `cachedReadKeyOf`. */
  now(): number {
    return this.#cache.clock.now();
  }

  /** The stable data key `id` if it has been loaded. */
  cachedStable(id: string): StableKey | undefined {
    return this.#stableReady.get(id);
  }

  /**
   * The transaction behind `transactionScope` ended. On commit the rows of the data keys made
   * inside it are durable, so its write keys and stable keys become the engine's own (where
   * none was made meanwhile) and serve writers outside it; on rollback they are dropped.
   */
  endScope(transactionScope: string, committed: boolean): void {
    for (const durableKey of this.#scopedWrites.get(transactionScope) ?? []) {
      const inScope = scopedKey(transactionScope, durableKey);
      if (!committed || !this.#cache.move(inScope, durableKey)) this.#cache.delete(inScope);
    }
    this.#scopedWrites.delete(transactionScope);
    const prefix = scopedKey(transactionScope, "");
    for (const [inScope, pending] of [...this.#scopedStable]) {
      if (!inScope.startsWith(prefix)) continue;
      this.#scopedStable.delete(inScope);
      if (!committed) {
        // The key's row is gone, but its id is derived from (KMS key, context): the next key
        // made for them has the same id, so anything cached under that id would serve the
        // rolled-back material. Already settled, so this runs before the caller goes on.
        pending.then(
          (stable) => this.#forgetStable(stable.id),
          () => {},
        );
        continue;
      }
      const scope = inScope.slice(prefix.length);
      // Only a key that was found or created: a failed load leaves nothing behind.
      pending.then(
        (stable) => {
          // A clear() since the key was made dropped it: caching it would hand it out forever.
          if (!stable.dropped && !this.#stableByScope.has(scope))
            bounded(this.#stableByScope, scope, Promise.resolve(stable), MAX_STABLE_KEYS);
        },
        () => {},
      );
    }
  }

  #forgetStable(id: string): void {
    this.#stableById.delete(id);
    this.#stableReady.delete(id);
    this.#records.delete(id);
  }

  /**
   * Forgets every data key: the cache's entries (all of them, if shared; their key bytes are
   * zeroed there, and this engine's own hold only KeyObjects, whose bytes were zeroed on import)
   * and the stable keys, whose raw bytes and derived subkeys are zeroed — at once, or, for a key
   * a `useStable` is running on, when that use returns. A key that a pending load delivers
   * after this call is dropped on arrival: every value operation in flight loads its stable key
   * again (`useStable` refuses dropped keys), none uses material cached before the call.
   */
  clear(): void {
    this.#generation += 1;
    this.#cache.clear();
    this.#lastLoaded = undefined;
    this.#stableByScope.clear();
    this.#stableById.clear();
    this.#stableReady.clear();
    this.#records.clear();
    this.#scopedStable.clear();
    this.#scopedWrites.clear();
    for (const ref of this.#liveStable) {
      const stable = ref.deref();
      if (stable !== undefined) this.#drop(stable);
    }
    this.#liveStable.clear();
    this.#liveStableLimit = MIN_LIVE_SWEEP;
  }

  /**
   * Runs `use` on `stable` (the only place its raw bytes and subkeys are read), holding it so
   * that a clear() during `use` — from a getter or key selector it calls — zeroes the key only
   * after `use` returns. Returns undefined, without calling `use`, when the key was dropped
   * since the caller got it: the caller then loads it again. `use` never returns undefined.
   */
  useStable<T>(stable: StableKey, use: (stable: StableKey) => T): T | undefined {
    if (stable.dropped) return undefined;
    stable.holds += 1;
    try {
      return use(stable);
    } finally {
      stable.holds -= 1;
      if (stable.holds === 0 && stable.dropped) this.#zeroStable(stable);
    }
  }

  /**
   * `useStable` on the key `load` answers, loading it again while a clear() drops it between
   * the load and the use.
   */
  async withStable<T>(load: () => Promise<StableKey>, use: (stable: StableKey) => T): Promise<T> {
    for (;;) {
      const value = this.useStable(await load(), use);
      if (value !== undefined) return value;
    }
  }

  /** A stable key made of freshly unwrapped or generated bytes, loaded since `generation`. */
  #newStable(
    id: string,
    raw: Uint8Array,
    kmsKeyId: string,
    context: EncryptionContext,
    generation: number,
  ): StableKey {
    const stable: StableKey = {
      id,
      raw,
      kmsKeyId,
      context: Object.freeze({ ...context }),
      holds: 0,
      dropped: false,
    };
    if (generation !== this.#generation) {
      // Its load began before a clear(): the clear covers it too.
      this.#drop(stable);
      return stable;
    }
    if (this.#liveStable.size >= this.#liveStableLimit) {
      // Amortised O(1): forget the references the GC has emptied and the dropped keys.
      for (const ref of this.#liveStable) {
        if (ref.deref()?.dropped !== false) this.#liveStable.delete(ref);
      }
      this.#liveStableLimit = Math.max(MIN_LIVE_SWEEP, 2 * this.#liveStable.size);
    }
    this.#liveStable.add(new WeakRef(stable));
    return stable;
  }

  #drop(stable: StableKey): void {
    if (stable.dropped) return;
    stable.dropped = true;
    if (stable.holds === 0) this.#zeroStable(stable);
  }

  #zeroStable(stable: StableKey): void {
    stable.raw.fill(0);
    const derived = this.#derived.get(stable);
    if (derived === undefined) return;
    for (const key of derived.values()) key.fill(0);
    derived.clear();
  }

  /**
   * Per-(data key, purpose, model, field, context) subkey; cached, bounded. Only inside
   * `useStable` (the subkey is zeroed with its stable key).
   */
  derive(stable: StableKey, purpose: "d" | "b", binding: FieldBinding, ctxKey: string): Uint8Array {
    // Length-prefixed like contextKey: names may hold NUL, and a separator alone would let
    // ("a\0b", "c") and ("a", "b\0c") share one subkey (one blind-index key for two fields).
    const { model, field } = binding;
    const cacheKey = `${purpose}${model.length}:${model}${field.length}:${field}${ctxKey}`;
    let derived = this.#derived.get(stable);
    if (derived === undefined) {
      derived = new Map();
      this.#derived.set(stable, derived);
    }
    const hit = derived.get(cacheKey);
    if (hit !== undefined) return hit;
    const info = encodeBinding(binding, ctxKey);
    const key =
      purpose === "d"
        ? hkdf(sha256, stable.raw, DET_SALT, info, 64)
        : hkdf(sha256, stable.raw, BIDX_SALT, info, 32);
    if (derived.size >= MAX_DERIVED_KEYS) derived.clear();
    derived.set(cacheKey, key);
    return key;
  }

  /**
   * Writing materials charged with `messages` values (default one; none to learn which key new
   * values get) of `bytes` in all: a cached data key when one can take them, else a fresh one.
   * Inside a transaction scope, a fresh key is cached under that scope only (its row may be
   * rolled back).
   */
  async materialsFor(
    context: EncryptionContext,
    ctxKey: string,
    bytes: number,
    transactionScope?: string,
    messages = 1,
  ): Promise<Materials> {
    const keyId = this.#selectKey(context);
    const durableKey = this.#durableKey(keyId, ctxKey);
    const usage = { messages, bytes };
    if (transactionScope !== undefined) {
      const cached = this.#cachedWrite(durableKey, usage, transactionScope);
      if (cached !== undefined) return cached;
      const fresh = await this.#newMaterials(
        keyId,
        context,
        scopedKey(transactionScope, durableKey),
        usage,
      );
      let created = this.#scopedWrites.get(transactionScope);
      if (created === undefined) {
        created = new Set();
        // Callers that never end their scopes leave entries that simply age out of the cache.
        bounded(this.#scopedWrites, transactionScope, created);
      }
      created.add(durableKey);
      return fresh;
    }
    for (;;) {
      const cached = this.#cache.use<Materials>(durableKey, usage);
      if (cached !== undefined) return cached;
      const pending = this.#materialsInFlight.get(durableKey);
      if (pending === undefined) {
        const fresh = this.#newMaterials(keyId, context, durableKey, usage).finally(() =>
          this.#materialsInFlight.delete(durableKey),
        );
        this.#materialsInFlight.set(durableKey, fresh);
        return fresh;
      }
      await pending;
      // Loop: a concurrent burst may have used up the fresh key's limits already.
    }
  }

  /**
   * Generates a data key, stores it wrapped, and caches it for writing under `cacheKey`
   * (charged with its first `usage`) and for reading back by id.
   */
  async #newMaterials(
    keyId: string,
    context: EncryptionContext,
    cacheKey: string,
    usage: DataKeyUsage,
  ): Promise<Materials> {
    const generated = await this.#kms.generateDataKey({
      keyId,
      keySpec: "AES_256",
      encryptionContext: context,
    });
    const idBytes = randomBytes(DATA_KEY_ID_LENGTH);
    const id = hexOf(idBytes);
    const stored = await this.#store.insert({
      id,
      kmsKeyId: generated.keyId,
      wrappedKey: generated.ciphertextBlob,
      encryptionContext: { ...context },
      purpose: "randomized",
      createdAt: this.#clock.now(),
    });
    if (stored.kmsKeyId !== generated.keyId) {
      generated.plaintext.fill(0);
      throw new KmsInternalError("data key id collision in the data key store");
    }
    const header = new Uint8Array(HEADER_LENGTH);
    header[0] = FORMAT_RANDOMIZED;
    header.set(idBytes, 1);
    // The cache keeps only the imported key (importAesKey zeroes the plaintext bytes).
    const key = importAesKey(generated.plaintext);
    const materials: Materials = {
      id,
      header,
      aads: new WeakMap(),
      lastBinding: undefined,
      lastAad: undefined,
      key,
      kmsKeyId: generated.keyId,
    };
    this.#cache.put(cacheKey, undefined, usage, materials);
    this.#putReadKey(id, key, context);
    return materials;
  }

  #putReadKey(id: string, key: AesKey, context: EncryptionContext): LoadedKey {
    const loaded: LoadedKey = {
      key,
      context: Object.freeze({ ...context }),
      loadedAt: this.#cache.clock.now(),
      aads: new WeakMap(),
      lastBinding: undefined,
      lastAad: undefined,
      released: false,
      release() {
        this.released = true;
      },
    };
    // A key loaded again under an id (e.g. after its age ran out) replaces the remembered one.
    this.#lastLoaded = undefined;
    this.#cache.put(this.#readPrefix + id, undefined, NO_USE, loaded);
    return loaded;
  }

  readKey(id: string): Promise<LoadedKey> {
    const hit = this.#cache.use<LoadedKey>(this.#readPrefix + id, NO_USE);
    if (hit !== undefined) return Promise.resolve(hit);
    let pending = this.#readKeysInFlight.get(id);
    if (pending === undefined) {
      pending = this.#unwrap(id, "randomized")
        .then(({ raw, context }) => this.#putReadKey(id, importAesKey(raw), context))
        .finally(() => this.#readKeysInFlight.delete(id));
      this.#readKeysInFlight.set(id, pending);
    }
    return pending;
  }

  record(id: string): Promise<DataKeyRecord | undefined> {
    let pending = this.#records.get(id);
    if (pending === undefined) {
      pending = this.#store.get(id);
      // Bounded: every data key ever read would stay here otherwise, one per context per
      // maxAgeMs for as long as the process runs.
      bounded(this.#records, id, pending, MAX_RECORDS);
      // Forget misses so that a key inserted later by another process is found.
      const settling = pending;
      const forget = () => {
        if (this.#records.get(id) === settling) this.#records.delete(id);
      };
      pending.then((r) => {
        if (r === undefined) forget();
      }, forget);
    }
    return pending;
  }

  async #unwrap(
    id: string,
    purpose: DataKeyRecord["purpose"],
  ): Promise<{ raw: Uint8Array; context: EncryptionContext }> {
    const record = await this.record(id);
    if (record === undefined) throw generic();
    return { raw: await this.#unwrapRecord(record, purpose), context: record.encryptionContext };
  }

  /**
   * Every unwrap goes through here. The length matters most for stable keys: they feed HKDF,
   * which takes any length, so a row wrapping a 1-byte key would make every deterministic value
   * and blind index under it guessable.
   */
  async #unwrapRecord(
    record: DataKeyRecord,
    purpose: DataKeyRecord["purpose"],
  ): Promise<Uint8Array> {
    if (record.purpose !== purpose) throw generic();
    const { plaintext } = await this.#kms.decrypt({
      ciphertextBlob: record.wrappedKey,
      encryptionContext: record.encryptionContext,
    });
    if (plaintext.length !== 32) {
      plaintext.fill(0);
      throw generic();
    }
    return plaintext;
  }

  /**
   * The id of the stable data key of `context` (the one `stableForScope` finds or creates),
   * derived without touching the store or the KMS.
   */
  stableIdOf(context: EncryptionContext): string {
    return hexOf(stableDataKeyId(this.#selectKey(context), context));
  }

  stableForScope(
    context: EncryptionContext,
    ctxKey: string,
    transactionScope?: string,
  ): Promise<StableKey> {
    const keyId = this.#selectKey(context);
    const scope = `${keyId}\u0000${ctxKey}`;
    let pending = this.#stableByScope.get(scope);
    if (pending === undefined && transactionScope !== undefined) {
      // Inside a transaction: the key row may be rolled back, so nothing found or created here
      // is cached beyond the transaction.
      const inScope = scopedKey(transactionScope, scope);
      let scoped = this.#scopedStable.get(inScope);
      if (scoped === undefined) {
        scoped = this.#loadOrCreateStableUncached(keyId, context).then((k) =>
          ownStable(k, context),
        );
        bounded(this.#scopedStable, inScope, scoped);
        scoped.catch(() => this.#scopedStable.delete(inScope));
      }
      return scoped;
    }
    if (pending === undefined) {
      pending = this.#loadOrCreateStable(keyId, context).then((k) => ownStable(k, context));
      // Bounded like the rest: contexts may be attacker-chosen (tenant ids from requests).
      bounded(this.#stableByScope, scope, pending, MAX_STABLE_KEYS);
      pending.catch(() => this.#stableByScope.delete(scope));
    }
    return pending;
  }

  stableForId(id: string): Promise<StableKey> {
    let pending = this.#stableById.get(id);
    if (pending === undefined) {
      const generation = this.#generation;
      pending = this.record(id).then(async (record) => {
        if (record === undefined || record.purpose !== "stable") throw generic();
        const { raw, context } = await this.#unwrap(id, "stable");
        return this.#newStable(id, raw, record.kmsKeyId, context, generation);
      });
      bounded(this.#stableById, id, pending, MAX_STABLE_KEYS);
      const settling = pending;
      pending.then(
        (stable) => {
          if (this.#stableById.get(id) === settling && !stable.dropped) {
            bounded(this.#stableReady, id, stable, MAX_STABLE_KEYS);
          }
        },
        () => this.#stableById.delete(id),
      );
    }
    return pending;
  }

  async #loadOrCreateStableUncached(keyId: string, context: EncryptionContext): Promise<StableKey> {
    const generation = this.#generation;
    const id = hexOf(stableDataKeyId(keyId, context));
    let record = await this.#store.get(id);
    if (record === undefined) {
      const inserted = await this.#insertStable(keyId, context, id, generation);
      if (inserted.mine !== undefined) return inserted.mine;
      record = inserted.record;
    }
    const raw = await this.#unwrapRecord(record, "stable");
    return this.#newStable(id, raw, record.kmsKeyId, record.encryptionContext, generation);
  }

  /**
   * The stable data key of (KMS key, context) has an id derived from both, so every process
   * finds the same one without coordination; the store's insert-if-absent settles races.
   */
  async #loadOrCreateStable(keyId: string, context: EncryptionContext): Promise<StableKey> {
    const generation = this.#generation;
    const id = hexOf(stableDataKeyId(keyId, context));
    if ((await this.#store.get(id)) !== undefined) return this.stableForId(id);
    const { mine } = await this.#insertStable(keyId, context, id, generation);
    // Another writer stored its key first: use theirs.
    if (mine === undefined) return this.stableForId(id);
    // Made across a clear(): not cached (the caller loads it again).
    if (mine.dropped) return mine;
    bounded(this.#stableById, id, Promise.resolve(mine), MAX_STABLE_KEYS);
    bounded(this.#stableReady, id, mine, MAX_STABLE_KEYS);
    return mine;
  }

  /**
   * Generates a stable data key and inserts it unless one exists; `mine` is set only when ours
   * was stored (the loser's plaintext is wiped), `record` is whichever the store kept.
   */
  async #insertStable(
    keyId: string,
    context: EncryptionContext,
    id: string,
    generation: number,
  ): Promise<{ mine?: StableKey; record: DataKeyRecord }> {
    const generated = await this.#kms.generateDataKey({
      keyId,
      keySpec: "AES_256",
      encryptionContext: context,
    });
    const record = await this.#store.insert({
      id,
      kmsKeyId: generated.keyId,
      wrappedKey: generated.ciphertextBlob,
      encryptionContext: { ...context },
      purpose: "stable",
      createdAt: this.#clock.now(),
    });
    if (
      record.wrappedKey.length === generated.ciphertextBlob.length &&
      Buffer.from(record.wrappedKey).equals(Buffer.from(generated.ciphertextBlob))
    ) {
      return {
        mine: this.#newStable(id, generated.plaintext, generated.keyId, context, generation),
        record,
      };
    }
    generated.plaintext.fill(0);
    return { record };
  }
}

/** First 16 bytes of SHA-256("kms1 stable data key" || u16 len || keyId || context encoding). */
function stableDataKeyId(keyId: string, context: EncryptionContext): Uint8Array {
  const keyBytes = encoder.encode(keyId);
  const ctx = encodeEncryptionContext(context, "context");
  const input = new Uint8Array(STABLE_ID_PREFIX.length + 2 + keyBytes.length + ctx.length);
  input.set(STABLE_ID_PREFIX, 0);
  new DataView(input.buffer).setUint16(STABLE_ID_PREFIX.length, keyBytes.length);
  input.set(keyBytes, STABLE_ID_PREFIX.length + 2);
  input.set(ctx, STABLE_ID_PREFIX.length + 2 + keyBytes.length);
  return sha256(input).subarray(0, DATA_KEY_ID_LENGTH);
}

const MAX_SCOPED_ENTRIES = 256;

/** A cache or map key private to one transaction scope. */
function scopedKey(transactionScope: string, key: string): string {
  return `${transactionScope}\u0000${key}`;
}

/** Inserts into a map that forgets its oldest entries beyond `max`. */
function bounded<V>(map: Map<string, V>, key: string, value: V, max = MAX_SCOPED_ENTRIES): void {
  if (!map.has(key) && map.size >= max) {
    const oldest = map.keys().next();
    if (oldest.done !== true) map.delete(oldest.value);
  }
  map.set(key, value);
}

/**
 * The stable key found under the id of (KMS key, context) must be wrapped under that very
 * context. Its id is derived, so whoever writes the data-key table can plant a row there first,
 * wrapping a key they know under a context their KMS rights allow: writing deterministic values
 * or blind indexes under it would let them read those. Such a row is refused, not used.
 */
function ownStable(stable: StableKey, context: EncryptionContext): StableKey {
  if (
    Object.keys(stable.context).length !== Object.keys(context).length ||
    !holdsKeyContext(context, stable.context)
  ) {
    throw new KmsInternalError(
      "the data-key row stored under this context's stable data key id is wrapped under another context",
    );
  }
  return stable;
}
