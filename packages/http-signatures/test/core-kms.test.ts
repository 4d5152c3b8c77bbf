/**
 * The signers against the real in-process Kms of @kms/core (HMAC and asymmetric keys).
 */
import { createKms, DisabledError, type KeySpec, type KeyUsage, type Kms } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKmsPublicKeyVerifier,
  createKmsSigner,
  createKmsVerifier,
  type KmsSignatureApi,
  type SignatureAlgorithm,
} from "../src/index.ts";

const specs: [SignatureAlgorithm, KeySpec, KeyUsage][] = [
  ["hmac-sha256", "HMAC_256", "GENERATE_VERIFY_MAC"],
  ["ecdsa-p256-sha256", "ECC_NIST_P256", "SIGN_VERIFY"],
  ["ecdsa-p384-sha384", "ECC_NIST_P384", "SIGN_VERIFY"],
  ["ed25519", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY"],
  ["rsa-pss-sha512", "RSA_2048", "SIGN_VERIFY"],
  ["rsa-v1_5-sha256", "RSA_2048", "SIGN_VERIFY"],
];

let kms: Kms;
const keyIds = new Map<SignatureAlgorithm, string>();
const base = new TextEncoder().encode('"@method": POST\n"@signature-params": ("@method")');

beforeAll(async () => {
  kms = await createKms();
  for (const [alg, keySpec, keyUsage] of specs) {
    keyIds.set(alg, (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId);
  }
});
afterAll(() => kms.close());

describe.each(specs)("in-process Kms, %s", (algorithm) => {
  it("signs in the KMS; verifies through the KMS and with its public key", async () => {
    const api: KmsSignatureApi = kms;
    const keyId = keyIds.get(algorithm)!;
    const sig = await createKmsSigner({ kms: api, keyId, algorithm }).sign(base);
    const verifier = createKmsVerifier({ kms: api, keyId, algorithm });
    expect(await verifier.verify(base, sig)).toBe(true);
    const bad = Uint8Array.from(sig);
    bad[0]! ^= 0x40;
    expect(await verifier.verify(base, bad)).toBe(false);
    if (algorithm !== "hmac-sha256") {
      const local = await createKmsPublicKeyVerifier({ kms: api, keyId, algorithm });
      expect(await local.verify(base, sig)).toBe(true);
      expect(await local.verify(base, bad)).toBe(false);
    }
  });
});

it("a disabled key is an error, not a failed signature", async () => {
  const keyId = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata.keyId;
  const sig = await createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }).sign(base);
  await kms.disableKey({ keyId });
  await expect(
    createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" }).verify(base, sig),
  ).rejects.toBeInstanceOf(DisabledError);
});
