/**
 * `signNodeResponse` holds `res.writeHead(…)` until the signed head goes out: what it holds
 * must be what Node would have sent, Node's flat header array form included.
 */
import { createServer, get, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createKms, MemoryAuditSink } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createKmsSigner,
  nodeRequestMessage,
  signNodeResponse,
} from "../src/index.ts";

const signer = createHmacSigner(new Uint8Array(32).fill(3), { keyId: "srv" });

/** Serves one request with `handle`, signed or not; answers the status and raw header lines. */
async function serve(
  sign: boolean,
  handle: (res: ServerResponse) => void,
): Promise<{ status: number; raw: string[]; body: string }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (sign) signNodeResponse(res, { signer }, () => ({ request: nodeRequestMessage(req) }));
    try {
      handle(res);
    } catch (error) {
      res.end(`threw ${(error as Error).name}`);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise((resolve, reject) => {
      get({ host: "127.0.0.1", port, path: "/" }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, raw: res.rawHeaders, body }));
      }).on("error", reject);
    });
  } finally {
    server.close();
  }
}

/** The values of `name` in raw header lines, in order. */
function values(raw: readonly string[], name: string): string[] {
  return raw.filter((_, i) => i % 2 === 1 && raw[i - 1]?.toLowerCase() === name);
}

describe("a held writeHead with a flat header array", () => {
  const flat = (res: ServerResponse) => {
    res.setHeader("x-before", "old");
    res.setHeader("x-kept", "kept");
    res.writeHead(201, [
      "Set-Cookie",
      "a=1",
      "Set-Cookie",
      "b=2",
      "X-Before",
      "new",
      "Content-Type",
      "text/plain",
    ]);
    res.end("hi");
  };

  it("keeps repeated fields and replaces earlier values, as Node does unsigned", async () => {
    const plain = await serve(false, flat);
    const signed = await serve(true, flat);
    expect(values(signed.raw, "signature")).toHaveLength(1);
    expect(signed.status).toBe(201);
    for (const name of ["set-cookie", "x-before", "x-kept", "content-type"]) {
      expect(values(signed.raw, name), name).toEqual(values(plain.raw, name));
    }
    expect(values(signed.raw, "set-cookie")).toEqual(["a=1", "b=2"]);
    expect(values(signed.raw, "x-before")).toEqual(["new"]);
  });

  it("refuses an array of odd length, as Node does", async () => {
    const odd = (res: ServerResponse) => {
      res.writeHead(200, ["X-A", "1", "X-B"]);
      res.end("sent");
    };
    const plain = await serve(false, odd);
    const signed = await serve(true, odd);
    expect(plain.body).toBe("threw TypeError");
    expect(signed.body).toBe("threw TypeError");
  });
});

describe("the request id a response is signed under", () => {
  it("is the binding's, also when the response ends outside any request scope", async () => {
    const audit = new MemoryAuditSink();
    const kms = await createKms({ audit });
    const { keyId } = (
      await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
    ).keyMetadata;
    const kmsSigner = createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" });
    const server = createServer((req, res) => {
      signNodeResponse(res, { signer: kmsSigner }, () => ({
        request: nodeRequestMessage(req),
        requestId: "req-7",
      }));
      // Ended from a timer: nothing of the request's scope is left.
      setTimeout(() => res.end("signed"), 1);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const before = audit.events.length;
      const res = await fetch(`http://127.0.0.1:${port}/`);
      expect(await res.text()).toBe("signed");
      expect(res.headers.get("signature")).not.toBeNull();
      const events = audit.events.slice(before).map((e) => `${e.eventName}:${e.requestID}`);
      expect(events).toEqual(["GenerateMac:req-7"]);
    } finally {
      server.close();
      await kms.close();
    }
  });
});
