/**
 * A Signature-Input or Signature that names a label twice is refused as signature-malformed.
 * RFC 8941 would let the last member win, but an intermediary that takes the first member and
 * this verifier would then check different signatures over one message (RFC 9421 §3.2, §7).
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  type HeaderSource,
  nodeRequestMessage,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x42);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About duplicate labels, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const plain: RequestMessage = {
  method: "POST",
  url: "https://api.test/orders",
  headers: { "content-type": "application/json" },
};

interface SignedFields {
  readonly input: string;
  readonly signature: string;
}

async function sign(
  label = "sig1",
  components = ["@method", "@target-uri"],
): Promise<SignedFields> {
  const fields = await signMessage(plain, { signer, label, components, now: () => T0 });
  return { input: fields.signatureInput, signature: fields.signature };
}

/** The member text after `label=`, so it can be placed under the same label twice. */
const memberOf = (field: string, label: string): string => {
  expect(field.startsWith(`${label}=`)).toBe(true);
  return field.slice(label.length + 1);
};

const withHeaders = (headers: HeaderSource): RequestMessage => ({ ...plain, headers });

/** Both entry points, which parse on separate paths before they share verifyLabel. */
async function verifyBoth(message: RequestMessage, extra: Partial<VerificationPolicy> = {}) {
  const eager = await verifyMessageEagerly(message, { ...policy, ...extra });
  const lazy = await verifyMessage(message, { ...policy, ...extra });
  expect(lazy).toEqual(eager);
  return eager;
}

function expectMalformed(result: VerificationResult): void {
  expect(result).toMatchObject({ ok: false, check: "signature-malformed" });
  if (!result.ok) expect(result.detail).toMatch(/unique labels/);
}

describe("duplicate signature labels", () => {
  let good: SignedFields;
  // A second, valid signature under the same label but covering less: either member verifies
  // on its own, so only the duplicate itself can be the reason for refusing.
  let weak: SignedFields;

  beforeAll(async () => {
    good = await sign();
    weak = await sign("sig1", ["@method"]);
  });

  it("accepts each member alone (so the refusals below are about the repeat)", async () => {
    for (const fields of [good, weak]) {
      const message = withHeaders({
        ...plain.headers,
        "signature-input": fields.input,
        signature: fields.signature,
      });
      expect(await verifyBoth(message)).toMatchObject({ ok: true, label: "sig1" });
    }
  });

  it.each([
    ["valid member first", "first"],
    ["valid member last", "last"],
  ] as const)("refuses a label repeated in Signature-Input, %s", async (_name, where) => {
    const junk = `("@method");created=1;keyid="k1"`;
    const real = memberOf(good.input, "sig1");
    const members = where === "first" ? [real, junk] : [junk, real];
    const message = withHeaders({
      ...plain.headers,
      "signature-input": members.map((m) => `sig1=${m}`).join(", "),
      signature: good.signature,
    });
    expectMalformed(await verifyBoth(message));
    // Naming the label in the policy does not pick one of the two members either.
    expectMalformed(await verifyBoth(message, { label: "sig1" }));
  });

  it.each([
    ["valid member first", "first"],
    ["valid member last", "last"],
  ] as const)("refuses a label repeated in Signature, %s", async (_name, where) => {
    const junk = ":AAAA:";
    const real = memberOf(good.signature, "sig1");
    const members = where === "first" ? [real, junk] : [junk, real];
    const message = withHeaders({
      ...plain.headers,
      "signature-input": good.input,
      signature: members.map((m) => `sig1=${m}`).join(", "),
    });
    expectMalformed(await verifyBoth(message));
  });

  it("refuses two valid signatures under one label in both fields", async () => {
    const message = withHeaders({
      ...plain.headers,
      "signature-input": `${good.input}, ${weak.input}`,
      signature: `${good.signature}, ${weak.signature}`,
    });
    expectMalformed(await verifyBoth(message));
  });

  describe("across field lines", () => {
    const twoLines = (field: "signature-input" | "signature"): Record<string, string[]> => {
      const [first, second] =
        field === "signature-input" ? [good.input, weak.input] : [good.signature, weak.signature];
      return { [field]: [first, second] };
    };

    it.each(["signature-input", "signature"] as const)(
      "refuses %s repeated over two lines (headersDistinct arrays)",
      async (field) => {
        const other =
          field === "signature-input"
            ? { signature: good.signature }
            : { "signature-input": good.input };
        expectMalformed(await verifyBoth(withHeaders({ ...other, ...twoLines(field) })));
      },
    );

    it("refuses a repeat over two lines of a WHATWG Headers", async () => {
      const headers = new Headers({ signature: good.signature });
      headers.append("signature-input", weak.input);
      headers.append("signature-input", good.input);
      expectMalformed(await verifyBoth(withHeaders(headers)));
    });

    it("refuses a repeat under two spellings of the field name", async () => {
      const message = withHeaders({
        "Signature-Input": good.input,
        "signature-input": weak.input,
        signature: good.signature,
      });
      expectMalformed(await verifyBoth(message));
    });

    it("still accepts different labels on separate lines", async () => {
      const other = await sign("sig2", ["@method"]);
      const message = withHeaders({
        "signature-input": [good.input, other.input],
        signature: [other.signature, good.signature],
      });
      expect(await verifyBoth(message)).toMatchObject({ ok: true, label: "sig1" });
      expect(await verifyBoth(message, { label: "sig2" })).toMatchObject({
        ok: true,
        label: "sig2",
      });
    });
  });

  describe("over the wire (node:http, one header line per member)", () => {
    let server: Server;
    let port: number;
    const received: RequestMessage[] = [];

    beforeAll(async () => {
      server = createServer((req: IncomingMessage, res) => {
        received.push(nodeRequestMessage(req));
        res.end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    async function send(headers: Record<string, string | string[]>): Promise<RequestMessage> {
      received.length = 0;
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest({
          port,
          host: "127.0.0.1",
          method: "POST",
          path: "/orders",
          headers,
        });
        req.on("response", (res) => {
          res.resume();
          res.on("end", resolve);
        });
        req.on("error", reject);
        req.end();
      });
      expect(received).toHaveLength(1);
      // The signature covers the public URL, not the loopback address the test listens on.
      return { ...(received[0] as RequestMessage), url: plain.url };
    }

    it("refuses Signature-Input sent as two lines with the same label", async () => {
      const message = await send({
        "signature-input": [weak.input, good.input],
        signature: good.signature,
      });
      expect(message.headers).toMatchObject({ "signature-input": [weak.input, good.input] });
      expectMalformed(await verifyBoth(message));
    });

    it("accepts the same request with the label once", async () => {
      const message = await send({ "signature-input": good.input, signature: good.signature });
      expect(await verifyBoth(message)).toMatchObject({ ok: true, label: "sig1" });
    });
  });
});

describe("signing next to existing signatures", () => {
  it("refuses to add to a Signature-Input that already repeats a label", async () => {
    const { input, signature } = await sign();
    const message = withHeaders({
      "signature-input": `${input}, ${input}`,
      signature,
    });
    const attempt = signMessage(message, { signer, label: "sig2", components: ["@method"] });
    await expect(attempt).rejects.toThrow(ValidationError);
    await expect(attempt).rejects.toThrow(
      /signature-input field must be a dictionary with unique labels/,
    );
    const error = await attempt.catch((e: unknown) => e);
    expect((error as Error).cause).toBeInstanceOf(ValidationError);
  });

  it("refuses to add to a Signature that repeats a label over two lines", async () => {
    const { input, signature } = await sign();
    const message = withHeaders({ "signature-input": input, signature: [signature, signature] });
    await expect(
      signMessage(message, { signer, label: "sig2", components: ["@method"] }),
    ).rejects.toThrow(/signature field must be a dictionary with unique labels/);
  });

  it("refuses a label that is only in Signature, and never emits a repeated label", async () => {
    const { input, signature } = await sign();
    const onlyInSignature = withHeaders({ signature });
    await expect(signMessage(onlyInSignature, { signer, components: ["@method"] })).rejects.toThrow(
      /already used/,
    );

    const existing = withHeaders({ "signature-input": input, signature });
    const added = await signMessage(existing, {
      signer,
      label: "sig2",
      components: ["@method"],
      now: () => T0,
    });
    expect(added.signatureInput.match(/(?:^|, )sig1=/g)).toHaveLength(1);
    expect(added.signatureInput.match(/(?:^|, )sig2=/g)).toHaveLength(1);
    expect(added.signature.match(/(?:^|, )sig1=/g)).toHaveLength(1);
    // Both signatures on the result verify, each under its own label.
    const both = withHeaders({
      "signature-input": added.signatureInput,
      signature: added.signature,
    });
    expect(await verifyBoth(both, { label: "sig1" })).toMatchObject({ ok: true });
    expect(await verifyBoth(both, { label: "sig2" })).toMatchObject({ ok: true });
  });
});
