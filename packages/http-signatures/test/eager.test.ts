import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  createKmsSigner,
  type KmsSignatureApi,
  MemoryNonceStore,
  type MessageSigner,
  type MessageVerifier,
  nodeRequestMessage,
  signNodeResponse,
  signRequest,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const secret = new Uint8Array(32).fill(3);
const url = "https://api.example/orders?id=7";

async function signedRequest(nonce = false) {
  const headers = await signRequest(
    { method: "GET", url },
    { signer: createHmacSigner(secret, { keyId: "k" }), nonce },
  );
  return { method: "GET", url, headers };
}

const isPromise = (value: unknown): value is Promise<unknown> => value instanceof Promise;

describe("local signers and verifiers offer synchronous twins", () => {
  it("signSync and verifySync agree with sign and verify", async () => {
    const signer = createHmacSigner(secret);
    const verifier = createHmacVerifier(secret);
    const base = new TextEncoder().encode('"@method": GET');
    const signature = signer.signSync!(base);
    expect(signature).toEqual(await signer.sign(base));
    expect(verifier.verifySync!(base, signature)).toBe(true);
    const tampered = Uint8Array.from(signature);
    tampered[0]! ^= 1;
    expect(verifier.verifySync!(base, tampered)).toBe(false);
    expect(await verifier.verify(base, tampered)).toBe(false);
  });

  it("calls a signer's and a verifier's own synchronous methods on them (classes keep `this`)", async () => {
    // Wrappers of the caller's own, written as classes over the local HMAC pair.
    class Signer implements MessageSigner {
      readonly algorithm = "hmac-sha256" as const;
      readonly keyId = "k";
      readonly #inner = createHmacSigner(secret);
      async sign(base: Uint8Array) {
        return this.signSync(base);
      }
      signSync(base: Uint8Array) {
        return this.#inner.signSync!(base);
      }
    }
    class Verifier implements MessageVerifier {
      readonly algorithm = "hmac-sha256" as const;
      readonly #inner = createHmacVerifier(secret);
      async verify(base: Uint8Array, signature: Uint8Array) {
        return this.verifySync(base, signature);
      }
      verifySync(base: Uint8Array, signature: Uint8Array) {
        return this.#inner.verifySync!(base, signature);
      }
    }
    const headers = await signRequest({ method: "GET", url }, { signer: new Signer() });
    const verifier = new Verifier();
    const result = verifyMessageEagerly(
      { method: "GET", url, headers },
      { keyLookup: () => verifier },
    );
    expect(isPromise(result) ? await result : result).toMatchObject({ ok: true, keyId: "k" });
  });

  it("KMS signers have none (their key is elsewhere)", () => {
    const kms = {} as KmsSignatureApi;
    expect(createKmsSigner({ kms, keyId: "x", algorithm: "hmac-sha256" }).signSync).toBeUndefined();
  });
});

describe("verifyMessageEagerly", () => {
  const verifier = createHmacVerifier(secret);
  const policy: VerificationPolicy = { keyLookup: () => verifier };

  it("answers without a promise for a synchronous lookup and verifier, ok or not", async () => {
    const message = await signedRequest();
    const ok = verifyMessageEagerly(message, policy);
    expect(isPromise(ok)).toBe(false);
    expect(ok).toMatchObject({ ok: true, keyId: "k", algorithm: "hmac-sha256" });

    const wrongKey = createHmacVerifier(new Uint8Array(32).fill(4));
    const rejected = verifyMessageEagerly(message, { keyLookup: () => wrongKey });
    expect(isPromise(rejected)).toBe(false);
    expect(rejected).toMatchObject({ ok: false, check: "signature" });
  });

  it("falls back to a promise for async lookups, async verifiers and nonce stores", async () => {
    const message = await signedRequest();
    const asyncOnly: MessageVerifier = {
      algorithm: "hmac-sha256",
      verify: (base, sig) => verifier.verify(base, sig),
    };
    const cases: VerificationPolicy[] = [
      { keyLookup: async () => verifier },
      { keyLookup: () => asyncOnly },
    ];
    for (const p of cases) {
      const result = verifyMessageEagerly(message, p);
      expect(isPromise(result)).toBe(true);
      expect(await result).toMatchObject({ ok: true });
    }
    const withNonce = await signedRequest(true);
    const nonces = { keyLookup: () => verifier, nonceStore: new MemoryNonceStore() };
    const first = verifyMessageEagerly(withNonce, nonces);
    expect(isPromise(first)).toBe(true);
    expect(await first).toMatchObject({ ok: true });
    expect(await verifyMessageEagerly(withNonce, nonces)).toMatchObject({
      ok: false,
      check: "replay",
    });
    const tampered = { ...message, url: "https://api.example/orders?id=8" };
    expect(await verifyMessageEagerly(tampered, cases[1]!)).toMatchObject({
      ok: false,
      check: "signature",
    });
  });

  it("gives the same answers as verifyMessage on failure paths", async () => {
    const message = await signedRequest();
    const variants: [VerificationPolicy, string][] = [
      [{ keyLookup: () => undefined }, "key"],
      [{ ...policy, requiredComponents: ["content-digest"] }, "components"],
      [{ ...policy, label: "other" }, "label"],
      [{ ...policy, maxAgeSeconds: 10, now: () => Date.now() + 3_600_000 }, "max-age"],
    ];
    for (const [p, check] of variants) {
      const eager = (await verifyMessageEagerly(message, p)) as VerificationResult;
      expect(eager).toMatchObject({ ok: false, check });
      expect(await verifyMessage(message, p)).toEqual(eager);
    }
  });

  it("throws a key lookup failure (verifyMessage rejects with it)", async () => {
    const message = await signedRequest();
    const outage = new Error("KMS unavailable");
    const failing: VerificationPolicy = {
      keyLookup: () => {
        throw outage;
      },
    };
    expect(() => verifyMessageEagerly(message, failing)).toThrow(outage);
    await expect(verifyMessage(message, failing)).rejects.toBe(outage);
  });
});

describe("signNodeResponse with a local signer", () => {
  let server: Server;
  let origin: string;
  const seen: { signedBeforeEndReturned?: boolean } = {};

  beforeAll(async () => {
    server = createServer((req, res) => {
      const request = nodeRequestMessage(req);
      signNodeResponse(res, { signer: createHmacSigner(secret, { keyId: "a" }) }, () => ({
        request,
      }));
      // A second signer on the same response wraps the first: it signs first (its end runs
      // first), then the first signer adds Content-Digest and its label after it.
      signNodeResponse(
        res,
        { signer: createHmacSigner(secret, { keyId: "b" }), label: "sig2", digest: false },
        () => ({ request }),
      );
      res.setHeader("content-type", "application/json");
      res.end(Buffer.from('{"a":1}'));
      seen.signedBeforeEndReturned = res.hasHeader("signature");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("signs before end returns, and nested signers both verify", async () => {
    const res = await fetch(`${origin}/x`);
    const body = new Uint8Array(await res.arrayBuffer());
    expect(seen.signedBeforeEndReturned).toBe(true);
    expect(res.headers.get("signature-input")).toMatch(/^sig2=.*, sig1=/);
    const request = { method: "GET", url: `${origin}/x`, headers: {} };
    const response = { status: res.status, headers: res.headers, body };
    for (const label of ["sig1", "sig2"]) {
      const result = await verifyMessage(
        response,
        { keyLookup: () => createHmacVerifier(secret), label, contentDigest: "required" },
        request,
      );
      // sig2 (digest: false) was made before sig1 added Content-Digest: it covers no digest,
      // so "required" must refuse it while sig1 passes.
      expect(result).toMatchObject(
        label === "sig1" ? { ok: true } : { ok: false, check: "components" },
      );
    }
  });
});
