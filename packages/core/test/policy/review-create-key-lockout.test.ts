/**
 * CreateKey's lockout safety check judges the policy on the key it will govern, as the caller's
 * next PutKeyPolicy will be judged: the key's ARN (a statement's Resource) and its tags
 * (aws:ResourceTag). Judged on resource `*` with no tags, a Deny scoped to key ARNs passed the
 * check and locked the creator out, and an Allow scoped to key ARNs was refused.
 */
import { AccessDeniedError, createKms, type Kms, MalformedPolicyDocumentError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
const KEYS = "arn:aws:kms:*:000000000000:key/*";

function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}
const ADMIN = { Sid: "Admin", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*" };

let kms: Kms;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
});

describe("createKey's lockout check reads the new key's ARN and tags", () => {
  test("a Deny of kms:PutKeyPolicy on key ARNs is refused, as putKeyPolicy refuses it", async () => {
    const lockout = policy(
      { ...ADMIN, Resource: "*" },
      { Effect: "Deny", Principal: "*", Action: "kms:PutKeyPolicy", Resource: KEYS },
    );
    await expect(kms.createKey({ policy: lockout })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
    // The same document is refused by putKeyPolicy on an existing key: the two checks agree.
    const { keyId } = (await kms.createKey()).keyMetadata;
    await expect(kms.putKeyPolicy({ keyId, policy: lockout })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
    // With the bypass the key is created, and its creator is locked out as the check warned.
    const created = await kms.createKey({ policy: lockout, bypassPolicyLockoutSafetyCheck: true });
    await expect(
      kms.putKeyPolicy({
        keyId: created.keyMetadata.keyId,
        policy: policy({ ...ADMIN, Resource: "*" }),
      }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("an Allow scoped to key ARNs lets the creator manage the key, so it is accepted", async () => {
    const scoped = policy({ ...ADMIN, Resource: KEYS });
    const { keyId } = (await kms.createKey({ policy: scoped })).keyMetadata;
    await expect(kms.putKeyPolicy({ keyId, policy: scoped })).resolves.toBeUndefined();
  });

  test("an Allow naming another key's ARN is refused", async () => {
    const other = policy({
      ...ADMIN,
      Resource: "arn:aws:kms:us-east-1:000000000000:key/00000000-0000-4000-8000-000000000000",
    });
    await expect(kms.createKey({ policy: other })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
  });

  test("a Deny on the key's own tags is judged with the tags the key is created with", async () => {
    const lockout = policy(
      { ...ADMIN, Resource: "*" },
      {
        Effect: "Deny",
        Principal: "*",
        Action: "kms:PutKeyPolicy",
        Resource: "*",
        Condition: { StringEquals: { "aws:ResourceTag/frozen": "true" } },
      },
    );
    await expect(
      kms.createKey({ policy: lockout, tags: [{ tagKey: "frozen", tagValue: "true" }] }),
    ).rejects.toBeInstanceOf(MalformedPolicyDocumentError);
    // Without the tag the Deny does not apply to the key, and the policy is accepted.
    await expect(kms.createKey({ policy: lockout })).resolves.toBeDefined();
  });

  test("a refused policy creates no key", async () => {
    const lockout = policy(
      { ...ADMIN, Resource: "*" },
      { Effect: "Deny", Principal: "*", Action: "kms:PutKeyPolicy", Resource: KEYS },
    );
    await kms.createKey({ policy: lockout }).catch(() => undefined);
    expect((await kms.listKeys()).keys).toHaveLength(0);
  });
});
