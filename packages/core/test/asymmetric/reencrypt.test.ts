import { beforeAll, describe, expect, test } from "vitest";
import { createKms, InvalidCiphertextError, type Kms, ValidationError } from "../../src/index.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("reEncrypt across symmetric and RSA keys", () => {
  let kms: Kms;
  let symmetricKey: string;
  let rsaKey: string;
  let otherRsaKey: string;

  beforeAll(async () => {
    kms = await createKms();
    symmetricKey = (await kms.createKey()).keyMetadata.keyId;
    rsaKey = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" })).keyMetadata
      .keyId;
    otherRsaKey = (await kms.createKey({ keySpec: "RSA_3072", keyUsage: "ENCRYPT_DECRYPT" }))
      .keyMetadata.keyId;
  });

  test("symmetric → RSA: the RSA key decrypts the result", async () => {
    const context = { tenant: "acme" };
    const { ciphertextBlob } = await kms.encrypt({
      keyId: symmetricKey,
      plaintext: text("moving to RSA"),
      encryptionContext: context,
    });
    const moved = await kms.reEncrypt({
      ciphertextBlob,
      sourceEncryptionContext: context,
      destinationKeyId: rsaKey,
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(moved.sourceEncryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    expect(moved.destinationEncryptionAlgorithm).toBe("RSAES_OAEP_SHA_256");
    expect(moved.keyId).toMatch(new RegExp(`:key/${rsaKey}$`));
    const { plaintext } = await kms.decrypt({
      ciphertextBlob: moved.ciphertextBlob,
      keyId: rsaKey,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(new TextDecoder().decode(plaintext)).toBe("moving to RSA");
  });

  test("RSA → symmetric with a new context, and RSA → RSA with another hash", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId: rsaKey,
      plaintext: text("from RSA"),
      encryptionAlgorithm: "RSAES_OAEP_SHA_1",
    });
    const toSymmetric = await kms.reEncrypt({
      ciphertextBlob,
      sourceKeyId: rsaKey,
      sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_1",
      destinationKeyId: symmetricKey,
      destinationEncryptionContext: { tenant: "globex" },
    });
    const back = await kms.decrypt({
      ciphertextBlob: toSymmetric.ciphertextBlob,
      encryptionContext: { tenant: "globex" },
    });
    expect(new TextDecoder().decode(back.plaintext)).toBe("from RSA");
    await expect(
      kms.decrypt({ ciphertextBlob: toSymmetric.ciphertextBlob, encryptionContext: {} }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);

    const toRsa = await kms.reEncrypt({
      ciphertextBlob,
      sourceKeyId: rsaKey,
      sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_1",
      destinationKeyId: otherRsaKey,
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    const again = await kms.decrypt({
      ciphertextBlob: toRsa.ciphertextBlob,
      keyId: otherRsaKey,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(new TextDecoder().decode(again.plaintext)).toBe("from RSA");
  });

  test("refuses what AWS refuses", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId: rsaKey,
      plaintext: text("x"),
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    // An RSA ciphertext names no key: the source key is required.
    await expect(
      kms.reEncrypt({
        ciphertextBlob,
        sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        destinationKeyId: symmetricKey,
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    // RSA ciphertexts cannot carry an encryption context.
    await expect(
      kms.reEncrypt({
        ciphertextBlob,
        sourceKeyId: rsaKey,
        sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        destinationKeyId: otherRsaKey,
        destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        destinationEncryptionContext: { tenant: "acme" },
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    // The wrong OAEP hash does not decrypt.
    await expect(
      kms.reEncrypt({
        ciphertextBlob,
        sourceKeyId: rsaKey,
        sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_1",
        destinationKeyId: symmetricKey,
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("a symmetric source pending deletion still re-encrypts to RSA (AWS footnote [10])", async () => {
    const source = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext: text("last call") });
    await kms.scheduleKeyDeletion({ keyId: source, pendingWindowInDays: 7 });
    await expect(kms.decrypt({ ciphertextBlob })).rejects.toMatchObject({
      code: "KMSInvalidStateException",
    });
    const moved = await kms.reEncrypt({
      ciphertextBlob,
      destinationKeyId: rsaKey,
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    const { plaintext } = await kms.decrypt({
      ciphertextBlob: moved.ciphertextBlob,
      keyId: rsaKey,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(new TextDecoder().decode(plaintext)).toBe("last call");
  });
});
