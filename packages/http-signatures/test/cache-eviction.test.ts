/**
 * Caches of what clients send. The accepted-authority cache (one URL parse per Host) and the
 * cache of response components naming a request's signature label each took their first 64
 * entries and then no more: 64 made-up Host values or labels, and the server's own were never
 * cached again, parsed or rebuilt on every request for the life of the process. They now evict
 * their oldest entry. What they keep is a copy: an authority or label cut from a request would
 * otherwise hold the whole request-target or Signature-Input field it came from.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { nodeRequestMessage, parseDictionary } from "../src/index.ts";
import { BoundedCache } from "../src/internal/bounded-cache.ts";
import { requestSignatureSpec } from "../src/node-message.ts";
import { resolveComponent } from "../src/signature-base.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Heap bytes still in use after `fn`, once garbage is collected. */
function retainedBy(fn: () => void): number {
  gc();
  const before = process.memoryUsage().heapUsed;
  fn();
  gc();
  return process.memoryUsage().heapUsed - before;
}

/** A field or target as Node hands it over: a fresh, flat string per request. */
const received = (text: string): string => Buffer.from(text, "latin1").toString("latin1");

afterEach(() => {
  vi.restoreAllMocks();
});

describe("BoundedCache", () => {
  it("forgets the oldest entry to make room", () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set("a", 1);
    cache.set("b", 2);
    cache.set("a", 3); // already there: nothing is evicted
    expect(cache.size).toBe(2);
    cache.set("c", 4);
    expect(cache.has("a")).toBe(false);
    expect(cache.get("b")).toBe(2);
    expect(cache.get("c")).toBe(4);
  });
});

/** How often the authority `host` is parsed while `fn` runs. */
function authorityParses(host: string, fn: () => void): number {
  const spy = vi.spyOn(globalThis, "URL");
  fn();
  return spy.mock.calls.filter(([input]) => input === `http://${host}/`).length;
}

describe("accepted authorities", () => {
  it("still caches a host after 64 others were seen", () => {
    for (let i = 0; i < 64; i++) nodeRequestMessage({ url: "/", headers: { host: `h${i}.test` } });
    const parses = authorityParses("late.test", () => {
      for (let i = 0; i < 3; i++) nodeRequestMessage({ url: "/x", headers: { host: "late.test" } });
    });
    expect(parses).toBe(1);
  });

  it("keeps none of the request-targets the authorities were cut from", () => {
    const path = `/${"p".repeat(256 * 1024)}`;
    const retained = retainedBy(() => {
      for (let i = 0; i < 64; i++) {
        const host = `host-with-a-long-name-${i}.test`;
        nodeRequestMessage({ url: received(`http://${host}${path}`), headers: { host } });
      }
      // Push the big requests out of the per-message caches (16 recent messages).
      for (let i = 0; i < 32; i++) nodeRequestMessage({ url: "/", headers: { host: "h0.test" } });
    });
    // 64 targets of 256 KB: 16 MB if each one is kept.
    expect(retained).toBeLessThan(4 * 1024 * 1024);
  });
});

describe("request signature components", () => {
  it("still caches a label after 64 others were seen", () => {
    for (let i = 0; i < 64; i++) requestSignatureSpec(`label-${i}`);
    const spec = requestSignatureSpec("late");
    expect(spec).toEqual({ component: "signature", key: "late", req: true });
    expect(requestSignatureSpec("late")).toBe(spec);
  });

  it("keeps none of the Signature-Input fields the labels were cut from", () => {
    const pad = "p".repeat(256 * 1024);
    const retained = retainedBy(() => {
      for (let i = 0; i < 64; i++) {
        const field = received(`a-label-long-enough-to-be-a-view-${i}=();p="${pad}"`);
        const [label] = parseDictionary(field).keys();
        requestSignatureSpec(label as string);
      }
    });
    expect(retained).toBeLessThan(4 * 1024 * 1024);
  });
});

describe("the component name cache", () => {
  it("keeps caching a configured name after 300 other names went through it", () => {
    for (let i = 0; i < 300; i++) resolveComponent(`x-made-up-${i}`);
    // Cached: the same resolved object comes back. A cache that stopped taking entries once
    // full built a new one on every call.
    const first = resolveComponent("x-configured-after-the-flood");
    expect(resolveComponent("x-configured-after-the-flood")).toBe(first);
    for (let i = 0; i < 300; i++) resolveComponent(`x-made-up-again-${i}`);
    expect(resolveComponent("x-configured-after-the-flood")).not.toBe(first);
  });
});
