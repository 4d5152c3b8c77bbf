/**
 * GenerateDataKeyPair makes the private key before sealing it: when sealing fails, no caller
 * receives the key, so the DER bytes must be wiped rather than left for the garbage collector.
 */
import { describe, expect, it, vi } from "vitest";

const made = vi.hoisted(() => ({ privateKeys: [] as Uint8Array[], failSeal: false }));
vi.mock("../src/hsm/asymmetric.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../src/hsm/asymmetric.ts")>();
  return {
    ...real,
    generateDerKeyPair: async (...args: Parameters<typeof real.generateDerKeyPair>) => {
      const pair = await real.generateDerKeyPair(...args);
      made.privateKeys.push(pair.privateKey);
      return pair;
    },
  };
});
vi.mock("../src/operations/symmetric.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../src/operations/symmetric.ts")>();
  return {
    ...real,
    seal: (...args: Parameters<typeof real.seal>) => {
      if (made.failSeal) throw new Error("sealing failed");
      return real.seal(...args);
    },
  };
});

const { createKms, KmsInternalError } = await import("../src/index.ts");

describe("generateDataKeyPair when sealing the private key fails", () => {
  it("wipes the private key it made and passes the failure on", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    made.failSeal = true;
    await expect(
      kms.generateDataKeyPair({ keyId, keyPairSpec: "ECC_NIST_P256" }),
    ).rejects.toBeInstanceOf(KmsInternalError);
    expect(made.privateKeys).toHaveLength(1);
    expect(made.privateKeys[0]!.length).toBeGreaterThan(0);
    expect(made.privateKeys[0]!.every((b) => b === 0)).toBe(true);

    made.failSeal = false;
    const ok = await kms.generateDataKeyPair({ keyId, keyPairSpec: "ECC_NIST_P256" });
    expect(ok.privateKeyPlaintext.some((b) => b !== 0)).toBe(true);
  });
});
