/**
 * ML-DSA on a Node whose OpenSSL has no ML-DSA (Node 22, the oldest the package supports, and
 * Node 24 before 24.7): @noble/post-quantum signs and verifies alone. node:crypto is made to
 * answer as such a Node does: a raw-seed import and an ML-DSA SubjectPublicKeyInfo are
 * "unsupported" decoder errors. Signing, verifying (RAW and EXTERNAL_MU) and refusing a bad
 * signature must all work there as on a Node with native ML-DSA.
 */
import { describe, expect, it, vi } from "vitest";
import { createKms, InvalidSignatureError, type KeySpec } from "../../src/index.ts";
import { utf8 } from "./harness.ts";

const seen = vi.hoisted(() => ({ refusals: 0 }));

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const unsupported = (): Error => {
    seen.refusals++;
    return Object.assign(new Error("error:1E08010C:DECODER routines::unsupported"), {
      code: "ERR_OSSL_UNSUPPORTED",
    });
  };
  const createPrivateKey = ((options: Parameters<typeof real.createPrivateKey>[0]) => {
    if ((options as { format?: string }).format === "raw-seed") throw unsupported();
    return real.createPrivateKey(options);
  }) as typeof real.createPrivateKey;
  const createPublicKey = ((options: Parameters<typeof real.createPublicKey>[0]) => {
    const key = real.createPublicKey(options);
    if (key.asymmetricKeyType?.startsWith("ml-dsa")) throw unsupported();
    return key;
  }) as typeof real.createPublicKey;
  const overrides = { createPrivateKey, createPublicKey };
  return { ...real, ...overrides, default: { ...real, ...overrides } };
});

const SPECS: KeySpec[] = ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"];

describe("ML-DSA without native node:crypto support (noble fallback)", () => {
  it.each(SPECS)(
    "%s: sign, verify, and a tampered signature is InvalidSignatureError",
    async (keySpec) => {
      const kms = await createKms();
      const { keyId } = (await kms.createKey({ keySpec, keyUsage: "SIGN_VERIFY" })).keyMetadata;
      const message = utf8("post-quantum on an older Node");
      const signingAlgorithm = "ML_DSA_SHAKE_256" as const;
      const { signature } = await kms.sign({ keyId, message, signingAlgorithm });
      await expect(
        kms.verify({ keyId, message, signature, signingAlgorithm }),
      ).resolves.toMatchObject({
        signatureValid: true,
      });
      const tampered = signature.slice();
      tampered[10]! ^= 1;
      await expect(
        kms.verify({ keyId, message, signature: tampered, signingAlgorithm }),
      ).rejects.toBeInstanceOf(InvalidSignatureError);
      // The public key is still served, from the stored SPKI.
      const { publicKey } = await kms.getPublicKey({ keyId });
      expect(publicKey.length).toBeGreaterThan(1000);
    },
  );

  it("EXTERNAL_MU verifies too", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey({ keySpec: "ML_DSA_44", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata;
    const mu = new Uint8Array(64).fill(7);
    const request = {
      keyId,
      message: mu,
      messageType: "EXTERNAL_MU",
      signingAlgorithm: "ML_DSA_SHAKE_256",
    } as const;
    const { signature } = await kms.sign(request);
    await expect(kms.verify({ ...request, signature })).resolves.toMatchObject({
      signatureValid: true,
    });
  });

  it("the stand-in refused what an older Node refuses (the fallback was exercised)", () => {
    expect(seen.refusals).toBeGreaterThan(0);
  });
});
