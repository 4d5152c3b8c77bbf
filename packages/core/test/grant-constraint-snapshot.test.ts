/**
 * createGrant and putKeyPolicy keep what they checked: the caller's constraint object or policy
 * getter may change while the call awaits the store, and the stored grant or policy must be the
 * one that was validated (and, for a delegated grant, compared with its parent).
 */
import { AccessDeniedError, createKms, type Kms, MemoryKeyStore, type StoredKey } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, expect, test } from "vitest";

/** A memory store that runs `onRead` whenever a key is read (the call is then mid-flight). */
class ReadHookStore extends MemoryKeyStore {
  onRead: (() => void) | undefined;
  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    this.onRead?.();
    return super.getKey(keyId);
  }
}

let store: ReadHookStore;
let kms: Kms;
let keyId: string;

beforeEach(async () => {
  store = new ReadHookStore();
  kms = await createKms({ store, clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

test("a grant keeps the constraint that was checked, not what the object holds later", async () => {
  const subset: Record<string, string> = { tenant: "alice" };
  store.onRead = () => {
    delete subset.tenant;
    subset.other = "x";
  };
  await kms.createGrant({
    keyId,
    granteePrincipal: "arn:aws:iam::111122223333:user/alice",
    operations: ["Decrypt"],
    constraints: { encryptionContextSubset: subset },
  });
  store.onRead = undefined;
  const [grant] = (await kms.listGrants({ keyId })).grants;
  expect(grant?.constraints).toEqual({ encryptionContextSubset: { tenant: "alice" } });
});

test("putKeyPolicy stores the policy text it checked", async () => {
  const checked = (await kms.getKeyPolicy({ keyId })).policy;
  let reads = 0;
  const request = {
    keyId,
    get policy(): string {
      reads++;
      // The second read would store a document that repeats "Effect" (refused when checked).
      return reads === 1
        ? checked
        : checked.replace(`"Effect": "Allow"`, `"Effect": "Deny", "Effect": "Allow"`);
    },
  };
  await kms.putKeyPolicy(request);
  expect((await kms.getKeyPolicy({ keyId })).policy).toBe(checked);
});

test("createKey stores the policy text it checked", async () => {
  const checked = (await kms.getKeyPolicy({ keyId })).policy;
  let reads = 0;
  const request = {
    get policy(): string {
      reads++;
      return reads === 1
        ? checked
        : checked.replace(`"Effect": "Allow"`, `"Effect": "Deny", "Effect": "Allow"`);
    },
  };
  const created = (await kms.createKey(request)).keyMetadata.keyId;
  expect((await kms.getKeyPolicy({ keyId: created })).policy).toBe(checked);
});

test("createGrant is authorized on the constraint and operations it stores, not on what the objects hold later", async () => {
  const ALICE = "arn:aws:iam::111122223333:user/alice";
  const root = "arn:aws:iam::000000000000:root";
  await kms.putKeyPolicy({
    keyId,
    policy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        { Effect: "Allow", Principal: { AWS: root }, Action: "kms:*", Resource: "*" },
        {
          Effect: "Allow",
          Principal: { AWS: ALICE },
          Action: "kms:CreateGrant",
          Resource: "*",
          Condition: {
            StringEquals: { "kms:EncryptionContext:tenant": "alice" },
            "ForAllValues:StringEquals": { "kms:GrantOperations": ["Decrypt"] },
          },
        },
      ],
    }),
  });
  const subset: Record<string, string> = { tenant: "bob" };
  const operations: ("Decrypt" | "Encrypt")[] = ["Decrypt", "Encrypt"];
  // Checked and copied as bob's and Decrypt+Encrypt; by the time the policy is evaluated, the
  // caller's objects say alice's and Decrypt only.
  store.onRead = () => {
    subset.tenant = "alice";
    operations.length = 1;
  };
  await expect(
    kms.createGrant(
      {
        keyId,
        granteePrincipal: ALICE,
        operations,
        constraints: { encryptionContextSubset: subset },
      },
      { principal: ALICE },
    ),
  ).rejects.toBeInstanceOf(AccessDeniedError);
  store.onRead = undefined;
  expect((await kms.listGrants({ keyId })).grants).toEqual([]);
});
