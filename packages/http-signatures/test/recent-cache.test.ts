import { describe, expect, it } from "vitest";
import { RecentCache } from "../src/internal/recent-cache.ts";

describe("RecentCache", () => {
  it("finds keys by identity, not by shape", () => {
    const cache = new RecentCache<object, string>(2);
    const a = { h: 1 };
    cache.set(a, "a");
    expect(cache.get(a)).toBe("a");
    expect(cache.get({ h: 1 })).toBeUndefined();
  });

  it("forgets the oldest key once full", () => {
    const cache = new RecentCache<object, number>(2);
    const [a, b, c] = [{}, {}, {}];
    cache.set(a, 1);
    cache.set(b, 2);
    cache.set(c, 3);
    expect(cache.get(a)).toBeUndefined();
    expect(cache.get(b)).toBe(2);
    expect(cache.get(c)).toBe(3);
  });
});
