// The secret comparisons here (an HMAC signature, a Content-Digest) must go through node:crypto's
// timingSafeEqual over the whole value. Replacing one with `===`, `Buffer.equals` or an
// early-exit loop keeps every functional test green, so these tests watch the primitive itself:
// each sends a value wrong in its first byte, where an early exit would return at once, and
// checks that the refusal came from a full-length constant-time compare.
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";

// Operands are copied when the compare runs: a verifier reuses its buffer for the next MAC.
const compared = vi.hoisted(() => [] as Array<[Uint8Array, Uint8Array]>);

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const copy = (view: NodeJS.ArrayBufferView): Uint8Array =>
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compared.push([copy(a), copy(b)]);
      return real.timingSafeEqual(a, b);
    },
  };
});

const {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  isInnerList,
  serializeDictionary,
  parseDictionary,
  signMessage,
  verifyContentDigest,
  verifyMessage,
} = await import("../src/index.ts");
type RequestMessage = import("../src/index.ts").RequestMessage;

afterEach(() => {
  compared.length = 0;
});

const secret = randomBytes(32);
const T0 = 1_700_000_000_000;
const body = new TextEncoder().encode('{"amount":100}');

/** `value` with its first byte changed: an early-exit compare would stop there. */
function firstByteFlipped(value: Uint8Array): Uint8Array {
  const wrong = Uint8Array.from(value);
  wrong[0] = (wrong[0] as number) ^ 0x01;
  return wrong;
}

/** The byte sequence `key` of the structured dictionary `field`. */
function byteMember(field: string, key: string): Uint8Array {
  const member = parseDictionary(field).get(key);
  if (member === undefined || isInnerList(member) || !(member.value instanceof Uint8Array)) {
    throw new Error(`no byte sequence ${key} in ${field}`);
  }
  return member.value;
}

/** `field` with the first byte of its byte sequence `key` flipped, and that wrong value. */
function flipFirstByteOf(field: string, key: string): { field: string; wrong: Uint8Array } {
  const dict = parseDictionary(field);
  const wrong = firstByteFlipped(byteMember(field, key));
  dict.set(key, { value: wrong, params: new Map() });
  return { field: serializeDictionary(dict), wrong };
}

describe("HMAC signature verification", () => {
  async function signedRequest(): Promise<{ message: RequestMessage; signature: string }> {
    const message: RequestMessage = {
      method: "GET",
      url: "https://api.test/payments/42",
      headers: { accept: "application/json" },
    };
    const fields = await signMessage(message, {
      signer: createHmacSigner(secret, { keyId: "k1" }),
      components: ["@method", "@target-uri"],
      now: () => T0,
    });
    return {
      message: {
        ...message,
        headers: {
          ...(message.headers as Record<string, string>),
          "signature-input": fields.signatureInput,
        },
      },
      signature: fields.signature,
    };
  }

  const policy = {
    keyLookup: (id: string) => (id === "k1" ? createHmacVerifier(secret) : undefined),
    now: () => T0 + 1000,
  };

  it("refuses a signature wrong in its first byte after a timingSafeEqual over all 32 bytes", async () => {
    const { message, signature } = await signedRequest();
    const good = byteMember(signature, "sig1");
    const { field, wrong } = flipFirstByteOf(signature, "sig1");

    const result = await verifyMessage(
      { ...message, headers: { ...(message.headers as Record<string, string>), signature: field } },
      policy,
    );

    expect(result).toMatchObject({ ok: false, check: "signature" });
    expect(compared).toEqual([[good, wrong]]);
  });

  it("accepts the untouched signature through the same compare", async () => {
    const { message, signature } = await signedRequest();
    const good = byteMember(signature, "sig1");

    const result = await verifyMessage(
      { ...message, headers: { ...(message.headers as Record<string, string>), signature } },
      policy,
    );

    expect(result).toMatchObject({ ok: true });
    expect(compared).toEqual([[good, good]]);
  });

  it("verifySync compares a tag wrong in its first byte over its full length", () => {
    const base = new TextEncoder().encode('"@method": GET\n"@signature-params": ("@method")');
    const tag = createHmacSigner(secret).signSync?.(base) as Uint8Array;
    const wrong = firstByteFlipped(tag);

    expect(createHmacVerifier(secret).verifySync?.(base, wrong)).toBe(false);
    expect(compared).toEqual([[tag, wrong]]);
  });
});

describe("Content-Digest verification", () => {
  it.each(["sha-256", "sha-512"] as const)(
    "refuses a %s digest wrong in its first byte after a full-length timingSafeEqual",
    (alg) => {
      const good = byteMember(computeContentDigest(body, [alg]), alg);
      const { field, wrong } = flipFirstByteOf(computeContentDigest(body, [alg]), alg);

      expect(verifyContentDigest(field, body)).toMatchObject({ ok: false });
      expect(compared).toEqual([[good, wrong]]);
      expect(good.length).toBe(alg === "sha-256" ? 32 : 64);
    },
  );

  it("checks the body's digest in constant time inside verifyMessage", async () => {
    const good = byteMember(computeContentDigest(body), "sha-256");
    const tampered = flipFirstByteOf(computeContentDigest(body), "sha-256");
    // The altered digest field is what gets signed, so the signature holds: only the digest
    // compare stands between the field and acceptance.
    const headers = { "content-type": "application/json", "content-digest": tampered.field };
    const message: RequestMessage = {
      method: "POST",
      url: "https://api.test/payments",
      headers,
      body,
    };
    const fields = await signMessage(message, {
      signer: createHmacSigner(secret, { keyId: "k1" }),
      components: ["@method", "@target-uri", "content-digest"],
      now: () => T0,
    });

    const result = await verifyMessage(
      {
        ...message,
        headers: {
          ...headers,
          "signature-input": fields.signatureInput,
          signature: fields.signature,
        },
      },
      {
        keyLookup: () => createHmacVerifier(secret),
        now: () => T0 + 1000,
        contentDigest: "required",
      },
    );

    expect(result).toMatchObject({ ok: false, check: "content-digest" });
    expect(compared).toContainEqual([good, tampered.wrong]);
  });
});
