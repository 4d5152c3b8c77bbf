/**
 * kms:RotationPeriodInDays and kms:ScheduleKeyDeletionPendingWindowInDays when the request
 * omits the field. Found in review: the condition key was then absent, so a Deny on the value
 * the operation applies (365, 30) was stepped around by leaving the field out, though omitting
 * a field cannot step around a Deny on its default (the project's rule for CreateKey).
 */
import { AccessDeniedError, createKms, type Kms } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";
import {
  DEFAULT_PENDING_WINDOW_IN_DAYS,
  DEFAULT_ROTATION_PERIOD_IN_DAYS,
} from "../../src/policy/request-defaults.ts";

const ROOT = "arn:aws:iam::000000000000:root";
const ROTATION_KEY = "kms:RotationPeriodInDays";
const WINDOW_KEY = "kms:ScheduleKeyDeletionPendingWindowInDays";

function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "Root", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
      ...statements,
    ],
  });
}

/** Denies `action` when `conditionKey` is greater than `days`. */
function denyAbove(action: string, conditionKey: string, days: number): Record<string, unknown> {
  return {
    Sid: "TooLong",
    Effect: "Deny",
    Principal: "*",
    Action: action,
    Resource: "*",
    Condition: { NumericGreaterThan: { [conditionKey]: String(days) } },
  };
}

let kms: Kms;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
});

async function keyWith(...statements: Record<string, unknown>[]): Promise<string> {
  return (await kms.createKey({ policy: policy(...statements) })).keyMetadata.keyId;
}

describe("kms:RotationPeriodInDays", () => {
  test("is the default when rotationPeriodInDays is omitted: a Deny on it applies", async () => {
    const keyId = await keyWith(denyAbove("kms:EnableKeyRotation", ROTATION_KEY, 180));
    await expect(
      kms.enableKeyRotation({ keyId, rotationPeriodInDays: 365 }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(kms.enableKeyRotation({ keyId })).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.getKeyRotationStatus({ keyId })).keyRotationEnabled).toBe(false);
    const explained = await kms.explain({ operation: "enableKeyRotation", request: { keyId } });
    expect(explained).toMatchObject({
      allowed: false,
      decisions: [{ reason: "explicit-deny", sid: "TooLong" }],
    });
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 180 });
  });

  test("is the default for an Allow too: omitting the field meets a bound it meets", async () => {
    // Of another account, so that only this statement allows it anything.
    const alice = "arn:aws:iam::111122223333:user/alice";
    const keyId = await keyWith({
      Sid: "AliceAtMostYearly",
      Effect: "Allow",
      Principal: { AWS: alice },
      Action: "kms:EnableKeyRotation",
      Resource: "*",
      Condition: { NumericLessThanEquals: { [ROTATION_KEY]: "365" } },
    });
    await kms.enableKeyRotation({ keyId }, { principal: alice });
    await expect(
      kms.enableKeyRotation({ keyId, rotationPeriodInDays: 400 }, { principal: alice }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("is the period the operation applies when the field is omitted", async () => {
    const keyId = await keyWith();
    await kms.enableKeyRotation({ keyId });
    expect((await kms.getKeyRotationStatus({ keyId })).rotationPeriodInDays).toBe(
      DEFAULT_ROTATION_PERIOD_IN_DAYS,
    );
  });

  test("is absent for other operations: a Deny on it stops only EnableKeyRotation", async () => {
    const keyId = await keyWith(denyAbove("kms:*", ROTATION_KEY, 180));
    await kms.describeKey({ keyId });
    await kms.disableKeyRotation({ keyId });
    await kms.getKeyRotationStatus({ keyId });
    await expect(kms.enableKeyRotation({ keyId })).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("kms:ScheduleKeyDeletionPendingWindowInDays", () => {
  test("is the default when pendingWindowInDays is omitted: a Deny on it applies", async () => {
    const keyId = await keyWith(denyAbove("kms:ScheduleKeyDeletion", WINDOW_KEY, 7));
    await expect(
      kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 30 }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(kms.scheduleKeyDeletion({ keyId })).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("Enabled");
    const explained = await kms.explain({ operation: "scheduleKeyDeletion", request: { keyId } });
    expect(explained).toMatchObject({
      allowed: false,
      decisions: [{ reason: "explicit-deny", sid: "TooLong" }],
    });
    const scheduled = await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    expect(scheduled.pendingWindowInDays).toBe(7);
  });

  test("is the window the operation applies when the field is omitted", async () => {
    const keyId = await keyWith();
    const scheduled = await kms.scheduleKeyDeletion({ keyId });
    expect(scheduled.pendingWindowInDays).toBe(DEFAULT_PENDING_WINDOW_IN_DAYS);
  });

  test("is absent for other operations: a Deny on it stops only ScheduleKeyDeletion", async () => {
    const keyId = await keyWith(denyAbove("kms:*", WINDOW_KEY, 7));
    await kms.describeKey({ keyId });
    await kms.disableKey({ keyId });
    await kms.enableKey({ keyId });
    await expect(kms.scheduleKeyDeletion({ keyId })).rejects.toBeInstanceOf(AccessDeniedError);
  });
});
