/**
 * Which key material a call used, as AWS reports it: KeyMaterialId on GenerateDataKey(-Pair)
 * (WithoutPlaintext too), Source/DestinationKeyMaterialId on ReEncrypt for symmetric sides, and
 * the same in the audit event (additionalEventData). Decrypt already reported it.
 */
import { createKms, type Kms } from "@kms/core";
import { beforeAll, describe, expect, it } from "vitest";

const plaintext = new TextEncoder().encode("material");

describe("key material ids", () => {
  let kms: Kms;
  let keyId: string;
  let first: string;
  let second: string;
  let oldBlob: Uint8Array;

  const current = async (id: string) =>
    (await kms.describeKey({ keyId: id })).keyMetadata.currentKeyMaterialId!;
  const lastEventData = async () => (await kms.audit.events()).at(-1)!.additionalEventData;

  beforeAll(async () => {
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
    first = await current(keyId);
    oldBlob = (await kms.encrypt({ keyId, plaintext })).ciphertextBlob;
    await kms.rotateKeyOnDemand({ keyId });
    second = await current(keyId);
    expect(second).not.toBe(first);
  });

  it.each([
    ["generateDataKey", () => kms.generateDataKey({ keyId, keySpec: "AES_256" })],
    [
      "generateDataKeyWithoutPlaintext",
      () => kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256" }),
    ],
    ["generateDataKeyPair", () => kms.generateDataKeyPair({ keyId, keyPairSpec: "ECC_NIST_P256" })],
    [
      "generateDataKeyPairWithoutPlaintext",
      () => kms.generateDataKeyPairWithoutPlaintext({ keyId, keyPairSpec: "ECC_NIST_P256" }),
    ],
  ] as const)("%s names the current material, in its response and event", async (_, call) => {
    const response = await call();
    expect(response.keyMaterialId).toBe(second);
    expect((await lastEventData())?.keyMaterialId).toBe(second);
  });

  it("reEncrypt names the material that had encrypted the data and the one that does now", async () => {
    const moved = await kms.reEncrypt({ ciphertextBlob: oldBlob, destinationKeyId: keyId });
    expect(moved.sourceKeyMaterialId).toBe(first);
    expect(moved.destinationKeyMaterialId).toBe(second);
    const data = await lastEventData();
    expect(data?.sourceKeyMaterialId).toBe(first);
    expect(data?.destinationKeyMaterialId).toBe(second);
    // And decrypt agrees on which material opens the result.
    expect((await kms.decrypt({ ciphertextBlob: moved.ciphertextBlob })).keyMaterialId).toBe(
      second,
    );
  });

  it("reEncrypt names no material for an RSA side, as AWS", async () => {
    const rsa = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }))
      .keyMetadata.keyId;
    const toRsa = await kms.reEncrypt({
      ciphertextBlob: oldBlob,
      destinationKeyId: rsa,
      destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(toRsa.sourceKeyMaterialId).toBe(first);
    expect(toRsa).not.toHaveProperty("destinationKeyMaterialId");
    const back = await kms.reEncrypt({
      ciphertextBlob: toRsa.ciphertextBlob,
      sourceKeyId: rsa,
      sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
      destinationKeyId: keyId,
    });
    expect(back).not.toHaveProperty("sourceKeyMaterialId");
    expect(back.destinationKeyMaterialId).toBe(second);
  });

  it("encrypt's response stays as AWS's, without a material id", async () => {
    expect(Object.keys(await kms.encrypt({ keyId, plaintext })).sort()).toEqual([
      "ciphertextBlob",
      "encryptionAlgorithm",
      "keyId",
    ]);
  });
});
