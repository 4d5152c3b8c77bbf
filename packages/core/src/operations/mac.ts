import { keyArn } from "../arn.ts";
import { InvalidKeyUsageError, InvalidMacError } from "../errors.ts";
import { asymmetricHsm } from "../hsm/asymmetric.ts";
import { assertBytes, assertObject, assertOneOf } from "../internal/assert.ts";
import { currentVersion, type KmsContext, loadKey } from "../internal/key-access.ts";
import { KEY_SPEC_TABLE, MAC_HASH } from "../key-specs.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import type {
  GenerateMacRequest,
  GenerateMacResponse,
  MacAlgorithm,
  VerifyMacRequest,
  VerifyMacResponse,
} from "../types.ts";
import { assertKeyUsage, materialRef } from "./asymmetric.ts";

/** AWS's limit for the Message parameter of GenerateMac and VerifyMac. */
export const MAX_MAC_MESSAGE_BYTES = 4096;

const MAC_ALGORITHMS = Object.keys(MAC_HASH) as MacAlgorithm[];

async function macKey(
  ctx: KmsContext,
  request: GenerateMacRequest,
  operation: KeyStateOperation,
): Promise<{ key: StoredKey; message: Uint8Array; algorithm: MacAlgorithm }> {
  assertObject("request", request);
  const message = assertBytes("message", request.message, 1, MAX_MAC_MESSAGE_BYTES);
  const algorithm = assertOneOf("macAlgorithm", request.macAlgorithm, MAC_ALGORITHMS);
  const key = await loadKey(ctx, request.keyId, operation);
  assertKeyUsage(ctx, key, "GENERATE_VERIFY_MAC", operation);
  if (!KEY_SPEC_TABLE[key.keySpec].macAlgorithms.includes(algorithm)) {
    throw new InvalidKeyUsageError(
      `macAlgorithm ${algorithm} is not valid for ${keyArn(ctx.identity, key.keyId)} (${key.keySpec}); use ${KEY_SPEC_TABLE[key.keySpec].macAlgorithms.join(", ")}`,
    );
  }
  return { key, message, algorithm };
}

/**
 * HMAC of a message (RFC 2104) under an HMAC key.
 * @throws ValidationException, InvalidKeyUsageException, NotFoundException, DisabledException,
 *   KMSInvalidStateException.
 */
export async function generateMac(
  ctx: KmsContext,
  request: GenerateMacRequest,
): Promise<GenerateMacResponse> {
  const { key, message, algorithm } = await macKey(ctx, request, "generateMac");
  const mac = asymmetricHsm(ctx.hsm).generateMac(
    materialRef(key, currentVersion(key)),
    key.keySpec,
    MAC_HASH[algorithm],
    message,
  );
  return { keyId: keyArn(ctx.identity, key.keyId), mac, macAlgorithm: algorithm };
}

/**
 * Recomputes the HMAC and compares it in constant time.
 * @throws KMSInvalidMacException on a mismatch, and as generateMac.
 */
export async function verifyMac(
  ctx: KmsContext,
  request: VerifyMacRequest,
): Promise<VerifyMacResponse> {
  const { key, message, algorithm } = await macKey(ctx, request, "verifyMac");
  // AWS's bound for the parameter: a longer MAC than the algorithm makes is a mismatch
  // (KMSInvalidMacException), not invalid input.
  const mac = assertBytes("mac", request.mac, 1, 6144);
  const valid = asymmetricHsm(ctx.hsm).verifyMac(
    materialRef(key, currentVersion(key)),
    key.keySpec,
    MAC_HASH[algorithm],
    message,
    mac,
  );
  if (!valid) throw new InvalidMacError("the MAC is not valid for this message");
  return { keyId: keyArn(ctx.identity, key.keyId), macValid: true, macAlgorithm: algorithm };
}
