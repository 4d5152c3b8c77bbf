/**
 * Property-based robustness tests for the RFC 9421 verifier. The verifier faces whatever a
 * client sends, so it must answer every input with a documented failure instead of throwing,
 * and must never accept a message that differs from the signed one in more than
 * representation (what structured-field parsing, URL parsing or OWS stripping discard).
 */
import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  DIGEST_ALGORITHMS,
  type DigestAlgorithm,
  type HeaderSource,
  type HttpMessage,
  isInnerList,
  type MessageVerifier,
  parseDictionary,
  type RequestMessage,
  type ResponseMessage,
  type SignatureAlgorithm,
  serializeBareItem,
  serializeInnerList,
  serializeItem,
  signMessage,
  VERIFICATION_CHECKS,
  type VerificationPolicy,
  type VerificationResult,
  verifyContentDigest,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

// A fixed secret keeps counterexamples reproducible from the fast-check seed alone.
const SECRET = new Uint8Array(32).fill(0x5a);
const KEY_ID = "k";
const T0 = 1_700_000_000_000;
const NOW_S = T0 / 1000;
// A covered header value that must never be echoed into a failure detail.
const MARKER = "Zq7-marker-not-for-details";

const DOCUMENTED_CHECKS: ReadonlySet<string> = new Set(VERIFICATION_CHECKS);

const hmacVerifier = createHmacVerifier(SECRET);
const lookup = (id: string): MessageVerifier | undefined =>
  id === KEY_ID ? hmacVerifier : undefined;
// The properties are about parsing and checks, not about what a signature must cover.
const basePolicy: VerificationPolicy = { keyLookup: lookup, now: () => T0, requiredComponents: [] };

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

function expectDocumentedFailure(result: VerificationResult): void {
  expect(result.ok, `accepted: ${JSON.stringify(result)}`).toBe(false);
  if (result.ok) return;
  expect(DOCUMENTED_CHECKS.has(result.check), result.check).toBe(true);
  expect(typeof result.detail).toBe("string");
  expect(result.detail.length).toBeGreaterThan(0);
  expect(result.detail).not.toContain(MARKER);
  if (result.label !== undefined) expect(typeof result.label).toBe("string");
}

/**
 * Runs both entry points: the eager one has its own synchronous paths, and the two must agree
 * (no nonce store is used here, so repeated verification has no side effects).
 */
async function verifyBoth(
  message: HttpMessage,
  policy: VerificationPolicy,
  request?: RequestMessage,
): Promise<VerificationResult> {
  const eager = await verifyMessageEagerly(message, policy, request);
  const lazy = await verifyMessage(message, policy, request);
  expect(lazy).toEqual(eager);
  return eager;
}

// --- generators ---------------------------------------------------------------------------

const COMPONENT_IDS = [
  '"@method"',
  '"@target-uri"',
  '"@authority"',
  '"@scheme"',
  '"@request-target"',
  '"@path"',
  '"@query"',
  '"@query-param";name="x"',
  '"@query-param";name=x',
  '"@query-param"',
  '"@status"',
  '"@signature-params"',
  '"@unknown"',
  '"@method";req',
  '"@method";bs',
  '"@method";name="x"',
  '"content-type"',
  '"content-type";bs',
  '"content-type";sf',
  '"content-type";bs;sf',
  '"content-type";tr',
  '"content-type";foo',
  '"content-digest"',
  '"content-digest";sf',
  '"content-digest";key="sha-256"',
  '"signature";key="sig1"',
  '"signature";key=1',
  '"authorization"',
  '"x-absent"',
  '""',
  "tok",
  "1",
  ":AA==:",
];

const PARAMS = [
  `;created=${NOW_S}`,
  `;created=${NOW_S - 100_000}`,
  `;created=${NOW_S + 1000}`,
  ";created=1.5",
  ';created="x"',
  `;expires=${NOW_S + 60}`,
  `;expires=${NOW_S - 600}`,
  ';nonce="n"',
  ";nonce=1",
  ';alg="hmac-sha256"',
  ';alg="ed25519"',
  ';alg="rot13"',
  `;keyid="${KEY_ID}"`,
  ';keyid="other"',
  ";keyid=k",
  ';tag="t"',
  ";unknown=?1",
];

const FRAGMENTS = [
  ...COMPONENT_IDS,
  ...PARAMS,
  "sig1",
  "sig2",
  "sig1=",
  "=",
  "(",
  ")",
  "()",
  ";created=",
  ";expires=",
  ";keyid=",
  ";req",
  ";sf",
  ";bs",
  ";key=",
  String(NOW_S),
  "-",
  "0",
  "-0",
  "1.5",
  "999999999999.999",
  "999999999999999",
  "1234567890123456",
  ":",
  "::",
  " ",
  "  ",
  ",",
  ", ",
  '"',
  "\\",
  '\\"',
  "?0",
  "?1",
  "*",
  "\t",
  "é",
  "A",
  "+/",
  "==",
];

const fragment = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...FRAGMENTS) },
  { weight: 1, arbitrary: fc.base64String({ maxLength: 48 }) },
  { weight: 1, arbitrary: fc.integer().map(String) },
  { weight: 1, arbitrary: fc.string({ maxLength: 4 }) },
);
const fragmentString = fc.array(fragment, { maxLength: 24 }).map((parts) => parts.join(""));

const label = fc.oneof(
  { weight: 8, arbitrary: fc.constant("sig1") },
  { weight: 1, arbitrary: fc.constantFrom("sig2", "a") },
);

/**
 * Signature-Input / Signature pairs that parse and mostly carry a fresh `created` and the known
 * keyid, so the component and signature checks are reached, not only the parser.
 */
const wellFormedPair = fc
  .record({
    inputLabel: label,
    // Undefined means the same label as the input, the case that gets past label matching.
    signatureLabel: fc.option(label, { nil: undefined, freq: 4 }),
    ids: fc.array(fc.constantFrom(...COMPONENT_IDS.filter((id) => id.startsWith('"'))), {
      maxLength: 5,
    }),
    fresh: fc.boolean(),
    params: fc.array(fc.constantFrom(...PARAMS), { maxLength: 2 }),
    signature: fc.uint8Array({ maxLength: 64 }),
  })
  .map(({ inputLabel, signatureLabel, ids, fresh, params, signature }) => ({
    input: `${inputLabel}=(${ids.join(" ")})${fresh ? `;created=${NOW_S};keyid="${KEY_ID}"` : ""}${params.join("")}`,
    signature: `${signatureLabel ?? inputLabel}=:${b64(signature)}:`,
  }));

const fieldText = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: "binary", maxLength: 60 }),
  fragmentString,
);

type HeaderValue = string | readonly string[] | number | undefined;
const headerValue = (text: fc.Arbitrary<string>): fc.Arbitrary<HeaderValue> =>
  fc.oneof(
    { weight: 6, arbitrary: text },
    { weight: 1, arbitrary: fc.array(text, { minLength: 1, maxLength: 3 }) },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );

const signatureHeaders = fc.oneof(
  fc.record({ "signature-input": headerValue(fieldText), signature: headerValue(fieldText) }),
  {
    weight: 2,
    arbitrary: wellFormedPair.map((p) => ({ "signature-input": p.input, signature: p.signature })),
  },
);

const body = new TextEncoder().encode('{"order":42}');

const targetUrl = fc.oneof(
  fc.constantFrom(
    "https://api.test/orders/42?x=1&y=two",
    "https://api.test/?x=a&x=%20b",
    "http://[::1]:8080/",
    "not a url",
    "/relative?x=1",
  ),
  fc.webUrl({ withQueryParameters: true }),
  fc.string({ maxLength: 30 }),
);

const requestArb: fc.Arbitrary<RequestMessage> = fc
  .record({
    method: fc.oneof(fc.constantFrom("GET", "POST"), fc.string({ maxLength: 8 })),
    url: targetUrl,
    signatures: signatureHeaders,
    contentType: headerValue(fieldText),
    digest: fc.constantFrom(computeContentDigest(body), "sha-256=:AA==:", undefined),
    withBody: fc.boolean(),
  })
  .map(({ method, url, signatures, contentType, digest, withBody }) => ({
    method,
    url,
    headers: {
      ...signatures,
      "content-type": contentType,
      "content-digest": digest,
      authorization: `Bearer ${MARKER}`,
    },
    body: withBody ? body : undefined,
  }));

const responseArb: fc.Arbitrary<ResponseMessage> = fc
  .record({
    status: fc.oneof(fc.integer({ min: -1, max: 1200 }), fc.constantFrom(Number.NaN, 200.5)),
    signatures: signatureHeaders,
  })
  .map(({ status, signatures }) => ({
    status,
    headers: { ...signatures, "content-type": "text/plain", authorization: MARKER },
  }));

const policyExtras: fc.Arbitrary<Partial<VerificationPolicy>> = fc.record(
  {
    label: fc.constantFrom("sig1", "sig2"),
    tag: fc.constant("t"),
    algorithms: fc.constantFrom<readonly SignatureAlgorithm[]>(["hmac-sha256"], ["ed25519"], []),
    requiredComponents: fc.constantFrom<readonly ComponentSpec[]>(
      ["@method"],
      ["content-digest"],
      [{ component: "@query-param", name: "x" }],
    ),
    contentDigest: fc.constantFrom("required" as const, "if-present" as const),
    requireCreated: fc.boolean(),
    requireExpires: fc.boolean(),
    requireNonce: fc.boolean(),
    maxAgeSeconds: fc.integer({ min: 0, max: 1000 }),
    clockSkewSeconds: fc.integer({ min: 0, max: 60 }),
    structuredFields: fc.constant({ "x-dict": "dictionary" as const, "x-list": "list" as const }),
  },
  { requiredKeys: [] },
);

const policyArb: fc.Arbitrary<VerificationPolicy> = fc
  .record({
    // Mostly the default policy: each extra option stops most inputs at its own check.
    extra: fc.oneof({ weight: 2, arbitrary: fc.constant({}) }, policyExtras),
    // An asynchronous lookup takes the promise paths of the eager verifier.
    async: fc.boolean(),
  })
  .map(
    ({ extra, async }): VerificationPolicy =>
      async
        ? { ...basePolicy, ...extra, keyLookup: async (id) => lookup(id) }
        : { ...basePolicy, ...extra },
  );

// --- a validly signed request, the starting point for mutations ----------------------------

const REQUEST_COMPONENTS: readonly ComponentSpec[] = [
  "@method",
  "@target-uri",
  "@path",
  "@query",
  "content-type",
  "content-digest",
];

const original: RequestMessage = {
  method: "POST",
  url: "https://api.test/orders/42?x=1&y=two",
  headers: {
    "content-type": "application/json",
    "content-digest": computeContentDigest(body),
    authorization: `Bearer ${MARKER}`,
  },
  body,
};

type FieldMap = Record<string, string>;

async function signedRequest(): Promise<RequestMessage & { readonly headers: FieldMap }> {
  const fields = await signMessage(original, {
    signer: createHmacSigner(SECRET, { keyId: KEY_ID }),
    components: REQUEST_COMPONENTS,
    now: () => T0,
  });
  return {
    ...original,
    headers: {
      ...(original.headers as FieldMap),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

// --- mutations and what counts as "unchanged" ----------------------------------------------

interface Mutation {
  readonly kind: "replace" | "insert" | "delete";
  /** -1 is the last position; edges are where trimming and OWS rules apply, so they get weight. */
  readonly at: number;
  readonly ch: string;
}

const INTERESTING_CHARS = [
  " ",
  "\t",
  "\n",
  "\r",
  "\v",
  "\f",
  "\u0000",
  "\u00a0",
  "\u0085",
  "\u2028",
  "\u3000",
  "\ufeff",
  '"',
  "\\",
  ":",
  ";",
  ",",
  "=",
  "(",
  ")",
  "?",
  "#",
  "%",
  "&",
  "/",
  ".",
  "*",
  "-",
  "+",
  "0",
  "1",
  "7",
  "9",
  "A",
  "a",
  "k",
  "z",
  "é",
];

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom("replace", "insert", "delete"),
  at: fc.oneof(fc.constant(0), fc.constant(-1), fc.nat()),
  ch: fc.oneof(
    fc.constantFrom(...INTERESTING_CHARS),
    fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)),
  ),
});

function mutate(text: string, { kind, at, ch }: Mutation): string {
  const positions = kind === "insert" ? text.length + 1 : text.length;
  if (positions === 0) return text;
  const i = at < 0 ? positions - 1 : at % positions;
  if (kind === "insert") return text.slice(0, i) + ch + text.slice(i);
  if (kind === "delete") return text.slice(0, i) + text.slice(i + 1);
  return text.slice(0, i) + ch + text.slice(i + 1);
}

/** RFC 9110 OWS is SP and HTAB only; nothing else at a field value's edges is insignificant. */
const stripOws = (value: string): string => value.replace(/^[ \t]+|[ \t]+$/g, "");

/**
 * What the verifier must hold fixed for sig1: its Signature-Input member after parsing and its
 * signature bytes. Undefined when a field no longer parses (the verifier must fail then).
 */
function signedPart(inputs: string, signatures: string): string | undefined {
  try {
    // Strict like the verifier: a repeated label or parameter leaves nothing fixed, so it must
    // fail.
    const strict = { rejectDuplicateKeys: true, rejectDuplicateParameters: true };
    const input = parseDictionary(inputs, strict).get("sig1");
    const signature = parseDictionary(signatures, strict).get("sig1");
    if (input === undefined || !isInnerList(input)) return undefined;
    if (signature === undefined || isInnerList(signature)) return undefined;
    return `${serializeInnerList(input)} ${serializeBareItem(signature.value)}`;
  } catch {
    return undefined;
  }
}

/** JSON with every non-printable-ASCII code unit escaped, so invisible changes show. */
const show = (text: string): string =>
  JSON.stringify(text).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );

/** Whether `a` and `b` are one target URI: a fragment is never sent (RFC 9110 §7.1). */
function sameUrl(a: string, b: string): boolean {
  try {
    const [x, y] = [new URL(a), new URL(b)];
    x.hash = "";
    y.hash = "";
    return x.href === y.href;
  } catch {
    return false;
  }
}

const TARGETS = [
  "signature-input",
  "signature",
  "method",
  "url",
  "content-type",
  "content-digest",
] as const;
type Target = (typeof TARGETS)[number];

function applyMutation(
  signed: RequestMessage & { readonly headers: FieldMap },
  target: Target,
  mutation: Mutation,
): { readonly message: RequestMessage; readonly value: string; readonly unchanged: boolean } {
  const headers = signed.headers;
  const url = String(signed.url);
  switch (target) {
    case "method": {
      const method = mutate(signed.method, mutation);
      return { message: { ...signed, method }, value: method, unchanged: method === signed.method };
    }
    case "url": {
      const mutated = mutate(url, mutation);
      return {
        message: { ...signed, url: mutated },
        value: mutated,
        unchanged: sameUrl(mutated, url),
      };
    }
    case "signature-input":
    case "signature": {
      const value = mutate(headers[target] as string, mutation);
      const mutated = { ...headers, [target]: value };
      const before = signedPart(headers["signature-input"] as string, headers.signature as string);
      const after = signedPart(mutated["signature-input"] as string, mutated.signature as string);
      return {
        message: { ...signed, headers: mutated },
        value,
        unchanged: after !== undefined && after === before,
      };
    }
    default: {
      const value = mutate(headers[target] as string, mutation);
      return {
        message: { ...signed, headers: { ...headers, [target]: value } },
        value,
        unchanged: stripOws(value) === stripOws(headers[target] as string),
      };
    }
  }
}

// --- regressions found by the properties --------------------------------------------------

describe("regressions found by the properties", () => {
  // Found by the mutation property (seed 548629906): covered field values were trimmed with
  // String.prototype.trim, which also strips NBSP, U+3000, BOM, VT, FF, CR and LF. RFC 9421
  // §2.1 strips only OWS (SP, HTAB); anything else is part of the value, and Node's HTTP
  // parser hands a leading 0xA0 byte (obs-text) to the application untouched.
  const message = async (contentType: string): Promise<RequestMessage> => {
    const plain: RequestMessage = {
      method: "GET",
      url: "https://api.test/",
      headers: { "content-type": "application/json" },
    };
    const fields = await signMessage(plain, {
      signer: createHmacSigner(SECRET, { keyId: KEY_ID }),
      components: ["content-type"],
      now: () => T0,
    });
    return {
      ...plain,
      headers: {
        "content-type": contentType,
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
  };

  it("still accepts a covered value with only OWS around it", async () => {
    expect(await verifyBoth(await message(" application/json\t"), basePolicy)).toMatchObject({
      ok: true,
    });
  });

  it.each([
    ["NBSP (0xA0) before", "\u00a0application/json"],
    ["U+3000 after", "application/json\u3000"],
    ["LF after", "application/json\n"],
  ])("rejects a covered value changed by %s", async (_name, contentType) => {
    expect(await verifyBoth(await message(contentType), basePolicy)).toMatchObject({ ok: false });
  });
});

// --- properties ----------------------------------------------------------------------------

describe("verifier robustness (property-based)", () => {
  it("answers arbitrary Signature-Input / Signature values with a documented failure", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(requestArb, responseArb),
        policyArb,
        fc.option(requestArb, { nil: undefined }),
        async (message, policy, request) => {
          expectDocumentedFailure(await verifyBoth(message, policy, request));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("accepts a single-character mutation of a signed request only when it changes nothing signed", async () => {
    const signed = await signedRequest();
    // The unmutated message must pass, or every "must fail" below would hold vacuously.
    expect(await verifyBoth(signed, { ...basePolicy, contentDigest: "required" })).toMatchObject({
      ok: true,
    });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...TARGETS), mutationArb, async (target, mutation) => {
        const { message, value, unchanged } = applyMutation(signed, target, mutation);
        const result = await verifyBoth(message, { ...basePolicy, contentDigest: "required" });
        if (result.ok) {
          expect(unchanged, `accepted a changed ${target}: ${show(value)}`).toBe(true);
          return;
        }
        expectDocumentedFailure(result);
        if (unchanged) {
          // The digest check parses with RFC 8941 rules, which skip SP but not HTAB at the
          // edges; failing there is conservative. Every other unchanged mutation must pass.
          expect(
            target === "content-digest" && result.check === "content-digest",
            `rejected an equivalent ${target}: ${show(value)} (${result.check})`,
          ).toBe(true);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("rejects any change to the signature bytes", async () => {
    const signed = await signedRequest();
    const match = /^sig1=:([^:]*):$/.exec(signed.headers.signature as string);
    const bytes = Buffer.from(match?.[1] ?? "", "base64");
    expect(bytes.length).toBe(32);
    const changedBytes = fc.oneof(
      fc
        .record({
          index: fc.nat({ max: bytes.length - 1 }),
          mask: fc.integer({ min: 1, max: 255 }),
        })
        .map(({ index, mask }) => {
          const copy = Uint8Array.from(bytes);
          copy[index] = (copy[index] as number) ^ mask;
          return copy;
        }),
      fc.nat({ max: bytes.length - 1 }).map((n) => bytes.subarray(0, n)),
      fc
        .uint8Array({ minLength: 1, maxLength: 8 })
        .map((extra) => Uint8Array.from([...bytes, ...extra])),
    );
    await fc.assert(
      fc.asyncProperty(changedBytes, async (changed) => {
        const message = {
          ...signed,
          headers: { ...signed.headers, signature: `sig1=:${b64(changed)}:` },
        };
        const result = await verifyBoth(message, basePolicy);
        expectDocumentedFailure(result);
        expect(result).toMatchObject({ check: "signature" });
      }),
      { numRuns: 500 },
    );
  });
});

describe("Content-Digest robustness (property-based)", () => {
  const nodeHash: Record<DigestAlgorithm, string> = { "sha-256": "sha256", "sha-512": "sha512" };
  const digestOf = (alg: DigestAlgorithm, data: Uint8Array): Buffer =>
    createHash(nodeHash[alg]).update(data).digest();

  const digestFragment = (data: Uint8Array): fc.Arbitrary<string> =>
    fc.oneof(
      fc.constantFrom(
        "sha-256",
        "sha-512",
        "md5",
        "sha-256=",
        "=",
        ":",
        "::",
        ", ",
        ",",
        " ",
        "\t",
        ";p",
        ";p=1",
        "?1",
        '"x"',
        "(",
        ")",
        `sha-256=:${b64(digestOf("sha-256", data))}:`,
        `sha-512=:${b64(digestOf("sha-512", data))}:`,
        `sha-256=:${b64(digestOf("sha-256", new Uint8Array()))}:`,
      ),
      fc.base64String({ maxLength: 48 }),
    );

  const fieldFor = (data: Uint8Array): fc.Arbitrary<string> =>
    fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.string({ unit: "binary", maxLength: 60 }),
      fc.array(digestFragment(data), { maxLength: 12 }).map((parts) => parts.join("")),
      fc
        .subarray([...DIGEST_ALGORITHMS], { minLength: 1 })
        .map((algs) => computeContentDigest(data, algs)),
      fc
        .tuple(fc.constantFrom(...DIGEST_ALGORITHMS), mutationArb)
        .map(([alg, mutation]) => mutate(computeContentDigest(data, [alg]), mutation)),
    );

  const caseArb = fc.uint8Array({ maxLength: 64 }).chain((data) =>
    fc.record({
      data: fc.constant(data),
      field: fieldFor(data),
      accept: fc.subarray([...DIGEST_ALGORITHMS]),
    }),
  );

  /** The verdict RFC 9530 asks for, worked out with node:crypto rather than the module. */
  function expected(
    field: string,
    data: Uint8Array,
    accept: readonly DigestAlgorithm[],
  ): DigestAlgorithm[] | undefined {
    let dict: ReturnType<typeof parseDictionary>;
    try {
      // RFC 9530 fields name each algorithm once; a repeat is ambiguous, so it must fail.
      dict = parseDictionary(field, { rejectDuplicateKeys: true });
    } catch {
      return undefined;
    }
    const matched: DigestAlgorithm[] = [];
    for (const [name, member] of dict) {
      const alg = accept.find((a) => a === name);
      if (alg === undefined) continue;
      if (isInnerList(member) || !(member.value instanceof Uint8Array)) return undefined;
      if (!digestOf(alg, data).equals(member.value)) return undefined;
      matched.push(alg);
    }
    return matched.length > 0 ? matched : undefined;
  }

  it("never throws and accepts exactly the fields whose accepted digests all match", () => {
    fc.assert(
      fc.property(caseArb, ({ data, field, accept }) => {
        const result = verifyContentDigest(field, data, accept);
        const want = expected(field, data, accept);
        if (want === undefined) {
          expect(result.ok, `accepted ${JSON.stringify(field)}`).toBe(false);
          if (!result.ok) expect(result.reason).toEqual(expect.any(String));
        } else {
          expect(result).toEqual({ ok: true, algorithms: want });
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe("responses bound to their request (;req), property-based", () => {
  const RESPONSE_COMPONENTS: readonly ComponentSpec[] = [
    "@status",
    { component: "@method", req: true },
    { component: "@target-uri", req: true },
    { component: "content-type", req: true },
    { component: "signature", key: "sig1", req: true },
  ];

  const headerName = fc.oneof(
    fc.constantFrom(
      "content-type",
      "Content-Type",
      "content-digest",
      "signature",
      "SIGNATURE",
      "signature-input",
      "x-dict",
      "x-list",
      "constructor",
      "__proto__",
      "toString",
      "hasOwnProperty",
    ),
    fc.string({ maxLength: 10 }),
  );
  const arbitraryHeaders = fc.dictionary(headerName, headerValue(fieldText), { maxKeys: 6 });

  const requestLike = (base: RequestMessage & { readonly headers: FieldMap }) =>
    fc
      .record({
        method: fc.oneof(fc.constant(base.method), fc.string({ maxLength: 8 })),
        url: fc.oneof(fc.constant(String(base.url)), targetUrl),
        headers: fc.oneof(
          fc.constant<HeaderSource>(base.headers),
          arbitraryHeaders,
          arbitraryHeaders.map((extra): HeaderSource => ({ ...base.headers, ...extra })),
        ),
      })
      .map((r): RequestMessage => r);

  it("never throws for a signed response checked against arbitrary requests, and accepts only its own", async () => {
    const signed = await signedRequest();
    const response: ResponseMessage = { status: 201, headers: { "content-type": "text/plain" } };
    const fields = await signMessage(response, {
      signer: createHmacSigner(SECRET, { keyId: KEY_ID }),
      request: signed,
      components: RESPONSE_COMPONENTS,
      now: () => T0,
    });
    const signedResponse: ResponseMessage = {
      ...response,
      headers: {
        ...(response.headers as FieldMap),
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
    expect(await verifyBoth(signedResponse, basePolicy, signed)).toMatchObject({ ok: true });
    // Only the request's sig1 Signature member is covered (with its parameters), not its input.
    const sig1Member = (field: string): string | undefined => {
      try {
        const member = parseDictionary(field, {
          rejectDuplicateKeys: true,
          rejectDuplicateParameters: true,
        }).get("sig1");
        if (member === undefined) return undefined;
        return isInnerList(member) ? serializeInnerList(member) : serializeItem(member);
      } catch {
        return undefined;
      }
    };
    const originalSig1 = sig1Member(signed.headers.signature as string);
    expect(originalSig1).toBeDefined();

    await fc.assert(
      fc.asyncProperty(fc.option(requestLike(signed), { nil: undefined }), async (request) => {
        const result = await verifyBoth(signedResponse, basePolicy, request);
        if (!result.ok) {
          expectDocumentedFailure(result);
          return;
        }
        // Accepted: everything the response covers from the request must be the signed request's.
        expect(request).toBeDefined();
        if (request === undefined) return;
        expect(request.method).toBe(signed.method);
        expect(sameUrl(String(request.url), String(signed.url))).toBe(true);
        const lines = (name: string): string[] => {
          const found = Object.entries(request.headers as Record<string, HeaderValue>)
            .filter(([key, value]) => key.toLowerCase() === name && value !== undefined)
            .flatMap(([, value]) => (Array.isArray(value) ? value : [String(value)]));
          return found.map(stripOws);
        };
        expect(lines("content-type")).toEqual(["application/json"]);
        expect(sig1Member(lines("signature").join(", "))).toBe(originalSig1);
      }),
      { numRuns: 500 },
    );
  });

  it("never throws for fuzzed ;req / ;sf / ;key / ;bs identifiers on a response", async () => {
    const name = fc.constantFrom(
      "@status",
      "@method",
      "@target-uri",
      "@query-param",
      "@path",
      "content-type",
      "signature",
      "signature-input",
      "x-dict",
      "x-list",
      "constructor",
      "__proto__",
      "toString",
      "hasOwnProperty",
    );
    const param = fc.constantFrom(
      ";req",
      ";sf",
      ";bs",
      ';key="sig1"',
      ';key="a"',
      ";key=1",
      ';name="x"',
      ";tr",
      ";zz",
    );
    const identifier = fc
      .tuple(name, fc.array(param, { maxLength: 3 }))
      .map(([n, ps]) => `"${n}"${ps.join("")}`);
    const responseCase = fc.record({
      ids: fc.array(identifier, { minLength: 1, maxLength: 4 }),
      signature: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      status: fc.constantFrom(200, 99, 1000),
      responseHeaders: arbitraryHeaders,
      request: fc.option(
        fc
          .record({
            method: fc.constantFrom("GET", "POST"),
            url: targetUrl,
            headers: fc.oneof(
              arbitraryHeaders,
              fc.record({
                "x-dict": fc.constantFrom("a=1, b", 'sig1=:AA==:, a="x"', "(", ""),
                "x-list": fc.constantFrom("1, 2", "a;b", ",", ""),
                signature: fc.constantFrom("sig1=:AA==:", "sig1=1", "sig1=(1 2)", "a"),
                "content-type": fieldText,
              }),
            ),
          })
          .map((r): RequestMessage => r),
        { nil: undefined },
      ),
      structured: fc.boolean(),
    });

    await fc.assert(
      fc.asyncProperty(responseCase, async (c) => {
        const message: ResponseMessage = {
          status: c.status,
          headers: {
            ...c.responseHeaders,
            "signature-input": `sig1=(${c.ids.join(" ")});created=${NOW_S};keyid="${KEY_ID}"`,
            signature: `sig1=:${b64(c.signature)}:`,
          },
        };
        const policy: VerificationPolicy = c.structured
          ? { ...basePolicy, structuredFields: { "x-dict": "dictionary", "x-list": "list" } }
          : basePolicy;
        expectDocumentedFailure(await verifyBoth(message, policy, c.request));
      }),
      { numRuns: 1000 },
    );
  });
});
