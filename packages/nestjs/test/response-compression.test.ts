/**
 * `@SignResponse` next to a compression middleware. Nest runs every middleware before any
 * interceptor, so the middleware wraps the response first and codes the body under the signer,
 * after signing: such a response is refused (connection closed) rather than sent with a
 * Content-Digest of the uncoded body. The README's filter sends signed responses uncoded.
 */
import "reflect-metadata";
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { request as httpRequest } from "node:http";
import { gzipSync } from "node:zlib";
import { createHmacSigner, createHmacVerifier, verifyMessage } from "@kms/http-signatures";
import { Controller, Get, type INestApplication, Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { afterEach, expect, it, vi } from "vitest";
import { KmsModule, SignResponse } from "../src/index.ts";

const secret = randomBytes(32);
const TEXT = "x".repeat(2000);

@Controller()
class DataController {
  @Get("data")
  @SignResponse()
  data(): string {
    return TEXT;
  }
}

@Module({
  imports: [
    KmsModule.forRoot({ responseSigning: { signer: createHmacSigner(secret, { keyId: "srv" }) } }),
  ],
  controllers: [DataController],
})
class AppModule {}

/**
 * A stand-in for `app.use(compression({ filter }))`: it gzips in a `writeHead` wrapper, when the
 * head goes out, as the `compression` package's `on-headers` hook does.
 */
function compression(filter: (req: IncomingMessage, res: ServerResponse) => boolean) {
  return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const { end, writeHead } = res;
    let gzip: boolean | undefined;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      if (gzip === undefined) {
        gzip = filter(req, res);
        if (gzip) {
          res.setHeader("content-encoding", "gzip");
          res.removeHeader("content-length");
        }
      }
      return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    res.end = ((chunk?: Buffer | string) => {
      res.writeHead(res.statusCode);
      const body = Buffer.from(chunk ?? "");
      return (end as (chunk: Buffer) => ServerResponse).call(res, gzip ? gzipSync(body) : body);
    }) as typeof res.end;
    next();
  };
}

let app: INestApplication | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
  vi.restoreAllMocks();
});

async function serve(filter: (req: IncomingMessage, res: ServerResponse) => boolean) {
  app = await NestFactory.create(AppModule, { logger: false });
  app.use(compression(filter));
  await app.listen(0, "127.0.0.1");
  return (app.getHttpServer().address() as { port: number }).port;
}

function get(port: number) {
  return new Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: Buffer;
  }>((resolve, reject) => {
    httpRequest({ host: "127.0.0.1", port, path: "/data" }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (part: Buffer) => parts.push(part));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }),
      );
    })
      .on("error", reject)
      .end();
  });
}

it("closes the connection rather than send a signature over the uncoded body", async () => {
  vi.spyOn(process, "emitWarning").mockImplementation(() => {});
  const port = await serve(() => true);
  await expect(get(port)).rejects.toThrow(/socket hang up|ECONNRESET/);
});

it("sends signed responses uncoded when the filter skips them, and they verify", async () => {
  const port = await serve((_req, res) => !res.hasHeader("signature"));
  const received = await get(port);
  expect(received.headers["content-encoding"]).toBeUndefined();
  const result = await verifyMessage(
    received,
    {
      keyLookup: () => createHmacVerifier(secret),
      nonceStore: false,
      requiredComponents: ["@status", "content-digest"],
    },
    { method: "GET", url: `http://127.0.0.1:${port}/data`, headers: {} },
  );
  expect(result.ok).toBe(true);
});
