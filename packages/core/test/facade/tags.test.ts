import {
  createKms,
  type Kms,
  MAX_TAGS_PER_KEY,
  type Tag,
  TagError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

const tags = (n: number, prefix = "k"): Tag[] =>
  Array.from({ length: n }, (_, i) => ({
    tagKey: `${prefix}${String(i).padStart(2, "0")}`,
    tagValue: `v${i}`,
  }));

async function allTags(id = keyId): Promise<readonly Tag[]> {
  return (await kms.listResourceTags({ keyId: id })).tags;
}

describe("tagResource / untagResource / listResourceTags", () => {
  test("tags are added, listed in key order and removed", async () => {
    await kms.tagResource({
      keyId,
      tags: [
        { tagKey: "team", tagValue: "payments" },
        { tagKey: "env", tagValue: "" },
      ],
    });
    expect(await allTags()).toEqual([
      { tagKey: "env", tagValue: "" },
      { tagKey: "team", tagValue: "payments" },
    ]);
    await kms.untagResource({ keyId, tagKeys: ["env", "missing"] });
    expect(await allTags()).toEqual([{ tagKey: "team", tagValue: "payments" }]);
  });

  test("re-tagging a key replaces its value", async () => {
    await kms.tagResource({ keyId, tags: [{ tagKey: "team", tagValue: "a" }] });
    await kms.tagResource({ keyId, tags: [{ tagKey: "team", tagValue: "b" }] });
    expect(await allTags()).toEqual([{ tagKey: "team", tagValue: "b" }]);
  });

  test("tags are per key", async () => {
    const other = (await kms.createKey()).keyMetadata.keyId;
    await kms.tagResource({ keyId, tags: [{ tagKey: "a", tagValue: "1" }] });
    expect(await allTags(other)).toEqual([]);
  });

  test(`${MAX_TAGS_PER_KEY} tags are allowed; the 51st → TagError and nothing changes`, async () => {
    expect(MAX_TAGS_PER_KEY).toBe(50);
    await kms.tagResource({ keyId, tags: tags(50) });
    expect(await allTags()).toHaveLength(50);
    const error = await kms
      .tagResource({ keyId, tags: [{ tagKey: "one-more", tagValue: "x" }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TagError);
    expect((error as TagError).code).toBe("TagException");
    expect(await allTags()).toHaveLength(50);
    // Replacing an existing tag at the limit is fine.
    await kms.tagResource({ keyId, tags: [{ tagKey: "k00", tagValue: "new" }] });
    expect((await allTags())[0]).toEqual({ tagKey: "k00", tagValue: "new" });
  });

  test("51 tags in one call → TagError", async () => {
    await expect(kms.tagResource({ keyId, tags: tags(51) })).rejects.toBeInstanceOf(TagError);
    expect(await allTags()).toEqual([]);
  });

  test.each([
    ["the aws: prefix", { tagKey: "aws:owner", tagValue: "x" }],
    ["the AWS: prefix in any case", { tagKey: "AwS:owner", tagValue: "x" }],
    ["a key of 129 characters", { tagKey: "k".repeat(129), tagValue: "x" }],
    ["an empty key", { tagKey: "", tagValue: "x" }],
    ["a value of 257 characters", { tagKey: "k", tagValue: "v".repeat(257) }],
    ["a non-string value", { tagKey: "k", tagValue: 5 }],
    ["a missing value", { tagKey: "k" }],
    ["null", null],
  ])("%s → TagError and no tag is stored", async (_name, bad) => {
    const call = kms.tagResource({
      keyId,
      tags: [{ tagKey: "fine", tagValue: "1" }, bad] as unknown as Tag[],
    });
    await expect(call).rejects.toBeInstanceOf(TagError);
    expect(await allTags()).toEqual([]);
  });

  test("a key of 128 and a value of 256 characters are allowed", async () => {
    const tag = { tagKey: "k".repeat(128), tagValue: "v".repeat(256) };
    await kms.tagResource({ keyId, tags: [tag] });
    expect(await allTags()).toEqual([tag]);
  });

  test("listResourceTags pages with limit and marker", async () => {
    await kms.tagResource({ keyId, tags: tags(12) });
    const seen: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await kms.listResourceTags({ keyId, limit: 5, ...(marker ? { marker } : {}) });
      pages++;
      expect(page.truncated).toBe(page.nextMarker !== undefined);
      seen.push(...page.tags.map((t) => t.tagKey));
      marker = page.nextMarker;
    } while (marker !== undefined);
    expect(pages).toBe(3);
    expect(seen).toEqual(tags(12).map((t) => t.tagKey));
  });

  test.each([
    [0, false],
    [1, true],
    [50, true],
    [51, false],
  ])("listResourceTags limit %i accepted: %s", async (limit, ok) => {
    const call = kms.listResourceTags({ keyId, limit });
    if (ok) await expect(call).resolves.toBeDefined();
    else await expect(call).rejects.toBeInstanceOf(ValidationError);
  });

  test("untagResource with non-string keys → TagError", async () => {
    await expect(
      kms.untagResource({ keyId, tagKeys: [5] as unknown as string[] }),
    ).rejects.toBeInstanceOf(TagError);
  });
});
