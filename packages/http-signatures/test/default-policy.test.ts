/**
 * What a policy that names only `keyLookup` accepts: the default coverage (RFC 9421 §7.2.1) and
 * the default replay protection.
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type HttpMessage,
  MAX_NONCE_LENGTH,
  MemoryNonceStore,
  type RequestMessage,
  type ResponseMessage,
  type SignOptions,
  signMessage,
  signRequest,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

const policy = (extra: Partial<VerificationPolicy> = {}): VerificationPolicy => ({
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(secret) : undefined),
  now: () => T0,
  ...extra,
});

async function signed<M extends HttpMessage>(
  message: M,
  components: readonly ComponentSpec[],
  options: Partial<SignOptions> = {},
): Promise<M> {
  const fields = await signMessage(message, { signer, components, now: () => T0, ...options });
  return {
    ...message,
    headers: {
      ...(message.headers as Record<string, string>),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

const get: RequestMessage = { method: "GET", url: "https://api.test/orders?page=2", headers: {} };
const body = encode('{"amount":10}');
const post: RequestMessage = {
  method: "POST",
  url: "https://api.test/orders",
  headers: { "content-type": "application/json", "content-digest": computeContentDigest(body) },
  body,
};
const TARGET = 'signature must cover "@target-uri" (or "@authority" with "@path" and "@query")';

describe("default required components", () => {
  it("refuses a signature over () made for GET /harmless and replayed as DELETE /accounts/7", async () => {
    const harmless = await signed(
      { method: "GET", url: "https://api.test/harmless", headers: {} },
      [],
    );
    const forged: RequestMessage = {
      method: "DELETE",
      url: "https://api.test/accounts/7",
      headers: harmless.headers,
      body: encode("evil"),
    };
    expect(await verifyMessage(forged, policy())).toMatchObject({
      ok: false,
      check: "components",
      detail: 'signature must cover "@method"',
    });
    // `[]` is the explicit way to accept whatever a signature covers.
    expect(await verifyMessage(forged, policy({ requiredComponents: [] }))).toMatchObject({
      ok: true,
    });
  });

  it("accepts @method and @target-uri on a request without content", async () => {
    const message = await signed(get, ["@method", "@target-uri"]);
    expect(await verifyMessage(message, policy())).toMatchObject({ ok: true });
  });

  it.each<[string, readonly ComponentSpec[], string | undefined]>([
    ["@authority, @path and @query", ["@method", "@authority", "@path", "@query"], undefined],
    ["@authority and @request-target", ["@method", "@authority", "@request-target"], undefined],
    ["@authority and @path, without @query", ["@method", "@authority", "@path"], TARGET],
    ["@path and @query, without @authority", ["@method", "@path", "@query"], TARGET],
    ["@scheme and @authority", ["@method", "@scheme", "@authority"], TARGET],
    ["@target-uri without @method", ["@target-uri"], 'signature must cover "@method"'],
  ])("takes %s as: %s", async (_name, components, detail) => {
    const result = await verifyMessage(await signed(get, components), policy());
    expect(result).toMatchObject(
      detail === undefined ? { ok: true } : { ok: false, check: "components", detail },
    );
  });

  it("asks a request with content to cover content-digest, and checks it against the body", async () => {
    const uncovered = await signed(post, ["@method", "@target-uri", "content-type"]);
    expect(await verifyMessage(uncovered, policy())).toMatchObject({
      ok: false,
      check: "components",
      detail: 'signature must cover "content-digest": the message has content',
    });
    const covered = await signed(post, ["@method", "@target-uri", "content-digest"]);
    expect(await verifyMessage(covered, policy())).toMatchObject({ ok: true });
    expect(await verifyMessage({ ...covered, body: encode("other") }, policy())).toMatchObject({
      ok: false,
      check: "content-digest",
    });
  });

  it("without the raw body, reads content from Content-Length and Transfer-Encoding", async () => {
    const components = ["@method", "@target-uri"];
    const without = (headers: Record<string, string>): Promise<RequestMessage> =>
      signed({ method: "POST", url: "https://api.test/orders", headers }, components);
    for (const headers of [{ "content-length": "13" }, { "transfer-encoding": "chunked" }]) {
      expect(await verifyMessage(await without(headers), policy())).toMatchObject({
        ok: false,
        check: "components",
      });
    }
    expect(await verifyMessage(await without({ "content-length": "0" }), policy())).toMatchObject({
      ok: true,
    });
    // A raw body that is empty says there is no content, whatever else is claimed.
    const empty = await signed({ ...post, body: new Uint8Array(0) }, components);
    expect(await verifyMessage(empty, policy())).toMatchObject({ ok: true });
  });

  it("accepts what signRequest covers by default, with and without a body", async () => {
    const headers = { "content-type": "application/json" };
    for (const content of [undefined, body]) {
      const request = { method: "POST", url: "https://api.test/orders", headers, body: content };
      const added = await signRequest(request, { signer, now: () => T0 });
      const message: RequestMessage = { ...request, headers: { ...headers, ...added } };
      expect(await verifyMessage(message, policy())).toMatchObject({ ok: true });
    }
  });

  it("asks a response to cover @status, and content-digest when it has content", async () => {
    const response: ResponseMessage = {
      status: 200,
      headers: { "content-type": "application/json", "content-digest": computeContentDigest(body) },
      body,
    };
    expect(await verifyMessage(await signed(response, ["content-digest"]), policy())).toMatchObject(
      { ok: false, check: "components", detail: 'signature must cover "@status"' },
    );
    expect(await verifyMessage(await signed(response, ["@status"]), policy())).toMatchObject({
      ok: false,
      check: "components",
      detail: 'signature must cover "content-digest": the message has content',
    });
    const covered = await signed(response, ["@status", "content-digest"]);
    expect(await verifyMessage(covered, policy())).toMatchObject({ ok: true });
  });

  it("does not ask a response without content by definition for content-digest", async () => {
    // A HEAD response's Content-Length is what a GET would get, not content it carries.
    const head: ResponseMessage = { status: 200, headers: { "content-length": "13" } };
    const request: RequestMessage = { method: "HEAD", url: "https://api.test/orders", headers: {} };
    const message = await signed(head, ["@status"]);
    expect(await verifyMessage(message, policy(), request)).toMatchObject({ ok: true });
    expect(await verifyMessage(message, policy())).toMatchObject({
      ok: false,
      check: "components",
    });
  });

  it("replaces the default with an explicit list", async () => {
    const message = await signed(post, ["@method"]);
    expect(await verifyMessage(message, policy({ requiredComponents: ["@method"] }))).toMatchObject(
      { ok: true },
    );
    expect(await verifyMessage(message, policy())).toMatchObject({
      ok: false,
      check: "components",
    });
  });
});

describe("default nonce store", () => {
  const components = ["@method", "@target-uri"];

  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("accepts a signed request with a nonce once per policy", async () => {
    const message = await signed(get, components, { nonce: true });
    const p = policy();
    expect(await verifyMessage(message, p)).toMatchObject({ ok: true });
    expect(await verifyMessage(message, p)).toMatchObject({
      ok: false,
      check: "replay",
      detail: "nonce was already used",
    });
    // Each policy object is its own replay domain, as each store passed to one would be.
    expect(await verifyMessage(message, policy())).toMatchObject({ ok: true });
  });

  it("does not ask for a nonce, and leaves a signature without one synchronous", async () => {
    const message = await signed(get, components);
    const p = policy();
    for (let i = 0; i < 2; i++) {
      const result = verifyMessageEagerly(message, p);
      expect(result).not.toBeInstanceOf(Promise);
      expect(result).toMatchObject({ ok: true });
    }
    expect(await verifyMessage(message, policy({ requireNonce: true }))).toMatchObject({
      ok: false,
      check: "nonce",
    });
  });

  it("is off with nonceStore: false", async () => {
    const message = await signed(get, components, { nonce: true });
    const p = policy({ nonceStore: false });
    expect(await verifyMessage(message, p)).toMatchObject({ ok: true });
    expect(await verifyMessage(message, p)).toMatchObject({ ok: true });
    expect(await verifyMessage(await signed(get, components), p)).toMatchObject({ ok: true });
  });

  it("is replaced by a store passed in, which asks for a nonce", async () => {
    const nonceStore = new MemoryNonceStore({ now: () => T0 });
    const p = policy({ nonceStore });
    const message = await signed(get, components, { nonce: "n-1" });
    expect(await verifyMessage(message, p)).toMatchObject({ ok: true });
    expect(nonceStore.size).toBe(1);
    expect(await verifyMessage(message, p)).toMatchObject({ ok: false, check: "replay" });
    expect(await verifyMessage(await signed(get, components), p)).toMatchObject({
      ok: false,
      check: "nonce",
    });
  });

  it("refuses a nonce longer than MAX_NONCE_LENGTH, which every store would have to keep", async () => {
    const p = policy();
    const longest = await signed(get, components, { nonce: "n".repeat(MAX_NONCE_LENGTH) });
    expect(await verifyMessage(longest, p)).toMatchObject({ ok: true });
    const longer = await signed(get, components, { nonce: "n".repeat(MAX_NONCE_LENGTH + 1) });
    expect(await verifyMessage(longer, p)).toMatchObject({ ok: false, check: "nonce" });
    expect(await verifyMessage(longer, policy({ nonceStore: false }))).toMatchObject({
      ok: false,
      check: "nonce",
    });
  });

  it("is a MemoryNonceStore on the policy's clock that forgets nonces after the max age", async () => {
    const checkAndStore = vi.spyOn(MemoryNonceStore.prototype, "checkAndStore");
    let now = T0;
    const p = policy({ now: () => now, maxAgeSeconds: 60, clockSkewSeconds: 5 });
    for (const nonce of ["n-1", "n-2", "n-3"]) {
      const message = await signed(get, components, { nonce, now: () => now });
      expect(await verifyMessage(message, p)).toMatchObject({ ok: true });
    }
    const store = checkAndStore.mock.contexts[0] as MemoryNonceStore;
    expect(checkAndStore.mock.contexts.every((context) => context === store)).toBe(true);
    expect(store.size).toBe(3);
    // Remembered as long as the signature could be accepted: max age, skew and the last second.
    expect(checkAndStore.mock.calls.map(([, ttl]) => ttl)).toEqual([66_000, 66_000, 66_000]);
    now += 66_000;
    const later = await signed(get, components, { nonce: "n-4", now: () => now });
    expect(await verifyMessage(later, p)).toMatchObject({ ok: true });
    expect(store.size).toBe(1);
  });
});
