/**
 * What a request says about the server it was sent to: `authorities` through the module's and
 * the route's signature policy, and requests and responses over HTTP/2 (Fastify's `http2`
 * option, h2c), where the authority is `:authority` and the response's `end` writes through
 * `this.write`.
 */
import "reflect-metadata";
import { connect as connectHttp2, type IncomingHttpHeaders } from "node:http2";
import { type AddressInfo, connect } from "node:net";
import {
  createHmacSigner,
  createHmacVerifier,
  type RequestMessage,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { Controller, Get, type INestApplication } from "@nestjs/common";
import { FastifyAdapter, type NestFastifyApplication } from "@nestjs/platform-fastify";
import { Test } from "@nestjs/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, RequireSignature, SignResponse } from "../src/index.ts";
import { listen } from "./helpers.ts";

const clientSecret = Buffer.alloc(32, 0x5e);
const serverSecret = Buffer.alloc(32, 0x6f);
const signer = createHmacSigner(clientSecret, { keyId: "partner" });
const keyLookup = (id: string) => (id === "partner" ? createHmacVerifier(clientSecret) : undefined);

/** The authorities the apps answer to; filled in once they listen. */
const moduleAuthorities: string[] = [];
const routeAuthorities: string[] = [];

@Controller()
class OrdersController {
  @Get("module")
  @RequireSignature()
  byModule(): { ok: string } {
    return { ok: "module" };
  }

  @Get("route")
  @RequireSignature({ authorities: routeAuthorities })
  byRoute(): { ok: string } {
    return { ok: "route" };
  }

  @Get("signed")
  @SignResponse()
  signed(): { ok: string } {
    return { ok: "signed" };
  }

  @Get("verified")
  @RequireSignature()
  @SignResponse()
  verified(): { ok: string } {
    return { ok: "verified" };
  }
}

async function create(
  authorities: readonly string[] | undefined,
  adapter?: FastifyAdapter,
): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        signature: { keyLookup, ...(authorities === undefined ? {} : { authorities }) },
        responseSigning: { signer: createHmacSigner(serverSecret, { keyId: "server" }) },
      }),
    ],
    controllers: [OrdersController],
  }).compile();
  return adapter === undefined
    ? moduleRef.createNestApplication({ logger: false })
    : moduleRef.createNestApplication<NestFastifyApplication>(adapter, { logger: false });
}

/** Sends a signed GET for `signedFor` + `path` with `host` as Host; answers the raw response. */
async function send(port: number, path: string, signedFor: string, host: string) {
  const added = await signRequest(
    { method: "GET", url: `${signedFor}${path}` },
    { signer, nonce: true },
  );
  const head = [
    `GET ${path} HTTP/1.1`,
    `Host: ${host}`,
    "Connection: close",
    `Signature-Input: ${added["signature-input"]}`,
    `Signature: ${added.signature}`,
  ];
  return new Promise<string>((resolve, reject) => {
    let out = "";
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head.join("\r\n")}\r\n\r\n`));
    socket.on("data", (chunk: Buffer) => {
      out += chunk.toString("latin1");
    });
    socket.on("end", () => resolve(out));
    socket.on("error", reject);
  });
}

describe("authorities in the signature policy", () => {
  let app: INestApplication;
  let port: number;

  beforeAll(async () => {
    app = await create(moduleAuthorities);
    await listen(app);
    port = (app.getHttpServer().address() as AddressInfo).port;
    moduleAuthorities.push(`127.0.0.1:${port}`);
    routeAuthorities.push(`127.0.0.1:${port}`);
  });
  afterAll(() => app.close());

  it.each(["/module", "/route"])(
    "%s: refuses a signature made for another authority, sent with it as Host",
    async (path) => {
      const response = await send(port, path, "http://localhost", "localhost");
      expect(response).toMatch(/^HTTP\/1\.1 401 /);
      expect(response).toContain("/signature/components");
      expect(response).toContain("not one this server answers to");
    },
  );

  it.each(["/module", "/route"])("%s: accepts one made for this server", async (path) => {
    const own = `127.0.0.1:${port}`;
    const response = await send(port, path, `http://${own}`, own);
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe("on Fastify over HTTP/2 (h2c)", () => {
  let app: INestApplication;
  let origin: string;

  beforeAll(async () => {
    app = await create(undefined, new FastifyAdapter({ http2: true } as never));
    origin = await listen(app);
  });
  afterAll(() => app.close());

  function get(path: string, headers: Record<string, string> = {}) {
    return new Promise<{ headers: IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const session = connectHttp2(origin);
      session.on("error", reject);
      const stream = session.request({ ":path": path, ...headers });
      const chunks: Buffer[] = [];
      let answered: IncomingHttpHeaders = {};
      stream.on("response", (h) => {
        answered = h;
      });
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        session.close();
        resolve({ headers: answered, body: Buffer.concat(chunks) });
      });
      stream.on("error", reject);
      stream.end();
    });
  }

  function verifyResponse(
    answer: { headers: IncomingHttpHeaders; body: Buffer },
    request: RequestMessage,
  ) {
    const headers = Object.fromEntries(
      Object.entries(answer.headers).filter(([name]) => !name.startsWith(":")),
    ) as Record<string, string>;
    return verifyMessage(
      { status: Number(answer.headers[":status"]), headers, body: answer.body },
      { keyLookup: () => createHmacVerifier(serverSecret), nonceStore: false },
      request,
    );
  }

  it("sends a signed response with its body", async () => {
    const answer = await get("/signed");
    expect(answer.headers[":status"]).toBe(200);
    expect(JSON.parse(answer.body.toString())).toEqual({ ok: "signed" });
    const request = { method: "GET", url: `${origin}/signed`, headers: {} };
    expect(await verifyResponse(answer, request)).toMatchObject({ ok: true });
  });

  it("verifies a signed request, whose authority is :authority, and binds the response to it", async () => {
    const url = `${origin}/verified`;
    const added = await signRequest({ method: "GET", url }, { signer, nonce: true });
    const answer = await get("/verified", added);
    expect(answer.headers[":status"]).toBe(200);
    expect(JSON.parse(answer.body.toString())).toEqual({ ok: "verified" });
    const request = { method: "GET", url, headers: added };
    expect(await verifyResponse(answer, request)).toMatchObject({ ok: true });
  });
});
