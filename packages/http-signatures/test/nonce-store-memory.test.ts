/**
 * What remembering nonces costs, and who can use it up.
 *
 * A nonce key is built from `keyid` and `nonce`, which the structured-field parser returns as
 * substrings of the Signature-Input field; V8 keeps such a substring as a view of the whole
 * field. The store kept every key for the signature's lifetime, and with it every verified
 * request's header: an unsigned second label padded to 12 KB made each request cost 12.5 KB, so
 * at the store's million entries the process ran out of memory. The memory store now keeps a
 * 32-byte digest, and verification hands every store a key of its own.
 *
 * A signer could also fill the whole store, whose new nonces are then refused for everyone until
 * some expire (about 330 s): each key now has a share (`maxEntriesPerKey`), and a key at its
 * share is refused alone.
 *
 * Memory is measured with the collector run directly: growth with the fix is a few hundred bytes
 * per nonce, without it the size of the header, so the bounds below are far from both.
 */
import { randomBytes } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  MemoryNonceStore,
  type NonceStore,
  parseDictionary,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
} from "../src/index.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Heap bytes still in use after `fn`, once garbage is collected. */
async function retainedBy(fn: () => Promise<void>): Promise<number> {
  gc();
  const before = process.memoryUsage().heapUsed;
  await fn();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  return process.memoryUsage().heapUsed - before;
}

/** A header string as Node hands it over: a fresh, flat string per request. */
const received = (text: string): string => Buffer.from(text, "latin1").toString("latin1");

const PAD = "p".repeat(64 * 1024);
const COUNT = 200; // 200 headers of 64 KB: 13 MB if each one is kept.
const BOUND = 3 * 1024 * 1024;
/** Verifications run before one is measured. */
const WARM_UP = 50;

describe("MemoryNonceStore memory", () => {
  it("keeps a fixed-size digest of each nonce, not the header it was cut from", async () => {
    const store = new MemoryNonceStore();
    const retained = await retainedBy(async () => {
      for (let i = 0; i < COUNT; i++) {
        const header = received(
          `sig1=("@method");created=1;keyid="tenant-a-with-a-long-id";nonce="${String(i).padStart(32, "n")}";pad="${PAD}"`,
        );
        const params = (parseDictionary(header).get("sig1") as { params: Map<string, unknown> })
          .params;
        // The key as verification built it before: views of `header`, joined.
        const key = `${params.get("keyid") as string}\u0000${params.get("nonce") as string}`;
        expect(await store.checkAndStore(key, 60_000)).toBe(true);
        expect(await store.checkAndStore(key, 60_000)).toBe(false);
      }
    });
    expect(store.size).toBe(COUNT);
    expect(retained).toBeLessThan(BOUND);
  });

  it("keeps the same few bytes for a nonce however long its key", async () => {
    const store = new MemoryNonceStore();
    const retained = await retainedBy(async () => {
      for (let i = 0; i < COUNT; i++) {
        expect(await store.checkAndStore(received(`k\u0000${i}${PAD}`), 60_000)).toBe(true);
      }
    });
    expect(store.size).toBe(COUNT);
    expect(retained).toBeLessThan(BOUND);
    expect(await store.checkAndStore(received(`k\u00007${PAD}`), 60_000)).toBe(false);
  });
});

const secret = randomBytes(32);
const T0 = 1_700_000_000_000;

async function padded(keyId: string, nonce: string): Promise<RequestMessage> {
  const message: RequestMessage = { method: "GET", url: "https://api.test/x", headers: {} };
  const fields = await signMessage(message, {
    signer: createHmacSigner(secret, { keyId }),
    components: ["@method", "@target-uri"],
    nonce,
    now: () => T0,
  });
  return {
    ...message,
    headers: {
      // An unsigned second label carrying the padding, as any client may add.
      "signature-input": received(`${fields.signatureInput}, zpad=();p="${PAD}"`),
      signature: received(`${fields.signature}, zpad=:AAAA:`),
    },
  };
}

const policy = (extra: Partial<VerificationPolicy>): VerificationPolicy => ({
  keyLookup: () => createHmacVerifier(secret),
  label: "sig1",
  now: () => T0 + 1000,
  ...extra,
});

describe("verification's nonce key", () => {
  it("holds none of the header, whatever the store keeps", async () => {
    const kept: string[] = [];
    const store: NonceStore = {
      checkAndStore: async (key) => {
        kept.push(key);
        return true;
      },
    };
    const verifying = policy({ nonceStore: store });
    // Warmed first: the code and caches the first verifications compile and fill (~2–3 MB of
    // heap on a busy machine) are no nonce's, and counted against the bound they made this test
    // fail now and then. Each kept header would still be 13 MB.
    for (let i = 0; i < WARM_UP; i++) {
      const message = await padded("tenant-a-with-a-long-id", `warm-${i}`.padStart(32, "w"));
      expect((await verifyMessage(message, verifying)).ok).toBe(true);
    }
    const retained = await retainedBy(async () => {
      for (let i = 0; i < COUNT; i++) {
        const message = await padded("tenant-a-with-a-long-id", String(i).padStart(32, "n"));
        expect((await verifyMessage(message, verifying)).ok).toBe(true);
      }
    });
    expect(kept).toHaveLength(WARM_UP + COUNT);
    expect(kept[WARM_UP + 7]).toBe(`tenant-a-with-a-long-id\u0000${"7".padStart(32, "n")}`);
    expect(retained).toBeLessThan(BOUND);
  });
});

const key = (keyId: string, i: number): string => `${keyId}\u0000nonce-${i}`;

describe("MemoryNonceStore per-key share", () => {
  it("refuses a key past its share while other keys are still accepted", async () => {
    const store = new MemoryNonceStore({ maxEntries: 100, maxEntriesPerKey: 3 });
    for (let i = 0; i < 3; i++) expect(await store.checkAndStore(key("a", i), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 3), 60_000)).toBe(false);
    for (let i = 0; i < 3; i++) expect(await store.checkAndStore(key("b", i), 60_000)).toBe(true);
    // Still a replay, not a fresh nonce, for the key that is at its share.
    expect(await store.checkAndStore(key("a", 0), 60_000)).toBe(false);
    expect(store.size).toBe(6);
  });

  it("gives each key a tenth of maxEntries by default", async () => {
    const store = new MemoryNonceStore({ maxEntries: 50 });
    for (let i = 0; i < 5; i++) expect(await store.checkAndStore(key("a", i), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 5), 60_000)).toBe(false);
    expect(await store.checkAndStore(key("b", 0), 60_000)).toBe(true);
  });

  it("counts a nonce without a key against maxEntries only", async () => {
    const store = new MemoryNonceStore({ maxEntries: 4, maxEntriesPerKey: 1 });
    for (let i = 0; i < 4; i++) expect(await store.checkAndStore(`plain-${i}`, 60_000)).toBe(true);
    expect(await store.checkAndStore("plain-4", 60_000)).toBe(false);
  });

  it("frees a key's share as its nonces expire, within a second", async () => {
    let now = 0;
    const store = new MemoryNonceStore({ maxEntriesPerKey: 2, now: () => now });
    expect(await store.checkAndStore(key("a", 0), 5_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 1), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 2), 60_000)).toBe(false);
    now = 5_000; // a/0 has expired; the regular sweep is 10 s away
    expect(await store.checkAndStore(key("a", 2), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 3), 60_000)).toBe(false);
    expect(await store.checkAndStore(key("a", 1), 60_000)).toBe(false);
    now = 70_000; // all expired: the key is forgotten, and starts again with a full share
    expect(await store.checkAndStore(key("a", 4), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 5), 60_000)).toBe(true);
    expect(await store.checkAndStore(key("a", 6), 60_000)).toBe(false);
    expect(store.size).toBe(2);
  });

  it("keeps one signer from shutting the others out through verification", async () => {
    const store = new MemoryNonceStore({ maxEntries: 100, maxEntriesPerKey: 4 });
    const verifying = policy({ nonceStore: store });
    for (let i = 0; i < 4; i++) {
      expect((await verifyMessage(await padded("noisy", `n-${i}`), verifying)).ok).toBe(true);
    }
    expect(await verifyMessage(await padded("noisy", "n-4"), verifying)).toMatchObject({
      ok: false,
      check: "replay",
    });
    expect((await verifyMessage(await padded("quiet", "n-0"), verifying)).ok).toBe(true);
    // The same nonce under another key is that key's own.
    expect((await verifyMessage(await padded("quiet", "n-1"), verifying)).ok).toBe(true);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])(
    "refuses maxEntriesPerKey %s",
    (maxEntriesPerKey) => {
      expect(() => new MemoryNonceStore({ maxEntriesPerKey })).toThrow(
        '"maxEntriesPerKey" must be a positive integer',
      );
    },
  );
});
