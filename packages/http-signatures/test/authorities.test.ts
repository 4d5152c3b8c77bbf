/**
 * `policy.authorities`: the authority a received request names is the client's word, so a
 * signature made for another service that shares the key (same path) verifies here when the
 * client names that service — unless the policy lists the authorities this server answers to.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  nodeRequestMessage,
  type RequestMessage,
  signMessage,
  signRequest,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x3c);
const signer = createHmacSigner(SECRET, { keyId: "k" });
const keyLookup = (id: string) => (id === "k" ? createHmacVerifier(SECRET) : undefined);

/** A request to `url`, signed over `components`, as the receiver rebuilds it from `url`. */
async function signed(url: string, components: readonly ComponentSpec[]): Promise<RequestMessage> {
  const headers: Record<string, string> = {};
  const message = { method: "DELETE", url, headers };
  const fields = await signMessage(message, { signer, components });
  headers["signature-input"] = fields.signatureInput;
  headers.signature = fields.signature;
  return message;
}

function verify(message: RequestMessage, policy: Partial<VerificationPolicy>) {
  return verifyMessage(message, { keyLookup, nonceStore: false, ...policy });
}

const UNLISTED = {
  ok: false,
  check: "components",
  detail: expect.stringMatching(/not one this server answers to/),
};

describe("policy.authorities", () => {
  const authorities = ["api.example.com", "api.example.com:8443"];

  it.each([
    ["@target-uri", ["@method", "@target-uri"]],
    ["@authority", ["@method", "@authority", "@path", "@query"]],
  ])("refuses a covered %s of another authority", async (_name, components) => {
    const message = await signed("https://other.example.com/orders/7", components);
    expect(await verify(message, {})).toMatchObject({ ok: true });
    expect(await verify(message, { authorities })).toMatchObject(UNLISTED);
  });

  it.each([
    ["https://api.example.com/orders/7", true],
    ["http://api.example.com/orders/7", true],
    ["https://API.Example.COM/orders/7", true],
    ["https://api.example.com:443/orders/7", true],
    ["https://api.example.com:8443/orders/7", true],
    ["http://api.example.com:8443/orders/7", true],
    ["https://api.example.com:9443/orders/7", false],
    ["https://api.example.com.evil.example/orders/7", false],
    ["https://example.com/orders/7", false],
  ])("%s is listed: %s", async (url, listed) => {
    const message = await signed(url, ["@method", "@target-uri"]);
    expect((await verify(message, { authorities })).ok).toBe(listed);
  });

  it("reads an entry with a port as that port in any scheme, its default port included", async () => {
    const explicit = ["api.example.com:443"];
    const https = await signed("https://api.example.com/x", ["@method", "@target-uri"]);
    const http = await signed("http://api.example.com/x", ["@method", "@target-uri"]);
    const httpOn443 = await signed("http://api.example.com:443/x", ["@method", "@target-uri"]);
    expect((await verify(https, { authorities: explicit })).ok).toBe(true);
    expect((await verify(http, { authorities: explicit })).ok).toBe(false);
    expect((await verify(httpOn443, { authorities: explicit })).ok).toBe(true);
  });

  it("compares IP literals and names in the form the URL parser keeps", async () => {
    const v6 = await signed("http://[::1]:8080/x", ["@method", "@target-uri"]);
    expect((await verify(v6, { authorities: ["[0:0::1]:8080"] })).ok).toBe(true);
    expect((await verify(v6, { authorities: ["[::2]:8080"] })).ok).toBe(false);
    const idn = await signed("https://xn--bcher-kva.example/x", ["@method", "@target-uri"]);
    expect((await verify(idn, { authorities: ["bücher.example"] })).ok).toBe(true);
  });

  it("leaves a signature that covers no authority alone", async () => {
    const message = await signed("https://other.example.com/orders/7", ["@method", "@path"]);
    const policy = { authorities, requiredComponents: ["@method", "@path"] };
    expect(await verify(message, policy)).toMatchObject({ ok: true });
  });

  it("checks the authority inside an absolute-form @request-target", async () => {
    const headers = { host: "other.example.com" };
    const received = nodeRequestMessage({
      method: "DELETE",
      url: "http://other.example.com/orders/7",
      headers,
    });
    const fields = await signMessage(received, {
      signer,
      components: ["@method", "@request-target"],
    });
    const message = {
      ...received,
      headers: {
        ...headers,
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
    const again = nodeRequestMessage({
      method: "DELETE",
      url: message.url as string,
      headers: message.headers,
    });
    const policy = { requiredComponents: ["@method", "@request-target"] };
    expect(await verify(again, policy)).toMatchObject({ ok: true });
    expect(await verify(again, { ...policy, authorities })).toMatchObject(UNLISTED);
  });

  it("does not check the ;req authority of a response (the verifier sent that request)", async () => {
    const request = { method: "GET", url: "https://other.example.com/x", headers: {} };
    const headers: Record<string, string> = {};
    const response = { status: 200, headers };
    const fields = await signMessage(response, {
      signer,
      request,
      components: ["@status", { component: "@target-uri", req: true }],
    });
    headers["signature-input"] = fields.signatureInput;
    headers.signature = fields.signature;
    const result = await verifyMessage(
      response,
      { keyLookup, nonceStore: false, authorities },
      request,
    );
    expect(result).toMatchObject({ ok: true });
  });

  it.each([
    [[]],
    [[""]],
    [["api.example.com/admin"]],
    [["user@api.example.com"]],
    [["api.example.com:0"]],
    [["api.example.com:080"]],
    [["api.example.com:65536"]],
    [["api.example.com:"]],
    [["https://api.example.com"]],
    [[42]],
    ["api.example.com"],
  ])("refuses the misconfigured list %j for every message", async (list) => {
    const message = await signed("https://api.example.com/x", ["@method", "@target-uri"]);
    await expect(
      verify(message, { authorities: list as unknown as readonly string[] }),
    ).rejects.toThrow(ValidationError);
  });
});

// The reviewer's case over a real socket: a signature for http://localhost/orders/7, sent to
// this server (127.0.0.1:<port>) with `Host: localhost`.
describe("a received request naming another service's authority", () => {
  let server: Server;
  let port: number;
  const results: VerificationResult[] = [];
  let policy: VerificationPolicy;

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      verifyMessage(nodeRequestMessage(req), policy).then((result) => {
        results.push(result);
        res.end(result.ok ? "ok" : "refused");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
    policy = { keyLookup, nonceStore: false, authorities: [`127.0.0.1:${port}`] };
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  function send(host: string, added: Record<string, string>): Promise<VerificationResult> {
    const head = [
      "DELETE /orders/7 HTTP/1.1",
      `Host: ${host}`,
      "Connection: close",
      `Signature-Input: ${added["signature-input"]}`,
      `Signature: ${added.signature}`,
    ];
    const before = results.length;
    return new Promise((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () => socket.write(`${head.join("\r\n")}\r\n\r\n`));
      socket.resume();
      socket.on("end", () => resolve(results[before] as VerificationResult));
      socket.on("error", reject);
    });
  }

  it("is refused, and one made for this server accepted", async () => {
    const foreign = await signRequest(
      { method: "DELETE", url: "http://localhost/orders/7" },
      { signer },
    );
    expect(await send("localhost", foreign)).toMatchObject(UNLISTED);
    const own = await signRequest(
      { method: "DELETE", url: `http://127.0.0.1:${port}/orders/7` },
      { signer },
    );
    expect(await send(`127.0.0.1:${port}`, own)).toMatchObject({ ok: true });
  });
});
