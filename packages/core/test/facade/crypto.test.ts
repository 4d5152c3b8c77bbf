import {
  createKms,
  IncorrectKeyError,
  InvalidCiphertextError,
  type Kms,
  MAX_PLAINTEXT_BYTES,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const text = (s: string) => new TextEncoder().encode(s);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

let kms: Kms;
let keyId: string;
let keyArn: string;
let otherKeyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  ({ keyId, arn: keyArn } = (await kms.createKey()).keyMetadata);
  otherKeyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("encrypt / decrypt", () => {
  test("round trip without a context returns the plaintext, the key ARN and the algorithm", async () => {
    const plaintext = text("hello");
    const encrypted = await kms.encrypt({ keyId, plaintext });
    expect(encrypted.keyId).toBe(keyArn);
    expect(encrypted.encryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    expect(same(encrypted.ciphertextBlob, plaintext)).toBe(false);
    const decrypted = await kms.decrypt({ ciphertextBlob: encrypted.ciphertextBlob });
    expect(same(decrypted.plaintext, plaintext)).toBe(true);
    expect(decrypted.keyId).toBe(keyArn);
    expect(decrypted.encryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
  });

  test("two encryptions of one plaintext differ (fresh IV each time)", async () => {
    const a = await kms.encrypt({ keyId, plaintext: text("x") });
    const b = await kms.encrypt({ keyId, plaintext: text("x") });
    expect(same(a.ciphertextBlob, b.ciphertextBlob)).toBe(false);
  });

  test("round trip with a context; the order of the pairs does not matter", async () => {
    const plaintext = text("with context");
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext,
      encryptionContext: { tenant: "acme", purpose: "backup", z: "", ä: "ö" },
    });
    const decrypted = await kms.decrypt({
      ciphertextBlob,
      encryptionContext: { ä: "ö", z: "", purpose: "backup", tenant: "acme" },
    });
    expect(same(decrypted.plaintext, plaintext)).toBe(true);
  });

  test("an empty context is the same as no context", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: text("a"),
      encryptionContext: {},
    });
    await expect(kms.decrypt({ ciphertextBlob })).resolves.toBeDefined();
  });

  const context = { tenant: "acme", purpose: "backup" };
  test.each([
    ["missing context", undefined],
    ["missing pair", { tenant: "acme" }],
    ["extra pair", { ...context, extra: "1" }],
    ["changed value", { ...context, purpose: "restore" }],
    ["changed key", { tenant: "acme", Purpose: "backup" }],
    ["value moved to another key", { tenant: "backup", purpose: "acme" }],
  ])("decrypt with a %s → InvalidCiphertextError", async (_name, wrong) => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: text("p"),
      encryptionContext: context,
    });
    const request =
      wrong === undefined ? { ciphertextBlob } : { ciphertextBlob, encryptionContext: wrong };
    await expect(kms.decrypt(request)).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("a context given at decrypt for a ciphertext made without one → InvalidCiphertextError", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { a: "b" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("decrypt keyId naming another key → IncorrectKeyError", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    const error = await kms.decrypt({ ciphertextBlob, keyId: otherKeyId }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IncorrectKeyError);
    expect((error as IncorrectKeyError).code).toBe("IncorrectKeyException");
  });

  test("decrypt keyId naming a key that does not exist → NotFoundError", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    await expect(
      kms.decrypt({ ciphertextBlob, keyId: "11111111-2222-4333-8444-555555555555" }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  test.each(["key id", "key ARN", "alias name", "alias ARN"])(
    "decrypt keyId given as %s works",
    async (form) => {
      await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
      const reference = {
        "key id": keyId,
        "key ARN": keyArn,
        "alias name": "alias/app",
        "alias ARN": `arn:aws:kms:local:000000000000:alias/app`,
      }[form]!;
      const { ciphertextBlob } = await kms.encrypt({ keyId: reference, plaintext: text("p") });
      const decrypted = await kms.decrypt({ ciphertextBlob, keyId: reference });
      expect(decrypted.keyId).toBe(keyArn);
      expect(Buffer.from(decrypted.plaintext).toString()).toBe("p");
    },
  );

  test("an alias moved to another key makes decrypt with that alias → IncorrectKeyError", async () => {
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
    const { ciphertextBlob } = await kms.encrypt({ keyId: "alias/app", plaintext: text("p") });
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: otherKeyId });
    await expect(kms.decrypt({ ciphertextBlob, keyId: "alias/app" })).rejects.toBeInstanceOf(
      IncorrectKeyError,
    );
    await expect(kms.decrypt({ ciphertextBlob })).resolves.toBeDefined();
  });

  test.each([
    [0, "rejects"],
    [1, "accepts"],
    [MAX_PLAINTEXT_BYTES, "accepts"],
    [MAX_PLAINTEXT_BYTES + 1, "rejects"],
  ] as const)("plaintext of %i bytes: encrypt %s", async (size, verdict) => {
    expect(MAX_PLAINTEXT_BYTES).toBe(4096);
    const plaintext = new Uint8Array(size).fill(7);
    const call = kms.encrypt({ keyId, plaintext });
    if (verdict === "rejects") {
      await expect(call).rejects.toBeInstanceOf(ValidationError);
      return;
    }
    const { ciphertextBlob } = await call;
    expect(same((await kms.decrypt({ ciphertextBlob })).plaintext, plaintext)).toBe(true);
  });

  test("a ciphertext with a flipped byte → InvalidCiphertextError", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    const tampered = Uint8Array.from(ciphertextBlob);
    tampered[tampered.length - 1]! ^= 1;
    await expect(kms.decrypt({ ciphertextBlob: tampered })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("a ciphertext from another KMS (other root key) → InvalidCiphertextError", async () => {
    const other = await createKms({ clock: new ManualClock() });
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    await expect(other.decrypt({ ciphertextBlob })).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("a ciphertext of a disabled key decrypts again after enableKey", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    await kms.disableKey({ keyId });
    await expect(kms.decrypt({ ciphertextBlob })).rejects.toMatchObject({
      code: "DisabledException",
    });
    await kms.enableKey({ keyId });
    await expect(kms.decrypt({ ciphertextBlob })).resolves.toBeDefined();
  });
});

describe("reEncrypt", () => {
  test("moves a ciphertext to another key and context without returning the plaintext", async () => {
    const plaintext = text("moving");
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext,
      encryptionContext: { from: "a" },
    });
    const moved = await kms.reEncrypt({
      ciphertextBlob,
      sourceEncryptionContext: { from: "a" },
      destinationKeyId: otherKeyId,
      destinationEncryptionContext: { to: "b" },
    });
    expect(Object.keys(moved).sort()).toEqual([
      "ciphertextBlob",
      "destinationEncryptionAlgorithm",
      "destinationKeyMaterialId",
      "keyId",
      "sourceEncryptionAlgorithm",
      "sourceKeyId",
      "sourceKeyMaterialId",
    ]);
    expect(Buffer.from(moved.ciphertextBlob).includes(Buffer.from(plaintext))).toBe(false);
    expect(moved.sourceKeyId).toBe(keyArn);
    expect(moved.keyId).toContain(otherKeyId);
    const decrypted = await kms.decrypt({
      ciphertextBlob: moved.ciphertextBlob,
      encryptionContext: { to: "b" },
    });
    expect(same(decrypted.plaintext, plaintext)).toBe(true);
    expect(decrypted.keyId).toContain(otherKeyId);
    // The new ciphertext is bound to the destination context and key only.
    await expect(
      kms.decrypt({ ciphertextBlob: moved.ciphertextBlob, encryptionContext: { from: "a" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      kms.decrypt({ ciphertextBlob: moved.ciphertextBlob, keyId, encryptionContext: { to: "b" } }),
    ).rejects.toBeInstanceOf(IncorrectKeyError);
    // The old ciphertext still decrypts.
    const old = await kms.decrypt({ ciphertextBlob, encryptionContext: { from: "a" } });
    expect(same(old.plaintext, plaintext)).toBe(true);
  });

  test("changes only the context when the destination is the same key", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    const moved = await kms.reEncrypt({
      ciphertextBlob,
      destinationKeyId: keyId,
      destinationEncryptionContext: { v: "2" },
    });
    await expect(kms.decrypt({ ciphertextBlob: moved.ciphertextBlob })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    const decrypted = await kms.decrypt({
      ciphertextBlob: moved.ciphertextBlob,
      encryptionContext: { v: "2" },
    });
    expect(Buffer.from(decrypted.plaintext).toString()).toBe("p");
  });

  test("a wrong source context → InvalidCiphertextError", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: text("p"),
      encryptionContext: { a: "1" },
    });
    await expect(
      kms.reEncrypt({
        ciphertextBlob,
        sourceEncryptionContext: { a: "2" },
        destinationKeyId: otherKeyId,
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("a wrong sourceKeyId → IncorrectKeyError", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    await expect(
      kms.reEncrypt({ ciphertextBlob, sourceKeyId: otherKeyId, destinationKeyId: otherKeyId }),
    ).rejects.toBeInstanceOf(IncorrectKeyError);
  });
});

describe("generateDataKey", () => {
  test.each([
    [{ keySpec: "AES_128" } as const, 16],
    [{ keySpec: "AES_256" } as const, 32],
    [{ numberOfBytes: 1 }, 1],
    [{ numberOfBytes: 1024 }, 1024],
  ])("%o returns a %i-byte data key whose ciphertext decrypts to it", async (spec, length) => {
    const dataKey = await kms.generateDataKey({
      keyId,
      ...spec,
      encryptionContext: { purpose: "dk" },
    });
    expect(dataKey.plaintext.length).toBe(length);
    expect(dataKey.keyId).toBe(keyArn);
    const decrypted = await kms.decrypt({
      ciphertextBlob: dataKey.ciphertextBlob,
      encryptionContext: { purpose: "dk" },
    });
    expect(same(decrypted.plaintext, dataKey.plaintext)).toBe(true);
    await expect(kms.decrypt({ ciphertextBlob: dataKey.ciphertextBlob })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("two data keys differ", async () => {
    const a = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    const b = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    expect(same(a.plaintext, b.plaintext)).toBe(false);
  });

  test.each([
    ["both keySpec and numberOfBytes", { keySpec: "AES_256", numberOfBytes: 32 }],
    ["neither", {}],
    ["numberOfBytes 0", { numberOfBytes: 0 }],
    ["numberOfBytes 1025", { numberOfBytes: 1025 }],
    ["numberOfBytes 1.5", { numberOfBytes: 1.5 }],
    ["keySpec AES_512", { keySpec: "AES_512" }],
  ])("%s → ValidationError (with and without plaintext)", async (_name, spec) => {
    await expect(kms.generateDataKey({ keyId, ...(spec as object) })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(
      kms.generateDataKeyWithoutPlaintext({ keyId, ...(spec as object) }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("withoutPlaintext returns only the encrypted copy, which decrypts to a key of that size", async () => {
    const dataKey = await kms.generateDataKeyWithoutPlaintext({
      keyId,
      keySpec: "AES_128",
      encryptionContext: { a: "b" },
    });
    expect(Object.keys(dataKey).sort()).toEqual(["ciphertextBlob", "keyId", "keyMaterialId"]);
    expect(dataKey.keyId).toBe(keyArn);
    const { plaintext } = await kms.decrypt({
      ciphertextBlob: dataKey.ciphertextBlob,
      encryptionContext: { a: "b" },
    });
    expect(plaintext.length).toBe(16);
  });
});

describe("generateRandom", () => {
  test.each([1, 32, 1024])("returns %i random bytes", async (n) => {
    const { plaintext } = await kms.generateRandom({ numberOfBytes: n });
    expect(plaintext).toBeInstanceOf(Uint8Array);
    expect(plaintext.length).toBe(n);
  });

  test("two calls differ", async () => {
    const a = await kms.generateRandom({ numberOfBytes: 32 });
    const b = await kms.generateRandom({ numberOfBytes: 32 });
    expect(same(a.plaintext, b.plaintext)).toBe(false);
  });

  test.each([0, 1025, -1, 2.5, Number.NaN])("numberOfBytes %s → ValidationError", async (n) => {
    await expect(kms.generateRandom({ numberOfBytes: n })).rejects.toBeInstanceOf(ValidationError);
  });
});
