/**
 * Private material in the asymmetric HSM, found in review: node:crypto takes keys as Buffers,
 * and `Buffer.from(bytes)` copies small inputs into Node's shared allocation pool, where nothing
 * wiped them. Every later small Buffer of the process is carved from that same memory.
 */
import { generateKeyPairSync, type KeyObject, randomFillSync } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AsymmetricHsm } from "../../src/hsm/asymmetric.ts";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { MemoryKeyStore } from "../../src/keystore/memory-key-store.ts";
import type { KeySpec } from "../../src/types.ts";

const KEY_ID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";
const message = new TextEncoder().encode("sign me");

/** The memory of Node's current Buffer pool. */
function currentPool(): Buffer {
  const probe = Buffer.allocUnsafe(1);
  return Buffer.from(probe.buffer);
}

/** Whether the pool holds `secret`; the needle is a view, since a copy would land in the pool. */
function poolHolds(secret: Uint8Array): boolean {
  return currentPool().includes(Buffer.from(secret.buffer, secret.byteOffset, secret.length));
}

async function hsm(): Promise<SoftwareHsm> {
  return SoftwareHsm.open(
    RootKeySource.fromBytes(randomFillSync(new Uint8Array(32))),
    new MemoryKeyStore(),
  );
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("no copy of private material is left in Node's Buffer pool", () => {
  const cases: readonly [
    string,
    KeySpec,
    () => Uint8Array,
    "ECDSA_SHA_256" | "ML_DSA_SHAKE_256",
  ][] = [
    [
      "PKCS#8 of an ECC key, parsed on first use",
      "ECC_NIST_P256",
      () =>
        new Uint8Array(
          generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({
            format: "der",
            type: "pkcs8",
          }),
        ),
      "ECDSA_SHA_256",
    ],
    [
      "the seed of an ML-DSA key, parsed on first use",
      "ML_DSA_44",
      () => randomFillSync(new Uint8Array(32)),
      "ML_DSA_SHAKE_256",
    ],
  ];

  for (const [name, spec, material, algorithm] of cases) {
    it(name, async () => {
      const software = await hsm();
      for (let round = 0; round < 20; round++) {
        const secret = material();
        const wrapped = new AsymmetricHsm(software).importMaterial(
          KEY_ID,
          round + 1,
          spec,
          Uint8Array.from(secret),
        );
        expect(poolHolds(secret), `import, round ${round}`).toBe(false);
        // A fresh extension, as after a restart: the material is unwrapped and parsed again.
        new AsymmetricHsm(software).sign(
          { keyId: KEY_ID, version: round + 1, wrappedMaterial: wrapped.wrappedMaterial },
          spec,
          algorithm,
          "RAW",
          message,
        );
        expect(poolHolds(secret), `sign, round ${round}`).toBe(false);
      }
    });
  }
});

describe("the private scalar handed to @noble/curves", () => {
  const cases: readonly [string, KeySpec, "ECDSA_SHA_256" | "ED25519_PH_SHA_512", number][] = [
    ["ECDSA over a given digest", "ECC_NIST_P256", "ECDSA_SHA_256", 32],
    ["Ed25519ph", "ECC_NIST_EDWARDS25519", "ED25519_PH_SHA_512", 64],
  ];
  for (const [name, spec, algorithm, digestLength] of cases) {
    it(`${name}: decoded from the key's JWK, is not left in the pool`, async () => {
      const software = await hsm();
      for (let round = 0; round < 10; round++) {
        const pair =
          spec === "ECC_NIST_P256"
            ? generateKeyPairSync("ec", { namedCurve: "prime256v1" })
            : generateKeyPairSync("ed25519");
        const der = new Uint8Array(pair.privateKey.export({ format: "der", type: "pkcs8" }));
        const d = pair.privateKey.export({ format: "jwk" }).d!;
        const scalar = Uint8Array.from(atob(d.replaceAll("-", "+").replaceAll("_", "/")), (c) =>
          c.charCodeAt(0),
        );
        const extension = new AsymmetricHsm(software);
        const { wrappedMaterial } = extension.importMaterial(KEY_ID, round + 1, spec, der);
        extension.sign(
          { keyId: KEY_ID, version: round + 1, wrappedMaterial },
          spec,
          algorithm,
          "DIGEST",
          randomFillSync(new Uint8Array(digestLength)),
        );
        expect(poolHolds(scalar), `round ${round}`).toBe(false);
      }
    });
  }
});

describe("a generated key pair's exported private key", () => {
  it("is wiped once it is copied", async () => {
    const exported: Buffer[] = [];
    const probe = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
    let proto: object | null = probe;
    while (proto !== null && !Object.hasOwn(proto, "export")) proto = Object.getPrototypeOf(proto);
    const target = proto as { export: KeyObject["export"] };
    const original = target.export;
    vi.spyOn(target, "export").mockImplementation(function (this: KeyObject, options) {
      const out = original.call(this, options as never);
      if (Buffer.isBuffer(out) && this.type === "private") exported.push(out);
      return out;
    } as KeyObject["export"]);

    const software = await hsm();
    const wrapped = await new AsymmetricHsm(software).generate(KEY_ID, 1, "ECC_NIST_P256");
    expect(wrapped.wrappedMaterial.length).toBeGreaterThan(0);
    expect(exported.length).toBeGreaterThan(0);
    for (const der of exported) expect(der.every((b) => b === 0)).toBe(true);
  });
});
