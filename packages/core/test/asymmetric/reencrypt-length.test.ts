import { constants, createPublicKey, publicEncrypt } from "node:crypto";
import { beforeAll, describe, expect, test } from "vitest";
import { createKms, type Kms, ValidationError } from "../../src/index.ts";

/**
 * Found in review: ReEncrypt from an RSA source to a destination key with a smaller plaintext
 * limit failed with the message Encrypt gives for a caller's own plaintext, stating the length
 * of the plaintext it had decrypted ("…, got 250"). An RSA ciphertext is as long as the modulus
 * whatever it holds, and ReEncrypt needs only kms:ReEncryptFrom on the source and
 * kms:ReEncryptTo on the destination, not kms:Decrypt: the message told such a caller what the
 * ciphertext otherwise hides. AWS names the limit only ("Algorithm … and key spec … cannot
 * encrypt data larger than N bytes."); so does this KMS now, for ReEncrypt. Encrypt still states
 * the length of the caller's own plaintext.
 */

const filled = (n: number): Uint8Array => new Uint8Array(n).fill(0x61);

describe("ReEncrypt's destination size limits do not state the decrypted plaintext's length", () => {
  let kms: Kms;
  let rsa3072: string;
  let rsa2048: string;
  let symmetric: string;

  beforeAll(async () => {
    kms = await createKms({ audit: false });
    const rsa = (keySpec: "RSA_2048" | "RSA_3072") =>
      kms.createKey({ keySpec, keyUsage: "ENCRYPT_DECRYPT" }).then((k) => k.keyMetadata.keyId);
    rsa3072 = await rsa("RSA_3072");
    rsa2048 = await rsa("RSA_2048");
    symmetric = (await kms.createKey()).keyMetadata.keyId;
  });

  /** An RSA_3072 ciphertext of `plaintext`, made with the public key as anyone can. */
  async function sealedOutside(plaintext: Uint8Array): Promise<Uint8Array> {
    const { publicKey } = await kms.getPublicKey({ keyId: rsa3072 });
    const key = createPublicKey({ key: Buffer.from(publicKey), format: "der", type: "spki" });
    return new Uint8Array(
      publicEncrypt(
        { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
        plaintext,
      ),
    );
  }

  const moveTo = (ciphertextBlob: Uint8Array, destinationKeyId: string, rsaDestination = true) =>
    kms.reEncrypt({
      ciphertextBlob,
      sourceKeyId: rsa3072,
      sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
      destinationKeyId,
      ...(rsaDestination ? { destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256" as const } : {}),
    });

  async function refusal(promise: Promise<unknown>): Promise<ValidationError> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    return error as ValidationError;
  }

  test("over the destination's limit: the limit is named, the length is not", async () => {
    const messages = new Set<string>();
    for (const length of [191, 250, 318]) {
      const { ciphertextBlob } = await kms.encrypt({
        keyId: rsa3072,
        plaintext: filled(length),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      });
      const error = await refusal(moveTo(ciphertextBlob, rsa2048));
      expect(error.message).not.toContain(String(length));
      expect(error.message).toContain("190");
      expect(error.message).toContain("destinationKeyId");
      messages.add(error.message);
    }
    // Every length over the limit reads the same.
    expect(messages.size).toBe(1);
    // At the limit it moves.
    const { ciphertextBlob } = await kms.encrypt({
      keyId: rsa3072,
      plaintext: filled(190),
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    await expect(moveTo(ciphertextBlob, rsa2048)).resolves.toMatchObject({
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
  });

  test("an empty plaintext, sealed with the public key, is refused without its length", async () => {
    const ciphertextBlob = await sealedOutside(new Uint8Array(0));
    for (const [destination, rsaDestination] of [
      [symmetric, false],
      [rsa2048, true],
    ] as const) {
      const error = await refusal(moveTo(ciphertextBlob, destination, rsaDestination));
      expect(error.message).not.toMatch(/got|\b0\b/);
      expect(error.message).toContain("destinationKeyId");
    }
  });

  test("Encrypt still states the length of the caller's own plaintext", async () => {
    const rsaError = await refusal(
      kms.encrypt({
        keyId: rsa2048,
        plaintext: filled(191),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
    );
    expect(rsaError.message).toMatch(/"plaintext" must be at most 190 bytes .*got 191/);
    const symmetricError = await refusal(
      kms.encrypt({ keyId: symmetric, plaintext: filled(4097) }),
    );
    expect(symmetricError.message).toMatch(/"plaintext" .*got 4097/);
  });
});
