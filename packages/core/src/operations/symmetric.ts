import { keyArn } from "../arn.ts";
import { invalidCiphertext, parseBlob } from "../envelope/ciphertext-blob.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import {
  IncorrectKeyError,
  InvalidKeyUsageError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { assertBytes, assertInteger, assertObject, assertOneOf } from "../internal/assert.ts";
import {
  admitKey,
  checkKeyState,
  currentVersion,
  getKey,
  type KmsContext,
  loadKey,
  needsRotation,
  resolveKeyId,
  rotateDue,
} from "../internal/key-access.ts";
import { redactPlaintext } from "../internal/redacted.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type { StoredKey, StoredKeyVersion } from "../keystore/key-store.ts";
import { authorizeKey, RSA_REENCRYPT_SOURCE_ACTIONS } from "../policy/authorizer.ts";
import type {
  DecryptRequest,
  DecryptResponse,
  EncryptionAlgorithm,
  EncryptionContext,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
  GenerateRandomRequest,
  GenerateRandomResponse,
  ReEncryptRequest,
  ReEncryptResponse,
} from "../types.ts";
import {
  assertPlaintext,
  encryptArguments,
  isRsaEncryptionAlgorithm,
  decrypt as rsaDecrypt,
  encrypt as rsaEncrypt,
} from "./asymmetric.ts";

export const MAX_PLAINTEXT_BYTES = 4096;

function assertSymmetricEncryptionKey(ctx: KmsContext, key: StoredKey, operation: string): void {
  if (key.keySpec !== "SYMMETRIC_DEFAULT" || key.keyUsage !== "ENCRYPT_DECRYPT") {
    throw new InvalidKeyUsageError(
      `${operation} needs a symmetric ENCRYPT_DECRYPT key; ${keyArn(ctx.identity, key.keyId)} is ${key.keySpec}/${key.keyUsage}`,
    );
  }
}

function assertAlgorithm(name: string, value: unknown): void {
  if (value !== undefined) assertOneOf(name, value, ["SYMMETRIC_DEFAULT"]);
}

/** Loads an encryption key for `operation`, performing a due automatic rotation first. */
export async function encryptionKey(
  ctx: KmsContext,
  keyIdInput: unknown,
  operation: KeyStateOperation,
  argument = "keyId",
): Promise<StoredKey> {
  return keyToEncryptWith(ctx, await loadKey(ctx, keyIdInput, operation, argument), operation);
}

/**
 * encryptionKey on the key loadKey answered: checked as a symmetric encryption key, then the key
 * itself, or the promise of it rotated when an automatic rotation is due. A promise only then,
 * so that encrypt, loading the key itself, awaits nothing more on nearly every call.
 */
function keyToEncryptWith(
  ctx: KmsContext,
  key: StoredKey,
  operation: KeyStateOperation,
): StoredKey | Promise<StoredKey> {
  assertSymmetricEncryptionKey(ctx, key, operation);
  return needsRotation(ctx, key) ? rotateDue(ctx, key) : key;
}

export function seal(
  ctx: KmsContext,
  key: StoredKey,
  plaintext: Uint8Array,
  context: Uint8Array,
  version: StoredKeyVersion = currentVersion(key),
): Uint8Array {
  return ctx.hsm.encryptToBlob(
    { keyId: key.keyId, version: version.version, wrappedMaterial: version.wrappedMaterial },
    plaintext,
    context,
  );
}

/**
 * Encrypt. The symmetric case, nearly every call, runs in this one async frame: its only
 * awaits are the key's (the store read, and a due rotation), not one per helper.
 * `sealedWith` is given when ReEncrypt encrypts what it decrypted (reEncryptWithRsa): it learns
 * the key material a symmetric key sealed under, which AWS's Encrypt does not name and ReEncrypt
 * does (an RSA key leaves it unset), the plaintext is a source's (PlaintextOrigin), and the
 * request's members are ReEncrypt's destination ones (encryptArguments).
 */
export async function encrypt(
  ctx: KmsContext,
  request: EncryptRequest,
  sealedWith?: { keyMaterialId?: string },
): Promise<EncryptResponse> {
  assertObject("request", request);
  const origin = sealedWith === undefined ? "request" : "reEncryptSource";
  if (isRsaEncryptionAlgorithm(request.encryptionAlgorithm)) {
    return rsaEncrypt(ctx, request, origin);
  }
  const plaintext = assertPlaintext(request, MAX_PLAINTEXT_BYTES, origin);
  const names = encryptArguments(origin);
  assertAlgorithm(names.encryptionAlgorithm, request.encryptionAlgorithm);
  const context = encodeEncryptionContext(request.encryptionContext, names.encryptionContext);
  const loaded = keyToEncryptWith(
    ctx,
    await loadKey(ctx, request.keyId, "encrypt", names.keyId),
    "encrypt",
  );
  const key = loaded instanceof Promise ? await loaded : loaded;
  const version = currentVersion(key);
  if (sealedWith !== undefined) sealedWith.keyMaterialId = version.keyMaterialId;
  return {
    ciphertextBlob: seal(ctx, key, plaintext, context, version),
    keyId: keyArn(ctx.identity, key.keyId),
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
  };
}

/**
 * What decrypt and reEncrypt answer (explain too) when `argument` names an existing key other than
 * the one the ciphertext's header names.
 */
export function incorrectKey(argument: string): IncorrectKeyError {
  return new IncorrectKeyError(
    `the ciphertext was not encrypted under the key given in "${argument}"`,
  );
}

interface Opened {
  readonly key: StoredKey;
  readonly plaintext: Uint8Array;
  readonly keyMaterialId: string;
}

/**
 * Authenticates and decrypts a blob. A blob naming an unknown key or version fails exactly
 * like a tampered one (InvalidCiphertextError), so that header bit flips have one answer.
 */
async function open(
  ctx: KmsContext,
  blobInput: unknown,
  contextInput: EncryptionContext | undefined,
  expectedKeyInput: unknown,
  operation: KeyStateOperation,
  names: { blob: string; context: string; keyId: string },
): Promise<Opened> {
  const blob = assertBytes(names.blob, blobInput, 1, 6144);
  const context = encodeEncryptionContext(contextInput, names.context);
  const expectedKeyId =
    expectedKeyInput === undefined
      ? undefined
      : await resolveKeyId(ctx, expectedKeyInput, names.keyId);
  const parsed = parseBlob(blob);
  if (expectedKeyId !== undefined && expectedKeyId !== parsed.keyId) {
    // A key that does not exist is NotFound, as in AWS; only an existing other key is Incorrect,
    // once the caller is authorized on it (AccessDenied first), for what the call asks of the
    // key it names as the ciphertext's: ReEncrypt's source key needs kms:ReEncryptFrom, which
    // the authorizer, reading the key from the header, would take for a destination's
    // kms:ReEncryptTo. The header's own key is never read: its state, its existence and the
    // caller's rights on it decide nothing here.
    await getKey(operation === "reEncryptSource" ? namedSourceContext(ctx) : ctx, expectedKeyId);
    throw incorrectKey(names.keyId);
  }
  let live: StoredKey;
  try {
    // getKey, one await less per decrypt: admitKey destroys a key whose deletion window has
    // passed, and authorizes the call.
    const admitted = admitKey(ctx, parsed.keyId, await ctx.store.getKey(parsed.keyId));
    live = admitted instanceof Promise ? await admitted : admitted;
  } catch (error) {
    if (error instanceof NotFoundError) throw invalidCiphertext();
    throw error;
  }
  checkKeyState(ctx, live, operation);
  assertSymmetricEncryptionKey(ctx, live, operation);
  const version = live.versions.find((v) => v.version === parsed.keyVersion);
  if (version === undefined) throw invalidCiphertext();
  const plaintext = ctx.hsm.decryptBlob(
    { keyId: live.keyId, version: version.version, wrappedMaterial: version.wrappedMaterial },
    parsed,
    context,
  );
  return { key: live, plaintext, keyMaterialId: version.keyMaterialId };
}

export async function decrypt(ctx: KmsContext, request: DecryptRequest): Promise<DecryptResponse> {
  assertObject("request", request);
  if (isRsaEncryptionAlgorithm(request.encryptionAlgorithm)) return rsaDecrypt(ctx, request);
  assertAlgorithm("encryptionAlgorithm", request.encryptionAlgorithm);
  const opened = await open(
    ctx,
    request.ciphertextBlob,
    request.encryptionContext,
    request.keyId,
    "decrypt",
    { blob: "ciphertextBlob", context: "encryptionContext", keyId: "keyId" },
  );
  return redactPlaintext<DecryptResponse>({
    plaintext: opened.plaintext,
    keyId: keyArn(ctx.identity, opened.key.keyId),
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
    keyMaterialId: opened.keyMaterialId,
  });
}

export async function reEncrypt(
  ctx: KmsContext,
  request: ReEncryptRequest,
): Promise<ReEncryptResponse> {
  assertObject("request", request);
  if (
    isRsaEncryptionAlgorithm(request.sourceEncryptionAlgorithm) ||
    isRsaEncryptionAlgorithm(request.destinationEncryptionAlgorithm)
  ) {
    return reEncryptWithRsa(ctx, request);
  }
  assertAlgorithm("sourceEncryptionAlgorithm", request.sourceEncryptionAlgorithm);
  assertAlgorithm("destinationEncryptionAlgorithm", request.destinationEncryptionAlgorithm);
  const destinationContext = encodeEncryptionContext(
    request.destinationEncryptionContext,
    "destinationEncryptionContext",
  );
  const destination = await encryptionKey(
    ctx,
    request.destinationKeyId,
    "reEncrypt",
    "destinationKeyId",
  );
  const opened = await openSource(ctx, request);
  try {
    return {
      ciphertextBlob: seal(ctx, destination, opened.plaintext, destinationContext),
      sourceKeyId: keyArn(ctx.identity, opened.key.keyId),
      keyId: keyArn(ctx.identity, destination.keyId),
      sourceEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      destinationEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      sourceKeyMaterialId: opened.keyMaterialId,
      destinationKeyMaterialId: currentVersion(destination).keyMaterialId,
    };
  } finally {
    // The plaintext never leaves reEncrypt.
    opened.plaintext.fill(0);
  }
}

/** Opens ReEncrypt's symmetric source, under the source-side state rule (reEncryptSource). */
function openSource(ctx: KmsContext, request: ReEncryptRequest): Promise<Opened> {
  return open(
    ctx,
    request.ciphertextBlob,
    request.sourceEncryptionContext,
    request.sourceKeyId,
    "reEncryptSource",
    { blob: "ciphertextBlob", context: "sourceEncryptionContext", keyId: "sourceKeyId" },
  );
}

/** openSource for reEncryptWithRsa, answered as rsaDecrypt answers an RSA source. */
async function openSymmetricSource(
  ctx: KmsContext,
  request: ReEncryptRequest,
): Promise<{
  plaintext: Uint8Array;
  keyId: string;
  encryptionAlgorithm: EncryptionAlgorithm;
  keyMaterialId: string;
}> {
  assertAlgorithm("sourceEncryptionAlgorithm", request.sourceEncryptionAlgorithm);
  const opened = await openSource(ctx, request);
  return {
    plaintext: opened.plaintext,
    keyId: keyArn(ctx.identity, opened.key.keyId),
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
    keyMaterialId: opened.keyMaterialId,
  };
}

/**
 * ReEncrypt where either side is an RSA key (RSAES_OAEP_*), as AWS allows: the source is
 * decrypted and the destination encrypted through the same paths as decrypt and encrypt, and
 * the plaintext never leaves. RSA ciphertexts name no key, so an RSA source needs sourceKeyId.
 */
async function reEncryptWithRsa(
  ctx: KmsContext,
  request: ReEncryptRequest,
): Promise<ReEncryptResponse> {
  const rsaSource = isRsaEncryptionAlgorithm(request.sourceEncryptionAlgorithm);
  const source = rsaSource
    ? await rsaDecrypt(
        namedSourceContext(ctx),
        {
          ciphertextBlob: request.ciphertextBlob,
          ...(request.sourceKeyId !== undefined ? { keyId: request.sourceKeyId } : {}),
          ...(request.sourceEncryptionContext !== undefined
            ? { encryptionContext: request.sourceEncryptionContext }
            : {}),
          encryptionAlgorithm: request.sourceEncryptionAlgorithm!,
        },
        "reEncryptSource",
      )
    : await openSymmetricSource(ctx, request);
  try {
    const destinationRequest: EncryptRequest = {
      keyId: request.destinationKeyId,
      plaintext: source.plaintext,
      ...(request.destinationEncryptionContext !== undefined
        ? { encryptionContext: request.destinationEncryptionContext }
        : {}),
      ...(request.destinationEncryptionAlgorithm !== undefined
        ? { encryptionAlgorithm: request.destinationEncryptionAlgorithm }
        : {}),
    };
    const destinationMaterial: { keyMaterialId?: string } = {};
    const destination = await encrypt(ctx, destinationRequest, destinationMaterial);
    // Material ids of symmetric sides only, as AWS: RSA key material has none to report here.
    return {
      ciphertextBlob: destination.ciphertextBlob,
      sourceKeyId: source.keyId,
      keyId: destination.keyId,
      sourceEncryptionAlgorithm: source.encryptionAlgorithm,
      destinationEncryptionAlgorithm: destination.encryptionAlgorithm,
      ...(!rsaSource && source.keyMaterialId !== undefined
        ? { sourceKeyMaterialId: source.keyMaterialId }
        : {}),
      ...(destinationMaterial.keyMaterialId !== undefined
        ? { destinationKeyMaterialId: destinationMaterial.keyMaterialId }
        : {}),
    };
  } finally {
    source.plaintext.fill(0);
  }
}

/**
 * The context for a ReEncrypt source key that its ciphertext's header does not name, which
 * authorizes it for kms:ReEncryptFrom: an RSA source key, and a `sourceKeyId` naming another key
 * than a symmetric ciphertext's header. The call pipeline tells a reEncrypt's source key from its
 * destination by the key id a symmetric ciphertext carries; an RSA ciphertext carries none, so
 * it would ask the source key for kms:ReEncryptTo, and a principal allowed only to re-encrypt
 * *to* an RSA key could move that key's ciphertexts under a key of its own and decrypt them there.
 */
function namedSourceContext(ctx: KmsContext): KmsContext {
  const call = ctx.call;
  if (call === undefined || ctx.authorize === undefined) return ctx;
  return {
    ...ctx,
    authorize: (key) => authorizeKey(call, ctx.store, key, RSA_REENCRYPT_SOURCE_ACTIONS),
  };
}

function dataKeyLength(request: GenerateDataKeyRequest): number {
  if ((request.keySpec === undefined) === (request.numberOfBytes === undefined)) {
    throw new ValidationError(`specify exactly one of "keySpec" and "numberOfBytes"`);
  }
  if (request.keySpec !== undefined) {
    return assertOneOf("keySpec", request.keySpec, ["AES_128", "AES_256"]) === "AES_128" ? 16 : 32;
  }
  return assertInteger("numberOfBytes", request.numberOfBytes, 1, 1024);
}

export async function generateDataKey(
  ctx: KmsContext,
  request: GenerateDataKeyRequest,
): Promise<GenerateDataKeyResponse> {
  return redactPlaintext<GenerateDataKeyResponse>(
    await newDataKey(ctx, request, "generateDataKey"),
  );
}

export async function generateDataKeyWithoutPlaintext(
  ctx: KmsContext,
  request: GenerateDataKeyRequest,
): Promise<GenerateDataKeyWithoutPlaintextResponse> {
  const { plaintext, ...sealed } = await newDataKey(
    ctx,
    request,
    "generateDataKeyWithoutPlaintext",
  );
  plaintext.fill(0);
  return sealed;
}

/**
 * A fresh data key, in plaintext and sealed under the request's KMS key. The plaintext is wiped
 * here if sealing fails; otherwise the caller returns it or wipes it.
 */
async function newDataKey(
  ctx: KmsContext,
  request: GenerateDataKeyRequest,
  operation: "generateDataKey" | "generateDataKeyWithoutPlaintext",
): Promise<GenerateDataKeyResponse> {
  assertObject("request", request);
  const length = dataKeyLength(request);
  const context = encodeEncryptionContext(request.encryptionContext);
  const key = await encryptionKey(ctx, request.keyId, operation);
  const plaintext = globalThis.crypto.getRandomValues(new Uint8Array(length));
  try {
    return {
      ciphertextBlob: seal(ctx, key, plaintext, context),
      plaintext,
      keyId: keyArn(ctx.identity, key.keyId),
      keyMaterialId: currentVersion(key).keyMaterialId,
    };
  } catch (error) {
    plaintext.fill(0);
    throw error;
  }
}

export async function generateRandom(
  request: GenerateRandomRequest,
): Promise<GenerateRandomResponse> {
  assertObject("request", request);
  const n = assertInteger("numberOfBytes", request.numberOfBytes, 1, 1024);
  return redactPlaintext<GenerateRandomResponse>({ plaintext: randomBytes(n) });
}
