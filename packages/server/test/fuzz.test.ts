/**
 * Property-based request fuzzing: correctly signed requests whose JSON bodies are generated per
 * operation from its declared members — wrong types, nulls, arrays for objects, numbers beyond
 * 2^53, lone surrogates, malformed base64, `__proto__` keys — so every body reaches the
 * operation layer. Whatever the body, the answer is JSON, a client mistake is a 4xx (a 500
 * would be an uncaught TypeError somewhere), nothing secret leaves, and the server keeps serving.
 */
import { randomBytes } from "node:crypto";
import {
  CreateKeyCommand,
  type CreateKeyCommandInput,
  DecryptCommand,
  EncryptCommand,
  GenerateRandomCommand,
  type KMSClient,
} from "@aws-sdk/client-kms";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPERATIONS } from "../src/internal/operations.ts";
import type { Shape } from "../src/internal/shapes.ts";
import { ALICE, BOB, type Harness, REGION, startHarness } from "./support/harness.ts";
import type { RawResponse } from "./support/raw-http.ts";
import { signedCall } from "./support/signed-call.ts";

const ROOT_KEY = randomBytes(32);
const CANARY = "fuzz canary plaintext: never in a response";

let h: Harness;
let alice: KMSClient;
/** Valid-looking values for KeyId-like members and blobs, so some calls get deep into core. */
let keyIds: string[];
let canaryCiphertext: string;
/** Strings that must never appear in any response. */
let secrets: string[];

beforeAll(async () => {
  h = await startHarness({}, { rootKey: ROOT_KEY });
  alice = h.client(ALICE);
  const create = async (input: CreateKeyCommandInput) =>
    (await alice.send(new CreateKeyCommand(input))).KeyMetadata!;
  const symmetric = await create({});
  const ecc = await create({ KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY" });
  const mac = await create({ KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC" });
  const agreement = await create({ KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT" });
  keyIds = [symmetric.KeyId!, symmetric.Arn!, ecc.KeyId!, mac.KeyId!, agreement.KeyId!];
  const { CiphertextBlob } = await alice.send(
    new EncryptCommand({
      KeyId: symmetric.KeyId!,
      Plaintext: Buffer.from(CANARY),
      EncryptionContext: { Purpose: "fuzz-canary" },
    }),
  );
  canaryCiphertext = Buffer.from(CiphertextBlob!).toString("base64");
  secrets = [
    ALICE.secretAccessKey,
    BOB.secretAccessKey,
    CANARY,
    Buffer.from(CANARY).toString("base64"),
    ROOT_KEY.toString("base64"),
    ROOT_KEY.toString("hex"),
  ];
});
afterAll(async () => {
  await h.close();
});

/**
 * A JSON text built piece by piece, so that what JSON.stringify cannot write — `__proto__` as
 * an ordinary key, lone-surrogate escapes, number tokens such as 1e400 or -0 — can be sent.
 */
type Json =
  | { readonly raw: string }
  | { readonly array: readonly Json[] }
  | { readonly object: readonly (readonly [string, Json])[] };

const raw = (text: string): Json => ({ raw: text });
const str = (s: string): Json => raw(JSON.stringify(s));

function render(j: Json): string {
  if ("raw" in j) return j.raw;
  if ("array" in j) return `[${j.array.map(render).join(",")}]`;
  return `{${j.object.map(([k, v]) => `${JSON.stringify(k)}:${render(v)}`).join(",")}}`;
}

const loneSurrogate = fc.constantFrom("\\ud800", "\\udfff", "\\udbff\\u0041", "a\\udc00b");

const junkString: fc.Arbitrary<Json> = fc.oneof(
  fc.string().map(str),
  fc.string({ unit: "grapheme", maxLength: 20 }).map(str),
  fc.string({ unit: "binary", maxLength: 20 }).map(str),
  loneSurrogate.map((s) => raw(`"${s}"`)),
  fc.constantFrom("", " ", "\u0000", "\ufeff", "alias/", "arn:aws:kms:", "*").map(str),
  fc.integer({ min: 1000, max: 70_000 }).map((n) => str("x".repeat(n))),
);

const junkNumber: fc.Arbitrary<Json> = fc.oneof(
  fc.integer().map((n) => raw(String(n))),
  fc
    .constantFrom(
      "-0",
      "0.5",
      "1.0",
      "1e2",
      "-1",
      "1e400",
      "-1e400",
      "9007199254740993",
      "18446744073709551616",
      "4294967297",
      "2147483648",
      "1E-7",
      "123456789012345678901234567890",
    )
    .map(raw),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => raw(JSON.stringify(d))),
);

const scalarJunk: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom(raw("null"), raw("true"), raw("false")),
  junkNumber,
  junkString,
  fc.string({ maxLength: 6 }).map((s) => str(s)),
);

const hostileKey = fc.constantFrom("__proto__", "constructor", "prototype", "toString", "");

/** Any JSON value, nesting included; objects sometimes carry `__proto__`-like keys. */
const anyJson: fc.Arbitrary<Json> = fc.letrec<{ value: Json }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalarJunk,
    fc.array(tie("value"), { maxLength: 4 }).map((array) => ({ array })),
    fc
      .array(fc.tuple(fc.oneof(fc.string({ maxLength: 8 }), hostileKey), tie("value")), {
        maxLength: 4,
      })
      .map((object) => ({ object })),
  ),
})).value;

/** A deeply nested array or object, past any recursion a parser might do. */
const deep: fc.Arbitrary<Json> = fc
  .tuple(fc.integer({ min: 100, max: 20_000 }), fc.boolean())
  .map(([depth, arrays]) =>
    raw(
      arrays
        ? `${"[".repeat(depth)}${"]".repeat(depth)}`
        : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`,
    ),
  );

const blobJunk: fc.Arbitrary<Json> = fc.oneof(
  fc.uint8Array({ maxLength: 64 }).map((b) => str(Buffer.from(b).toString("base64"))),
  fc
    .constantFrom(
      "",
      "AA",
      "AA=",
      "AAA",
      "AB==",
      "AAB=",
      "A===",
      "====",
      "AA==AA==",
      " AAAA",
      "AAAA\n",
      "AA AA",
      "-_-_",
      "AAAA!",
      "\\u0041AAA",
    )
    .map((s) => raw(`"${s}"`)),
);

/** A value for a member of `shape`: mostly of the right type, often not. */
function valueFor(shape: Shape, depth = 0): fc.Arbitrary<Json> {
  const anything = depth > 3 ? scalarJunk : anyJson;
  switch (shape.type) {
    case "string":
      return fc.oneof(
        { arbitrary: fc.constantFrom(...keyIds).map(str), weight: 3 },
        {
          arbitrary: fc.constantFrom("alias/fuzz", "alias/aws/x", "SYMMETRIC_DEFAULT").map(str),
          weight: 1,
        },
        { arbitrary: junkString, weight: 2 },
        { arbitrary: anything, weight: 1 },
      );
    case "integer":
      return fc.oneof({ arbitrary: junkNumber, weight: 3 }, { arbitrary: anything, weight: 1 });
    case "boolean":
      return fc.oneof(
        { arbitrary: fc.constantFrom(raw("true"), raw("false")), weight: 3 },
        { arbitrary: anything, weight: 1 },
      );
    case "blob":
      return fc.oneof(
        { arbitrary: blobJunk, weight: 3 },
        { arbitrary: fc.constant(str(canaryCiphertext)), weight: 1 },
        { arbitrary: anything, weight: 1 },
      );
    case "timestamp":
      return fc.oneof(junkNumber, anything);
    case "stringMap":
      return fc.oneof(
        {
          arbitrary: fc
            .array(
              fc.tuple(
                fc.oneof(fc.string({ maxLength: 10 }), hostileKey, fc.constant("Purpose")),
                fc.oneof(
                  { arbitrary: junkString, weight: 3 },
                  { arbitrary: scalarJunk, weight: 1 },
                ),
              ),
              { maxLength: 4 },
            )
            .map((object) => ({ object })),
          weight: 3,
        },
        { arbitrary: anything, weight: 1 },
      );
    case "list":
      return fc.oneof(
        {
          arbitrary: fc
            .array(valueFor(shape.member, depth + 1), { maxLength: 3 })
            .map((array) => ({ array })),
          weight: 3,
        },
        { arbitrary: anything, weight: 1 },
      );
    case "structure":
      return fc.oneof(
        { arbitrary: bodyFor(shape.members, depth + 1), weight: 3 },
        { arbitrary: anything, weight: 1 },
      );
  }
}

/** An object with some of the members (declared or not), each with a generated value. */
function bodyFor(
  members: readonly { readonly wire: string; readonly shape: Shape }[],
  depth = 0,
): fc.Arbitrary<Json> {
  const declared = members.map((mb) => fc.tuple(fc.constant(mb.wire), valueFor(mb.shape, depth)));
  const extra = fc.tuple(
    fc.oneof(
      hostileKey,
      fc.constantFrom("Principal", "principal", "keyId", "SourceIp", "Arn"),
      fc.string({ maxLength: 8 }),
    ),
    anyJson,
  );
  return fc
    .tuple(
      declared.length > 0 ? fc.subarray(declared.map((_, i) => i)) : fc.constant([]),
      fc.tuple(
        ...(declared.length > 0 ? declared : [fc.constant<[string, Json]>(["", raw("null")])]),
      ),
      // Undeclared members are refused before anything else is looked at: mostly leave them out.
      fc.oneof({ arbitrary: fc.constant([]), weight: 4 }, fc.array(extra, { maxLength: 1 })),
      fc.boolean(),
    )
    .map(([chosen, values, extras, duplicate]) => {
      const entries: (readonly [string, Json])[] = chosen.map((i) => values[i]!);
      entries.push(...extras);
      // A repeated member: JSON.parse keeps the last, other parsers the first.
      if (duplicate && entries.length > 0) entries.push([entries[0]![0], raw("null")]);
      return { object: entries };
    });
}

/** A whole body for `operation`: mostly a generated object, sometimes no object at all. */
function requestBody(operation: string): fc.Arbitrary<string | Buffer> {
  const spec = OPERATIONS.get(operation)!;
  return fc.oneof(
    { arbitrary: bodyFor(spec.input.members).map(render), weight: 12 },
    { arbitrary: anyJson.map(render), weight: 1 },
    { arbitrary: deep.map(render), weight: 1 },
    {
      arbitrary: fc.constantFrom(
        "",
        "{}{}",
        "{} x",
        "\ufeff{}",
        '{"a":1',
        "[{}]",
        "NaN",
        '{"KeyId":"\\ud800"}',
      ),
      weight: 1,
    },
    {
      arbitrary: fc
        .uint8Array({ minLength: 1, maxLength: 32 })
        .map((b) => Buffer.concat([Buffer.from('{"KeyId":"'), Buffer.from(b), Buffer.from('"}')])),
      weight: 1,
    },
  );
}

/** The invariants every response keeps, whatever was sent. */
function checkResponse(operation: string, body: string | Buffer, res: RawResponse): void {
  const what = `${operation} ${String(body).slice(0, 300)}`;
  expect(res.status, `${what} → ${res.body}`).not.toBe(500);
  expect([200, 400, 413], `${what} → ${res.body}`).toContain(res.status);
  expect(res.headers["content-type"]).toBe("application/x-amz-json-1.1");
  const parsed: unknown = JSON.parse(res.body);
  expect(typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)).toBe(true);
  if (res.status !== 200) {
    expect(Object.keys(parsed as object).sort(), what).toEqual(["__type", "message"]);
    expect(res.headers["x-amzn-errortype"]).toBe(res.json.__type);
  }
  for (const secret of secrets) expect(res.body, what).not.toContain(secret);
  // An error never echoes the bytes a request carried (plaintexts, ciphertexts, messages).
  if (res.status !== 200) {
    for (const blob of sentBlobs(operation, body)) expect(res.body, what).not.toContain(blob);
  }
}

/** The longer base64 strings that `body` sends in members of blob type. */
function sentBlobs(operation: string, body: string | Buffer): string[] {
  let json: unknown;
  try {
    json = JSON.parse(String(body));
  } catch {
    return [];
  }
  if (typeof json !== "object" || json === null) return [];
  return OPERATIONS.get(operation)!
    .input.members.filter((mb) => mb.shape.type === "blob")
    .map((mb) => (json as Record<string, unknown>)[mb.wire])
    .filter((v): v is string => typeof v === "string" && v.length >= 16);
}

describe("fuzzed, correctly signed requests", () => {
  const operations = [...OPERATIONS.keys()];

  it("never answer 500, always answer JSON, never carry a secret", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...operations).chain((op) => fc.tuple(fc.constant(op), requestBody(op))),
        async ([operation, body]) => {
          checkResponse(operation, body, await signedCall(h.port, REGION, operation, body));
        },
      ),
      { numRuns: 600 },
    );
  }, 60_000);

  it.each(operations)("%s: a few runs each, so every operation is covered", async (operation) => {
    await fc.assert(
      fc.asyncProperty(requestBody(operation), async (body) => {
        checkResponse(operation, body, await signedCall(h.port, REGION, operation, body));
      }),
      { numRuns: 12 },
    );
  });

  it("leaves the server serving: a normal request still works afterwards", async () => {
    const random = await alice.send(new GenerateRandomCommand({ NumberOfBytes: 16 }));
    expect(random.Plaintext).toHaveLength(16);
    // A fresh key: the fuzz may have disabled or scheduled for deletion the ones it was given.
    const keyId = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const { CiphertextBlob } = await alice.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("still here") }),
    );
    const decrypted = await alice.send(new DecryptCommand({ CiphertextBlob }));
    expect(Buffer.from(decrypted.Plaintext!).toString()).toBe("still here");
  });
});
