import {
  createKms,
  DAY_MS,
  InvalidCiphertextError,
  InvalidStateError,
  type Kms,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const text = (s: string) => new TextEncoder().encode(s);

let clock: ManualClock;
let kms: Kms;
let keyId: string;

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("scheduleKeyDeletion", () => {
  test.each([
    [6, false],
    [7, true],
    [30, true],
    [31, false],
    [7.5, false],
  ])("pendingWindowInDays %s accepted: %s", async (days, ok) => {
    const call = kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: days });
    if (!ok) {
      await expect(call).rejects.toBeInstanceOf(ValidationError);
      expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("Enabled");
      return;
    }
    const response = await call;
    expect(response.pendingWindowInDays).toBe(days);
    expect(response.deletionDate.getTime()).toBe(clock.now() + days * DAY_MS);
  });

  test("defaults to 30 days and returns keyId (ARN), deletionDate, keyState and the window", async () => {
    const response = await kms.scheduleKeyDeletion({ keyId });
    expect(response).toEqual({
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
      deletionDate: new Date(clock.now() + 30 * DAY_MS),
      keyState: "PendingDeletion",
      pendingWindowInDays: 30,
    });
    const { keyMetadata } = await kms.describeKey({ keyId });
    expect(keyMetadata.keyState).toBe("PendingDeletion");
    expect(keyMetadata.enabled).toBe(false);
    expect(keyMetadata.deletionDate).toEqual(response.deletionDate);
  });

  test("scheduling twice → InvalidStateError and keeps the first date", async () => {
    const first = await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    await expect(
      kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 30 }),
    ).rejects.toBeInstanceOf(InvalidStateError);
    expect((await kms.describeKey({ keyId })).keyMetadata.deletionDate).toEqual(first.deletionDate);
  });
});

describe("cancelKeyDeletion", () => {
  test("makes the key Disabled and clears the deletion fields", async () => {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    const response = await kms.cancelKeyDeletion({ keyId });
    expect(response).toEqual({ keyId: `arn:aws:kms:local:000000000000:key/${keyId}` });
    const { keyMetadata } = await kms.describeKey({ keyId });
    expect(keyMetadata.keyState).toBe("Disabled");
    expect(keyMetadata.enabled).toBe(false);
    expect("deletionDate" in keyMetadata).toBe(false);
    // The cancelled schedule is really gone: the key survives the old date.
    clock.advanceDays(8);
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([]);
    await kms.enableKey({ keyId });
    await expect(kms.encrypt({ keyId, plaintext: text("p") })).resolves.toBeDefined();
  });

  test("on a key that is not pending deletion → InvalidStateError", async () => {
    await expect(kms.cancelKeyDeletion({ keyId })).rejects.toBeInstanceOf(InvalidStateError);
  });
});

describe("the deletion window", () => {
  async function scheduled() {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: text("doomed"),
      encryptionContext: { a: "b" },
    });
    await kms.createAlias({ aliasName: "alias/doomed", targetKeyId: keyId });
    await kms.createAlias({ aliasName: "alias/doomed-too", targetKeyId: keyId });
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    return ciphertextBlob;
  }

  test("one day before it ends the key still exists and can be restored", async () => {
    const ciphertextBlob = await scheduled();
    clock.advanceDays(6);
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([]);
    expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("PendingDeletion");
    await kms.cancelKeyDeletion({ keyId });
    await kms.enableKey({ keyId });
    const { plaintext } = await kms.decrypt({ ciphertextBlob, encryptionContext: { a: "b" } });
    expect(Buffer.from(plaintext).toString()).toBe("doomed");
  });

  test("one millisecond before it ends the key still exists", async () => {
    await scheduled();
    clock.advance(7 * DAY_MS - 1);
    expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("PendingDeletion");
  });

  test("after it: describeKey → NotFoundError, old ciphertexts → InvalidCiphertextError, aliases gone", async () => {
    const ciphertextBlob = await scheduled();
    clock.advanceDays(7);
    await expect(kms.describeKey({ keyId })).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { a: "b" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect((await kms.listAliases()).aliases).toEqual([]);
    await expect(kms.describeKey({ keyId: "alias/doomed" })).rejects.toBeInstanceOf(NotFoundError);
    expect((await kms.listKeys()).keys).toEqual([]);
    // The name is free again.
    const fresh = (await kms.createKey()).keyMetadata.keyId;
    await expect(
      kms.createAlias({ aliasName: "alias/doomed", targetKeyId: fresh }),
    ).resolves.toBeUndefined();
  });

  test("a destroyed key cannot be brought back", async () => {
    await scheduled();
    clock.advanceDays(8);
    await expect(kms.cancelKeyDeletion({ keyId })).rejects.toBeInstanceOf(NotFoundError);
    await expect(kms.enableKey({ keyId })).rejects.toBeInstanceOf(NotFoundError);
  });

  test("decrypt alone destroys the key when its window has passed (no maintenance needed)", async () => {
    const ciphertextBlob = await scheduled();
    clock.advanceDays(7);
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { a: "b" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect((await kms.listKeys()).keys).toEqual([]);
  });

  test("runMaintenance destroys due keys only and reports them", async () => {
    const ciphertextBlob = await scheduled();
    const later = (await kms.createKey()).keyMetadata.keyId;
    const kept = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId: later, pendingWindowInDays: 30 });
    clock.advanceDays(7);
    const report = await kms.runMaintenance();
    expect(report).toEqual({ rotatedKeyIds: [], deletedKeyIds: [keyId] });
    expect((await kms.listKeys()).keys.map((k) => k.keyId).sort()).toEqual([kept, later].sort());
    expect((await kms.listAliases()).aliases).toEqual([]);
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { a: "b" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([]);
    clock.advanceDays(23);
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([later]);
  });
});
