/**
 * RSA known answers through the KMS's own sign, verify and decrypt, with the keys the vectors
 * give (sources in each vectors/rsa-*.json): NIST CAVP SigVer15 for PKCS #1 v1.5, whose
 * signatures are deterministic, so the KMS must reproduce each valid one byte for byte;
 * Wycheproof RSASSA-PSS and RSAES-OAEP; the PKCS #1 v2.1 OAEP examples (SHA-1). The other RSA
 * suites compare node:crypto with the OpenSSL CLI, which is the same library; these do not.
 */
import {
  constants,
  createHash,
  createPublicKey,
  verify as nodeVerify,
  publicEncrypt,
} from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type EncryptionAlgorithm,
  InvalidCiphertextError,
  InvalidSignatureError,
  type KeySpec,
  type SigningAlgorithm,
  ValidationError,
} from "../../src/index.ts";
import { hex, type ImportingKms, importingKms, utf8 } from "./harness.ts";
import {
  type PublicKeyVerifier,
  publicKeyVerifier,
  readVectors,
  rsaPkcs8,
  rsaSpki,
} from "./known-answer-keys.ts";

interface RsaKeyVector {
  readonly n: string;
  readonly e: string;
  readonly d: string;
  readonly p: string;
  readonly q: string;
}

interface SigVer15 {
  readonly keys: (RsaKeyVector & { readonly id: string; readonly keySpec: KeySpec })[];
  readonly tests: {
    readonly key: string;
    readonly signingAlgorithm: SigningAlgorithm;
    readonly msg: string;
    readonly signature: string;
    readonly valid: boolean;
    readonly result: string;
    /** Present when the case changes the public exponent ("Public Key e changed"). */
    readonly e?: string;
  }[];
}

interface WycheproofCase {
  readonly tcId: number;
  readonly comment: string;
  readonly flags: string[];
  readonly msg: string;
  readonly result: "valid" | "invalid" | "acceptable";
}

interface OaepVectors {
  readonly privateKeyPkcs8: string;
  readonly tests: (WycheproofCase & { readonly ct: string; readonly label: string })[];
}

interface PssVectors {
  readonly publicKeyDer: string;
  readonly tests: (WycheproofCase & { readonly sig: string })[];
}

interface OaepExample10 {
  readonly key: RsaKeyVector;
  readonly tests: { readonly msg: string; readonly seed: string; readonly ct: string }[];
}

const sigver15 = readVectors<SigVer15>("rsa-pkcs1-v1_5-cavp-sigver15.json");
const oaep = readVectors<OaepVectors>("rsa-oaep-wycheproof-2048-sha256.json");
const pss = readVectors<PssVectors>("rsa-pss-wycheproof-2048-sha256.json");
const example10 = readVectors<OaepExample10>("rsa-oaep-sha1-pkcs1-example10.json");

const HASH_OF: Readonly<Record<string, string>> = {
  RSASSA_PKCS1_V1_5_SHA_256: "sha256",
  RSASSA_PKCS1_V1_5_SHA_384: "sha384",
  RSASSA_PKCS1_V1_5_SHA_512: "sha512",
};

const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const flipLast = (bytes: Uint8Array): Uint8Array => {
  const copy = new Uint8Array(bytes);
  copy[copy.length - 1]! ^= 1;
  return copy;
};

let h: ImportingKms;
let verifyWithPublicKey: PublicKeyVerifier;
const pkcs1Keys = new Map<string, string>();
let oaepKeyId: string;
let pssKeyId: string;
beforeAll(async () => {
  h = await importingKms();
  verifyWithPublicKey = await publicKeyVerifier();
  for (const key of sigver15.keys) {
    pkcs1Keys.set(key.id, await h.importKey(key.keySpec, "SIGN_VERIFY", rsaPkcs8(key)));
  }
  // Wycheproof uses one 2048-bit key for its OAEP and its PSS files (checked below).
  oaepKeyId = await h.importKey("RSA_2048", "ENCRYPT_DECRYPT", hex(oaep.privateKeyPkcs8));
  pssKeyId = await h.importKey("RSA_2048", "SIGN_VERIFY", hex(oaep.privateKeyPkcs8));
}, 60_000);

describe("RSASSA-PKCS1-v1_5: NIST CAVP SigVer15", () => {
  const rows = sigver15.tests.map(
    (t) => [`${t.key} ${t.signingAlgorithm.slice(-7)} ${t.result}`, t] as const,
  );

  it.each(rows)("%s", async (_name, t) => {
    const key = sigver15.keys.find((k) => k.id === t.key)!;
    const keyId = pkcs1Keys.get(t.key)!;
    const message = hex(t.msg);
    const digest = createHash(HASH_OF[t.signingAlgorithm]!).update(message).digest();
    const signature = hex(t.signature);
    const raw = { keyId, message, signingAlgorithm: t.signingAlgorithm } as const;
    const ofDigest = { ...raw, message: digest, messageType: "DIGEST" } as const;

    if (t.valid) {
      // PKCS #1 v1.5 is deterministic: the KMS's own signature must be the published one, over
      // the message (node:crypto) and over its digest (the KMS's DigestInfo + type-1 padding).
      expect(toHex((await h.kms.sign(raw)).signature)).toBe(t.signature.toLowerCase());
      expect(toHex((await h.kms.sign(ofDigest)).signature)).toBe(t.signature.toLowerCase());
      await expect(h.kms.verify({ ...raw, signature })).resolves.toMatchObject({
        signatureValid: true,
      });
      await expect(h.kms.verify({ ...ofDigest, signature })).resolves.toMatchObject({
        signatureValid: true,
      });
      await expect(h.kms.verify({ ...raw, signature: flipLast(signature) })).rejects.toBeInstanceOf(
        InvalidSignatureError,
      );
      return;
    }
    if (t.e !== undefined) {
      // The signature belongs to the group's key; the case pairs it with another exponent.
      const spki = rsaSpki(key.n, t.e);
      for (const messageType of ["RAW", "DIGEST"] as const) {
        const input = messageType === "RAW" ? message : digest;
        expect(
          verifyWithPublicKey(key.keySpec, spki, t.signingAlgorithm, messageType, input, signature),
        ).toBe(false);
      }
      return;
    }
    await expect(h.kms.verify({ ...raw, signature })).rejects.toBeInstanceOf(InvalidSignatureError);
    await expect(h.kms.verify({ ...ofDigest, signature })).rejects.toBeInstanceOf(
      InvalidSignatureError,
    );
  });

  it("covers every failure kind of the CAVP file for each hash", () => {
    const kinds = new Set(sigver15.tests.map((t) => t.result.replace(/\s*\(.*$/, "")));
    expect([...kinds].sort()).toEqual([
      "1 - Message changed",
      "2 - Public Key e changed",
      "3 - Signature changed",
      "4 - Format of the EM is incorrect - hash moved to left",
      "5 - Format of the EM is incorrect - 00 on end of pad removed",
      "valid",
    ]);
  });
});

describe("RSASSA-PSS (SHA-256, 32-byte salt): Wycheproof", () => {
  it("the vectors' public key is the imported OAEP key's", async () => {
    const { publicKey } = await h.kms.getPublicKey({ keyId: pssKeyId });
    expect(toHex(publicKey)).toBe(pss.publicKeyDer);
  });

  const rows = pss.tests.map((t) => [`tcId ${t.tcId} ${t.result}: ${t.comment}`, t] as const);
  it.each(rows)("%s", async (_name, t) => {
    const request = {
      keyId: pssKeyId,
      message: hex(t.msg),
      signingAlgorithm: "RSASSA_PSS_SHA_256",
      signature: hex(t.sig),
    } as const;
    if (t.result === "valid") {
      await expect(h.kms.verify(request)).resolves.toMatchObject({ signatureValid: true });
      await expect(
        h.kms.verify({ ...request, signature: flipLast(request.signature) }),
      ).rejects.toBeInstanceOf(InvalidSignatureError);
    } else if (t.sig === "") {
      // An empty signature never reaches the primitive: the request itself is malformed.
      await expect(h.kms.verify(request)).rejects.toBeInstanceOf(ValidationError);
    } else {
      await expect(h.kms.verify(request)).rejects.toBeInstanceOf(InvalidSignatureError);
    }
  });

  it("signs with a fresh salt of exactly 32 bytes, verifiable under the vectors' key", async () => {
    const message = utf8("known-answer PSS");
    const request = { keyId: pssKeyId, message, signingAlgorithm: "RSASSA_PSS_SHA_256" } as const;
    const first = (await h.kms.sign(request)).signature;
    const second = (await h.kms.sign(request)).signature;
    expect(toHex(first)).not.toBe(toHex(second));
    const key = { key: Buffer.from(pss.publicKeyDer, "hex"), format: "der", type: "spki" } as const;
    const verifyWithSalt = (saltLength: number) =>
      nodeVerify(
        "sha256",
        message,
        { ...key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength },
        first,
      );
    expect(verifyWithSalt(32)).toBe(true);
    expect(verifyWithSalt(20)).toBe(false);
    expect(verifyWithSalt(0)).toBe(false);
    await expect(h.kms.verify({ ...request, signature: second })).resolves.toMatchObject({
      signatureValid: true,
    });
  });
});

describe("RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label): Wycheproof", () => {
  const rows = oaep.tests.map((t) => [`tcId ${t.tcId} ${t.result}: ${t.comment}`, t] as const);
  it.each(rows)("%s", async (_name, t) => {
    const request = {
      keyId: oaepKeyId,
      ciphertextBlob: hex(t.ct),
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    } as const;
    if (t.ct === "") {
      await expect(h.kms.decrypt(request)).rejects.toBeInstanceOf(ValidationError);
    } else if (t.result === "valid" && t.label === "") {
      const { plaintext } = await h.kms.decrypt(request);
      expect(toHex(plaintext)).toBe(t.msg);
    } else {
      // Invalid padding and malformed ciphertexts, and valid ones made with a label: the KMS
      // decrypts with the empty label only, so a labelled ciphertext is not one of its own.
      await expect(h.kms.decrypt(request)).rejects.toBeInstanceOf(InvalidCiphertextError);
    }
  });

  it("keeps every invalid category of the Wycheproof file", () => {
    const comments = new Set(
      oaep.tests.filter((t) => t.result === "invalid").map((t) => t.comment),
    );
    for (const expected of [
      "first byte of l_hash modified",
      "ps is all zero",
      "First byte is 1",
      "m is n-1",
      "added n to c",
      "ciphertext not reduced",
      "ciphertext is empty",
      "prepended bytes to ciphertext",
      "appended bytes to ciphertext",
      "truncated ciphertext",
    ]) {
      expect(comments).toContain(expected);
    }
  });
});

describe("RSAES-OAEP (SHA-1): PKCS #1 v2.1 Example 10", () => {
  let keyId: string;
  beforeAll(async () => {
    keyId = await h.importKey("RSA_2048", "ENCRYPT_DECRYPT", rsaPkcs8(example10.key));
  });

  it.each(example10.tests.map((t, i) => [`10.${i + 1}`, t] as const))(
    "OAEP Example %s",
    async (_name, t) => {
      const decrypt = (encryptionAlgorithm: EncryptionAlgorithm) =>
        h.kms.decrypt({ keyId, ciphertextBlob: hex(t.ct), encryptionAlgorithm });
      expect(toHex((await decrypt("RSAES_OAEP_SHA_1")).plaintext)).toBe(t.msg);
      // The hash is part of the scheme: the same ciphertext is not a SHA-256 OAEP ciphertext.
      await expect(decrypt("RSAES_OAEP_SHA_256")).rejects.toBeInstanceOf(InvalidCiphertextError);
    },
  );
});

describe("RSAES-OAEP ciphertext length (RFC 8017 §7.1.2 step 1)", () => {
  const plaintext = utf8("one plaintext, one ciphertext");
  const key = createPublicKey({
    key: Buffer.from(pss.publicKeyDer, "hex"),
    format: "der",
    type: "spki",
  });
  const encrypt = () =>
    new Uint8Array(
      publicEncrypt(
        { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
        plaintext,
      ),
    );
  const decrypt = (ciphertextBlob: Uint8Array) =>
    h.kms.decrypt({ keyId: oaepKeyId, ciphertextBlob, encryptionAlgorithm: "RSAES_OAEP_SHA_256" });

  it("refuses a ciphertext whose leading 00 byte was dropped: k bytes or nothing", async () => {
    // About one ciphertext in 160 starts with 00 under this modulus (its top byte is 0xa2).
    let ciphertext = encrypt();
    for (let tries = 0; ciphertext[0] !== 0 && tries < 20_000; tries++) ciphertext = encrypt();
    expect(ciphertext[0]).toBe(0);
    expect(ciphertext.length).toBe(256);
    expect(toHex((await decrypt(ciphertext)).plaintext)).toBe(toHex(plaintext));
    await expect(decrypt(ciphertext.subarray(1))).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("refuses a ciphertext longer than the modulus, even with only zeros in front", async () => {
    const ciphertext = encrypt();
    await expect(decrypt(new Uint8Array([0, ...ciphertext]))).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await expect(decrypt(new Uint8Array([...ciphertext, 0]))).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(toHex((await decrypt(ciphertext)).plaintext)).toBe(toHex(plaintext));
  });
});
