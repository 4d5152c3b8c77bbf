/**
 * `CallOptions.accessKeyId`: the access key a server authenticated the caller by (@kms/server
 * passes the SigV4 one), recorded as CloudTrail records it, `userIdentity.accessKeyId`. A
 * principal with two keys is otherwise one name in the trail, and a leaked key cannot be told
 * from its sibling.
 */
import { type AuditEvent, createKms, type Kms, MemoryAuditSink, ValidationError } from "@kms/core";
import { beforeEach, describe, expect, test } from "vitest";

const ALICE = "arn:aws:iam::111122223333:user/alice";
const plaintext = new Uint8Array([1, 2, 3]);

let sink: MemoryAuditSink;
let kms: Kms;
let keyId: string;

beforeEach(async () => {
  sink = new MemoryAuditSink();
  kms = await createKms({ account: "111122223333", principal: ALICE, audit: sink });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

async function lastEvent(): Promise<AuditEvent> {
  const events = await kms.audit.events();
  const last = events.at(-1);
  if (last === undefined) throw new Error("no audit event");
  return last;
}

describe("the access key a call was signed with", () => {
  test("is the audit event's userIdentity.accessKeyId, on an allowed call and a refused one", async () => {
    await kms.encrypt({ keyId, plaintext }, { accessKeyId: "AKIAALICE00000000001" });
    expect((await lastEvent()).userIdentity).toMatchObject({
      arn: ALICE,
      accessKeyId: "AKIAALICE00000000001",
    });
    const stranger = "arn:aws:iam::444455556666:user/mallory";
    await expect(
      kms.encrypt(
        { keyId, plaintext },
        { principal: stranger, accessKeyId: "AKIAMALLORY000000001" },
      ),
    ).rejects.toThrow(/not authorized|AccessDenied/i);
    const refused = await lastEvent();
    expect(refused.errorCode).toBe("AccessDeniedException");
    expect(refused.userIdentity).toMatchObject({
      arn: stranger,
      accessKeyId: "AKIAMALLORY000000001",
    });
  });

  test("is absent from the event of a call made without one", async () => {
    await kms.encrypt({ keyId, plaintext });
    expect((await lastEvent()).userIdentity).not.toHaveProperty("accessKeyId");
  });

  test.each([
    ["a number", 42],
    ["empty", ""],
    ["longer than AWS's 128 characters", "A".repeat(129)],
  ])(
    "%s is refused as a ValidationError, and the refusal is audited without it",
    async (_, accessKeyId) => {
      await expect(
        kms.encrypt({ keyId, plaintext }, { accessKeyId } as unknown as { accessKeyId: string }),
      ).rejects.toThrow(ValidationError);
      const refused = await lastEvent();
      expect(refused.eventName).toBe("Encrypt");
      expect(refused.errorCode).toBe("ValidationException");
      expect(refused.userIdentity).not.toHaveProperty("accessKeyId");
    },
  );

  test("128 characters are accepted", async () => {
    await kms.encrypt({ keyId, plaintext }, { accessKeyId: "A".repeat(128) });
    expect((await lastEvent()).userIdentity.accessKeyId).toBe("A".repeat(128));
  });
});
