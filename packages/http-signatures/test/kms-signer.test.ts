import { generateKeyPairSync, sign, verify } from "node:crypto";
import { NotFoundError, ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  createKmsPublicKeyVerifier,
  createKmsSigner,
  createKmsVerifier,
  type SignatureAlgorithm,
  signMessage,
  verifyMessage,
} from "../src/index.ts";
import { derToRaw, rawToDer } from "../src/internal/ecdsa-der.ts";
import { FakeKms } from "./fake-kms.ts";

const kms = new FakeKms();
kms.addHmacKey("hmac");
kms.addKeyPair("p256", "ec-p256");
kms.addKeyPair("p384", "ec-p384");
kms.addKeyPair("ed", "ed25519");
kms.addKeyPair("rsa", "rsa");

const cases: [SignatureAlgorithm, string][] = [
  ["hmac-sha256", "hmac"],
  ["ecdsa-p256-sha256", "p256"],
  ["ecdsa-p384-sha384", "p384"],
  ["ed25519", "ed"],
  ["rsa-pss-sha512", "rsa"],
  ["rsa-v1_5-sha256", "rsa"],
];
const base = new TextEncoder().encode('"@method": GET');

describe("KMS-backed signers", () => {
  describe.each(cases)("%s", (algorithm, keyId) => {
    it("signs through the KMS and verifies through the KMS", async () => {
      const signer = createKmsSigner({ kms, keyId, algorithm });
      const verifier = createKmsVerifier({ kms, keyId, algorithm });
      const sig = await signer.sign(base);
      expect(await verifier.verify(base, sig)).toBe(true);
      const bad = Uint8Array.from(sig);
      bad[bad.length - 1]! ^= 1;
      expect(await verifier.verify(base, bad)).toBe(false);
      expect(await verifier.verify(new TextEncoder().encode("other"), sig)).toBe(false);
    });

    // HMAC keys have no public key to verify with.
    if (algorithm !== "hmac-sha256") {
      it("verifies locally with the KMS public key", async () => {
        const sig = await createKmsSigner({ kms, keyId, algorithm }).sign(base);
        const local = await createKmsPublicKeyVerifier({ kms, keyId, algorithm });
        expect(await local.verify(base, sig)).toBe(true);
        expect(await local.verify(base, sig.subarray(1))).toBe(false);
      });
    }
  });

  it("emits ECDSA in RFC 9421's raw r||s form", async () => {
    expect(
      (await createKmsSigner({ kms, keyId: "p256", algorithm: "ecdsa-p256-sha256" }).sign(base))
        .length,
    ).toBe(64);
    expect(
      (await createKmsSigner({ kms, keyId: "p384", algorithm: "ecdsa-p384-sha384" }).sign(base))
        .length,
    ).toBe(96);
  });

  it("lets KMS errors other than a mismatch propagate", async () => {
    const verifier = createKmsVerifier({ kms, keyId: "missing", algorithm: "hmac-sha256" });
    await expect(verifier.verify(base, new Uint8Array(32))).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      createKmsSigner({ kms, keyId: "missing", algorithm: "ed25519" }).sign(base),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  it("rejects bad options", () => {
    expect(() => createKmsSigner({ kms, keyId: "", algorithm: "ed25519" })).toThrow(
      ValidationError,
    );
    expect(() => createKmsSigner({ kms, keyId: "x", algorithm: "rsa-sha1" as never })).toThrow(
      ValidationError,
    );
  });

  it("signs and verifies whole messages with KMS keys", async () => {
    const message = { method: "GET", url: "https://api.test/a?b=1", headers: {} };
    const fields = await signMessage(message, {
      signer: createKmsSigner({ kms, keyId: "p256", algorithm: "ecdsa-p256-sha256" }),
      components: ["@method", "@target-uri"],
    });
    const result = await verifyMessage(
      {
        ...message,
        headers: { "signature-input": fields.signatureInput, signature: fields.signature },
      },
      {
        keyLookup: (id) =>
          id === "p256"
            ? createKmsVerifier({ kms, keyId: id, algorithm: "ecdsa-p256-sha256" })
            : undefined,
      },
    );
    expect(result.ok).toBe(true);
  });
});

describe("ECDSA DER ↔ raw", () => {
  it.each([
    ["P-256", 32],
    ["P-384", 48],
  ] as const)("round-trips node's signatures on %s", (curve, size) => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
    const hash = size === 32 ? "sha256" : "sha384";
    for (let i = 0; i < 20; i++) {
      const der = sign(hash, base, { key: privateKey, dsaEncoding: "der" });
      const raw = derToRaw(der, size);
      expect(verify(hash, base, { key: publicKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
      expect(Buffer.from(rawToDer(raw, size))).toEqual(der);
    }
  });

  it.each([
    ["empty", []],
    ["not a sequence", [0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]],
    ["length mismatch", [0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]],
    ["negative integer", [0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01]],
    ["non-minimal integer", [0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01]],
    ["trailing bytes", [0x30, 0x08, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x05, 0x00]],
  ])("rejects malformed DER: %s", (_name, bytes) => {
    expect(() => derToRaw(Uint8Array.from(bytes), 32)).toThrow(ValidationError);
  });

  it("rejects an oversized integer and a wrong raw length", () => {
    const big = [0x30, 0x26, 0x02, 0x21, 0x01, ...new Array(32).fill(1), 0x02, 0x01, 0x01];
    expect(() => derToRaw(Uint8Array.from(big), 32)).toThrow(ValidationError);
    expect(() => rawToDer(new Uint8Array(63), 32)).toThrow(ValidationError);
  });
});
