import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { ManualClock } from "../testing/manual-clock.ts";
import { DataKeyCache, type DataKeyCacheOptions, type DataKeyUsage } from "./data-key-cache.ts";

/**
 * The cache keeps its own copy of every key: whatever makes an entry leave zeroes that copy,
 * and never the caller's key or a copy handed out by take().
 */

const ONE: DataKeyUsage = { messages: 1, bytes: 10 };
const NONE: DataKeyUsage = { messages: 0, bytes: 0 };

type Fill = (this: Uint8Array, ...args: unknown[]) => Uint8Array;

/** Runs `act` and tells whether it zeroed a buffer other than `key` that held `key`'s bytes. */
function zeroesACopyOf(key: Uint8Array, act: () => void): boolean {
  // Uint8Array#fill is %TypedArray%.prototype.fill (Buffer has its own).
  const typed = Object.getPrototypeOf(Uint8Array.prototype) as { fill: Fill };
  const fill = typed.fill;
  const bytes = Buffer.from(key);
  let zeroed = false;
  typed.fill = function (this: Uint8Array, ...args: unknown[]) {
    const held = this !== key && bytes.equals(Buffer.from(this));
    const result = fill.apply(this, args);
    if (held && this.every((b) => b === 0)) zeroed = true;
    return result;
  };
  try {
    act();
  } finally {
    typed.fill = fill;
  }
  return zeroed;
}

const cases: [
  string,
  Partial<DataKeyCacheOptions>,
  (c: DataKeyCache, clock: ManualClock) => void,
][] = [
  ["a use past maxMessages", { maxMessages: 2 }, (c) => c.take("k", { messages: 2, bytes: 0 })],
  ["a use past maxBytes", { maxBytes: 15 }, (c) => c.take("k", { messages: 0, bytes: 6 })],
  [
    "a use past maxAgeMs",
    {},
    (c, clock) => {
      clock.advance(1000);
      c.take("k", NONE);
    },
  ],
  [
    "the sweep of expired entries",
    {},
    (c, clock) => {
      clock.advance(1000);
      c.take("other", NONE);
    },
  ],
  [
    "capacity",
    { capacity: 1 },
    (c) => c.put("other", { dataKey: key(), encryptedDataKeys: [] }, ONE),
  ],
  ["a replacing put", {}, (c) => c.put("k", { dataKey: key(), encryptedDataKeys: [] }, ONE)],
  ["delete", {}, (c) => c.delete("k")],
  ["clear", {}, (c) => c.clear()],
];

function key(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

describe("DataKeyCache zeroes the key copies it lets go of", () => {
  test.each(cases)("%s", (_, options, evict) => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock, ...options });
    const dataKey = key();
    const original = dataKey.slice();
    cache.put("k", { dataKey, encryptedDataKeys: [] }, ONE);
    const handedOut = cache.take("k", NONE)?.dataKey;
    expect(zeroesACopyOf(dataKey, () => evict(cache, clock))).toBe(true);
    expect(cache.take("k", NONE)?.dataKey).not.toEqual(original);
    // Neither the caller's key nor the copy it was handed.
    expect(dataKey).toEqual(original);
    expect(handedOut).toEqual(original);
  });
});
