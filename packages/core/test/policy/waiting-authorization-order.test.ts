import {
  AccessDeniedError,
  createKms,
  DisabledError,
  InvalidCiphertextError,
  type Kms,
  NotFoundError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

// A key policy that reads kms:ResourceAliases authorizes the call only once the key's aliases
// are read from the store: the key's admission (operations read the store, then await it only
// when it is a promise) waits for that decision. The state checks come after it all the same,
// and AccessDenied still comes before them, as with a policy decided at once.
const ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const as = (principal: string) => ({ principal });
const context = { purpose: "test" };

const aliasReadingPolicy = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Sid: "Admin", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
    {
      Sid: "AliceThroughTheAppAlias",
      Effect: "Allow",
      Principal: { AWS: ALICE },
      Action: ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*"],
      Resource: "*",
      Condition: { "ForAnyValue:StringEquals": { "kms:ResourceAliases": "alias/app" } },
    },
  ],
});

let clock: ManualClock;
let kms: Kms;
let keyId: string;
let blob: Uint8Array;

const calls = {
  encrypt: () =>
    kms.encrypt({ keyId, plaintext: new Uint8Array(8), encryptionContext: context }, as(ALICE)),
  generateDataKey: () =>
    kms.generateDataKey({ keyId, keySpec: "AES_256", encryptionContext: context }, as(ALICE)),
  decrypt: () => kms.decrypt({ ciphertextBlob: blob, encryptionContext: context }, as(ALICE)),
  reEncrypt: () =>
    kms.reEncrypt(
      {
        ciphertextBlob: blob,
        sourceEncryptionContext: context,
        destinationKeyId: keyId,
        destinationEncryptionContext: context,
      },
      as(ALICE),
    ),
};

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
  keyId = (await kms.createKey({ policy: aliasReadingPolicy })).keyMetadata.keyId;
  await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
  ({ ciphertextBlob: blob } = await kms.encrypt({
    keyId,
    plaintext: new Uint8Array(8),
    encryptionContext: context,
  }));
});

describe("a key policy that waits for the store to authorize", () => {
  test.each(Object.keys(calls) as (keyof typeof calls)[])(
    "%s on an enabled key the alias names: allowed",
    async (name) => {
      await expect(calls[name]()).resolves.toBeDefined();
    },
  );

  test.each(Object.keys(calls) as (keyof typeof calls)[])(
    "%s on a disabled key: DisabledError, once the waiting authorization allowed it",
    async (name) => {
      await kms.disableKey({ keyId });
      await expect(calls[name]()).rejects.toBeInstanceOf(DisabledError);
    },
  );

  test.each(Object.keys(calls) as (keyof typeof calls)[])(
    "%s on a disabled key the waiting authorization denies: AccessDeniedError first",
    async (name) => {
      await kms.disableKey({ keyId });
      await kms.deleteAlias({ aliasName: "alias/app" });
      await expect(calls[name]()).rejects.toBeInstanceOf(AccessDeniedError);
    },
  );

  test("a key whose deletion is due is gone: NotFoundError, and InvalidCiphertextError for decrypt", async () => {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(7);
    await expect(calls.decrypt()).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(calls.encrypt()).rejects.toBeInstanceOf(NotFoundError);
  });
});
