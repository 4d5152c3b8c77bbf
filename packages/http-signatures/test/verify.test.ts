import { randomBytes } from "node:crypto";
import { ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  MemoryNonceStore,
  type RequestMessage,
  type SignOptions,
  signMessage,
  type VerificationPolicy,
  verifyContentDigest,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const body = new TextEncoder().encode('{"a":1}');
const request: RequestMessage = {
  method: "POST",
  url: "https://api.test/orders?x=1",
  headers: { "content-type": "application/json", "content-digest": computeContentDigest(body) },
  body,
};

async function signed(
  options: Partial<SignOptions> = {},
  message = request,
): Promise<RequestMessage> {
  const fields = await signMessage(message, {
    signer,
    components: ["@method", "@target-uri", "content-digest"],
    now: () => T0,
    ...options,
  });
  return {
    ...message,
    headers: {
      ...(message.headers as Record<string, string>),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

const policy = (extra: Partial<VerificationPolicy> = {}): VerificationPolicy => ({
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(secret) : undefined),
  now: () => T0 + 1000,
  ...extra,
});

describe("verifyMessage policy", () => {
  it("accepts a good signature and reports what it covered", async () => {
    const result = await verifyMessage(await signed(), policy({ contentDigest: "required" }));
    expect(result).toMatchObject({
      ok: true,
      label: "sig1",
      keyId: "k1",
      algorithm: "hmac-sha256",
    });
    if (result.ok)
      expect(result.covered).toEqual(['"@method"', '"@target-uri"', '"content-digest"']);
  });

  const cases: [string, () => Promise<RequestMessage>, Partial<VerificationPolicy>, string][] = [
    ["no signature", async () => request, {}, "signature-missing"],
    [
      "garbage Signature-Input",
      async () => ({
        ...request,
        headers: { "signature-input": "sig1=(((", signature: "sig1=:AA==:" },
      }),
      {},
      "signature-malformed",
    ],
    ["a label the policy does not expect", () => signed(), { label: "other" }, "label"],
    [
      "missing required component",
      () => signed(),
      { requiredComponents: ["@authority"] },
      "components",
    ],
    [
      "digest required but not covered",
      () => signed({ components: ["@method"] }),
      { contentDigest: "required" },
      "components",
    ],
    ["wrong tag", () => signed({ tag: "a" }), { tag: "b" }, "tag"],
    ["algorithm not allowed", () => signed(), { algorithms: ["ed25519"] }, "algorithm"],
    [
      "alg param disagreeing with the key",
      () => signed({ includeAlg: true }),
      { keyLookup: () => ({ algorithm: "ed25519", verify: async () => true }) },
      "algorithm",
    ],
    ["too old", () => signed(), { now: () => T0 + 400_000 }, "max-age"],
    ["created in the future", () => signed(), { now: () => T0 - 60_000 }, "created"],
    ["missing created", () => signed({ created: false }), {}, "created"],
    ["expired", () => signed({ expiresIn: 10 }), { now: () => T0 + 60_000 }, "expires"],
    ["unknown key", () => signed({ keyId: "nobody" }), {}, "key"],
    [
      "no keyid",
      () => signed({ keyId: undefined as never }),
      { keyLookup: () => undefined },
      "key",
    ],
    [
      "wrong key",
      () => signed(),
      { keyLookup: () => createHmacVerifier(randomBytes(32)) },
      "signature",
    ],
    ["tampered method", async () => ({ ...(await signed()), method: "PUT" }), {}, "signature"],
    [
      "tampered body",
      async () => ({ ...(await signed()), body: new TextEncoder().encode('{"a":2}') }),
      {},
      "content-digest",
    ],
    [
      "covered header removed",
      async () => {
        const m = await signed({ components: ["content-type"] });
        const { "content-type": _, ...rest } = m.headers as Record<string, string>;
        return { ...m, headers: rest };
      },
      {},
      "components",
    ],
    ["nonce required but absent", () => signed(), { nonceStore: new MemoryNonceStore() }, "nonce"],
  ];

  it.each(cases)("rejects %s", async (_name, make, extra, check) => {
    const result = await verifyMessage(await make(), policy(extra));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.check).toBe(check);
  });

  it("needs the raw body when the digest is covered", async () => {
    const { body: _, ...noBody } = await signed();
    const result = await verifyMessage(noBody, policy());
    expect(result).toMatchObject({ ok: false, check: "content-digest" });
  });

  it("refuses a replayed nonce and honours the injected clock for its lifetime", async () => {
    let now = T0 + 1000;
    const nonceStore = new MemoryNonceStore({ now: () => now });
    const message = await signed({ nonce: true });
    const p = policy({ nonceStore, now: () => now });
    expect((await verifyMessage(message, p)).ok).toBe(true);
    expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check: "replay" });
    now += 400_000;
    // Past the lifetime the nonce is forgotten, but the signature is too old anyway.
    expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check: "max-age" });
  });

  it("refuses a nonce that would outlive its memory: no created and no expires", async () => {
    let now = T0 + 1000;
    const nonceStore = new MemoryNonceStore({ now: () => now });
    const message = await signed({ nonce: true, created: false });
    const p = policy({ nonceStore, requireCreated: false, now: () => now });
    // Accepted forever, a signature could be replayed once its nonce is forgotten.
    expect(await verifyMessage(message, p)).toMatchObject({
      ok: false,
      check: "created",
      detail: "created or expires is required for replay protection",
    });
    now += 400_000;
    expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check: "created" });
    expect(nonceStore.size).toBe(0);
    // The default store is a store too.
    expect(await verifyMessage(message, policy({ requireCreated: false }))).toMatchObject({
      ok: false,
      check: "created",
    });
    // Without a nonce store nothing is promised, and the policy allows it.
    const unprotected = policy({ requireCreated: false, nonceStore: false });
    expect((await verifyMessage(message, unprotected)).ok).toBe(true);
  });

  it("remembers a nonce until the earlier of expires and the end of max-age", async () => {
    const ttls: number[] = [];
    const nonceStore = {
      checkAndStore: async (_nonce: string, ttlMs: number) => {
        ttls.push(ttlMs);
        return true;
      },
    };
    const p = policy({ nonceStore, maxAgeSeconds: 300, clockSkewSeconds: 30 });
    // now is 1 s after created: max-age ends first, not expires. The checks compare whole
    // seconds, so the signature is accepted to the end of second created + 330: 300 + 30 − 1 + 1 s.
    expect((await verifyMessage(await signed({ nonce: true, expiresIn: 3600 }), p)).ok).toBe(true);
    // An expiry before the end of max-age: kept until then (60 + 30 − 1 + 1 s).
    expect((await verifyMessage(await signed({ nonce: true, expiresIn: 60 }), p)).ok).toBe(true);
    // Only expires: its end.
    const noCreated = await signed({ nonce: true, created: false, expiresIn: 60 });
    expect((await verifyMessage(noCreated, { ...p, requireCreated: false })).ok).toBe(true);
    expect(ttls).toEqual([330_000, 90_000, 90_000]);
  });

  it.each([
    ["the end of max-age", {}, "max-age"],
    ["expires", { expiresIn: 60 }, "expires"],
  ] as const)(
    "remembers a nonce to the last instant %s still accepts",
    async (_name, extra, check) => {
      const created = T0 / 1000;
      const lastSecond = "expiresIn" in extra ? created + 60 + 30 : created + 300 + 30;
      // Verified first at a fraction of a second, as real clocks are.
      let now = T0 + 1_100;
      const nonceStore = new MemoryNonceStore({ now: () => now });
      const message = await signed({ nonce: "n-edge", ...extra });
      const p = policy({ nonceStore, now: () => now, maxAgeSeconds: 300, clockSkewSeconds: 30 });
      expect((await verifyMessage(message, p)).ok).toBe(true);
      // The checks compare whole seconds: the signature is accepted until the second after
      // `lastSecond` begins, and a replay until then must still be caught.
      for (const at of [lastSecond * 1000, lastSecond * 1000 + 500, lastSecond * 1000 + 999]) {
        now = at;
        expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check: "replay" });
      }
      now = (lastSecond + 1) * 1000;
      expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check });
    },
  );

  it("keeps one replay domain per nonce store, whatever the label", async () => {
    // The label is not signed: a replay under another label is the same signature.
    const nonceStore = new MemoryNonceStore();
    const message = await signed({ nonce: "n-label" });
    expect((await verifyMessage(message, policy({ nonceStore }))).ok).toBe(true);
    const headers = message.headers as Record<string, string>;
    const relabelled = {
      ...message,
      headers: {
        ...headers,
        "signature-input": headers["signature-input"]!.replace(/^sig1=/, "other="),
        signature: headers.signature!.replace(/^sig1=/, "other="),
      },
    };
    expect(await verifyMessage(relabelled, policy({ nonceStore }))).toMatchObject({
      ok: false,
      check: "replay",
      label: "other",
    });
    // Two verifiers that should each accept the message once (a gateway and the service
    // behind it) need a store each; a shared one sees the second as the replay it is.
    const gateway = new MemoryNonceStore();
    const service = new MemoryNonceStore();
    expect((await verifyMessage(message, policy({ nonceStore: gateway }))).ok).toBe(true);
    expect((await verifyMessage(message, policy({ nonceStore: service }))).ok).toBe(true);
    expect(await verifyMessage(message, policy({ nonceStore: service }))).toMatchObject({
      ok: false,
      check: "replay",
    });
  });

  it("does not burn nonces for forged signatures", async () => {
    const nonceStore = new MemoryNonceStore();
    const message = await signed({ nonce: "n-1" });
    const forged = policy({ nonceStore, keyLookup: () => createHmacVerifier(randomBytes(32)) });
    expect(await verifyMessage(message, forged)).toMatchObject({ ok: false, check: "signature" });
    expect(nonceStore.size).toBe(0);
    expect((await verifyMessage(message, policy({ nonceStore }))).ok).toBe(true);
  });

  it("accepts when any of several labels passes, and adds labels without dropping others", async () => {
    const once = await signed({ label: "a", keyId: "other" });
    const twice = await signMessage(once, {
      signer,
      label: "b",
      components: ["@method", "@target-uri", "content-digest"],
      now: () => T0,
    });
    const message = {
      ...once,
      headers: {
        ...(once.headers as object),
        "signature-input": twice.signatureInput,
        signature: twice.signature,
      },
    };
    expect(twice.signatureInput.startsWith("a=(")).toBe(true);
    expect(await verifyMessage(message, policy())).toMatchObject({ ok: true, label: "b" });
    await expect(signMessage(message, { signer, label: "a", components: [] })).rejects.toThrow(
      /already used/,
    );
  });

  it.each([
    ["null", () => null],
    ["a promise of null", async () => null],
    ["a promise of undefined", async () => undefined],
  ])("answers `key` when the key lookup returns %s", async (_name, keyLookup) => {
    const result = await verifyMessage(await signed(), policy({ keyLookup }));
    expect(result).toEqual({
      ok: false,
      check: "key",
      detail: "keyid is not a known key",
      label: "sig1",
    });
  });

  it("propagates key lookup failures instead of calling them bad signatures", async () => {
    const boom = new Error("kms down");
    await expect(
      verifyMessage(await signed(), policy({ keyLookup: () => Promise.reject(boom) })),
    ).rejects.toBe(boom);
  });
});

describe("responses bound to their request (;req)", () => {
  it("covers request components and fails when the request differs", async () => {
    const req = await signed();
    const response = { status: 201, headers: { "content-type": "text/plain" } };
    const fields = await signMessage(response, {
      signer,
      request: req,
      components: [
        "@status",
        { component: "@method", req: true },
        { component: "signature", key: "sig1", req: true },
      ],
      now: () => T0,
    });
    expect(fields.signatureInput).toContain('"@method";req "signature";key="sig1";req');
    const signedResponse = {
      ...response,
      headers: {
        ...response.headers,
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
    expect((await verifyMessage(signedResponse, policy(), req)).ok).toBe(true);
    const other = await signed({ nonce: "different" });
    expect(await verifyMessage(signedResponse, policy(), other)).toMatchObject({
      ok: false,
      check: "signature",
    });
    expect(await verifyMessage(signedResponse, policy())).toMatchObject({
      ok: false,
      check: "components",
    });
  });
});

describe("MemoryNonceStore", () => {
  it("fails closed when full", async () => {
    const store = new MemoryNonceStore({ maxEntries: 2 });
    expect(await store.checkAndStore("a", 60_000)).toBe(true);
    expect(await store.checkAndStore("b", 60_000)).toBe(true);
    expect(await store.checkAndStore("c", 60_000)).toBe(false);
  });
});

describe("digest algorithms from configuration", () => {
  it.each(["md5", "SHA-256", "constructor"])(
    "refuses %s as a ValidationError naming the option, not a TypeError",
    async (alg) => {
      const accept = [alg] as never;
      const field = `${alg.toLowerCase()}=:AAAA:`;
      expect(() => verifyContentDigest(field, body, accept)).toThrow(ValidationError);
      expect(() => verifyContentDigest(field, body, accept)).toThrow(/"digestAlgorithms"/);
      const message = await signed({}, { ...request, headers: { "content-digest": field } });
      await expect(verifyMessage(message, policy({ digestAlgorithms: accept }))).rejects.toThrow(
        ValidationError,
      );
    },
  );
});
