import { keyArn } from "../arn.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import {
  InvalidKeyUsageError,
  InvalidSignatureError,
  KmsInternalError,
  UnsupportedOperationError,
  ValidationError,
} from "../errors.ts";
import { asymmetricHsm, type SigningMessageType } from "../hsm/asymmetric.ts";
import type { MaterialRef } from "../hsm/software-hsm.ts";
import { assertBytes, assertObject, assertOneOf } from "../internal/assert.ts";
import { currentVersion, type KmsContext, loadKey } from "../internal/key-access.ts";
import { redactingInspect, redactPlaintext } from "../internal/redacted.ts";
import {
  algorithmLists,
  KEY_SPEC_TABLE,
  maxOaepPlaintextBytes,
  OAEP_HASH,
  SIGNING_ALGORITHM_TABLE,
} from "../key-specs.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type { StoredKey, StoredKeyVersion } from "../keystore/key-store.ts";
import type {
  DecryptRequest,
  DecryptResponse,
  DeriveSharedSecretRequest,
  DeriveSharedSecretResponse,
  EncryptionContext,
  EncryptRequest,
  EncryptResponse,
  GetPublicKeyRequest,
  GetPublicKeyResponse,
  KeyUsage,
  SigningAlgorithm,
  SignRequest,
  SignResponse,
  VerifyRequest,
  VerifyResponse,
} from "../types.ts";

/** AWS's limit for RAW messages to Sign and Verify. */
export const MAX_SIGN_MESSAGE_BYTES = 4096;
/** AWS's limit for the Signature parameter of Verify. */
export const MAX_SIGNATURE_BYTES = 6144;

const SIGNING_ALGORITHMS = Object.keys(SIGNING_ALGORITHM_TABLE) as SigningAlgorithm[];
const MESSAGE_TYPES: readonly SigningMessageType[] = ["RAW", "DIGEST", "EXTERNAL_MU"];
const RSA_ENCRYPTION_ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] as const;

/** deriveSharedSecret's result prints its secret redacted (see internal/redacted.ts). */
const redactSharedSecret = redactingInspect("sharedSecret");

/** True when an encrypt/decrypt request names an RSA algorithm, so it belongs here. */
export function isRsaEncryptionAlgorithm(value: unknown): boolean {
  return value === "RSAES_OAEP_SHA_1" || value === "RSAES_OAEP_SHA_256";
}

/** @throws InvalidKeyUsageError when the key's usage is not `usage` (as AWS). */
export function assertKeyUsage(
  ctx: KmsContext,
  key: StoredKey,
  usage: KeyUsage,
  operation: string,
): void {
  if (key.keyUsage !== usage) {
    throw new InvalidKeyUsageError(
      `${operation} needs a ${usage} key; ${keyArn(ctx.identity, key.keyId)} is ${key.keySpec}/${key.keyUsage}`,
    );
  }
}

export function materialRef(key: StoredKey, version: StoredKeyVersion): MaterialRef {
  return { keyId: key.keyId, version: version.version, wrappedMaterial: version.wrappedMaterial };
}

/** The version's public key, checked against its private material (see authenticPublicKey). */
function publicKeyOf(ctx: KmsContext, key: StoredKey, version: StoredKeyVersion): Uint8Array {
  if (version.publicKey === undefined) {
    throw new KmsInternalError(`key ${key.keyId} v${version.version} has no stored public key`);
  }
  return asymmetricHsm(ctx.hsm).authenticPublicKey(
    materialRef(key, version),
    key.keySpec,
    version.publicKey,
  );
}

interface CheckedSigning {
  readonly key: StoredKey;
  readonly version: StoredKeyVersion;
  readonly algorithm: SigningAlgorithm;
  readonly messageType: SigningMessageType;
  readonly message: Uint8Array;
}

async function checkSigning(
  ctx: KmsContext,
  request: SignRequest,
  operation: KeyStateOperation,
): Promise<CheckedSigning> {
  assertObject("request", request);
  const message = assertBytes("message", request.message, 1, MAX_SIGN_MESSAGE_BYTES);
  const messageType = assertOneOf("messageType", request.messageType ?? "RAW", MESSAGE_TYPES);
  const algorithm = assertOneOf("signingAlgorithm", request.signingAlgorithm, SIGNING_ALGORITHMS);
  const key = await loadKey(ctx, request.keyId, operation);
  assertKeyUsage(ctx, key, "SIGN_VERIFY", operation);
  if (!KEY_SPEC_TABLE[key.keySpec].signingAlgorithms.includes(algorithm)) {
    throw new InvalidKeyUsageError(
      `signingAlgorithm ${algorithm} is not valid for ${keyArn(ctx.identity, key.keyId)} (${key.keySpec}); use ${KEY_SPEC_TABLE[key.keySpec].signingAlgorithms.join(", ")}`,
    );
  }
  const info = SIGNING_ALGORITHM_TABLE[algorithm];
  if (!info.messageTypes.includes(messageType)) {
    throw new ValidationError(
      `messageType ${messageType} is not valid for signingAlgorithm ${algorithm}: use ${info.messageTypes.join(" or ")}`,
    );
  }
  if (messageType !== "RAW" && message.length !== info.digestBytes) {
    throw new ValidationError(
      `"message" of messageType ${messageType} must be ${info.digestBytes} bytes for ${algorithm}, got ${message.length}`,
    );
  }
  if (messageType === "DIGEST" && algorithm.startsWith("RSASSA_PSS")) {
    // node:crypto has no RSA-PSS over a supplied digest, and the project does not hand-roll
    // EMSA-PSS; RAW covers the same signatures when the caller has the message.
    throw new UnsupportedOperationError(
      `messageType DIGEST with ${algorithm} is not supported by this KMS; sign the RAW message`,
    );
  }
  return { key, version: currentVersion(key), algorithm, messageType, message };
}

/**
 * Signs a message or digest with an asymmetric SIGN_VERIFY key.
 * @throws ValidationException, NotFoundException, DisabledException, KMSInvalidStateException,
 *   InvalidKeyUsageException, UnsupportedOperationException (RSASSA_PSS with DIGEST).
 */
export async function sign(ctx: KmsContext, request: SignRequest): Promise<SignResponse> {
  const { key, version, algorithm, messageType, message } = await checkSigning(
    ctx,
    request,
    "sign",
  );
  const signature = asymmetricHsm(ctx.hsm).sign(
    materialRef(key, version),
    key.keySpec,
    algorithm,
    messageType,
    message,
  );
  return { keyId: keyArn(ctx.identity, key.keyId), signature, signingAlgorithm: algorithm };
}

/**
 * Verifies a signature with the key's public key.
 * @throws InvalidSignatureException when the signature does not verify, and as sign.
 */
export async function verify(ctx: KmsContext, request: VerifyRequest): Promise<VerifyResponse> {
  assertObject("request", request);
  // Checked before the key is read, as every other argument is: a malformed signature is a
  // ValidationError whether or not the key exists or is enabled.
  const signature = assertBytes("signature", request.signature, 1, MAX_SIGNATURE_BYTES);
  const checked = await checkSigning(ctx, request, "verify");
  const { key, version } = checked;
  const valid = asymmetricHsm(ctx.hsm).verify(
    key.keyId,
    version.version,
    publicKeyOf(ctx, key, version),
    key.keySpec,
    checked.algorithm,
    checked.messageType,
    checked.message,
    signature,
  );
  if (!valid) throw new InvalidSignatureError("the signature is not valid for this message");
  return {
    keyId: keyArn(ctx.identity, key.keyId),
    signatureValid: true,
    signingAlgorithm: checked.algorithm,
  };
}

/**
 * Returns the public key of an asymmetric key as DER SubjectPublicKeyInfo.
 * @throws UnsupportedOperationException for symmetric and HMAC keys, and the key-state errors.
 */
export async function getPublicKey(
  ctx: KmsContext,
  request: GetPublicKeyRequest,
): Promise<GetPublicKeyResponse> {
  assertObject("request", request);
  const key = await loadKey(ctx, request.keyId, "getPublicKey");
  const family = KEY_SPEC_TABLE[key.keySpec].family;
  if (family === "SYMMETRIC" || family === "HMAC") {
    throw new UnsupportedOperationError(
      `getPublicKey is not valid for ${keyArn(ctx.identity, key.keyId)}: ${key.keySpec} keys have no public key`,
    );
  }
  const version = currentVersion(key);
  const lists = algorithmLists(key.keySpec, key.keyUsage);
  return {
    keyId: keyArn(ctx.identity, key.keyId),
    publicKey: publicKeyOf(ctx, key, version).slice(),
    customerMasterKeySpec: key.keySpec,
    keySpec: key.keySpec,
    keyUsage: key.keyUsage,
    ...(lists.encryptionAlgorithms ? { encryptionAlgorithms: lists.encryptionAlgorithms } : {}),
    ...(lists.signingAlgorithms ? { signingAlgorithms: lists.signingAlgorithms } : {}),
    ...(lists.keyAgreementAlgorithms
      ? { keyAgreementAlgorithms: lists.keyAgreementAlgorithms }
      : {}),
  };
}

/**
 * The names of the request members an encrypt or decrypt reads its key, context and algorithm
 * from, for its refusals: ReEncrypt encrypts and decrypts through the same paths, and a refusal
 * names the member the caller set, never one of Encrypt's that ReEncrypt does not have.
 */
export interface CryptArgumentNames {
  readonly keyId: string;
  readonly encryptionContext: string;
  readonly encryptionAlgorithm: string;
}

/** Encrypt's and Decrypt's own members. */
const REQUEST_ARGUMENTS: CryptArgumentNames = {
  keyId: "keyId",
  encryptionContext: "encryptionContext",
  encryptionAlgorithm: "encryptionAlgorithm",
};
/** ReEncrypt's members for the side it decrypts. */
const REENCRYPT_SOURCE_ARGUMENTS: CryptArgumentNames = {
  keyId: "sourceKeyId",
  encryptionContext: "sourceEncryptionContext",
  encryptionAlgorithm: "sourceEncryptionAlgorithm",
};
/** ReEncrypt's members for the side it encrypts. */
const REENCRYPT_DESTINATION_ARGUMENTS: CryptArgumentNames = {
  keyId: "destinationKeyId",
  encryptionContext: "destinationEncryptionContext",
  encryptionAlgorithm: "destinationEncryptionAlgorithm",
};

/** Whose members an encrypt of a plaintext of `origin` reads: ReEncrypt's destination ones. */
export function encryptArguments(origin: PlaintextOrigin): CryptArgumentNames {
  return origin === "request" ? REQUEST_ARGUMENTS : REENCRYPT_DESTINATION_ARGUMENTS;
}

/**
 * Asymmetric ciphertexts cannot bind an encryption context (AWS rejects one). Checked by the
 * symmetric path's own rules, so that a value it would refuse (null, a Map of pairs) is not
 * taken here as "no context" while the caller believes the pairs are bound.
 */
function assertNoContext(
  context: EncryptionContext | undefined,
  algorithm: string,
  argument: string,
): void {
  if (encodeEncryptionContext(context, argument).length > 0) {
    throw new ValidationError(`"${argument}" is not supported with ${algorithm}`);
  }
}

async function rsaEncryptionKey(
  ctx: KmsContext,
  keyIdInput: unknown,
  operation: KeyStateOperation,
  argument: string,
): Promise<StoredKey> {
  const key = await loadKey(ctx, keyIdInput, operation, argument);
  assertKeyUsage(ctx, key, "ENCRYPT_DECRYPT", operation);
  if (KEY_SPEC_TABLE[key.keySpec].family !== "RSA") {
    throw new InvalidKeyUsageError(
      `RSAES_OAEP algorithms need an RSA key; ${keyArn(ctx.identity, key.keyId)} is ${key.keySpec}`,
    );
  }
  return key;
}

/**
 * Whose plaintext an encrypt seals: the caller's own (Encrypt), or the one ReEncrypt decrypted
 * from its source. An error may state the length of the caller's own plaintext, never of a
 * source's: ReEncrypt asks for kms:ReEncryptFrom on the source, not kms:Decrypt, and an RSA
 * ciphertext is as long as its key's modulus whatever it holds, so the length would tell such a
 * caller what the ciphertext hides. AWS too names the limit only.
 */
export type PlaintextOrigin = "request" | "reEncryptSource";

/**
 * The plaintext of `request`, 1–`max` bytes long.
 * @throws ValidationException otherwise (see PlaintextOrigin for what it says).
 */
export function assertPlaintext(
  request: EncryptRequest,
  max: number,
  origin: PlaintextOrigin,
): Uint8Array {
  if (origin === "request") return assertBytes("plaintext", request.plaintext, 1, max);
  const plaintext = request.plaintext;
  if (plaintext.length < 1 || plaintext.length > max) {
    throw sourcePlaintextRefused(`1–${max} bytes long`);
  }
  return plaintext;
}

/** A ReEncrypt source's plaintext breaks `rule` of the destination: the rule, not the length. */
function sourcePlaintextRefused(rule: string): ValidationError {
  return new ValidationError(
    `the plaintext of "ciphertextBlob" must be ${rule} to be encrypted under "destinationKeyId"`,
  );
}

/**
 * RSA-OAEP encryption with an RSA ENCRYPT_DECRYPT key. The ciphertext is the bare RSA
 * ciphertext (as AWS's), so anyone with the public key can produce the same kind.
 * @throws ValidationException (plaintext over the limit for the key size and algorithm),
 *   InvalidKeyUsageException, and the key-state errors.
 */
export async function encrypt(
  ctx: KmsContext,
  request: EncryptRequest,
  origin: PlaintextOrigin = "request",
): Promise<EncryptResponse> {
  assertObject("request", request);
  const names = encryptArguments(origin);
  const algorithm = assertOneOf(
    names.encryptionAlgorithm,
    request.encryptionAlgorithm,
    RSA_ENCRYPTION_ALGORITHMS,
  );
  const plaintext = assertPlaintext(request, 4096, origin);
  assertNoContext(request.encryptionContext, algorithm, names.encryptionContext);
  const key = await rsaEncryptionKey(ctx, request.keyId, "encrypt", names.keyId);
  const limit = maxOaepPlaintextBytes(KEY_SPEC_TABLE[key.keySpec].modulusBits!, algorithm);
  if (plaintext.length > limit) {
    const rule = `at most ${limit} bytes for ${key.keySpec} with ${algorithm}`;
    throw origin === "request"
      ? new ValidationError(`"plaintext" must be ${rule}, got ${plaintext.length}`)
      : sourcePlaintextRefused(rule);
  }
  const version = currentVersion(key);
  return {
    ciphertextBlob: asymmetricHsm(ctx.hsm).encrypt(
      key.keyId,
      version.version,
      publicKeyOf(ctx, key, version),
      OAEP_HASH[algorithm],
      plaintext,
    ),
    keyId: keyArn(ctx.identity, key.keyId),
    encryptionAlgorithm: algorithm,
  };
}

/**
 * RSA-OAEP decryption. AWS requires the keyId for asymmetric ciphertexts (they carry no key
 * reference); any decryption failure is the generic InvalidCiphertextException. `operation` is
 * the key-state row: reEncrypt opens its source under reEncryptSource, whose refusals name
 * ReEncrypt's source members.
 * @throws ValidationException (missing keyId), InvalidCiphertextException,
 *   InvalidKeyUsageException, and the key-state errors.
 */
export async function decrypt(
  ctx: KmsContext,
  request: DecryptRequest,
  operation: KeyStateOperation = "decrypt",
): Promise<DecryptResponse> {
  assertObject("request", request);
  const names = operation === "reEncryptSource" ? REENCRYPT_SOURCE_ARGUMENTS : REQUEST_ARGUMENTS;
  const algorithm = assertOneOf(
    names.encryptionAlgorithm,
    request.encryptionAlgorithm,
    RSA_ENCRYPTION_ALGORITHMS,
  );
  const ciphertext = assertBytes("ciphertextBlob", request.ciphertextBlob, 1, 6144);
  if (request.keyId === undefined) {
    throw new ValidationError(`"${names.keyId}" is required to decrypt with ${algorithm}`);
  }
  assertNoContext(request.encryptionContext, algorithm, names.encryptionContext);
  const key = await rsaEncryptionKey(ctx, request.keyId, operation, names.keyId);
  const version = currentVersion(key);
  const plaintext = asymmetricHsm(ctx.hsm).decrypt(
    materialRef(key, version),
    key.keySpec,
    OAEP_HASH[algorithm],
    ciphertext,
  );
  return redactPlaintext<DecryptResponse>({
    plaintext,
    keyId: keyArn(ctx.identity, key.keyId),
    encryptionAlgorithm: algorithm,
    keyMaterialId: version.keyMaterialId,
  });
}

/**
 * ECDH between a KEY_AGREEMENT key and a peer's public key.
 * @throws ValidationException (peer key malformed or on another curve), InvalidKeyUsageException,
 *   and the key-state errors.
 */
export async function deriveSharedSecret(
  ctx: KmsContext,
  request: DeriveSharedSecretRequest,
): Promise<DeriveSharedSecretResponse> {
  assertObject("request", request);
  const algorithm = assertOneOf("keyAgreementAlgorithm", request.keyAgreementAlgorithm, [
    "ECDH",
  ] as const);
  const peer = assertBytes("publicKey", request.publicKey, 1, 8192);
  const key = await loadKey(ctx, request.keyId, "deriveSharedSecret");
  assertKeyUsage(ctx, key, "KEY_AGREEMENT", "deriveSharedSecret");
  const sharedSecret = asymmetricHsm(ctx.hsm).deriveSharedSecret(
    materialRef(key, currentVersion(key)),
    key.keySpec,
    peer,
  );
  return redactSharedSecret<DeriveSharedSecretResponse>({
    keyId: keyArn(ctx.identity, key.keyId),
    sharedSecret,
    keyAgreementAlgorithm: algorithm,
    keyOrigin: key.origin,
  });
}
