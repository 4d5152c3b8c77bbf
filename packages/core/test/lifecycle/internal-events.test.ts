/**
 * Destruction at the end of a deletion window and automatic rotation are work the KMS does on
 * its own, inside whichever call first uses (or lists) the key, or in runMaintenance(). Each is
 * recorded as an event of its own naming the key, as AWS records its DeleteKey and RotateKey
 * service events, and a dry run does neither (it changes nothing, docs/POLICY.md).
 */
import {
  type AuditEvent,
  createKms,
  DryRunOperationError,
  InvalidCiphertextError,
  type Kms,
  KmsInternalError,
  MemoryAuditSink,
  MemoryKeyStore,
  NotFoundError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const READER = { principal: "arn:aws:iam::000000000000:user/reader" };
const plaintext = new Uint8Array([1, 2, 3]);

let clock: ManualClock;
let store: MemoryKeyStore;
let sink: MemoryAuditSink;
let kms: Kms;

beforeEach(async () => {
  clock = new ManualClock();
  store = new MemoryKeyStore();
  sink = new MemoryAuditSink();
  kms = await createKms({ clock, store, audit: sink });
});

const arnOf = (keyId: string) => `arn:aws:kms:local:000000000000:key/${keyId}`;

/** The events written from `from` (an index into the trail) on. */
const since = (from: number): readonly AuditEvent[] => sink.events.slice(from);

const named = (events: readonly AuditEvent[], eventName: string) =>
  events.filter((e) => e.eventName === eventName);

async function keyPastItsWindow(): Promise<string> {
  const keyId = (await kms.createKey({ description: "to be destroyed" })).keyMetadata.keyId;
  await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
  return keyId;
}

async function keyDueForRotation(): Promise<string> {
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  await kms.enableKeyRotation({ keyId, rotationPeriodInDays: 90 });
  return keyId;
}

/** One DeleteKey event naming `keyId` alone, recorded as the KMS's own work, not as the caller's. */
function expectDeleteKeyEvent(events: readonly AuditEvent[], keyId: string): AuditEvent {
  const deletes = named(events, "DeleteKey");
  expect(deletes).toHaveLength(1);
  const event = deletes[0]!;
  expect(event.resources.map((r) => r.ARN)).toEqual([arnOf(keyId)]);
  expect(event.errorCode).toBeUndefined();
  expect(event.readOnly).toBe(false);
  expect(event.userIdentity).toStrictEqual({
    accountId: "000000000000",
    invokedBy: "AWS Internal",
  });
  expect(event.eventType).toBe("AwsServiceEvent");
  expect(event.requestParameters).toEqual({ keyId, deletionDate: expect.any(String) });
  return event;
}

describe("a key destroyed at the end of its deletion window", () => {
  test("by a listKeys of a principal unrelated to the key: a DeleteKey event names it", async () => {
    const keyId = await keyPastItsWindow();
    clock.advanceDays(8);
    const from = sink.events.length;
    const listed = await kms.listKeys({}, READER);
    expect(listed.keys.map((k) => k.keyId)).not.toContain(keyId);

    const events = since(from);
    expect(events.map((e) => e.eventName)).toEqual(["DeleteKey", "ListKeys"]);
    const deleted = expectDeleteKeyEvent(events, keyId);
    // The same request id as the call it happened in: the trail tells which call that was.
    expect(deleted.requestID).toBe(events[1]!.requestID);
    expect(deleted.requestParameters?.deletionDate).toBe(
      new Date(clock.now() - 1 * 86_400_000).toISOString(),
    );
    expect(await store.getKey(keyId)).toBeUndefined();
  });

  test.each([
    ["describeKey", (k: Kms, keyId: string) => k.describeKey({ keyId }), NotFoundError],
    ["encrypt", (k: Kms, keyId: string) => k.encrypt({ keyId, plaintext }), NotFoundError],
    [
      "getKeyRotationStatus",
      (k: Kms, keyId: string) => k.getKeyRotationStatus({ keyId }),
      NotFoundError,
    ],
  ])("on %s: a DeleteKey event names it, before the call's own", async (operation, call, error) => {
    const keyId = await keyPastItsWindow();
    clock.advanceDays(8);
    const from = sink.events.length;
    await expect(call(kms, keyId)).rejects.toBeInstanceOf(error);
    const events = since(from);
    expect(events.map((e) => e.eventName)).toEqual([
      "DeleteKey",
      operation.charAt(0).toUpperCase() + operation.slice(1),
    ]);
    expectDeleteKeyEvent(events, keyId);
    // Destroyed once, recorded once.
    await expect(kms.describeKey({ keyId })).rejects.toBeInstanceOf(NotFoundError);
    expect(named(since(from), "DeleteKey")).toHaveLength(1);
  });

  test("on decrypt of one of its ciphertexts: a DeleteKey event names it", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(7);
    const from = sink.events.length;
    await expect(kms.decrypt({ ciphertextBlob })).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(since(from).map((e) => e.eventName)).toEqual(["DeleteKey", "Decrypt"]);
    expectDeleteKeyEvent(since(from), keyId);
  });

  test("through an alias (listAliases) or a retirable grant (listRetirableGrants)", async () => {
    const aliased = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/doomed", targetKeyId: aliased });
    await kms.scheduleKeyDeletion({ keyId: aliased, pendingWindowInDays: 7 });
    const granted = (await kms.createKey()).keyMetadata.keyId;
    const retiringPrincipal = "arn:aws:iam::000000000000:user/retirer";
    await kms.createGrant({
      keyId: granted,
      granteePrincipal: retiringPrincipal,
      retiringPrincipal,
      operations: ["Decrypt"],
    });
    await kms.scheduleKeyDeletion({ keyId: granted, pendingWindowInDays: 7 });
    clock.advanceDays(8);

    let from = sink.events.length;
    expect((await kms.listAliases()).aliases.map((a) => a.aliasName)).not.toContain("alias/doomed");
    expect(since(from).map((e) => e.eventName)).toEqual(["DeleteKey", "ListAliases"]);
    expectDeleteKeyEvent(since(from), aliased);

    from = sink.events.length;
    expect((await kms.listRetirableGrants({ retiringPrincipal })).grants).toEqual([]);
    expect(since(from).map((e) => e.eventName)).toEqual(["DeleteKey", "ListRetirableGrants"]);
    expectDeleteKeyEvent(since(from), granted);
  });

  test("by runMaintenance: a DeleteKey event per key, besides RunMaintenance's report", async () => {
    const first = await keyPastItsWindow();
    const second = await keyPastItsWindow();
    const kept = (await kms.createKey()).keyMetadata.keyId;
    clock.advanceDays(8);
    const from = sink.events.length;
    const report = await kms.runMaintenance();
    expect([...report.deletedKeyIds].sort()).toEqual([first, second].sort());
    const events = since(from);
    expect(events.at(-1)!.eventName).toBe("RunMaintenance");
    const deletes = named(events, "DeleteKey");
    expect(deletes.flatMap((e) => e.resources.map((r) => r.ARN)).sort()).toEqual(
      [arnOf(first), arnOf(second)].sort(),
    );
    for (const e of deletes) expect(e.requestID).toBe(events.at(-1)!.requestID);
    expect(JSON.stringify(events)).not.toContain(kept);
    // Nothing left to destroy: nothing more recorded.
    const again = sink.events.length;
    await kms.runMaintenance();
    expect(since(again).map((e) => e.eventName)).toEqual(["RunMaintenance"]);
  });

  test("a cancelled deletion destroys nothing and records no DeleteKey", async () => {
    const keyId = await keyPastItsWindow();
    await kms.cancelKeyDeletion({ keyId });
    clock.advanceDays(8);
    await kms.describeKey({ keyId });
    await kms.runMaintenance();
    expect(named(sink.events, "DeleteKey")).toEqual([]);
  });
});

describe("an automatic rotation", () => {
  test("inside an encrypt: a RotateKey event names the key and its new key material", async () => {
    const keyId = await keyDueForRotation();
    const before = (await kms.describeKey({ keyId })).keyMetadata.currentKeyMaterialId;
    clock.advanceDays(91);
    const from = sink.events.length;
    await kms.encrypt({ keyId, plaintext }, READER);
    const events = since(from);
    expect(events.map((e) => e.eventName)).toEqual(["RotateKey", "Encrypt"]);
    const rotated = events[0]!;
    const after = (await kms.describeKey({ keyId })).keyMetadata.currentKeyMaterialId;
    expect(after).not.toBe(before);
    expect(rotated.resources.map((r) => r.ARN)).toEqual([arnOf(keyId)]);
    expect(rotated.userIdentity).toStrictEqual({
      accountId: "000000000000",
      invokedBy: "AWS Internal",
    });
    expect(rotated.requestID).toBe(events[1]!.requestID);
    expect(rotated.requestParameters).toEqual({ keyId, keyMaterialId: after });
    expect(rotated.additionalEventData?.keyMaterialId).toBe(after);
    // Rotated once, recorded once: the next encrypt finds nothing due.
    await kms.encrypt({ keyId, plaintext });
    expect(named(since(from), "RotateKey")).toHaveLength(1);
    expect((await kms.listKeyRotations({ keyId })).rotations).toHaveLength(1);
  });

  test("by runMaintenance: a RotateKey event per rotated key", async () => {
    const due = await keyDueForRotation();
    const notDue = (await kms.createKey()).keyMetadata.keyId;
    clock.advanceDays(91);
    const from = sink.events.length;
    expect((await kms.runMaintenance()).rotatedKeyIds).toEqual([due]);
    const events = since(from);
    expect(events.map((e) => e.eventName)).toEqual(["RotateKey", "RunMaintenance"]);
    expect(events[0]!.resources.map((r) => r.ARN)).toEqual([arnOf(due)]);
    expect(events[0]!.requestID).toBe(events[1]!.requestID);
    expect(JSON.stringify(events)).not.toContain(notDue);
  });
});

test("no DeleteKey or RotateKey event holds key material", async () => {
  const destroyed = await keyPastItsWindow();
  const rotated = await keyDueForRotation();
  // Every stored (wrapped) material of both keys, in the encodings a JSON event could hold it.
  const encodings: string[] = [];
  const noteMaterial = async (keyId: string) => {
    for (const version of (await store.getKey(keyId))!.versions) {
      const bytes = Buffer.from(version.wrappedMaterial);
      encodings.push(bytes.toString("hex"), bytes.toString("base64"), bytes.toString("base64url"));
    }
  };
  await noteMaterial(destroyed);
  clock.advanceDays(91);
  await kms.encrypt({ keyId: rotated, plaintext });
  await noteMaterial(rotated);
  await kms.runMaintenance();

  const internal = sink.events.filter((e) => /^(DeleteKey|RotateKey)$/.test(e.eventName));
  expect(internal.map((e) => e.eventName).sort()).toEqual(["DeleteKey", "RotateKey"]);
  // CloudTrail's mark for work the service did on its own; the callers' events stay API calls.
  expect(internal.map((e) => e.eventType)).toEqual(["AwsServiceEvent", "AwsServiceEvent"]);
  expect(
    sink.events
      .filter((e) => !/^(DeleteKey|RotateKey)$/.test(e.eventName))
      .every((e) => e.eventType === "AwsApiCall"),
  ).toBe(true);
  const json = JSON.stringify(internal);
  expect(encodings.length).toBeGreaterThanOrEqual(6);
  for (const encoded of encodings) expect(json).not.toContain(encoded);
  expect(json).not.toMatch(/wrappedMaterial|versions|plaintext/i);
  expect((await kms.audit.verify()).ok).toBe(true);
});

describe("audit failure (the trail's failure mode applies)", () => {
  // A store of its own: the one from beforeEach belongs to the Kms opened there.
  beforeEach(() => {
    store = new MemoryKeyStore();
  });

  class FailingOn extends MemoryAuditSink {
    readonly eventName: string;
    constructor(eventName: string) {
      super();
      this.eventName = eventName;
    }
    override async write(events: readonly AuditEvent[]): Promise<void> {
      if (events.some((e) => e.eventName === this.eventName)) throw new Error("disk full");
      return super.write(events);
    }
  }

  test("fail-closed: the call fails when its DeleteKey event is not written", async () => {
    const failing = new FailingOn("DeleteKey");
    kms = await createKms({ clock, store, audit: failing });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    await expect(kms.listKeys()).rejects.toBeInstanceOf(KmsInternalError);
    // Done, not undone: the key is gone, as a call's effect stays when its event failed.
    expect(await store.getKey(keyId)).toBeUndefined();
  });

  test("fail-closed: an encrypt fails when its RotateKey event is not written", async () => {
    kms = await createKms({ clock, store, audit: new FailingOn("RotateKey") });
    const keyId = await keyDueForRotation();
    clock.advanceDays(91);
    await expect(kms.encrypt({ keyId, plaintext })).rejects.toBeInstanceOf(KmsInternalError);
  });

  test("fail-open: the call succeeds and the failure goes to onError", async () => {
    const errors: unknown[] = [];
    kms = await createKms({
      clock,
      store,
      audit: {
        sink: new FailingOn("DeleteKey"),
        failClosed: false,
        onError: (e) => errors.push(e),
      },
    });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    await expect(kms.listKeys()).resolves.toMatchObject({ keys: [] });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(errors.length).toBeGreaterThanOrEqual(1);
  });
});

describe("dryRun changes nothing", () => {
  async function rotations(keyId: string): Promise<number> {
    return (await store.getKey(keyId))!.versions.length - 1;
  }

  test("a due rotation is left to the next real use, whichever operation is dry-run", async () => {
    const keyId = await keyDueForRotation();
    const source = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext });
    const stored = await store.getKey(keyId);
    clock.advanceDays(91);
    const from = sink.events.length;
    const dryRuns: [string, () => Promise<unknown>][] = [
      ["encrypt", () => kms.encrypt({ keyId, plaintext, dryRun: true })],
      ["generateDataKey", () => kms.generateDataKey({ keyId, keySpec: "AES_256", dryRun: true })],
      [
        "generateDataKeyWithoutPlaintext",
        () => kms.generateDataKeyWithoutPlaintext({ keyId, numberOfBytes: 16, dryRun: true }),
      ],
      [
        "generateDataKeyPair",
        () => kms.generateDataKeyPair({ keyId, keyPairSpec: "ECC_NIST_P256", dryRun: true }),
      ],
      ["reEncrypt", () => kms.reEncrypt({ ciphertextBlob, destinationKeyId: keyId, dryRun: true })],
    ];
    for (const [operation, dryRun] of dryRuns) {
      await expect(dryRun(), operation).rejects.toBeInstanceOf(DryRunOperationError);
    }
    expect(await rotations(keyId)).toBe(0);
    expect(await store.getKey(keyId)).toEqual(stored);
    expect(named(since(from), "RotateKey")).toEqual([]);
    expect((await kms.listKeyRotations({ keyId })).rotations).toEqual([]);

    // The real call then rotates, once, and records it.
    await kms.encrypt({ keyId, plaintext });
    expect(await rotations(keyId)).toBe(1);
    expect(named(since(from), "RotateKey")).toHaveLength(1);
  });

  test("a key past its deletion window is answered as the real call would, not destroyed", async () => {
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    const grantee = "arn:aws:iam::000000000000:user/grantee";
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: grantee,
      operations: ["Decrypt"],
    });
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    const stored = await store.getKey(keyId);
    clock.advanceDays(8);
    const from = sink.events.length;
    const dryRuns: [string, () => Promise<unknown>, new (...args: never[]) => Error][] = [
      ["encrypt", () => kms.encrypt({ keyId, plaintext, dryRun: true }), NotFoundError],
      ["decrypt", () => kms.decrypt({ ciphertextBlob, dryRun: true }), InvalidCiphertextError],
      [
        "createGrant",
        () =>
          kms.createGrant({
            keyId,
            granteePrincipal: grantee,
            operations: ["Encrypt"],
            dryRun: true,
          }),
        NotFoundError,
      ],
      ["retireGrant", () => kms.retireGrant({ keyId, grantId, dryRun: true }), NotFoundError],
      ["revokeGrant", () => kms.revokeGrant({ keyId, grantId, dryRun: true }), NotFoundError],
    ];
    for (const [operation, dryRun, error] of dryRuns) {
      await expect(dryRun(), operation).rejects.toBeInstanceOf(error);
    }
    expect(await store.getKey(keyId)).toEqual(stored);
    expect(named(since(from), "DeleteKey")).toEqual([]);

    // The real call answers the same, and destroys it.
    await expect(kms.encrypt({ keyId, plaintext })).rejects.toBeInstanceOf(NotFoundError);
    expect(await store.getKey(keyId)).toBeUndefined();
    expectDeleteKeyEvent(since(from), keyId);
  });
});
