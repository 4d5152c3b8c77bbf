/**
 * A parameter repeated within one Signature-Input (or Signature) member, and an algorithm
 * repeated in Content-Digest or Repr-Digest, are refused. RFC 8941 would let the last occurrence
 * win, but an intermediary that reads the first would then see another keyid, created or digest
 * than this verifier (RFC 9421 §7, RFC 9530 §2). Each tampered message below is built so that a
 * last-wins reading still verifies: only the repeat itself can be the reason for the refusal.
 */
import { ValidationError } from "@kms/core";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type HeaderSource,
  parseDictionary,
  type RequestMessage,
  type SignOptions,
  serializeDictionary,
  signMessage,
  type VerificationPolicy,
  type VerificationResult,
  verifyContentDigest,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x42);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About duplicate parameters, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const body = new TextEncoder().encode('{"order":1}');
const realDigest = computeContentDigest(body);
// A well-formed sha-256 digest of another body: what a proxy reading the first member would check.
const otherDigest = computeContentDigest(new TextEncoder().encode('{"order":2}'));
const plain: RequestMessage = {
  method: "POST",
  url: "https://api.test/orders?a=1&b=2",
  headers: { "content-type": "application/json", "content-digest": realDigest },
  body,
};

type FieldMap = Readonly<Record<string, string | readonly string[]>>;

const withHeaders = (headers: HeaderSource): RequestMessage => ({ ...plain, headers });

async function signed(
  components: readonly ComponentSpec[],
  extra: Partial<SignOptions> = {},
  message: RequestMessage = plain,
): Promise<FieldMap> {
  const fields = await signMessage(message, { signer, components, now: () => T0, ...extra });
  return {
    ...(message.headers as FieldMap),
    "signature-input": fields.signatureInput,
    signature: fields.signature,
  };
}

/** Both entry points, which parse on separate paths before they share verifyLabel. */
async function verifyBoth(message: RequestMessage, extra: Partial<VerificationPolicy> = {}) {
  const eager = await verifyMessageEagerly(message, { ...policy, ...extra });
  const lazy = await verifyMessage(message, { ...policy, ...extra });
  expect(lazy).toEqual(eager);
  return eager;
}

function expectMalformed(result: VerificationResult): void {
  expect(result).toMatchObject({ ok: false, check: "signature-malformed" });
  if (!result.ok) {
    expect(result.detail).toMatch(/unique labels and parameters/);
    expect(result.detail).toMatch(/repeated parameter key/);
  }
}

/** What RFC 8941 alone makes of the field: the tampering must be invisible to it. */
const lastWins = (field: string): string => serializeDictionary(parseDictionary(field));

/** `field` with the first `;name=value` parameter preceded or followed by `repeat`. */
function repeatParameter(field: string, name: string, repeat: "junk" | "same"): string {
  const match = new RegExp(`;${name}(?![a-z0-9_.*-])(=("[^"]*"|[^;,)\\s]+))?`).exec(field);
  expect(match, `${name} in ${field}`).not.toBeNull();
  const [original] = match as RegExpExecArray;
  const junkValue = name === "created" || name === "expires" ? "1" : '"junk"';
  const replacement =
    repeat === "same" ? `${original}${original}` : `;${name}=${junkValue}${original}`;
  return field.replace(original, replacement);
}

describe("repeated parameters in a Signature-Input member", () => {
  const PARAMS = ["created", "expires", "nonce", "alg", "keyid", "tag"] as const;
  let headers: FieldMap;

  beforeAll(async () => {
    headers = await signed(["@method", "@target-uri"], {
      expiresIn: 60,
      nonce: "n-1",
      tag: "app",
      includeAlg: true,
    });
  });

  it("accepts the member as signed (so the refusals below are about the repeat)", async () => {
    const input = headers["signature-input"] as string;
    for (const name of PARAMS) expect(input).toContain(`;${name}=`);
    expect(await verifyBoth(withHeaders(headers))).toMatchObject({ ok: true, keyId: "k1" });
  });

  describe.each(PARAMS)("%s", (name) => {
    it.each(["junk", "same"] as const)("refuses it repeated (%s value first)", async (repeat) => {
      const input = repeatParameter(headers["signature-input"] as string, name, repeat);
      // Last-wins parsing reads exactly the signed member back.
      expect(lastWins(input)).toBe(lastWins(headers["signature-input"] as string));
      const message = withHeaders({ ...headers, "signature-input": input });
      expectMalformed(await verifyBoth(message));
      // Naming the label or the tag does not pick one reading either.
      expectMalformed(await verifyBoth(message, { label: "sig1", tag: "app" }));
    });
  });

  it("refuses a repeat on one of two field lines, leaving the other label unusable too", async () => {
    const other = await signed(["@method"], { label: "sig2" });
    const input = repeatParameter(headers["signature-input"] as string, "keyid", "same");
    const message = withHeaders({
      ...headers,
      "signature-input": [input, other["signature-input"] as string],
      signature: [headers.signature as string, other.signature as string],
    });
    expectMalformed(await verifyBoth(message, { label: "sig2" }));
  });
});

describe("repeated parameters on a covered component identifier", () => {
  it.each([
    ["a flag", { component: "content-digest", sf: true }, "sf", "same"],
    ["a key", { component: "content-digest", key: "sha-256" }, "key", "junk"],
    ["a query parameter name", { component: "@query-param", name: "a" }, "name", "junk"],
  ] as const)("refuses %s repeated", async (_what, component, name, repeat) => {
    const headers = await signed(["@method", component]);
    const original = headers["signature-input"] as string;
    const input = repeatParameter(original, name, repeat);
    expect(input).not.toBe(original);
    expect(lastWins(input)).toBe(lastWins(original));
    expect(await verifyBoth(withHeaders(headers))).toMatchObject({ ok: true });
    expectMalformed(await verifyBoth(withHeaders({ ...headers, "signature-input": input })));
  });

  it("accepts the same parameter on different identifiers and on the list", async () => {
    const headers = await signed([
      { component: "@query-param", name: "a" },
      { component: "@query-param", name: "b" },
      { component: "content-digest", key: "sha-256" },
    ]);
    expect(headers["signature-input"]).toContain(
      '("@query-param";name="a" "@query-param";name="b" "content-digest";key="sha-256")',
    );
    expect(await verifyBoth(withHeaders(headers))).toMatchObject({ ok: true });
  });
});

describe("repeated parameters on a Signature member", () => {
  it("refuses them, since a later signer covers the member with its parameters", async () => {
    const headers = await signed(["@method"]);
    const withParams = (params: string) =>
      withHeaders({ ...headers, signature: `${headers.signature as string}${params}` });
    expect(await verifyBoth(withParams(";p=1"))).toMatchObject({ ok: true });
    expectMalformed(await verifyBoth(withParams(";p=1;p=1")));
  });
});

describe("Content-Digest naming an algorithm twice", () => {
  const twice = {
    "real digest last": `${otherDigest}, ${realDigest}`,
    "real digest first": `${realDigest}, ${otherDigest}`,
  } as const;

  it.each(Object.entries(twice))("verifyContentDigest refuses it, %s", (_order, field) => {
    expect(verifyContentDigest(field, body)).toEqual({
      ok: false,
      reason: "Content-Digest is not a valid structured dictionary with one digest per algorithm",
    });
    // The same refusal when the repeated algorithm is not even an accepted one.
    expect(verifyContentDigest(`${field}, sha-512=:AAAA:`, body, ["sha-512"])).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/one digest per algorithm/),
    });
  });

  it("still accepts one digest per algorithm, and any distinct algorithms", () => {
    expect(verifyContentDigest(realDigest, body)).toEqual({ ok: true, algorithms: ["sha-256"] });
    const both = computeContentDigest(body, ["sha-256", "sha-512"]);
    expect(verifyContentDigest(both, body)).toEqual({
      ok: true,
      algorithms: ["sha-256", "sha-512"],
    });
  });

  describe.each(["required", "if-present"] as const)("with contentDigest %s", (mode) => {
    it.each([
      ["in one line, real digest last", `${otherDigest}, ${realDigest}`],
      ["in one line, real digest first", `${realDigest}, ${otherDigest}`],
      ["over two lines", [otherDigest, realDigest]],
    ] as const)("refuses a signed message with it %s", async (_where, digest) => {
      // The signer signed the ambiguous field as it is, so only the digest check can refuse it.
      const message = withHeaders({ ...(plain.headers as FieldMap), "content-digest": digest });
      const headers = await signed(["@method", "content-digest"], {}, message);
      const result = await verifyBoth(withHeaders(headers), { contentDigest: mode });
      expect(result).toMatchObject({ ok: false, check: "content-digest" });
      if (!result.ok) expect(result.detail).toMatch(/one digest per algorithm/);
    });

    it("accepts the same message with the digest once", async () => {
      const headers = await signed(["@method", "content-digest"]);
      expect(await verifyBoth(withHeaders(headers), { contentDigest: mode })).toMatchObject({
        ok: true,
      });
    });
  });

  it('refuses a signature covering "content-digest";key when the key repeats', async () => {
    const headers = await signed(["@method", { component: "content-digest", key: "sha-256" }]);
    const tampered = withHeaders({ ...headers, "content-digest": `${otherDigest}, ${realDigest}` });
    const result = await verifyBoth(tampered);
    expect(result).toMatchObject({ ok: false, check: "components" });
    if (!result.ok) expect(result.detail).toMatch(/repeated dictionary key/);
  });

  it('refuses a signature covering "content-digest";sf when the key repeats', async () => {
    const headers = await signed(["@method", { component: "content-digest", sf: true }]);
    const tampered = withHeaders({ ...headers, "content-digest": [otherDigest, realDigest] });
    expect(await verifyBoth(tampered)).toMatchObject({ ok: false, check: "components" });
  });
});

describe("signing", () => {
  it("refuses to add to a Signature-Input whose member repeats a parameter", async () => {
    const headers = await signed(["@method"]);
    const input = repeatParameter(headers["signature-input"] as string, "keyid", "same");
    const attempt = signMessage(withHeaders({ ...headers, "signature-input": input }), {
      signer,
      label: "sig2",
      components: ["@method"],
    });
    await expect(attempt).rejects.toThrow(ValidationError);
    await expect(attempt).rejects.toThrow(
      /signature-input field must be a dictionary with unique labels and parameters/,
    );
    const error = await attempt.catch((e: unknown) => e);
    expect((error as Error).cause).toBeInstanceOf(ValidationError);
  });

  it("refuses to add to a Signature whose member repeats a parameter", async () => {
    const headers = await signed(["@method"]);
    const message = withHeaders({ ...headers, signature: `${headers.signature as string};p;p` });
    await expect(
      signMessage(message, { signer, label: "sig2", components: ["@method"] }),
    ).rejects.toThrow(/signature field must be a dictionary with unique labels and parameters/);
  });

  it("adds to a Signature-Input whose members share parameter names", async () => {
    const headers = await signed(["@method"]);
    const added = await signMessage(withHeaders(headers), {
      signer,
      label: "sig2",
      components: ["@method"],
      now: () => T0,
    });
    const both = withHeaders({
      ...headers,
      "signature-input": added.signatureInput,
      signature: added.signature,
    });
    expect(await verifyBoth(both, { label: "sig1" })).toMatchObject({ ok: true });
    expect(await verifyBoth(both, { label: "sig2" })).toMatchObject({ ok: true });
  });

  it.each(["content-digest", "repr-digest"])(
    "refuses to cover %s;key when the field names the algorithm twice",
    async (field) => {
      const component = { component: field, key: "sha-256" };
      const once = withHeaders({ ...(plain.headers as FieldMap), [field]: realDigest });
      await expect(signed([component], {}, once)).resolves.toBeDefined();
      const twice = withHeaders({ [field]: `${otherDigest}, ${realDigest}` });
      await expect(signed([component], {}, twice)).rejects.toThrow(ValidationError);
      await expect(signed([{ component: field, sf: true }], {}, twice)).rejects.toThrow(
        /repeated dictionary key/,
      );
    },
  );
});
