/**
 * Absolute-form request targets (`GET http://a.example/orders/42 HTTP/1.1`, RFC 9112 §3.2.2) in
 * the Node request view. What a signature covers must be what the router dispatches: Express's
 * router reads an absolute-form target with Node's legacy `url.parse` (through `parseurl`), so
 * that parser is the oracle here for the path, query and host a server acts on.
 */
import { parse as legacyParse } from "node:url";
import { ValidationError } from "@kms/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  type NodeRequestLike,
  nodeRequestMessage,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x3c);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k" });
const policy: VerificationPolicy = {
  keyLookup: (id) => (id === "k" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};

const TARGET_COMPONENTS: readonly ComponentSpec[] = [
  "@target-uri",
  "@authority",
  "@scheme",
  "@request-target",
  "@path",
  "@query",
];
const SIGNED_COMPONENTS: readonly ComponentSpec[] = ["@method", ...TARGET_COMPONENTS];
// What a client that signs a URL (not a request line) can cover in either form: RFC 9421
// §2.2.5 makes @request-target the request line's target, the absolute URI in absolute form.
const URL_COMPONENTS = SIGNED_COMPONENTS.filter((c) => c !== "@request-target");

interface Received {
  readonly target: string;
  /** Undefined: no Host field. */
  readonly host: string | undefined;
  readonly protocol?: string;
}

const authorityOf = (target: string): string => /^[^:]*:\/\/([^/?#]*)/.exec(target)?.[1] ?? "";

/** A request received with `target` in its request line and a Host agreeing with it. */
const absolute = (target: string, protocol = "http"): Received => ({
  target,
  host: authorityOf(target),
  protocol,
});

function receive(received: Received, extra: Record<string, string> = {}): RequestMessage {
  const req: NodeRequestLike = {
    method: "GET",
    url: received.target,
    protocol: received.protocol ?? "http",
    headers: { ...(received.host === undefined ? {} : { host: received.host }), ...extra },
  };
  return nodeRequestMessage(req);
}

/** The derived component values of a received request, or why they cannot be verified. */
async function componentsOf(message: RequestMessage): Promise<Record<string, string> | string> {
  try {
    const { base } = await signMessage(message, {
      signer,
      components: TARGET_COMPONENTS,
      now: () => T0,
    });
    const values: Record<string, string> = {};
    for (const line of base.split("\n")) {
      const match = /^"(@[a-z-]+)": (.*)$/.exec(line);
      if (match?.[1] !== undefined && match[1] !== "@signature-params") {
        values[match[1]] = match[2] ?? "";
      }
    }
    return values;
  } catch (error) {
    if (error instanceof ValidationError) return error.message;
    throw error;
  }
}

/** Signature fields a client signing `url` would send. */
async function signatureFor(
  url: string,
  components: readonly ComponentSpec[] = URL_COMPONENTS,
): Promise<Record<string, string>> {
  const fields = await signMessage(
    { method: "GET", url, headers: {} },
    { signer, components, now: () => T0 },
  );
  return { "signature-input": fields.signatureInput, signature: fields.signature };
}

async function verifyReceived(
  received: Received,
  signature: Record<string, string>,
  components: readonly ComponentSpec[] = URL_COMPONENTS,
): Promise<VerificationResult> {
  return verifyMessage(receive(received, signature), {
    ...policy,
    requiredComponents: components,
  });
}

/** What Express's router acts on for this target (parseurl → url.parse for non-origin form). */
function routed(target: string): { path: string | null; query: string; host: string | null } {
  const parsed = legacyParse(target);
  return { path: parsed.pathname, query: parsed.search ?? "", host: parsed.hostname };
}

describe("absolute-form targets", () => {
  it("derives every target component from the target (RFC 9421 §2.2, RFC 9112 §3.2.2)", async () => {
    expect(await componentsOf(receive(absolute("http://a.example/orders/42?x=1&y=%20")))).toEqual({
      "@target-uri": "http://a.example/orders/42?x=1&y=%20",
      "@authority": "a.example",
      "@scheme": "http",
      // §2.2.5: the request target as in the request line, which here is the absolute URI.
      "@request-target": "http://a.example/orders/42?x=1&y=%20",
      "@path": "/orders/42",
      "@query": "?x=1&y=%20",
    });
    expect(
      await componentsOf(receive(absolute("https://[::1]:8443/a;b/c:d@e/?q='", "https"))),
    ).toMatchObject({
      "@target-uri": "https://[::1]:8443/a;b/c:d@e/?q=%27",
      "@authority": "[::1]:8443",
      "@scheme": "https",
      "@path": "/a;b/c:d@e/",
      "@query": "?q=%27",
    });
  });

  it("normalizes only case and the default port, as a signer building the URL does", async () => {
    expect(
      await componentsOf(receive({ target: "HTTP://A.Example:80?x", host: "a.example:80" })),
    ).toMatchObject({
      "@target-uri": "http://a.example/?x",
      "@authority": "a.example",
      "@scheme": "http",
      "@path": "/",
      "@query": "?x",
    });
  });

  it("verifies a signature made for the URL, whichever form the request line takes", async () => {
    const url = "http://a.example/orders/42?x=1";
    const signature = await signatureFor(url);
    const origin: Received = { target: "/orders/42?x=1", host: "a.example" };
    expect(await verifyReceived(origin, signature)).toMatchObject({ ok: true });
    expect(await verifyReceived(absolute(url), signature)).toMatchObject({ ok: true });
    // @request-target differs between the forms: a signer covering it must know which it sends.
    const covering = await signatureFor(url, SIGNED_COMPONENTS);
    expect(await verifyReceived(origin, covering)).toMatchObject({ ok: true });
    expect(await verifyReceived(absolute(url), covering)).toMatchObject({
      ok: false,
      check: "signature",
    });
  });

  it("refuses a target longer than the router keeps as a host", async () => {
    const label = "a".repeat(60);
    const long = absolute(`http://${Array(5).fill(label).join(".")}.example/x`);
    expect(await componentsOf(receive(long))).toContain("not a DNS name");
  });

  const refused: [string, Received, string][] = [
    ["a dot segment", absolute("http://a.example/admin/../orders/42"), "dot segments"],
    ["a %2e dot segment", absolute("http://a.example/admin/%2e%2E/orders/42"), "dot segments"],
    ["a lone %2e segment", absolute("http://a.example/orders/%2e/42"), "dot segments"],
    ["a backslash in the path", absolute("http://a.example/admin\\..\\orders/42"), "dot segments"],
    ["a tab in the path", absolute("http://a.example/ord\ters/42"), "dot segments"],
    ["a CR/LF in the path", absolute("http://a.example/orders/\r\n42"), "dot segments"],
    ["a quote in the path (the router escapes it)", absolute("http://a.example/o'42"), "dot"],
    ["a space in the path", absolute("http://a.example/o 42"), "dot segments"],
    ["a bare % in the path", absolute("http://a.example/o%4"), "dot segments"],
    ["a non-ASCII path", absolute("http://a.example/é"), "dot segments"],
    ["a control character in the query", absolute("http://a.example/o?x=\u0001"), "RFC 3986"],
    ["a fragment", absolute("http://a.example/orders/42#frag"), "fragment"],
    ["an empty fragment", absolute("http://a.example/orders/42?x#"), "fragment"],
    ["userinfo", absolute("http://user@a.example/orders/42"), "userinfo"],
    [
      "userinfo with a Host naming it",
      { target: "http://u:p@a.example/o", host: "a.example" },
      "userinfo",
    ],
    ["port 99999", absolute("http://a.example:99999/orders/42"), "port"],
    ["port 0", absolute("http://a.example:0/orders/42"), "port"],
    ["a port with a leading zero", absolute("http://a.example:080/orders/42"), "port"],
    ["an empty port", absolute("http://a.example:/orders/42"), "authority"],
    ["an ftp scheme", absolute("ftp://a.example/orders/42"), "neither origin form"],
    ["a ws scheme", absolute("ws://a.example/orders/42"), "neither origin form"],
    ["one slash after the scheme", absolute("http:/a.example/orders/42"), "neither origin"],
    ["no slashes after the scheme", absolute("http:a.example/orders/42"), "neither origin"],
    ["asterisk form", { target: "*", host: "a.example" }, "neither origin form"],
    ["authority form", { target: "a.example:443", host: "a.example:443" }, "neither origin"],
    ["an https target on a plain connection", absolute("https://a.example/o"), "scheme differs"],
    ["an http target over TLS", absolute("http://a.example/o", "https"), "scheme differs"],
    [
      "a Host that differs from the target",
      { target: "http://a.example/orders/42", host: "b.example" },
      "differs from the request target's authority",
    ],
    [
      "a Host with another port",
      { target: "http://a.example:8080/o", host: "a.example:8081" },
      "differs",
    ],
    [
      "a Host that adds the default port",
      { target: "http://a.example/o", host: "a.example:80" },
      "differs",
    ],
    ["no Host field", { target: "http://a.example/o", host: undefined }, "differs"],
    [
      "a Host with a path",
      { target: "http://a.example/orders/42", host: "a.example/orders" },
      "differs",
    ],
    ["a percent-encoded host", absolute("http://a%2eexample/orders/42"), "not a DNS name"],
    ["a host the router splits", absolute("http://a.example;x/orders/42"), "not a DNS name"],
    ["a quote in the host", absolute("http://a.example'/orders/42"), "not a DNS name"],
    ["a backslash in the authority", absolute("http://a.example\\admin/o"), "not a DNS name"],
    ["a numeric IPv4 host", absolute("http://2130706433/orders/42"), "canonical"],
    ["a hex IPv4 host", absolute("http://0x7f.1/orders/42"), "canonical"],
    ["an uncompressed IPv6 host", absolute("http://[0:0::1]/orders/42"), "canonical"],
    ["an IPv4-mapped IPv6 host", absolute("http://[::ffff:1.2.3.4]/o"), "canonical"],
    ["an unclosed IPv6 literal", absolute("http://[::1/orders/42"), "not a DNS name"],
    ["an empty authority", absolute("http:///orders/42"), "not a DNS name"],
  ];

  it.each(refused)("makes the target components unverifiable for %s", async (_, received, why) => {
    const result = await componentsOf(receive(received));
    expect(typeof result === "string" ? result : JSON.stringify(result)).toContain(why);
    // @method too: a message whose target is refused has no verifiable derived component.
    await expect(
      signMessage(receive(received), { signer, components: ["@method"], now: () => T0 }),
    ).rejects.toThrow(ValidationError);
  });

  it("refuses a signed absolute-form request whose target was made unverifiable", async () => {
    const signature = await signatureFor("http://a.example/orders/42");
    expect(await verifyReceived(absolute("http://a.example/orders/42"), signature)).toMatchObject({
      ok: true,
    });
    for (const target of [
      "http://a.example/admin/x/../../orders/42",
      "http://a.example/admin/%2e%2e/orders/42",
      "http://a.example/admin\\..\\orders/42",
      "http://a.example/orders/42#x",
      "http://u@a.example/orders/42",
    ]) {
      expect(await verifyReceived(absolute(target), signature, ["@path"])).toMatchObject({
        ok: false,
        check: "components",
      });
    }
  });
});

describe("origin-form targets keep their rules", () => {
  const refused: [string, Received, string][] = [
    ["a fragment", { target: "/orders/42#x", host: "a.example" }, "fragment"],
    ["a numeric IPv4 Host", { target: "/o", host: "2130706433" }, "canonical"],
    ["a percent-encoded Host", { target: "/o", host: "a%2eexample" }, "canonical"],
    ["a Host port with a leading zero", { target: "/o", host: "a.example:080" }, "port"],
    ["an empty Host port", { target: "/o", host: "a.example:" }, "port"],
    ["a Host with a path", { target: "/42", host: "a.example/orders" }, "not a host"],
    ["a dot segment", { target: "/admin/%2E%2e/o", host: "a.example" }, "dot segments"],
  ];

  it.each(refused)("makes the target components unverifiable for %s", async (_, received, why) => {
    const result = await componentsOf(receive(received));
    expect(typeof result === "string" ? result : JSON.stringify(result)).toContain(why);
  });

  it("still takes @request-target as path and query", async () => {
    expect(await componentsOf(receive({ target: "/o?x=1", host: "A.example:8080" }))).toEqual({
      "@target-uri": "http://a.example:8080/o?x=1",
      "@authority": "a.example:8080",
      "@scheme": "http",
      "@request-target": "/o?x=1",
      "@path": "/o",
      "@query": "?x=1",
    });
  });
});

// --- properties ----------------------------------------------------------------------------

// Labels start with a letter: a numeric last label makes the WHATWG parser read an IPv4 address.
const LABEL = fc
  .stringMatching(/^[a-zA-Z](?:[a-zA-Z0-9_-]{0,8}[a-zA-Z0-9])?$/)
  .filter((l) => !/^xn--/i.test(l));
const hostArb = fc.oneof(
  { weight: 4, arbitrary: fc.array(LABEL, { minLength: 1, maxLength: 3 }).map((l) => l.join(".")) },
  { weight: 1, arbitrary: fc.ipV4() },
  { weight: 1, arbitrary: fc.constantFrom("[::1]", "[2001:db8::7]", "localhost") },
);
const PCHARS = "abcXYZ019-._~!$&()*+,;=:@";
const pchar = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...PCHARS) },
  { weight: 1, arbitrary: fc.constantFrom("%20", "%2F", "%41", "%e9", "%2e") },
);
const segment = fc.array(pchar, { minLength: 1, maxLength: 6 }).map((c) => c.join(""));
const queryArb = fc.option(
  fc
    .array(fc.oneof(pchar, fc.constantFrom("/", "?", "'", "&", "=")), { maxLength: 12 })
    .map((c) => `?${c.join("")}`),
  { nil: "", freq: 2 },
);
const absoluteTarget = fc
  .record({
    scheme: fc.constantFrom("http", "https", "HTTP", "Https"),
    host: hostArb,
    port: fc.option(fc.integer({ min: 1, max: 65_535 }), { nil: undefined }),
    segments: fc.array(segment, { maxLength: 4 }),
    trailingSlash: fc.boolean(),
    query: queryArb,
  })
  .map(({ scheme, host, port, segments, trailingSlash, query }) => {
    const path = segments.length === 0 ? "" : `/${segments.join("/")}${trailingSlash ? "/" : ""}`;
    const authority = port === undefined ? host : `${host}:${port}`;
    return {
      target: `${scheme}://${authority}${path === "" && query === "" ? "/" : path}${query}`,
      protocol: scheme.toLowerCase(),
    };
  })
  // A generated segment can spell a dot segment (`.`, `%2e.`), which is refused by design.
  .filter(({ target }) => typeof targetProblemOf(target) !== "string");

function targetProblemOf(target: string): string | undefined {
  const path = (/^[^:]*:\/\/[^/?#]*([^?#]*)/.exec(target)?.[1] ?? "").split("/");
  return path.some((s) => /^(?:\.|%2e){1,2}$/i.test(s)) ? "dot segment" : undefined;
}

interface Mutation {
  readonly kind: "replace" | "insert" | "delete";
  readonly at: number;
  readonly ch: string;
}

const MUTATION_CHARS = [..."/\\.%2eE?#@:;'\"[] \t\r\n\u0000aZ09-_~=&+é", "%2e", "%2F"];
const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom("replace", "insert", "delete"),
  at: fc.nat(),
  ch: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...MUTATION_CHARS) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x7f }).map((c) => String.fromCharCode(c)) },
  ),
});

function mutate(text: string, { kind, at, ch }: Mutation): string {
  const i = at % (kind === "insert" ? text.length + 1 : text.length);
  if (kind === "insert") return text.slice(0, i) + ch + text.slice(i);
  if (kind === "delete") return text.slice(0, i) + text.slice(i + 1);
  return text.slice(0, i) + ch + text.slice(i + 1);
}

/** The same request to the router and to the signature: same href, path, query and host. */
function sameTarget(a: string, b: string): boolean {
  let hrefA: string;
  let hrefB: string;
  try {
    hrefA = new URL(a).href;
    hrefB = new URL(b).href;
  } catch {
    return false;
  }
  const ra = routed(a);
  const rb = routed(b);
  return hrefA === hrefB && ra.path === rb.path && ra.query === rb.query && ra.host === rb.host;
}

/**
 * A verifiable absolute-form target must show the router's path, query and host. (A mutation
 * can turn the target into origin form, which the router takes as it is, not through url.parse;
 * the express property tests cover that form.)
 */
async function expectRouterView(received: Received): Promise<boolean> {
  const values = await componentsOf(receive(received));
  if (typeof values === "string") return false;
  if (received.target.startsWith("/")) return true;
  const router = routed(received.target);
  const host = router.host?.includes(":") ? `[${router.host}]` : router.host;
  expect(values["@path"], received.target).toBe(router.path);
  expect(values["@query"], received.target).toBe(router.query === "" ? "?" : router.query);
  expect(values["@authority"]?.replace(/:\d+$/, ""), received.target).toBe(host);
  return true;
}

describe("absolute-form targets (property-based)", () => {
  it("verifies a signed absolute-form request, with the path the router sees", async () => {
    await fc.assert(
      fc.asyncProperty(absoluteTarget, async ({ target, protocol }) => {
        const received = absolute(target, protocol);
        expect(await expectRouterView(received), target).toBe(true);
        const signature = await signatureFor(new URL(target).href);
        expect(await verifyReceived(received, signature)).toMatchObject({ ok: true });
      }),
      { numRuns: 300 },
    );
  });

  it("refuses any one-character change of the target unless the router and URL see the same request", async () => {
    await fc.assert(
      fc.asyncProperty(
        absoluteTarget,
        mutationArb,
        fc.boolean(),
        async ({ target, protocol }, mutation, hostFollows) => {
          const signed = absolute(target, protocol);
          const signature = await signatureFor(new URL(target).href);
          const changed = mutate(target, mutation);
          // The Host field either stays (a changed authority then disagrees with it) or follows
          // the authority, so the path and authority rules are reached.
          const received: Received = {
            target: changed,
            host: hostFollows ? authorityOf(changed) : signed.host,
            protocol,
          };
          await expectRouterView(received);
          const result = await verifyReceived(received, signature);
          if (result.ok) {
            expect(sameTarget(changed, target), `accepted ${JSON.stringify(changed)}`).toBe(true);
          } else {
            expect(["components", "signature"]).toContain(result.check);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
