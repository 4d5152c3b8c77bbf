/** Inputs the operations refused too little of, found in review. */
import { beforeAll, describe, expect, it } from "vitest";
import { createKms, type Kms, TagError, ValidationError } from "../src/index.ts";

const text = (s: string) => new TextEncoder().encode(s);

describe("RSAES_OAEP encrypt and decrypt take no encryption context", () => {
  let kms: Kms;
  let keyId: string;
  let ciphertextBlob: Uint8Array;

  beforeAll(async () => {
    kms = await createKms();
    keyId = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" })).keyMetadata
      .keyId;
    ciphertextBlob = (
      await kms.encrypt({ keyId, plaintext: text("x"), encryptionAlgorithm: "RSAES_OAEP_SHA_256" })
    ).ciphertextBlob;
  });

  // A Map of pairs has no own enumerable keys, so it once passed as "no context": the caller
  // believed the pairs bound to a ciphertext that binds nothing.
  const refused: [string, unknown][] = [
    ["pairs", { purpose: "test" }],
    ["a Map of pairs", new Map([["purpose", "test"]])],
    ["null", null],
    ["a string", "purpose=test"],
  ];

  it.each(refused)("encrypt refuses %s", async (_, encryptionContext) => {
    await expect(
      kms.encrypt({
        keyId,
        plaintext: text("x"),
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
        encryptionContext: encryptionContext as Record<string, string>,
      }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it.each(refused)("decrypt refuses %s", async (_, encryptionContext) => {
    await expect(
      kms.decrypt({
        keyId,
        ciphertextBlob,
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
        encryptionContext: encryptionContext as Record<string, string>,
      }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it("an empty context is no context", async () => {
    const decrypted = await kms.decrypt({
      keyId,
      ciphertextBlob,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      encryptionContext: {},
    });
    expect(decrypted.plaintext).toEqual(text("x"));
  });
});

describe("untagResource tag keys follow the tag key rule (1–128 characters)", () => {
  let kms: Kms;
  let keyId: string;

  beforeAll(async () => {
    kms = await createKms();
    keyId = (await kms.createKey({ tags: [{ tagKey: "env", tagValue: "prod" }] })).keyMetadata
      .keyId;
  });

  it.each([
    ["an empty key", ""],
    ["a key of 129 characters", "k".repeat(129)],
  ])("refuses %s and removes nothing", async (_, tagKey) => {
    await expect(kms.untagResource({ keyId, tagKeys: ["env", tagKey] })).rejects.toBeInstanceOf(
      TagError,
    );
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([
      { tagKey: "env", tagValue: "prod" },
    ]);
  });

  it("accepts a key of 128 characters that no tag has", async () => {
    await kms.untagResource({ keyId, tagKeys: ["k".repeat(128)] });
    expect((await kms.listResourceTags({ keyId })).tags).toHaveLength(1);
  });
});

describe("verify checks the signature argument before reading the key", () => {
  let kms: Kms;
  let disabled: string;

  beforeAll(async () => {
    kms = await createKms();
    disabled = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata.keyId;
    await kms.disableKey({ keyId: disabled });
  });

  it.each([
    ["is empty", new Uint8Array(0)],
    ["is over 6144 bytes", new Uint8Array(6145)],
    ["is not bytes", "MEUCIQ" as unknown as Uint8Array],
  ])(
    "a signature that %s is a ValidationError on a disabled or missing key",
    async (_, signature) => {
      for (const keyId of [disabled, "11111111-2222-4333-8444-555555555555"]) {
        await expect(
          kms.verify({
            keyId,
            message: text("m"),
            signature,
            signingAlgorithm: "ECDSA_SHA_256",
          }),
        ).rejects.toBeInstanceOf(ValidationError);
      }
    },
  );
});
