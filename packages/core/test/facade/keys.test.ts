import {
  createKms,
  InvalidMarkerError,
  type Kms,
  NotFoundError,
  TagError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let clock: ManualClock;
let kms: Kms;

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
});

describe("createKey / describeKey", () => {
  test("metadata has the fields AWS returns for a symmetric key", async () => {
    const created = await kms.createKey({ description: "orders" });
    const { keyMetadata } = created;
    expect(keyMetadata.keyId).toMatch(UUID);
    expect(keyMetadata).toEqual({
      awsAccountId: "000000000000",
      keyId: keyMetadata.keyId,
      arn: `arn:aws:kms:local:000000000000:key/${keyMetadata.keyId}`,
      creationDate: new Date(clock.now()),
      enabled: true,
      description: "orders",
      keyUsage: "ENCRYPT_DECRYPT",
      keyState: "Enabled",
      origin: "AWS_KMS",
      keyManager: "CUSTOMER",
      customerMasterKeySpec: "SYMMETRIC_DEFAULT",
      keySpec: "SYMMETRIC_DEFAULT",
      encryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
      multiRegion: false,
      currentKeyMaterialId: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect("deletionDate" in keyMetadata).toBe(false);
    expect((await kms.describeKey({ keyId: keyMetadata.keyId })).keyMetadata).toEqual(keyMetadata);
  });

  test("defaults: empty description, not multi-Region; multiRegion is stored", async () => {
    const plain = (await kms.createKey()).keyMetadata;
    expect(plain.description).toBe("");
    expect(plain.multiRegion).toBe(false);
    const multi = (await kms.createKey({ multiRegion: true })).keyMetadata;
    expect((await kms.describeKey({ keyId: multi.keyId })).keyMetadata.multiRegion).toBe(true);
  });

  test("enabled mirrors the state", async () => {
    const { keyId } = (await kms.createKey()).keyMetadata;
    const meta = async () => (await kms.describeKey({ keyId })).keyMetadata;
    expect(await meta()).toMatchObject({ enabled: true, keyState: "Enabled" });
    await kms.disableKey({ keyId });
    expect(await meta()).toMatchObject({ enabled: false, keyState: "Disabled" });
    await kms.scheduleKeyDeletion({ keyId });
    expect(await meta()).toMatchObject({ enabled: false, keyState: "PendingDeletion" });
    await kms.cancelKeyDeletion({ keyId });
    await kms.enableKey({ keyId });
    expect(await meta()).toMatchObject({ enabled: true, keyState: "Enabled" });
  });

  test("key ids are distinct UUIDs", async () => {
    const ids = new Set<string>();
    for (let i = 0; i < 20; i++) ids.add((await kms.createKey()).keyMetadata.keyId);
    expect(ids.size).toBe(20);
  });

  test("custom region and account are reflected in ARNs and metadata", async () => {
    const custom = await createKms({ clock, region: "eu-west-1", account: "123456789012" });
    const { keyMetadata } = await custom.createKey();
    expect(keyMetadata.arn).toBe(`arn:aws:kms:eu-west-1:123456789012:key/${keyMetadata.keyId}`);
    expect(keyMetadata.awsAccountId).toBe("123456789012");
    expect(custom.identity).toEqual({
      partition: "aws",
      region: "eu-west-1",
      account: "123456789012",
    });
    await expect(custom.describeKey({ keyId: keyMetadata.arn })).resolves.toBeDefined();
    await expect(
      custom.describeKey({
        keyId: `arn:aws:kms:local:000000000000:key/${keyMetadata.keyId}`,
      }),
    ).rejects.toBeInstanceOf(NotFoundError);
    await custom.createAlias({ aliasName: "alias/x", targetKeyId: keyMetadata.keyId });
    expect((await custom.listAliases()).aliases[0]?.aliasArn).toBe(
      "arn:aws:kms:eu-west-1:123456789012:alias/x",
    );
    expect((await custom.listKeys()).keys[0]?.keyArn).toBe(keyMetadata.arn);
  });

  test.each(["12345", "abcdefghijkl", "1234567890123"])(
    "account %s → ValidationError",
    async (account) => {
      await expect(createKms({ clock, account })).rejects.toBeInstanceOf(ValidationError);
    },
  );

  test.each([
    ["keySpec", { keySpec: "FOO" }],
    ["customerMasterKeySpec", { customerMasterKeySpec: "FOO" }],
    ["keyUsage", { keyUsage: "FOO" }],
    ["origin", { origin: "FOO" }],
    ["multiRegion", { multiRegion: "yes" }],
    ["description", { description: 5 }],
  ])("an invalid %s → ValidationError", async (_name, request) => {
    await expect(kms.createKey(request as never)).rejects.toBeInstanceOf(ValidationError);
    expect((await kms.listKeys()).keys).toEqual([]);
  });

  test("explicit SYMMETRIC_DEFAULT / ENCRYPT_DECRYPT is accepted", async () => {
    const { keyMetadata } = await kms.createKey({
      keySpec: "SYMMETRIC_DEFAULT",
      keyUsage: "ENCRYPT_DECRYPT",
      origin: "AWS_KMS",
    });
    expect(keyMetadata.keySpec).toBe("SYMMETRIC_DEFAULT");
  });

  test("tags given at creation are stored; an invalid one → TagError and no key", async () => {
    const { keyMetadata } = await kms.createKey({
      tags: [
        { tagKey: "b", tagValue: "2" },
        { tagKey: "a", tagValue: "1" },
      ],
    });
    expect((await kms.listResourceTags({ keyId: keyMetadata.keyId })).tags).toEqual([
      { tagKey: "a", tagValue: "1" },
      { tagKey: "b", tagValue: "2" },
    ]);
    await expect(
      kms.createKey({ tags: [{ tagKey: "aws:x", tagValue: "1" }] }),
    ).rejects.toBeInstanceOf(TagError);
    expect((await kms.listKeys()).keys).toHaveLength(1);
  });

  test("describeKey of a key that never existed → NotFoundError", async () => {
    await expect(
      kms.describeKey({ keyId: "00000000-0000-4000-8000-000000000000" }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("updateKeyDescription", () => {
  test.each([
    [0, true],
    [8192, true],
    [8193, false],
  ])("a description of %i characters accepted: %s", async (length, ok) => {
    const { keyId } = (await kms.createKey({ description: "before" })).keyMetadata;
    const description = "d".repeat(length);
    const call = kms.updateKeyDescription({ keyId, description });
    if (ok) {
      await call;
      expect((await kms.describeKey({ keyId })).keyMetadata.description).toBe(description);
    } else {
      await expect(call).rejects.toBeInstanceOf(ValidationError);
      expect((await kms.describeKey({ keyId })).keyMetadata.description).toBe("before");
    }
  });

  test("createKey enforces the same limit", async () => {
    await expect(kms.createKey({ description: "d".repeat(8193) })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(kms.createKey({ description: "d".repeat(8192) })).resolves.toBeDefined();
  });

  test("works on a Disabled key", async () => {
    const { keyId } = (await kms.createKey()).keyMetadata;
    await kms.disableKey({ keyId });
    await kms.updateKeyDescription({ keyId, description: "still" });
    expect((await kms.describeKey({ keyId })).keyMetadata.description).toBe("still");
  });
});

describe("listKeys", () => {
  test("lists every key once across pages, with ARNs", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await kms.createKey()).keyMetadata.keyId);
    const seen: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await kms.listKeys({ limit: 3, ...(marker ? { marker } : {}) });
      pages++;
      expect(page.truncated).toBe(page.nextMarker !== undefined);
      for (const entry of page.keys) {
        expect(entry.keyArn).toBe(`arn:aws:kms:local:000000000000:key/${entry.keyId}`);
        seen.push(entry.keyId);
      }
      marker = page.nextMarker;
    } while (marker !== undefined);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(7);
    expect([...seen].sort()).toEqual([...ids].sort());
  });

  test("an exact page is not truncated", async () => {
    for (let i = 0; i < 3; i++) await kms.createKey();
    const page = await kms.listKeys({ limit: 3 });
    expect(page.keys).toHaveLength(3);
    expect(page.truncated).toBe(false);
    expect(page.nextMarker).toBeUndefined();
  });

  test("an empty KMS lists no keys", async () => {
    expect(await kms.listKeys()).toEqual({ keys: [], truncated: false });
  });

  test.each([
    [0, false],
    [1, true],
    [1000, true],
    [1001, false],
    [2.5, false],
    [-1, false],
  ])("limit %s accepted: %s", async (limit, ok) => {
    const call = kms.listKeys({ limit });
    if (ok) await expect(call).resolves.toBeDefined();
    else await expect(call).rejects.toBeInstanceOf(ValidationError);
  });

  test.each(["", "not a marker!", "a+b/c=", "ä"])(
    "marker %j → InvalidMarkerError",
    async (marker) => {
      await kms.createKey();
      await expect(kms.listKeys({ marker })).rejects.toBeInstanceOf(InvalidMarkerError);
    },
  );
});
