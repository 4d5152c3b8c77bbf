/**
 * A covered Repr-Digest is a claim about the selected representation (RFC 9530 §3). When the
 * message carries the whole representation, that is the body, so the claim is checked against
 * it as Content-Digest is; for a partial or bodiless message it cannot be, and is not.
 */
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type HttpMessage,
  type RequestMessage,
  type ResponseMessage,
  signatureProblem,
  signMessage,
  VERIFICATION_CHECKS,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x5a);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About Repr-Digest, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

const body = encode('{"amount":10}');
/** The same length as `body`, one byte different. */
const oneByteOff = encode('{"amount":11}');
const representation = encode('{"id":7,"items":["a","b","c"]}');
/** Bytes 0-6 of `representation`, as a 206 would carry them. */
const part = representation.subarray(0, 7);

const request: RequestMessage = {
  method: "POST",
  url: "https://api.test/payments",
  headers: { "content-type": "application/json", "repr-digest": computeContentDigest(body) },
  body,
};

type Headers = Record<string, string>;

function withHeaders<M extends HttpMessage>(message: M, headers: Headers): M {
  return { ...message, headers: { ...(message.headers as Headers), ...headers } };
}

async function signed<M extends HttpMessage>(
  message: M,
  components: readonly ComponentSpec[],
  answering?: RequestMessage,
): Promise<M> {
  const fields = await signMessage(message, {
    signer,
    components,
    now: () => T0,
    ...(answering === undefined ? {} : { request: answering }),
  });
  return withHeaders(message, {
    "signature-input": fields.signatureInput,
    signature: fields.signature,
  });
}

/** Both entry points, which must agree. */
async function verifyBoth(
  message: HttpMessage,
  p: VerificationPolicy = policy,
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
    expect(result).toMatchObject({ ok: true });
  }
}

async function expectFailure(
  message: HttpMessage,
  check: string,
  detail: string | RegExp,
  p: VerificationPolicy = policy,
  answering?: RequestMessage,
): Promise<void> {
  for (const result of await verifyBoth(message, p, answering)) {
    expect(result).toMatchObject({ ok: false, check });
    if (!result.ok) expect(result.detail).toMatch(detail);
  }
}

const forms: [string, ComponentSpec][] = [
  ["plain", "repr-digest"],
  [";sf", { component: "repr-digest", sf: true }],
  [';key="sha-256"', { component: "repr-digest", key: "sha-256" }],
];

describe.each(forms)('a request signature covering "repr-digest" (%s)', (_name, component) => {
  const components = ["@method", "@target-uri", component];

  it("accepts the body the Repr-Digest describes", async () => {
    await expectOk(await signed(request, components));
  });

  it("refuses a body one byte off under the signed Repr-Digest, by default and when required", async () => {
    const swapped = { ...(await signed(request, components)), body: oneByteOff };
    for (const reprDigest of [undefined, "if-present", "required"] as const) {
      const p = reprDigest === undefined ? policy : { ...policy, reprDigest };
      // "required" insists on the plain form; the other forms fail on the body itself.
      if (reprDigest === "required" && component !== "repr-digest") {
        await expectFailure(swapped, "components", 'signature must cover "repr-digest"', p);
      } else {
        await expectFailure(
          swapped,
          "repr-digest",
          "Repr-Digest sha-256 does not match the body",
          p,
        );
      }
    }
  });
});

describe("Repr-Digest fails where Content-Digest fails, for the same field value", () => {
  const digest256 = computeContentDigest(body, ["sha-256"]);
  const digest512 = computeContentDigest(body, ["sha-512"]);
  // [case, field value, policy, reason after the field name]
  const cases: [string, string, Partial<VerificationPolicy>, string][] = [
    [
      "only an unknown algorithm",
      "md5=:AAAAAAAAAAAAAAAAAAAAAA==:",
      {},
      "has none of the accepted algorithms (sha-256, sha-512)",
    ],
    [
      "only an algorithm the policy does not accept",
      digest256,
      { digestAlgorithms: ["sha-512"] },
      "has none of the accepted algorithms (sha-512)",
    ],
    [
      "an accepted algorithm that is not a byte sequence",
      "sha-256=abc",
      {},
      "sha-256 must be a byte sequence",
    ],
    [
      "one algorithm twice",
      `${digest256}, ${digest256}`,
      {},
      "is not a valid structured dictionary with one digest per algorithm",
    ],
    [
      "a matching and a wrong digest",
      `${digest256}, ${computeContentDigest(oneByteOff, ["sha-512"])}`,
      {},
      "sha-512 does not match the body",
    ],
  ];

  it.each(cases)("%s", async (_name, value, extra, reason) => {
    for (const [field, name] of [
      ["content-digest", "Content-Digest"],
      ["repr-digest", "Repr-Digest"],
    ] as const) {
      const message = await signed({ ...request, headers: { [field]: value } }, ["@method", field]);
      for (const result of await verifyBoth(message, { ...policy, ...extra })) {
        expect(result).toEqual({
          ok: false,
          check: field,
          detail: `${name} ${reason}`,
          label: "sig1",
        });
      }
    }
  });

  it("accepts sha-512 alone under the default algorithms, as Content-Digest does", async () => {
    const message = await signed(withHeaders(request, { "repr-digest": digest512 }), [
      "repr-digest",
    ]);
    await expectOk(message);
  });
});

describe("what the raw body and the policy decide", () => {
  it("needs the raw body to check a Repr-Digest of a whole representation", async () => {
    const { body: _, ...bodiless } = await signed(request, ["@method", "repr-digest"]);
    await expectFailure(bodiless, "repr-digest", "the raw body is needed to check Repr-Digest");
  });

  it('"required" refuses a signature that does not cover "repr-digest" as components', async () => {
    const message = await signed(request, ["@method", "@target-uri"]);
    await expectOk(message);
    await expectFailure(message, "components", 'signature must cover "repr-digest"', {
      ...policy,
      reprDigest: "required",
    });
  });

  it("checks both digests when both are covered", async () => {
    const both = withHeaders(request, { "content-digest": computeContentDigest(body) });
    const components = ["@method", "content-digest", "repr-digest"];
    await expectOk(await signed(both, components), { ...policy, reprDigest: "required" });

    // A Repr-Digest of other bytes (say, before a content coding the body does not have) is a
    // false claim even though Content-Digest matches, and the reverse.
    const wrongRepr = withHeaders(both, { "repr-digest": computeContentDigest(oneByteOff) });
    await expectFailure(await signed(wrongRepr, components), "repr-digest", "does not match");
    const wrongContent = withHeaders(both, { "content-digest": computeContentDigest(oneByteOff) });
    await expectFailure(await signed(wrongContent, components), "content-digest", "does not match");
  });

  it("maps a Repr-Digest failure to a 401 problem naming the check", async () => {
    expect(VERIFICATION_CHECKS).toContain("repr-digest");
    const [result] = await verifyBoth({
      ...(await signed(request, ["@method", "repr-digest"])),
      body: oneByteOff,
    });
    if (result === undefined || result.ok) throw new Error("expected a failure");
    expect(signatureProblem(result)).toEqual({
      type: "https://kms.dev/problems/signature/repr-digest",
      title: "HTTP message signature rejected",
      status: 401,
      detail: "Repr-Digest sha-256 does not match the body",
      check: "repr-digest",
      label: "sig1",
    });
  });
});

describe("messages that do not carry the whole representation", () => {
  const wholeDigest = computeContentDigest(representation);
  const get: RequestMessage = { method: "GET", url: "https://api.test/items/7", headers: {} };
  const head: RequestMessage = { ...get, method: "HEAD" };
  const response = (
    status: number,
    content: Uint8Array,
    headers: Headers = {},
  ): ResponseMessage => ({
    status,
    headers: { "content-type": "application/json", "repr-digest": wholeDigest, ...headers },
    body: content,
  });

  it("checks a 200 against its body", async () => {
    await expectOk(await signed(response(200, representation), ["@status", "repr-digest"]));
    await expectFailure(
      await signed(response(200, part), ["@status", "repr-digest"]),
      "repr-digest",
      "Repr-Digest sha-256 does not match the body",
    );
  });

  it("does not check a signed 206, whose body is a part of the representation", async () => {
    const partial = response(206, part, { "content-range": "bytes 0-6/30" });
    await expectOk(await signed(partial, ["@status", "content-range", "repr-digest"]));
    await expectOk(await signed(partial, ["@status", "repr-digest"]));
    await expectOk(await signed(partial, ["@status", "repr-digest"]), {
      ...policy,
      reprDigest: "required",
    });
    // Nothing to check means the body is not needed either.
    const { body: _, ...bodiless } = await signed(partial, ["@status", "repr-digest"]);
    await expectOk(bodiless);
  });

  it("checks a 206 or a Content-Range the signature does not cover, which anyone could forge", async () => {
    // An intermediary that swaps the body of a signed 200 could otherwise relabel it 206.
    const partial = response(206, part, { "content-range": "bytes 0-6/30" });
    await expectFailure(
      await signed(partial, ["repr-digest"]),
      "repr-digest",
      /^Repr-Digest sha-256 does not match the body \(.*"@status" or "content-range"\)$/,
    );
    const ranged = response(200, part, { "content-range": "bytes 0-6/30" });
    await expectFailure(await signed(ranged, ["repr-digest"]), "repr-digest", "does not match");
    await expectOk(await signed(ranged, ["content-range", "repr-digest"]));
  });

  it("does not check a response to HEAD, whose Repr-Digest describes what GET would send", async () => {
    const message = await signed(response(200, new Uint8Array()), ["@status", "repr-digest"]);
    await expectOk(message, policy, head);
    await expectOk({ ...message, body: undefined }, policy, head);
    // The method is known only from the request: without it the response is checked.
    await expectFailure(message, "repr-digest", "does not match");
    await expectFailure(message, "repr-digest", "does not match", policy, get);
  });

  it.each([304, 204])("does not check a signed %i, which has no content", async (status) => {
    const message = await signed(response(status, new Uint8Array()), ["@status", "repr-digest"]);
    await expectOk(message, policy, get);
    await expectOk({ ...message, body: undefined });
    await expectFailure(
      await signed(response(status, new Uint8Array()), ["repr-digest"]),
      "repr-digest",
      "does not match",
    );
  });

  it("does not check a request with a signed Content-Range (a partial PUT)", async () => {
    const put: RequestMessage = {
      method: "PUT",
      url: "https://api.test/items/7",
      headers: { "repr-digest": wholeDigest, "content-range": "bytes 0-6/30" },
      body: part,
    };
    await expectOk(await signed(put, ["@method", "content-range", "repr-digest"]));
    await expectOk(await signed(put, ["@method", "content-range", "repr-digest"]), {
      ...policy,
      reprDigest: "required",
    });
    await expectFailure(
      await signed(put, ["@method", "repr-digest"]),
      "repr-digest",
      "does not match",
    );
  });
});

describe("\";req\" components name the request's digest, not this response's", () => {
  const answered: RequestMessage = {
    method: "POST",
    url: "https://api.test/payments",
    headers: {
      "content-digest": computeContentDigest(body),
      "repr-digest": computeContentDigest(body),
    },
    body,
  };
  const reply: ResponseMessage = { status: 200, headers: {}, body: encode('{"ok":true}') };

  it.each(["content-digest", "repr-digest"])(
    "a response covering only the request's %s is not checked against its own body",
    async (field) => {
      const message = await signed(reply, ["@status", { component: field, req: true }], answered);
      await expectOk(message, policy, answered);
    },
  );
});
