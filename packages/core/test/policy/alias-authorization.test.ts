import {
  AccessDeniedError,
  type AuditEvent,
  createKms,
  type Kms,
  MemoryAuditSink,
  NotFoundError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

// AWS authorizes alias changes against every key they touch: CreateAlias on the target,
// UpdateAlias on the alias's current key and on the new one, DeleteAlias on the current key.
const ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const as = (principal: string) => ({ principal });

function policyAllowingAlice(actions: string[]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "Admin", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
      { Sid: "Alice", Effect: "Allow", Principal: { AWS: ALICE }, Action: actions, Resource: "*" },
    ],
  });
}

let kms: Kms;
let mine: string;
let theirs: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  mine = (
    await kms.createKey({
      policy: policyAllowingAlice(["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"]),
    })
  ).keyMetadata.keyId;
  theirs = (await kms.createKey()).keyMetadata.keyId;
});

describe("alias authorization", () => {
  test("createAlias needs kms:CreateAlias on the target key", async () => {
    await kms.createAlias({ aliasName: "alias/mine", targetKeyId: mine }, as(ALICE));
    await expect(
      kms.createAlias({ aliasName: "alias/theirs", targetKeyId: theirs }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("updateAlias needs kms:UpdateAlias on the new target key", async () => {
    const other = (await kms.createKey({ policy: policyAllowingAlice(["kms:UpdateAlias"]) }))
      .keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    await expect(
      kms.updateAlias({ aliasName: "alias/app", targetKeyId: theirs }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: other }, as(ALICE));
    expect((await kms.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(other);
  });

  test("updateAlias needs kms:UpdateAlias on the key the alias points to now", async () => {
    // Alice may point aliases at `mine`, but must not take over an alias of a key she cannot touch.
    await kms.createAlias({ aliasName: "alias/payments", targetKeyId: theirs });
    const moved = kms.updateAlias({ aliasName: "alias/payments", targetKeyId: mine }, as(ALICE));
    await expect(moved).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(moved).rejects.toThrow(/kms:UpdateAlias/);
    expect((await kms.describeKey({ keyId: "alias/payments" })).keyMetadata.keyId).toBe(theirs);
  });

  test("deleteAlias needs kms:DeleteAlias on the key the alias points to", async () => {
    await kms.createAlias({ aliasName: "alias/payments", targetKeyId: theirs });
    await kms.createAlias({ aliasName: "alias/mine", targetKeyId: mine });
    await expect(
      kms.deleteAlias({ aliasName: "alias/payments" }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.describeKey({ keyId: "alias/payments" })).keyMetadata.keyId).toBe(theirs);
    await kms.deleteAlias({ aliasName: "alias/mine" }, as(ALICE));
    await expect(kms.describeKey({ keyId: "alias/mine" })).rejects.toBeInstanceOf(NotFoundError);
  });

  test("an explicit deny on the current key wins over an allow on the new one", async () => {
    const guarded = (
      await kms.createKey({
        policy: JSON.stringify({
          Version: "2012-10-17",
          Statement: [
            { Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
            { Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" },
            { Effect: "Deny", Principal: { AWS: ALICE }, Action: "kms:UpdateAlias", Resource: "*" },
          ],
        }),
      })
    ).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/guarded", targetKeyId: guarded });
    const moved = kms.updateAlias({ aliasName: "alias/guarded", targetKeyId: mine }, as(ALICE));
    await expect(moved).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(moved).rejects.toThrow(`key/${guarded}: explicitly denied by statement 2`);
  });

  test("the audit record of an alias change names both keys", async () => {
    const sink = new MemoryAuditSink();
    const audited = await createKms({ clock: new ManualClock(), audit: sink });
    const from = (await audited.createKey()).keyMetadata.keyId;
    const to = (await audited.createKey()).keyMetadata.keyId;
    await audited.createAlias({ aliasName: "alias/app", targetKeyId: from });
    await audited.updateAlias({ aliasName: "alias/app", targetKeyId: to });
    await audited.deleteAlias({ aliasName: "alias/app" });
    const [update, remove] = sink.events.slice(-2) as [AuditEvent, AuditEvent];
    expect(update.eventName).toBe("UpdateAlias");
    const touched = update.resources?.map((r) => r.ARN) ?? [];
    expect(touched).toHaveLength(2);
    expect(touched).toEqual(
      expect.arrayContaining([expect.stringContaining(from), expect.stringContaining(to)]),
    );
    expect(remove.eventName).toBe("DeleteAlias");
    expect(remove.resources?.map((r) => r.ARN)).toEqual([expect.stringContaining(to)]);
  });
});
