/**
 * What a hostile Signature-Input can make the verifier do: many identifiers must cost work in
 * proportion to the input (one query parse, duplicates found by a set), `;bs` must not map two
 * different field values to the same bytes, and component names must not reach
 * Object.prototype through the `structuredFields` option.
 */
import { ValidationError } from "@kms/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type ComponentSpec,
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  type HttpMessage,
  item,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x77);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About parsing, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};

async function signed<M extends HttpMessage>(
  message: M,
  components: readonly ComponentSpec[],
): Promise<M> {
  const fields = await signMessage(message, { signer, components, now: () => T0 });
  return {
    ...message,
    headers: {
      ...(message.headers as Record<string, string>),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

async function verifyBoth(
  message: HttpMessage,
  p: VerificationPolicy = policy,
): Promise<VerificationResult[]> {
  return [await verifyMessage(message, p), await verifyMessageEagerly(message, p)];
}

describe("a signature covering many @query-param components", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  const names = Array.from({ length: 200 }, (_, i) => `p${i}`);
  // `extra` is repeated and not covered: a repeated name must not stop the others verifying.
  const url = `https://api.test/search?${names.map((n, i) => `${n}=${i}`).join("&")}&extra=1&extra=2`;
  const components = names.map((name) => ({ component: "@query-param", name }));

  it("parses the query once, not once per component", async () => {
    const message = await signed({ method: "GET", url, headers: {} }, components);
    let parses = 0;
    class CountingSearchParams extends URLSearchParams {
      constructor(init?: ConstructorParameters<typeof URLSearchParams>[0]) {
        super(init);
        parses++;
      }
    }
    vi.stubGlobal("URLSearchParams", CountingSearchParams);
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: true });
    expect(parses).toBe(1);
  });

  it("refuses a repeated parameter (RFC 9421 §2.2.8) and still derives the single ones", async () => {
    const message: RequestMessage = { method: "GET", url, headers: {} };
    expect(componentValues(item("@query-param", { name: "p7" }), { message })).toEqual(["7"]);
    expect(() => componentValues(item("@query-param", { name: "extra" }), { message })).toThrow(
      /parameter name is repeated in the query/,
    );
  });

  it("reads a URL object changed in place afresh", async () => {
    const target = new URL("https://api.test/search?a=1");
    const message = await signed({ method: "GET", url: target, headers: {} }, [
      { component: "@query-param", name: "a" },
    ]);
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: true });
    target.search = "?a=2";
    for (const result of await verifyBoth(message)) {
      expect(result).toMatchObject({ ok: false, check: "signature" });
    }
  });
});

describe("a Signature-Input listing many identifiers", () => {
  it("still finds an identifier covered twice, however far apart", async () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 1000; i++) headers[`h${i}`] = String(i);
    const ids = Object.keys(headers).map((name) => `"${name}"`);
    const input = `sig1=(${ids.join(" ")} "h0");created=${T0 / 1000};keyid="k1"`;
    const message: RequestMessage = {
      method: "GET",
      url: "https://api.test/",
      headers: { ...headers, "signature-input": input, signature: "sig1=:AAAA:" },
    };
    for (const result of await verifyBoth(message)) {
      expect(result).toEqual({
        ok: false,
        check: "components",
        detail: 'component "h0": is covered twice',
        label: "sig1",
      });
    }
  });
});

describe(";bs over a header source that did not hand over bytes", () => {
  const request: RequestMessage = {
    method: "GET",
    url: "https://api.test/",
    headers: { "x-tag": "a" },
  };
  const components: ComponentSpec[] = ["@method", { component: "x-tag", bs: true }];

  it("refuses a character above U+00FF instead of keeping its low byte", async () => {
    const message = await signed(request, components);
    expect(await verifyMessage(message, policy)).toMatchObject({ ok: true });
    // "š" is U+0161: latin1 encoding would keep 0x61, the "a" that was signed.
    const swapped = {
      ...message,
      headers: { ...(message.headers as Record<string, string>), "x-tag": "\u0161" },
    };
    for (const result of await verifyBoth(swapped)) {
      expect(result).toEqual({
        ok: false,
        check: "components",
        detail: 'component "x-tag";bs: a field line has a character above U+00FF, not a byte',
        label: "sig1",
      });
    }
    await expect(signed(swapped, components)).rejects.toThrow(ValidationError);
  });

  it("still wraps latin1 characters (obs-text) as their byte", () => {
    const message: RequestMessage = { ...request, headers: { "x-tag": "\u00e9" } };
    expect(componentValues(item("x-tag", { bs: true }), { message })).toEqual([":6Q==:"]);
  });
});

describe("component names that are Object.prototype properties", () => {
  it("are not given a structured type by an empty structuredFields option", () => {
    const message: RequestMessage = {
      method: "GET",
      url: "https://api.test/",
      headers: { constructor: "a" },
    };
    for (const name of ["constructor", "__proto__"]) {
      const withField: RequestMessage = { ...message, headers: { [name]: "a" } };
      expect(() =>
        componentValues(item(name, { sf: true }), { message: withField }, { structuredFields: {} }),
      ).toThrow(`component "${name}";sf: structured type of the field is unknown`);
    }
    expect(
      componentValues(
        item("constructor", { sf: true }),
        { message },
        { structuredFields: { constructor: "item" as const } },
      ),
    ).toEqual(["a"]);
  });
});

describe("a message carrying many signatures", () => {
  const request: RequestMessage = {
    method: "POST",
    url: "https://api.test/orders",
    headers: { "content-type": "application/json" },
  };

  /** `count` signatures, the valid one (by k1) last, the others under unknown keys. */
  async function manySigned(count: number): Promise<RequestMessage> {
    const valid = await signed(request, ["@method", "@target-uri"]);
    const headers = valid.headers as Record<string, string>;
    const input = headers["signature-input"] as string;
    const signature = headers.signature as string;
    const decoys = Array.from({ length: count - 1 }, (_, i) => i);
    return {
      ...request,
      headers: {
        ...(request.headers as Record<string, string>),
        "signature-input": [
          ...decoys.map((i) =>
            input.replace(/^sig1=/, `d${i}=`).replace('keyid="k1"', `keyid="x${i}"`),
          ),
          input,
        ].join(", "),
        signature: [...decoys.map((i) => signature.replace(/^sig1=/, `d${i}=`)), signature].join(
          ", ",
        ),
      },
    };
  }

  it("tries up to maxSignatures (default 8), each with its own key lookup", async () => {
    const lookups: string[] = [];
    const counting: VerificationPolicy = {
      ...policy,
      keyLookup: (id) => {
        lookups.push(id);
        return id === "k1" ? createHmacVerifier(SECRET) : undefined;
      },
    };
    const eight = await manySigned(8);
    expect(await verifyMessage(eight, counting)).toMatchObject({ ok: true, label: "sig1" });
    expect(lookups).toHaveLength(8);
  });

  it("fails a message with more before any key lookup, whatever it carries", async () => {
    let lookups = 0;
    const counting: VerificationPolicy = {
      ...policy,
      keyLookup: (id) => {
        lookups++;
        return id === "k1" ? createHmacVerifier(SECRET) : undefined;
      },
    };
    for (const result of await verifyBoth(await manySigned(9), counting)) {
      expect(result).toMatchObject({
        ok: false,
        check: "signature-malformed",
        detail: "the message carries 9 signatures; at most 8 are tried without policy.label",
      });
    }
    expect(lookups).toBe(0);
    // Raised, it lets them through; naming the label needs no limit at all.
    expect(
      await verifyMessage(await manySigned(9), { ...counting, maxSignatures: 9 }),
    ).toMatchObject({ ok: true });
    expect(await verifyMessage(await manySigned(40), { ...counting, label: "sig1" })).toMatchObject(
      { ok: true, label: "sig1" },
    );
  });

  it("refuses a maxSignatures that is not a positive integer", async () => {
    const two = await manySigned(2);
    for (const maxSignatures of [0, -1, 1.5, Number.NaN]) {
      await expect(verifyMessage(two, { ...policy, maxSignatures })).rejects.toBeInstanceOf(
        ValidationError,
      );
    }
  });
});
