/**
 * Content-Digest on a response without content by definition: one to HEAD, or a 1xx, 204 or
 * 304 (RFC 9110 §6.4.1). Content-Digest is over the content (RFC 9530 §2), which such a response
 * has empty: RFC 9530 Appendix B.2 answers HEAD with `Content-Digest` "computed on empty
 * content" beside a `Repr-Digest` of what GET would send, and Appendix B.9 says the same of a
 * 204. So the field is checked against empty content, also when no raw body is supplied, and a
 * Content-Digest of the representation there is a false claim. The status makes a response
 * bodiless only when the signature covers `@status`.
 */
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  type HttpMessage,
  type RequestMessage,
  type ResponseMessage,
  signMessage,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x3c);
const T0 = 1_700_000_000_000;
// Not our signer's response path (which adds no Content-Digest to these responses): a signer
// that sends whatever Content-Digest it is given, as other implementations do.
const thirdParty = createHmacSigner(SECRET, { keyId: "other" });
const policy: VerificationPolicy = {
  // About Content-Digest of responses without content, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "other" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const required: VerificationPolicy = { ...policy, contentDigest: "required" };

// RFC 9530 Appendix B.1 / B.2: `{"hello": "world"}` and LF, and empty content.
const representation = new TextEncoder().encode('{"hello": "world"}\n');
const OF_REPRESENTATION = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
const OF_EMPTY = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";

const get: RequestMessage = { method: "GET", url: "https://foo.example/items/123", headers: {} };
const head: RequestMessage = { ...get, method: "HEAD" };

function response(
  status: number,
  headers: Record<string, string>,
  body?: Uint8Array,
): ResponseMessage {
  const message = { status, headers: { "content-type": "application/json", ...headers } };
  return body === undefined ? message : { ...message, body };
}

async function signed(
  message: ResponseMessage,
  components: readonly ComponentSpec[],
): Promise<ResponseMessage> {
  const fields = await signMessage(message, { signer: thirdParty, components, now: () => T0 });
  return {
    ...message,
    headers: {
      ...(message.headers as Record<string, string>),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

/** Both entry points, which must agree. */
async function verifyBoth(
  message: HttpMessage,
  p: VerificationPolicy,
  answering?: RequestMessage,
): Promise<VerificationResult[]> {
  return [
    await verifyMessage(message, p, answering),
    await verifyMessageEagerly(message, p, answering),
  ];
}

async function expectOk(
  message: HttpMessage,
  p: VerificationPolicy = policy,
  answering?: RequestMessage,
): Promise<void> {
  for (const result of await verifyBoth(message, p, answering)) {
    expect(result).toMatchObject({ ok: true, keyId: "other" });
  }
}

async function expectFailure(
  message: HttpMessage,
  check: string,
  detail: string,
  p: VerificationPolicy = policy,
  answering?: RequestMessage,
): Promise<void> {
  for (const result of await verifyBoth(message, p, answering)) {
    expect(result).toEqual({ ok: false, check, detail, label: "sig1" });
  }
}

const withoutBody = ({ body: _, ...rest }: ResponseMessage): ResponseMessage => rest;

describe("a response to HEAD (RFC 9530 Appendix B.2)", () => {
  const components = ["@status", "content-type", "content-digest", "repr-digest"];

  it("accepts a Content-Digest of empty content beside a Repr-Digest of the representation", async () => {
    const message = await signed(
      response(200, { "content-digest": OF_EMPTY, "repr-digest": OF_REPRESENTATION }),
      components,
    );
    // An HTTP client has no body to give for HEAD; one that gives the empty body agrees.
    await expectOk(message, policy, head);
    await expectOk({ ...message, body: new Uint8Array() }, policy, head);
    await expectOk(message, required, head);
  });

  it("refuses a Content-Digest of the representation, which the response does not carry", async () => {
    const message = await signed(
      response(200, { "content-digest": OF_REPRESENTATION, "repr-digest": OF_REPRESENTATION }),
      components,
    );
    for (const m of [message, { ...message, body: new Uint8Array() }]) {
      await expectFailure(
        m,
        "content-digest",
        "Content-Digest sha-256 does not match the body",
        policy,
        head,
      );
    }
  });

  it("needs the request to know the response has no content", async () => {
    // The method is the caller's own: without it, or for GET, the response is an ordinary 200.
    const message = await signed(
      response(200, { "content-digest": OF_EMPTY, "repr-digest": OF_REPRESENTATION }),
      components,
    );
    for (const answering of [undefined, get]) {
      await expectFailure(
        message,
        "content-digest",
        "the raw body is needed to check Content-Digest",
        policy,
        answering,
      );
    }
  });
});

describe.each([204, 304, 103])("a %i response", (status) => {
  it("with @status covered: checks Content-Digest against empty content, no body needed", async () => {
    const message = await signed(response(status, { "content-digest": OF_EMPTY }), [
      "@status",
      "content-digest",
    ]);
    await expectOk(message, policy, get);
    await expectOk(message);
    await expectOk({ ...message, body: new Uint8Array() });
    await expectOk(message, required);

    const claimsContent = await signed(response(status, { "content-digest": OF_REPRESENTATION }), [
      "@status",
      "content-digest",
    ]);
    await expectFailure(
      claimsContent,
      "content-digest",
      "Content-Digest sha-256 does not match the body",
    );
  });

  it("with @status not covered: is checked like any response, so needs the body", async () => {
    const message = await signed(response(status, { "content-digest": OF_EMPTY }), [
      "content-digest",
    ]);
    await expectFailure(
      message,
      "content-digest",
      "the raw body is needed to check Content-Digest",
    );
    await expectOk({ ...message, body: new Uint8Array() });
    await expectFailure(
      { ...message, body: representation },
      "content-digest",
      "Content-Digest sha-256 does not match the body",
    );
  });
});

describe("an intermediary that relabels a signed 200 as 204 and drops its body", () => {
  it("is caught when the signature does not cover @status", async () => {
    const original = await signed(
      response(200, { "content-digest": OF_REPRESENTATION }, representation),
      ["content-type", "content-digest"],
    );
    await expectOk(original);
    const relabelled = { ...original, status: 204 };
    await expectFailure(
      withoutBody(relabelled),
      "content-digest",
      "the raw body is needed to check Content-Digest",
    );
    await expectFailure(
      { ...relabelled, body: new Uint8Array() },
      "content-digest",
      "Content-Digest sha-256 does not match the body",
    );
    // "required" does not waive the digest for a status the signer did not vouch for.
    const undigested = await signed(response(200, {}, representation), ["content-type"]);
    await expectFailure(
      withoutBody({ ...undigested, status: 204 }),
      "components",
      'signature must cover "content-digest"',
      required,
    );
  });

  it("breaks the signature when it covers @status", async () => {
    const original = await signed(
      response(200, { "content-digest": OF_REPRESENTATION }, representation),
      ["@status", "content-digest"],
    );
    await expectFailure(
      withoutBody({ ...original, status: 204 }),
      "signature",
      "signature does not match the signature base",
    );
  });
});

describe('contentDigest: "required" on a response without content by definition', () => {
  it("accepts one without a Content-Digest: there is no content to vouch for", async () => {
    const noContent = await signed(response(204, {}), ["@status"]);
    await expectOk(noContent, required);
    await expectOk({ ...noContent, body: new Uint8Array() }, required);
    const headOk = await signed(response(200, {}), ["@status", "content-type"]);
    await expectOk(headOk, required, head);
  });

  it("still requires one when the status is not covered, or a body is supplied anyway", async () => {
    await expectFailure(
      await signed(response(204, {}), ["content-type"]),
      "components",
      'signature must cover "content-digest"',
      required,
    );
    await expectFailure(
      { ...(await signed(response(204, {}), ["@status"])), body: representation },
      "components",
      'signature must cover "content-digest"',
      required,
    );
    await expectFailure(
      await signed(response(200, {}), ["@status", "content-type"]),
      "components",
      'signature must cover "content-digest"',
      required,
      get,
    );
  });
});
