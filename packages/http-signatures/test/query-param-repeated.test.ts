/**
 * A repeated query parameter (RFC 9421 §2.2.8): "If a parameter name occurs multiple times in a
 * request, the named query parameter MUST NOT be included." Frameworks disagree on whether
 * `?a=1&a=2` means 1, 2 or both, so a signature covering `a` must not be satisfiable by a
 * request with several: signing refuses, and verification fails as `components`.
 */
import { randomBytes } from "node:crypto";
import { ValidationError } from "@kms/core";
import { createSigner, httpbis } from "http-message-signatures";
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  item,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k1" });
const T0 = 1_700_000_000_000;
const policy: VerificationPolicy = {
  // About repeated query parameters, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: () => createHmacVerifier(secret),
  now: () => T0,
};
const REPEATED = /parameter name is repeated in the query; .*cover @query instead/;

async function signedFor(url: string, components: readonly ComponentSpec[]) {
  const message: RequestMessage = { method: "GET", url, headers: {} };
  const fields = await signMessage(message, { signer, components, now: () => T0 });
  return {
    ...message,
    headers: { "signature-input": fields.signatureInput, signature: fields.signature },
  } satisfies RequestMessage;
}

async function verifyBoth(message: RequestMessage) {
  return [await verifyMessage(message, policy), await verifyMessageEagerly(message, policy)];
}

describe("signing a @query-param whose name is repeated", () => {
  it.each([
    ["https://a.test/p?a=1&a=2", "a"],
    ["https://a.test/p?a=1&a=1", "a"], // the same value twice is still two occurrences
    ["https://a.test/p?a=1&b=2&a", "a"], // an occurrence without a value counts
    ["https://a.test/p?a+b=1&a%20b=2", "a%20b"], // two spellings of one encoded name
  ])("refuses %s (name %s) with a ValidationError naming the component", async (url, name) => {
    const component = { component: "@query-param", name };
    const error = await signedFor(url, ["@method", component]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(`component "@query-param";name="${name}": `);
    expect((error as Error).message).toMatch(REPEATED);
    expect(() =>
      componentValues(item("@query-param", { name }), {
        message: { method: "GET", url, headers: {} },
      }),
    ).toThrow(REPEATED);
  });

  it("still signs a name that occurs once, while another name is repeated", async () => {
    const url = "https://a.test/p?a=1&b=2&b=3";
    const message = await signedFor(url, ["@method", { component: "@query-param", name: "a" }]);
    for (const result of await verifyBoth(message)) {
      expect(result).toMatchObject({ ok: true, covered: ['"@method"', '"@query-param";name="a"'] });
    }
    expect(componentValues(item("@query-param", { name: "a" }), { message })).toEqual(["1"]);
    // The repeated one, covered as well, is refused.
    await expect(
      signedFor(url, [
        { component: "@query-param", name: "a" },
        { component: "@query-param", name: "b" },
      ]),
    ).rejects.toThrow(/component "@query-param";name="b": parameter name is repeated/);
  });

  it("still signs and verifies a single occurrence; @query covers the repeated ones", async () => {
    const single = await signedFor("https://a.test/p?a=1", [
      { component: "@query-param", name: "a" },
    ]);
    for (const result of await verifyBoth(single)) expect(result).toMatchObject({ ok: true });
    const url = "https://a.test/p?a=1&a=2";
    await expect(signedFor(url, [{ component: "@query-param", name: "a" }])).rejects.toThrow(
      REPEATED,
    );
    // The remedy the message names works.
    const whole = await signedFor(url, ["@query"]);
    for (const result of await verifyBoth(whole)) expect(result).toMatchObject({ ok: true });
  });
});

describe("verifying a signature that covers a repeated @query-param", () => {
  it("fails as components when an attacker appends another occurrence", async () => {
    const message = await signedFor("https://a.test/p?a=1", [
      "@method",
      { component: "@query-param", name: "a" },
    ]);
    for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
    for (const url of [
      "https://a.test/p?a=1&a=2",
      "https://a.test/p?a=2&a=1",
      "https://a.test/p?a=1&a=1",
      "https://a.test/p?a=1&a",
      "https://a.test/p?a=1&%61=2", // `%61` is `a`
    ]) {
      for (const result of await verifyBoth({ ...message, url })) {
        expect(result).toMatchObject({ ok: false, check: "components", label: "sig1" });
        if (!result.ok) {
          expect(result.detail).toMatch('component "@query-param";name="a": ');
          expect(result.detail).toMatch(REPEATED);
        }
      }
    }
  });

  it("fails as components for a signature made over the repeated parameter elsewhere", async () => {
    // http-message-signatures 1.0.6 signs every occurrence, one line each, as the drafts did.
    const url = "https://a.test/p?a=1&a=2";
    const signed = await httpbis.signMessage(
      {
        key: createSigner(secret, "hmac-sha256", "k1"),
        fields: ["@method", '"@query-param";name="a"'],
        params: ["keyid", "created"],
        paramValues: { created: new Date(T0) },
      },
      { method: "GET", url, headers: {} },
    );
    const message = { method: "GET", url, headers: signed.headers as Record<string, string> };
    for (const result of await verifyBoth(message)) {
      expect(result).toMatchObject({ ok: false, check: "components" });
      if (!result.ok) expect(result.detail).toMatch(REPEATED);
    }
  });

  it("verifies a covered name that occurs once while an uncovered one is repeated", async () => {
    const message = await signedFor("https://a.test/p?a=1&b=2", [
      { component: "@query-param", name: "a" },
      { component: "@query-param", name: "b" },
    ]);
    const onlyA = await signedFor("https://a.test/p?a=1&b=2&b=3", [
      { component: "@query-param", name: "a" },
    ]);
    for (const result of await verifyBoth(onlyA)) expect(result).toMatchObject({ ok: true });
    // Repeating the covered `b` of the other signature is refused, not merely mis-signed.
    for (const result of await verifyBoth({ ...message, url: "https://a.test/p?a=1&b=2&b=3" })) {
      expect(result).toMatchObject({ ok: false, check: "components" });
      if (!result.ok) expect(result.detail).toMatch('name="b": parameter name is repeated');
    }
  });
});

/**
 * The `qs` parser (Express 4's default, Express 5's and Nest's `"extended"` query parser) reads a
 * name followed by `[` as the same parameter: `?amount=10&amount[]=1000000` is `amount` =
 * `["10", "1000000"]`. For such an application the name occurs twice, so it is refused as a
 * repeated name is.
 */
describe("a @query-param whose name also occurs followed by [", () => {
  const amount = { component: "@query-param", name: "amount" } as const;
  const QS_REPEATED =
    /parameter name is repeated in the query \(followed by \[, which qs reads as the same parameter\); .*cover @query instead/;

  it("fails as components when an attacker appends a bracketed occurrence", async () => {
    const message = await signedFor("https://a.test/pay?amount=10", ["@method", amount]);
    for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
    for (const query of [
      "amount=10&amount[]=1000000",
      "amount=10&amount%5B%5D=1000000",
      "amount=10&amount%5b%5d=1000000",
      "amount=10&amount[0]=1000000",
      "amount=10&amount[x]=1000000",
      "amount[]=1000000&amount=10",
      "amount=10&%61mount[]=1000000",
      "amount=10&amount[=1000000", // qs reads `amount[` as `amount` too
    ]) {
      for (const result of await verifyBoth({ ...message, url: `https://a.test/pay?${query}` })) {
        expect(result).toMatchObject({ ok: false, check: "components" });
        if (!result.ok) {
          expect(result.detail).toMatch('component "@query-param";name="amount": ');
          expect(result.detail).toMatch(QS_REPEATED);
        }
      }
    }
  });

  it("refuses to sign it", async () => {
    await expect(
      signedFor("https://a.test/pay?amount=10&amount[]=1000000", [amount]),
    ).rejects.toThrow(QS_REPEATED);
  });

  it("leaves names that only share a prefix, and bracketed names covered one by one", async () => {
    const url = "https://a.test/p?amount=10&amounts[]=1&amount_x[0]=2&filter[a]=1&filter[b]=2";
    const components = [
      amount,
      { component: "@query-param", name: "filter%5Ba%5D" },
      { component: "@query-param", name: "filter%5Bb%5D" },
    ];
    const message = await signedFor(url, components);
    for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
    // A covered bracketed name is refused in turn when it occurs followed by `[`.
    const nested = `${url}&filter[a][]=3`;
    for (const result of await verifyBoth({ ...message, url: nested })) {
      expect(result).toMatchObject({ ok: false, check: "components" });
      if (!result.ok)
        expect(result.detail).toMatch('name="filter%5Ba%5D": parameter name is repeated');
    }
  });

  it("fails as components when a covered bracketed name's part before [ is appended", async () => {
    const PREFIX_REPEATED =
      /parameter name is repeated in the query \(its part before a \[ occurs as a name too, which qs reads as the same parameter\); .*cover @query instead/;
    const ids = { component: "@query-param", name: "ids%5B%5D" } as const;
    const nested = { component: "@query-param", name: "f%5Ba%5D%5Bb%5D" } as const;
    const message = await signedFor("https://a.test/p?ids[]=2&f[a][b]=3", [ids, nested]);
    for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
    for (const [query, name] of [
      ["ids=1&ids[]=2&f[a][b]=3", "ids%5B%5D"], // qs: ids = ["1", "2"]
      ["ids[]=2&f[a][b]=3&%69ds=1", "ids%5B%5D"],
      ["ids[]=2&f[a][b]=3&f=1", "f%5Ba%5D%5Bb%5D"],
      ["ids[]=2&f[a]=1&f[a][b]=3", "f%5Ba%5D%5Bb%5D"], // qs: f.a = ["1", { b: "3" }]
      ["ids[]=2&f[a][b]=3&f%5ba%5d=1", "f%5Ba%5D%5Bb%5D"],
    ]) {
      for (const result of await verifyBoth({ ...message, url: `https://a.test/p?${query}` })) {
        expect(result).toMatchObject({ ok: false, check: "components" });
        if (!result.ok) {
          expect(result.detail).toMatch(`component "@query-param";name="${name}": `);
          expect(result.detail).toMatch(PREFIX_REPEATED);
        }
      }
    }
    await expect(signedFor("https://a.test/p?ids=1&ids[]=2", [ids])).rejects.toThrow(
      PREFIX_REPEATED,
    );
    // A name that only shares a prefix with it, or a sibling, leaves it covered.
    const siblings = await signedFor("https://a.test/p?ids[]=2&id=1&idsx=1&f[a][c]=1&f[a][b]=3", [
      ids,
      nested,
    ]);
    for (const result of await verifyBoth(siblings)) expect(result).toMatchObject({ ok: true });
  });

  it("finds the bracketed form among many names", () => {
    const names = Array.from({ length: 2000 }, (_, i) => `n${i}[]=1`).join("&");
    // The covered names come first: qs and node's querystring read only the first 1000 pieces
    // of a query, so one past them is refused for that (query-param-limit.test.ts). The
    // bracketed forms may lie anywhere: a repeat qs would not read is still refused.
    const url = `https://a.test/p?amount=10&${names}&zz[]=1`;
    const value = (name: string, query = url) =>
      componentValues(item("@query-param", { name }), {
        message: { method: "GET", url: query, headers: {} },
      });
    expect(value("amount")).toEqual(["10"]);
    expect(() => value("amount", `${url}&amount[7]=1`)).toThrow(QS_REPEATED);
    expect(() => value("n1999", `https://a.test/p?n1999=1&${names}`)).toThrow(QS_REPEATED);
    expect(() => value("zz", `https://a.test/p?zz=1&${names}&zz[]=1`)).toThrow(QS_REPEATED);
  });
});
