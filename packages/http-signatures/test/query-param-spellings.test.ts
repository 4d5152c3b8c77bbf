/**
 * Spellings of a query parameter that the WHATWG parser (which derives `@query-param`) keeps
 * apart from a covered name but that `qs` (Express 4's default, Express 5's and Nest's
 * `"extended"` query parser) reads as that parameter, or as part of it. Each one appended to a
 * request signed over `@query-param` alone would make the handler read a value nobody signed,
 * so the covered name counts as repeated (RFC 9421 §2.2.8): signing refuses and verification
 * fails as `components`. What qs 6.17 reads is given beside each case.
 */
import { randomBytes } from "node:crypto";
import { ValidationError } from "@kms/core";
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
  requiredComponents: [],
  keyLookup: () => createHmacVerifier(secret),
  now: () => T0,
};
const REPEATED = /parameter name is repeated in the query \(.+\); .*cover @query instead/;

const param = (name: string): ComponentSpec => ({ component: "@query-param", name });

async function signedFor(query: string, components: readonly ComponentSpec[]) {
  const message: RequestMessage = { method: "GET", url: `https://a.test/p?${query}`, headers: {} };
  const fields = await signMessage(message, { signer, components, now: () => T0 });
  return {
    ...message,
    headers: { "signature-input": fields.signatureInput, signature: fields.signature },
  } satisfies RequestMessage;
}

async function verifyBoth(message: RequestMessage) {
  return [await verifyMessage(message, policy), await verifyMessageEagerly(message, policy)];
}

/**
 * Signs `signed` over `@method` and the covered name, checks it verifies, then checks that each
 * attacked query fails as `components` with a detail that names the component and the rule.
 */
async function expectRefused(name: string, signed: string, attacks: readonly string[]) {
  const message = await signedFor(signed, ["@method", param(name)]);
  for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
  for (const query of attacks) {
    for (const result of await verifyBoth({ ...message, url: `https://a.test/p?${query}` })) {
      expect({ query, result }).toMatchObject({ result: { ok: false, check: "components" } });
      if (!result.ok) {
        expect(result.detail).toMatch(`component "@query-param";name="${name}": `);
        expect(result.detail).toMatch(REPEATED);
      }
    }
  }
}

describe("a spelling that qs reads as the covered name", () => {
  it("refuses a leading bracket group: qs reads [a] as a", async () => {
    await expectRefused("a", "a=1", [
      "a=1&[a]=2", // qs: a = ["1", "2"]
      "a=1&%5Ba%5D=2",
      "a=1&%5ba%5d=2",
      "[a]=2&a=1",
      "a=1&[a][]=2", // qs: a = ["1", "2"]
      "a=1&[a][x]=2", // qs: a = ["1", { x: "2" }]
      "a=1&[a].b=2", // qs drops text after a group: a = ["1", "2"]
    ]);
    await expectRefused("a%5Bb%5D", "a[b]=1", [
      "a[b]=1&[a][b]=2", // qs: a.b = ["1", "2"]
      "a[b]=1&%5Ba%5D%5Bb%5D=2",
      "a[b]=1&[a]=2", // qs: a = [{ b: "1" }, "2"], so a.b is gone
    ]);
  });

  it("refuses text after a group, which qs drops", async () => {
    await expectRefused("a%5Bb%5D", "a[b]=1", ["a[b]=1&a[b]x=2"]); // qs: a.b = ["1", "2"]
    await expectRefused("a%5Bb%5D%5Bc%5D%5Bd%5D%5Be%5D%5Bf%5D%5Bg%5D", "a[b][c][d][e][f][g]=1", [
      "a[b][c][d][e][f][g]=1&a[b][c][d][e][f]x[g]=2",
    ]);
  });

  it("refuses names qs splits or decodes otherwise than the WHATWG parser", async () => {
    // qs ends a name at `]=` before `=`: the WHATWG name of `a[x=y]=2` is `a[x`.
    await expectRefused("a%5Bx%3Dy%5D", "a%5Bx%3Dy%5D=1", ["a%5Bx%3Dy%5D=1&a[x=y]=2"]);
    // …and `a=[b]=2` is qs's `a=` = { b: "2" }, where the WHATWG parser reads `a`.
    await expectRefused("a%3D", "a%3D=1", ["a%3D=1&a=[b]=2"]);
    // qs keeps a name that is not valid UTF-8 undecoded: `a%FF` is the name `a%FF`.
    await expectRefused("a%25FF", "a%25FF=1", ["a%25FF=1&a%FF=2"]);
    await expectRefused("a%2520%25ZZ", "a%2520%25ZZ=1", ["a%2520%25ZZ=1&a%20%ZZ=2"]);
  });

  it("refuses to sign such a query, with a ValidationError naming the component", async () => {
    for (const [query, name] of [
      ["a=1&[a]=2", "a"],
      ["a[]=1&a[0]=2", "a%5B%5D"],
      ["a=1&a.b=2", "a"],
    ] as const) {
      const error = await signedFor(query, [param(name)]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(`component "@query-param";name="${name}": `);
      expect((error as Error).message).toMatch(REPEATED);
      expect(() =>
        componentValues(item("@query-param", { name }), {
          message: { method: "GET", url: `https://a.test/p?${query}`, headers: {} },
        }),
      ).toThrow(REPEATED);
    }
  });
});

describe("a covered array element", () => {
  const ARRAY = /qs reads it as an element of an array that other names in the query add to/;

  it("is refused beside another element of its array, which qs appends or renumbers", async () => {
    await expectRefused("a%5B%5D", "a[]=1", [
      "a[]=1&a[0]=2", // qs: a = ["1", "2"]
      "a[0]=2&a[]=1", // qs: a = ["2", "1"]
      "a[]=1&a[1]=2",
      "a[]=1&a[x]=2", // qs: a = { 0: "1", x: "2" }
      "a[]=1&[a][]=2",
      "a[]=1&[a][0]=2",
    ]);
    await expectRefused("a%5B0%5D", "a[0]=1", [
      "a[]=2&a[0]=1", // qs: a[0] = "2"
      "a[0]=1&a[]=2",
      "a[1]=2&a[0]=1",
      "a[0]=1&[a][]=2",
    ]);
    // Alone, `a[1]=1` is qs's a[0]; `a[0]=2` before it moves it back to a[1] and takes a[0].
    await expectRefused("a%5B1%5D", "a[1]=1", ["a[0]=2&a[1]=1", "a[]=2&a[1]=1"]);
    await expectRefused("a%5B1%5D%5Bx%5D", "a[1][x]=1", ["a[0][z]=2&a[1][x]=1"]);
    const message = await signedFor("a[]=1", [param("a%5B%5D")]);
    const [result] = await verifyBoth({ ...message, url: "https://a.test/p?a[]=1&a[0]=2" });
    expect(result).toMatchObject({ ok: false, check: "components" });
    if (result?.ok === false) expect(result.detail).toMatch(ARRAY);
  });

  it("is refused at the top level, where [] and [0] make elements keyed 0, 1, …", async () => {
    await expectRefused("0", "0=1", [
      "0=1&[]=2", // qs: 0 = ["1", "2"]
      "0=1&%5B%5D=2",
      "0=1&[0]=2",
      "0=1&[]x=2",
    ]);
  });

  it("cannot be covered one by one: cover @query", async () => {
    await expect(
      signedFor("a[0]=1&a[1]=2", [param("a%5B0%5D"), param("a%5B1%5D")]),
    ).rejects.toThrow(ARRAY);
    const whole = await signedFor("a[0]=1&a[1]=2", ["@query"]);
    for (const result of await verifyBoth(whole)) expect(result).toMatchObject({ ok: true });
  });
});

describe("a dotted name, which qs with allowDots reads as brackets", () => {
  const DOTS = /differs from it by dots, which qs with allowDots reads as brackets/;

  it("is refused beside the covered name, either way round", async () => {
    await expectRefused("a", "a=1", [
      "a=1&a.b=2", // qs (allowDots): a = ["1", { b: "2" }]
      "a=1&a%2Eb=2",
      "a=1&.a=2", // qs (allowDots): a = ["1", "2"]
      "a=1&a.b.c=2",
    ]);
    await expectRefused("a.b", "a.b=1", ["a.b=1&a[b]=2", "a.b=1&a=2"]);
    await expectRefused("a%5Bb%5D", "a[b]=1", ["a[b]=1&a.b=2"]);
    const message = await signedFor("a=1", [param("a")]);
    const [result] = await verifyBoth({ ...message, url: "https://a.test/p?a=1&a.b=2" });
    if (result?.ok === false) expect(result.detail).toMatch(DOTS);
    else expect.unreachable("a.b beside a must be refused");
  });
});

describe("parameters qs reads as other names", () => {
  it("still verify beside a covered name", async () => {
    const message = await signedFor("a=1", ["@method", param("a")]);
    for (const query of [
      "a=1&a%ZZ=2", // qs: "a%ZZ"
      "a=1&a%=2",
      "a=1&%61%ZZ=2", // undecodable, so qs keeps "%61%ZZ", not "a"
      "a=1&a%ZZ[]=2",
      "a=1&[[a]]=2", // qs: "[a]"
      "a=1&a]=2",
      "a=1&x=[a]=2", // qs: "x=" = { a: "2" }
      "a=1&[a=x]=2", // qs: "a=x"
      "a=1&A=2",
      "a=1&+a=2",
      "a=1&a.=2", // allowDots leaves a trailing dot
      "a=1&a..b=2",
    ]) {
      for (const result of await verifyBoth({ ...message, url: `https://a.test/p?${query}` })) {
        expect({ query, result }).toMatchObject({ result: { ok: true } });
      }
    }
  });

  it("leaves unrelated and sibling parameters covered one by one", async () => {
    const query =
      "a=1&b=2&ab=3&a_b[]=4&b[a]=5&filter[x]=1&filter[y]=2&filter[]=3&0=1&1=2&c.d=3&m[x][y]=1&m[x][z]=2&m[w]=3";
    const components = [
      param("a"),
      param("ab"),
      param("filter%5Bx%5D"),
      param("filter%5By%5D"),
      param("0"),
      param("1"),
      param("c.d"),
      param("m%5Bx%5D%5By%5D"),
      param("m%5Bw%5D"),
    ];
    const message = await signedFor(query, components);
    for (const result of await verifyBoth(message)) expect(result).toMatchObject({ ok: true });
  });

  it("finds a respelling among many names", async () => {
    const names = Array.from({ length: 2000 }, (_, i) => `n${i}[x]=1&d${i}.e=1`).join("&");
    const value = (name: string, query: string) =>
      componentValues(item("@query-param", { name }), {
        message: { method: "GET", url: `https://a.test/p?${query}`, headers: {} },
      });
    // The covered names come first: qs reads only the first 1000 pieces of a query, so one past
    // them is refused for that (query-param-limit.test.ts). The respellings may lie anywhere.
    expect(value("amount", `amount=10&${names}`)).toEqual(["10"]);
    expect(() => value("amount", `amount=10&${names}&[amount]=1`)).toThrow(REPEATED);
    expect(() => value("m%5Bx%5D", `m[x]=1&${names}&[m][x]=1`)).toThrow(REPEATED);
    expect(() => value("d1999", `d1999=1&${names}`)).toThrow(REPEATED);
  });
});
