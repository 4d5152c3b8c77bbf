/**
 * HMAC, RSA-OAEP, data key pairs, ECDH and ML-DSA through the Kms, checked against OpenSSL or an
 * independent implementation, and every refusal AWS specifies.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  verify as nodeVerify,
  randomBytes,
} from "node:crypto";
import { shake256 } from "@noble/hashes/sha3.js";
import { ml_dsa44 } from "@noble/post-quantum/ml-dsa.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mlDsaSpki } from "../../src/hsm/asymmetric.ts";
import {
  DisabledError,
  InvalidCiphertextError,
  InvalidKeyUsageError,
  InvalidMacError,
  InvalidSignatureError,
  InvalidStateError,
  type KeySpec,
  type KeyUsage,
  UnsupportedOperationError,
  ValidationError,
} from "../../src/index.ts";
import { type ImportingKms, importingKms, openssl, Scratch, utf8 } from "./harness.ts";

let h: ImportingKms;
const scratch = new Scratch();
beforeAll(async () => {
  h = await importingKms();
});
afterAll(() => scratch.dispose());

async function create(keySpec: KeySpec, keyUsage: KeyUsage): Promise<string> {
  return (await h.kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
}

describe("createKey spec/usage rules", () => {
  const allowed: [KeySpec, KeyUsage[]][] = [
    ["SYMMETRIC_DEFAULT", ["ENCRYPT_DECRYPT"]],
    ["RSA_2048", ["ENCRYPT_DECRYPT", "SIGN_VERIFY"]],
    ["ECC_NIST_P256", ["SIGN_VERIFY", "KEY_AGREEMENT"]],
    ["ECC_NIST_P384", ["SIGN_VERIFY", "KEY_AGREEMENT"]],
    ["ECC_NIST_P521", ["SIGN_VERIFY", "KEY_AGREEMENT"]],
    ["ECC_SECG_P256K1", ["SIGN_VERIFY"]],
    ["ECC_NIST_EDWARDS25519", ["SIGN_VERIFY"]],
    ["HMAC_224", ["GENERATE_VERIFY_MAC"]],
    ["HMAC_512", ["GENERATE_VERIFY_MAC"]],
    ["ML_DSA_44", ["SIGN_VERIFY"]],
  ];
  const usages: KeyUsage[] = [
    "ENCRYPT_DECRYPT",
    "SIGN_VERIFY",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
  ];
  const rows = allowed.flatMap(([spec, ok]) =>
    usages.map((u) => [spec, u, ok.includes(u)] as const),
  );
  it.each(rows)("%s with %s allowed=%s", async (spec, usage, ok) => {
    const attempt = h.kms.createKey({ keySpec: spec, keyUsage: usage });
    if (ok) {
      const { keyMetadata } = await attempt;
      expect(keyMetadata).toMatchObject({ keySpec: spec, keyUsage: usage });
    } else {
      const error = await attempt.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toContain(spec);
      expect((error as Error).message).toContain(usage);
    }
  });

  it("defaults keyUsage to ENCRYPT_DECRYPT, so an ECC spec alone is refused as AWS does", async () => {
    await expect(h.kms.createKey({ keySpec: "ECC_NIST_P256" })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  it("describeKey lists the algorithms per spec and usage as AWS does", async () => {
    const describe = async (spec: KeySpec, usage: KeyUsage) =>
      (await h.kms.describeKey({ keyId: await create(spec, usage) })).keyMetadata;
    const rsaSign = await describe("RSA_3072", "SIGN_VERIFY");
    expect(rsaSign.signingAlgorithms).toEqual([
      "RSASSA_PSS_SHA_256",
      "RSASSA_PSS_SHA_384",
      "RSASSA_PSS_SHA_512",
      "RSASSA_PKCS1_V1_5_SHA_256",
      "RSASSA_PKCS1_V1_5_SHA_384",
      "RSASSA_PKCS1_V1_5_SHA_512",
    ]);
    expect(rsaSign.encryptionAlgorithms).toBeUndefined();
    expect((await describe("RSA_2048", "ENCRYPT_DECRYPT")).encryptionAlgorithms).toEqual([
      "RSAES_OAEP_SHA_1",
      "RSAES_OAEP_SHA_256",
    ]);
    expect((await describe("ECC_NIST_P384", "SIGN_VERIFY")).signingAlgorithms).toEqual([
      "ECDSA_SHA_384",
    ]);
    expect((await describe("ECC_NIST_P521", "KEY_AGREEMENT")).keyAgreementAlgorithms).toEqual([
      "ECDH",
    ]);
    expect((await describe("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")).signingAlgorithms).toEqual([
      "ED25519_SHA_512",
      "ED25519_PH_SHA_512",
    ]);
    expect((await describe("HMAC_384", "GENERATE_VERIFY_MAC")).macAlgorithms).toEqual([
      "HMAC_SHA_384",
    ]);
    expect((await describe("ML_DSA_87", "SIGN_VERIFY")).signingAlgorithms).toEqual([
      "ML_DSA_SHAKE_256",
    ]);
    expect((await describe("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")).encryptionAlgorithms).toEqual([
      "SYMMETRIC_DEFAULT",
    ]);
  });

  it("getPublicKey returns the DER SPKI with spec, usage and algorithms; none for symmetric or HMAC keys", async () => {
    const keyId = await create("ECC_SECG_P256K1", "SIGN_VERIFY");
    const response = await h.kms.getPublicKey({ keyId });
    const parsed = createPublicKey({
      key: Buffer.from(response.publicKey),
      format: "der",
      type: "spki",
    });
    expect(parsed.asymmetricKeyDetails?.namedCurve).toBe("secp256k1");
    expect(response).toMatchObject({
      keySpec: "ECC_SECG_P256K1",
      customerMasterKeySpec: "ECC_SECG_P256K1",
      keyUsage: "SIGN_VERIFY",
      signingAlgorithms: ["ECDSA_SHA_256"],
    });
    for (const [spec, usage] of [
      ["SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"],
      ["HMAC_256", "GENERATE_VERIFY_MAC"],
    ] as const) {
      await expect(h.kms.getPublicKey({ keyId: await create(spec, usage) })).rejects.toBeInstanceOf(
        UnsupportedOperationError,
      );
    }
  });

  it("automatic and on-demand rotation stay symmetric-only (UnsupportedOperationException)", async () => {
    for (const [spec, usage] of [
      ["RSA_2048", "SIGN_VERIFY"],
      ["HMAC_256", "GENERATE_VERIFY_MAC"],
      ["ML_DSA_44", "SIGN_VERIFY"],
    ] as const) {
      const keyId = await create(spec, usage);
      await expect(h.kms.enableKeyRotation({ keyId })).rejects.toBeInstanceOf(
        UnsupportedOperationError,
      );
      await expect(h.kms.rotateKeyOnDemand({ keyId })).rejects.toBeInstanceOf(
        UnsupportedOperationError,
      );
      await expect(h.kms.getKeyRotationStatus({ keyId })).rejects.toBeInstanceOf(
        UnsupportedOperationError,
      );
    }
  });
});

describe("generateMac / verifyMac", () => {
  it.each([
    ["HMAC_224", "HMAC_SHA_224", "SHA224", 28],
    ["HMAC_256", "HMAC_SHA_256", "SHA256", 32],
    ["HMAC_384", "HMAC_SHA_384", "SHA384", 48],
    ["HMAC_512", "HMAC_SHA_512", "SHA512", 64],
  ] as const)(
    "%s: KMS MAC equals OpenSSL's with the same imported key",
    async (spec, algorithm, digest, size) => {
      const key = randomBytes(size);
      const keyId = await h.importKey(spec, "GENERATE_VERIFY_MAC", key);
      const message = randomBytes(4096);
      const { mac, macAlgorithm } = await h.kms.generateMac({
        keyId,
        message,
        macAlgorithm: algorithm,
      });
      expect(macAlgorithm).toBe(algorithm);
      const expected = openssl([
        "mac",
        "-digest",
        digest,
        "-macopt",
        `hexkey:${key.toString("hex")}`,
        "-in",
        scratch.write(message),
        "HMAC",
      ])
        .toString()
        .trim()
        .toLowerCase();
      expect(Buffer.from(mac).toString("hex")).toBe(expected);
    },
  );

  it("refuses mismatches, other algorithms, other usages and oversize messages", async () => {
    const keyId = await create("HMAC_256", "GENERATE_VERIFY_MAC");
    const message = utf8("payload");
    const { mac } = await h.kms.generateMac({ keyId, message, macAlgorithm: "HMAC_SHA_256" });
    await expect(
      h.kms.verifyMac({ keyId, message: utf8("payloaD"), macAlgorithm: "HMAC_SHA_256", mac }),
    ).rejects.toBeInstanceOf(InvalidMacError);
    await expect(
      h.kms.verifyMac({ keyId, message, macAlgorithm: "HMAC_SHA_256", mac: mac.subarray(0, 16) }),
    ).rejects.toBeInstanceOf(InvalidMacError);
    // Up to AWS's 6144-byte bound a MAC of another length is a mismatch, not invalid input.
    for (const length of [65, 6144]) {
      const long = new Uint8Array(length);
      long.set(mac);
      await expect(
        h.kms.verifyMac({ keyId, message, macAlgorithm: "HMAC_SHA_256", mac: long }),
      ).rejects.toBeInstanceOf(InvalidMacError);
    }
    await expect(
      h.kms.verifyMac({ keyId, message, macAlgorithm: "HMAC_SHA_256", mac: new Uint8Array(6145) }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.generateMac({ keyId, message, macAlgorithm: "HMAC_SHA_512" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(
      h.kms.generateMac({ keyId, message: new Uint8Array(4097), macAlgorithm: "HMAC_SHA_256" }),
    ).rejects.toBeInstanceOf(ValidationError);
    const signing = await create("ECC_NIST_P256", "SIGN_VERIFY");
    await expect(
      h.kms.generateMac({ keyId: signing, message, macAlgorithm: "HMAC_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(h.kms.encrypt({ keyId, plaintext: message })).rejects.toBeInstanceOf(
      InvalidKeyUsageError,
    );
    await expect(
      h.kms.sign({ keyId, message, signingAlgorithm: "ECDSA_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
  });
});

describe("sign / verify refusals", () => {
  it("refuses the wrong usage, the wrong algorithm, oversize messages and bad digest lengths", async () => {
    const rsaEncrypt = await create("RSA_2048", "ENCRYPT_DECRYPT");
    const ec = await create("ECC_NIST_P256", "SIGN_VERIFY");
    const message = utf8("m");
    await expect(
      h.kms.sign({ keyId: rsaEncrypt, message, signingAlgorithm: "RSASSA_PSS_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(
      h.kms.sign({ keyId: ec, message, signingAlgorithm: "ECDSA_SHA_384" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(
      h.kms.sign({ keyId: ec, message, signingAlgorithm: "RSASSA_PSS_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(
      h.kms.sign({ keyId: ec, message: new Uint8Array(4097), signingAlgorithm: "ECDSA_SHA_256" }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.sign({ keyId: ec, message: new Uint8Array(4096), signingAlgorithm: "ECDSA_SHA_256" }),
    ).resolves.toBeDefined();
    await expect(
      h.kms.sign({
        keyId: ec,
        message: new Uint8Array(31),
        messageType: "DIGEST",
        signingAlgorithm: "ECDSA_SHA_256",
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.sign({
        keyId: ec,
        message: new Uint8Array(64),
        messageType: "EXTERNAL_MU",
        signingAlgorithm: "ECDSA_SHA_256",
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    const ed = await create("ECC_NIST_EDWARDS25519", "SIGN_VERIFY");
    await expect(
      h.kms.sign({
        keyId: ed,
        message: new Uint8Array(64),
        messageType: "DIGEST",
        signingAlgorithm: "ED25519_SHA_512",
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.sign({ keyId: ed, message, signingAlgorithm: "ED25519_PH_SHA_512" }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.sign({ keyId: ec, message, signingAlgorithm: "NOPE" as never }),
    ).rejects.toBeInstanceOf(ValidationError);
    const symmetric = (await h.kms.createKey()).keyMetadata.keyId;
    await expect(
      h.kms.sign({ keyId: symmetric, message, signingAlgorithm: "ECDSA_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
  });

  it("refuses disabled and pending-deletion keys for every new operation", async () => {
    const ec = await create("ECC_NIST_P256", "SIGN_VERIFY");
    const mac = await create("HMAC_256", "GENERATE_VERIFY_MAC");
    const message = utf8("m");
    const { signature } = await h.kms.sign({
      keyId: ec,
      message,
      signingAlgorithm: "ECDSA_SHA_256",
    });
    const calls = [
      () => h.kms.sign({ keyId: ec, message, signingAlgorithm: "ECDSA_SHA_256" }),
      () => h.kms.verify({ keyId: ec, message, signingAlgorithm: "ECDSA_SHA_256", signature }),
      () => h.kms.getPublicKey({ keyId: ec }),
      () => h.kms.generateMac({ keyId: mac, message, macAlgorithm: "HMAC_SHA_256" }),
      () =>
        h.kms.verifyMac({
          keyId: mac,
          message,
          macAlgorithm: "HMAC_SHA_256",
          mac: new Uint8Array(32),
        }),
    ];
    for (const keyId of [ec, mac]) await h.kms.disableKey({ keyId });
    for (const call of calls) await expect(call()).rejects.toBeInstanceOf(DisabledError);
    for (const keyId of [ec, mac]) {
      await h.kms.enableKey({ keyId });
      await h.kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    }
    for (const call of calls) await expect(call()).rejects.toBeInstanceOf(InvalidStateError);
  });
});

describe("RSA-OAEP encrypt / decrypt", () => {
  const pem = scratch.path(".pem");
  let keyId: string;
  beforeAll(async () => {
    openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem]);
    const der = scratch.path(".der");
    openssl(["pkcs8", "-topk8", "-nocrypt", "-in", pem, "-outform", "DER", "-out", der]);
    keyId = await h.importKey("RSA_2048", "ENCRYPT_DECRYPT", scratch.read(der));
  });

  it.each([
    ["RSAES_OAEP_SHA_1", "sha1", 214],
    ["RSAES_OAEP_SHA_256", "sha256", 190],
  ] as const)(
    "%s: OpenSSL decrypts the KMS ciphertext, the KMS decrypts OpenSSL's, limit %i bytes",
    async (algorithm, hash, limit) => {
      const plaintext = randomBytes(limit);
      const { ciphertextBlob, encryptionAlgorithm } = await h.kms.encrypt({
        keyId,
        plaintext,
        encryptionAlgorithm: algorithm,
      });
      expect(encryptionAlgorithm).toBe(algorithm);
      expect(ciphertextBlob.length).toBe(256);
      const oaep = [
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        `rsa_oaep_md:${hash}`,
        "-pkeyopt",
        `rsa_mgf1_md:${hash}`,
      ];
      const opened = openssl([
        "pkeyutl",
        "-decrypt",
        "-inkey",
        pem,
        "-in",
        scratch.write(ciphertextBlob),
        ...oaep,
      ]);
      expect(Buffer.compare(opened, plaintext)).toBe(0);
      const foreign = openssl([
        "pkeyutl",
        "-encrypt",
        "-inkey",
        pem,
        "-in",
        scratch.write(plaintext),
        ...oaep,
      ]);
      const decrypted = await h.kms.decrypt({
        keyId,
        ciphertextBlob: new Uint8Array(foreign),
        encryptionAlgorithm: algorithm,
      });
      expect(Buffer.compare(decrypted.plaintext, plaintext)).toBe(0);
      await expect(
        h.kms.encrypt({ keyId, plaintext: randomBytes(limit + 1), encryptionAlgorithm: algorithm }),
      ).rejects.toBeInstanceOf(ValidationError);
      const tampered = ciphertextBlob.slice();
      tampered[10]! ^= 1;
      await expect(
        h.kms.decrypt({ keyId, ciphertextBlob: tampered, encryptionAlgorithm: algorithm }),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
      const other = algorithm === "RSAES_OAEP_SHA_1" ? "RSAES_OAEP_SHA_256" : "RSAES_OAEP_SHA_1";
      await expect(
        h.kms.decrypt({ keyId, ciphertextBlob, encryptionAlgorithm: other }),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
    },
  );

  it("applies AWS's per-size limits and refuses keys, contexts and missing key ids AWS refuses", async () => {
    const big = await create("RSA_4096", "ENCRYPT_DECRYPT");
    await expect(
      h.kms.encrypt({
        keyId: big,
        plaintext: randomBytes(446),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
    ).resolves.toBeDefined();
    await expect(
      h.kms.encrypt({
        keyId: big,
        plaintext: randomBytes(447),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(h.kms.encrypt({ keyId, plaintext: utf8("x") })).rejects.toBeInstanceOf(
      InvalidKeyUsageError,
    );
    await expect(
      h.kms.encrypt({
        keyId,
        plaintext: utf8("x"),
        encryptionAlgorithm: "RSAES_OAEP_SHA_1",
        encryptionContext: { a: "b" },
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    const { ciphertextBlob } = await h.kms.encrypt({
      keyId,
      plaintext: utf8("x"),
      encryptionAlgorithm: "RSAES_OAEP_SHA_1",
    });
    await expect(
      h.kms.decrypt({ ciphertextBlob, encryptionAlgorithm: "RSAES_OAEP_SHA_1" }),
    ).rejects.toBeInstanceOf(ValidationError);
    const signing = await create("RSA_2048", "SIGN_VERIFY");
    await expect(
      h.kms.encrypt({
        keyId: signing,
        plaintext: utf8("x"),
        encryptionAlgorithm: "RSAES_OAEP_SHA_1",
      }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    const symmetric = (await h.kms.createKey()).keyMetadata.keyId;
    await expect(
      h.kms.encrypt({
        keyId: symmetric,
        plaintext: utf8("x"),
        encryptionAlgorithm: "RSAES_OAEP_SHA_1",
      }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    const mac = await create("HMAC_256", "GENERATE_VERIFY_MAC");
    await expect(
      h.kms.encrypt({
        keyId: mac,
        plaintext: utf8("x"),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
  });
});

describe("generateDataKeyPair", () => {
  it.each([
    "RSA_2048",
    "ECC_NIST_P256",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
  ] as const)(
    "%s: PKCS#8 private key, matching public key, and a blob decrypt() opens with the context",
    async (keyPairSpec) => {
      const keyId = (await h.kms.createKey()).keyMetadata.keyId;
      const encryptionContext = { purpose: "signing", tenant: "acme" };
      const pair = await h.kms.generateDataKeyPair({ keyId, keyPairSpec, encryptionContext });
      expect(pair.keyPairSpec).toBe(keyPairSpec);
      const privateKey = createPrivateKey({
        key: Buffer.from(pair.privateKeyPlaintext),
        format: "der",
        type: "pkcs8",
      });
      const derived = createPublicKey(privateKey).export({ format: "der", type: "spki" });
      expect(Buffer.compare(derived, pair.publicKey)).toBe(0);
      const opened = await h.kms.decrypt({
        ciphertextBlob: pair.privateKeyCiphertextBlob,
        encryptionContext,
      });
      expect(Buffer.compare(opened.plaintext, pair.privateKeyPlaintext)).toBe(0);
      await expect(
        h.kms.decrypt({
          ciphertextBlob: pair.privateKeyCiphertextBlob,
          encryptionContext: { tenant: "other" },
        }),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);

      const bare = await h.kms.generateDataKeyPairWithoutPlaintext({
        keyId,
        keyPairSpec,
        encryptionContext,
      });
      expect(bare).not.toHaveProperty("privateKeyPlaintext");
      const openedBare = await h.kms.decrypt({
        ciphertextBlob: bare.privateKeyCiphertextBlob,
        encryptionContext,
      });
      const bareKey = createPrivateKey({
        key: Buffer.from(openedBare.plaintext),
        format: "der",
        type: "pkcs8",
      });
      expect(
        Buffer.compare(
          createPublicKey(bareKey).export({ format: "der", type: "spki" }),
          bare.publicKey,
        ),
      ).toBe(0);
    },
  );

  it("needs a symmetric encryption key and a known key pair spec", async () => {
    const rsa = await create("RSA_2048", "ENCRYPT_DECRYPT");
    await expect(
      h.kms.generateDataKeyPair({ keyId: rsa, keyPairSpec: "ECC_NIST_P256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    const keyId = (await h.kms.createKey()).keyMetadata.keyId;
    await expect(
      h.kms.generateDataKeyPair({ keyId, keyPairSpec: "HMAC_256" as never }),
    ).rejects.toBeInstanceOf(ValidationError);
    await h.kms.disableKey({ keyId });
    await expect(
      h.kms.generateDataKeyPairWithoutPlaintext({ keyId, keyPairSpec: "ECC_NIST_P256" }),
    ).rejects.toBeInstanceOf(DisabledError);
  });
});

describe("deriveSharedSecret", () => {
  it.each([
    ["ECC_NIST_P256", "P-256"],
    ["ECC_NIST_P384", "P-384"],
    ["ECC_NIST_P521", "P-521"],
  ] as const)("%s: equals the peer's own ECDH result", async (spec, curve) => {
    const keyId = await create(spec, "KEY_AGREEMENT");
    const kmsPublic = createPublicKey({
      key: Buffer.from((await h.kms.getPublicKey({ keyId })).publicKey),
      format: "der",
      type: "spki",
    });
    const peer = generateKeyPairSync("ec", { namedCurve: curve });
    const peerDer = new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" }));
    const { sharedSecret, keyAgreementAlgorithm, keyOrigin } = await h.kms.deriveSharedSecret({
      keyId,
      keyAgreementAlgorithm: "ECDH",
      publicKey: peerDer,
    });
    expect({ keyAgreementAlgorithm, keyOrigin }).toEqual({
      keyAgreementAlgorithm: "ECDH",
      keyOrigin: "AWS_KMS",
    });
    expect(
      Buffer.compare(
        sharedSecret,
        diffieHellman({ privateKey: peer.privateKey, publicKey: kmsPublic }),
      ),
    ).toBe(0);
  });

  it("refuses other curves, malformed keys and keys without KEY_AGREEMENT", async () => {
    const keyId = await create("ECC_NIST_P256", "KEY_AGREEMENT");
    const p384 = new Uint8Array(
      generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
    );
    await expect(
      h.kms.deriveSharedSecret({ keyId, keyAgreementAlgorithm: "ECDH", publicKey: p384 }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      h.kms.deriveSharedSecret({
        keyId,
        keyAgreementAlgorithm: "ECDH",
        publicKey: utf8("not a key"),
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    const signing = await create("ECC_NIST_P256", "SIGN_VERIFY");
    const p256 = new Uint8Array(
      generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
    );
    await expect(
      h.kms.deriveSharedSecret({ keyId: signing, keyAgreementAlgorithm: "ECDH", publicKey: p256 }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    await expect(
      h.kms.sign({ keyId, message: utf8("m"), signingAlgorithm: "ECDSA_SHA_256" }),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
  });
});

describe("ML-DSA", () => {
  it.each(["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"] as const)(
    "%s: round trip, node:crypto (OpenSSL 3.5) verifies, tampering rejected",
    async (spec) => {
      const keyId = await create(spec, "SIGN_VERIFY");
      const { publicKey } = await h.kms.getPublicKey({ keyId });
      const message = randomBytes(4096);
      const { signature } = await h.kms.sign({
        keyId,
        message,
        signingAlgorithm: "ML_DSA_SHAKE_256",
      });
      await expect(
        h.kms.verify({ keyId, message, signingAlgorithm: "ML_DSA_SHAKE_256", signature }),
      ).resolves.toMatchObject({ signatureValid: true });
      const spki = createPublicKey({ key: Buffer.from(publicKey), format: "der", type: "spki" });
      expect(spki.asymmetricKeyType).toBe(spec.toLowerCase().replaceAll("_", "-"));
      expect(nodeVerify(null, message, spki, signature)).toBe(true);
      const tampered = signature.slice();
      tampered[100]! ^= 1;
      await expect(
        h.kms.verify({ keyId, message, signingAlgorithm: "ML_DSA_SHAKE_256", signature: tampered }),
      ).rejects.toBeInstanceOf(InvalidSignatureError);
      await expect(
        h.kms.sign({
          keyId,
          message: new Uint8Array(32),
          messageType: "DIGEST",
          signingAlgorithm: "ML_DSA_SHAKE_256",
        }),
      ).rejects.toBeInstanceOf(ValidationError);
    },
  );

  it("EXTERNAL_MU: a signature over μ = SHAKE256(SHAKE256(pk, 64) ‖ 0 ‖ 0 ‖ M) verifies as a RAW signature of M", async () => {
    const seed = randomBytes(32);
    const keyId = await h.importKey("ML_DSA_44", "SIGN_VERIFY", seed);
    const { publicKey } = await h.kms.getPublicKey({ keyId });
    // Our SPKI encoder agrees with OpenSSL's for the same seed.
    const nodeKey = createPrivateKey({
      key: seed,
      format: "raw-seed",
      asymmetricKeyType: "ml-dsa-44",
    } as never);
    expect(
      Buffer.compare(createPublicKey(nodeKey).export({ format: "der", type: "spki" }), publicKey),
    ).toBe(0);
    expect(Buffer.compare(mlDsaSpki("ml-dsa-44", ml_dsa44.keygen(seed).publicKey), publicKey)).toBe(
      0,
    );
    const raw = publicKey.subarray(publicKey.length - 1312);
    const message = utf8("external mu");
    const tr = shake256(raw, { dkLen: 64 });
    const mu = shake256(Buffer.concat([tr, Uint8Array.of(0, 0), message]), { dkLen: 64 });
    const { signature } = await h.kms.sign({
      keyId,
      message: mu,
      messageType: "EXTERNAL_MU",
      signingAlgorithm: "ML_DSA_SHAKE_256",
    });
    await expect(
      h.kms.verify({ keyId, message, signingAlgorithm: "ML_DSA_SHAKE_256", signature }),
    ).resolves.toMatchObject({ signatureValid: true });
    await expect(
      h.kms.verify({
        keyId,
        message: mu,
        messageType: "EXTERNAL_MU",
        signingAlgorithm: "ML_DSA_SHAKE_256",
        signature,
      }),
    ).resolves.toMatchObject({ signatureValid: true });
    mu[0]! ^= 1;
    await expect(
      h.kms.verify({
        keyId,
        message: mu,
        messageType: "EXTERNAL_MU",
        signingAlgorithm: "ML_DSA_SHAKE_256",
        signature,
      }),
    ).rejects.toBeInstanceOf(InvalidSignatureError);
    await expect(
      h.kms.sign({
        keyId,
        message: new Uint8Array(63),
        messageType: "EXTERNAL_MU",
        signingAlgorithm: "ML_DSA_SHAKE_256",
      }),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

it("a digest signed by the KMS verifies with the raw message under node:crypto (same hash, once)", async () => {
  const keyId = await create("RSA_2048", "SIGN_VERIFY");
  const message = utf8("hash once");
  const { signature } = await h.kms.sign({
    keyId,
    message: createHash("sha512").update(message).digest(),
    messageType: "DIGEST",
    signingAlgorithm: "RSASSA_PKCS1_V1_5_SHA_512",
  });
  const spki = createPublicKey({
    key: Buffer.from((await h.kms.getPublicKey({ keyId })).publicKey),
    format: "der",
    type: "spki",
  });
  expect(nodeVerify("sha512", message, spki, signature)).toBe(true);
});
