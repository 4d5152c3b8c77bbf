/**
 * `@query-param` names: RFC 9421 §2.2.8 names a parameter in the identifier by its encoded name,
 * the same re-encoding the values get.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { createSigner, httpbis } from "http-message-signatures";
import { describe, expect, it } from "vitest";
import {
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  item,
  type RequestMessage,
  signMessage,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const policy = {
  keyLookup: () => createHmacVerifier(secret),
  now: () => T0,
  requiredComponents: [{ component: "@query-param", name: "a%20b" }],
};

const values = (url: string, name: string): string[] =>
  componentValues(item("@query-param", { name }), {
    message: { method: "GET", url, headers: {} },
  });

async function signedFor(url: string, name: string): Promise<RequestMessage> {
  const message: RequestMessage = { method: "GET", url, headers: {} };
  const fields = await signMessage(message, {
    signer,
    components: ["@method", { component: "@query-param", name }],
    now: () => T0,
  });
  return {
    ...message,
    headers: { "signature-input": fields.signatureInput, signature: fields.signature },
  };
}

describe('"@query-param";name is the encoded name (RFC 9421 §2.2.8)', () => {
  it("derives the RFC's own example", () => {
    const url =
      "https://www.example.com/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something";
    expect(values(url, "fa%C3%A7ade%22%3A%20")).toEqual(["something"]);
    expect(values(url, "bar")).toEqual(["with%20plus%20whitespace"]);
  });

  it("finds a parameter however the sender spelled its name", () => {
    for (const query of ["a%20b=1", "a+b=1", "a b=1"]) {
      expect(values(`https://a.test/?${query}`, "a%20b")).toEqual(["1"]);
    }
  });

  /** Signed by the independent `http-message-signatures`, which follows the RFC here. */
  async function signedElsewhere(url: string): Promise<RequestMessage> {
    const signed = await httpbis.signMessage(
      {
        key: createSigner(secret, "hmac-sha256", "k1"),
        fields: ["@method", '"@query-param";name="a%20b"'],
        params: ["keyid", "created"],
        paramValues: { created: new Date(T0) },
      },
      { method: "GET", url, headers: {} },
    );
    return { method: "GET", url, headers: signed.headers as Record<string, string> };
  }

  it("verifies what http-message-signatures signs for a name with a space", async () => {
    const message = await signedElsewhere("https://a.test/p?a%20b=1&c=2");
    expect(await verifyMessage(message, policy)).toMatchObject({
      ok: true,
      covered: ['"@method"', '"@query-param";name="a%20b"'],
    });
  });

  it("does not let a double-encoded name stand in for the signed parameter", async () => {
    // The signer vouched for `a b` = 1. Changed to 2, with the old value moved to a parameter
    // the application reads as `a%20b`, the signed line must no longer be derivable.
    const message = await signedElsewhere("https://a.test/p?a%20b=1");
    for (const url of ["https://a.test/p?a%20b=2&a%2520b=1", "https://a.test/p?a%2520b=1"]) {
      expect((await verifyMessage({ ...message, url }, policy)).ok).toBe(false);
    }
    // Our own signer names the parameter the same way.
    const ours = await signedFor("https://a.test/p?a+b=1", "a%20b");
    expect((await verifyMessage(ours, policy)).ok).toBe(true);
    expect(
      await verifyMessage({ ...ours, url: "https://a.test/p?a%20b=2&a%2520b=1" }, policy),
    ).toMatchObject({ ok: false, check: "signature" });
  });

  it("reads escapes as RFC 3986 §2.1 does: hex digits in either case, unreserved characters escaped or not", () => {
    // `a%2bb` and `a%2Bb` are one encoded name (`a+b`), and `%61` is `a`.
    expect(values("https://a.test/?a%2Bb=1&a+b=2", "a%2bb")).toEqual(["1"]);
    expect(values("https://a.test/?a=1", "%61")).toEqual(["1"]);
    expect(values("https://a.test/?%7E=1", "%7e")).toEqual(["1"]);
    // Still no stand-in: `a%2520b` is the name `a%20b`, not `a b`.
    expect(() => values("https://a.test/?a%2520b=1", "a%20b")).toThrow(/absent from the query/);
    expect(values("https://a.test/?a%2520b=1", "a%2520b")).toEqual(["1"]);
  });

  it("verifies what http-message-signatures signs for a name with a lower-case escape", async () => {
    const url = "https://a.test/p?a%2Bb=1&c=2";
    const signed = await httpbis.signMessage(
      {
        key: createSigner(secret, "hmac-sha256", "k1"),
        fields: ["@method", '"@query-param";name="a%2bb"'],
        params: ["keyid", "created"],
        paramValues: { created: new Date(T0) },
      },
      { method: "GET", url, headers: {} },
    );
    const message = { method: "GET", url, headers: signed.headers as Record<string, string> };
    expect(
      await verifyMessage(message, {
        ...policy,
        requiredComponents: [{ component: "@query-param", name: "a%2bb" }],
      }),
    ).toMatchObject({ ok: true });
    // Our own signer takes the name so spelled too, and signs it as given.
    const ours = await signedFor(url, "a%2bb");
    expect((ours.headers as Record<string, string>)["signature-input"]).toContain(
      '"@query-param";name="a%2bb"',
    );
    expect((await verifyMessage(ours, policy)).ok).toBe(false); // policy wants a%20b
    expect(
      (
        await verifyMessage(ours, {
          ...policy,
          requiredComponents: [{ component: "@query-param", name: "a%2bb" }],
        })
      ).ok,
    ).toBe(true);
  });

  it("says how to write a name given decoded", async () => {
    await expect(signedFor("https://a.test/p?a%20b=1", "a b")).rejects.toThrow(
      /must be given encoded as RFC 9421 §2\.2\.8 says/,
    );
    await expect(signedFor("https://a.test/p?x=1", "y")).rejects.toThrow(
      /parameter is absent from the query/,
    );
  });
});

/**
 * RFC 9421 §2.2.8 encodes names and values with WHATWG URL §5.2's
 * application/x-www-form-urlencoded serializing (a space as `%20`): ASCII letters, digits and
 * `*-._` stay, everything else is escaped, `~` as `%7E`. `URLSearchParams` is that serializer.
 */
describe("@query-param encoding is the form-urlencoded serializing RFC 9421 §2.2.8 names", () => {
  const whatwg = (s: string) =>
    new URLSearchParams([[s, ""]]).toString().slice(0, -1).replaceAll("+", "%20");

  it("keeps * and escapes ~ !'() in values", () => {
    for (const [value, encoded] of [
      ["a*b", "a*b"],
      ["a~b", "a%7Eb"],
      ["a!b", "a%21b"],
      ["a'b", "a%27b"],
      ["a(b)", "a%28b%29"],
      ["a b+c", "a%20b%2Bc"],
      ["-._", "-._"],
    ] as const) {
      expect(values(`https://a.test/?q=${encodeURIComponent(value)}`, "q")).toEqual([encoded]);
      expect(encoded).toBe(whatwg(value));
    }
  });

  it("matches URLSearchParams for any name and value", () => {
    // The characters the two encodings could disagree on, any ASCII, and any scalar value
    // beyond (fast-check's "binary" unit would do, but costs seconds to set up).
    const unit = fc.oneof(
      fc.constantFrom(..."*~!'()-._ +%&=[]#"),
      fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 1 }),
      fc
        .integer({ min: 0x80, max: 0x10ffff })
        .filter((c) => c < 0xd800 || c > 0xdfff)
        .map((c) => String.fromCodePoint(c)),
    );
    fc.assert(
      fc.property(
        fc.string({ unit, minLength: 1, maxLength: 12 }),
        fc.string({ unit, maxLength: 12 }),
        (name, value) => {
          const url = `https://a.test/?${new URLSearchParams([[name, value]])}`;
          expect(values(url, whatwg(name))).toEqual([whatwg(value)]);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("verifies what http-message-signatures signs over a value with *, as both encode it alike", async () => {
    // It encodes with encodeURIComponent, which keeps `*` (as the RFC does) but also `!'()~`.
    const url = "https://a.test/p?q=a*b";
    const signed = await httpbis.signMessage(
      {
        key: createSigner(secret, "hmac-sha256", "k1"),
        fields: ["@method", '"@query-param";name="q"'],
        params: ["keyid", "created"],
        paramValues: { created: new Date(T0) },
      },
      { method: "GET", url, headers: {} },
    );
    const message = { method: "GET", url, headers: signed.headers as Record<string, string> };
    const required = [{ component: "@query-param", name: "q" }];
    expect(await verifyMessage(message, { ...policy, requiredComponents: required })).toMatchObject(
      { ok: true },
    );
  });

  it("names a parameter with * or ~ in its RFC form, and in the other spellings of it", async () => {
    expect(values("https://a.test/?a*b=1", "a*b")).toEqual(["1"]);
    expect(values("https://a.test/?a%2Ab=1", "a*b")).toEqual(["1"]);
    expect(values("https://a.test/?a*b=1", "a%2ab")).toEqual(["1"]);
    for (const name of ["a%7Eb", "a%7eb", "a~b"]) {
      expect(values("https://a.test/?a~b=1", name)).toEqual(["1"]);
      expect(values("https://a.test/?a%7Eb=1", name)).toEqual(["1"]);
    }
    expect(values("https://a.test/?*~=1", "*~")).toEqual(["1"]);
    // `*` is part of an encoded name: one that is absent is said to be absent.
    expect(() => values("https://a.test/?x=1", "a*b")).toThrow(
      /parameter is absent from the query/,
    );
    const signed = await signedFor("https://a.test/p?a*b=1", "a*b");
    expect((signed.headers as Record<string, string>)["signature-input"]).toContain(
      '"@query-param";name="a*b"',
    );
    const required = [{ component: "@query-param", name: "a*b" }];
    expect(await verifyMessage(signed, { ...policy, requiredComponents: required })).toMatchObject({
      ok: true,
    });
  });
});
