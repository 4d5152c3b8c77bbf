/**
 * Adversarial review of DataKeyCache's age limit (docs/FORMAT.md §5.9): an entry older than
 * `maxAgeMs` is never returned, and its plaintext key does not outlive that bound in memory
 * while the cache is in use.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { DataKeyCache } from "../../src/index.ts";
import { ManualClock } from "../../src/testing/index.ts";

const entry = () => ({
  dataKey: new Uint8Array(randomBytes(32)),
  encryptedDataKeys: [{ providerId: "p", providerInfo: "i", ciphertext: new Uint8Array(4) }],
});
const ONE = { messages: 1, bytes: 10 };

describe("DataKeyCache age limit", () => {
  it("a wall clock set back does not stretch an entry's life by the size of the step", () => {
    const clock = new ManualClock(1_000_000);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    cache.put("k", entry(), ONE);
    clock.set(1_000_000 - 3_600_000); // NTP steps the clock back an hour
    // Another 59 minutes pass: in real time the entry is about two hours old.
    clock.advance(3_540_000);
    expect(cache.take("k", ONE)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("expired entries nobody asks for again are dropped and zeroed by later uses of the cache", () => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const released: string[] = [];
    for (const name of ["a", "b"]) {
      cache.put(name, entry(), ONE, { release: () => released.push(name) });
    }
    clock.advance(1000);
    // A use of another entry (a miss here), one maxAgeMs after creation, sweeps both out.
    expect(cache.take("c", ONE)).toBeUndefined();
    expect(released.sort()).toEqual(["a", "b"]);
    expect(cache.size).toBe(0);
    // A put sweeps too.
    cache.put("d", entry(), ONE, { release: () => released.push("d") });
    clock.advance(1500);
    cache.put("e", entry(), ONE);
    expect(released).toContain("d");
    expect(cache.size).toBe(1);
  });

  it("the sweep never drops an entry that is still young", () => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    cache.put("old", entry(), ONE);
    clock.advance(600);
    cache.put("young", entry(), ONE);
    clock.advance(400); // old: 1000 ms (expired), young: 400 ms
    cache.put("other", entry(), ONE);
    expect(cache.size).toBe(2);
    expect(cache.take("young", ONE)).toBeDefined();
    expect(cache.take("old", ONE)).toBeUndefined();
  });
});
