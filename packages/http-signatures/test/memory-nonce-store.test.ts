/**
 * MemoryNonceStore at its bound. A sweep walks every remembered nonce (tens of milliseconds at
 * the default million, with the event loop held); a full store swept on every call, so under the
 * load that filled it each verified request stalled the whole process. It now sweeps a full
 * store at most once a second, and still refuses new nonces until some expire (fail closed).
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryNonceStore } from "../src/index.ts";

/** How many times a Map is iterated while `fn` runs: each sweep iterates the store's once. */
async function mapWalks(fn: () => Promise<void>): Promise<number> {
  const spy = vi.spyOn(Map.prototype, Symbol.iterator);
  try {
    await fn();
    return spy.mock.calls.length;
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("MemoryNonceStore when full", () => {
  it("walks its nonces at most once a second, not on every call", async () => {
    let now = 1_000_000;
    const store = new MemoryNonceStore({ maxEntries: 1_000, now: () => now });
    for (let i = 0; i < 1_000; i++) expect(await store.checkAndStore(`n${i}`, 60_000)).toBe(true);
    now += 1; // past the sweep the last insert may have made
    const walks = await mapWalks(async () => {
      for (let i = 0; i < 200; i++) {
        expect(await store.checkAndStore(`new${i}`, 60_000)).toBe(false);
        now += 1; // 200 calls within 200 ms
      }
    });
    expect(walks).toBeLessThanOrEqual(1);
    expect(store.size).toBe(1_000);
  });

  it("still makes room once nonces expire, and never accepts a remembered one", async () => {
    let now = 0;
    const store = new MemoryNonceStore({ maxEntries: 2, now: () => now });
    expect(await store.checkAndStore("a", 5_000)).toBe(true);
    expect(await store.checkAndStore("b", 60_000)).toBe(true);
    expect(await store.checkAndStore("c", 60_000)).toBe(false);
    expect(await store.checkAndStore("a", 60_000)).toBe(false);
    now = 5_000; // "a" has expired
    expect(await store.checkAndStore("c", 60_000)).toBe(true);
    expect(await store.checkAndStore("b", 60_000)).toBe(false);
    expect(await store.checkAndStore("c", 60_000)).toBe(false);
    expect(store.size).toBe(2);
  });
});

describe("MemoryNonceStore ttl", () => {
  // A NaN expiry is never later than now and never swept: the nonce was forgotten at once, so
  // the same nonce was accepted on every call.
  it("refuses a NaN ttl rather than accepting the nonce again and again", async () => {
    const store = new MemoryNonceStore();
    await expect(store.checkAndStore("n", Number.NaN)).rejects.toMatchObject({
      code: "ValidationException",
      message: '"ttlMs" must be a number of milliseconds',
    });
    await expect(store.checkAndStore("n", Number.NaN)).rejects.toMatchObject({
      code: "ValidationException",
    });
    expect(store.size).toBe(0);
    expect(await store.checkAndStore("n", 1_000)).toBe(true);
    expect(await store.checkAndStore("n", 1_000)).toBe(false);
  });
});
