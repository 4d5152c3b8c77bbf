import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { DataKeyCache, DataKeyUsage, PreparedDataKey } from "../caching/data-key-cache.ts";
import type { Clock } from "../clock.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { isKmsError, KmsInternalError, ValidationError } from "../errors.ts";
import { importAesKey } from "../hsm/aes-gcm.ts";
import { GcmKey } from "../hsm/gcm-key.ts";
import { randomBytes } from "../hsm/random.ts";
import type { KmsLike } from "../kms-like.ts";
import { currentRequestId } from "../request-id-scope.ts";
import type { CallOptions, DecryptResponse, EncryptionContext } from "../types.ts";
import { type BoundField, encodeBinding, holdsKeyContext } from "./binding.ts";
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
  /** The binding sealed last and its entry of `aads` (see cachedAad). */
  lastBinding: Uint8Array | undefined;
  lastAad: Uint8Array | undefined;
  readonly key: GcmKey;
  readonly kmsKeyId: string;
  /**
   * Set by `retire`: the key seals nothing more (its cache entry is dropped at its next use),
   * while values under it still open with its read entry.
   */
  retired: boolean;
  /** Called by the cache when the entry leaves it: the key is then nobody's to retire. */
  release(): void;
}

/** A decrypted data key for reading: the prepared form of an "r" entry of the DataKeyCache. */
export interface LoadedKey extends PreparedDataKey {
  readonly key: GcmKey;
  /**
   * The key context the data key is wrapped under (its data-key row's). A value opens under it
   * only when its binding's context holds every one of these pairs (FORMAT §6.2).
   */
  readonly context: Readonly<EncryptionContext>;
  /** When the cache took it, on the cache's clock. */
  readonly loadedAt: number;
  /**
   * The ARN the KMS answered with when it unwrapped (or generated) the key: never the row's
   * `kmsKeyId` column, which whoever writes the data-key table writes too.
   */
  readonly kmsKeyId: string;
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
  /** As LoadedKey.kmsKeyId: the ARN the KMS answered with, not the row's column. */
  readonly kmsKeyId: string;
  /**
   * The wrapped key of the row it came from: a row found under its id later is the same key only
   * if it holds these very bytes (the id is derived, so a rolled-back row's successor shares it).
   */
  readonly wrappedKey: Uint8Array;
  /** As LoadedKey.context. */
  readonly context: Readonly<EncryptionContext>;
  /**
   * When its bytes were unwrapped or generated, on the cache's clock: like a randomized key, it
   * serves for `maxAgeMs` and is then unwrapped again, so that a KMS key disabled or scheduled
   * for deletion stops its deterministic values and blind indexes too.
   */
  readonly loadedAt: number;
  /**
   * `useStable` calls running on it (more than one when a caller's getter re-enters), and
   * batches holding it (`holdStable`).
   */
  holds: number;
  /** Never used again (cleared, rolled back, or zeroed): `useStable` refuses it. */
  dropped: boolean;
  /**
   * No longer the engine's (evicted, expired, or a second copy of a key it holds): zeroed, and then
   * dropped, as soon as no use holds it. Until then the uses holding it may go on.
   */
  retired: boolean;
  /** Subkeys the bounded subkey set let go of while a use held the key: zeroed after it. */
  stale: Uint8Array[] | undefined;
}

export interface FieldDataKeysOptions {
  readonly kms: KmsLike;
  readonly store: DataKeyStore;
  readonly keyId: (context: EncryptionContext) => string;
  /**
   * The KMS keys, besides the one `keyId` selects, that a data-key row of a context may be
   * wrapped under (the engine's `previousKeyIds`); undefined when none are configured.
   */
  readonly previousKeyIds?: ((context: EncryptionContext) => readonly string[]) | undefined;
  readonly clock: Clock;
  /** Randomized data keys, for writing and reading; possibly shared with other engines. */
  readonly cache: DataKeyCache;
}

/**
 * Whether the values asking for a data key may open under one wrapped under `keyContext` (FORMAT
 * §6.2): asked of the context its data-key row stores before the KMS is asked to unwrap it, and
 * of the key's own context whenever a cached key is handed out.
 */
export type AdmitsKeyContext = (keyContext: Readonly<EncryptionContext>) => boolean;

/** An unwrap in flight, with the context of the row it unwraps: a caller joins it only if admitted. */
interface Unwrapping<T> {
  readonly keyContext: Readonly<EncryptionContext>;
  readonly loading: Promise<T>;
}

/** A data key as the KMS unwrapped it, and the ARN of the KMS key it answered with. */
interface Unwrapped {
  readonly plaintext: Uint8Array;
  readonly kmsKeyId: string;
}

/** A stable data-key row whose KMS key is gone (see `#findStable`). */
interface GoneStable {
  readonly wrappedKey: Uint8Array;
  readonly encryptionContext: Readonly<EncryptionContext>;
  /** What the KMS said when asked to unwrap it. */
  readonly error: unknown;
  /**
   * The KMS said the row names another KMS key than the one selected now (`#confirmGone`):
   * only then may a later generation replace it.
   */
  confirmed: boolean;
}

/** A stable key found or created inside a transaction scope (see `#scopedStable`). */
interface ScopedStable {
  readonly loading: Promise<StableKey>;
  /** The key, once the load has settled with one. */
  stable: StableKey | undefined;
}

/**
 * An open transaction scope: its savepoints, and the data keys made (stable ones: made or found)
 * inside it with the savepoint level each was made at (0: the transaction itself), so that a
 * rollback to a savepoint drops exactly the keys whose rows it took.
 */
interface TransactionState {
  readonly scope: string;
  /** Savepoints open: the level of the keys made now. */
  depth: number;
  /** Savepoint rollbacks so far: a key made across one checks that its row is still there. */
  rollbacks: number;
  /** Write cache key (durable form) → the deepest level and the ids of the keys made for it. */
  readonly writes: Map<string, { level: number; readonly ids: string[] }>;
  /** Stable data key id → the level it was first made or found at. */
  readonly stable: Map<string, number>;
}

/** Records a randomized key made in `tx` for `durableKey` at the level `tx` is at now. */
function recordWrite(tx: TransactionState, durableKey: string, id: string): void {
  const made = tx.writes.get(durableKey);
  if (made === undefined) {
    tx.writes.set(durableKey, { level: tx.depth, ids: [id] });
    return;
  }
  made.level = Math.max(made.level, tx.depth);
  made.ids.push(id);
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
 * (KMS key, context) and their derived subkeys, held here (never replaced by the value and byte
 * limits: equal values must keep encrypting equally; past the cache's `maxAgeMs` the same key is
 * unwrapped again, as a randomized read key is). Every KMS call of the engine happens here, at
 * most once per data key at a time (concurrent callers share the pending call).
 */
export class FieldDataKeys {
  readonly #kms: KmsLike;
  readonly #store: DataKeyStore;
  readonly #selectKey: (context: EncryptionContext) => string;
  readonly #previousKeyIds: ((context: EncryptionContext) => readonly string[]) | undefined;
  /**
   * Configured key id → the ARN the KMS last reported for it (GenerateDataKey, Decrypt). Only
   * orders the keys a row is tried under (`#candidateKeys`); the KMS decides which one it is.
   */
  readonly #arns = new Map<string, string>();
  readonly #clock: Clock;
  readonly #cache: DataKeyCache;
  /**
   * Cache key prefixes of this engine's entries. Not a digit: the message layer's keys
   * (dataKeyCacheKey) start with one, so the two never collide in a shared cache.
   */
  readonly #writePrefix: string;
  readonly #readPrefix: string;
  /**
   * Loads of randomized data keys in flight, shared by concurrent callers. clear() forgets them:
   * a caller after it starts a load of its own, and a load that began before it caches nothing.
   */
  readonly #materialsInFlight = new Map<string, Promise<Materials>>();
  readonly #readKeysInFlight = new Map<string, Unwrapping<LoadedKey>>();
  /**
   * The engine's stable keys by id (outside transactions), for synchronous reads too. A key
   * leaves by eviction, age, a rollback of its row or clear(), and is zeroed then — at once, or
   * when the last use holding it returns.
   */
  readonly #stableReady = new Map<string, StableKey>();
  /** Loads of stable keys by id in flight; each becomes the engine's unless forgotten meanwhile. */
  readonly #stableLoads = new Map<string, Unwrapping<StableKey>>();
  /**
   * Stable data-key rows found dead (their KMS key gone, a later generation in use), by id, with
   * the wrapped key that was refused: the next find of the same scope passes over them without
   * asking the KMS again. Bounded; emptied by clear().
   */
  readonly #goneStable = new Map<string, GoneStable>();
  /** Counts #forgetStable calls: a stable row read across one is read again. */
  #forgets = 0;
  /**
   * The key each scope (KMS key id, context) found, checked against the context: an index into
   * #stableReady that owns nothing, so an entry counts only while its key is not retired.
   */
  readonly #stableByScope = new Map<string, StableKey>();
  /** Finds or creates by scope in flight, outside transactions. */
  readonly #stableLoadsByScope = new Map<string, Promise<StableKey>>();
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
  /**
   * Stable keys found or created inside a transaction scope, each owned by its entry: whoever
   * removes an entry lets go of its key (eviction, age, endScope, a savepoint rollback; clear()
   * drops them all).
   */
  readonly #scopedStable = new Map<string, ScopedStable>();
  /** The open transaction scopes that made data keys or savepoints, by scope. */
  readonly #transactions = new Map<string, TransactionState>();
  /** When expired stable keys were last swept out, on the cache's clock. */
  #stableSweptAt: number;
  /** The cache's `clockSetBacks` when this engine last let go of its keys for one (see #now). */
  #setBacks: number;
  /**
   * Every stable key made since the last clear(), weakly: clear() must zero the ones any map or
   * in-flight call still reaches, including keys between their load and a map, and retired
   * keys a use still holds.
   */
  readonly #liveStable = new Set<WeakRef<StableKey>>();
  #liveStableLimit = MIN_LIVE_SWEEP;
  /**
   * Counts clear() calls: a stable key loaded across one is dropped on arrival, a randomized one
   * serves the calls that waited for it and is never cached.
   */
  #generation = 0;
  /** ctxKey → KMS key id → write cache key (see #durableKey). */
  readonly #durableKeys = new Map<string, Map<string, string>>();
  /**
   * The write keys the cache holds, by data key id, so that `retire` finds them wherever they
   * are cached (their own context, a transaction scope, a shared cache). Bounded by the cache:
   * an entry leaves with its cache entry.
   */
  readonly #writing = new Map<string, Materials>();
  /** The (KMS key id, ctxKey) #durableKey answered last and its answer: writes come in runs. */
  #lastDurable:
    | { readonly keyId: string; readonly ctxKey: string; readonly key: string }
    | undefined;

  constructor(options: FieldDataKeysOptions) {
    this.#kms = options.kms;
    this.#store = options.store;
    this.#selectKey = options.keyId;
    this.#previousKeyIds = options.previousKeyIds;
    this.#clock = options.clock;
    this.#cache = options.cache;
    this.#setBacks = options.cache.clockSetBacks;
    this.#stableSweptAt = options.cache.now();
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
    const durable = this.#usableWrite(durableKey, usage);
    if (durable !== undefined || transactionScope === undefined) return durable;
    return this.#usableWrite(scopedKey(transactionScope, durableKey), usage);
  }

  /** The write key cached under `cacheKey`, unless it was retired (its entry is dropped then). */
  #usableWrite(cacheKey: string, usage: DataKeyUsage): Materials | undefined {
    const materials = this.#cache.use<Materials>(cacheKey, usage);
    if (materials === undefined || !materials.retired) return materials;
    this.#cache.delete(cacheKey);
    return undefined;
  }

  /**
   * Writes that begin after this call seal nothing under the randomized data keys `ids`: the
   * ones this engine writes with are dropped from its write cache (the next write makes a fresh
   * key), while values under them still open. Only the engine that generated a data key ever
   * writes with it, so ids this engine does not write with — other engines' keys, stable keys,
   * unknown ids — need nothing and are passed over.
   */
  retire(ids: Iterable<string>): void {
    for (const id of ids) {
      const materials = this.#writing.get(id);
      if (materials === undefined) continue;
      materials.retired = true;
      this.#writing.delete(id);
    }
  }

  /**
   * The cached read key of a randomized value of `binding` (its encoding, built from the pairs
   * `context`), found by the value's header (format byte and data key id, bytes 0–16), if the
   * cache still holds it. `now`, on the cache's clock, may be read once for a batch of values
   * (the key's age is then checked against the batch's start).
   * @throws InvalidCiphertextException (the generic error) when the key is cached but `context`
   *   does not hold the context it is wrapped under (FORMAT §6.2), whoever cached it.
   */
  cachedReadKeyOf(
    stored: Uint8Array,
    binding: Uint8Array,
    context: Readonly<EncryptionContext>,
    now?: number,
  ): LoadedKey | undefined {
    let loaded = this.#lastLoaded;
    if (loaded !== undefined) {
      const last = this.#lastHeader;
      for (let i = 1; i < HEADER_LENGTH; i++) {
        if (stored[i] !== last[i]) {
          loaded = undefined;
          break;
        }
      }
      if (loaded !== undefined) {
        // Read before `released` is: a reading that finds the clock set back releases the key.
        // As the cache counts age, a key "loaded after now" is expired too (a batch's `now`).
        const age = (now ?? this.#now()) - loaded.loadedAt;
        if (!loaded.released && age >= 0 && age < this.#cache.maxAgeMs) {
          return admitBinding(loaded, binding, context);
        }
      }
    }
    // Copied before the cache reads its clock: a clock that re-enters the engine may reuse the
    // scratch `stored` views, and the header remembered must be the one the key was found by.
    const header = stored.slice(0, HEADER_LENGTH);
    loaded = this.#cache.use<LoadedKey>(this.#readPrefix + hexOf(header, 1, HEADER_LENGTH), NO_USE);
    if (loaded === undefined) return undefined;
    this.#lastHeader = header;
    this.#lastLoaded = loaded;
    return admitBinding(loaded, binding, context);
  }

  /** Now on the cache's clock, for `cachedReadKeyOf`. */
  now(): number {
    return this.#now();
  }

  /**
   * Every age the engine checks is counted from a reading taken here. Read through the cache, so
   * that a reading any of its users took (the message layer's, another engine's, this one's)
   * shows a later one to be a clock set back: the cache then drops its entries (write keys, read
   * keys: the remembered one is released with its entry) and the engine lets go of its stable
   * keys, which it holds beside the cache. Otherwise a key's age, counted from a reading after a
   * step back, would shrink by the step and the key serve that much past `maxAgeMs`.
   */
  #now(): number {
    const now = this.#cache.now();
    if (this.#cache.clockSetBacks !== this.#setBacks) this.#clockSetBack(now);
    return now;
  }

  /**
   * The clock was set back (or read NaN): every stable key is let go, as the cache lets go of its
   * entries, and is unwrapped again at its next use.
   */
  #clockSetBack(now: number): void {
    this.#setBacks = this.#cache.clockSetBacks;
    this.#lastLoaded = undefined;
    this.#stableSweptAt = now;
    this.#expireStableKeys(() => true);
  }

  /**
   * The stable data key `id` for a deterministic value of `context`, if it has been loaded and
   * is younger than `maxAgeMs` at `now` (on the cache's clock; read once for a batch, as for
   * `cachedReadKeyOf`).
   * @throws InvalidCiphertextException (the generic error) when the key is cached but `context`
   *   does not hold the context it is wrapped under (FORMAT §6.2), whoever cached it.
   */
  cachedStable(
    id: string,
    context: Readonly<EncryptionContext>,
    now = this.#now(),
  ): StableKey | undefined {
    const stable = this.#readyStable(id, now);
    if (stable === undefined || holdsKeyContext(context, stable.context)) return stable;
    throw generic();
  }

  /**
   * The stable data key `id` if it has been loaded and is younger than `maxAgeMs` at `now`,
   * whatever its context: every caller checks that before the key leaves this class.
   */
  #readyStable(id: string, now = this.#now()): StableKey | undefined {
    this.#sweepStable(now);
    const stable = this.#stableReady.get(id);
    if (stable === undefined || this.#fresh(stable, now)) return stable;
    this.#expireStable(stable);
    return undefined;
  }

  /**
   * Whether `stable` may still serve at `now`: as the cache ages its entries, a key "loaded
   * after now" (the clock was set back) has expired too.
   */
  #fresh(stable: StableKey, now: number): boolean {
    const age = now - stable.loadedAt;
    return age >= 0 && age < this.#cache.maxAgeMs;
  }

  /** The engine lets go of an expired key: zeroed once no use holds it, unwrapped again next. */
  #expireStable(stable: StableKey): void {
    if (this.#stableReady.get(stable.id) === stable) this.#stableReady.delete(stable.id);
    this.#retire(stable);
  }

  /**
   * Lets go of every expired stable key, at most once per `maxAgeMs` (as the cache sweeps its
   * entries), so that a key nobody asks for again does not stay in memory past its age.
   */
  #sweepStable(now: number): void {
    if (now - this.#stableSweptAt < this.#cache.maxAgeMs && now >= this.#stableSweptAt) return;
    this.#stableSweptAt = now;
    this.#expireStableKeys((stable) => !this.#fresh(stable, now));
  }

  /** Lets go of the stable keys `expired` answers true for, the engine's and transactions'. */
  #expireStableKeys(expired: (stable: StableKey) => boolean): void {
    for (const stable of this.#stableReady.values()) {
      if (expired(stable)) this.#expireStable(stable);
    }
    for (const [inScope, entry] of this.#scopedStable) {
      const stable = entry.stable;
      if (stable === undefined || !expired(stable)) continue;
      this.#scopedStable.delete(inScope);
      this.#retire(stable);
    }
  }

  /**
   * The transaction behind `transactionScope` ended. On commit the rows of the data keys made
   * inside it are durable, so its write keys and stable keys become the engine's own (where
   * none was made meanwhile) and serve writers outside it; on rollback they are dropped.
   */
  endScope(transactionScope: string, committed: boolean): void {
    const tx = this.#transactions.get(transactionScope);
    if (tx !== undefined) {
      this.#transactions.delete(transactionScope);
      if (!committed) this.#dropFrom(tx, 0);
      for (const durableKey of tx.writes.keys()) {
        const inScope = scopedKey(transactionScope, durableKey);
        if (!this.#cache.move(inScope, durableKey)) this.#cache.delete(inScope);
      }
    }
    const prefix = scopedKey(transactionScope, "");
    for (const [inScope, entry] of [...this.#scopedStable]) {
      if (!inScope.startsWith(prefix)) continue;
      this.#scopedStable.delete(inScope);
      const scope = inScope.slice(prefix.length);
      // Already settled, as a rule, so this runs before the caller goes on. A failed load
      // leaves nothing behind.
      entry.loading.then(
        (stable) => (committed ? this.#commitStable(scope, stable) : this.#rollBackStable(stable)),
        () => {},
      );
    }
  }

  /**
   * A savepoint (a nested transaction) began inside the transaction behind `transactionScope`:
   * data keys made from now until it ends belong to it.
   */
  beginSavepoint(transactionScope: string): void {
    this.#transaction(transactionScope).depth += 1;
  }

  /**
   * The innermost savepoint of `transactionScope` ended. Released, its data keys belong to the
   * level around it; rolled back, their rows went with it, so they are dropped (stable ones
   * zeroed) at once. A rollback the engine saw no savepoint begin for drops every key of the
   * scope: which rows it removed is unknown.
   */
  endSavepoint(transactionScope: string, committed: boolean): void {
    const tx = this.#transaction(transactionScope);
    const level = tx.depth;
    tx.depth = Math.max(0, level - 1);
    if (!committed) {
      tx.rollbacks += 1;
      this.#dropFrom(tx, level);
      return;
    }
    for (const made of tx.writes.values()) if (made.level >= level) made.level = tx.depth;
    for (const [id, at] of tx.stable) if (at >= level) tx.stable.set(id, tx.depth);
  }

  /** The state of an open transaction scope, made on first use. */
  #transaction(transactionScope: string): TransactionState {
    let tx = this.#transactions.get(transactionScope);
    if (tx === undefined) {
      tx = {
        scope: transactionScope,
        depth: 0,
        rollbacks: 0,
        writes: new Map(),
        stable: new Map(),
      };
      // Callers that never end their scopes leave states that the bound lets go of. What a
      // forgotten state made can no longer be dropped by a rollback, so it is dropped now.
      const evicted = bounded(this.#transactions, transactionScope, tx);
      if (evicted !== undefined) this.#dropFrom(evicted, 0);
    }
    return tx;
  }

  /**
   * Drops what `tx` made at savepoint `level` or deeper (0: everything): their rows are gone, or
   * may be. Stable keys it found rather than made go too; they are unwrapped again when needed.
   */
  #dropFrom(tx: TransactionState, level: number): void {
    for (const [durableKey, made] of tx.writes) {
      if (made.level < level) continue;
      tx.writes.delete(durableKey);
      this.#cache.delete(scopedKey(tx.scope, durableKey));
      for (const id of made.ids) {
        this.#cache.delete(this.#readPrefix + id);
        this.#records.delete(id);
      }
    }
    const gone = new Set<string>();
    for (const [id, at] of tx.stable) {
      if (at < level) continue;
      tx.stable.delete(id);
      gone.add(id);
      this.#forgetStable(id);
    }
    const prefix = scopedKey(tx.scope, "");
    for (const [inScope, entry] of this.#scopedStable) {
      const stable = entry.stable;
      if (!inScope.startsWith(prefix)) continue;
      // In flight: checked against the rollback when it settles (TransactionState.rollbacks).
      if (stable === undefined || (level !== 0 && !gone.has(stable.id))) continue;
      this.#scopedStable.delete(inScope);
      this.#rollBackStable(stable);
    }
  }

  /** Records a stable key found or made in `tx` at the level it is at now (the lowest wins). */
  #recordStable(tx: TransactionState, id: string): void {
    const at = tx.stable.get(id);
    if (at === undefined || at > tx.depth) tx.stable.set(id, tx.depth);
  }

  /** A transaction's key, its row now durable, becomes the engine's (unless it holds one). */
  #commitStable(scope: string, stable: StableKey): void {
    if (this.#adopt(stable) === stable && !stable.dropped) {
      bounded(this.#stableByScope, scope, stable, MAX_STABLE_KEYS);
    }
  }

  /**
   * The key's row is gone, but its id is derived from (KMS key, context): the next key made for
   * them has the same id, so anything held under that id could be the rolled-back material.
   */
  #rollBackStable(stable: StableKey): void {
    this.#drop(stable);
    this.#forgetStable(stable.id);
  }

  /** Nothing held or loading under `id` is used again (see #rollBackStable). */
  #forgetStable(id: string): void {
    this.#forgets += 1;
    // A load in flight may have read the rolled-back row: forgotten, it is dropped on arrival.
    this.#stableLoads.delete(id);
    const held = this.#stableReady.get(id);
    if (held !== undefined) {
      this.#stableReady.delete(id);
      this.#drop(held);
    }
    this.#records.delete(id);
  }

  /**
   * Forgets every data key: the cache's entries (all of them, if shared; their key bytes are
   * zeroed there, and this engine's own hold only KeyObjects, whose bytes were zeroed on import)
   * and the stable keys, whose raw bytes and derived subkeys are zeroed — at once, or, for a key
   * a use holds (`useStable`, a batch's `holdStable`), when that use returns. A stable key that a
   * pending load delivers after this call is dropped on arrival: every value operation in flight
   * loads its stable key again (`useStable` refuses dropped keys), none uses material cached
   * before the call. A randomized key whose load began before the call serves only the
   * operations already waiting for it and is never cached; later ones load their own.
   */
  clear(): void {
    this.#generation += 1;
    this.#cache.clear();
    this.#lastLoaded = undefined;
    this.#materialsInFlight.clear();
    this.#readKeysInFlight.clear();
    this.#stableReady.clear();
    this.#stableLoads.clear();
    this.#goneStable.clear();
    this.#stableByScope.clear();
    this.#stableLoadsByScope.clear();
    this.#records.clear();
    this.#scopedStable.clear();
    this.#transactions.clear();
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
    if (!this.holdStable(stable)) return undefined;
    try {
      return use(stable);
    } finally {
      this.releaseStable(stable);
    }
  }

  /**
   * Holds `stable` for a batch of `useStable` calls, so that a key evicted meanwhile still
   * serves the batch and is zeroed only after it; false, holding nothing, when the key was
   * dropped (the caller loads it again). Every true answer needs one `releaseStable`.
   */
  holdStable(stable: StableKey): boolean {
    if (stable.dropped) return false;
    stable.holds += 1;
    return true;
  }

  releaseStable(stable: StableKey): void {
    stable.holds -= 1;
    if (stable.holds !== 0) return;
    if (stable.retired) this.#zeroStable(stable);
    else this.#zeroStale(stable);
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
    wrappedKey: Uint8Array,
    context: EncryptionContext,
    generation: number,
  ): StableKey {
    const stable: StableKey = {
      id,
      raw,
      kmsKeyId,
      wrappedKey: wrappedKey.slice(),
      context: Object.freeze({ ...context }),
      loadedAt: this.#now(),
      holds: 0,
      dropped: false,
      retired: false,
      stale: undefined,
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

  /** Lets go of `stable` and refuses it to new uses at once (clear(), a rollback). */
  #drop(stable: StableKey): void {
    stable.dropped = true;
    this.#retire(stable);
  }

  /** Lets go of `stable`: zeroed now, or when the last use holding it returns. */
  #retire(stable: StableKey): void {
    if (stable.retired) return;
    stable.retired = true;
    if (stable.holds === 0) this.#zeroStable(stable);
  }

  #zeroStable(stable: StableKey): void {
    stable.dropped = true;
    stable.retired = true;
    stable.raw.fill(0);
    this.#zeroStale(stable);
    const derived = this.#derived.get(stable);
    if (derived === undefined) return;
    for (const key of derived.values()) key.fill(0);
    derived.clear();
  }

  #zeroStale(stable: StableKey): void {
    for (const key of stable.stale ?? []) key.fill(0);
    stable.stale = undefined;
  }

  /**
   * Makes `stable` the engine's key for its id and returns it; when the engine holds one for
   * that id already (the same row, loaded twice), returns that one and retires `stable`, unless
   * the one held has expired (then `stable` replaces it). A key let go since its load began (by
   * a clear(), or a clock set back) is returned as it is and never held: its users load again.
   */
  #adopt(stable: StableKey): StableKey {
    // Read first: a reading that finds the clock set back lets every key go, `stable` too if the
    // engine held it already, and a key let go must never be held again.
    const now = this.#now();
    if (stable.retired) return stable;
    const held = this.#stableReady.get(stable.id);
    if (held !== undefined) {
      if (held === stable) return held;
      if (this.#fresh(held, now)) {
        this.#retire(stable);
        return held;
      }
      this.#expireStable(held);
    }
    // Bounded like the rest: contexts may be attacker-chosen (tenant ids from requests). The
    // oldest key goes, zeroed once no use holds it; its next use loads it again.
    const evicted = bounded(this.#stableReady, stable.id, stable, MAX_STABLE_KEYS);
    if (evicted !== undefined) this.#retire(evicted);
    return stable;
  }

  /**
   * Per-(data key, purpose, model, field, context) subkey; cached, bounded. Only inside
   * `useStable` (the subkey is zeroed with its stable key, or once the use returns when the
   * bound lets go of it).
   */
  derive(stable: StableKey, purpose: "d" | "b", binding: BoundField): Uint8Array {
    // Length-prefixed like contextKey: names may hold NUL, and a separator alone would let
    // ("a\0b", "c") and ("a", "b\0c") share one subkey (one blind-index key for two fields).
    const { model, field, ctxKey } = binding;
    const cacheKey = `${purpose}${model.length}:${model}${field.length}:${field}${ctxKey}`;
    let derived = this.#derived.get(stable);
    if (derived === undefined) {
      derived = new Map();
      this.#derived.set(stable, derived);
    }
    const hit = derived.get(cacheKey);
    if (hit !== undefined) return hit;
    const info = encodeBinding(binding);
    const key =
      purpose === "d"
        ? hkdf(sha256, stable.raw, DET_SALT, info, 64)
        : hkdf(sha256, stable.raw, BIDX_SALT, info, 32);
    if (derived.size >= MAX_DERIVED_KEYS) {
      // Not zeroed here: a use up the stack (a re-entrant getter's caller) may be reading one.
      const stale = stable.stale ?? [];
      for (const old of derived.values()) stale.push(old);
      stable.stale = stale;
      derived.clear();
    }
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
      return this.#newMaterials(keyId, context, scopedKey(transactionScope, durableKey), usage, {
        tx: this.#transaction(transactionScope),
        durableKey,
      });
    }
    for (;;) {
      const cached = this.#usableWrite(durableKey, usage);
      if (cached !== undefined) return cached;
      const pending = this.#materialsInFlight.get(durableKey);
      if (pending === undefined) {
        const fresh: Promise<Materials> = this.#newMaterials(
          keyId,
          context,
          durableKey,
          usage,
        ).finally(() => {
          // Only its own entry: after a clear(), a later load may hold the key now.
          if (this.#materialsInFlight.get(durableKey) === fresh) {
            this.#materialsInFlight.delete(durableKey);
          }
        });
        this.#materialsInFlight.set(durableKey, fresh);
        return fresh;
      }
      await pending;
      // Loop: a concurrent burst may have used up the fresh key's limits already.
    }
  }

  /**
   * Generates a data key, stores it wrapped, and caches it for writing under `cacheKey`
   * (charged with its first `usage`) and for reading back by id — unless a clear() came
   * meanwhile: then it serves only the calls that waited for it. Inside a transaction scope
   * (`scoped`) it is recorded at the savepoint level its row is at, in the same synchronous step
   * as the caching; a savepoint rolled back while it was being made may have taken its row, so
   * the row is looked up again, and the key made anew when it is gone.
   */
  async #newMaterials(
    keyId: string,
    context: EncryptionContext,
    cacheKey: string,
    usage: DataKeyUsage,
    scoped?: { readonly tx: TransactionState; readonly durableKey: string },
  ): Promise<Materials> {
    const generation = this.#generation;
    let rollbacks = scoped?.tx.rollbacks;
    const generated = await this.#kms.generateDataKey(
      { keyId, keySpec: "AES_256", encryptionContext: context },
      kmsCallOptions(),
    );
    assertGeneratedKey(generated.plaintext);
    this.#learnArn(keyId, generated.keyId);
    const idBytes = randomBytes(DATA_KEY_ID_LENGTH);
    const id = hexOf(idBytes);
    try {
      const stored = await this.#store.insert({
        id,
        kmsKeyId: generated.keyId,
        wrappedKey: generated.ciphertextBlob,
        encryptionContext: { ...context },
        purpose: "randomized",
        createdAt: this.#clock.now(),
      });
      if (stored.kmsKeyId !== generated.keyId) {
        throw new KmsInternalError("data key id collision in the data key store");
      }
      while (scoped !== undefined && scoped.tx.rollbacks !== rollbacks) {
        rollbacks = scoped.tx.rollbacks;
        if ((await this.#store.get(id)) === undefined) {
          generated.plaintext.fill(0);
          return this.#newMaterials(keyId, context, cacheKey, usage, scoped);
        }
      }
    } catch (error) {
      // Nothing stored wraps it: it can never be used.
      generated.plaintext.fill(0);
      throw error;
    }
    const header = new Uint8Array(HEADER_LENGTH);
    header[0] = FORMAT_RANDOMIZED;
    header.set(idBytes, 1);
    // The cache keeps only the imported key (importAesKey zeroes the plaintext bytes).
    const key = new GcmKey(importAesKey(generated.plaintext));
    const writing = this.#writing;
    const materials: Materials = {
      id,
      header,
      aads: new WeakMap(),
      lastBinding: undefined,
      lastAad: undefined,
      key,
      kmsKeyId: generated.keyId,
      retired: false,
      release() {
        if (writing.get(id) === materials) writing.delete(id);
        key.release();
      },
    };
    if (generation === this.#generation) {
      // Before the put: a first use that reaches a limit releases the entry inside it.
      this.#writing.set(id, materials);
      key.hold();
      this.#cache.put(cacheKey, undefined, usage, materials);
      this.#putReadKey(id, key, context, generated.keyId, generation);
      if (scoped !== undefined) recordWrite(scoped.tx, scoped.durableKey, id);
    } else {
      // Nobody's: it seals the values waiting for it, wiping its tables after each.
      key.release();
    }
    return materials;
  }

  /** Caches a read key, unless its load began before a clear() (`generation` is the load's). */
  #putReadKey(
    id: string,
    key: GcmKey,
    context: EncryptionContext,
    kmsKeyId: string,
    generation: number,
  ): LoadedKey {
    const loaded: LoadedKey = {
      key,
      context: Object.freeze({ ...context }),
      loadedAt: this.#now(),
      kmsKeyId,
      aads: new WeakMap(),
      lastBinding: undefined,
      lastAad: undefined,
      released: false,
      release() {
        this.released = true;
        key.release();
      },
    };
    if (generation !== this.#generation) {
      // Not the cache's: it serves the calls that waited for it, then nothing.
      loaded.released = true;
      key.release();
      return loaded;
    }
    // A key loaded again under an id (e.g. after its age ran out) replaces the remembered one.
    this.#lastLoaded = undefined;
    key.hold();
    this.#cache.put(this.#readPrefix + id, undefined, NO_USE, loaded);
    return loaded;
  }

  /**
   * The read key of the randomized data key `id`, handed out only when `admits` the context it
   * is wrapped under (FORMAT §6.2) — a cached key as well as one unwrapped now: whichever call
   * cached it (a read or a write of another context, inside a transaction or not), a key is
   * checked against the values asking for it, not against the ones that loaded it. On a miss
   * its row is read first, and the KMS is asked to unwrap it only when `admits` the context the
   * row stores: a value copied from another tenant's row fails with the generic error before any
   * KMS call, so its request never uses that tenant's KMS key, nor learns from the KMS's answer
   * in what state it is. The KMS then unwraps it only under a key the engine is configured with
   * (`#unwrapRecord`).
   * @throws InvalidCiphertextException (the generic error) when not admitted or unknown.
   */
  readKey(id: string, admits: AdmitsKeyContext): Promise<LoadedKey> {
    const hit = this.#cache.use<LoadedKey>(this.#readPrefix + id, NO_USE);
    if (hit !== undefined) {
      return admits(hit.context) ? Promise.resolve(hit) : Promise.reject(generic());
    }
    return this.record(id).then((record) => {
      if (record === undefined || !admits(record.encryptionContext)) throw generic();
      // Cached while the row was read: by another row under the id (one since replaced), maybe.
      const loaded = this.#cache.use<LoadedKey>(this.#readPrefix + id, NO_USE);
      if (loaded !== undefined) {
        if (!admits(loaded.context)) throw generic();
        return loaded;
      }
      const pending = this.#readKeysInFlight.get(id);
      if (pending !== undefined) {
        if (!admits(pending.keyContext)) throw generic();
        return pending.loading;
      }
      const generation = this.#generation;
      const loading: Promise<LoadedKey> = this.#unwrapRecord(record, "randomized")
        .then(({ plaintext, kmsKeyId }) =>
          this.#putReadKey(
            id,
            new GcmKey(importAesKey(plaintext)),
            record.encryptionContext,
            kmsKeyId,
            generation,
          ),
        )
        .finally(() => {
          // Only its own entry: after a clear(), a later load may hold the id now.
          if (this.#readKeysInFlight.get(id)?.loading === loading) {
            this.#readKeysInFlight.delete(id);
          }
        });
      this.#readKeysInFlight.set(id, { keyContext: record.encryptionContext, loading });
      return loading;
    });
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

  /**
   * Every unwrap goes through here. The KMS is asked to unwrap a row only under a KMS key the
   * engine's configuration names for the row's context — the one `keyId` selects, then each of
   * `previousKeyIds` — with `KeyId` set in the Decrypt request, so that the KMS itself refuses a
   * wrapped key made under any other key (IncorrectKeyException). Without it the KMS would
   * unwrap whatever key the blob names: whoever writes the data-key table could plant a data
   * key they know, wrapped under a KMS key of their own (or another tenant's) that the
   * application may decrypt with, and the engine would take values sealed with it as genuine.
   * The row's `kmsKeyId` column only orders the tries. A key that answers IncorrectKeyException
   * or NotFoundException (it does not exist) is not the row's: the next one is tried; any other
   * answer is the row's key's, and stands. When no configured key is the row's, the read fails
   * with the generic error (recorded in `unconfiguredRefusals`, for `#deadRow`).
   *
   * The length matters most for stable keys: they feed HKDF, which takes any length, so a row
   * wrapping a 1-byte key would make every deterministic value and blind index under it guessable.
   */
  async #unwrapRecord(
    record: DataKeyRecord,
    purpose: DataKeyRecord["purpose"],
  ): Promise<Unwrapped> {
    if (record.purpose !== purpose) throw generic();
    const candidates = this.#candidateKeys(record);
    const refusedBy: string[] = [];
    for (const keyId of candidates) {
      let response: DecryptResponse;
      try {
        response = await this.#kms.decrypt(
          {
            ciphertextBlob: record.wrappedKey,
            encryptionContext: record.encryptionContext,
            keyId,
          },
          kmsCallOptions(),
        );
      } catch (error) {
        if (notThisKey(error)) {
          refusedBy.push(keyId);
          continue;
        }
        if (typeof error === "object" && error !== null) kmsRefusals.add(error);
        throw error;
      }
      const { plaintext } = response;
      if (plaintext.length !== 32) {
        plaintext.fill(0);
        throw generic();
      }
      this.#learnArn(keyId, response.keyId);
      return { plaintext, kmsKeyId: response.keyId };
    }
    const refusal = generic();
    unconfiguredRefusals.set(refusal, { record, refusedBy });
    throw refusal;
  }

  /**
   * The KMS keys `record` may be unwrapped under, in the order they are tried: the one `keyId`
   * selects for the row's context, then `previousKeyIds` for it — except that the one the row's
   * `kmsKeyId` column names (that ARN as configured, a key id it ends in, or the ARN the KMS
   * reported to this engine for a configured id) goes first, so that a row under a previous key
   * costs one Decrypt too. A lying column costs one refused Decrypt, nothing more. The row's
   * context is the key context its writer selected the key by (a part of the value's context,
   * checked before this); a selector that gives no key for it (not a non-empty string) adds none.
   * @throws ValidationException when `previousKeyIds` gives something other than key ids.
   */
  #candidateKeys(record: DataKeyRecord): string[] {
    // A copy, frozen as the write path's contexts are: the store's object is not the selector's.
    const context = Object.freeze({ ...record.encryptionContext });
    const selected: unknown = this.#selectKey(context);
    const out: string[] = typeof selected === "string" && selected.length > 0 ? [selected] : [];
    if (this.#previousKeyIds !== undefined) {
      for (const keyId of previousKeyIdsOf(this.#previousKeyIds, context)) {
        if (!out.includes(keyId)) out.push(keyId);
      }
    }
    if (out.length > 1) {
      const column = record.kmsKeyId;
      const hinted = out.findIndex(
        (keyId) =>
          keyId === column ||
          this.#arns.get(keyId) === column ||
          (typeof column === "string" && column.endsWith(`:key/${keyId}`)),
      );
      if (hinted > 0) out.unshift(...out.splice(hinted, 1));
    }
    return out;
  }

  /** Remembers the ARN the KMS reported for a configured key id (an ordering hint only). */
  #learnArn(keyId: string, arn: string): void {
    if (this.#arns.get(keyId) === arn) return;
    // Bounded: a key selector may give one key per tenant.
    if (this.#arns.size >= MAX_DURABLE_KEYS) this.#arns.clear();
    this.#arns.set(keyId, arn);
  }

  /**
   * What a stable row that `#unwrapRecord` refused with `error` is: dead (its KMS key gone for
   * good, §6.4.5), or refused for good. A row the KMS refused as its key's (`mayBeGone`) is dead,
   * pending `#confirmGone`. A row that no configured key is the key of is dead only when its own
   * key is gone: the KMS is asked to unwrap it once more, without `KeyId`, and only its answer
   * counts — the plaintext of a success is wiped unread, the row then being live under a key the
   * engine is not configured with (planted, or an alias re-pointed without listing the key it
   * named in `previousKeyIds`): KMSInternalException. `confirmWith` is the key id whose refusal
   * confirms, as `#confirmGone` would, that the row names another key than the one selected.
   * Any other refusal of that Decrypt (throttling, AccessDenied) leaves the row's key's state
   * unknown: KMSInternalException with that refusal as its `cause`; a failure that is no KMS
   * answer (a socket error) is thrown as it is.
   * @throws KMSInternalException as above; `error` when it says nothing of the row's key.
   */
  async #deadRow(
    record: DataKeyRecord,
    error: unknown,
    confirmWith: string | undefined,
  ): Promise<GoneStable> {
    if (mayBeGone(error)) return goneRow(record, error);
    const unconfigured =
      typeof error === "object" && error !== null ? unconfiguredRefusals.get(error) : undefined;
    if (unconfigured === undefined) throw error;
    try {
      const { plaintext } = await this.#kms.decrypt(
        {
          ciphertextBlob: unconfigured.record.wrappedKey,
          encryptionContext: unconfigured.record.encryptionContext,
        },
        kmsCallOptions(),
      );
      plaintext.fill(0);
    } catch (probe) {
      const kind = kmsErrorKind(probe);
      if (kind === "NotFoundException" || kind === "InvalidCiphertextException") {
        const gone = goneRow(unconfigured.record, probe);
        gone.confirmed = confirmWith !== undefined && unconfigured.refusedBy.includes(confirmWith);
        return gone;
      }
      // Throttling, AccessDenied, a KMS fault: whether the row's key is gone is not known, and
      // the advice for a live row (list its key) would send the operator the wrong way.
      if (!isKmsAnswer(probe)) throw probe;
      throw unconfiguredStableRow(probe);
    }
    throw unconfiguredStableRow();
  }

  /**
   * The id of the stable data key of `context` (`ctxKey` its contextKey; the one
   * `stableForScope` finds or creates), without touching the store or the KMS: the one this
   * engine found for it, if it holds one, else the id of generation 0 (derived; the one in use
   * unless a KMS key of the context was deleted, FORMAT §6.4.5).
   */
  stableIdOf(context: EncryptionContext, ctxKey: string): string {
    const keyId = this.#selectKey(context);
    const found = this.#stableByScope.get(`${keyId}\u0000${ctxKey}`);
    if (found !== undefined && !found.retired) return found.id;
    return hexOf(stableDataKeyId(keyId, context, 0));
  }

  /** The KMS key id the configured selector chooses for `context`. */
  keyIdOf(context: EncryptionContext): string {
    return this.#selectKey(context);
  }

  /**
   * The stable key of (`keyId`, context) if its row exists, for equality lookups of a key being
   * migrated from (`previousKeyIds`): never creates one, as a key no value was written under has
   * no values to match. Generations whose KMS key is gone for good are passed over as
   * `#findStable` passes them (their values cannot be read, nor matched); undefined when no
   * generation has a live row. Misses are not remembered: a row another process inserts later
   * (an instance still writing under the old key) is found at the next lookup.
   * @throws KMSInternalException when a row under the id is wrapped under another context, or
   *   (live) under a KMS key the engine is not configured with; the KMS's error when the key
   *   cannot be unwrapped for another reason (disabled, pending deletion).
   */
  async #existingStable(
    keyId: string,
    context: EncryptionContext,
    ctxKey: string,
  ): Promise<StableKey | undefined> {
    const scope = `${keyId}\u0000${ctxKey}`;
    const generation = this.#generation;
    const found = this.#foundForScope(scope);
    if (found !== undefined) return found;
    for (let n = 0; n <= MAX_STABLE_GENERATION; n++) {
      const id = hexOf(stableDataKeyId(keyId, context, n));
      const record = await this.record(id);
      if (record === undefined) return undefined;
      // Before any KMS call, as on the write path: a planted row is never unwrapped.
      if (!sameContext(record.encryptionContext, context)) throw foreignStableRow();
      const known = this.#goneStable.get(id);
      if (known !== undefined && sameBytes(known.wrappedKey, record.wrappedKey)) continue;
      try {
        const stable = await this.#stableOfContext(id, context);
        if (!stable.retired) bounded(this.#stableByScope, scope, stable, MAX_STABLE_KEYS);
        return stable;
      } catch (error) {
        // Passed over for this lookup, which creates nothing; not confirmed (not asked under the
        // key #findStable selects), so #findStable asks before it makes a generation to replace it.
        const gone = await this.#deadRow(record, error, undefined);
        if (generation === this.#generation) bounded(this.#goneStable, id, gone, MAX_STABLE_KEYS);
      }
    }
    return undefined;
  }

  /**
   * `useStable` on `#existingStable`'s key, loading it again while a clear() drops it between
   * the load and the use; undefined when there is no such key.
   */
  async withExistingStable<T>(
    keyId: string,
    context: EncryptionContext,
    ctxKey: string,
    use: (stable: StableKey) => T,
  ): Promise<T | undefined> {
    for (;;) {
      const stable = await this.#existingStable(keyId, context, ctxKey);
      if (stable === undefined) return undefined;
      const value = this.useStable(stable, use);
      if (value !== undefined) return value;
    }
  }

  /** The key `scope` found, while it is not retired and young enough (an expired one is let go). */
  #foundForScope(scope: string): StableKey | undefined {
    const now = this.#now();
    this.#sweepStable(now);
    const found = this.#stableByScope.get(scope);
    if (found === undefined || found.retired) return undefined;
    if (this.#fresh(found, now)) return found;
    this.#expireStable(found);
    return undefined;
  }

  stableForScope(
    context: EncryptionContext,
    ctxKey: string,
    transactionScope?: string,
  ): Promise<StableKey> {
    const keyId = this.#selectKey(context);
    const scope = `${keyId}\u0000${ctxKey}`;
    const found = this.#foundForScope(scope);
    if (found !== undefined) return Promise.resolve(found);
    const pending = this.#stableLoadsByScope.get(scope);
    if (pending !== undefined) return pending;
    if (transactionScope !== undefined) {
      return this.#scopedStableFor(keyId, context, scope, transactionScope);
    }
    const loading: Promise<StableKey> = this.#loadOrCreateStable(keyId, context).then((stable) => {
      if (this.#stableLoadsByScope.get(scope) === loading) this.#stableLoadsByScope.delete(scope);
      ownStable(stable, context);
      if (!stable.retired) bounded(this.#stableByScope, scope, stable, MAX_STABLE_KEYS);
      return stable;
    });
    this.#stableLoadsByScope.set(scope, loading);
    loading.catch(() => {
      if (this.#stableLoadsByScope.get(scope) === loading) this.#stableLoadsByScope.delete(scope);
    });
    return loading;
  }

  /**
   * Inside a transaction: the key row may be rolled back, so nothing found or created here is
   * the engine's before the transaction commits.
   */
  #scopedStableFor(
    keyId: string,
    context: EncryptionContext,
    scope: string,
    transactionScope: string,
  ): Promise<StableKey> {
    const inScope = scopedKey(transactionScope, scope);
    // Read before the lookup: a reading that finds the clock set back lets the held key go.
    const now = this.#now();
    const held = this.#scopedStable.get(inScope);
    if (held !== undefined) {
      const stable = held.stable;
      // Still in flight, or settled and young enough.
      if (stable === undefined) return held.loading;
      if (!stable.retired && this.#fresh(stable, now)) return held.loading;
      this.#scopedStable.delete(inScope);
      this.#retire(stable);
    }
    let entry: ScopedStable | undefined;
    const loading = this.#loadScopedStable(
      keyId,
      context,
      this.#transaction(transactionScope),
      (stable) => {
        if (entry !== undefined) entry.stable = stable;
      },
    );
    entry = { loading, stable: undefined };
    // Callers that never end their scopes leave entries that the bound lets go of.
    const evicted = bounded(this.#scopedStable, inScope, entry);
    if (evicted !== undefined) {
      evicted.loading.then(
        (stable) => this.#retire(stable),
        () => {},
      );
    }
    loading.catch(() => {
      if (this.#scopedStable.get(inScope) === entry) this.#scopedStable.delete(inScope);
    });
    return loading;
  }

  /**
   * Finds or creates the stable key of (KMS key, context) for a scope entry, records it in `tx`
   * at the savepoint level its row is at, and hands it to `settled` in the same synchronous
   * step, so that no savepoint rollback falls between the two. A savepoint rolled back while
   * the key was being found or made may have taken its row: the row is looked up again, and
   * the key made anew when it is gone.
   */
  async #loadScopedStable(
    keyId: string,
    context: EncryptionContext,
    tx: TransactionState,
    settled: (stable: StableKey) => void,
  ): Promise<StableKey> {
    for (;;) {
      let rollbacks = tx.rollbacks;
      const stable = await this.#loadOrCreateStableUncached(keyId, context);
      let survived = true;
      while (survived && tx.rollbacks !== rollbacks) {
        rollbacks = tx.rollbacks;
        // Not just "a row": another writer may have made the id's row anew with another key.
        const row = await this.#store.get(stable.id);
        survived = row !== undefined && sameBytes(row.wrappedKey, stable.wrappedKey);
      }
      if (!survived) {
        this.#drop(stable);
        continue;
      }
      try {
        ownStable(stable, context);
      } catch (error) {
        this.#drop(stable);
        throw error;
      }
      this.#recordStable(tx, stable.id);
      settled(stable);
      return stable;
    }
  }

  /**
   * The stable data key `id`, for reading a deterministic value (`decrypt`, `decryptMany`,
   * `inspect`). As `readKey`, it is handed out only when `admits` the context it is wrapped
   * under, cached or not, and the KMS is asked to unwrap its row only when `admits` the context
   * the row stores.
   * @throws InvalidCiphertextException (the generic error) when not admitted or unknown.
   */
  stableForId(id: string, admits: AdmitsKeyContext): Promise<StableKey> {
    return this.#admittedStable(id, admits, generic);
  }

  /**
   * The stable data key `id` for the paths that write or match under (KMS key, `context`), whose
   * id is derived from that very context (`#findStable`, `#existingStable`): the key must be
   * wrapped under exactly `context`, not a context it holds, whether cached or unwrapped now.
   * Any other key under the id came from a row planted there (a key its planter may know), and
   * is an integrity failure of the data-key table, not a bad value: KMSInternalException.
   */
  #stableOfContext(id: string, context: EncryptionContext): Promise<StableKey> {
    return this.#admittedStable(id, (stored) => sameContext(stored, context), foreignStableRow);
  }

  /**
   * `stableForId` and `#stableOfContext`: fails with `refusal()` when `admits` refuses the
   * context of the key it would hand out (cached, joined or unwrapped now), or the one its row
   * stores (before any KMS call); with the generic error when the key is unknown.
   */
  #admittedStable(id: string, admits: AdmitsKeyContext, refusal: () => Error): Promise<StableKey> {
    const ready = this.#readyStable(id);
    if (ready !== undefined) {
      return admits(ready.context) ? Promise.resolve(ready) : Promise.reject(refusal());
    }
    const admitted = (stable: StableKey): StableKey => {
      if (!admits(stable.context)) throw refusal();
      return stable;
    };
    const forgets = this.#forgets;
    return this.record(id).then((record) => {
      if (record === undefined) throw generic();
      // A row rolled back while it was read may be the one just read: read it again.
      if (this.#forgets !== forgets) return this.#admittedStable(id, admits, refusal);
      if (!admits(record.encryptionContext)) throw refusal();
      // Loaded while the row was read: from another row under the id (one since replaced), maybe.
      const held = this.#readyStable(id);
      if (held !== undefined) return admitted(held);
      const pending = this.#stableLoads.get(id);
      if (pending !== undefined) {
        if (!admits(pending.keyContext)) throw refusal();
        // A load answers with the key the engine holds under the id when it lands (#adopt): one
        // made from another row meanwhile, maybe.
        return pending.loading.then(admitted);
      }
      const generation = this.#generation;
      const loading: Promise<StableKey> = this.#unwrapRecord(record, "stable").then((unwrapped) => {
        const stable = this.#newStable(
          id,
          unwrapped.plaintext,
          unwrapped.kmsKeyId,
          record.wrappedKey,
          record.encryptionContext,
          generation,
        );
        if (this.#stableLoads.get(id) !== entry) {
          // Forgotten meanwhile (a rollback of its row, a clear()): never the engine's.
          this.#drop(stable);
          return stable;
        }
        this.#stableLoads.delete(id);
        return this.#adopt(stable);
      });
      const entry: Unwrapping<StableKey> = { keyContext: record.encryptionContext, loading };
      this.#stableLoads.set(id, entry);
      // Only its own entry: a load started after this one was forgotten may hold the id now.
      loading.catch(() => {
        if (this.#stableLoads.get(id) === entry) this.#stableLoads.delete(id);
      });
      return loading.then(admitted);
    });
  }

  /** `#findStable` for a transaction scope: nothing it finds or makes is the engine's yet. */
  #loadOrCreateStableUncached(keyId: string, context: EncryptionContext): Promise<StableKey> {
    const generation = this.#generation;
    return this.#findStable(
      keyId,
      context,
      async (id, record) => {
        const unwrapped = await this.#unwrapRecord(record, "stable");
        return this.#newStable(
          id,
          unwrapped.plaintext,
          unwrapped.kmsKeyId,
          record.wrappedKey,
          record.encryptionContext,
          generation,
        );
      },
      (mine) => mine,
    );
  }

  /** `#findStable` outside transactions: what it finds or makes is the engine's. */
  #loadOrCreateStable(keyId: string, context: EncryptionContext): Promise<StableKey> {
    return this.#findStable(
      keyId,
      context,
      (id) => this.#stableOfContext(id, context),
      (mine) => this.#adopt(mine),
    );
  }

  /**
   * Finds or creates the stable data key of (KMS key id, context). Its id is derived from both
   * (FORMAT §6.1.3), so every process finds the same one without coordination; the store's
   * insert-if-absent settles races (the first row wins, and every writer uses it).
   *
   * A row whose KMS key is gone for good (deleted, or lost with a KMS store that was reset) can
   * never be unwrapped again, and a tenant whose key was re-created under the same alias would
   * find it first forever. So the id carries a generation (§6.4.5): the row of generation n is
   * passed over, and generation n + 1 found or created, when the KMS refuses to unwrap it with
   * NotFoundException or InvalidCiphertextException (what a deleted key gives, in AWS and in the
   * in-process Kms; asked without `KeyId` when no configured key is the row's, `#deadRow`) and
   * the KMS confirms that the row's wrapped key names another KMS key than the one the
   * configured key id now selects (`#confirmGone`, or the refusal under that key id itself; the
   * row's columns decide nothing). A key disabled or pending deletion fails with another error
   * and is never passed over (both can be undone); a broken row under the key still selected is
   * not either, nor a live row under a key the engine is not configured with
   * (KMSInternalException). The rows passed over stay: their values stay unreadable (that is
   * what deleting a key is for) and are never overwritten.
   */
  async #findStable(
    keyId: string,
    context: EncryptionContext,
    open: (id: string, record: DataKeyRecord) => Promise<StableKey>,
    adopt: (mine: StableKey) => StableKey,
  ): Promise<StableKey> {
    const generation = this.#generation;
    let gone: GoneStable | undefined;
    const passed: [string, GoneStable][] = [];
    const found = (stable: StableKey): StableKey => {
      // Not across a clear(): it forgets dead rows too, including the ones this probe found.
      if (generation !== this.#generation) return stable;
      for (const [id, dead] of passed) bounded(this.#goneStable, id, dead, MAX_STABLE_KEYS);
      return stable;
    };
    for (let n = 0; n <= MAX_STABLE_GENERATION; n++) {
      const id = hexOf(stableDataKeyId(keyId, context, n));
      let record = await this.#store.get(id);
      if (record === undefined) {
        const inserted = await this.#insertStable(keyId, context, id, generation, gone);
        if (inserted.mine !== undefined) return found(adopt(inserted.mine));
        record = inserted.record;
      } else if (gone !== undefined) {
        // Made by another writer: it replaces the row before only if that row's key is gone.
        await this.#confirmGone(gone, keyId);
      }
      // Before any KMS call: a row planted here under another context is never unwrapped.
      if (!sameContext(record.encryptionContext, context)) throw foreignStableRow();
      const known = this.#goneStable.get(id);
      if (known !== undefined && sameBytes(known.wrappedKey, record.wrappedKey)) {
        gone = known;
        passed.push([id, known]);
        continue;
      }
      try {
        return found(await open(id, record));
      } catch (error) {
        gone = await this.#deadRow(record, error, keyId);
        passed.push([id, gone]);
      }
    }
    throw new KmsInternalError(
      `the stable data key of this context was found gone in ${MAX_STABLE_GENERATION + 1} generations`,
    );
  }

  /**
   * Returns when the KMS says that `gone`'s wrapped key names another KMS key than `keyId` selects:
   * asked to unwrap it under `keyId`, it answers IncorrectKeyException (the blob is another
   * key's) or NotFoundException (the blob's key, or `keyId`'s, does not exist). The row's
   * `kmsKeyId` column decides nothing: whoever writes the data-key table writes it too. Throws
   * the row's own error otherwise (a broken row under the key still selected is not passed
   * over: no generation replaces a live key's row). Marks `gone` confirmed when it returns.
   */
  async #confirmGone(gone: GoneStable, keyId: string): Promise<void> {
    if (gone.confirmed) return;
    try {
      const { plaintext } = await this.#kms.decrypt(
        { ciphertextBlob: gone.wrappedKey, encryptionContext: gone.encryptionContext, keyId },
        kmsCallOptions(),
      );
      plaintext.fill(0);
    } catch (error) {
      if (notThisKey(error)) {
        gone.confirmed = true;
        return;
      }
    }
    throw gone.error;
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
    gone: GoneStable | undefined,
  ): Promise<{ mine?: StableKey; record: DataKeyRecord }> {
    const generated = await this.#kms.generateDataKey(
      { keyId, keySpec: "AES_256", encryptionContext: context },
      kmsCallOptions(),
    );
    assertGeneratedKey(generated.plaintext);
    this.#learnArn(keyId, generated.keyId);
    if (gone !== undefined) {
      // Asked about the key the KMS reports for the configured key id now. If that is the key
      // the row before names, the key works and that row is broken: its error stands.
      try {
        await this.#confirmGone(gone, generated.keyId);
      } catch (error) {
        generated.plaintext.fill(0);
        throw error;
      }
    }
    let record: DataKeyRecord;
    let stored: boolean;
    try {
      record = await this.#store.insert({
        id,
        kmsKeyId: generated.keyId,
        wrappedKey: generated.ciphertextBlob,
        encryptionContext: { ...context },
        purpose: "stable",
        createdAt: this.#clock.now(),
      });
      stored = sameBytes(record.wrappedKey, generated.ciphertextBlob);
    } catch (error) {
      // Nothing stored wraps it: it can never be used.
      generated.plaintext.fill(0);
      throw error;
    }
    if (stored) {
      return {
        mine: this.#newStable(
          id,
          generated.plaintext,
          generated.keyId,
          generated.ciphertextBlob,
          context,
          generation,
        ),
        record,
      };
    }
    generated.plaintext.fill(0);
    return { record };
  }
}

/**
 * The options of every KMS call of the engine: the ambient request id (runWithRequestId), read
 * where the call is made. A load shared by concurrent callers runs in its first caller's scope,
 * so its call carries that caller's id. No principal: a data key, once loaded, serves every
 * caller of the engine, so naming one caller's principal would suggest an authorization per
 * principal that the cache never makes.
 */
function kmsCallOptions(): CallOptions | undefined {
  const requestId = currentRequestId();
  return requestId === undefined ? undefined : { requestId };
}

/**
 * First 16 bytes of SHA-256("kms1 stable data key" || u16 len || keyId || context encoding),
 * followed, from generation 1 on, by u32 generation (FORMAT §6.1.3): generation 0 is the id
 * every stable key had before generations existed. A context encoding is never a proper prefix
 * of another (the empty one is no encoding's prefix followed by 4 more bytes either: a count of
 * zero, or a pair in 4 bytes, is no encoding), so no generation's input is another's.
 */
function stableDataKeyId(
  keyId: string,
  context: EncryptionContext,
  generation: number,
): Uint8Array {
  const keyBytes = encoder.encode(keyId);
  const ctx = encodeEncryptionContext(context, "context");
  const tail = generation === 0 ? 0 : 4;
  const input = new Uint8Array(STABLE_ID_PREFIX.length + 2 + keyBytes.length + ctx.length + tail);
  const view = new DataView(input.buffer);
  input.set(STABLE_ID_PREFIX, 0);
  view.setUint16(STABLE_ID_PREFIX.length, keyBytes.length);
  input.set(keyBytes, STABLE_ID_PREFIX.length + 2);
  input.set(ctx, STABLE_ID_PREFIX.length + 2 + keyBytes.length);
  if (tail !== 0) view.setUint32(input.length - 4, generation);
  return sha256(input).subarray(0, DATA_KEY_ID_LENGTH);
}

/**
 * A data key GenerateDataKey answered with must be 32 bytes before anything is stored or sealed
 * under it, as an unwrapped one must (FORMAT §6.1 item 6): a stable key feeds HKDF, which takes a
 * key of any length, so a KmsLike answering with a short key would make every deterministic value
 * and blind index of the context guessable — and its row, once stored, would never unwrap again.
 * @throws KMSInternalException (the key's bytes wiped) otherwise.
 */
function assertGeneratedKey(plaintext: Uint8Array): void {
  if (plaintext.length === 32) return;
  const length = plaintext.length;
  plaintext.fill(0);
  throw new KmsInternalError(
    `GenerateDataKey answered with a data key of ${length} bytes; AES_256 asks for 32`,
  );
}

/**
 * Errors of the KMS's Decrypt of a data-key row (not the engine's own refusals, which are
 * InvalidCiphertextErrors too): only these may say that a stable row's KMS key is gone.
 */
const kmsRefusals = new WeakSet<object>();

/**
 * The generic errors `#unwrapRecord` threw because no configured key is the row's: the row, and
 * the key ids whose Decrypt said so (IncorrectKeyException, NotFoundException).
 */
const unconfiguredRefusals = new WeakMap<
  object,
  { readonly record: DataKeyRecord; readonly refusedBy: readonly string[] }
>();

/**
 * A Decrypt under a given `KeyId` that says the blob is not that key's: IncorrectKeyException
 * (another key's), or NotFoundException (the key given does not exist, so it is no row's now).
 */
function notThisKey(error: unknown): boolean {
  const kind = kmsErrorKind(error);
  return kind === "IncorrectKeyException" || kind === "NotFoundException";
}

/**
 * What `previousKeyIds` gives for `context`, each key id once, in its order: the one reading of
 * it for the read path (`#candidateKeys`) and the lookup forms, so that both try the same keys.
 * @throws ValidationException when it gives something other than a list of key ids.
 */
export function previousKeyIdsOf(
  previousKeyIds: (context: EncryptionContext) => readonly string[],
  context: EncryptionContext,
): string[] {
  const ids: unknown = previousKeyIds(context);
  if (!isKeyIdList(ids)) {
    throw new ValidationError(`"previousKeyIds" must give an array of non-empty key ids`);
  }
  return [...new Set(ids)];
}

/**
 * Whether `ids` is a list of non-empty key ids (what `previousKeyIds` must give, or be when
 * configured as an array).
 */
export function isKeyIdList(ids: unknown): ids is readonly string[] {
  return Array.isArray(ids) && ids.every((id) => typeof id === "string" && id.length > 0);
}

/**
 * What a Decrypt of a row whose KMS key is gone for good fails with: NotFoundException (AWS),
 * or InvalidCiphertextException (the in-process Kms, for which a blob naming a key that does
 * not exist is invalid ciphertext). By `code` (KmsError) or `name` (an AWS SDK error).
 */
function mayBeGone(error: unknown): boolean {
  if (typeof error !== "object" || error === null || !kmsRefusals.has(error)) return false;
  const kind = kmsErrorKind(error);
  return kind === "NotFoundException" || kind === "InvalidCiphertextException";
}

/**
 * Whether `error` is the KMS's answer rather than a failure to get one (a bug in a KmsLike, a
 * socket error): a KmsError, or an AWS SDK service exception (AWS names them all `…Exception`).
 */
function isKmsAnswer(error: unknown): boolean {
  if (isKmsError(error)) return true;
  const kind = kmsErrorKind(error);
  return typeof kind === "string" && kind.endsWith("Exception");
}

/** A KMS error's kind: `code` (KmsError) or `name` (an AWS SDK error). */
function kmsErrorKind(error: unknown): unknown {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, name } = error as { code?: unknown; name?: unknown };
  return typeof code === "string" ? code : name;
}

/** A stable row found dead: refused by the KMS with `error`, not yet confirmed (`#confirmGone`). */
function goneRow(record: DataKeyRecord, error: unknown): GoneStable {
  return {
    wrappedKey: record.wrappedKey,
    encryptionContext: record.encryptionContext,
    error,
    confirmed: false,
  };
}

/** Whether `a` and `b` hold the same bytes (compared in place: no copy of either). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

/**
 * `loaded`, when values of `binding` (an encoding, built from the pairs `context`) may open
 * under it (FORMAT §6.2). A binding that opened under the key before is not asked again:
 * `lastBinding` and the keys of `aads` are only ever bindings the engine's open admitted, and
 * an encoding is one object per (model, field, context), so the hot path pays one comparison.
 * @throws InvalidCiphertextException (the generic error) otherwise.
 */
function admitBinding(
  loaded: LoadedKey,
  binding: Uint8Array,
  context: Readonly<EncryptionContext>,
): LoadedKey {
  if (
    loaded.lastBinding === binding ||
    loaded.aads.has(binding) ||
    holdsKeyContext(context, loaded.context)
  ) {
    return loaded;
  }
  throw generic();
}

/** Both contexts hold exactly the same pairs. */
function sameContext(
  stored: Readonly<EncryptionContext>,
  context: Readonly<EncryptionContext>,
): boolean {
  return (
    Object.keys(stored).length === Object.keys(context).length && holdsKeyContext(context, stored)
  );
}

/** How many times a context's stable data key may be found gone before the engine gives up. */
const MAX_STABLE_GENERATION = 32;

const MAX_SCOPED_ENTRIES = 256;

/** A cache or map key private to one transaction scope. */
function scopedKey(transactionScope: string, key: string): string {
  return `${transactionScope}\u0000${key}`;
}

/**
 * Inserts into a map that forgets its oldest entry beyond `max`; returns the value forgotten,
 * if any (the caller lets go of what it held).
 */
function bounded<V>(
  map: Map<string, V>,
  key: string,
  value: V,
  max = MAX_SCOPED_ENTRIES,
): V | undefined {
  let evicted: V | undefined;
  if (!map.has(key) && map.size >= max) {
    const oldest = map.entries().next();
    if (oldest.done !== true) {
      map.delete(oldest.value[0]);
      evicted = oldest.value[1];
    }
  }
  map.set(key, value);
  return evicted;
}

/**
 * The stable key found under the id of (KMS key, context) must be wrapped under that very
 * context. Its id is derived, so whoever writes the data-key table can plant a row there first,
 * wrapping a key they know under a context their KMS rights allow: writing deterministic values
 * or blind indexes under it would let them read those. Such a row is refused, not used — and
 * refused before the KMS is asked to unwrap it (`#findStable`); this checks the key in hand.
 */
function ownStable(stable: StableKey, context: EncryptionContext): StableKey {
  if (!sameContext(stable.context, context)) throw foreignStableRow();
  return stable;
}

/**
 * A stable row no configured key is the key of: live under its own key (no `cause`), or one
 * whose own key the KMS would not say is gone, refusing the probe with `cause`.
 */
function unconfiguredStableRow(cause?: unknown): KmsInternalError {
  const row =
    "the data-key row stored under this context's stable data key id is wrapped under a KMS key that neither keyId nor previousKeyIds names for its context";
  if (cause === undefined) {
    return new KmsInternalError(
      `${row} (after re-pointing an alias, list the key it named before in previousKeyIds)`,
    );
  }
  return new KmsInternalError(
    `${row}, and unwrapping it under its own key failed with ${String(kmsErrorKind(cause))}; see cause`,
    { cause },
  );
}

function foreignStableRow(): KmsInternalError {
  return new KmsInternalError(
    "the data-key row stored under this context's stable data key id is wrapped under another context",
  );
}
