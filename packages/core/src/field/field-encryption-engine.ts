import { aessiv } from "@noble/ciphers/aes.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import { type Clock, systemClock } from "../clock.ts";
import { KmsInternalError, ValidationError } from "../errors.ts";
import { GcmOpenBatch, SHORT_GCM_MAX_BYTES } from "../hsm/gcm-key.ts";
import { assertInteger } from "../internal/assert.ts";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import {
  type BoundField,
  bindingOf,
  encodeBinding,
  type FieldBinding,
  holdsKeyContext,
  readContext,
} from "./binding.ts";
import { assertDataKeyId, type DataKeyStore } from "./data-key-store.ts";
import {
  FieldDataKeys,
  isKeyIdList,
  type LoadedKey,
  type Materials,
  previousKeyIdsOf,
  type StableKey,
  sameBytes,
} from "./field-data-keys.ts";
import {
  ciphertextBytes,
  DETERMINISTIC_OVERHEAD,
  type FieldCiphertextMode,
  FORMAT_DETERMINISTIC,
  FORMAT_RANDOMIZED,
  fromFieldText,
  invalidFieldCiphertext as generic,
  HEADER_LENGTH,
  hexOf,
  isCurrentRead,
  isFieldCiphertextText,
  parseFieldCiphertext,
  RANDOMIZED_OVERHEAD,
  readFieldText,
  toFieldText,
} from "./field-format.ts";
import {
  checkString,
  decodeFieldValue,
  decodeFieldValueIn,
  encodeFieldValue,
  encodeFieldValueShared,
  encodeIndexValue,
  encodeTypedIndexValue,
  FIELD_VALUE_TYPES,
  type FieldValue,
  type FieldValueType,
  isCurrentPlaintext,
  legacyFormOf,
  parseLegacyValue,
} from "./value-codec.ts";

/** How a field is encrypted. */
export interface FieldSpec {
  readonly type: FieldValueType;
  /**
   * "randomized" (default): AES-256-GCM with a random IV; equal values look different.
   * "deterministic": AES-SIV under a per-(field, tenant) key; equal values are equal
   * ciphertexts, so equality lookups and unique constraints work (and equality leaks).
   */
  readonly mode?: FieldCiphertextMode;
}

/** Normalizations applied, in order, before a blind index is computed. */
export type BlindIndexNormalization = "lowercase" | "trim" | "nfkc";

export interface BlindIndexSpec {
  /** Bytes of HMAC-SHA256 kept, 4–32 (default 16). Fewer bytes: more false positives, less leak. */
  readonly bytes?: number;
  /**
   * Applied to strings, and with `type` to the text of a decimal or bigint (FORMAT §6.5). A
   * function must return a string.
   */
  readonly normalize?: readonly BlindIndexNormalization[] | ((value: string) => string);
  /**
   * The declared type of the field the index is of. With it, every form the field takes for one
   * value gives one index (a decimal as `"1.5"`, `1.5` or `Prisma.Decimal("1.5")`), and a form
   * the field refuses is refused here too. Without it, the index hashes the value as it comes:
   * strings as themselves, anything else as its JSON text, so that `1.5` and `"1.5"` differ.
   * The ORM adapters pass it.
   */
  readonly type?: FieldValueType;
}

/**
 * Limits on one cached data key, like the AWS Encryption SDK's caching materials manager: a
 * data key is replaced when any limit is reached. The engine builds its own DataKeyCache from
 * them; pass `dataKeyCache` instead to share one cache (and its limits) with the message layer
 * or other engines.
 */
export interface DataKeyCacheLimits {
  /**
   * Default 5 minutes. Also bounds how long a decrypted data key stays in memory, stable ones
   * (deterministic values, blind indexes) included: past it a key is unwrapped again through
   * the KMS, which refuses once the KMS key is disabled or pending deletion.
   */
  readonly maxAgeMs?: number;
  /** Values encrypted under one data key; default 2^24 (far below GCM's 2^32 random-IV bound). */
  readonly maxValues?: number;
  /** Plaintext bytes encrypted under one data key; default 2^36. */
  readonly maxBytes?: number;
  /** Decrypted data keys kept for reading; default 1000 (the cache holds 256 more for writing). */
  readonly maxDecryptKeys?: number;
}

/** Cache entries kept for writing keys, beyond `maxDecryptKeys`, in an engine's own cache. */
const WRITE_KEY_ROOM = 256;

export interface FieldEncryptionEngineOptions {
  readonly kms: KmsLike;
  readonly dataKeyStore: DataKeyStore;
  /**
   * The KMS key that protects new data keys, or a function choosing it from the value's
   * context (e.g. one key per tenant, so deleting that key crypto-shreds only that tenant).
   * Reading, the engine asks the KMS to unwrap a data-key row only under the key this selects
   * for the key context the row stores (or one of `previousKeyIds`): a function is then called
   * with that context, which holds only pairs of the value's own context; a function that gives
   * no key id for it (anything but a non-empty string) selects none.
   */
  readonly keyId: string | ((context: EncryptionContext) => string);
  /** Limits of the engine's own data key cache; not with `dataKeyCache`. */
  readonly cache?: DataKeyCacheLimits;
  /**
   * A DataKeyCache to hold the engine's randomized data keys (writing and reading), e.g. the
   * one given to encryptMessage, so that one capacity and one set of limits (maxMessages counts
   * values here) govern every cached plaintext key of the process. Entries are namespaced per
   * engine. `clearCache()` then clears the whole shared cache.
   */
  readonly dataKeyCache?: DataKeyCache;
  /**
   * Accept stored values that are not ciphertext and return them as the declared type, parsed
   * from their text form (migrations from plaintext columns; FORMAT §6.7). Off by default: a
   * non-ciphertext value is an error. While on, anyone who can write the database can plant
   * plain values.
   */
  readonly legacyPlaintext?: boolean;
  /**
   * KMS keys whose deterministic values and blind indexes lookups still match until the
   * migration ends: while the re-encryption job moves values from one key id to `keyId` (or from
   * several), list the old ones here, on the application's engine and on the job's, so that
   * `lookupForms` and `blindIndexForms` return the form under each of them too and rows the job
   * has not reached yet stay findable. A function receives the key context, as `keyId` does.
   * Only a previous key's existing stable data key is used (none is ever created for it: a context
   * without one has no values under that key). Spell each id as `keyId` was spelled when the
   * values were written (an alias and its key's ARN are different ids: FORMAT §6.1.3). Remove
   * the option once the job has finished: every lookup then costs one form again (and each
   * previous key one data-key row read per lookup of a context that has none).
   *
   * They are also the only KMS keys besides `keyId` that a data-key row is unwrapped under
   * (FORMAT §6.2): every Decrypt of a row names the key (`KeyId`), so the KMS refuses a row
   * wrapped under any other key, and its values fail with InvalidCiphertextException. Values
   * written under an old key id, or under the key an alias named before it was re-pointed (list
   * that key's ARN: an alias is resolved by the KMS at each call), read only while it is listed.
   */
  readonly previousKeyIds?: readonly string[] | ((context: EncryptionContext) => readonly string[]);
  readonly clock?: Clock;
}

/** Per-call options of the encrypting methods. */
export interface EncryptCallOptions {
  /**
   * Set when the value is written inside a database transaction that also holds the data key
   * insert (e.g. SQLite's single connection). Data keys created under a scope are used only
   * within that scope, so a rollback that drops the key row cannot leave later values pointing
   * at a key that no longer exists. Call `endTransactionScope` when the transaction ends so
   * that, after a commit, those keys serve everyone, and report nested transactions (savepoints)
   * with `beginTransactionSavepoint` / `endTransactionSavepoint`, so that a rollback to a
   * savepoint drops the keys made since it.
   */
  readonly transactionScope?: string;
}

/** One value for `decryptMany`. */
export interface DecryptItem {
  readonly binding: FieldBinding;
  readonly spec: FieldSpec;
  /** The text form (String columns) or the bytes (Bytes columns). */
  readonly stored: string | Uint8Array;
}

/** What a stored value is made of, for rotation decisions. */
export type StoredValueInfo =
  | { readonly legacy: true }
  | {
      readonly legacy: false;
      readonly mode: FieldCiphertextMode;
      readonly dataKeyId: string;
      readonly kmsKeyId: string;
      readonly createdAt: number;
    };

function engineCache(options: FieldEncryptionEngineOptions): DataKeyCache {
  const { cache: limits, dataKeyCache: shared } = options;
  if (shared !== undefined) {
    if (!(shared instanceof DataKeyCache)) {
      throw new ValidationError(`"dataKeyCache" must be a DataKeyCache`);
    }
    if (limits !== undefined) {
      throw new ValidationError(
        `"cache" and "dataKeyCache" are exclusive: a shared cache brings its own limits`,
      );
    }
    return shared;
  }
  const limit = (name: keyof DataKeyCacheLimits, fallback: number, max: number): number =>
    assertInteger(`cache.${name}`, limits?.[name] ?? fallback, 1, max);
  return new DataKeyCache({
    capacity: limit("maxDecryptKeys", 1000, 1_000_000 - WRITE_KEY_ROOM) + WRITE_KEY_ROOM,
    maxAgeMs: limit("maxAgeMs", 5 * 60_000, Number.MAX_SAFE_INTEGER),
    maxMessages: limit("maxValues", 2 ** 24, 2 ** 32),
    maxBytes: limit("maxBytes", 2 ** 36, Number.MAX_SAFE_INTEGER),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
}

/**
 * Field-level envelope encryption shared by the ORM adapters (docs/FORMAT.md §6). Values are
 * sealed locally with AES-256-GCM (or AES-SIV in deterministic mode) under data keys that the
 * KMS generates and wraps; wrapped data keys live in a DataKeyStore beside the data, and each
 * value carries a 16-byte data key id. Reading N values costs one KMS call per distinct data
 * key among them.
 */
export class FieldEncryptionEngine {
  readonly #legacyPlaintext: boolean;
  readonly #keys: FieldDataKeys;
  /** decryptMany's batch between calls (taken by the outermost call in progress). */
  #idleQueue: OpenQueue | undefined;
  /** `previousKeyIds` as a function of the key context; undefined when none are configured. */
  readonly #previousKeyIds: ((context: EncryptionContext) => readonly string[]) | undefined;

  constructor(options: FieldEncryptionEngineOptions) {
    if (options === null || typeof options !== "object") {
      throw new ValidationError(`"options" expected an object`);
    }
    const { kms, dataKeyStore, keyId } = options;
    if (kms === undefined || typeof kms.generateDataKey !== "function") {
      throw new ValidationError(`"kms" must implement KmsLike`);
    }
    if (dataKeyStore === undefined || typeof dataKeyStore.get !== "function") {
      throw new ValidationError(`"dataKeyStore" must implement DataKeyStore`);
    }
    let selectKey: (context: EncryptionContext) => string;
    if (typeof keyId === "string") {
      if (keyId.length === 0) throw new ValidationError(`"keyId" must not be empty`);
      selectKey = () => keyId;
    } else if (typeof keyId === "function") {
      selectKey = keyId;
    } else {
      throw new ValidationError(`"keyId" must be a string or a function of the context`);
    }

    const previousKeyIds = previousKeySelector(options.previousKeyIds);
    this.#keys = new FieldDataKeys({
      kms,
      store: dataKeyStore,
      keyId: selectKey,
      previousKeyIds,
      clock: options.clock ?? systemClock,
      cache: engineCache(options),
    });
    this.#legacyPlaintext = options.legacyPlaintext === true;
    this.#previousKeyIds = previousKeyIds;
  }

  /** Whether non-ciphertext stored values are returned as they are. */
  get legacyPlaintext(): boolean {
    return this.#legacyPlaintext;
  }

  /**
   * Encrypts `value` for the column and context in `binding`.
   * @throws ValidationException when the value does not match `spec.type` (a `json` value must be
   *   JSON data: no Map, Date, class instance, toJSON(), undefined member or element, NaN or
   *   ±Infinity anywhere in it) or the binding is malformed; KMS errors (NotFoundException,
   *   DisabledException, KMSInvalidStateException, AccessDeniedException) when a data key cannot
   *   be generated, or (deterministic mode) the stable data key cannot be unwrapped — a stable
   *   key whose KMS key was deleted is replaced by its next generation when the key id now
   *   selects another key (FORMAT §6.4 item 5), else NotFoundException; KMSInternalException
   *   when the row under the context's stable data key id is wrapped under another context, or
   *   GenerateDataKey answers with a data key of other than 32 bytes.
   */
  encrypt(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<Uint8Array> {
    let bound: BoundField;
    try {
      bound = bindingOf(binding, true);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#encryptBound(bound, spec, value, options);
  }

  /** `encrypt` of a binding read once. */
  #encryptBound(
    bound: BoundField,
    spec: FieldSpec,
    value: unknown,
    options: EncryptCallOptions | undefined,
  ): Promise<Uint8Array> {
    // Fast path without an async frame: the data key is cached (the common case).
    try {
      const sealed = this.#encryptCached(bound, spec, value, options);
      if (sealed !== undefined) return Promise.resolve(sealed);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#encryptSlow(bound, spec, value, options);
  }

  async #encryptSlow(
    bound: BoundField,
    spec: FieldSpec,
    value: unknown,
    options: EncryptCallOptions | undefined,
  ): Promise<Uint8Array> {
    const plaintext = encodeFieldValue(bound.field, spec.type, value);
    try {
      const aad = encodeBinding(bound);
      const keyed = bound.keyed;
      if (spec.mode === "deterministic") {
        return await this.#keys.withStable(
          () => this.#keys.stableForScope(keyed.context, keyed.ctxKey, options?.transactionScope),
          (held) => this.#sealDeterministic(held, bound, aad, plaintext),
        );
      }
      const materials = await this.#keys.materialsFor(
        keyed.context,
        keyed.ctxKey,
        plaintext.length,
        options?.transactionScope,
      );
      return this.#sealRandomized(materials, aad, plaintext);
    } catch (error) {
      // The seal wipes the encoded value; a KMS that cannot give a data key, or a malformed
      // binding, must not leave it behind either.
      plaintext.fill(0);
      throw error;
    }
  }

  #sealRandomized(materials: Materials, binding: Uint8Array, plaintext: Uint8Array): Uint8Array {
    const aad = cachedAad(materials, binding, materials.header);
    // Ciphertext is public, so it may share a slab with other ciphertext: an ArrayBuffer of its
    // own per value cost more than the cipher on small values.
    const out = ciphertextBytes(plaintext.length + RANDOMIZED_OVERHEAD - 1);
    out.set(materials.header, 0);
    // A fresh IV from the CSPRNG pool per value, drawn inside the seal (FORMAT §6.1).
    materials.key.sealWithFreshIv(aad, plaintext, out, HEADER_LENGTH);
    plaintext.fill(0);
    return out;
  }

  /**
   * Encrypts synchronously when a data key for the binding's context is already cached in this
   * engine (randomized mode), so that ORM hooks need no promise per value; returns undefined
   * when a data key must first be generated or loaded (then call `encrypt`), and always for
   * deterministic mode. The same limits as `encrypt` are charged.
   * @throws ValidationException as `encrypt`.
   */
  encryptIfCached(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Uint8Array | undefined {
    if (spec.mode === "deterministic") return undefined;
    return this.#encryptCached(bindingOf(binding, true), spec, value, options);
  }

  /** `encryptIfCached` of a binding read once. */
  #encryptCached(
    bound: BoundField,
    spec: FieldSpec,
    value: unknown,
    options: EncryptCallOptions | undefined,
  ): Uint8Array | undefined {
    const { mode, type } = spec;
    if (mode === "deterministic") return undefined;
    const { field, keyed } = bound;
    const plaintext = encodeFieldValueShared(field, type, value);
    try {
      // Before the key is charged: a binding refused here must not use up one of its values.
      const encoded = encodeBinding(bound);
      const materials = this.#keys.cachedMaterials(
        keyed.context,
        keyed.ctxKey,
        plaintext.length,
        options?.transactionScope,
      );
      if (materials === undefined) {
        plaintext.fill(0);
        return undefined;
      }
      // A key selector or clock above that encrypted another value reused (and wiped) the
      // shared plaintext: encode again, on a buffer of its own. After the charge, yet safe:
      // only a primitive string is ever encoded into the shared buffer, and encoding one again
      // runs no caller code and cannot fail where the first encoding passed.
      const own = isCurrentPlaintext(plaintext) ? plaintext : encodeFieldValue(field, type, value);
      return this.#sealRandomized(materials, encoded, own);
    } catch (error) {
      // The shared buffer outlives this call: a throwing selector or binding must not leave
      // the value in it.
      plaintext.fill(0);
      throw error;
    }
  }

  /** `encryptIfCached`, then the text form (`kms1:` + base64url). */
  encryptTextIfCached(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): string | undefined {
    const sealed = this.encryptIfCached(binding, spec, value, options);
    return sealed === undefined ? undefined : toFieldText(sealed);
  }

  /** `encrypt`, then the text form for String columns (`kms1:` + base64url). */
  encryptText(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<string> {
    let bound: BoundField;
    try {
      bound = bindingOf(binding, true);
      const sealed = this.#encryptCached(bound, spec, value, options);
      if (sealed !== undefined) return Promise.resolve(toFieldText(sealed));
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#encryptSlow(bound, spec, value, options).then(toFieldText);
  }

  /**
   * Decrypts a stored value bound to `binding`.
   * @throws InvalidCiphertextException when the bytes are not ciphertext (unless legacy
   *   plaintext is enabled), were tampered with, or belong to another model, field or context
   *   (the last before any KMS call: FORMAT §6.2); KMS errors when a data key of the value's own
   *   context cannot be unwrapped (e.g. its KMS key was deleted).
   */
  decrypt(binding: FieldBinding, spec: FieldSpec, stored: Uint8Array): Promise<FieldValue> {
    let bound: BoundField;
    let type: FieldValueType;
    // Fast path without an async frame: the data key is cached (the common case).
    try {
      if (!(stored instanceof Uint8Array)) throw generic();
      bound = bindingOf(binding, false);
      type = spec.type;
      const value = this.#decryptCached(bound, type, stored, undefined);
      if (value !== undefined) return Promise.resolve(value);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#decryptSlow(bound, type, stored);
  }

  /**
   * Decrypts the text form. Text without the `kms1:` prefix is an error, or is returned as it
   * is when legacy plaintext is enabled.
   * @throws InvalidCiphertextException as `decrypt`.
   */
  decryptText(binding: FieldBinding, spec: FieldSpec, stored: string): Promise<FieldValue> {
    let bound: BoundField;
    let type: FieldValueType;
    let bytes: Uint8Array;
    try {
      if (typeof stored !== "string") throw generic();
      bound = bindingOf(binding, false);
      type = spec.type;
      const value = this.#decryptCached(bound, type, stored, undefined);
      if (value !== undefined) return Promise.resolve(value);
      // A miss: the text is ours (legacy text returned above) and parses.
      bytes = fromFieldText(stored);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#decryptSlow(bound, type, bytes);
  }

  /**
   * Decrypts a stored value (text or bytes form) synchronously when its data key is already
   * cached in this engine, so that ORM hooks need no promise per value; returns undefined when
   * the data key must first be loaded (then call `decrypt`, `decryptText` or `decryptMany`).
   * Legacy plaintext is returned as it is when enabled, as by `decrypt`.
   * @throws InvalidCiphertextException as `decrypt` / `decryptText`.
   */
  decryptIfCached(
    binding: FieldBinding,
    spec: FieldSpec,
    stored: string | Uint8Array,
  ): FieldValue | undefined {
    const bound = bindingOf(binding, false);
    return this.#decryptCached(bound, spec.type, stored, undefined);
  }

  /**
   * `decryptIfCached` of a binding and type read once (before the text is read into the shared
   * scratch: the getters that read them may call back into the engine); `now` (the key cache's
   * clock) may be read once for a batch.
   */
  #decryptCached(
    bound: BoundField,
    type: FieldValueType,
    stored: string | Uint8Array,
    now: number | undefined,
  ): FieldValue | undefined {
    // Without a queue nothing is queued.
    return this.#readCached(bound, type, stored, now, undefined) as FieldValue | undefined;
  }

  /** `#decryptCached`, or QUEUED when the value joined `queue` (decryptMany's batch). */
  #readCached(
    bound: BoundField,
    type: FieldValueType,
    stored: string | Uint8Array,
    now: number | undefined,
    queue: OpenQueue | undefined,
  ): FieldValue | undefined | typeof QUEUED {
    let bytes: Uint8Array;
    if (typeof stored === "string") {
      if (!isFieldCiphertextText(stored)) {
        if (this.#legacyPlaintext) return legacyValue(bound.field, type, stored);
        throw generic();
      }
      // Shared scratch bytes: from here on only the clock (inside the key caches) runs caller
      // code, and the bytes are checked or copied after it.
      bytes = readFieldText(stored);
    } else if (stored instanceof Uint8Array) {
      bytes = stored;
    } else {
      throw generic();
    }
    const format = bytes[0];
    if (format === FORMAT_RANDOMIZED && bytes.length >= RANDOMIZED_OVERHEAD) {
      const encoded = encodeBinding(bound);
      const loaded = this.#keys.cachedReadKeyOf(bytes, encoded, bound.context, now);
      if (loaded === undefined) return undefined;
      // A clock that decrypted another text (while the key's age was checked) reused the
      // scratch: read again.
      if (!isCurrentRead(bytes, stored as string)) bytes = fromFieldText(stored as string);
      if (queue !== undefined && bytes.length - RANDOMIZED_OVERHEAD + 1 <= SHORT_GCM_MAX_BYTES) {
        const aad = cachedAad(loaded, encoded, bytes, bound.context, loaded.context);
        const batch = queue.batch;
        // A run under another key, or a full batch, is opened first: a batch of a few hundred
        // values keeps its buffers in the CPU's caches.
        if (batch.size > 0 && (batch.key !== loaded.key || batch.size >= OPEN_BATCH_SIZE)) {
          openQueued(queue);
        }
        // The batch copies what it needs: `bytes` may be the shared scratch.
        const at = batch.add(loaded.key, aad, bytes, HEADER_LENGTH);
        if (at < 0) throw generic();
        queueSlot(queue, type, at, bytes.length - RANDOMIZED_OVERHEAD + 1);
        return QUEUED;
      }
      return this.#openRandomized(loaded, encoded, bound.context, type, bytes);
    }
    if (format === FORMAT_DETERMINISTIC && bytes.length >= DETERMINISTIC_OVERHEAD) {
      // Copied before the clock is read (AES-SIV costs far more than a copy): a clock that
      // decrypts another text reuses the scratch.
      const own = typeof stored === "string" ? bytes.slice() : bytes;
      // Encoded (cached) before the key is asked for, as #openDeterministic does: a binding that
      // is no binding at all is an argument error, not a key refused to its context.
      encodeBinding(bound);
      const stable = this.#keys.cachedStable(hexOf(own, 1, HEADER_LENGTH), bound.context, now);
      if (stable === undefined) return undefined;
      // Undefined (a miss: the async path loads the key again) if clearCache() dropped it.
      return this.#keys.useStable(stable, (held) =>
        this.#openDeterministic(held, bound, type, own),
      );
    }
    // Text written by us always parses; anything else is not ours, even in legacy mode.
    if (typeof stored === "string" || !this.#legacyPlaintext) throw generic();
    return legacyValue(bound.field, type, stored);
  }

  /**
   * One GCM open: the AAD is header || binding, built once per (data key, binding) and fed in
   * one update; the string type, the common case, is decoded straight from the plaintext.
   */
  #openRandomized(
    loaded: LoadedKey,
    binding: Uint8Array,
    context: EncryptionContext,
    type: FieldValueType,
    stored: Uint8Array,
  ): FieldValue {
    const aad = cachedAad(loaded, binding, stored, context, loaded.context);
    const plaintext = loaded.key.openFrom(aad, stored, HEADER_LENGTH);
    if (plaintext === undefined) throw generic();
    // A value of another type fails decoding: wiped all the same.
    try {
      return decodeFieldValue(type, plaintext);
    } finally {
      // Uint8Array's own fill: Buffer#fill validates its arguments in JS first.
      wipe.call(plaintext, 0);
    }
  }

  #openDeterministic(
    stable: StableKey,
    bound: BoundField,
    type: FieldValueType,
    stored: Uint8Array,
  ): FieldValue {
    // Encoded first: a binding that is no binding at all is an argument error, not a bad value.
    const associated = encodeBinding(bound);
    const key = this.#keys.derive(stable, "d", bound);
    if (!holdsKeyContext(bound.context, stable.context)) throw generic();
    let plaintext: Uint8Array;
    try {
      plaintext = aessiv(key, stored.subarray(0, HEADER_LENGTH), associated).decrypt(
        stored.subarray(HEADER_LENGTH),
      );
    } catch (cause) {
      throw generic(cause);
    }
    // Decoding copies what it returns; a value of another type fails it and is wiped too.
    try {
      return decodeFieldValue(type, plaintext);
    } finally {
      wipe.call(plaintext, 0);
    }
  }

  async #decryptSlow(
    bound: BoundField,
    type: FieldValueType,
    stored: Uint8Array,
  ): Promise<FieldValue> {
    const parsed = parseFieldCiphertext(stored);
    if (parsed === undefined) {
      if (this.#legacyPlaintext) return legacyValue(bound.field, type, stored);
      throw generic();
    }
    // The value's context must hold the one its data key is wrapped under before the KMS is
    // asked to unwrap that key (FORMAT §6.2.3): a value copied from another tenant's row fails
    // alike whatever the state of that tenant's KMS key, which this request never uses.
    const context = bound.context;
    const admits = (keyContext: Readonly<EncryptionContext>) =>
      holdsKeyContext(context, keyContext);
    if (parsed.mode === "deterministic") {
      return this.#keys.withStable(
        () => this.#keys.stableForId(parsed.dataKeyId, admits),
        (held) => this.#openDeterministic(held, bound, type, stored),
      );
    }
    const loaded = await this.#keys.readKey(parsed.dataKeyId, admits);
    return this.#openRandomized(loaded, encodeBinding(bound), context, type, stored);
  }

  /**
   * Decrypts many stored values (text or bytes form) at once: values whose data key is cached
   * are opened synchronously, without a promise per value; the distinct data keys of the rest
   * are unwrapped together — one KMS call each, one await for all — and their values opened in
   * a second synchronous pass. This is the read path of the ORM adapters.
   * @throws as `decrypt` / `decryptText`; the first failing value rejects the whole batch, and
   *   the `bytes` values already decrypted are zeroed first (a legacy plaintext value, the
   *   caller's own array returned as it is, is left alone).
   */
  async decryptMany(items: readonly DecryptItem[]): Promise<FieldValue[]> {
    const out: FieldValue[] = new Array(items.length);
    // Each item's binding, type and stored value as read once, for the values not yet opened.
    const misses: {
      index: number;
      bound: BoundField;
      type: FieldValueType;
      stored: string | Uint8Array;
    }[] = [];
    // Key age is checked against the batch's start: one clock read, not one per value.
    const now = this.#keys.now();
    // Short randomized values under cached keys are opened together, one AES call per run of
    // values under one key (GcmOpenBatch). A clock or getter that re-enters the engine while
    // the batch fills gets a batch of its own.
    const queue = this.#idleQueue ?? newOpenQueue();
    this.#idleQueue = undefined;
    queue.out = out;
    // The caller's own arrays that legacy mode returned as they are: a failing call wipes every
    // other Uint8Array in `out` (bytes it decrypted), never these. Made only when there is one.
    let passed: Set<Uint8Array> | undefined;
    try {
      for (let i = 0; i < items.length; i++) {
        const { binding, spec, stored } = items[i] as DecryptItem;
        const bound = bindingOf(binding, false);
        const type = spec.type;
        queue.index = i;
        const value = this.#readCached(bound, type, stored, now, queue);
        if (value === undefined) misses.push({ index: i, bound, type, stored });
        else if (value !== QUEUED) {
          out[i] = value;
          if (value === stored && value instanceof Uint8Array) {
            passed ??= new Set();
            passed.add(value);
          }
        }
      }
      if (queue.batch.size > 0) openQueued(queue);
    } catch (error) {
      // A queued value before the one that threw fails first, as it would have unqueued (the
      // items after a bad queued value have been read, their getters run, all the same).
      // openQueued empties the queue whatever happens.
      try {
        if (queue.batch.size > 0) openQueued(queue);
      } finally {
        wipeDecrypted(out, passed);
      }
      throw error;
    } finally {
      queue.out = [];
      this.#idleQueue = queue;
    }
    if (misses.length === 0) return out;
    // Only ciphertext under an uncached key gets here: the header parses.
    const bytesOf = (stored: string | Uint8Array) =>
      typeof stored === "string" ? fromFieldText(stored) : stored;
    // Data key id → the contexts of the values under it: the KMS unwraps a key only when every
    // one of them holds the context its row stores (as in #decryptSlow).
    const readIds = new Map<string, Set<EncryptionContext>>();
    const stableIds = new Map<string, Set<EncryptionContext>>();
    for (const item of misses) {
      const bytes = bytesOf(item.stored);
      const id = hexOf(bytes, 1, HEADER_LENGTH);
      const ids = bytes[0] === FORMAT_RANDOMIZED ? readIds : stableIds;
      let contexts = ids.get(id);
      if (contexts === undefined) {
        contexts = new Set();
        ids.set(id, contexts);
      }
      contexts.add(item.bound.context);
    }
    const admittedBy =
      (contexts: ReadonlySet<EncryptionContext>) => (keyContext: Readonly<EncryptionContext>) => {
        for (const context of contexts) if (!holdsKeyContext(context, keyContext)) return false;
        return true;
      };
    const loaded = new Map<string, LoadedKey>();
    // Held until the batch is done: a key the engine evicts meanwhile (more distinct keys than
    // it keeps) still serves the batch, and is zeroed after it.
    const stables = new Map<string, StableKey>();
    let holding = true;
    try {
      await Promise.all([
        ...[...readIds].map(async ([id, contexts]) =>
          loaded.set(id, await this.#keys.readKey(id, admittedBy(contexts))),
        ),
        ...[...stableIds].map(async ([id, contexts]) => {
          const stable = await this.#keys.stableForId(id, admittedBy(contexts));
          // Not once the batch has failed: nothing would release it.
          if (holding && this.#keys.holdStable(stable)) stables.set(id, stable);
        }),
      ]);
      for (const { index, bound, type, stored } of misses) {
        const bytes = bytesOf(stored);
        const id = hexOf(bytes, 1, HEADER_LENGTH);
        if (bytes[0] === FORMAT_RANDOMIZED) {
          out[index] = this.#openRandomized(
            loaded.get(id) as LoadedKey,
            encodeBinding(bound),
            bound.context,
            type,
            bytes,
          );
          continue;
        }
        const stable = stables.get(id);
        const value =
          stable === undefined
            ? undefined
            : this.#keys.useStable(stable, (held) =>
                this.#openDeterministic(held, bound, type, bytes),
              );
        // Dropped before the batch held it, or the clock called clearCache(): this one loads
        // its key again.
        const read = value !== undefined ? value : await this.#decryptSlow(bound, type, bytes);
        // Legacy only if the caller changed its array since the first pass: still its own.
        if (read === stored && read instanceof Uint8Array) {
          passed ??= new Set();
          passed.add(read);
        }
        out[index] = read;
      }
      return out;
    } catch (error) {
      wipeDecrypted(out, passed);
      throw error;
    } finally {
      holding = false;
      for (const stable of stables.values()) this.#keys.releaseStable(stable);
    }
  }

  /**
   * A keyed blind index of `value` for equality lookups in a separate column: HMAC-SHA256
   * under a key derived (HKDF) from a KMS-protected data key of the context, truncated, as
   * base64url. `binding.field` names the index (usually the index column). With `spec.type`
   * (the source field's declared type) the value is first brought to one form per value, as
   * the field's encoding reads it; without it, strings are indexed as themselves (after
   * `spec.normalize`) and other values as their JSON text (FORMAT §6.5).
   * @throws ValidationException when `spec.bytes` is outside 4–32; when `spec.type` is given and
   *   the value is no form of it (a string for a date, a number for a string); or when the
   *   value's JSON text stands for other values too: null, and anything that is not JSON data
   *   anywhere in the value (NaN, ±Infinity, undefined, functions, symbols, bigints, holes, array
   *   members other than elements, cycles, toJSON() methods, Maps, Sets, typed arrays, class
   *   instances; untyped, a Date or decimal object is taken only as the whole value). The
   *   message names the path by position, never by member name (`$.<member 1>[0]`). KMS errors and KMSInternalException as `encrypt` in
   *   deterministic mode (the index's key is derived from the same stable data key).
   */
  async blindIndex(
    binding: FieldBinding,
    spec: BlindIndexSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<string> {
    return (await this.#blindIndexes(binding, spec, value, options, false))[0] as string;
  }

  /**
   * Every blind index an equality lookup of `value` must match while a migration is under way:
   * the index under the current key id first (`blindIndex`), then the index under each of
   * `previousKeyIds` whose stable data key exists for the context. One index when no previous
   * key ids are configured. Legacy plaintext rows have no index: match them on the indexed
   * field itself with `legacyForm`.
   * @throws as `blindIndex`; KMSInternalException when a previous key's stable row is wrapped
   *   under another context; the KMS's error when a previous key's stable data key cannot be
   *   unwrapped (disabled or pending deletion: rows under it would go unmatched; a key deleted
   *   for good is passed over, its values being unreadable).
   */
  async blindIndexForms(
    binding: FieldBinding,
    spec: BlindIndexSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<string[]> {
    return this.#blindIndexes(binding, spec, value, options, true);
  }

  /**
   * The blind index under the current key id, then, `withPrevious`, under each previous key id
   * that has a stable data key for the context; the value is validated and encoded once.
   */
  async #blindIndexes(
    binding: FieldBinding,
    spec: BlindIndexSpec,
    value: unknown,
    options: EncryptCallOptions | undefined,
    withPrevious: boolean,
  ): Promise<string[]> {
    const bound = bindingOf(binding, true);
    const { input, length } = indexInput(bound.field, spec, value);
    const keyed = bound.keyed;
    const mac = (held: StableKey) => hmac(sha256, this.#keys.derive(held, "b", bound), input);
    const text = (tag: Uint8Array) =>
      Buffer.from(tag.buffer, tag.byteOffset, length).toString("base64url");
    const current = await this.#keys.withStable(
      () => this.#keys.stableForScope(keyed.context, keyed.ctxKey, options?.transactionScope),
      mac,
    );
    const out = [text(current)];
    const previous = this.#previousKeyIds;
    if (!withPrevious || previous === undefined) return out;
    for (const keyId of this.#previousOf(previous, keyed.context)) {
      const tag = await this.#keys.withExistingStable(keyId, keyed.context, keyed.ctxKey, mac);
      if (tag === undefined) continue;
      const index = text(tag);
      if (!out.includes(index)) out.push(index);
    }
    return out;
  }

  /**
   * Every stored form (bytes) an equality lookup of `value` in a deterministic field must match
   * while a migration is under way: its ciphertext under the current key id first (`encrypt`),
   * then under each of `previousKeyIds` whose stable data key exists for the context, then, with
   * `legacyPlaintext`, the value as a legacy plaintext row holds it (`legacyForm`). That last
   * form is the value itself: a lookup that uses it sends the value to the database in clear,
   * as the legacy rows already hold it. One form when neither option is set.
   * @throws ValidationException when `spec.mode` is not "deterministic", and as `encrypt`;
   *   KMSInternalException and KMS errors for previous keys as `blindIndexForms`.
   */
  async lookupForms(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<Uint8Array[]> {
    assertDeterministic(spec);
    const bound = bindingOf(binding, true);
    const out = await this.#sealedForms(bound, spec, value, options);
    const legacy = this.legacyForm(bound, spec, value, "bytes");
    if (legacy !== undefined) out.push(legacy);
    return out;
  }

  /** `lookupForms` for String columns: the text forms (`kms1:` + base64url, then legacy text). */
  async lookupFormsText(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    options?: EncryptCallOptions,
  ): Promise<string[]> {
    assertDeterministic(spec);
    const bound = bindingOf(binding, true);
    const sealed = await this.#sealedForms(bound, spec, value, options);
    const out = sealed.map(toFieldText);
    const legacy = this.legacyForm(bound, spec, value, "text");
    if (legacy !== undefined) out.push(legacy);
    return out;
  }

  /**
   * With `legacyPlaintext`, the form a legacy plaintext row holds `value` in (FORMAT §6.7): its
   * natural text form (a string as it is, `String(n)`, "true"/"false", a date's ISO string, a
   * bigint's digits, a decimal's text, JSON text) or, for a Bytes column, that text's UTF-8
   * bytes (a `bytes` field's own bytes). It is the value in clear: a lookup that compares it
   * sends the value to the database as the legacy rows already hold it. Undefined without
   * `legacyPlaintext`, and when that form would read as ciphertext (no legacy row can hold it).
   * Legacy rows holding another spelling (" 42", "t", another date format) are not matched.
   * @throws ValidationException when the value is not of `spec.type`.
   */
  legacyForm(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    storage: "text",
  ): string | undefined;
  legacyForm(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    storage: "bytes",
  ): Uint8Array | undefined;
  legacyForm(
    binding: FieldBinding,
    spec: FieldSpec,
    value: unknown,
    storage: "text" | "bytes",
  ): string | Uint8Array | undefined {
    if (!this.#legacyPlaintext) return undefined;
    if (storage !== "text" && storage !== "bytes") {
      throw new ValidationError(`"storage" must be "text" or "bytes"`);
    }
    return legacyFormOf(binding.field, spec.type, value, storage);
  }

  /** The deterministic ciphertexts of `value` under the current and the previous key ids. */
  async #sealedForms(
    bound: BoundField,
    spec: FieldSpec,
    value: unknown,
    options: EncryptCallOptions | undefined,
  ): Promise<Uint8Array[]> {
    const out = [await this.#encryptBound(bound, spec, value, options)];
    const previous = this.#previousKeyIds;
    if (previous === undefined) return out;
    const aad = encodeBinding(bound);
    const keyed = bound.keyed;
    for (const keyId of this.#previousOf(previous, keyed.context)) {
      const sealed = await this.#keys.withExistingStable(
        keyId,
        keyed.context,
        keyed.ctxKey,
        (held) =>
          // Encoded inside the use: the seal wipes it, and a use refused (a dropped key) runs again.
          this.#sealDeterministic(
            held,
            bound,
            aad,
            encodeFieldValue(bound.field, spec.type, value),
          ),
      );
      if (sealed !== undefined && !out.some((form) => sameBytes(form, sealed))) out.push(sealed);
    }
    return out;
  }

  /** The previous key ids of a key context, without the one it selects now. */
  #previousOf(
    previous: (context: EncryptionContext) => readonly string[],
    context: EncryptionContext,
  ): string[] {
    const ids = previousKeyIdsOf(previous, context);
    const current = this.#keys.keyIdOf(context);
    return ids.filter((id) => id !== current);
  }

  /**
   * Reports which data key and KMS key a stored value uses (or that it is legacy plaintext).
   * Without `binding`, `kmsKeyId` is the data-key row's `kmsKeyId` column, read without any KMS
   * call: whoever writes the data-key table writes that column too, so it is a claim. With the
   * value's `binding`, the data key is unwrapped as `decrypt` unwraps it (after the same context
   * check, under a KMS key the engine is configured with; one KMS Decrypt per configured key
   * tried (see `previousKeyIds`) unless the engine holds the key, which a `decrypt` of the value
   * then reuses), and `kmsKeyId` is the ARN the KMS
   * answered with — what the re-encryption job decides by.
   * @throws InvalidCiphertextException when the value is neither ciphertext nor, with legacy
   *   plaintext enabled, a plain value; or when its data key is unknown; with `binding`, also
   *   when `decrypt` would refuse the value's data key (another context, a KMS key the engine is
   *   not configured with), and the KMS's errors as `decrypt`. ValidationException for a
   *   malformed binding.
   */
  async inspect(stored: string | Uint8Array, binding?: FieldBinding): Promise<StoredValueInfo> {
    // Read once, before any await: the context checked is the one the caller passed now.
    const context = binding === undefined ? undefined : bindingOf(binding, false).context;
    let bytes: Uint8Array | undefined;
    if (typeof stored === "string") {
      bytes = isFieldCiphertextText(stored) ? fromFieldText(stored) : undefined;
    } else if (stored instanceof Uint8Array) {
      bytes = stored;
    }
    const parsed = bytes === undefined ? undefined : parseFieldCiphertext(bytes);
    if (parsed === undefined) {
      if (this.#legacyPlaintext) return { legacy: true };
      throw generic();
    }
    const record = await this.#keys.record(parsed.dataKeyId);
    if (record === undefined) throw generic();
    let kmsKeyId = record.kmsKeyId;
    if (context !== undefined) {
      const admits = (keyContext: Readonly<EncryptionContext>) =>
        holdsKeyContext(context, keyContext);
      const key =
        parsed.mode === "deterministic"
          ? await this.#keys.stableForId(parsed.dataKeyId, admits)
          : await this.#keys.readKey(parsed.dataKeyId, admits);
      // The data-key layer hands out a key, cached or not, only when `admits` its context; this
      // is inspect's own check of the key, as decrypt's open is decrypt's: a warm engine must
      // never report another tenant's data key and KMS key where a cold one refuses.
      if (!holdsKeyContext(context, key.context)) throw generic();
      kmsKeyId = key.kmsKeyId;
    }
    return {
      legacy: false,
      mode: parsed.mode,
      dataKeyId: parsed.dataKeyId,
      kmsKeyId,
      createdAt: record.createdAt,
    };
  }

  /**
   * The KMS key ARN new randomized values of `context` get (that of the data key they are
   * written under: after re-pointing an alias, call `clearCache()` first) and the stable data
   * key id of new deterministic values, for rotation jobs. That id is derived from the key id
   * and the context (FORMAT §6.1.3), so with `loadStableKey: false` it is computed without
   * creating or loading the stable data key: no KMS call and no data-key row for models that
   * have no deterministic fields (it is then the id of generation 0, unless this engine found a
   * later one, FORMAT §6.4 item 5).
   * @throws KMS errors when a data key cannot be generated.
   */
  async currentKeys(
    context: EncryptionContext,
    options?: { readonly loadStableKey?: boolean },
  ): Promise<{ readonly kmsKeyId: string; readonly stableDataKeyId: string }> {
    // Read once: the data key is chosen, and its row written, with the pairs its key was built from.
    const read = readContext(context);
    const ctxKey = read.ctxKey;
    context = read.context;
    // Not the stable key's ARN: its id is derived from the key id as configured, so an alias
    // re-pointed to a new KMS key keeps the stable key (and ARN) it had before.
    const [materials, stableDataKeyId] = await Promise.all([
      // Charged with nothing: with maxValues 1 a charged look would make a data key per row.
      this.#keys.materialsFor(context, ctxKey, 0, undefined, 0),
      options?.loadStableKey === false
        ? this.#keys.stableIdOf(context, ctxKey)
        : this.#keys.stableForScope(context, ctxKey).then((stable) => stable.id),
    ]);
    return { kmsKeyId: materials.kmsKeyId, stableDataKeyId };
  }

  /**
   * Forgets every cached data key (plaintext and wrapped) and zeroes the key bytes it held (a
   * stable key that a value operation is using at that moment is zeroed when the operation
   * ends; operations still waiting for a stable key load it again; a randomized data key still
   * being generated or unwrapped serves the operations already waiting for it, and is not cached,
   * so later ones get or unwrap their own). Call after scheduling deletion of
   * a KMS key so that values under it stop decrypting in this process at once.
   */
  clearCache(): void {
    this.#keys.clear();
  }

  /**
   * Forced rotation of randomized data keys (one exposed, or older than a policy allows): writes
   * that begin after this call never seal a value under any of `ids` — the engine drops them from
   * its write cache and makes a fresh data key at the next write — while values under them still
   * decrypt. `reencryptFields` retires the data key of every randomized value its policy selects,
   * so that the values it rewrites land under another key; retire the ids before the job starts
   * to keep this engine's other writers off them from the first row. Data keys rotate on their
   * own at the cache limits (`maxAgeMs`, `maxValues`, `maxBytes`); this is for rotating sooner.
   *
   * Only the engine that generated a data key ever writes with it (other engines and processes
   * only read it), so this affects this engine alone, and ids it does not write with (other
   * engines' keys, unknown ids) need nothing. Stable data keys (deterministic values, blind
   * indexes) cannot be retired: every engine must derive the same one for equality lookups to
   * work, and a new one comes only with a new KMS key id, or as the next generation once the
   * KMS key of the current one was deleted (FORMAT §6.4, §6.7).
   * @throws ValidationException when an id is not 32 lowercase hex characters (nothing is
   *   retired then).
   */
  retireDataKeys(ids: Iterable<string>): void {
    if (ids === null || typeof ids !== "object" || !(Symbol.iterator in ids)) {
      throw new ValidationError(`"ids" must be an iterable of data key ids`);
    }
    const checked = Array.from(ids, assertDataKeyId);
    this.#keys.retire(checked);
  }

  /**
   * Tells the engine that the transaction behind `transactionScope` (see EncryptCallOptions)
   * ended. After a commit, the data keys created inside it — their rows now durable — serve
   * later writes outside it too, instead of each transaction making its own; after a rollback
   * they are dropped at once. Without this call they stay private to the scope until they age
   * out.
   */
  endTransactionScope(transactionScope: string, outcome: "commit" | "rollback"): void {
    this.#keys.endScope(transactionScope, outcome === "commit");
  }

  /**
   * Tells the engine that a savepoint (a nested transaction) began inside the transaction behind
   * `transactionScope`: the data keys created from now until the matching
   * `endTransactionSavepoint` belong to it. Savepoints nest; each call opens one more.
   */
  beginTransactionSavepoint(transactionScope: string): void {
    this.#keys.beginSavepoint(transactionScope);
  }

  /**
   * Tells the engine that the innermost savepoint of `transactionScope` ended. On "release" its
   * data keys belong to the level around it (and, once the transaction commits, to everyone);
   * on "rollback" their rows went with it, so they are dropped at once (stable keys zeroed), and
   * the next write makes new ones. A rollback without a matching `beginTransactionSavepoint`
   * drops every data key of the scope, as the engine cannot tell which rows it removed.
   */
  endTransactionSavepoint(transactionScope: string, outcome: "release" | "rollback"): void {
    this.#keys.endSavepoint(transactionScope, outcome === "release");
  }

  #sealDeterministic(
    stable: StableKey,
    bound: BoundField,
    aad: Uint8Array,
    plaintext: Uint8Array,
  ): Uint8Array {
    const header = new Uint8Array(HEADER_LENGTH);
    header[0] = FORMAT_DETERMINISTIC;
    header.set(Buffer.from(stable.id, "hex"), 1);
    const key = this.#keys.derive(stable, "d", bound);
    const sealed = aessiv(key, header, aad).encrypt(plaintext);
    const out = new Uint8Array(HEADER_LENGTH + sealed.length);
    out.set(header, 0);
    out.set(sealed, HEADER_LENGTH);
    if (out.length !== plaintext.length + DETERMINISTIC_OVERHEAD - 1)
      throw new KmsInternalError("SIV length");
    plaintext.fill(0);
    return out;
  }
}

/**
 * A legacy plaintext value as its declared type, as a decrypted value would be: a planted or
 * stale plain value never reaches the application as a string where a number is declared.
 */
function legacyValue(field: string, type: FieldValueType, stored: string | Uint8Array): FieldValue {
  try {
    return parseLegacyValue(field, type, stored);
  } catch {
    throw generic();
  }
}

const wipe = Uint8Array.prototype.fill;

/**
 * Zeroes the bytes values a failing decryptMany decrypted into `out` before it failed: the
 * caller never receives them, so nobody else could. `passed` are the caller's own arrays that
 * legacy mode put there as they were, which are not the engine's to wipe.
 */
function wipeDecrypted(out: readonly FieldValue[], passed: ReadonlySet<Uint8Array> | undefined) {
  for (const value of out) {
    if (value instanceof Uint8Array && passed?.has(value) !== true) wipe.call(value, 0);
  }
}

/** `previousKeyIds` as a function; undefined when none are configured (one lookup form). */
function previousKeySelector(
  option: FieldEncryptionEngineOptions["previousKeyIds"],
): ((context: EncryptionContext) => readonly string[]) | undefined {
  if (option === undefined) return undefined;
  if (typeof option === "function") return option;
  if (!isKeyIdList(option)) {
    throw new ValidationError(
      `"previousKeyIds" must be an array of non-empty key ids or a function of the context`,
    );
  }
  if (option.length === 0) return undefined;
  const ids = Object.freeze([...option]);
  return () => ids;
}

/** Lookup forms match deterministic values only. */
function assertDeterministic(spec: FieldSpec): void {
  if (spec === null || typeof spec !== "object" || spec.mode !== "deterministic") {
    throw new ValidationError(
      `lookup forms are for deterministic fields: a randomized value matches nothing`,
    );
  }
}

/** The HMAC input and the kept length of a blind index (FORMAT §6.5). */
function indexInput(
  field: string,
  spec: BlindIndexSpec,
  value: unknown,
): { readonly input: Uint8Array; readonly length: number } {
  const length = spec.bytes ?? 16;
  if (!Number.isInteger(length) || length < 4 || length > 32) {
    throw new ValidationError(`"bytes" of a blind index must be an integer 4–32, got ${length}`);
  }
  if (spec.type !== undefined) {
    if (!FIELD_VALUE_TYPES.includes(spec.type)) {
      throw new ValidationError(
        `"type" of a blind index must be one of ${FIELD_VALUE_TYPES.join(", ")}`,
      );
    }
    const input = encodeTypedIndexValue(field, spec.type, value, (text) =>
      normalize(field, text, spec.normalize),
    );
    return { input, length };
  }
  if (typeof value === "string") {
    return {
      input: encodeFieldValue(field, "string", normalize(field, value, spec.normalize)),
      length,
    };
  }
  return { input: encodeIndexValue(field, value), length };
}

/**
 * `value` normalized as the index asks (FORMAT §6.5).
 * @throws ValidationException when `value` is not well-formed Unicode. Checked before
 *   normalizing as well as after (by the encoding): a `normalize` function may turn a lone
 *   surrogate into U+FFFD or drop it, and "\uD800" would then index as "\uFFFD" or "", matching
 *   rows that hold those strings, where every other entry point refuses it.
 */
function normalize(field: string, value: string, how: BlindIndexSpec["normalize"]): string {
  checkString(field, value);
  if (how === undefined) return value;
  if (typeof how === "function") {
    const out = how(value);
    if (typeof out !== "string") throw new ValidationError(`"normalize" must return a string`);
    return out;
  }
  let out = value;
  for (const step of how) {
    if (step === "lowercase") out = out.toLowerCase();
    else if (step === "trim") out = out.trim();
    else if (step === "nfkc") out = out.normalize("NFKC");
    else throw new ValidationError(`"normalize" step must be lowercase, trim or nfkc`);
  }
  return out;
}

/** decryptMany's pending opens: short randomized values under cached keys, in a GcmOpenBatch. */
interface OpenQueue {
  readonly batch: GcmOpenBatch;
  /** The output of the decryptMany in progress, and the index of the item being read. */
  out: FieldValue[];
  index: number;
  /**
   * Per value in `batch` (by its order of `add`): its type, and (output index, plaintext offset,
   * plaintext length). Written by index and never truncated (as GcmOpenBatch's own): a queue is
   * refilled every OPEN_BATCH_SIZE values, and regrowing its arrays each time was garbage per
   * value.
   */
  readonly types: FieldValueType[];
  readonly slots: Int32Array;
}

const QUEUED: unique symbol = Symbol("queued");
/** Values opened together by decryptMany, at most. */
const OPEN_BATCH_SIZE = 256;

function newOpenQueue(): OpenQueue {
  return {
    batch: new GcmOpenBatch(),
    out: [],
    index: 0,
    types: [],
    slots: new Int32Array(3 * OPEN_BATCH_SIZE),
  };
}

/** Records the type and places of the value just added to `queue.batch`. */
function queueSlot(queue: OpenQueue, type: FieldValueType, at: number, length: number): void {
  const v = queue.batch.size - 1;
  // decryptMany opens a full batch before adding to it; past the end, a typed array would drop
  // the writes silently.
  if (v >= OPEN_BATCH_SIZE) throw new KmsInternalError("decryptMany queued a value past its batch");
  queue.types[v] = type;
  const slots = queue.slots;
  slots[v * 3] = queue.index;
  slots[v * 3 + 1] = at;
  slots[v * 3 + 2] = length;
}

/**
 * Opens every value queued and writes each into its place in `queue.out`; the first value that
 * fails authentication or decoding fails them all (the batch's plaintext is wiped either way).
 */
function openQueued(queue: OpenQueue): void {
  const { batch, slots, types, out } = queue;
  // Read before `open`, which empties the batch.
  const queued = batch.size;
  try {
    if (batch.open() >= 0) throw generic();
    const plaintext = batch.plaintext;
    for (let v = 0; v < queued; v++) {
      const at = slots[v * 3 + 1] as number;
      out[slots[v * 3] as number] = decodeFieldValueIn(
        types[v] as FieldValueType,
        plaintext,
        at,
        at + (slots[v * 3 + 2] as number),
      );
    }
  } finally {
    batch.clear();
  }
}

/** A data key's AAD per binding encoding (Materials and LoadedKey both keep one). */
interface AadCache {
  readonly aads: WeakMap<Uint8Array, Uint8Array>;
  lastBinding: Uint8Array | undefined;
  lastAad: Uint8Array | undefined;
}

/**
 * header || binding, the AAD of a value of `binding` under a data key, built once per (data key,
 * binding) from the first HEADER_LENGTH bytes of `header`; the last binding is checked first (the
 * values of one column, or one binding's calls, repeat it; a row's columns alternate). With
 * `keyContext` (reading), the binding's `context` must hold it, checked when the AAD is built: a
 * cached AAD means the binding passed.
 */
function cachedAad(
  key: AadCache,
  binding: Uint8Array,
  header: Uint8Array,
  context?: EncryptionContext,
  keyContext?: Readonly<EncryptionContext>,
): Uint8Array {
  if (key.lastBinding === binding) return key.lastAad as Uint8Array;
  let found = key.aads.get(binding);
  if (found === undefined) {
    if (keyContext !== undefined && !holdsKeyContext(context as EncryptionContext, keyContext)) {
      throw generic();
    }
    found = new Uint8Array(HEADER_LENGTH + binding.length);
    for (let i = 0; i < HEADER_LENGTH; i++) found[i] = header[i] as number;
    found.set(binding, HEADER_LENGTH);
    key.aads.set(binding, found);
  }
  key.lastBinding = binding;
  key.lastAad = found;
  return found;
}
