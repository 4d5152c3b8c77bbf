/**
 * A headers object changed between calls: each signing and verification reads the headers as
 * they are when it starts, not as an earlier call on the same object saw them.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  fieldLines,
  item,
  type RequestMessage,
  signMessage,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
// About reading headers afresh, not about what a signature must cover.
const policy = {
  keyLookup: () => createHmacVerifier(secret),
  now: () => T0,
  requiredComponents: [],
};

describe("a headers object reused across calls", () => {
  it("keeps the first signature when a second is added to the same object", async () => {
    const headers: Record<string, string> = { "x-a": "1" };
    const message: RequestMessage = { method: "GET", url: "https://a.test/", headers };
    const first = await signMessage(message, { signer, components: ["x-a"], now: () => T0 });
    headers["signature-input"] = first.signatureInput;
    headers.signature = first.signature;
    const second = await signMessage(message, {
      signer,
      label: "sig2",
      components: ["@method", { component: "signature", key: "sig1" }],
      now: () => T0,
    });
    expect(second.signatureInput).toMatch(/^sig1=\("x-a"\);.*, sig2=\(/);
    headers["signature-input"] = second.signatureInput;
    headers.signature = second.signature;
    for (const label of ["sig1", "sig2"]) {
      expect(await verifyMessage(message, { ...policy, label })).toMatchObject({ ok: true, label });
    }
    // And a field changed since the last verification is seen by the next one.
    headers["x-a"] = "2";
    expect(await verifyMessage(message, { ...policy, label: "sig1" })).toMatchObject({
      ok: false,
      check: "signature",
    });
  });

  it("binds a response to the request the headers now describe, not to an earlier one", async () => {
    // A client that reuses one headers object for each request it sends.
    const headers: Record<string, string> = {};
    const send = async (nonce: string): Promise<RequestMessage> => {
      const request = { method: "POST", url: "https://a.test/pay" };
      const fields = await signMessage(
        { ...request, headers: {} },
        { signer, components: ["@method"], nonce, now: () => T0 },
      );
      headers["signature-input"] = fields.signatureInput;
      headers.signature = fields.signature;
      return { ...request, headers };
    };
    const answer = async (request: RequestMessage) => {
      const fields = await signMessage(
        { status: 200, headers: {} },
        {
          signer,
          request,
          components: ["@status", { component: "signature", key: "sig1", req: true }],
          now: () => T0,
        },
      );
      const headers = { "signature-input": fields.signatureInput, signature: fields.signature };
      return { status: 200, headers };
    };
    const first = await send("one");
    const firstResponse = await answer({ ...first, headers: { ...headers } });
    expect((await verifyMessage(firstResponse, policy, first)).ok).toBe(true);

    const second = await send("two");
    // An old response replayed as the answer to the second request must not verify.
    expect(await verifyMessage(firstResponse, policy, second)).toMatchObject({
      ok: false,
      check: "signature",
    });
    const secondResponse = await answer({ ...second, headers: { ...headers } });
    expect((await verifyMessage(secondResponse, policy, second)).ok).toBe(true);
  });

  it("signs a response over its request's fields as they are when the call starts", async () => {
    // A request read by an earlier call (here, its verification), then changed.
    const requestHeaders: Record<string, string> = { "x-a": "1" };
    const request: RequestMessage = {
      method: "GET",
      url: "https://a.test/",
      headers: requestHeaders,
    };
    const signed = await signMessage(request, { signer, components: ["x-a"], now: () => T0 });
    requestHeaders["signature-input"] = signed.signatureInput;
    requestHeaders.signature = signed.signature;
    expect((await verifyMessage(request, policy)).ok).toBe(true);
    requestHeaders["x-a"] = "2";
    const fields = await signMessage(
      { status: 200, headers: {} },
      { signer, request, components: ["@status", { component: "x-a", req: true }], now: () => T0 },
    );
    expect(fields.base).toContain('"x-a";req: 2\n');
    // Verifying the response reads the request afresh: the two agree.
    const response = {
      status: 200,
      headers: { "signature-input": fields.signatureInput, signature: fields.signature },
    };
    expect((await verifyMessage(response, policy, request)).ok).toBe(true);
  });

  it("holds the fields it read for the whole call, through an async key lookup", async () => {
    const headers: Record<string, string> = { "x-a": "1" };
    const message: RequestMessage = { method: "GET", url: "https://a.test/", headers };
    const signed = await signMessage(message, { signer, components: ["x-a"], now: () => T0 });
    headers["signature-input"] = signed.signatureInput;
    headers.signature = signed.signature;
    const result = await verifyMessage(message, {
      ...policy,
      keyLookup: async () => {
        // Meanwhile the object changes, and a busy server reads other requests' headers.
        headers["x-a"] = "2";
        for (let i = 0; i < 32; i++) fieldLines({ "x-other": String(i) });
        return createHmacVerifier(secret);
      },
    });
    // The call started with x-a: 1, as signed; without a load it would see nothing else.
    expect(result).toMatchObject({ ok: true });
  });

  it("derives component values and field lines from the headers as they are now", () => {
    const headers: Record<string, string> = { "x-a": "1" };
    const message: RequestMessage = { method: "GET", url: "https://a.test/", headers };
    expect(componentValues(item("x-a"), { message })).toEqual(["1"]);
    expect(fieldLines(headers).get("x-a")).toEqual(["1"]);
    headers["x-a"] = "2";
    headers["x-b"] = "3";
    expect(componentValues(item("x-a"), { message })).toEqual(["2"]);
    expect(fieldLines(headers).get("x-b")).toEqual(["3"]);
  });
});
