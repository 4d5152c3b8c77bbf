/**
 * `maxAgeSeconds` and `clockSkewSeconds` bound how long a signature (and so its nonce) is
 * accepted. A NaN there (`Number(process.env.MAX_AGE)` of an unset variable) compared false with
 * everything: a day-old signature passed the max-age check, and its nonce was remembered for NaN
 * milliseconds, so the same signed message was accepted on every replay.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  MemoryNonceStore,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const DAY = 86_400_000;
const get: RequestMessage = { method: "GET", url: "https://api.test/orders", headers: {} };

async function signedAt(ms: number): Promise<RequestMessage> {
  const fields = await signMessage(get, {
    signer,
    components: ["@method", "@target-uri"],
    now: () => ms,
    nonce: true,
  });
  return {
    ...get,
    headers: { "signature-input": fields.signatureInput, signature: fields.signature },
  };
}

const policy = (extra: Partial<VerificationPolicy>): VerificationPolicy => ({
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(secret) : undefined),
  now: () => T0,
  nonceStore: new MemoryNonceStore({ now: () => T0 }),
  ...extra,
});

describe("policy time window", () => {
  const bad: [string, Partial<VerificationPolicy>, string][] = [
    ["a NaN maxAgeSeconds", { maxAgeSeconds: Number.NaN }, '"maxAgeSeconds"'],
    ["a NaN clockSkewSeconds", { clockSkewSeconds: Number.NaN }, '"clockSkewSeconds"'],
    ["an infinite maxAgeSeconds", { maxAgeSeconds: Number.POSITIVE_INFINITY }, '"maxAgeSeconds"'],
    ["a negative clockSkewSeconds", { clockSkewSeconds: -1 }, '"clockSkewSeconds"'],
    [
      "a string maxAgeSeconds",
      { maxAgeSeconds: "300" as unknown as number },
      '"maxAgeSeconds" must be a finite number of seconds, 0 or more, got string',
    ],
  ];

  it.each(bad)(
    "a %s is a setup error, never a day-old signature accepted and replayed",
    async (_n, extra, message) => {
      const old = await signedAt(T0 - DAY);
      const p = policy(extra);
      for (let i = 0; i < 2; i++) {
        await expect(verifyMessage(old, p)).rejects.toMatchObject({
          code: "ValidationException",
          message: expect.stringContaining(message),
        });
      }
      expect(() => verifyMessageEagerly(old, p)).toThrow(message);
    },
  );

  it("a well-formed window still accepts a fresh signature once and refuses the replay", async () => {
    const fresh = await signedAt(T0);
    const p = policy({ maxAgeSeconds: 0, clockSkewSeconds: 0.5 });
    expect(await verifyMessage(fresh, p)).toMatchObject({ ok: true });
    expect(await verifyMessage(fresh, p)).toMatchObject({ ok: false, check: "replay" });
    expect(await verifyMessage(await signedAt(T0 - DAY), policy({}))).toMatchObject({
      ok: false,
      check: "max-age",
    });
  });
});
