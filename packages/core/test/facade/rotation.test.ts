import {
  createKms,
  DAY_MS,
  type Kms,
  LimitExceededError,
  MAX_ON_DEMAND_ROTATIONS,
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

async function rotationCount(): Promise<number> {
  return (await kms.listKeyRotations({ keyId })).rotations.length;
}

async function currentMaterial(): Promise<string | undefined> {
  return (await kms.describeKey({ keyId })).keyMetadata.currentKeyMaterialId;
}

describe("enableKeyRotation", () => {
  test.each([
    [89, false],
    [90, true],
    [365, true],
    [2560, true],
    [2561, false],
    [90.5, false],
  ])("rotationPeriodInDays %s accepted: %s", async (days, ok) => {
    const call = kms.enableKeyRotation({ keyId, rotationPeriodInDays: days });
    if (!ok) {
      await expect(call).rejects.toBeInstanceOf(ValidationError);
      expect((await kms.getKeyRotationStatus({ keyId })).keyRotationEnabled).toBe(false);
      return;
    }
    await call;
    const status = await kms.getKeyRotationStatus({ keyId });
    expect(status.rotationPeriodInDays).toBe(days);
    expect(status.nextRotationDate?.getTime()).toBe(clock.now() + days * DAY_MS);
  });

  test("defaults to 365 days; getKeyRotationStatus reports every field", async () => {
    const before = await kms.getKeyRotationStatus({ keyId });
    expect(before).toEqual({
      keyRotationEnabled: false,
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
    });
    await kms.enableKeyRotation({ keyId });
    const after = await kms.getKeyRotationStatus({ keyId });
    expect(after).toEqual({
      keyRotationEnabled: true,
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
      rotationPeriodInDays: 365,
      nextRotationDate: new Date(clock.now() + 365 * DAY_MS),
    });
  });

  test("disableKeyRotation clears the schedule, and nothing rotates afterwards", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    await kms.disableKeyRotation({ keyId });
    expect(await kms.getKeyRotationStatus({ keyId })).toEqual({
      keyRotationEnabled: false,
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
    });
    clock.advanceDays(400);
    await kms.encrypt({ keyId, plaintext: text("p") });
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
    expect(await rotationCount()).toBe(0);
  });
});

describe("automatic rotation", () => {
  test("does not happen before it is due", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    clock.advance(90 * DAY_MS - 1);
    await kms.encrypt({ keyId, plaintext: text("p") });
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
    expect(await rotationCount()).toBe(0);
  });

  test("happens on use once due, and the next one is a period later", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    const original = await currentMaterial();
    clock.advanceDays(90);
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("p") });
    const { rotations } = await kms.listKeyRotations({ keyId });
    expect(rotations).toHaveLength(1);
    expect(rotations[0]).toMatchObject({
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
      rotationType: "AUTOMATIC",
      rotationDate: new Date(clock.now()),
    });
    const current = await currentMaterial();
    expect(current).not.toBe(original);
    expect(rotations[0]!.keyMaterialId).toBe(current);
    // The ciphertext made by the use that triggered the rotation is under the new material.
    expect((await kms.decrypt({ ciphertextBlob })).keyMaterialId).toBe(current);
    const status = await kms.getKeyRotationStatus({ keyId });
    expect(status.nextRotationDate?.getTime()).toBe(clock.now() + 90 * DAY_MS);
  });

  test("happens via runMaintenance for an unused key, which reports it", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    const idle = (await kms.createKey()).keyMetadata.keyId;
    clock.advanceDays(91);
    const report = await kms.runMaintenance();
    expect(report.rotatedKeyIds).toEqual([keyId]);
    expect(report.deletedKeyIds).toEqual([]);
    expect(await rotationCount()).toBe(1);
    expect((await kms.listKeyRotations({ keyId: idle })).rotations).toEqual([]);
    // Nothing more is due right after.
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
  });

  test("never happens while Disabled; re-enabling and using the key rotates it", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    await kms.disableKey({ keyId });
    clock.advanceDays(200);
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
    await expect(kms.encrypt({ keyId, plaintext: text("p") })).rejects.toMatchObject({
      code: "DisabledException",
    });
    expect(await rotationCount()).toBe(0);
    await kms.enableKey({ keyId });
    await kms.encrypt({ keyId, plaintext: text("p") });
    expect(await rotationCount()).toBe(1);
  });

  test("never happens while PendingDeletion; after cancel and enable, use rotates", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    clock.advanceDays(80);
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 30 });
    clock.advanceDays(20); // rotation due since day 90; deletion at day 110
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
    expect(await rotationCount()).toBe(0);
    await kms.cancelKeyDeletion({ keyId });
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([]);
    expect(await rotationCount()).toBe(0);
    await kms.enableKey({ keyId });
    await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    expect(await rotationCount()).toBe(1);
  });

  test("ciphertexts from every version still decrypt, each under its own material", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    const made: { blob: Uint8Array; plaintext: string; material: string | undefined }[] = [];
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) clock.advanceDays(90);
      else await kms.rotateKeyOnDemand({ keyId });
      const plaintext = `version ${i}`;
      const { ciphertextBlob } = await kms.encrypt({
        keyId,
        plaintext: text(plaintext),
        encryptionContext: { i: String(i) },
      });
      made.push({ blob: ciphertextBlob, plaintext, material: await currentMaterial() });
    }
    const { rotations } = await kms.listKeyRotations({ keyId });
    expect(rotations.map((r) => r.rotationType)).toEqual([
      "AUTOMATIC",
      "ON_DEMAND",
      "AUTOMATIC",
      "ON_DEMAND",
      "AUTOMATIC",
      "ON_DEMAND",
    ]);
    expect(new Set(made.map((m) => m.material)).size).toBe(6);
    for (const [i, m] of made.entries()) {
      const decrypted = await kms.decrypt({
        ciphertextBlob: m.blob,
        encryptionContext: { i: String(i) },
      });
      expect(Buffer.from(decrypted.plaintext).toString()).toBe(m.plaintext);
      expect(decrypted.keyMaterialId).toBe(m.material);
    }
  });
});

describe("rotateKeyOnDemand", () => {
  test(`allows ${MAX_ON_DEMAND_ROTATIONS} rotations per key; the next → LimitExceededError`, async () => {
    expect(MAX_ON_DEMAND_ROTATIONS).toBe(25);
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: text("first") });
    for (let i = 0; i < 25; i++) {
      const response = await kms.rotateKeyOnDemand({ keyId });
      expect(response.keyId).toBe(`arn:aws:kms:local:000000000000:key/${keyId}`);
    }
    const error = await kms.rotateKeyOnDemand({ keyId }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LimitExceededError);
    expect((error as LimitExceededError).code).toBe("LimitExceededException");
    expect(await rotationCount()).toBe(25);
    // The limit is per key.
    const other = (await kms.createKey()).keyMetadata.keyId;
    await expect(kms.rotateKeyOnDemand({ keyId: other })).resolves.toBeDefined();
    // Automatic rotation is not limited by the on-demand quota.
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
    clock.advanceDays(90);
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([keyId]);
    const decrypted = await kms.decrypt({ ciphertextBlob });
    expect(Buffer.from(decrypted.plaintext).toString()).toBe("first");
  });

  test("does not move the automatic schedule", async () => {
    await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 100 });
    const scheduled = (await kms.getKeyRotationStatus({ keyId })).nextRotationDate;
    clock.advanceDays(50);
    await kms.rotateKeyOnDemand({ keyId });
    expect((await kms.getKeyRotationStatus({ keyId })).nextRotationDate).toEqual(scheduled);
    clock.advanceDays(50);
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([keyId]);
    const types = (await kms.listKeyRotations({ keyId })).rotations.map((r) => r.rotationType);
    expect(types).toEqual(["ON_DEMAND", "AUTOMATIC"]);
  });

  test("works with rotation disabled and leaves it disabled", async () => {
    await kms.rotateKeyOnDemand({ keyId });
    expect(await kms.getKeyRotationStatus({ keyId })).toEqual({
      keyRotationEnabled: false,
      keyId: `arn:aws:kms:local:000000000000:key/${keyId}`,
    });
    const [rotation] = (await kms.listKeyRotations({ keyId })).rotations;
    expect(rotation?.rotationType).toBe("ON_DEMAND");
    expect(rotation?.keyMaterialId).toBe(await currentMaterial());
  });
});

describe("listKeyRotations", () => {
  test("is empty for a new key (the original material is not a rotation)", async () => {
    expect(await kms.listKeyRotations({ keyId })).toEqual({ rotations: [], truncated: false });
  });

  test("pages with limit and marker, in rotation order, without repeats", async () => {
    for (let i = 0; i < 7; i++) {
      clock.advanceDays(1);
      await kms.rotateKeyOnDemand({ keyId });
    }
    const seen: string[] = [];
    const dates: number[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await kms.listKeyRotations({ keyId, limit: 3, ...(marker ? { marker } : {}) });
      pages++;
      expect(page.rotations.length).toBeLessThanOrEqual(3);
      expect(page.truncated).toBe(page.nextMarker !== undefined);
      seen.push(...page.rotations.map((r) => r.keyMaterialId));
      dates.push(...page.rotations.map((r) => r.rotationDate.getTime()));
      marker = page.nextMarker;
    } while (marker !== undefined);
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(7);
    expect(dates).toEqual([...dates].sort((a, b) => a - b));
  });

  test.each([0, 1001])("limit %i → ValidationError", async (limit) => {
    await expect(kms.listKeyRotations({ keyId, limit })).rejects.toBeInstanceOf(ValidationError);
  });

  test("an invalid marker → InvalidMarkerException", async () => {
    await expect(kms.listKeyRotations({ keyId, marker: "not a marker!" })).rejects.toMatchObject({
      code: "InvalidMarkerException",
    });
  });
});
