/**
 * RFC 9421 §3.3 algorithms and the signer/verifier interface every key source implements.
 */
import {
  constants,
  createPrivateKey,
  createPublicKey,
  type JsonWebKey,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { ValidationError } from "@kms/core";
import { hmacSha256 } from "./internal/hmac-sha256.ts";

export const SIGNATURE_ALGORITHMS = [
  "hmac-sha256",
  "ecdsa-p256-sha256",
  "ecdsa-p384-sha384",
  "ed25519",
  "rsa-pss-sha512",
  "rsa-v1_5-sha256",
] as const;

export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

export function isSignatureAlgorithm(value: unknown): value is SignatureAlgorithm {
  return typeof value === "string" && (SIGNATURE_ALGORITHMS as readonly string[]).includes(value);
}

/**
 * Produces signatures over a signature base. `sign` returns the raw signature bytes in the
 * RFC 9421 encoding (ECDSA as r||s, not DER).
 */
export interface MessageSigner {
  readonly algorithm: SignatureAlgorithm;
  /** Sent as the `keyid` parameter unless the caller overrides it. */
  readonly keyId?: string | undefined;
  sign(base: Uint8Array): Promise<Uint8Array>;
  /**
   * The same signature computed synchronously, offered by signers whose key is in this process
   * (shared secrets, private keys) so middleware can answer without a promise per response.
   */
  readonly signSync?: ((base: Uint8Array) => Uint8Array) | undefined;
}

/** Checks a signature over a signature base; false on mismatch, never throws for one. */
export interface MessageVerifier {
  readonly algorithm: SignatureAlgorithm;
  verify(base: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** The same check computed synchronously, offered by verifiers whose key is in this process. */
  readonly verifySync?: ((base: Uint8Array, signature: Uint8Array) => boolean) | undefined;
}

export function assertAlgorithm(value: unknown, argument = "algorithm"): SignatureAlgorithm {
  if (!isSignatureAlgorithm(value)) {
    throw new ValidationError(
      `"${argument}" must be one of ${SIGNATURE_ALGORITHMS.join(", ")}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** A plain Uint8Array view of a Buffer, without copying it. */
function asBytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

// --- shared secrets ---------------------------------------------------------------------

function assertSecret(secret: Uint8Array): void {
  if (!(secret instanceof Uint8Array) || secret.length < 32) {
    throw new ValidationError('"secret" must be a Uint8Array of at least 32 bytes');
  }
}

/**
 * HMAC-SHA256 signer over a shared secret held by this process (for outside parties whose
 * secret is not in the KMS; prefer `createKmsSigner` for keys the KMS holds).
 * @throws ValidationException when the secret is shorter than 32 bytes.
 */
export function createHmacSigner(
  secret: Uint8Array,
  options: { keyId?: string } = {},
): MessageSigner {
  assertSecret(secret);
  const signSync = hmacSha256(secret).mac;
  return {
    algorithm: "hmac-sha256",
    keyId: options.keyId,
    sign: async (base) => signSync(base),
    signSync,
  };
}

/**
 * HMAC-SHA256 verifier; compares in constant time.
 * @throws ValidationException when the secret is shorter than 32 bytes.
 */
export function createHmacVerifier(secret: Uint8Array): MessageVerifier {
  assertSecret(secret);
  const verifySync = hmacSha256(secret).matches;
  return {
    algorithm: "hmac-sha256",
    verify: async (base, signature) => verifySync(base, signature),
    verifySync,
  };
}

// --- public-key algorithms with node:crypto -------------------------------------------------

interface KeyShape {
  readonly type: string;
  readonly curve?: string;
  readonly hash: string | null;
}

const KEY_SHAPES: Record<Exclude<SignatureAlgorithm, "hmac-sha256">, KeyShape> = {
  "ecdsa-p256-sha256": { type: "ec", curve: "prime256v1", hash: "sha256" },
  "ecdsa-p384-sha384": { type: "ec", curve: "secp384r1", hash: "sha384" },
  ed25519: { type: "ed25519", hash: null },
  "rsa-pss-sha512": { type: "rsa", hash: "sha512" },
  "rsa-v1_5-sha256": { type: "rsa", hash: "sha256" },
};

function checkKey(key: KeyObject, algorithm: Exclude<SignatureAlgorithm, "hmac-sha256">): void {
  const shape = KEY_SHAPES[algorithm];
  const type = key.asymmetricKeyType;
  // An RSA-PSS-restricted key (id-RSASSA-PSS, as in RFC 9421 B.1.2) serves rsa-pss-sha512.
  const typeOk = type === shape.type || (algorithm === "rsa-pss-sha512" && type === "rsa-pss");
  const curveOk = shape.curve === undefined || key.asymmetricKeyDetails?.namedCurve === shape.curve;
  if (!typeOk || !curveOk) {
    throw new ValidationError(`"key" does not fit ${algorithm} (got a ${type ?? "symmetric"} key)`);
  }
}

function signOptions(
  algorithm: SignatureAlgorithm,
  key: KeyObject,
): Parameters<typeof nodeSign>[2] & object {
  if (algorithm.startsWith("ecdsa")) return { key, dsaEncoding: "ieee-p1363" };
  if (algorithm === "rsa-pss-sha512") {
    return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 };
  }
  if (algorithm === "rsa-v1_5-sha256") return { key, padding: constants.RSA_PKCS1_PADDING };
  return key as never;
}

export type PrivateKeyInput = KeyObject | string | Uint8Array;
export type PublicKeyInput = KeyObject | string | Uint8Array | JsonWebKey;

function toPrivateKey(key: PrivateKeyInput): KeyObject {
  if (typeof key === "object" && "type" in key && key.type === "private") return key as KeyObject;
  try {
    return createPrivateKey(key instanceof Uint8Array ? Buffer.from(key) : (key as string));
  } catch (cause) {
    throw new ValidationError('"privateKey" must be a private KeyObject or PEM/DER text', {
      cause,
    });
  }
}

function toPublicKey(key: PublicKeyInput): KeyObject {
  if (
    typeof key === "object" &&
    "type" in key &&
    (key.type === "public" || key.type === "private")
  ) {
    return key.type === "private" ? createPublicKey(key as KeyObject) : (key as KeyObject);
  }
  try {
    if (key instanceof Uint8Array)
      return createPublicKey({ key: Buffer.from(key), format: "der", type: "spki" });
    if (typeof key === "string") return createPublicKey(key);
    return createPublicKey({ key: key as JsonWebKey, format: "jwk" });
  } catch (cause) {
    throw new ValidationError('"publicKey" must be a public KeyObject, PEM, SPKI DER or JWK', {
      cause,
    });
  }
}

/**
 * Signs with a private key this process holds (tests, or outside keys that are not in the KMS).
 * @throws ValidationException when the algorithm is unknown or the key does not fit it.
 */
export function createPrivateKeySigner(
  privateKey: PrivateKeyInput,
  algorithm: SignatureAlgorithm,
  options: { keyId?: string } = {},
): MessageSigner {
  assertAlgorithm(algorithm);
  if (algorithm === "hmac-sha256")
    throw new ValidationError('"algorithm" hmac-sha256 needs createHmacSigner');
  const key = toPrivateKey(privateKey);
  checkKey(key, algorithm);
  const hash = KEY_SHAPES[algorithm].hash;
  const opts = signOptions(algorithm, key);
  const signSync = (base: Uint8Array): Uint8Array => asBytes(nodeSign(hash, base, opts));
  return {
    algorithm,
    keyId: options.keyId,
    sign: async (base) => signSync(base),
    signSync,
  };
}

/**
 * Verifies with a public key, typically an outside party's (PEM, SPKI DER, JWK or KeyObject).
 * @throws ValidationException when the algorithm is unknown or the key does not fit it.
 */
export function createPublicKeyVerifier(
  publicKey: PublicKeyInput,
  algorithm: SignatureAlgorithm,
): MessageVerifier {
  assertAlgorithm(algorithm);
  if (algorithm === "hmac-sha256")
    throw new ValidationError('"algorithm" hmac-sha256 needs createHmacVerifier');
  const key = toPublicKey(publicKey);
  checkKey(key, algorithm);
  const hash = KEY_SHAPES[algorithm].hash;
  // Verification auto-detects the PSS salt length: RFC 9421 signers use 64 bytes, but common
  // implementations (e.g. http-message-signatures) sign with the maximum, and accepting any
  // salt length does not weaken PSS.
  const opts =
    algorithm === "rsa-pss-sha512"
      ? {
          key,
          padding: constants.RSA_PKCS1_PSS_PADDING,
          saltLength: constants.RSA_PSS_SALTLEN_AUTO,
        }
      : signOptions(algorithm, key);
  const rawLength =
    algorithm === "ecdsa-p256-sha256" ? 64 : algorithm === "ecdsa-p384-sha384" ? 96 : undefined;
  const verifySync = (base: Uint8Array, signature: Uint8Array): boolean => {
    if (rawLength !== undefined && signature.length !== rawLength) return false;
    try {
      return nodeVerify(hash, base, opts as never, signature);
    } catch {
      return false;
    }
  };
  return {
    algorithm,
    verify: async (base, signature) => verifySync(base, signature),
    verifySync,
  };
}
