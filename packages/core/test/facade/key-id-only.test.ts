/**
 * EnableKey, DisableKey, ScheduleKeyDeletion and CancelKeyDeletion take a key id or key ARN,
 * never an alias, as in AWS (NotFoundException "Invalid keyId"): an alias re-pointed between a
 * caller's look-up and its call would make the call act on another key — for a scheduled
 * deletion, destroy it.
 */
import { createKms, type Kms, NotFoundError, ValidationError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
  await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
});

const state = async (): Promise<string> => (await kms.describeKey({ keyId })).keyMetadata.keyState;

const ALIAS_FORMS = ["alias/app", "arn:aws:kms:local:000000000000:alias/app"] as const;

describe.each(ALIAS_FORMS)("an alias (%s) is refused, the key left as it was", (alias) => {
  test("scheduleKeyDeletion", async () => {
    const call = kms.scheduleKeyDeletion({ keyId: alias, pendingWindowInDays: 7 });
    await expect(call).rejects.toBeInstanceOf(NotFoundError);
    await expect(call).rejects.toThrow(
      `Invalid keyId ${alias}: scheduleKeyDeletion takes a key id or key ARN, not an alias`,
    );
    expect(await state()).toBe("Enabled");
  });

  test("disableKey and enableKey", async () => {
    await expect(kms.disableKey({ keyId: alias })).rejects.toBeInstanceOf(NotFoundError);
    expect(await state()).toBe("Enabled");
    await kms.disableKey({ keyId });
    await expect(kms.enableKey({ keyId: alias })).rejects.toBeInstanceOf(NotFoundError);
    expect(await state()).toBe("Disabled");
  });

  test("cancelKeyDeletion", async () => {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    await expect(kms.cancelKeyDeletion({ keyId: alias })).rejects.toBeInstanceOf(NotFoundError);
    expect(await state()).toBe("PendingDeletion");
  });
});

test("an alias re-pointed after the caller looked it up cannot turn a deletion on another key", async () => {
  const other = (await kms.createKey()).keyMetadata.keyId;
  await kms.updateAlias({ aliasName: "alias/app", targetKeyId: other });
  await expect(kms.scheduleKeyDeletion({ keyId: "alias/app" })).rejects.toBeInstanceOf(
    NotFoundError,
  );
  expect((await kms.describeKey({ keyId: other })).keyMetadata.keyState).toBe("Enabled");
});

test("the key id and the key ARN are taken; the window is checked before the key", async () => {
  await expect(
    kms.scheduleKeyDeletion({ keyId: "alias/app", pendingWindowInDays: 3 }),
  ).rejects.toBeInstanceOf(ValidationError);
  await kms.disableKey({ keyId: `arn:aws:kms:local:000000000000:key/${keyId}` });
  expect(await state()).toBe("Disabled");
  await kms.enableKey({ keyId });
  await kms.scheduleKeyDeletion({ keyId: `arn:aws:kms:local:000000000000:key/${keyId}` });
  expect(await state()).toBe("PendingDeletion");
  await kms.cancelKeyDeletion({ keyId });
  expect(await state()).toBe("Disabled");
});
