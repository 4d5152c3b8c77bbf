/**
 * kms:ReEncryptOnSameKey for an RSA source, found in review: the source key was read from the
 * ciphertext's first bytes as if it were a symmetric blob header. An RSA-OAEP ciphertext that
 * happens to parse as one (found in seconds with the public key) named another key, so a Deny
 * of same-key re-encryption did not apply. Here a real symmetric blob of another key stands in
 * for such a ciphertext: it parses as one, and `explain` decides on it as the call would after
 * a successful RSA decryption (which this stand-in would fail).
 */
import { AccessDeniedError, createKms, type Kms } from "@kms/core";
import { beforeAll, describe, expect, it } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
const plaintext = new TextEncoder().encode("secret");

const denySameKeyTo = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Sid: "All", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
    {
      Sid: "NoSameKeyReEncryptTo",
      Effect: "Deny",
      Principal: "*",
      Action: "kms:ReEncryptTo",
      Resource: "*",
      Condition: { Bool: { "kms:ReEncryptOnSameKey": "true" } },
    },
  ],
});

describe("kms:ReEncryptOnSameKey with an RSA source key", () => {
  let kms: Kms;
  let rsa: string;
  /** A ciphertext whose bytes parse as a symmetric blob header naming another key. */
  let lookalike: Uint8Array;

  beforeAll(async () => {
    kms = await createKms();
    rsa = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" })).keyMetadata
      .keyId;
    await kms.putKeyPolicy({ keyId: rsa, policy: denySameKeyTo });
    const other = (await kms.createKey()).keyMetadata.keyId;
    lookalike = (await kms.encrypt({ keyId: other, plaintext })).ciphertextBlob;
  });

  const sameKey = (ciphertextBlob: Uint8Array, destinationKeyId: string) =>
    kms.reEncrypt({
      ciphertextBlob,
      sourceKeyId: rsa,
      sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
      destinationKeyId,
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });

  it("is true whatever the ciphertext's bytes spell, so the Deny applies", async () => {
    // explain decides as the call does, without the RSA decryption this ciphertext would fail.
    const explained = await kms.explain({
      operation: "reEncrypt",
      request: {
        ciphertextBlob: lookalike,
        sourceKeyId: rsa,
        sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        destinationKeyId: rsa,
        destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
      },
    });
    expect(explained.allowed).toBe(false);
    expect(explained.decisions).toContainEqual(
      expect.objectContaining({
        action: "kms:ReEncryptTo",
        reason: "explicit-deny",
        sid: "NoSameKeyReEncryptTo",
      }),
    );
  });

  it("is true for an ordinary RSA ciphertext too, also through an alias", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId: rsa,
      plaintext,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    await expect(sameKey(ciphertextBlob, rsa)).rejects.toBeInstanceOf(AccessDeniedError);
    await kms.createAlias({ aliasName: "alias/rsa-same", targetKeyId: rsa });
    await expect(sameKey(ciphertextBlob, "alias/rsa-same")).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  it("is false for another destination, which the Deny does not stop", async () => {
    const other = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }))
      .keyMetadata.keyId;
    await kms.putKeyPolicy({ keyId: other, policy: denySameKeyTo });
    const explained = await kms.explain({
      operation: "reEncrypt",
      request: {
        ciphertextBlob: lookalike,
        sourceKeyId: rsa,
        sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        destinationKeyId: other,
        destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
      },
    });
    expect(explained.allowed).toBe(true);
  });

  it("records no source key version read from an RSA ciphertext", async () => {
    await kms
      .decrypt({
        ciphertextBlob: lookalike,
        keyId: rsa,
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      })
      .catch(() => undefined);
    const decrypt = (await kms.audit.events()).at(-1)!;
    expect(decrypt.eventName).toBe("Decrypt");
    expect(decrypt.additionalEventData?.sourceKeyVersion).toBeUndefined();
    // A symmetric ciphertext's version is still recorded.
    await kms.decrypt({ ciphertextBlob: lookalike });
    expect((await kms.audit.events()).at(-1)!.additionalEventData?.sourceKeyVersion).toBe(1);
  });
});
