import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";
import { ValidationError } from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { assertBytes } from "../internal/assert.ts";
import { redactDataKey } from "../internal/redacted.ts";
import { isWellFormed } from "../internal/unicode.ts";
import {
  DATA_KEY_LENGTH,
  type DecryptDataKeyRequest,
  type EncryptDataKeyRequest,
  type EncryptDataKeyResult,
  encodedContext,
  type Keyring,
  nextKeyringInstance,
  requestDataKey,
} from "./keyring.ts";

const IV = 12;
const TAG = 16;

export interface RawKeyName {
  /** Names the key family, e.g. "acme-backups"; stored as the copy's provider id. */
  readonly keyNamespace: string;
  /** Names the key within its namespace; stored as the copy's provider info. */
  readonly keyName: string;
}

export interface RawAesKeyringOptions extends RawKeyName {
  /** 32 bytes. Copied into a KeyObject; the caller may wipe its copy afterwards. */
  readonly wrappingKey: Uint8Array;
}

/** Checks a raw keyring's names (shared with RawRsaKeyring). */
export function assertKeyName(options: RawKeyName): void {
  for (const name of ["keyNamespace", "keyName"] as const) {
    const value = options?.[name];
    if (typeof value !== "string" || value.length === 0 || Buffer.byteLength(value) > 1024) {
      throw new ValidationError(`"${name}" must be a non-empty string of at most 1024 bytes`);
    }
    // The header stores names as UTF-8, which turns a lone surrogate into U+FFFD: the name read
    // back would not be this keyring's, and it could never open its own copies.
    if (!isWellFormed(value)) {
      throw new ValidationError(`"${name}" must be well-formed Unicode (no lone surrogates)`);
    }
  }
  if (options.keyNamespace === "kms") {
    throw new ValidationError('"keyNamespace" must not be "kms", which is reserved for KMS keys');
  }
}

/**
 * Wraps data keys with a local AES-256 key, for offline use (no KMS). Each copy is
 * `IV(12) || AES-256-GCM(data key)(32) || tag(16)`, with the namespace, the name and the
 * message's encryption context as additional data (docs/FORMAT.md §5.3).
 */
export class RawAesKeyring implements Keyring {
  readonly identity: string;
  readonly keyNamespace: string;
  readonly keyName: string;
  readonly #key: KeyObject;
  readonly #nameAad: Buffer;

  /** @throws ValidationException for a key that is not 32 bytes or bad names. */
  constructor(options: RawAesKeyringOptions) {
    assertKeyName(options);
    assertBytes("wrappingKey", options.wrappingKey, 32, 32);
    this.keyNamespace = options.keyNamespace;
    this.keyName = options.keyName;
    this.#key = createSecretKey(Buffer.from(options.wrappingKey));
    this.#nameAad = nameAad(options);
    this.identity = `raw-aes#${nextKeyringInstance()}:${this.keyNamespace}/${this.keyName}`;
  }

  /**
   * @throws ValidationException for a request's `dataKey` that is not 32 bytes or a malformed
   *   encryption context (no data key is generated then).
   */
  async encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult> {
    // Both checked before a key is generated, which a refusal would otherwise leave unzeroed.
    const given = requestDataKey(request);
    const context = encodedContext(request.encryptionContext);
    const dataKey = given ?? randomBytes(DATA_KEY_LENGTH);
    const iv = randomBytes(IV);
    const cipher = createCipheriv("aes-256-gcm", this.#key, iv, { authTagLength: TAG });
    cipher.setAAD(this.#nameAad);
    if (context.length > 0) cipher.setAAD(context);
    const ciphertext = new Uint8Array(IV + DATA_KEY_LENGTH + TAG);
    ciphertext.set(iv, 0);
    ciphertext.set(cipher.update(dataKey), IV);
    cipher.final();
    ciphertext.set(cipher.getAuthTag(), IV + DATA_KEY_LENGTH);
    return redactDataKey<EncryptDataKeyResult>({
      dataKey,
      encryptedDataKeys: [
        { providerId: this.keyNamespace, providerInfo: this.keyName, ciphertext },
      ],
    });
  }

  async decryptDataKey(request: DecryptDataKeyRequest): Promise<Uint8Array | undefined> {
    let context: Uint8Array | undefined;
    for (const edk of request.encryptedDataKeys) {
      if (edk.providerId !== this.keyNamespace || edk.providerInfo !== this.keyName) continue;
      if (edk.ciphertext.length !== IV + DATA_KEY_LENGTH + TAG) continue;
      context ??= encodedContext(request.encryptionContext);
      const decipher = createDecipheriv("aes-256-gcm", this.#key, edk.ciphertext.subarray(0, IV), {
        authTagLength: TAG,
      });
      decipher.setAuthTag(edk.ciphertext.subarray(IV + DATA_KEY_LENGTH));
      decipher.setAAD(this.#nameAad);
      if (context.length > 0) decipher.setAAD(context);
      const dataKey = decipher.update(edk.ciphertext.subarray(IV, IV + DATA_KEY_LENGTH));
      try {
        decipher.final();
        return new Uint8Array(dataKey.buffer, dataKey.byteOffset, dataKey.length);
      } catch {
        dataKey.fill(0);
      }
    }
    return undefined;
  }
}

/** `u16 len || namespace || u16 len || name`: unambiguous, so names cannot be shifted. */
function nameAad(names: RawKeyName): Buffer {
  const ns = Buffer.from(names.keyNamespace, "utf8");
  const name = Buffer.from(names.keyName, "utf8");
  const out = Buffer.alloc(4 + ns.length + name.length);
  out.writeUInt16BE(ns.length, 0);
  ns.copy(out, 2);
  out.writeUInt16BE(name.length, 2 + ns.length);
  name.copy(out, 4 + ns.length);
  return out;
}
