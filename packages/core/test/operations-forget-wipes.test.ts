/**
 * The asymmetric HSM caches raw private secrets for @noble (an ECDSA/Ed25519 scalar, an ML-DSA
 * expanded secret key). When a key is destroyed (forget) or its entry is evicted, those bytes
 * are wiped, not merely unreferenced.
 */
import { generateKeyPairSync, randomFillSync } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { AsymmetricHsm } from "../src/hsm/asymmetric.ts";
import { RootKeySource } from "../src/hsm/root-key.ts";
import { SoftwareHsm } from "../src/hsm/software-hsm.ts";
import { MemoryKeyStore } from "../src/keystore/memory-key-store.ts";

const seen = vi.hoisted(() => ({ secrets: [] as Uint8Array[] }));
vi.mock("@noble/curves/nist.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/curves/nist.js")>();
  const p256 = {
    ...real.p256,
    sign: (message: Uint8Array, secretKey: Uint8Array, options?: object) => {
      seen.secrets.push(secretKey);
      return real.p256.sign(message, secretKey, options as never);
    },
  };
  return { ...real, p256 };
});
vi.mock("@noble/post-quantum/ml-dsa.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/post-quantum/ml-dsa.js")>();
  const ml_dsa44 = {
    ...real.ml_dsa44,
    keygen: (seed?: Uint8Array) => {
      const pair = real.ml_dsa44.keygen(seed);
      seen.secrets.push(pair.secretKey);
      return pair;
    },
  };
  return { ...real, ml_dsa44 };
});

const KEY_ID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";

async function extension(): Promise<AsymmetricHsm> {
  const software = await SoftwareHsm.open(
    RootKeySource.fromBytes(randomFillSync(new Uint8Array(32))),
    new MemoryKeyStore(),
  );
  return new AsymmetricHsm(software);
}

describe("forget wipes the cached raw secrets of a destroyed key", () => {
  it("the ECDSA scalar used to sign a DIGEST", async () => {
    const hsm = await extension();
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const der = new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" }));
    const { wrappedMaterial } = hsm.importMaterial(KEY_ID, 1, "ECC_NIST_P256", der);
    seen.secrets.length = 0;
    const ref = { keyId: KEY_ID, version: 1, wrappedMaterial };
    hsm.sign(ref, "ECC_NIST_P256", "ECDSA_SHA_256", "DIGEST", new Uint8Array(32).fill(7));
    expect(seen.secrets).toHaveLength(1);
    const scalar = seen.secrets[0]!;
    expect(scalar.some((b) => b !== 0)).toBe(true);
    hsm.forget("another-key");
    expect(scalar.some((b) => b !== 0)).toBe(true);
    hsm.forget(KEY_ID);
    expect(scalar.every((b) => b === 0)).toBe(true);
    // The key can still be used after a forget that was not a destruction (a fresh unwrap).
    expect(
      hsm.sign(ref, "ECC_NIST_P256", "ECDSA_SHA_256", "DIGEST", new Uint8Array(32).fill(7)),
    ).toBeInstanceOf(Uint8Array);
  });

  it("the ML-DSA expanded secret key", async () => {
    const hsm = await extension();
    const seed = randomFillSync(new Uint8Array(32));
    const { wrappedMaterial } = hsm.importMaterial(KEY_ID, 1, "ML_DSA_44", seed);
    seen.secrets.length = 0;
    const ref = { keyId: KEY_ID, version: 1, wrappedMaterial };
    hsm.sign(ref, "ML_DSA_44", "ML_DSA_SHAKE_256", "EXTERNAL_MU", new Uint8Array(64).fill(1));
    expect(seen.secrets).toHaveLength(1);
    const secretKey = seen.secrets[0]!;
    expect(secretKey.some((b) => b !== 0)).toBe(true);
    hsm.forget(KEY_ID);
    expect(secretKey.every((b) => b === 0)).toBe(true);
  });
});
