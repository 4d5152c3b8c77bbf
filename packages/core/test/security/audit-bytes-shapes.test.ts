/**
 * Bytes a caller sends reach no audit event, whatever JavaScript shape they arrive in. AWS
 * CloudTrail records no binary blob of a KMS call; core's events copy the request through a
 * filter, which used to drop only real `Uint8Array`s and secret-named fields, so a peer's public
 * key sent as `number[]`, a JSON-decoded Buffer (`{ type: "Buffer", data: […] }`), the JSON of a
 * Uint8Array (`{ "0": 48, "1": 89, … }`) or a base64 string was copied into `requestParameters`
 * — of refused and failed calls too, which are recorded with what the caller sent.
 *
 * Every public Kms method that takes bytes is called here with each bytes member in each shape,
 * by its owner (the Uint8Array and Buffer calls succeed, the others fail validation) and by a
 * principal the key policy refuses, and every event each call added is scanned for the bytes in
 * every text form they could take (hex, base64 at every alignment, decimal lists).
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import {
  type AuditEvent,
  type CallOptions,
  createKms,
  isKmsError,
  type Kms,
  MemoryAuditSink,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeAll, describe, expect, test } from "vitest";
import { redact } from "../../src/audit/audit-event.ts";

/** Another account: the default key policy grants it nothing. */
const MALLORY = "arn:aws:iam::999999999999:user/mallory";

/** Length of the runs of an input looked for in the trail. */
const WINDOW = 12;

// ---------------------------------------------------------------------------------------------
// Scanning (as test/security/key-material-leak-asymmetric.test.ts does for key material).

/**
 * The bytes a text could be carrying: itself as a binary string, every run of hex, of base64 or
 * base64url (at each of the four alignments), and of decimal byte lists (a `number[]`, the JSON
 * of a Uint8Array as `{"0":1,…}`, a Buffer's JSON `data`).
 */
function decodings(text: string): Buffer[] {
  const out = [Buffer.from(text, "latin1")];
  for (const [run] of text.matchAll(/[0-9a-f]{24,}/gi)) {
    out.push(Buffer.from(run, "hex"), Buffer.from(run.slice(1), "hex"));
  }
  for (const [run] of text.matchAll(/[A-Za-z0-9+/_-]{16,}/g)) {
    const standard = run.replace(/-/g, "+").replace(/_/g, "/");
    for (let shift = 0; shift < 4; shift++) out.push(Buffer.from(standard.slice(shift), "base64"));
  }
  const decimalRuns = [
    ...text.matchAll(/\b\d{1,3}(?:\s*,\s*\d{1,3}){11,}/g),
    ...text.matchAll(/"\d+":\d{1,3}(?:,"\d+":\d{1,3}){11,}/g),
  ];
  for (const [run] of decimalRuns) {
    const numbers = run
      .split(",")
      .map((item) => Number(item.replace(/^\s*"\d+":/, "").trim()))
      .filter((n) => Number.isInteger(n) && n >= 0 && n <= 255);
    out.push(Buffer.from(numbers));
  }
  return out;
}

/**
 * Where a `WINDOW`-byte run of the random tail of `secret` shows in `text`, or undefined. The
 * tail only: the front of a DER public key or of a ciphertext blob is the same for every input
 * (an algorithm identifier, a key id that events name as text anyway).
 */
function leakIn(text: string, secret: Uint8Array): string | undefined {
  const tail = Buffer.from(secret.subarray(Math.max(0, secret.length - 2 * WINDOW)));
  for (const bytes of decodings(text)) {
    for (let at = 0; at + WINDOW <= tail.length; at++) {
      if (bytes.indexOf(tail.subarray(at, at + WINDOW)) !== -1) return `bytes ${at}..`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The shapes bytes arrive in.

const SHAPES = {
  Uint8Array: (b: Uint8Array): unknown => Uint8Array.from(b),
  Buffer: (b: Uint8Array): unknown => Buffer.from(b),
  "number[]": (b: Uint8Array): unknown => Array.from(b),
  "Buffer JSON": (b: Uint8Array): unknown => JSON.parse(JSON.stringify(Buffer.from(b))),
  "Uint8Array JSON (numeric keys)": (b: Uint8Array): unknown => JSON.parse(JSON.stringify(b)),
  "array-like with length": (b: Uint8Array): unknown => ({ ...Array.from(b), length: b.length }),
  "base64 string": (b: Uint8Array): unknown => Buffer.from(b).toString("base64"),
  "hex string": (b: Uint8Array): unknown => Buffer.from(b).toString("hex"),
} as const;
type Shape = keyof typeof SHAPES;
const BINARY_SHAPES: ReadonlySet<Shape> = new Set(["Uint8Array", "Buffer"]);

// ---------------------------------------------------------------------------------------------
// Every public method that takes bytes, with a valid request and the members that are bytes.

interface Fixture {
  readonly symmetric: string;
  readonly hmac: string;
  readonly signing: string;
  readonly agreement: string;
  readonly plaintext: Uint8Array;
  readonly ciphertextBlob: Uint8Array;
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
  readonly mac: Uint8Array;
  readonly peerPublicKey: Uint8Array;
}

type Method =
  | "encrypt"
  | "decrypt"
  | "reEncrypt"
  | "sign"
  | "verify"
  | "generateMac"
  | "verifyMac"
  | "deriveSharedSecret"
  | "explain";

interface Case {
  readonly method: Method;
  /** The member whose shape changes; the path for a nested one (explain's request). */
  readonly field: readonly string[];
  readonly request: (f: Fixture) => Record<string, unknown>;
  /** The bytes of that member. */
  readonly bytes: (f: Fixture) => Uint8Array;
  /** False when the call does not validate those bytes (explain answers for any request). */
  readonly validates?: false;
}

const CASES: readonly Case[] = [
  {
    method: "encrypt",
    field: ["plaintext"],
    request: (f) => ({ keyId: f.symmetric, plaintext: f.plaintext }),
    bytes: (f) => f.plaintext,
  },
  {
    method: "decrypt",
    field: ["ciphertextBlob"],
    request: (f) => ({ ciphertextBlob: f.ciphertextBlob }),
    bytes: (f) => f.ciphertextBlob,
  },
  {
    method: "reEncrypt",
    field: ["ciphertextBlob"],
    request: (f) => ({ ciphertextBlob: f.ciphertextBlob, destinationKeyId: f.symmetric }),
    bytes: (f) => f.ciphertextBlob,
  },
  ...(["message", "signature"] as const).map(
    (field): Case => ({
      method: "verify",
      field: [field],
      request: (f) => ({
        keyId: f.signing,
        message: f.message,
        signature: f.signature,
        signingAlgorithm: "ECDSA_SHA_256",
      }),
      bytes: (f) => f[field],
    }),
  ),
  {
    method: "sign",
    field: ["message"],
    request: (f) => ({ keyId: f.signing, message: f.message, signingAlgorithm: "ECDSA_SHA_256" }),
    bytes: (f) => f.message,
  },
  {
    method: "generateMac",
    field: ["message"],
    request: (f) => ({ keyId: f.hmac, message: f.message, macAlgorithm: "HMAC_SHA_256" }),
    bytes: (f) => f.message,
  },
  ...(["message", "mac"] as const).map(
    (field): Case => ({
      method: "verifyMac",
      field: [field],
      request: (f) => ({
        keyId: f.hmac,
        message: f.message,
        mac: f.mac,
        macAlgorithm: "HMAC_SHA_256",
      }),
      bytes: (f) => f[field],
    }),
  ),
  {
    method: "deriveSharedSecret",
    field: ["publicKey"],
    request: (f) => ({
      keyId: f.agreement,
      keyAgreementAlgorithm: "ECDH",
      publicKey: f.peerPublicKey,
    }),
    bytes: (f) => f.peerPublicKey,
  },
  {
    // explain records the request it explains: its bytes are filtered like a call's own.
    method: "explain",
    field: ["request", "publicKey"],
    validates: false,
    request: (f) => ({
      operation: "deriveSharedSecret",
      request: { keyId: f.agreement, keyAgreementAlgorithm: "ECDH", publicKey: f.peerPublicKey },
    }),
    bytes: (f) => f.peerPublicKey,
  },
];

/** `request` with the member at `path` replaced by `value`. */
function withMember(
  request: Record<string, unknown>,
  path: readonly string[],
  value: unknown,
): Record<string, unknown> {
  const [head, ...rest] = path;
  if (head === undefined) throw new Error("empty path");
  if (rest.length === 0) return { ...request, [head]: value };
  return { ...request, [head]: withMember(request[head] as Record<string, unknown>, rest, value) };
}

function memberAt(value: unknown, path: readonly string[]): unknown {
  let at = value;
  for (const name of path) {
    if (typeof at !== "object" || at === null) return undefined;
    at = (at as Record<string, unknown>)[name];
  }
  return at;
}

let sink: MemoryAuditSink;
let kms: Kms;
let fixture: Fixture;

beforeAll(async () => {
  sink = new MemoryAuditSink();
  kms = await createKms({ clock: new ManualClock(), audit: sink });
  const key = async (request: Parameters<Kms["createKey"]>[0]) =>
    (await kms.createKey(request)).keyMetadata.keyId;
  const symmetric = await key({});
  const hmac = await key({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" });
  const signing = await key({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" });
  const plaintext = new Uint8Array(randomBytes(48));
  const message = new Uint8Array(randomBytes(64));
  fixture = {
    symmetric,
    hmac,
    signing,
    agreement: await key({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }),
    plaintext,
    ciphertextBlob: (await kms.encrypt({ keyId: symmetric, plaintext })).ciphertextBlob,
    message,
    signature: (await kms.sign({ keyId: signing, message, signingAlgorithm: "ECDSA_SHA_256" }))
      .signature,
    mac: (await kms.generateMac({ keyId: hmac, message, macAlgorithm: "HMAC_SHA_256" })).mac,
    peerPublicKey: new Uint8Array(
      generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
    ),
  };
});

/** Runs one call and returns whether it succeeded and the events it added. */
async function callAndEvents(
  method: Method,
  request: unknown,
  options: CallOptions | undefined,
): Promise<{ outcome: string; events: readonly AuditEvent[] }> {
  const before = sink.events.length;
  const invoke = (kms as unknown as Record<Method, (r: unknown, o?: CallOptions) => unknown>)[
    method
  ];
  const outcome = await Promise.resolve()
    .then(() => invoke.call(kms, request, options))
    .then(
      () => "ok",
      (error: unknown) => (isKmsError(error) ? error.code : `not a KmsError: ${String(error)}`),
    );
  return { outcome, events: sink.events.slice(before) };
}

const CALLERS = [
  ["its owner", undefined],
  ["a refused principal", { principal: MALLORY }],
] as const;

const TABLE = CASES.flatMap((c) =>
  (Object.keys(SHAPES) as Shape[]).flatMap((shape) =>
    CALLERS.map(([who, options]) => ({
      label: `${c.method}.${c.field.join(".")} as ${shape}, by ${who}`,
      c,
      shape,
      options,
    })),
  ),
);

describe("bytes a caller sends never reach the trail, whatever their JS shape", () => {
  test.each(TABLE)("$label", async ({ c, shape, options }) => {
    const bytes = c.bytes(fixture);
    const request = withMember(c.request(fixture), c.field, SHAPES[shape](bytes));
    const { outcome, events } = await callAndEvents(c.method, request, options);

    // The calls happened as intended: each left its event; valid bytes pass for the owner and
    // are refused for the other principal; bytes in another shape fail validation (or, for
    // the other principal, authorization, where an operation checks that first).
    expect(events.at(-1)?.eventName).toBe(c.method.charAt(0).toUpperCase() + c.method.slice(1));
    if (BINARY_SHAPES.has(shape) || c.validates === false) {
      expect(outcome).toBe(options === undefined ? "ok" : "AccessDeniedException");
    } else {
      const refusals = [
        "ValidationException",
        ...(options === undefined ? [] : ["AccessDeniedException"]),
      ];
      expect(refusals).toContain(outcome);
    }

    for (const event of events) {
      // The member is left out, as AWS leaves blobs out, whatever its type…
      expect(memberAt(event.requestParameters, c.field)).toBeUndefined();
      // …and its bytes are nowhere else in the event either, in any text form.
      expect(leakIn(JSON.stringify(event), bytes), JSON.stringify(event)).toBeUndefined();
    }
  });

  test("the scan finds the bytes in each shape it is meant to see (self-check)", () => {
    const bytes = fixture.peerPublicKey;
    for (const shape of Object.keys(SHAPES) as Shape[]) {
      if (shape === "Uint8Array" || shape === "Buffer") continue;
      const recorded = JSON.stringify({ requestParameters: { publicKey: SHAPES[shape](bytes) } });
      expect(leakIn(recorded, bytes), shape).toBeDefined();
    }
    // A Uint8Array the filter let through would be recorded as its JSON: numeric keys.
    expect(leakIn(JSON.stringify({ p: bytes }), bytes)).toBeDefined();
  });

  test("what a call is about is still recorded beside the dropped bytes", async () => {
    const request = withMember(
      c("deriveSharedSecret").request(fixture),
      ["publicKey"],
      Array.from(fixture.peerPublicKey),
    );
    const { events } = await callAndEvents("deriveSharedSecret", request, { principal: MALLORY });
    expect(events.at(-1)?.requestParameters).toEqual({
      keyId: fixture.agreement,
      keyAgreementAlgorithm: "ECDH",
    });
  });
});

function c(method: Method): Case {
  const found = CASES.find((x) => x.method === method);
  if (found === undefined) throw new Error(method);
  return found;
}

describe("the filter's rule holds for members no operation declares yet", () => {
  const bytes = Uint8Array.from(randomBytes(40));

  test.each((Object.keys(SHAPES) as Shape[]).filter((s) => !s.endsWith("string")))(
    "a member in no list, holding bytes as %s, is dropped",
    (shape) => {
      const copied = redact({
        keyId: "k",
        futureBlob: SHAPES[shape](bytes),
        nested: { inner: SHAPES[shape](bytes) },
      });
      expect(copied).toEqual({ keyId: "k", nested: {} });
    },
  );

  test("bytes as a value of a caller-named map (an encryption context) are dropped too", () => {
    const copied = redact({
      encryptionContext: {
        tenant: "a",
        blob: Array.from(bytes),
        doc: { type: "Buffer", data: [1] },
      },
    });
    expect(copied).toEqual({ encryptionContext: { tenant: "a" } });
  });

  test("what is not bytes is kept: strings, lists of strings, numbers, a context keyed by digits", () => {
    const request = {
      keyId: "k",
      grantTokens: ["t"],
      operations: ["Encrypt", "Decrypt"],
      numberOfBytes: 32,
      empty: [],
      mixed: [1, "a"],
      encryptionContext: { "0": "a", "1": "b", length: "2" },
      tags: [{ tagKey: "type", tagValue: "Buffer" }],
    };
    const { grantTokens: _secret, ...recorded } = request;
    expect(redact(request)).toStrictEqual(recorded);
  });

  test("a member a request declares as bytes is dropped whatever its type (a string, a number)", () => {
    expect(redact({ publicKey: "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE", keyId: "k" })).toEqual({
      keyId: "k",
    });
    expect(
      redact({
        recipient: {
          attestationDocument: "aGVsbG8=",
          keyEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
        },
      }),
    ).toEqual({
      recipient: { keyEncryptionAlgorithm: "RSAES_OAEP_SHA_256" },
    });
    expect(redact({ publicKey: 7, mac: 1, signature: true })).toEqual({});
  });
});
