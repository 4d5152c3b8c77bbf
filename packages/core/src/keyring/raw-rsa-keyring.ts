import {
  constants,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
} from "node:crypto";
import { ValidationError } from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { redactDataKey } from "../internal/redacted.ts";
import {
  DATA_KEY_LENGTH,
  type DecryptDataKeyRequest,
  type EncryptDataKeyRequest,
  type EncryptDataKeyResult,
  type Keyring,
  nextKeyringInstance,
  requestDataKey,
} from "./keyring.ts";
import { assertKeyName, type RawKeyName } from "./raw-aes-keyring.ts";

export interface RawRsaKeyringOptions extends RawKeyName {
  /** Wraps data keys (PEM or KeyObject); derived from `privateKey` when absent, else its public half. */
  readonly publicKey?: KeyObject | string;
  /** Unwraps data keys (PEM or KeyObject); absent = encrypt-only keyring. */
  readonly privateKey?: KeyObject | string;
}

/**
 * Wraps data keys with a local RSA key (RSAES-OAEP with SHA-256 and MGF1-SHA-256), for offline
 * use: senders need only the public key. RSA-OAEP does not bind the encryption context; the
 * message header authenticates it instead (docs/FORMAT.md §5.3).
 */
export class RawRsaKeyring implements Keyring {
  readonly identity: string;
  readonly keyNamespace: string;
  readonly keyName: string;
  readonly #publicKey: KeyObject | undefined;
  readonly #privateKey: KeyObject | undefined;
  /** The modulus's length in bytes: the only length an RSAES-OAEP ciphertext has. */
  readonly #ciphertextLength: number;

  /**
   * @throws ValidationException when neither key is given, a key is not RSA or is weak (see
   * `assertStrongRsaKey`), the two keys are not one pair, or names are bad.
   */
  constructor(options: RawRsaKeyringOptions) {
    assertKeyName(options);
    try {
      const privateKey = options.privateKey;
      this.#privateKey =
        privateKey === undefined
          ? undefined
          : typeof privateKey === "string"
            ? createPrivateKey(privateKey)
            : privateKey;
      const publicKey = options.publicKey;
      this.#publicKey =
        publicKey !== undefined
          ? typeof publicKey === "string" || publicKey.type !== "public"
            ? createPublicKey(publicKey)
            : publicKey
          : this.#privateKey === undefined
            ? undefined
            : createPublicKey(this.#privateKey);
    } catch (cause) {
      throw new ValidationError('"publicKey"/"privateKey" could not be parsed as keys', { cause });
    }
    if (this.#privateKey !== undefined && this.#privateKey.type !== "private") {
      throw new ValidationError('"privateKey" must be a private key');
    }
    if (this.#publicKey === undefined) {
      throw new ValidationError('"publicKey" or "privateKey" is required');
    }
    // The private key first: a public key derived from it would be named in its error otherwise.
    if (this.#privateKey !== undefined) assertStrongRsaKey("privateKey", this.#privateKey);
    assertStrongRsaKey("publicKey", this.#publicKey);
    this.#ciphertextLength = Math.ceil(
      (this.#publicKey.asymmetricKeyDetails?.modulusLength as number) / 8,
    );
    // Given both, they must be one pair: otherwise every copy this keyring makes is one it
    // cannot open, which surfaces only when the copy is needed (the escrow case).
    if (
      options.publicKey !== undefined &&
      this.#privateKey !== undefined &&
      !this.#publicKey.equals(createPublicKey(this.#privateKey))
    ) {
      throw new ValidationError('"publicKey" is not the public half of "privateKey"');
    }
    this.keyNamespace = options.keyNamespace;
    this.keyName = options.keyName;
    this.identity = `raw-rsa#${nextKeyringInstance()}:${this.keyNamespace}/${this.keyName}`;
  }

  /** @throws ValidationException for a request's `dataKey` that is not 32 bytes. */
  async encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult> {
    const dataKey = requestDataKey(request) ?? randomBytes(DATA_KEY_LENGTH);
    const wrapped = publicEncrypt(
      { key: this.#publicKey!, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      dataKey,
    );
    return redactDataKey<EncryptDataKeyResult>({
      dataKey,
      encryptedDataKeys: [
        {
          providerId: this.keyNamespace,
          providerInfo: this.keyName,
          ciphertext: new Uint8Array(wrapped.buffer, wrapped.byteOffset, wrapped.length),
        },
      ],
    });
  }

  async decryptDataKey(request: DecryptDataKeyRequest): Promise<Uint8Array | undefined> {
    if (this.#privateKey === undefined) return undefined;
    for (const edk of request.encryptedDataKeys) {
      if (edk.providerId !== this.keyNamespace || edk.providerInfo !== this.keyName) continue;
      // RFC 8017 §7.1.2 step 1, as AsymmetricHsm.decrypt: OpenSSL reads a shorter input as the
      // same integer, so a copy with a leading 00 byte dropped would open too — two encodings.
      if (edk.ciphertext.length !== this.#ciphertextLength) continue;
      try {
        const key = privateDecrypt(
          { key: this.#privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
          edk.ciphertext,
        );
        if (key.length === DATA_KEY_LENGTH) return new Uint8Array(key.buffer, key.byteOffset, 32);
        key.fill(0);
      } catch {
        // Not ours after all (or tampered): another copy may still work.
      }
    }
    return undefined;
  }
}

const MIN_MODULUS_BITS = 2048;
const MIN_PUBLIC_EXPONENT = 65_537n;
const MAX_PUBLIC_EXPONENT = 2n ** 256n;

/**
 * Refuses an RSA key that would wrap data keys weakly or uselessly, as NIST SP 800-56B / FIPS
 * 186 do: a modulus under 2048 bits; a public exponent that is even (no private key can invert
 * it, so no copy would ever open), below 65537 (e = 1 leaves the OAEP encoding — and so the data
 * key — readable by anyone; e = 3 is the classic small-exponent hazard) or of 2^256 or more.
 * A key whose details node cannot report is refused rather than assumed fine.
 * @throws ValidationException naming the key and the rule.
 */
function assertStrongRsaKey(name: "publicKey" | "privateKey", key: KeyObject): void {
  if (key.asymmetricKeyType !== "rsa") {
    throw new ValidationError(
      `"${name}" must be an RSA key (RSAES-OAEP), got ${key.asymmetricKeyType}`,
    );
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (bits === undefined || bits < MIN_MODULUS_BITS) {
    throw new ValidationError(
      `"${name}" must have a modulus of at least ${MIN_MODULUS_BITS} bits, got ${bits}`,
    );
  }
  const e = key.asymmetricKeyDetails?.publicExponent;
  if (e === undefined || e < MIN_PUBLIC_EXPONENT || e >= MAX_PUBLIC_EXPONENT || e % 2n === 0n) {
    throw new ValidationError(
      `"${name}" must have an odd public exponent from 65537 to below 2^256, got ${e}`,
    );
  }
}
