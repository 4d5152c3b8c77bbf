/**
 * Which key specs exist, which key usages each allows and which algorithms each usage offers,
 * as AWS KMS defines them ("Key spec reference", AWS KMS Developer Guide). SM2 (China Regions
 * only) is left out.
 */
import { ValidationError } from "./errors.ts";
import type {
  EncryptionAlgorithm,
  KeyAgreementAlgorithm,
  KeySpec,
  KeyUsage,
  MacAlgorithm,
  SigningAlgorithm,
} from "./types.ts";

/** The families that share one material format and one set of primitives. */
export type KeyFamily = "SYMMETRIC" | "RSA" | "ECC" | "ED25519" | "HMAC" | "ML_DSA";

/** Hash names as node:crypto spells them. */
export type HashName = "sha1" | "sha224" | "sha256" | "sha384" | "sha512";

/** Named curves as node:crypto spells them. */
export type CurveName = "P-256" | "P-384" | "P-521" | "secp256k1";

export interface KeySpecInfo {
  readonly family: KeyFamily;
  readonly usages: readonly KeyUsage[];
  readonly signingAlgorithms: readonly SigningAlgorithm[];
  /** Offered when the key's usage is ENCRYPT_DECRYPT. */
  readonly encryptionAlgorithms: readonly EncryptionAlgorithm[];
  readonly macAlgorithms: readonly MacAlgorithm[];
  /** Offered when the key's usage is KEY_AGREEMENT. */
  readonly keyAgreementAlgorithms: readonly KeyAgreementAlgorithm[];
  readonly modulusBits?: number;
  readonly curve?: CurveName;
  /** HMAC key length (AWS: the key length equals the hash output length). */
  readonly hmacKeyBytes?: number;
  readonly mlDsa?: "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87";
}

const RSA_SIGNING: readonly SigningAlgorithm[] = [
  "RSASSA_PSS_SHA_256",
  "RSASSA_PSS_SHA_384",
  "RSASSA_PSS_SHA_512",
  "RSASSA_PKCS1_V1_5_SHA_256",
  "RSASSA_PKCS1_V1_5_SHA_384",
  "RSASSA_PKCS1_V1_5_SHA_512",
];
const RSA_ENCRYPTION: readonly EncryptionAlgorithm[] = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"];

const NONE = [] as const;

function rsa(modulusBits: number): KeySpecInfo {
  return {
    family: "RSA",
    usages: ["ENCRYPT_DECRYPT", "SIGN_VERIFY"],
    signingAlgorithms: RSA_SIGNING,
    encryptionAlgorithms: RSA_ENCRYPTION,
    macAlgorithms: NONE,
    keyAgreementAlgorithms: NONE,
    modulusBits,
  };
}

function nist(curve: CurveName, signing: SigningAlgorithm): KeySpecInfo {
  return {
    family: "ECC",
    usages: ["SIGN_VERIFY", "KEY_AGREEMENT"],
    signingAlgorithms: [signing],
    encryptionAlgorithms: NONE,
    macAlgorithms: NONE,
    keyAgreementAlgorithms: ["ECDH"],
    curve,
  };
}

function hmac(bytes: number, algorithm: MacAlgorithm): KeySpecInfo {
  return {
    family: "HMAC",
    usages: ["GENERATE_VERIFY_MAC"],
    signingAlgorithms: NONE,
    encryptionAlgorithms: NONE,
    macAlgorithms: [algorithm],
    keyAgreementAlgorithms: NONE,
    hmacKeyBytes: bytes,
  };
}

function mlDsa(variant: "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87"): KeySpecInfo {
  return {
    family: "ML_DSA",
    usages: ["SIGN_VERIFY"],
    signingAlgorithms: ["ML_DSA_SHAKE_256"],
    encryptionAlgorithms: NONE,
    macAlgorithms: NONE,
    keyAgreementAlgorithms: NONE,
    mlDsa: variant,
  };
}

export const KEY_SPEC_TABLE: Readonly<Record<KeySpec, KeySpecInfo>> = {
  SYMMETRIC_DEFAULT: {
    family: "SYMMETRIC",
    usages: ["ENCRYPT_DECRYPT"],
    signingAlgorithms: NONE,
    encryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
    macAlgorithms: NONE,
    keyAgreementAlgorithms: NONE,
  },
  RSA_2048: rsa(2048),
  RSA_3072: rsa(3072),
  RSA_4096: rsa(4096),
  ECC_NIST_P256: nist("P-256", "ECDSA_SHA_256"),
  ECC_NIST_P384: nist("P-384", "ECDSA_SHA_384"),
  ECC_NIST_P521: nist("P-521", "ECDSA_SHA_512"),
  ECC_SECG_P256K1: { ...nist("secp256k1", "ECDSA_SHA_256"), usages: ["SIGN_VERIFY"] },
  ECC_NIST_EDWARDS25519: {
    family: "ED25519",
    usages: ["SIGN_VERIFY"],
    signingAlgorithms: ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
    encryptionAlgorithms: NONE,
    macAlgorithms: NONE,
    keyAgreementAlgorithms: NONE,
  },
  HMAC_224: hmac(28, "HMAC_SHA_224"),
  HMAC_256: hmac(32, "HMAC_SHA_256"),
  HMAC_384: hmac(48, "HMAC_SHA_384"),
  HMAC_512: hmac(64, "HMAC_SHA_512"),
  ML_DSA_44: mlDsa("ml-dsa-44"),
  ML_DSA_65: mlDsa("ml-dsa-65"),
  ML_DSA_87: mlDsa("ml-dsa-87"),
};

export const KEY_SPECS: readonly KeySpec[] = Object.keys(KEY_SPEC_TABLE) as KeySpec[];

/**
 * Checks a keySpec/keyUsage pair against the table.
 * @throws ValidationError naming the spec and the usage, and the usages the spec allows.
 */
export function assertKeySpecUsage(keySpec: KeySpec, keyUsage: KeyUsage): void {
  const { usages } = KEY_SPEC_TABLE[keySpec];
  if (!usages.includes(keyUsage)) {
    throw new ValidationError(
      `keyUsage ${keyUsage} is not valid for keySpec ${keySpec}: it allows ${usages.join(", ")}`,
    );
  }
}

/** The algorithm lists DescribeKey and GetPublicKey return for a key, as AWS returns them. */
export interface KeyAlgorithmLists {
  readonly encryptionAlgorithms?: readonly EncryptionAlgorithm[];
  readonly signingAlgorithms?: readonly SigningAlgorithm[];
  readonly macAlgorithms?: readonly MacAlgorithm[];
  readonly keyAgreementAlgorithms?: readonly KeyAgreementAlgorithm[];
}

export function algorithmLists(keySpec: KeySpec, keyUsage: KeyUsage): KeyAlgorithmLists {
  const info = KEY_SPEC_TABLE[keySpec];
  switch (keyUsage) {
    case "ENCRYPT_DECRYPT":
      return { encryptionAlgorithms: info.encryptionAlgorithms };
    case "SIGN_VERIFY":
      return { signingAlgorithms: info.signingAlgorithms };
    case "GENERATE_VERIFY_MAC":
      return { macAlgorithms: info.macAlgorithms };
    case "KEY_AGREEMENT":
      return { keyAgreementAlgorithms: info.keyAgreementAlgorithms };
  }
}

/** Message types a signing algorithm accepts, and the digest length for DIGEST. */
export interface SigningAlgorithmInfo {
  readonly hash: HashName | undefined;
  readonly digestBytes: number | undefined;
  readonly messageTypes: readonly ("RAW" | "DIGEST" | "EXTERNAL_MU")[];
}

const RAW_OR_DIGEST = ["RAW", "DIGEST"] as const;

export const SIGNING_ALGORITHM_TABLE: Readonly<Record<SigningAlgorithm, SigningAlgorithmInfo>> = {
  RSASSA_PSS_SHA_256: { hash: "sha256", digestBytes: 32, messageTypes: RAW_OR_DIGEST },
  RSASSA_PSS_SHA_384: { hash: "sha384", digestBytes: 48, messageTypes: RAW_OR_DIGEST },
  RSASSA_PSS_SHA_512: { hash: "sha512", digestBytes: 64, messageTypes: RAW_OR_DIGEST },
  RSASSA_PKCS1_V1_5_SHA_256: { hash: "sha256", digestBytes: 32, messageTypes: RAW_OR_DIGEST },
  RSASSA_PKCS1_V1_5_SHA_384: { hash: "sha384", digestBytes: 48, messageTypes: RAW_OR_DIGEST },
  RSASSA_PKCS1_V1_5_SHA_512: { hash: "sha512", digestBytes: 64, messageTypes: RAW_OR_DIGEST },
  ECDSA_SHA_256: { hash: "sha256", digestBytes: 32, messageTypes: RAW_OR_DIGEST },
  ECDSA_SHA_384: { hash: "sha384", digestBytes: 48, messageTypes: RAW_OR_DIGEST },
  ECDSA_SHA_512: { hash: "sha512", digestBytes: 64, messageTypes: RAW_OR_DIGEST },
  // AWS: ED25519_SHA_512 (PureEdDSA) requires RAW; ED25519_PH_SHA_512 (HashEdDSA) requires DIGEST.
  ED25519_SHA_512: { hash: undefined, digestBytes: undefined, messageTypes: ["RAW"] },
  ED25519_PH_SHA_512: { hash: "sha512", digestBytes: 64, messageTypes: ["DIGEST"] },
  ML_DSA_SHAKE_256: { hash: undefined, digestBytes: 64, messageTypes: ["RAW", "EXTERNAL_MU"] },
};

export const MAC_HASH: Readonly<Record<MacAlgorithm, HashName>> = {
  HMAC_SHA_224: "sha224",
  HMAC_SHA_256: "sha256",
  HMAC_SHA_384: "sha384",
  HMAC_SHA_512: "sha512",
};

/** OAEP hash per encryption algorithm (MGF1 uses the same hash, as AWS does). */
export const OAEP_HASH: Readonly<Record<"RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256", HashName>> = {
  RSAES_OAEP_SHA_1: "sha1",
  RSAES_OAEP_SHA_256: "sha256",
};

/**
 * AWS's RSA-OAEP plaintext limit: k − 2·hLen − 2 bytes (RFC 8017 §7.1.1), e.g. 214/190 bytes
 * for RSA_2048 with SHA-1/SHA-256.
 */
export function maxOaepPlaintextBytes(
  modulusBits: number,
  algorithm: "RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256",
): number {
  const hashBytes = algorithm === "RSAES_OAEP_SHA_1" ? 20 : 32;
  return modulusBits / 8 - 2 * hashBytes - 2;
}

/** Key pair specs generateDataKeyPair accepts (AWS DataKeyPairSpec, without SM2). */
export const DATA_KEY_PAIR_SPECS = [
  "RSA_2048",
  "RSA_3072",
  "RSA_4096",
  "ECC_NIST_P256",
  "ECC_NIST_P384",
  "ECC_NIST_P521",
  "ECC_SECG_P256K1",
  "ECC_NIST_EDWARDS25519",
] as const;
