/**
 * RFC 9421 §2.2.5: `@request-target` is the request target as it appears in the request line.
 * A target ending in an empty query (`GET /p? HTTP/1.1`) keeps its `?`, although the URL
 * parser's `search` is "" for it as for no query: `/p` and `/p?` are different targets.
 */
import { createServer } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { describe, expect, it } from "vitest";
import {
  componentValues,
  createHmacSigner,
  createHmacVerifier,
  item,
  type MessageSigner,
  nodeRequestMessage,
  type RequestMessage,
  signRequest,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x3c);
const signer = createHmacSigner(SECRET, { keyId: "k" });
const components = ["@method", "@authority", "@request-target"] as const;

/** The signature base a signer is handed, as text. */
async function signedBase(url: string): Promise<string> {
  let base = "";
  const capturing: MessageSigner = {
    algorithm: "hmac-sha256",
    keyId: "k",
    sign: async (bytes) => {
      base = new TextDecoder().decode(bytes);
      return new Uint8Array(32);
    },
  };
  await signRequest({ method: "GET", url }, { signer: capturing, components });
  return base;
}

/** The request a Node server builds for `GET <target> HTTP/1.1` with Host `a.test`. */
function received(
  target: string,
  headers: Readonly<Record<string, string | undefined>>,
): RequestMessage {
  return nodeRequestMessage({
    method: "GET",
    url: target,
    protocol: "https",
    headers: { host: "a.test", ...headers },
  });
}

async function verifies(signedUrl: string, receivedTarget: string): Promise<boolean> {
  const added = await signRequest({ method: "GET", url: signedUrl }, { signer, components });
  const result = await verifyMessage(received(receivedTarget, added), {
    keyLookup: (id) => (id === "k" ? createHmacVerifier(SECRET) : undefined),
    nonceStore: false,
    requiredComponents: components,
  });
  return result.ok;
}

describe("@request-target of an empty query", () => {
  it("keeps the ? when signing a URL that ends in one", async () => {
    const base = await signedBase("https://a.test/p?");
    expect(base.split("\n")).toContain('"@request-target": /p?');
  });

  it("keeps the ? with a fragment after it, which is not sent", async () => {
    expect(await signedBase("https://a.test/p?#frag")).toContain('"@request-target": /p?\n');
    expect(await signedBase("https://a.test/p#")).toContain('"@request-target": /p\n');
  });

  it.each([
    ["https://a.test/p?", "/p?"],
    ["https://a.test/p", "/p"],
    ["https://a.test/p?a=1", "/p?a=1"],
    ["https://a.test/p?%zz", "/p?%zz"],
  ])("verifies %s signed and received as %s", async (url, target) => {
    expect(await verifies(url, target)).toBe(true);
  });

  it.each([
    ["https://a.test/p?", "/p"],
    ["https://a.test/p", "/p?"],
  ])("refuses %s signed and received as %s", async (url, target) => {
    expect(await verifies(url, target)).toBe(false);
  });

  it("verifies a request received on a socket as GET /p? HTTP/1.1", async () => {
    const added = await signRequest(
      { method: "GET", url: "http://a.test/p?" },
      { signer, components },
    );
    const server = createServer((req, res) => {
      verifyMessage(nodeRequestMessage(req), {
        keyLookup: (id) => (id === "k" ? createHmacVerifier(SECRET) : undefined),
        nonceStore: false,
        requiredComponents: components,
      }).then((result) => res.end(`${req.url} ${result.ok ? "ok" : "refused"}`));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const head = [
        "GET /p? HTTP/1.1",
        "Host: a.test",
        "Connection: close",
        `Signature-Input: ${added["signature-input"]}`,
        `Signature: ${added.signature}`,
      ];
      const response = await new Promise<string>((resolve, reject) => {
        let text = "";
        const socket = connect(port, "127.0.0.1", () =>
          socket.write(`${head.join("\r\n")}\r\n\r\n`),
        );
        socket.on("data", (chunk: Buffer) => {
          text += chunk.toString("latin1");
        });
        socket.on("end", () => resolve(text));
        socket.on("error", reject);
      });
      expect(response.endsWith("\r\n\r\n/p? ok")).toBe(true);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("keeps the ? of a received target, cut from it or parsed", () => {
    const message = received("/p?", {});
    expect(componentValues(item("@request-target"), { message })).toEqual(["/p?"]);
    // `{` is escaped by the URL parser, so this target is parsed rather than cut as sent.
    const parsed = received("/p{?", {});
    expect(componentValues(item("@request-target"), { message: parsed })).toEqual(["/p%7B?"]);
  });

  it("gives @path and @query as RFC 9421 §2.2.6–2.2.7 do: /p and ?", () => {
    const message = received("/p?", {});
    expect(componentValues(item("@path"), { message })).toEqual(["/p"]);
    expect(componentValues(item("@query"), { message })).toEqual(["?"]);
    expect(componentValues(item("@target-uri"), { message })).toEqual(["https://a.test/p?"]);
  });

  it("keeps the ? of a URL object", () => {
    const message: RequestMessage = {
      method: "GET",
      url: new URL("https://a.test/p?"),
      headers: {},
    };
    expect(componentValues(item("@request-target"), { message })).toEqual(["/p?"]);
  });
});
