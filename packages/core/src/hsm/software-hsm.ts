import {
  createHmac,
  createSecretKey,
  hkdfSync,
  type KeyObject,
  randomFillSync,
  timingSafeEqual,
} from "node:crypto";
import {
  BLOB_HEADER_LENGTH,
  IV_LENGTH,
  invalidCiphertext,
  type ParsedBlob,
  TAG_LENGTH,
  writeBlobHeader,
} from "../envelope/ciphertext-blob.ts";
import { KmsInternalError, RootKeyError } from "../errors.ts";
import type { KeyStore } from "../keystore/key-store.ts";
import { type AesKey, gcmOpen, gcmSeal, gcmSealInto, importAesKey } from "./aes-gcm.ts";
import { fillRandom, randomBytes } from "./random.ts";
import { ROOT_KEY_LENGTH, type RootKeySource } from "./root-key.ts";

interface UnwrappedKey {
  readonly key: AesKey;
  /** The blob header for this key version, written once rather than per call. */
  readonly header: Uint8Array;
}

/** Which key material to use: a key id and one of its versions, with the wrapped bytes. */
export interface MaterialRef {
  readonly keyId: string;
  readonly version: number;
  readonly wrappedMaterial: Uint8Array;
}

const WRAP_FORMAT_VERSION = 0x01;
const ROOT_KEY_ID_LENGTH = 8;
const WRAP_HEADER_LENGTH = 1 + ROOT_KEY_ID_LENGTH;
const encoder = new TextEncoder();

function wrapAad(keyId: string, version: number): Uint8Array {
  // Binding the wrapped material to its key id and version means material copied into another
  // key's record (by someone with write access to the store) fails to unwrap.
  return encoder.encode(`kms/wrap/v1|${keyId}|${version}`);
}

/** Options of {@link SoftwareHsm.open}. */
export interface SoftwareHsmOptions {
  /**
   * Further root keys used only to unwrap material, never to wrap it: the previous root key
   * while a root-key rotation re-wraps the store (see root-key-rotation.ts), or the next one on
   * instances that must read material wrapped by instances already switched to it. A key the
   * store records as retired (a finished rotation) is ignored: nothing wrapped or sealed under
   * it is accepted any more.
   */
  readonly unwrapRootKeys?: readonly RootKeySource[];
}

/**
 * Store settings that record the root key history (docs/FORMAT.md §4.2). "root-key-id" is the
 * store's first root key; each rotation adds `root-key-successor/<old id>` = new id, and, once
 * every piece of material is re-wrapped, retires the old key: `root-key-retirement/<old id>`, a
 * value MACed under the old key itself, and `root-key-retired/<old id>` = new id, the plain
 * marker of earlier releases. Settings are write-once, so the history only grows and every
 * instance reads the same one.
 */
export const ROOT_KEY_SETTINGS = {
  first: "root-key-id",
  successor: (id: string): string => `root-key-successor/${id}`,
  retirement: (id: string): string => `root-key-retirement/${id}`,
  retired: (id: string): string => `root-key-retired/${id}`,
} as const;

/**
 * The root key ids a store has accepted, oldest first: its first root key and each successor.
 * @throws Nothing beyond the store's own errors.
 */
export async function rootKeyHistory(store: KeyStore): Promise<string[]> {
  const first = await store.getSetting(ROOT_KEY_SETTINGS.first);
  if (first === undefined) return [];
  const chain = [first];
  for (;;) {
    const next = await store.getSetting(ROOT_KEY_SETTINGS.successor(chain[chain.length - 1]!));
    if (next === undefined || chain.includes(next)) return chain;
    chain.push(next);
  }
}

/** The id (hex) of the root key a piece of wrapped material names, if it is well formed. */
export function wrappingRootKeyId(wrapped: Uint8Array): string | undefined {
  if (wrapped.length < WRAP_HEADER_LENGTH || wrapped[0] !== WRAP_FORMAT_VERSION) return undefined;
  return Buffer.from(wrapped.subarray(1, WRAP_HEADER_LENGTH)).toString("hex");
}

async function loadRoot(source: RootKeySource, store: KeyStore): Promise<Uint8Array> {
  const root = await source.load(store);
  if (!(root instanceof Uint8Array) || root.length !== ROOT_KEY_LENGTH) {
    // A custom source's off-by-one key is still (most of) the root key: wiped like any other.
    if (root instanceof Uint8Array) root.fill(0);
    throw new RootKeyError(`root key from ${source.description} must be ${ROOT_KEY_LENGTH} bytes`);
  }
  return root;
}

/** HKDF info of the record-seal MAC key (docs/FORMAT.md §4.1). */
const RECORD_SEAL_INFO = "kms/record-seal/v1";
const RECORD_SEAL_MAC_LENGTH = 32;

/** The record-seal MAC key of a root key: HKDF-SHA256, empty salt (FORMAT §4.1). */
function deriveRecordSealKey(root: Uint8Array): KeyObject {
  const derived = new Uint8Array(
    hkdfSync("sha256", root, new Uint8Array(0), RECORD_SEAL_INFO, RECORD_SEAL_MAC_LENGTH),
  );
  try {
    return createSecretKey(derived);
  } finally {
    derived.fill(0);
  }
}

function computeRootKeyId(root: Uint8Array): Uint8Array {
  return createHmac("sha256", root)
    .update("kms/root-key-id/v1")
    .digest()
    .subarray(0, ROOT_KEY_ID_LENGTH);
}

/** A sealed retirement setting: `r1.<successor id>.<MAC, base64url without padding>`. */
const RETIREMENT = /^r1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

/** What a retirement MAC covers (FORMAT §4.2): the retired root key's id and its successor's. */
function retirementInput(retiredId: string, successorId: string): string {
  return `kms/root-key-retirement/v1|${retiredId}|${successorId}`;
}

/**
 * Whether a retirement of `retiredId` in favour of `successorId` is on record, judged by form
 * alone (a sealed value naming that successor, or the plain marker of earlier releases): for
 * instances that do not hold the retired key and so cannot check its MAC.
 */
async function retirementRecorded(
  store: KeyStore,
  retiredId: string,
  successorId: string,
): Promise<boolean> {
  const sealed = await store.getSetting(ROOT_KEY_SETTINGS.retirement(retiredId));
  if (sealed !== undefined && RETIREMENT.exec(sealed)?.[1] === successorId) return true;
  return (await store.getSetting(ROOT_KEY_SETTINGS.retired(retiredId))) === successorId;
}

/**
 * Reports a root-key setting that is not obeyed. A warning rather than an error: obeying it
 * would let a store writer retire the live root key, and refusing to open over it would too.
 */
function warnIgnored(store: KeyStore, name: string, why: string): void {
  process.emitWarning(`setting ${name} of key store ${store.description} ${why}; it is ignored`, {
    code: "KMS_ROOT_KEY_SETTING_IGNORED",
  });
}

/**
 * The software HSM: the only place where key material exists in plaintext, and then only in
 * memory as KeyObjects. It wraps new material under the root key for the store, unwraps it on
 * demand (cached per key version) and performs the cryptographic operations; callers get
 * ciphertexts and results, never material.
 */
export class SoftwareHsm {
  /** Undefined once closed. */
  #root: AesKey | undefined;
  readonly #rootKeyId: Uint8Array;
  /** Unwrap-only root keys by id (hex). */
  readonly #unwrapOnly = new Map<string, AesKey>();
  /**
   * Unwrapped symmetric keys by key id, then version. Two levels rather than a `keyId#version`
   * string: the key id is the stored record's own string, whose hash V8 keeps, where a string
   * built per call is hashed anew on every encrypt and decrypt.
   */
  readonly #unwrapped = new Map<string, Map<number, UnwrappedKey>>();
  /**
   * Record-seal MAC keys (FORMAT §4.1) by root key id (hex), of every root key given to open().
   * Those of the root key and the unwrap-only keys seal and verify records (see #sealKey); those
   * of unwrap-only keys the store records as retired only check and write retirement settings
   * (FORMAT §4.2).
   */
  readonly #sealKeys = new Map<string, KeyObject>();
  /** Unwrap-only root keys given to open() but retired in the store, so not held. */
  readonly #retiredUnwrapOnly: string[] = [];
  /** What extensions (the asymmetric HSM) wipe of their own when this HSM closes. */
  readonly #onClose: (() => void)[] = [];

  private constructor(root: Uint8Array, unwrapOnly: readonly Uint8Array[]) {
    this.#rootKeyId = computeRootKeyId(root);
    // Derived before importAesKey, which wipes the bytes it imports.
    this.#sealKeys.set(this.rootKeyId, deriveRecordSealKey(root));
    this.#root = importAesKey(root);
    for (const other of unwrapOnly) {
      const id = Buffer.from(computeRootKeyId(other)).toString("hex");
      if (!this.#sealKeys.has(id)) this.#sealKeys.set(id, deriveRecordSealKey(other));
      this.#unwrapOnly.set(id, importAesKey(other));
    }
  }

  /**
   * The seal key of root key `id` for records: the root key's, or an unwrap-only key's while it
   * is held (a retired one verifies no record).
   */
  #sealKey(id: string): KeyObject | undefined {
    return id === this.rootKeyId || this.#unwrapOnly.has(id) ? this.#sealKeys.get(id) : undefined;
  }

  /**
   * Loads the root key and checks it against the store's root key history (FORMAT §4.2).
   * @throws RootKeyError when the source fails, the key does not match the store, a rotation
   *   retired it, or it would replace a root key whose own rotation has not finished.
   */
  static async open(
    source: RootKeySource,
    store: KeyStore,
    options: SoftwareHsmOptions = {},
  ): Promise<SoftwareHsm> {
    const root = await loadRoot(source, store);
    const others: Uint8Array[] = [];
    let hsm: SoftwareHsm;
    try {
      for (const other of options.unwrapRootKeys ?? []) others.push(await loadRoot(other, store));
      hsm = new SoftwareHsm(root, others);
    } finally {
      root.fill(0);
      for (const other of others) other.fill(0);
    }
    const id = hsm.rootKeyId;
    await store.putSettingIfAbsent(ROOT_KEY_SETTINGS.first, id);
    const history = await rootKeyHistory(store);
    const head = history[history.length - 1]!;
    if (!history.includes(id)) {
      // A new root key whose unwrap-only keys include the current one: this instance is the
      // first to switch, and records the new key as the successor (once, for every instance).
      if (!hsm.#unwrapOnly.has(head)) {
        throw new RootKeyError(
          `the root key from ${source.description} (id ${id}) is not the one key store ` +
            `${store.description} was created with (id ${head})`,
        );
      }
      // One rotation at a time: material still under the key before `head` would be readable
      // by no instance of the new key, and the next rotation could not re-wrap it.
      const previous = history[history.length - 2];
      if (previous !== undefined && !(await retirementRecorded(store, previous, head))) {
        throw new RootKeyError(
          `root key ${head} of key store ${store.description} cannot be replaced yet: the ` +
            `rotation to it from root key ${previous} has not finished (run rotateRootKey ` +
            "from that key to it first)",
        );
      }
      const successor = await store.putSettingIfAbsent(ROOT_KEY_SETTINGS.successor(head), id);
      if (successor !== id) {
        throw new RootKeyError(
          `root key ${head} of key store ${store.description} was already replaced by ` +
            `${successor}, not by the root key from ${source.description} (id ${id})`,
        );
      }
      history.push(id);
    }
    // Checked wherever the key stands in the history: a store writer who deletes the successor
    // setting makes a retired key the head again, and must not make it the root key again.
    const retiredBy = await hsm.#retiredBy(store, id, history);
    if (retiredBy !== undefined) {
      throw new RootKeyError(
        `the root key from ${source.description} (id ${id}) was retired from key store ` +
          `${store.description} by a rotation to root key ${retiredBy}`,
      );
    }
    // A retired root key is gone for unwrapping and seals too, not only as the root key: after
    // a rotation (often made because the old key may have leaked) an instance still configured
    // with it must not accept material wrapped or records sealed under it.
    for (const other of [...hsm.#unwrapOnly.keys()]) {
      if ((await hsm.#retiredBy(store, other, history)) === undefined) continue;
      hsm.#unwrapOnly.delete(other);
      hsm.#retiredUnwrapOnly.push(other);
    }
    return hsm;
  }

  /**
   * The root key that retired root key `id` (one this HSM holds) in `store`, if any
   * (FORMAT §4.2). A sealed retirement counts when its MAC verifies under `id` itself, so no
   * one without that key can retire it. A plain marker of an earlier release carries no MAC: it
   * counts only when it names the successor the history records and this HSM holds that key,
   * so that a planted successor and marker naming a key nobody holds retire nothing.
   */
  async #retiredBy(
    store: KeyStore,
    id: string,
    history: readonly string[],
  ): Promise<string | undefined> {
    const sealedName = ROOT_KEY_SETTINGS.retirement(id);
    const sealed = await store.getSetting(sealedName);
    if (sealed !== undefined) {
      const by = this.#openRetirement(id, sealed);
      if (by !== undefined) return by;
      warnIgnored(store, sealedName, "does not verify under the root key it retires");
    }
    const plainName = ROOT_KEY_SETTINGS.retired(id);
    const plain = await store.getSetting(plainName);
    if (plain === undefined) return undefined;
    const at = history.indexOf(id);
    if (at >= 0 && history[at + 1] === plain && this.#sealKeys.has(plain)) return plain;
    warnIgnored(
      store,
      plainName,
      "is an unsealed retirement this instance cannot confirm (it holds no successor the " +
        "history records): if a rotation did retire this root key, run rotateRootKey from it " +
        "to its successor again to seal the retirement",
    );
    return undefined;
  }

  /** The sealed retirement setting of `retiredId` in favour of `successorId` (FORMAT §4.2). */
  #retirementValue(retiredId: string, successorId: string): string {
    const key = this.#sealKeys.get(retiredId);
    if (key === undefined) {
      throw new RootKeyError(`root key ${retiredId} is not held here, so it cannot be retired`);
    }
    const mac = createHmac("sha256", key).update(retirementInput(retiredId, successorId));
    return `r1.${successorId}.${mac.digest("base64url")}`;
  }

  /** The successor a sealed retirement setting of `retiredId` names, if its MAC verifies. */
  #openRetirement(retiredId: string, value: string): string | undefined {
    const key = this.#sealKeys.get(retiredId);
    const match = RETIREMENT.exec(value);
    if (key === undefined || match === null) return undefined;
    const mac = Buffer.from(match[2]!, "base64url");
    // One spelling per MAC, as for record seals: the unused low bits of the last digit are zero.
    if (mac.length !== 32 || mac.toString("base64url") !== match[2]) return undefined;
    const expected = createHmac("sha256", key)
      .update(retirementInput(retiredId, match[1]!))
      .digest();
    return timingSafeEqual(expected, mac) ? match[1] : undefined;
  }

  /**
   * Retires root key `retiredId` in favour of `successorId`, the last step of a root-key
   * rotation: writes the retirement setting sealed under the retired key (which this HSM must
   * hold, as unwrap-only or retired) and the plain marker that earlier releases read.
   * @throws RootKeyError when this HSM does not hold the retired key, or the sealed setting
   *   already holds a value that does not verify (written by someone else: delete it, run again).
   */
  async recordRetirement(store: KeyStore, retiredId: string, successorId: string): Promise<void> {
    const value = this.#retirementValue(retiredId, successorId);
    await store.putSettingIfAbsent(ROOT_KEY_SETTINGS.retired(retiredId), successorId);
    const name = ROOT_KEY_SETTINGS.retirement(retiredId);
    const stored = await store.putSettingIfAbsent(name, value);
    if (stored !== value && this.#openRetirement(retiredId, stored) === undefined) {
      throw new RootKeyError(
        `setting ${name} of key store ${store.description} holds a value that does not ` +
          "verify under the root key it retires, so the rotation cannot record the " +
          "retirement: the store was altered; delete that setting and run the rotation again",
      );
    }
  }

  /**
   * Fingerprints of unwrap-only root keys that {@link SoftwareHsm.open} dropped because the
   * store records them as retired: they neither unwrap material nor verify seals.
   */
  get retiredUnwrapRootKeyIds(): readonly string[] {
    return [...this.#retiredUnwrapOnly];
  }

  /** Fingerprints of the unwrap-only root keys (see SoftwareHsmOptions). */
  get unwrapRootKeyIds(): readonly string[] {
    return [...this.#unwrapOnly.keys()];
  }

  /** Public fingerprint of the root key (HMAC, not the key). */
  get rootKeyId(): string {
    return Buffer.from(this.#rootKeyId).toString("hex");
  }

  /** Generates symmetric material for a key version and returns it wrapped. */
  generateSymmetricMaterial(keyId: string, version: number): Uint8Array {
    const material = randomFillSync(new Uint8Array(32));
    try {
      return this.wrapMaterial(keyId, version, material);
    } finally {
      material.fill(0);
    }
  }

  /** Wraps material under the root key (docs/FORMAT.md §4). Exposed for HSM extensions only. */
  wrapMaterial(keyId: string, version: number, material: Uint8Array): Uint8Array {
    const iv = randomBytes(IV_LENGTH);
    const sealed = gcmSeal(this.#rootKey(), iv, wrapAad(keyId, version), material);
    const out = new Uint8Array(WRAP_HEADER_LENGTH + IV_LENGTH + sealed.length);
    out[0] = WRAP_FORMAT_VERSION;
    out.set(this.#rootKeyId, 1);
    out.set(iv, WRAP_HEADER_LENGTH);
    out.set(sealed, WRAP_HEADER_LENGTH + IV_LENGTH);
    return out;
  }

  /**
   * Unwraps material; the caller must wipe the result. Exposed for HSM extensions only.
   * @throws RootKeyError when the material was wrapped under another root key or was altered.
   */
  unwrapMaterial(ref: MaterialRef): Uint8Array {
    const w = ref.wrappedMaterial;
    if (
      w.length < WRAP_HEADER_LENGTH + IV_LENGTH + TAG_LENGTH + 1 ||
      w[0] !== WRAP_FORMAT_VERSION
    ) {
      throw new RootKeyError(`wrapped material of key ${ref.keyId} v${ref.version} is malformed`);
    }
    let root = this.#rootKey();
    if (Buffer.compare(w.subarray(1, WRAP_HEADER_LENGTH), this.#rootKeyId) !== 0) {
      const other = this.#unwrapOnly.get(
        Buffer.from(w.subarray(1, WRAP_HEADER_LENGTH)).toString("hex"),
      );
      if (other === undefined) {
        throw new RootKeyError(
          `key ${ref.keyId} v${ref.version} is wrapped under another root key`,
        );
      }
      root = other;
    }
    const body = w.subarray(WRAP_HEADER_LENGTH + IV_LENGTH);
    const material = gcmOpen(
      root,
      w.subarray(WRAP_HEADER_LENGTH, WRAP_HEADER_LENGTH + IV_LENGTH),
      wrapAad(ref.keyId, ref.version),
      body.subarray(0, body.length - TAG_LENGTH),
      body.subarray(body.length - TAG_LENGTH),
    );
    if (material === undefined) {
      throw new RootKeyError(
        `wrapped material of key ${ref.keyId} v${ref.version} fails to unwrap`,
      );
    }
    return material;
  }

  /**
   * Re-wraps material under this HSM's root key, or returns undefined when it already is.
   * @throws RootKeyError when no root key this HSM holds can unwrap it.
   */
  rewrapMaterial(ref: MaterialRef): Uint8Array | undefined {
    if (wrappingRootKeyId(ref.wrappedMaterial) === this.rootKeyId) return undefined;
    const material = this.unwrapMaterial(ref);
    try {
      return this.wrapMaterial(ref.keyId, ref.version, material);
    } finally {
      material.fill(0);
    }
  }

  /**
   * HMAC-SHA256 of a record-seal input (docs/FORMAT.md §4.1) under the current root key's seal
   * key; the seal names `rootKeyId`. Only the MAC leaves the HSM, never the key.
   */
  recordSealMac(input: Uint8Array): Uint8Array {
    this.#rootKey();
    const key = this.#sealKey(this.rootKeyId)!;
    return new Uint8Array(createHmac("sha256", key).update(input).digest());
  }

  /**
   * Checks a record-seal MAC, in constant time, under the seal key of the root key the seal
   * names: the current root key or an unwrap-only one (so records stay readable during a
   * root-key rotation). Undefined when this HSM holds no root key with that id.
   */
  verifyRecordSealMac(rootKeyId: string, input: Uint8Array, mac: Uint8Array): boolean | undefined {
    this.#rootKey();
    const key = this.#sealKey(rootKeyId);
    if (key === undefined) return undefined;
    const expected = createHmac("sha256", key).update(input).digest();
    return mac.length === expected.length && timingSafeEqual(expected, mac);
  }

  #aesKey(ref: MaterialRef): UnwrappedKey {
    let versions = this.#unwrapped.get(ref.keyId);
    let entry = versions?.get(ref.version);
    if (entry === undefined) {
      const header = new Uint8Array(BLOB_HEADER_LENGTH);
      writeBlobHeader(header, ref.keyId, ref.version);
      entry = { key: importAesKey(this.unwrapMaterial(ref)), header };
      if (versions === undefined) {
        versions = new Map();
        this.#unwrapped.set(ref.keyId, versions);
      }
      versions.set(ref.version, entry);
    }
    return entry;
  }

  /** Encrypts under a symmetric key version and returns the complete ciphertext blob. */
  encryptToBlob(ref: MaterialRef, plaintext: Uint8Array, context: Uint8Array): Uint8Array {
    const { key, header } = this.#aesKey(ref);
    const length = BLOB_HEADER_LENGTH + IV_LENGTH + plaintext.length + TAG_LENGTH;
    // Unpooled and not zero-filled: every byte is written below, and a dedicated ArrayBuffer
    // means `blob.buffer` exposes nothing but this blob.
    const blob = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
    blob.set(header, 0);
    fillRandom(blob, BLOB_HEADER_LENGTH, IV_LENGTH);
    gcmSealInto(
      key,
      blob.subarray(BLOB_HEADER_LENGTH, BLOB_HEADER_LENGTH + IV_LENGTH),
      header,
      plaintext,
      blob,
      BLOB_HEADER_LENGTH + IV_LENGTH,
      context,
    );
    return blob;
  }

  /**
   * Decrypts a parsed blob with the key version it names.
   * @throws InvalidCiphertextError when authentication fails (wrong context, tampering).
   */
  decryptBlob(ref: MaterialRef, blob: ParsedBlob, context: Uint8Array): Uint8Array {
    const { key } = this.#aesKey(ref);
    const plaintext = gcmOpen(key, blob.iv, blob.header, blob.ciphertext, blob.tag, context);
    if (plaintext === undefined) throw invalidCiphertext();
    return plaintext;
  }

  /**
   * Releases every key this HSM holds: the root key, the unwrap-only root keys, the record-seal
   * keys, the unwrapped material it caches, and (through onClose) the asymmetric extension's,
   * whose raw secrets are zero-filled. KeyObjects cannot be zero-filled from JavaScript: every
   * reference to them is dropped, and node:crypto clears their memory when it frees them.
   * Afterwards every operation that needs a key throws KmsInternalError. Idempotent.
   */
  close(): void {
    if (this.#root === undefined) return;
    this.#root = undefined;
    for (const wipe of this.#onClose.splice(0)) wipe();
    this.#unwrapped.clear();
    this.#unwrapOnly.clear();
    this.#sealKeys.clear();
  }

  /** Whether close() was called. */
  get closed(): boolean {
    return this.#root === undefined;
  }

  /**
   * Registers what an HSM extension wipes of its own (cached private keys) when this HSM
   * closes. Exposed for HSM extensions only.
   */
  onClose(wipe: () => void): void {
    if (this.closed) wipe();
    else this.#onClose.push(wipe);
  }

  /** @throws KmsInternalError once closed. */
  #rootKey(): AesKey {
    if (this.#root === undefined) {
      throw new KmsInternalError("the HSM is closed (its Kms was closed): it holds no keys");
    }
    return this.#root;
  }

  /** Drops every cached version of a key (after it is destroyed). */
  forget(keyId: string): void {
    this.#unwrapped.delete(keyId);
  }

  toJSON(): { rootKeyId: string } {
    return { rootKeyId: this.rootKeyId };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `SoftwareHsm { rootKeyId: ${this.rootKeyId} }`;
  }
}
