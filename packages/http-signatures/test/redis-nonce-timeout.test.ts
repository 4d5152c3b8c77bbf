/**
 * node-redis queues commands while it reconnects: during an outage a `SET` neither answers nor
 * fails. A nonce check must not wait for Redis to come back (the request would hang with it):
 * it fails closed after `timeoutMs`. A stub client that never answers stands for the outage.
 */
import { KmsInternalError, ValidationError } from "@kms/core";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createHmacSigner, createHmacVerifier, signRequest, verifyMessage } from "../src/index.ts";
import { RedisNonceStore, type RedisSetClient } from "../src/redis-nonce-store.ts";

/** A client whose commands wait forever, as node-redis's offline queue does; counts them. */
function unanswering(): RedisSetClient & { calls: number } {
  const client = {
    calls: 0,
    set: () => {
      client.calls++;
      return new Promise<string | null>(() => {});
    },
  };
  return client;
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("RedisNonceStore when Redis does not answer", () => {
  it("rejects after the default 2 s, naming the store, never accepting the nonce", async () => {
    const store = new RedisNonceStore(unanswering());
    const check = store.checkAndStore("n1", 60_000);
    const outcome = check.then(
      (fresh) => ({ fresh }),
      (error: unknown) => ({ error }),
    );
    await vi.advanceTimersByTimeAsync(1999);
    let settled = false;
    void outcome.then(() => {
      settled = true;
    });
    await Promise.resolve();
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const result = await outcome;
    expect(result).toEqual({ error: expect.any(KmsInternalError) });
    expect(String((result as { error: Error }).error.message)).toMatch(
      /Redis nonce store did not answer within 2000 ms/,
    );
  });

  it("uses timeoutMs, and leaves no timer behind once Redis answers", async () => {
    const store = new RedisNonceStore(unanswering(), { timeoutMs: 50 });
    const check = store.checkAndStore("n1", 60_000);
    const rejected = expect(check).rejects.toThrow(/within 50 ms/);
    await vi.advanceTimersByTimeAsync(50);
    await rejected;

    const answering = new RedisNonceStore({ set: async () => "OK" }, { timeoutMs: 50 });
    expect(await answering.checkAndStore("n2", 60_000)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("fails a verification closed: it rejects rather than accepting the request", async () => {
    const secret = new Uint8Array(32).fill(9);
    const url = "https://api.example/x";
    vi.useRealTimers();
    const headers = await signRequest(
      { method: "GET", url },
      { signer: createHmacSigner(secret, { keyId: "k" }), nonce: true },
    );
    vi.useFakeTimers();
    const client = unanswering();
    const verification = verifyMessage(
      { method: "GET", url, headers },
      {
        keyLookup: () => createHmacVerifier(secret),
        nonceStore: new RedisNonceStore(client),
        // The fake clock stands still: the signature stays fresh.
        now: () => Date.now(),
      },
    );
    const rejected = expect(verification).rejects.toBeInstanceOf(KmsInternalError);
    await vi.advanceTimersByTimeAsync(2000);
    await rejected;
    expect(client.calls).toBe(1);
  });

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY, "2000"])(
    "refuses timeoutMs %s",
    (timeoutMs) => {
      expect(() => new RedisNonceStore(unanswering(), { timeoutMs: timeoutMs as number })).toThrow(
        ValidationError,
      );
    },
  );
});
