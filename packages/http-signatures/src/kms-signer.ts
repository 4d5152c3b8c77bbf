/**
 * Signers and verifiers whose keys live in a KMS: the in-process `Kms`, this project's server,
 * or AWS KMS behind a thin wrapper. Only the request/response shapes below are relied on
 * (they are AWS KMS's Sign/Verify/GenerateMac/VerifyMac, camelCased).
 */
import { ValidationError } from "@kms/core";
import {
  assertAlgorithm,
  createPublicKeyVerifier,
  type MessageSigner,
  type MessageVerifier,
  type SignatureAlgorithm,
} from "./algorithms.ts";
import { derToRaw, rawToDer } from "./internal/ecdsa-der.ts";

export type KmsSigningAlgorithmName =
  | "ECDSA_SHA_256"
  | "ECDSA_SHA_384"
  | "ED25519_SHA_512"
  | "RSASSA_PSS_SHA_512"
  | "RSASSA_PKCS1_V1_5_SHA_256";

/**
 * The part of a KMS client that HTTP signing needs. `Kms` from @kms/core satisfies it once it
 * has asymmetric and HMAC keys; so does a wrapper over `@aws-sdk/client-kms`.
 */
export interface KmsSignatureApi {
  sign(request: {
    keyId: string;
    message: Uint8Array;
    messageType: "RAW";
    signingAlgorithm: KmsSigningAlgorithmName;
  }): Promise<{ signature: Uint8Array }>;
  /** Throws (code `KMSInvalidSignatureException`) or returns signatureValid false on mismatch. */
  verify(request: {
    keyId: string;
    message: Uint8Array;
    messageType: "RAW";
    signature: Uint8Array;
    signingAlgorithm: KmsSigningAlgorithmName;
  }): Promise<{ signatureValid: boolean }>;
  generateMac(request: {
    keyId: string;
    message: Uint8Array;
    macAlgorithm: "HMAC_SHA_256";
  }): Promise<{ mac: Uint8Array }>;
  /** Throws (code `KMSInvalidMacException`) or returns macValid false on mismatch. */
  verifyMac(request: {
    keyId: string;
    message: Uint8Array;
    mac: Uint8Array;
    macAlgorithm: "HMAC_SHA_256";
  }): Promise<{ macValid: boolean }>;
  getPublicKey?(request: { keyId: string }): Promise<{ publicKey: Uint8Array }>;
}

const KMS_ALGORITHM: Record<Exclude<SignatureAlgorithm, "hmac-sha256">, KmsSigningAlgorithmName> = {
  "ecdsa-p256-sha256": "ECDSA_SHA_256",
  "ecdsa-p384-sha384": "ECDSA_SHA_384",
  ed25519: "ED25519_SHA_512",
  "rsa-pss-sha512": "RSASSA_PSS_SHA_512",
  "rsa-v1_5-sha256": "RSASSA_PKCS1_V1_5_SHA_256",
};

const ECDSA_SIZE: Partial<Record<SignatureAlgorithm, number>> = {
  "ecdsa-p256-sha256": 32,
  "ecdsa-p384-sha384": 48,
};

/** AWS KMS's bound on a RAW message (Sign, Verify, GenerateMac, VerifyMac), which ours keeps. */
const MAX_RAW_MESSAGE = 4096;

/**
 * The lengths a valid signature can have where the algorithm fixes them: an HMAC-SHA-256 tag,
 * an Ed25519 signature, and RSA signatures for the key specs a KMS offers (RSA_2048, RSA_3072,
 * RSA_4096). ECDSA is checked as r||s before its DER conversion.
 */
const SIGNATURE_LENGTHS: Partial<Record<SignatureAlgorithm, readonly number[]>> = {
  "hmac-sha256": [32],
  ed25519: [64],
  "rsa-pss-sha512": [256, 384, 512],
  "rsa-v1_5-sha256": [256, 384, 512],
};

/**
 * Whether the KMS would refuse the request as malformed (ValidationException) rather than
 * answer it: both inputs come from the message being verified, so a client could otherwise
 * turn its bad signature into an error that reads as a KMS outage. No such request can verify.
 */
function unverifiable(
  algorithm: SignatureAlgorithm,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (message.length === 0 || message.length > MAX_RAW_MESSAGE) return true;
  const lengths = SIGNATURE_LENGTHS[algorithm];
  return lengths !== undefined && !lengths.includes(signature.length);
}

export interface KmsKeyOptions {
  /** A client with the KMS signing surface (e.g. the in-process `Kms`). */
  readonly kms: KmsSignatureApi;
  /** KMS key id, ARN or alias. */
  readonly keyId: string;
  readonly algorithm: SignatureAlgorithm;
  /** The `keyid` to publish in Signature-Input; defaults to `keyId`. */
  readonly publishedKeyId?: string;
}

function assertKeyOptions(options: KmsKeyOptions): void {
  assertAlgorithm(options.algorithm);
  if (typeof options.keyId !== "string" || options.keyId.length === 0) {
    throw new ValidationError('"keyId" must be a non-empty string');
  }
}

const isCode = (error: unknown, code: string): boolean =>
  typeof error === "object" && error !== null && (error as { code?: unknown }).code === code;

/**
 * Signs with a KMS key: HMAC keys through GenerateMac, asymmetric keys through Sign (ECDSA DER
 * output converted to r||s). The key never leaves the KMS.
 * @throws ValidationException for an unknown algorithm or empty key id; KMS errors
 * (NotFoundException, DisabledException, InvalidKeyUsageException, …) propagate from `sign`.
 */
export function createKmsSigner(options: KmsKeyOptions): MessageSigner {
  assertKeyOptions(options);
  const { kms, keyId, algorithm } = options;
  const keyIdOut = options.publishedKeyId ?? keyId;
  if (algorithm === "hmac-sha256") {
    return {
      algorithm,
      keyId: keyIdOut,
      sign: async (message) =>
        (await kms.generateMac({ keyId, message, macAlgorithm: "HMAC_SHA_256" })).mac,
    };
  }
  const signingAlgorithm = KMS_ALGORITHM[algorithm];
  const size = ECDSA_SIZE[algorithm];
  return {
    algorithm,
    keyId: keyIdOut,
    sign: async (message) => {
      const { signature } = await kms.sign({
        keyId,
        message,
        messageType: "RAW",
        signingAlgorithm,
      });
      return size === undefined ? signature : derToRaw(signature, size);
    },
  };
}

/**
 * Verifies with a KMS key (VerifyMac / Verify). A mismatch answers false, and so does a request
 * the KMS would refuse as malformed without looking at the key (a signature base over 4096
 * bytes, or a signature of a length the algorithm cannot produce); other KMS errors (missing or
 * disabled key) propagate so they are not mistaken for a bad signature.
 * @throws ValidationException for an unknown algorithm or empty key id.
 */
export function createKmsVerifier(options: KmsKeyOptions): MessageVerifier {
  assertKeyOptions(options);
  const { kms, keyId, algorithm } = options;
  if (algorithm === "hmac-sha256") {
    return {
      algorithm,
      verify: async (message, mac) => {
        if (unverifiable(algorithm, message, mac)) return false;
        try {
          return (await kms.verifyMac({ keyId, message, mac, macAlgorithm: "HMAC_SHA_256" }))
            .macValid;
        } catch (error) {
          if (isCode(error, "KMSInvalidMacException")) return false;
          throw error;
        }
      },
    };
  }
  const signingAlgorithm = KMS_ALGORITHM[algorithm];
  const size = ECDSA_SIZE[algorithm];
  return {
    algorithm,
    verify: async (message, raw) => {
      if (unverifiable(algorithm, message, raw)) return false;
      let signature = raw;
      if (size !== undefined) {
        if (raw.length !== size * 2) return false;
        signature = rawToDer(raw, size);
      }
      try {
        const result = await kms.verify({
          keyId,
          message,
          messageType: "RAW",
          signature,
          signingAlgorithm,
        });
        return result.signatureValid;
      } catch (error) {
        if (isCode(error, "KMSInvalidSignatureException")) return false;
        throw error;
      }
    },
  };
}

/**
 * Fetches the KMS key's public key once (GetPublicKey) and verifies locally with node:crypto:
 * no KMS round trip per request. Only for asymmetric algorithms.
 * @throws ValidationException for hmac-sha256, an unknown algorithm, or a client without
 * getPublicKey; KMS errors propagate.
 */
export async function createKmsPublicKeyVerifier(options: KmsKeyOptions): Promise<MessageVerifier> {
  assertKeyOptions(options);
  if (options.algorithm === "hmac-sha256") {
    throw new ValidationError('"algorithm" hmac-sha256 has no public key; use createKmsVerifier');
  }
  if (options.kms.getPublicKey === undefined) {
    throw new ValidationError('"kms" must implement getPublicKey for local verification');
  }
  const { publicKey } = await options.kms.getPublicKey({ keyId: options.keyId });
  return createPublicKeyVerifier(publicKey, options.algorithm);
}
