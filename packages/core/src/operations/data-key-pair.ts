import { keyArn } from "../arn.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { generateDerKeyPair } from "../hsm/asymmetric.ts";
import { assertObject, assertOneOf } from "../internal/assert.ts";
import { currentVersion, type KmsContext } from "../internal/key-access.ts";
import { redactingInspect } from "../internal/redacted.ts";
import { DATA_KEY_PAIR_SPECS } from "../key-specs.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type {
  GenerateDataKeyPairRequest,
  GenerateDataKeyPairResponse,
  GenerateDataKeyPairWithoutPlaintextResponse,
} from "../types.ts";
import { encryptionKey, seal } from "./symmetric.ts";

/**
 * The private key prints redacted (see internal/redacted.ts). The WithoutPlaintext result is a
 * spread of this one, which leaves the non-enumerable inspector behind with the private key.
 */
const redactPrivateKey = redactingInspect("privateKeyPlaintext");

async function dataKeyPair(
  ctx: KmsContext,
  request: GenerateDataKeyPairRequest,
  operation: KeyStateOperation,
): Promise<GenerateDataKeyPairResponse> {
  assertObject("request", request);
  const keyPairSpec = assertOneOf("keyPairSpec", request.keyPairSpec, DATA_KEY_PAIR_SPECS);
  const context = encodeEncryptionContext(request.encryptionContext);
  // The wrapping key is checked before generating, so a bad key costs no RSA key generation.
  const key = await encryptionKey(ctx, request.keyId, operation);
  const pair = await generateDerKeyPair(keyPairSpec);
  let privateKeyCiphertextBlob: Uint8Array;
  try {
    // The same envelope as encrypt(): decrypt() with the same context returns the PKCS#8 DER.
    privateKeyCiphertextBlob = seal(ctx, key, pair.privateKey, context);
  } catch (error) {
    // Nobody receives the private key: it must not stay behind in the heap.
    pair.privateKey.fill(0);
    throw error;
  }
  return redactPrivateKey<GenerateDataKeyPairResponse>({
    privateKeyCiphertextBlob,
    privateKeyPlaintext: pair.privateKey,
    publicKey: pair.publicKey,
    keyId: keyArn(ctx.identity, key.keyId),
    keyPairSpec,
    keyMaterialId: currentVersion(key).keyMaterialId,
  });
}

/**
 * A fresh key pair whose private key (PKCS#8 DER) is returned in plaintext and encrypted under
 * a symmetric KMS key, bound to the encryption context.
 * @throws ValidationException, InvalidKeyUsageException (not a symmetric encryption key),
 *   NotFoundException, DisabledException, KMSInvalidStateException.
 */
export function generateDataKeyPair(
  ctx: KmsContext,
  request: GenerateDataKeyPairRequest,
): Promise<GenerateDataKeyPairResponse> {
  return dataKeyPair(ctx, request, "generateDataKeyPair");
}

/** As generateDataKeyPair, without the plaintext private key. @throws as generateDataKeyPair. */
export async function generateDataKeyPairWithoutPlaintext(
  ctx: KmsContext,
  request: GenerateDataKeyPairRequest,
): Promise<GenerateDataKeyPairWithoutPlaintextResponse> {
  const { privateKeyPlaintext, ...rest } = await dataKeyPair(
    ctx,
    request,
    "generateDataKeyPairWithoutPlaintext",
  );
  privateKeyPlaintext.fill(0);
  return rest;
}
