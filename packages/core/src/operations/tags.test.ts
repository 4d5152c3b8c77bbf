import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { TagError } from "../errors.ts";
import type { Tag } from "../types.ts";
import { MAX_TAGS_PER_KEY, validateTags } from "./tags.ts";

const tag = (tagKey: string, tagValue = ""): Tag => ({ tagKey, tagValue });
const many = (n: number, prefix = "k") => Array.from({ length: n }, (_, i) => tag(`${prefix}${i}`));

describe("validateTags", () => {
  test("merges into the existing tags; a repeated key replaces its value", () => {
    expect(
      validateTags([tag("b", "2"), tag("a", "new")], [tag("a", "old"), tag("c", "3")]),
    ).toEqual([tag("a", "new"), tag("c", "3"), tag("b", "2")]);
  });

  test("the last of two equal keys in one call wins", () => {
    expect(validateTags([tag("a", "1"), tag("a", "2")], [])).toEqual([tag("a", "2")]);
  });

  test("does not modify its inputs", () => {
    const existing = Object.freeze([Object.freeze(tag("a", "1"))]);
    const added = Object.freeze([Object.freeze(tag("a", "2"))]);
    validateTags(added, existing);
    expect(existing).toEqual([tag("a", "1")]);
  });

  test(`allows ${MAX_TAGS_PER_KEY} tags in all, counting existing ones`, () => {
    expect(MAX_TAGS_PER_KEY).toBe(50);
    expect(validateTags(many(50), [])).toHaveLength(50);
    expect(validateTags(many(25, "new"), many(25))).toHaveLength(50);
    expect(() => validateTags(many(51), [])).toThrow(TagError);
    expect(() => validateTags([tag("one-more")], many(50))).toThrow(TagError);
    // Replacing at the limit adds nothing.
    expect(validateTags([tag("k0", "v")], many(50))).toHaveLength(50);
  });

  test("the result never exceeds the limit and holds every added tag", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 4 }), fc.string({ maxLength: 4 }))),
        fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 4 }), fc.string({ maxLength: 4 }))),
        (added, existing) => {
          const toTags = (pairs: [string, string][]) =>
            pairs.filter(([k]) => !k.toLowerCase().startsWith("aws:")).map(([k, v]) => tag(k, v));
          const base = [...new Map(toTags(existing).map((t) => [t.tagKey, t])).values()].slice(
            0,
            MAX_TAGS_PER_KEY,
          );
          let merged: Tag[];
          try {
            merged = validateTags(toTags(added), base);
          } catch (error) {
            expect(error).toBeInstanceOf(TagError);
            return;
          }
          expect(merged.length).toBeLessThanOrEqual(MAX_TAGS_PER_KEY);
          const byKey = new Map(merged.map((t) => [t.tagKey, t.tagValue]));
          const lastAdded = new Map(toTags(added).map((t) => [t.tagKey, t.tagValue]));
          for (const [k, v] of lastAdded) expect(byKey.get(k)).toBe(v);
        },
      ),
    );
  });

  test.each([
    ["a key of 128 characters", tag("k".repeat(128))],
    ["a value of 256 characters", tag("k", "v".repeat(256))],
    ["an empty value", tag("k", "")],
    ["aws in the middle", tag("my:aws:key")],
  ])("accepts %s", (_name, t) => {
    expect(validateTags([t], [])).toEqual([t]);
  });

  test.each([
    ["the aws: prefix", tag("aws:x")],
    ["the AWS: prefix", tag("AWS:x")],
    ["a key of 129 characters", tag("k".repeat(129))],
    ["an empty key", tag("")],
    ["a value of 257 characters", tag("k", "v".repeat(257))],
    ["a non-string key", { tagKey: 1, tagValue: "" }],
    ["a non-string value", { tagKey: "k", tagValue: null }],
    ["a missing value", { tagKey: "k" }],
    ["a string", "k=v"],
    ["null", null],
  ])("%s → TagError naming the position", (_name, bad) => {
    const call = () => validateTags([tag("fine"), bad as Tag], []);
    expect(call).toThrow(TagError);
    expect(call).toThrow(/tags\[1\]/);
  });

  test.each([null, "a", 5, { tagKey: "k", tagValue: "v" }])(
    "tags that are not an array (%o) → TagError",
    (tags) => {
      expect(() => validateTags(tags as never, [])).toThrow(TagError);
    },
  );
});

describe("validateTags reads plain data only", () => {
  test("refuses a class instance, whose getters could answer authorization and the write differently", () => {
    class Flipping {
      reads = 0;
      get tagKey() {
        return "env";
      }
      get tagValue() {
        return this.reads++ === 0 ? "dev" : "prod";
      }
    }
    const tag = new Flipping();
    expect(() => validateTags([tag as unknown as Tag], [])).toThrow(TagError);
    expect(() => validateTags([tag as unknown as Tag], [])).toThrow(
      `"tags[0]" must be a plain object`,
    );
    expect(() => validateTags([new Date() as unknown as Tag], [])).toThrow(TagError);
    expect(() => validateTags([["env", "dev"] as unknown as Tag], [])).toThrow(TagError);
  });

  test("accepts null-prototype objects and reads each field once", () => {
    const bare = Object.assign(Object.create(null) as Tag, { tagKey: "a", tagValue: "1" });
    expect(validateTags([bare], [])).toEqual([tag("a", "1")]);
    let reads = 0;
    const once = {
      tagKey: "b",
      get tagValue() {
        reads++;
        return reads === 1 ? "first" : "second";
      },
    };
    expect(validateTags([once], [])).toEqual([tag("b", "first")]);
    expect(reads).toBe(1);
  });
});
