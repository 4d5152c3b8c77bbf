/**
 * Work the KMS does on its own — a key destroyed at the end of its deletion window, an automatic
 * rotation, a record sealed while opening — is recorded as CloudTrail records AWS KMS's service
 * events (AWS KMS Developer Guide, "DeleteKey" and "RotateKey" log entries):
 *
 *   "userIdentity": { "accountId": "111122223333", "invokedBy": "AWS Internal" },
 *   "sourceIPAddress": "AWS Internal", … "eventType": "AwsServiceEvent"
 *
 * with no principal. They used to carry the default principal's identity (type, principalId,
 * arn), which credited the work to someone who never asked for it: the account root, or
 * whatever `principal` the Kms was opened with.
 */
import {
  type AuditEvent,
  createKms,
  type Kms,
  MemoryAuditSink,
  MemoryKeyStore,
  verifyAuditLog,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ACCOUNT = "111122223333";
/** The Kms's default principal: what service events used to name. */
const APP = `arn:aws:iam::${ACCOUNT}:role/app`;
/** The caller inside whose call the work happens. */
const READER = `arn:aws:iam::${ACCOUNT}:user/reader`;
const CALLER = {
  principal: READER,
  sourceIp: "203.0.113.7",
  viaService: "rds.us-east-1.amazonaws.com",
};
const plaintext = new Uint8Array([1, 2, 3]);

const SERVICE_IDENTITY = { accountId: ACCOUNT, invokedBy: "AWS Internal" };

let clock: ManualClock;
let sink: MemoryAuditSink;
let kms: Kms;

beforeEach(async () => {
  clock = new ManualClock();
  sink = new MemoryAuditSink();
  kms = await createKms({
    clock,
    account: ACCOUNT,
    principal: APP,
    store: new MemoryKeyStore(),
    audit: sink,
    // The default policy lets only the account's principals in; READER is one.
  });
});

/** The service event's shape, and nothing of the default principal or of the caller in it. */
function expectServiceEvent(event: AuditEvent, eventName: string, keyId: string): void {
  expect(event.eventName).toBe(eventName);
  expect(event.eventType).toBe("AwsServiceEvent");
  expect(event.userIdentity).toStrictEqual(SERVICE_IDENTITY);
  expect(event.sourceIPAddress).toBe("AWS Internal");
  expect(event.recipientAccountId).toBe(ACCOUNT);
  expect(event.resources.map((r) => r.ARN)).toEqual([`arn:aws:kms:local:${ACCOUNT}:key/${keyId}`]);
  const text = JSON.stringify(event);
  for (const someone of [APP, READER, CALLER.sourceIp, CALLER.viaService, ":root"]) {
    expect(text).not.toContain(someone);
  }
}

async function eventsOf(call: () => Promise<unknown>): Promise<readonly AuditEvent[]> {
  const from = sink.events.length;
  await call().catch(() => undefined);
  return sink.events.slice(from);
}

describe("service events name the account and AWS Internal, no principal", () => {
  test("a DeleteKey at the end of the deletion window, inside another principal's call", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const events = await eventsOf(() => kms.describeKey({ keyId }, CALLER));
    expect(events.map((e) => e.eventName)).toEqual(["DeleteKey", "DescribeKey"]);
    expectServiceEvent(events[0]!, "DeleteKey", keyId);
    // The call it happened in is told by its request id, and that call names its caller.
    const call = events[1]!;
    expect(events[0]!.requestID).toBe(call.requestID);
    expect(call.eventType).toBe("AwsApiCall");
    expect(call.userIdentity).toMatchObject({
      type: "IAMUser",
      arn: READER,
      principalId: READER,
      accountId: ACCOUNT,
      invokedBy: CALLER.viaService,
    });
    expect(call.sourceIPAddress).toBe(CALLER.sourceIp);
  });

  test("an automatic RotateKey inside an encrypt", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    clock.advanceDays(91);
    const events = await eventsOf(() => kms.encrypt({ keyId, plaintext }, CALLER));
    expect(events.map((e) => e.eventName)).toEqual(["RotateKey", "Encrypt"]);
    expectServiceEvent(events[0]!, "RotateKey", keyId);
    expect(events[1]!.userIdentity.arn).toBe(READER);
  });

  test("both, done by runMaintenance", async () => {
    const doomed = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId: doomed, pendingWindowInDays: 7 });
    const rotating = (await kms.createKey()).keyMetadata.keyId;
    await kms.enableKeyRotation({ keyId: rotating, rotationPeriodInDays: 90 });
    clock.advanceDays(91);
    const events = await eventsOf(() => kms.runMaintenance());
    const service = events.filter((e) => e.eventType === "AwsServiceEvent");
    expect(service.map((e) => e.eventName).sort()).toEqual(["DeleteKey", "RotateKey"]);
    expectServiceEvent(service.find((e) => e.eventName === "DeleteKey")!, "DeleteKey", doomed);
    expectServiceEvent(service.find((e) => e.eventName === "RotateKey")!, "RotateKey", rotating);
    // runMaintenance itself is a call, by the default principal.
    expect(events.at(-1)!.eventName).toBe("RunMaintenance");
    expect(events.at(-1)!.userIdentity.arn).toBe(APP);
  });

  test("the trail with them verifies, and no API call is shaped like one", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    await kms.listKeys({}, CALLER);
    const events = sink.events;
    expect(events.some((e) => e.eventType === "AwsServiceEvent")).toBe(true);
    expect(verifyAuditLog(events)).toMatchObject({ ok: true, count: events.length });
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
    for (const e of events.filter((x) => x.eventType === "AwsApiCall")) {
      expect(e.userIdentity.arn, e.eventName).toMatch(/^arn:aws:iam::/);
      expect(e.sourceIPAddress, e.eventName).not.toBe("AWS Internal");
    }
  });
});
