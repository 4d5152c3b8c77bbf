import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import {
  type CachedDataKey,
  DataKeyCache,
  type DataKeyUsage,
  dataKeyCacheKey,
  type PreparedDataKey,
} from "./data-key-cache.ts";

/**
 * Defects found in an adversarial review of DataKeyCache: each is a way an entry could serve
 * past one of its limits, or be handed to a consumer it was not made for.
 */

const ONE: DataKeyUsage = { messages: 1, bytes: 10 };
const entry = (): CachedDataKey => ({
  dataKey: new Uint8Array(randomBytes(32)),
  encryptedDataKeys: [],
});

function released(names: string[], name: string): PreparedDataKey {
  return { release: () => names.push(name) };
}

describe("a clock set back", () => {
  test("expires entries made before the step too, not only those made 'after' now", () => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const gone: string[] = [];
    cache.put("k", entry(), ONE, released(gone, "k"));
    clock.advance(999);
    expect(cache.take("k", ONE)).toBeDefined();
    // Set back 499 ms: the entry, 999 ms old, would read as 500 ms old and serve another 500.
    clock.set(500);
    expect(cache.take("k", ONE)).toBeUndefined();
    expect(gone).toEqual(["k"]);
    expect(cache.size).toBe(0);
    // Entries made after the step live their full age from it.
    cache.put("k", entry(), ONE);
    clock.advance(999);
    expect(cache.take("k", ONE)).toBeDefined();
  });

  test("a put notices the step as a use does", () => {
    const clock = new ManualClock(10_000);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const gone: string[] = [];
    cache.put("a", entry(), ONE, released(gone, "a"));
    clock.advance(900);
    cache.put("b", entry(), ONE);
    clock.advance(-100);
    cache.put("c", entry(), ONE);
    expect(gone).toEqual(["a"]);
    expect(cache.take("a", ONE)).toBeUndefined();
    expect(cache.take("b", ONE)).toBeUndefined();
    expect(cache.take("c", ONE)).toBeDefined();
  });

  test("a clock that reads NaN expires every entry, those made at NaN included", () => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    cache.put("before", entry(), ONE);
    clock.set(Number.NaN);
    expect(cache.take("before", ONE)).toBeUndefined();
    cache.put("during", entry(), ONE);
    clock.set(100);
    expect(cache.take("during", ONE)).toBeUndefined();
    // Sweeping works again once the clock does.
    const gone: string[] = [];
    cache.put("later", entry(), ONE, released(gone, "later"));
    clock.advance(1000);
    cache.take("other", ONE);
    expect(gone).toEqual(["later"]);
  });
});

describe("usage counts", () => {
  const bad: [string, DataKeyUsage][] = [
    ["NaN messages", { messages: Number.NaN, bytes: 0 }],
    ["NaN bytes", { messages: 1, bytes: Number.NaN }],
    ["negative messages", { messages: -5, bytes: 0 }],
    ["negative bytes", { messages: 1, bytes: -1000 }],
    ["fractional messages", { messages: 0.5, bytes: 0 }],
    ["infinite bytes", { messages: 1, bytes: Number.POSITIVE_INFINITY }],
  ];

  test.each(bad)("%s are refused, and the limits still hold exactly", (_, usage) => {
    const cache = new DataKeyCache({ maxAgeMs: 1000, maxMessages: 3, maxBytes: 30 });
    cache.put("k", entry(), ONE);
    expect(() => cache.take("k", usage)).toThrow(ValidationError);
    expect(() => cache.use("k", usage)).toThrow(ValidationError);
    // One use charged at put, two more fit; the fourth is past maxMessages (and maxBytes).
    expect(cache.take("k", ONE)).toBeDefined();
    expect(cache.take("k", ONE)).toBeDefined();
    expect(cache.take("k", ONE)).toBeUndefined();
  });

  test.each(bad)("%s are refused by put, which releases the prepared form", (_, usage) => {
    const cache = new DataKeyCache({ maxAgeMs: 1000 });
    const gone: string[] = [];
    expect(() => cache.put("k", entry(), usage, released(gone, "k"))).toThrow(ValidationError);
    expect(gone).toEqual(["k"]);
    expect(cache.size).toBe(0);
  });
});

describe("cache keys", () => {
  test("a suite label that spells a suite id is another suite", () => {
    const parts = {
      purpose: "encrypt",
      keyringIdentity: "ring",
      encryptionContext: new Uint8Array([1, 2]),
    } as const;
    expect(dataKeyCacheKey({ ...parts, suite: 0x0478 })).not.toBe(
      dataKeyCacheKey({ ...parts, suite: "1144" }),
    );
    expect(dataKeyCacheKey({ ...parts, suite: 1 })).not.toBe(
      dataKeyCacheKey({ ...parts, suite: "1" }),
    );
  });
});

describe("clear()", () => {
  test("releases each entry once, when a release drops or replaces another entry", () => {
    const cache = new DataKeyCache({ maxAgeMs: 1000 });
    const gone: string[] = [];
    cache.put("a", undefined, ONE, {
      release: () => {
        gone.push("a");
        cache.delete("b");
        cache.put("b", undefined, ONE, released(gone, "b2"));
      },
    });
    cache.put("b", undefined, ONE, released(gone, "b1"));
    cache.clear();
    expect(gone).toEqual(["a", "b1"]);
    // The entry put while clearing is still held, so still released when it goes.
    expect(cache.size).toBe(1);
    cache.clear();
    expect(gone).toEqual(["a", "b1", "b2"]);
  });
});
