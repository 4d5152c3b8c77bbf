import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { Clock } from "../clock.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { KmsInternalError } from "../errors.ts";
import { type AesKey, importAesKey } from "../hsm/aes-gcm.ts";
import { randomBytes } from "../hsm/random.ts";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import { encodeBinding, type FieldBinding } from "./binding.ts";
import type { DataKeyRecord, DataKeyStore } from "./data-key-store.ts";
import {
  DATA_KEY_ID_LENGTH,
  FORMAT_RANDOMIZED,
  invalidFieldCiphertext as generic,
  HEADER_LENGTH,
  hexOf,
} from "./field-format.ts";

/** A randomized data key in use for writing, with what it has been charged so far. */
export interface Materials {
  readonly id: string;
  readonly header: Uint8Array;
  /** header || binding per binding (cached binding encodings are stable objects). */
  readonly aads: WeakMap<Uint8Array, Uint8Array>;
  readonly key: AesKey;
  readonly kmsKeyId: string;
  readonly createdAt: number;
  values: number;
  bytes: number;
}

/** A decrypted data key for reading, with the AADs (header || binding) built for it. */
export interface LoadedKey {
  readonly key: AesKey;
  readonly loadedAt: number;
  /** header || binding per binding encoding (cached encodings are stable objects). */
  readonly aads: WeakMap<Uint8Array, Uint8Array>;
}

/** The data key of (KMS key, context) behind deterministic values and blind indexes. */
export interface StableKey {
  readonly id: string;
  readonly raw: Uint8Array;
  readonly kmsKeyId: string;
}

export interface FieldDataKeysOptions {
  readonly kms: KmsLike;
  readonly store: DataKeyStore;
  readonly keyId: (context: EncryptionContext) => string;
  readonly clock: Clock;
  readonly maxAgeMs: number;
  readonly maxValues: number;
  readonly maxBytes: number;
  readonly maxDecryptKeys: number;
}

const encoder = new TextEncoder();
const DET_SALT = encoder.encode("kms1 deterministic");
const BIDX_SALT = encoder.encode("kms1 blind index");
const STABLE_ID_PREFIX = encoder.encode("kms1 stable data key");
const MAX_DERIVED_KEYS = 4096;

/**
 * The data keys of a field engine (docs/FORMAT.md §6.1, §6.4): randomized keys for writing,
 * replaced at the cache limits; decrypted keys for reading, by id; stable keys per (KMS key,
 * context); and their derived subkeys. Every KMS call of the engine happens here, at most once
 * per data key at a time (concurrent callers share the pending call).
 */
export class FieldDataKeys {
  readonly #kms: KmsLike;
  readonly #store: DataKeyStore;
  readonly #selectKey: (context: EncryptionContext) => string;
  readonly #clock: Clock;
  readonly #maxAgeMs: number;
  readonly #maxValues: number;
  readonly #maxBytes: number;
  readonly #maxDecryptKeys: number;
  readonly #materials = new Map<string, Materials>();
  readonly #materialsInFlight = new Map<string, Promise<Materials>>();
  readonly #readKeys = new Map<string, LoadedKey>();
  readonly #readKeysInFlight = new Map<string, Promise<LoadedKey>>();
  readonly #stableByScope = new Map<string, Promise<StableKey>>();
  readonly #stableById = new Map<string, Promise<StableKey>>();
  /** The settled entries of #stableById, for synchronous reads. */
  readonly #stableReady = new Map<string, StableKey>();
  /**
   * The read key last found by header, so that a result set under one data key costs a
   * 16-byte comparison per value instead of a hex id and a map lookup.
   */
  #lastHeader = new Uint8Array(HEADER_LENGTH);
  #lastLoaded: LoadedKey | undefined;
  /** Subkeys per stable key object: ids repeat when a rolled-back key is created again. */
  readonly #derived = new WeakMap<StableKey, Map<string, Uint8Array>>();
  readonly #records = new Map<string, Promise<DataKeyRecord | undefined>>();
  readonly #scopedMaterials = new Map<string, Materials>();
  readonly #scopedStable = new Map<string, Promise<StableKey>>();

  constructor(options: FieldDataKeysOptions) {
    this.#kms = options.kms;
    this.#store = options.store;
    this.#selectKey = options.keyId;
    this.#clock = options.clock;
    this.#maxAgeMs = options.maxAgeMs;
    this.#maxValues = options.maxValues;
    this.#maxBytes = options.maxBytes;
    this.#maxDecryptKeys = options.maxDecryptKeys;
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
    const cacheKey = `${this.#selectKey(context)}\u0000${ctxKey}`;
    const durable = this.#materials.get(cacheKey);
    if (this.usable(durable, bytes)) return durable;
    if (transactionScope === undefined) return undefined;
    const scoped = this.#scopedMaterials.get(`${transactionScope}\u0000${cacheKey}`);
    return this.usable(scoped, bytes) ? scoped : undefined;
  }

  /** The decrypted data key `id` if it is cached and not older than maxAgeMs. */
  cachedReadKey(id: string): AesKey | undefined {
    const hit = this.#readKeys.get(id);
    if (hit === undefined || this.#clock.now() - hit.loadedAt >= this.#maxAgeMs) return undefined;
    return hit.key;
  }

  /**
   * The cached read key of a randomized value, found by its header (format byte and data key
   * id, bytes 0–16), if not older than maxAgeMs.
   */
  cachedReadKeyOf(stored: Uint8Array): LoadedKey | undefined {
    let loaded = this.#lastLoaded;
    if (loaded !== undefined) {
      const last = this.#lastHeader;
      for (let i = 1; i < HEADER_LENGTH; i++) {
        if (stored[i] !== last[i]) {
          loaded = undefined;
          break;
        }
      }
    }
    if (loaded === undefined) {
      loaded = this.#readKeys.get(hexOf(stored, 1, HEADER_LENGTH));
      if (loaded === undefined) return undefined;
      this.#lastHeader.set(stored.subarray(0, HEADER_LENGTH));
      this.#lastLoaded = loaded;
    }
    if (this.#clock.now() - loaded.loadedAt >= this.#maxAgeMs) return undefined;
    return loaded;
  }

  /** The stable data key `id` if it has been loaded. */
  cachedStable(id: string): StableKey | undefined {
    return this.#stableReady.get(id);
  }

  clear(): void {
    this.#materials.clear();
    this.#readKeys.clear();
    this.#lastLoaded = undefined;
    this.#stableByScope.clear();
    this.#stableById.clear();
    this.#stableReady.clear();
    this.#records.clear();
    this.#scopedMaterials.clear();
    this.#scopedStable.clear();
  }

  /** Per-(data key, purpose, model, field, context) subkey; cached, bounded. */
  derive(stable: StableKey, purpose: "d" | "b", binding: FieldBinding, ctxKey: string): Uint8Array {
    const cacheKey = `${purpose}\u0000${binding.model}\u0000${binding.field}\u0000${ctxKey}`;
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

  usable(m: Materials | undefined, bytes: number): m is Materials {
    if (
      m !== undefined &&
      this.#clock.now() - m.createdAt < this.#maxAgeMs &&
      m.values < this.#maxValues &&
      m.bytes + bytes <= this.#maxBytes
    ) {
      m.values += 1;
      m.bytes += bytes;
      return true;
    }
    return false;
  }

  async materialsFor(
    context: EncryptionContext,
    ctxKey: string,
    bytes: number,
    transactionScope?: string,
  ): Promise<Materials> {
    const keyId = this.#selectKey(context);
    const cacheKey = `${keyId}\u0000${ctxKey}`;
    if (transactionScope !== undefined) {
      const durable = this.#materials.get(cacheKey);
      if (this.usable(durable, bytes)) return durable;
      const scopedKey = `${transactionScope}\u0000${cacheKey}`;
      const scoped = this.#scopedMaterials.get(scopedKey);
      if (this.usable(scoped, bytes)) return scoped;
      const fresh = await this.#newMaterials(keyId, context);
      fresh.values += 1;
      fresh.bytes += bytes;
      bounded(this.#scopedMaterials, scopedKey, fresh);
      return fresh;
    }
    for (;;) {
      const m = this.#materials.get(cacheKey);
      if (this.usable(m, bytes)) return m;
      if (m !== undefined) this.#materials.delete(cacheKey);
      let pending = this.#materialsInFlight.get(cacheKey);
      if (pending === undefined) {
        pending = this.#newMaterials(keyId, context).finally(() =>
          this.#materialsInFlight.delete(cacheKey),
        );
        this.#materialsInFlight.set(cacheKey, pending);
        this.#materials.set(cacheKey, await pending);
      } else {
        await pending;
      }
      // Loop: a concurrent burst may have used up the fresh key's limits already.
    }
  }

  async #newMaterials(keyId: string, context: EncryptionContext): Promise<Materials> {
    const generated = await this.#kms.generateDataKey({
      keyId,
      keySpec: "AES_256",
      encryptionContext: context,
    });
    const idBytes = randomBytes(DATA_KEY_ID_LENGTH);
    const id = hexOf(idBytes);
    const now = this.#clock.now();
    const stored = await this.#store.insert({
      id,
      kmsKeyId: generated.keyId,
      wrappedKey: generated.ciphertextBlob,
      encryptionContext: { ...context },
      purpose: "randomized",
      createdAt: now,
    });
    if (stored.kmsKeyId !== generated.keyId) {
      generated.plaintext.fill(0);
      throw new KmsInternalError("data key id collision in the data key store");
    }
    const key = importAesKey(generated.plaintext);
    this.#remember(id, key);
    const header = new Uint8Array(HEADER_LENGTH);
    header[0] = FORMAT_RANDOMIZED;
    header.set(idBytes, 1);
    return {
      id,
      header,
      aads: new WeakMap(),
      key,
      kmsKeyId: generated.keyId,
      createdAt: now,
      values: 0,
      bytes: 0,
    };
  }

  #remember(id: string, key: AesKey): void {
    if (this.#readKeys.size >= this.#maxDecryptKeys) {
      const oldest = this.#readKeys.keys().next();
      if (oldest.done !== true) this.#readKeys.delete(oldest.value);
      this.#lastLoaded = undefined;
    }
    this.#readKeys.set(id, { key, loadedAt: this.#clock.now(), aads: new WeakMap() });
    // A key loaded again under an id (e.g. after its age ran out) replaces the remembered one.
    this.#lastLoaded = undefined;
  }

  async readKey(id: string): Promise<LoadedKey> {
    const hit = this.#readKeys.get(id);
    if (hit !== undefined && this.#clock.now() - hit.loadedAt < this.#maxAgeMs) return hit;
    let pending = this.#readKeysInFlight.get(id);
    if (pending === undefined) {
      pending = this.#unwrap(id, "randomized")
        .then((raw) => {
          this.#remember(id, importAesKey(raw));
          return this.#readKeys.get(id) as LoadedKey;
        })
        .finally(() => this.#readKeysInFlight.delete(id));
      this.#readKeysInFlight.set(id, pending);
    }
    return pending;
  }

  record(id: string): Promise<DataKeyRecord | undefined> {
    let pending = this.#records.get(id);
    if (pending === undefined) {
      pending = this.#store.get(id);
      this.#records.set(id, pending);
      // Forget misses so that a key inserted later by another process is found.
      pending.then(
        (r) => {
          if (r === undefined) this.#records.delete(id);
        },
        () => this.#records.delete(id),
      );
    }
    return pending;
  }

  async #unwrap(id: string, purpose: DataKeyRecord["purpose"]): Promise<Uint8Array> {
    const record = await this.record(id);
    if (record === undefined || record.purpose !== purpose) throw generic();
    const { plaintext } = await this.#kms.decrypt({
      ciphertextBlob: record.wrappedKey,
      encryptionContext: record.encryptionContext,
    });
    if (plaintext.length !== 32) throw generic();
    return plaintext;
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
      const scopedKey = `${transactionScope}\u0000${scope}`;
      let scoped = this.#scopedStable.get(scopedKey);
      if (scoped === undefined) {
        scoped = this.#loadOrCreateStableUncached(keyId, context);
        bounded(this.#scopedStable, scopedKey, scoped);
        scoped.catch(() => this.#scopedStable.delete(scopedKey));
      }
      return scoped;
    }
    if (pending === undefined) {
      pending = this.#loadOrCreateStable(keyId, context);
      this.#stableByScope.set(scope, pending);
      pending.catch(() => this.#stableByScope.delete(scope));
    }
    return pending;
  }

  stableForId(id: string): Promise<StableKey> {
    let pending = this.#stableById.get(id);
    if (pending === undefined) {
      pending = this.record(id).then(async (record) => {
        if (record === undefined || record.purpose !== "stable") throw generic();
        return { id, raw: await this.#unwrap(id, "stable"), kmsKeyId: record.kmsKeyId };
      });
      this.#stableById.set(id, pending);
      const settling = pending;
      pending.then(
        (stable) => {
          if (this.#stableById.get(id) === settling) this.#stableReady.set(id, stable);
        },
        () => this.#stableById.delete(id),
      );
    }
    return pending;
  }

  async #loadOrCreateStableUncached(keyId: string, context: EncryptionContext): Promise<StableKey> {
    const id = hexOf(stableDataKeyId(keyId, context));
    let record = await this.#store.get(id);
    if (record === undefined) {
      const inserted = await this.#insertStable(keyId, context, id);
      if (inserted.mine !== undefined) return inserted.mine;
      record = inserted.record;
    }
    if (record.purpose !== "stable") throw generic();
    const { plaintext } = await this.#kms.decrypt({
      ciphertextBlob: record.wrappedKey,
      encryptionContext: record.encryptionContext,
    });
    return { id, raw: plaintext, kmsKeyId: record.kmsKeyId };
  }

  /**
   * The stable data key of (KMS key, context) has an id derived from both, so every process
   * finds the same one without coordination; the store's insert-if-absent settles races.
   */
  async #loadOrCreateStable(keyId: string, context: EncryptionContext): Promise<StableKey> {
    const id = hexOf(stableDataKeyId(keyId, context));
    if ((await this.#store.get(id)) !== undefined) return this.stableForId(id);
    const { mine } = await this.#insertStable(keyId, context, id);
    // Another writer stored its key first: use theirs.
    if (mine === undefined) return this.stableForId(id);
    this.#stableById.set(id, Promise.resolve(mine));
    this.#stableReady.set(id, mine);
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
      return { mine: { id, raw: generated.plaintext, kmsKeyId: generated.keyId }, record };
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

/** Inserts into a map that forgets its oldest entries beyond MAX_SCOPED_ENTRIES. */
function bounded<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.size >= MAX_SCOPED_ENTRIES) {
    const oldest = map.keys().next();
    if (oldest.done !== true) map.delete(oldest.value);
  }
  map.set(key, value);
}
