/**
 * Golden keys v1 (keys-v1/, made once by scripts/make-golden-key-vectors.ts; never regenerate,
 * see README.md): one key of each non-symmetric family in a sealed store under a fixed test-only
 * root key, and what each key produced. Every release must still read these keys, verify or
 * decrypt every stored result, and reproduce the deterministic ones byte for byte. The material
 * is also read with nothing but docs/FORMAT.md §4 and §4.3 (node:crypto AES-GCM, DER prefixes
 * written out here, @noble for the ML-DSA key expansion), so the spec, not only the code, is
 * what these bytes are held to.
 */
import {
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  constants as nodeConstants,
  verify as nodeVerify,
  publicDecrypt,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  type EncryptionAlgorithm,
  InvalidCiphertextError,
  InvalidMacError,
  InvalidSignatureError,
  type KeySpec,
  type Kms,
  type MacAlgorithm,
  MemoryKeyStore,
  RootKeyError,
  type SigningAlgorithm,
  type StoredKey,
} from "../../src/index.ts";
import { type GoldenStore, loadGoldenSnapshot } from "../../src/testing/index.ts";

const DIR = new URL("./keys-v1/", import.meta.url);

function readGolden<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(name, DIR), "utf8"), (_key, value: unknown) =>
    typeof value === "object" && value !== null && "$base64" in value
      ? new Uint8Array(Buffer.from(String(value.$base64), "base64"))
      : value,
  ) as T;
}

interface GoldenSignature {
  readonly name: string;
  readonly keyId: string;
  readonly signingAlgorithm: SigningAlgorithm;
  readonly messageType: "RAW" | "DIGEST" | "EXTERNAL_MU";
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
  readonly deterministic: boolean;
}
interface GoldenOperations {
  readonly signatures: GoldenSignature[];
  readonly macs: {
    name: string;
    keyId: string;
    macAlgorithm: MacAlgorithm;
    message: Uint8Array;
    mac: Uint8Array;
  }[];
  readonly ciphertexts: {
    name: string;
    keyId: string;
    encryptionAlgorithm: EncryptionAlgorithm;
    ciphertextBlob: Uint8Array;
    plaintext: Uint8Array;
  }[];
  readonly sharedSecrets: {
    name: string;
    keyId: string;
    peerPublicKey: Uint8Array;
    peerPrivateKey: Uint8Array;
    sharedSecret: Uint8Array;
  }[];
}

const snapshot = readGolden<GoldenStore>("store.json");
const operations = readGolden<GoldenOperations>("operations.json");
const rootKey = new Uint8Array(
  Buffer.from(readFileSync(new URL("root-key.hex", DIR), "utf8").trim(), "hex"),
);

const hexOf = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const keyOf = (keyId: string): StoredKey => snapshot.keys.find((k) => k.keyId === keyId)!;
const specOf = (keyId: string): KeySpec => keyOf(keyId).keySpec;
const publicKeyOf = (keyId: string): Uint8Array => keyOf(keyId).versions[0]!.publicKey!;
const flipped = (bytes: Uint8Array, index = 0): Uint8Array => {
  const copy = Uint8Array.from(bytes);
  copy[index]! ^= 0x01;
  return copy;
};

/** FORMAT §4: unwraps with node:crypto alone (no code of the library). */
function unwrap(key: StoredKey): Uint8Array {
  const { version, wrappedMaterial: w } = key.versions[0]!;
  expect(w[0]).toBe(0x01);
  const rootKeyId = createHmac("sha256", rootKey).update("kms/root-key-id/v1").digest();
  expect(hexOf(w.subarray(1, 9))).toBe(hexOf(rootKeyId.subarray(0, 8)));
  const decipher = createDecipheriv("aes-256-gcm", rootKey, w.subarray(9, 21), {
    authTagLength: 16,
  });
  decipher.setAAD(Buffer.from(`kms/wrap/v1|${key.keyId}|${version}`, "utf8"));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return new Uint8Array(
    Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]),
  );
}

// FORMAT §4.3, written out: what precedes the private scalar in the PKCS#8 of each curve, what
// follows it before the uncompressed point, and what precedes that point in the SPKI.
const EC_LAYOUT: Partial<
  Record<KeySpec, { pkcs8: string; scalar: number; beforePoint: string; spki: string }>
> = {
  ECC_NIST_P256: {
    pkcs8: "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420",
    scalar: 32,
    beforePoint: "a14403420004",
    spki: "3059301306072a8648ce3d020106082a8648ce3d03010703420004",
  },
  ECC_NIST_P384: {
    pkcs8: "3081b6020100301006072a8648ce3d020106052b8104002204819e30819b0201010430",
    scalar: 48,
    beforePoint: "a16403620004",
    spki: "3076301006072a8648ce3d020106052b8104002203620004",
  },
  ECC_NIST_P521: {
    pkcs8: "3081ee020100301006072a8648ce3d020106052b810400230481d63081d30201010442",
    scalar: 66,
    beforePoint: "a181890381860004",
    spki: "30819b301006072a8648ce3d020106052b810400230381860004",
  },
  ECC_SECG_P256K1: {
    pkcs8: "308184020100301006072a8648ce3d020106052b8104000a046d306b0201010420",
    scalar: 32,
    beforePoint: "a14403420004",
    spki: "3056301006072a8648ce3d020106052b8104000a03420004",
  },
};
const HMAC_BYTES: Partial<Record<KeySpec, number>> = {
  HMAC_224: 28,
  HMAC_256: 32,
  HMAC_384: 48,
  HMAC_512: 64,
};
/** RFC 9881 SPKI up to the raw public key: id-ml-dsa-NN without parameters, BIT STRING, 0 unused bits. */
const ML_DSA: Partial<Record<KeySpec, { dsa: typeof ml_dsa65; spki: string }>> = {
  ML_DSA_44: { dsa: ml_dsa44, spki: "30820532300b06096086480165030403110382052100" },
  ML_DSA_65: { dsa: ml_dsa65, spki: "308207b2300b0609608648016503040312038207a100" },
  ML_DSA_87: { dsa: ml_dsa87, spki: "30820a32300b060960864801650304031303820a2100" },
};
const ED25519_PKCS8 = "302e020100300506032b657004220420";
const ED25519_SPKI = "302a300506032b6570032100";
const RSA_PKCS8 = "020100300d06092a864886f70d0101010500";

let kms: Kms;
beforeAll(async () => {
  const store = new MemoryKeyStore();
  await loadGoldenSnapshot(store, snapshot);
  // Sealed when written (FORMAT §4.1): no unsealedRecords option is needed, unlike v1.
  kms = await createKms({ store, rootKey });
});

describe("golden keys v1: the store", () => {
  it("holds one sealed, single-version key of each non-symmetric family", () => {
    expect(snapshot.format).toBe("kms-golden-store/v1");
    const specs = snapshot.keys.map((k) => k.keySpec).sort();
    for (const spec of [
      "RSA_2048",
      "ECC_NIST_P256",
      "ECC_NIST_P384",
      "ECC_NIST_P521",
      "ECC_SECG_P256K1",
      "ECC_NIST_EDWARDS25519",
      "HMAC_224",
      "HMAC_256",
      "HMAC_384",
      "HMAC_512",
      "ML_DSA_65",
    ] as const) {
      expect(specs).toContain(spec);
    }
    for (const key of snapshot.keys) {
      expect(key.versions).toHaveLength(1);
      expect(key.seal).toMatch(/^s1\.[0-9a-f]{16}\.1\.[A-Za-z0-9_-]{43}$/);
    }
  });

  it("a different root key is refused", async () => {
    const store = new MemoryKeyStore();
    await loadGoldenSnapshot(store, snapshot);
    await expect(createKms({ store, rootKey: new Uint8Array(32).fill(7) })).rejects.toThrow(
      RootKeyError,
    );
  });
});

describe("golden keys v1: FORMAT §4.3, read with nothing but the spec", () => {
  it.each(snapshot.keys.map((k) => [`${k.keySpec} ${k.keyUsage}`, k] as const))(
    "%s",
    (_name, key) => {
      const material = unwrap(key);
      const { wrappedMaterial, publicKey } = key.versions[0]!;
      // §4: 1 + 8 + 12 header and IV, the material encrypted in place, a 16-byte tag.
      expect(wrappedMaterial.length).toBe(material.length + 37);
      const spec = key.keySpec;
      const ec = EC_LAYOUT[spec];
      const mlDsa = ML_DSA[spec];
      if (HMAC_BYTES[spec] !== undefined) {
        expect(material.length).toBe(HMAC_BYTES[spec]);
        expect(publicKey).toBeUndefined();
      } else if (mlDsa !== undefined) {
        // The 32-byte seed ξ of FIPS 204 ML-DSA.KeyGen_internal; the public key is derived.
        expect(material.length).toBe(32);
        const { publicKey: raw } = mlDsa.dsa.keygen(material);
        expect(hexOf(publicKey!)).toBe(mlDsa.spki + hexOf(raw));
      } else if (spec === "ECC_NIST_EDWARDS25519") {
        expect(material.length).toBe(48);
        expect(hexOf(material.subarray(0, 16))).toBe(ED25519_PKCS8);
        expect(hexOf(publicKey!).startsWith(ED25519_SPKI)).toBe(true);
        expect(publicKey!.length).toBe(44);
      } else if (ec !== undefined) {
        const prefix = ec.pkcs8.length / 2;
        expect(hexOf(material.subarray(0, prefix))).toBe(ec.pkcs8);
        const afterScalar = material.subarray(prefix + ec.scalar);
        expect(hexOf(afterScalar).startsWith(ec.beforePoint)).toBe(true);
        const point = afterScalar.subarray(ec.beforePoint.length / 2 - 1);
        expect(hexOf(publicKey!)).toBe(ec.spki.slice(0, -2) + hexOf(point));
        // The scalar is the private key of that point.
        const jwk = createPrivateKey({
          key: Buffer.from(material),
          format: "der",
          type: "pkcs8",
        }).export({ format: "jwk" });
        expect(hexOf(Buffer.from(jwk.d!, "base64url"))).toBe(
          hexOf(material.subarray(prefix, prefix + ec.scalar)),
        );
      } else if (spec === "RSA_2048") {
        // PrivateKeyInfo { version 0, rsaEncryption NULL, OCTET STRING { RSAPrivateKey } }.
        expect(hexOf(material.subarray(0, 2))).toBe("3082");
        expect(hexOf(material.subarray(4, 4 + RSA_PKCS8.length / 2))).toBe(RSA_PKCS8);
        const inner = material.subarray(4 + RSA_PKCS8.length / 2 + 4);
        // RSAPrivateKey version 0 (two primes), then n of 2048 bits, then e = 65537.
        expect(hexOf(inner.subarray(4, 12))).toBe("0201000282010100");
        expect(hexOf(inner.subarray(12 + 256, 12 + 256 + 5))).toBe("0203010001");
        expect(hexOf(publicKey!.subarray(0, 24))).toBe(
          "30820122300d06092a864886f70d01010105000382010f00",
        );
      } else {
        throw new Error(`no §4.3 expectation for ${spec}`);
      }
      if (publicKey !== undefined && mlDsa === undefined) {
        // The stored SPKI is the one the private key implies (OpenSSL, not the library).
        const derived = createPublicKey(
          createPrivateKey({ key: Buffer.from(material), format: "der", type: "pkcs8" }),
        ).export({ format: "der", type: "spki" });
        expect(hexOf(derived)).toBe(hexOf(publicKey));
      }
    },
  );
});

describe("golden keys v1: signatures", () => {
  it("cover every signing family, deterministic schemes included", () => {
    const specs = new Set(operations.signatures.map((s) => specOf(s.keyId)));
    for (const spec of [
      "RSA_2048",
      "ECC_NIST_P256",
      "ECC_NIST_P521",
      "ECC_SECG_P256K1",
      "ECC_NIST_EDWARDS25519",
      "ML_DSA_65",
    ] as const) {
      expect(specs).toContain(spec);
    }
    expect(operations.signatures.filter((s) => s.deterministic).length).toBeGreaterThanOrEqual(6);
  });

  it.each(operations.signatures.map((s) => [`${specOf(s.keyId)} ${s.name}`, s] as const))(
    "%s",
    async (_name, s) => {
      const request = {
        keyId: s.keyId,
        signingAlgorithm: s.signingAlgorithm,
        messageType: s.messageType,
        message: s.message,
      };
      await expect(kms.verify({ ...request, signature: s.signature })).resolves.toMatchObject({
        signatureValid: true,
      });
      await expect(
        kms.verify({ ...request, message: flipped(s.message), signature: s.signature }),
      ).rejects.toBeInstanceOf(InvalidSignatureError);
      await expect(
        kms.verify({ ...request, signature: flipped(s.signature, s.signature.length - 1) }),
      ).rejects.toBeInstanceOf(InvalidSignatureError);
      if (s.deterministic) {
        const { signature } = await kms.sign(request);
        expect(hexOf(signature)).toBe(hexOf(s.signature));
      }
    },
  );

  it("RAW signatures verify with node:crypto or @noble and the stored public key alone", () => {
    for (const s of operations.signatures) {
      const spki = publicKeyOf(s.keyId);
      const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
      const hash = /SHA_(256|384|512)$/.exec(s.signingAlgorithm)?.[1];
      const spec = specOf(s.keyId);
      let valid: boolean;
      if (spec === "ML_DSA_65") {
        const raw = spki.subarray(spki.length - ml_dsa65.lengths.publicKey!);
        valid =
          s.messageType === "EXTERNAL_MU"
            ? ml_dsa65.internal.verify(s.signature, s.message, raw, { externalMu: true })
            : ml_dsa65.verify(s.signature, s.message, raw);
      } else if (s.signingAlgorithm === "ED25519_PH_SHA_512") {
        continue; // Ed25519ph over a given digest: node has no such call (checked above).
      } else if (s.signingAlgorithm === "ED25519_SHA_512") {
        valid = nodeVerify(null, s.message, key, s.signature);
      } else if (s.signingAlgorithm.startsWith("RSASSA_PKCS1") && s.messageType === "DIGEST") {
        const recovered = publicDecrypt(
          { key, padding: nodeConstants.RSA_PKCS1_PADDING },
          s.signature,
        );
        valid = hexOf(recovered).endsWith(hexOf(s.message));
      } else if (s.messageType === "DIGEST") {
        continue; // ECDSA over a given digest: node has no such call (checked above).
      } else {
        valid = nodeVerify(
          `sha${hash}`,
          s.message,
          s.signingAlgorithm.startsWith("RSASSA_PSS")
            ? {
                key,
                padding: nodeConstants.RSA_PKCS1_PSS_PADDING,
                saltLength: Number(hash) / 8,
              }
            : s.signingAlgorithm.startsWith("RSASSA_PKCS1")
              ? { key, padding: nodeConstants.RSA_PKCS1_PADDING }
              : { key, dsaEncoding: "der" },
          s.signature,
        );
      }
      expect({ name: s.name, spec, valid }).toEqual({ name: s.name, spec, valid: true });
    }
  });
});

describe("golden keys v1: MACs", () => {
  it.each(operations.macs.map((m) => [m.name, m] as const))("%s", async (_name, m) => {
    const request = { keyId: m.keyId, macAlgorithm: m.macAlgorithm, message: m.message };
    const { mac } = await kms.generateMac(request);
    expect(hexOf(mac)).toBe(hexOf(m.mac));
    await expect(kms.verifyMac({ ...request, mac: m.mac })).resolves.toMatchObject({
      macValid: true,
    });
    await expect(
      kms.verifyMac({ ...request, message: flipped(m.message), mac: m.mac }),
    ).rejects.toBeInstanceOf(InvalidMacError);
    // FORMAT §4.3: the unwrapped bytes are the HMAC key itself.
    const hash = `sha${m.macAlgorithm.slice(-3)}`;
    const material = unwrap(keyOf(m.keyId));
    expect(createHmac(hash, material).update(m.message).digest("hex")).toBe(hexOf(m.mac));
  });
});

describe("golden keys v1: RSA ciphertexts", () => {
  it.each(operations.ciphertexts.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const request = {
      keyId: c.keyId,
      ciphertextBlob: c.ciphertextBlob,
      encryptionAlgorithm: c.encryptionAlgorithm,
    };
    const { plaintext } = await kms.decrypt(request);
    expect(hexOf(plaintext)).toBe(hexOf(c.plaintext));
    await expect(
      kms.decrypt({ ...request, ciphertextBlob: flipped(c.ciphertextBlob, 17) }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});

describe("golden keys v1: ECDH shared secrets", () => {
  it.each(operations.sharedSecrets.map((s) => [s.name, s] as const))("%s", async (_name, s) => {
    const { sharedSecret } = await kms.deriveSharedSecret({
      keyId: s.keyId,
      keyAgreementAlgorithm: "ECDH",
      publicKey: s.peerPublicKey,
    });
    expect(hexOf(sharedSecret)).toBe(hexOf(s.sharedSecret));
    // From the peer's side, with the golden key's stored public key.
    const fromPeer = diffieHellman({
      privateKey: createPrivateKey({
        key: Buffer.from(s.peerPrivateKey),
        format: "der",
        type: "pkcs8",
      }),
      publicKey: createPublicKey({
        key: Buffer.from(publicKeyOf(s.keyId)),
        format: "der",
        type: "spki",
      }),
    });
    expect(hexOf(fromPeer)).toBe(hexOf(s.sharedSecret));
  });
});

describe("golden keys v1: public keys", () => {
  it("getPublicKey returns the stored SPKI of every asymmetric key", async () => {
    for (const key of snapshot.keys) {
      const stored = key.versions[0]!.publicKey;
      if (stored === undefined) continue;
      const { publicKey } = await kms.getPublicKey({ keyId: key.keyId });
      expect(hexOf(publicKey)).toBe(hexOf(stored));
    }
  });

  it("an ML-DSA EXTERNAL_MU signature is over μ of the empty context", () => {
    const s = operations.signatures.find((x) => x.messageType === "EXTERNAL_MU")!;
    const spki = publicKeyOf(s.keyId);
    const raw = spki.subarray(spki.length - ml_dsa65.lengths.publicKey!);
    const tr = createHash("shake256", { outputLength: 64 }).update(raw).digest();
    const text = new TextEncoder().encode("golden keys v1: ML_DSA_65 EXTERNAL_MU");
    const mu = createHash("shake256", { outputLength: 64 })
      .update(Buffer.concat([tr, Uint8Array.of(0, 0), text]))
      .digest();
    expect(hexOf(mu)).toBe(hexOf(s.message));
  });
});
