/**
 * The whole module on `@nestjs/platform-fastify`, over real HTTP: Fastify parses bodies before
 * guards run, wraps the Node request and response (`request.raw`, `reply.raw`), answers
 * `request.protocol` / `request.host` from its own `trustProxy` setting and names the route in
 * `request.routeOptions`. Each layer is checked against those differences.
 */
import "reflect-metadata";
import { connect } from "node:net";
import {
  type EncryptionContext as Context,
  createKms,
  currentEncryptionContext,
  DisabledError,
  type Kms,
  KmsInternalError,
  NotFoundError,
} from "@kms/core";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type MessageSigner,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import {
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Inject,
  Injectable,
  Param,
  Post,
  Req,
  UseGuards,
  UseInterceptors,
} from "@nestjs/common";
import { FastifyAdapter, type NestFastifyApplication } from "@nestjs/platform-fastify";
import { Test } from "@nestjs/testing";
import type { FastifyRequest } from "fastify";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EncryptionContext,
  KmsContextInterceptor,
  KmsModule,
  KmsPrincipal,
  KmsService,
  kmsContextOf,
  RequireSignature,
  SignResponse,
  verifiedSignatureOf,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const clientSecret = Buffer.alloc(32, 0x46);
const serverSecret = Buffer.alloc(32, 0x53);
const client = createHmacSigner(clientSecret, { keyId: "client" });
const serverVerifier = createHmacVerifier(serverSecret);
const TARGET: readonly ComponentSpec[] = ["@method", "@target-uri", "@authority", "@scheme"];
const FORWARDED = { "x-forwarded-proto": "https", "x-forwarded-host": "evil.example" };
const handled: string[] = [];

/** A stand-in for authentication: a bearer "user:tenant" token becomes `request.user`. */
@Injectable()
class BearerGuard implements CanActivate {
  canActivate(execution: ExecutionContext): boolean {
    const req = execution.switchToHttp().getRequest<FastifyRequest & { user?: object }>();
    const auth = req.headers.authorization;
    if (auth?.startsWith("Bearer ")) {
      const [id, tenantId] = auth.slice(7).split(":");
      req.user = { id, tenantId };
    }
    return true;
  }
}

@Controller()
class FastifyController {
  readonly #kms: KmsService;

  constructor(@Inject(KmsService) kms: KmsService) {
    this.#kms = kms;
  }

  @Post("orders")
  @RequireSignature({ contentDigest: "required" })
  @SignResponse()
  create(@Body() body: unknown, @Req() req: FastifyRequest): unknown {
    handled.push("orders");
    return { got: body, label: verifiedSignatureOf(req)?.label };
  }

  @Post("notes")
  @RequireSignature({ contentDigest: "required" })
  note(@Req() req: { rawBody?: Buffer }): string {
    handled.push("notes");
    return `note of ${req.rawBody?.length} bytes`;
  }

  @Get("orders/:id")
  @RequireSignature({ requiredComponents: TARGET, nonceStore: false })
  @SignResponse()
  target(@Req() req: FastifyRequest): unknown {
    handled.push("target");
    return { protocol: req.protocol, host: req.host };
  }

  @Get("tenants/:id/context")
  @UseGuards(BearerGuard)
  @UseInterceptors(KmsContextInterceptor)
  async context(
    @EncryptionContext() param: Context | undefined,
    @KmsPrincipal() principal: string | undefined,
    @Req() req: FastifyRequest,
  ): Promise<unknown> {
    await new Promise((resolve) => setImmediate(resolve));
    return {
      param,
      principal: principal ?? null,
      afterAwait: currentEncryptionContext(),
      route: kmsContextOf(req)?.route,
      callOptions: this.#kms.callOptions(),
    };
  }

  @Post("secrets")
  @UseInterceptors(KmsContextInterceptor)
  async seal(@Body() body: { keyId: string; secret: string }): Promise<{ blob: string }> {
    const { ciphertextBlob } = await this.#kms.kms.encrypt({
      keyId: body.keyId,
      plaintext: new TextEncoder().encode(body.secret),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    return { blob: Buffer.from(ciphertextBlob).toString("base64") };
  }

  @Post("secrets/open")
  @UseInterceptors(KmsContextInterceptor)
  async open(@Body() body: { blob: string }): Promise<{ secret: string }> {
    handled.push("open");
    const { plaintext } = await this.#kms.kms.decrypt({
      ciphertextBlob: new Uint8Array(Buffer.from(body.blob, "base64")),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    return { secret: new TextDecoder().decode(plaintext) };
  }

  @Get("errors/:kind")
  fail(@Param("kind") kind: string): never {
    if (kind === "not-found") throw new NotFoundError("alias/orders-key names no key");
    if (kind === "disabled") throw new DisabledError("key 1234 is disabled");
    throw new KmsInternalError("the key store is unreachable");
  }
}

interface Served {
  readonly app: INestApplication;
  readonly origin: string;
}

async function serve(
  kms: Kms,
  adapter: FastifyAdapter,
  options: { rawBody: boolean; textPlain?: boolean },
): Promise<Served> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        kms,
        mapKmsErrors: true,
        signature: {
          keyLookup: (id) => (id === "client" ? createHmacVerifier(clientSecret) : undefined),
          requiredComponents: ["@method", "@target-uri"],
        },
        responseSigning: { signer: createHmacSigner(serverSecret, { keyId: "server" }) },
        context: { tenantHeader: "x-tenant-id" },
      }),
    ],
    controllers: [FastifyController],
    providers: [BearerGuard],
  }).compile();
  const app = moduleRef.createNestApplication<NestFastifyApplication>(adapter, {
    rawBody: options.rawBody,
    logger: false,
  });
  // Fastify's own text/plain parser keeps no raw copy: this one (Nest's) does, under rawBody.
  if (options.textPlain === true) app.useBodyParser("text/plain");
  return { app, origin: await listen(app) };
}

let kms: Kms;
let keyId: string;
/** `new FastifyAdapter()`: trustProxy off. */
let plain: Served;
/** `trustProxy: true`: every peer (here 127.0.0.1) is a trusted proxy. */
let trusted: Served;
/** `trustProxy` naming another address: the loopback peer is not trusted. */
let elsewhere: Served;
/** No `rawBody`: Fastify's parsers keep no copy of what they consumed. */
let noRaw: Served;

beforeAll(async () => {
  kms = await createKms();
  keyId = (await kms.createKey({})).keyMetadata.keyId;
  plain = await serve(kms, new FastifyAdapter(), { rawBody: true, textPlain: true });
  trusted = await serve(kms, new FastifyAdapter({ trustProxy: true }), { rawBody: true });
  elsewhere = await serve(kms, new FastifyAdapter({ trustProxy: "10.0.0.1" }), {
    rawBody: true,
  });
  noRaw = await serve(kms, new FastifyAdapter(), { rawBody: false });
});
afterAll(async () => {
  for (const served of [plain, trusted, elsewhere, noRaw]) await served?.app.close();
  await kms?.close();
});

async function signedPost(
  origin: string,
  path: string,
  body: string,
  options: { type?: string; signer?: MessageSigner; now?: () => number; expiresIn?: number } = {},
): Promise<{ url: string; headers: Record<string, string>; body: string }> {
  const url = `${origin}${path}`;
  const type = options.type ?? "application/json";
  const headers = await signRequest(
    { method: "POST", url, headers: { "content-type": type }, body },
    {
      signer: options.signer ?? client,
      nonce: true,
      ...(options.now !== undefined ? { now: options.now } : {}),
      ...(options.expiresIn !== undefined ? { expiresIn: options.expiresIn } : {}),
    },
  );
  return { url, headers: { "content-type": type, ...headers }, body };
}

function signedGet(url: string): Promise<Record<string, string>> {
  return signRequest({ method: "GET", url, headers: {} }, { signer: client, components: TARGET });
}

/** Sends `text` on a fresh connection and resolves with everything the server answers. */
function rawExchange(port: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => resolve(Buffer.concat(chunks).toString("latin1")));
    socket.on("error", reject);
    socket.end(text);
  });
}

function expectSignatureProblem(res: request.Response, check: string): void {
  expect(res.status, res.text).toBe(401);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(res.headers["www-authenticate"]).toBe("Signature");
  expect(JSON.parse(res.text)).toMatchObject({
    type: `https://kms.dev/problems/signature/${check}`,
    status: 401,
    check,
  });
}

/** The response as a verifier sees it, bound to the request it answers. */
function verifyResponse(
  res: request.Response,
  req: { method: string; url: string; headers: Record<string, string> },
): ReturnType<typeof verifyMessage> {
  return verifyMessage(
    {
      status: res.status,
      headers: res.headers as Record<string, string>,
      body: new Uint8Array(res.body instanceof Buffer ? res.body : Buffer.from(res.text)),
    },
    {
      keyLookup: (id) => (id === "server" ? serverVerifier : undefined),
      contentDigest: "required",
      requiredComponents: [
        "@status",
        { component: "@method", req: true },
        { component: "@target-uri", req: true },
      ],
    },
    { ...req, headers: { ...req.headers, host: new URL(req.url).host } },
  );
}

describe("SignatureGuard on Fastify", () => {
  // Spaces, a non-ASCII character and key order a JSON re-serialization would not keep.
  const RAW_JSON = '{ "b" : 2,\n  "a":"é" }';

  it("verifies the digest over the raw bytes received (Nest's rawBody on Fastify)", async () => {
    const sent = await signedPost(plain.origin, "/orders", RAW_JSON);
    // The client's digest is over these exact bytes, not over a re-serialization of the JSON.
    expect(sent.headers["content-digest"]).toBe(
      computeContentDigest(Buffer.from(RAW_JSON), ["sha-256"]),
    );
    const res = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
    expect(res.status, res.text).toBe(201);
    expect(res.body).toEqual({ got: { b: 2, a: "é" }, label: "sig1" });
  });

  it("refuses a body whose bytes differ from the signed digest, even when it parses alike", async () => {
    const before = handled.length;
    const sent = await signedPost(plain.origin, "/orders", RAW_JSON);
    const res = await request(plain.origin)
      .post("/orders")
      .set(sent.headers)
      .send(JSON.stringify({ b: 2, a: "é" }));
    expectSignatureProblem(res, "content-digest");
    expect(handled.length).toBe(before);
  });

  it("checks text/plain when the app registers Nest's parser for it (app.useBodyParser)", async () => {
    const sent = await signedPost(plain.origin, "/notes", "hello fastify", { type: "text/plain" });
    const ok = await request(plain.origin).post("/notes").set(sent.headers).send(sent.body);
    expect(ok.status, ok.text).toBe(201);
    expect(ok.text).toBe("note of 13 bytes");
    const again = await signedPost(plain.origin, "/notes", "hello fastify", {
      type: "text/plain",
    });
    const tampered = await request(plain.origin)
      .post("/notes")
      .set(again.headers)
      .send("hello FASTIFY");
    expectSignatureProblem(tampered, "content-digest");
  });

  it.each([
    ["application/json", '{"a":1}'],
    ["text/plain", "hello"],
  ])(
    "answers 400 signature/body for %s consumed by Fastify without rawBody",
    async (type, body) => {
      const before = handled.length;
      const sent = await signedPost(
        noRaw.origin,
        type === "text/plain" ? "/notes" : "/orders",
        body,
        {
          type,
        },
      );
      const res = await request(noRaw.origin)
        .post(new URL(sent.url).pathname)
        .set(sent.headers)
        .send(sent.body);
      expect(res.status, res.text).toBe(400);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      const problem = JSON.parse(res.text);
      expect(problem).toMatchObject({ type: "https://kms.dev/problems/signature/body" });
      expect(problem.detail).toContain("rawBody: true");
      expect(problem.detail).toContain("FastifyAdapter");
      expect(handled.length).toBe(before);
    },
  );

  it("leaves a body of a type no Fastify parser accepts to Fastify (415, no handler)", async () => {
    const before = handled.length;
    const sent = await signedPost(plain.origin, "/orders", "AAAA", {
      type: "application/octet-stream",
    });
    const res = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
    expect(res.status).toBe(415);
    expect(handled.length).toBe(before);
  });

  const rejections: [
    string,
    () => Promise<{ headers: Record<string, string>; body: string }>,
    string,
  ][] = [
    [
      "an unsigned request",
      async () => ({ headers: { "content-type": "application/json" }, body: "{}" }),
      "signature-missing",
    ],
    [
      "a tampered body",
      async () => ({ ...(await signedPost(plain.origin, "/orders", '{"a":1}')), body: '{"a":9}' }),
      "content-digest",
    ],
    [
      "a forged signature",
      async () => {
        const sent = await signedPost(plain.origin, "/orders", "{}");
        return { ...sent, headers: { ...sent.headers, signature: "sig1=:AAAA:" } };
      },
      "signature",
    ],
    [
      "an expired signature",
      () =>
        signedPost(plain.origin, "/orders", "{}", {
          now: () => Date.now() - 120_000,
          expiresIn: 1,
        }),
      "expires",
    ],
    [
      "a signature made for another path",
      async () => {
        const sent = await signedPost(plain.origin, "/notes", "{}");
        return { headers: sent.headers, body: sent.body };
      },
      "signature",
    ],
  ];

  it.each(rejections)(
    "answers 401 problem+json to %s, and the handler never runs",
    async (_name, make, check) => {
      const before = handled.length;
      const sent = await make();
      const res = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
      expectSignatureProblem(res, check);
      expect(handled.length).toBe(before);
    },
  );

  it("refuses a replay", async () => {
    const sent = await signedPost(plain.origin, "/orders", "{}");
    const first = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
    expect(first.status).toBe(201);
    const before = handled.length;
    const replay = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
    expectSignatureProblem(replay, "replay");
    expect(handled.length).toBe(before);
  });
});

describe("SignResponseInterceptor on Fastify", () => {
  it("signs the bytes Fastify sends, bound to the request and its signature (;req)", async () => {
    const sent = await signedPost(plain.origin, "/orders", '{"a":1}');
    const res = await request(plain.origin).post("/orders").set(sent.headers).send(sent.body);
    expect(res.status).toBe(201);
    expect(res.headers["content-digest"]).toBe(
      computeContentDigest(Buffer.from(res.text), ["sha-256"]),
    );
    expect(res.headers["signature-input"]).toContain('"signature";key="sig1";req');
    const reqMessage = { method: "POST", url: sent.url, headers: sent.headers };
    expect(await verifyResponse(res, reqMessage)).toMatchObject({ ok: true, keyId: "server" });

    // Not valid for another request.
    const other = await signedPost(plain.origin, "/orders", '{"a":1}');
    expect(await verifyResponse(res, { ...reqMessage, headers: other.headers })).toMatchObject({
      ok: false,
      check: "signature",
    });
    expect(
      await verifyResponse(res, { ...reqMessage, url: `${plain.origin}/notes` }),
    ).toMatchObject({ ok: false, check: "signature" });
  });

  it("signs the answer to a HEAD request Fastify routes to the GET handler", async () => {
    const url = `${plain.origin}/orders/8`;
    const headers = await signRequest(
      { method: "HEAD", url, headers: {} },
      { signer: client, components: TARGET },
    );
    const res = await request(plain.origin).head("/orders/8").set(headers);
    expect(res.status, res.text).toBe(200);
    expect(res.headers["content-digest"]).toBeUndefined();
    const result = await verifyMessage(
      { status: res.status, headers: res.headers as Record<string, string> },
      {
        keyLookup: (id) => (id === "server" ? serverVerifier : undefined),
        requiredComponents: ["@status", { component: "@method", req: true }],
      },
      { method: "HEAD", url, headers: { ...headers, host: new URL(url).host } },
    );
    expect(result).toMatchObject({ ok: true });
  });
});

describe("KmsExceptionFilter on Fastify", () => {
  it.each([
    ["not-found", 404, "NotFoundException", "a key this request needs does not exist"],
    ["disabled", 409, "DisabledException", "a key this request needs is disabled"],
    ["internal", 500, undefined, "the key management service failed; see the server logs"],
  ])("answers %s with %i problem+json", async (kind, status, code, detail) => {
    const res = await request(plain.origin).get(`/errors/${kind}`);
    expect(res.status).toBe(status);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const problem = JSON.parse(res.text);
    expect(problem).toMatchObject({ status, detail });
    expect(problem.type).toBe(`https://kms.dev/problems/kms/${code ?? "internal"}`);
    expect(res.text).not.toMatch(/orders-key|1234|unreachable/);
  });
});

describe("KmsContextInterceptor on Fastify", () => {
  it("gives @EncryptionContext / @KmsPrincipal the tenant and principal, and names the route pattern", async () => {
    const res = await request(plain.origin)
      .get("/tenants/7/context?q=private")
      .set("authorization", "Bearer u1:globex")
      .set("x-tenant-id", "acme")
      .set("x-request-id", "req-7");
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({
      param: { tenant: "globex" },
      principal: "u1",
      afterAwait: { tenant: "globex" },
      // The matched pattern, as on Express: not the URL with its id and query.
      route: "GET /tenants/:id/context",
      // The server's id, not the client's x-request-id (not trusted by default).
      callOptions: { principal: "u1", requestId: res.headers["x-request-id"] },
    });
    expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("answers 400 problem+json when the request names no tenant", async () => {
    const res = await request(plain.origin).get("/tenants/7/context");
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
    });
  });

  it("keeps one tenant's ciphertext unreadable to another (403, generic)", async () => {
    const sealed = await request(plain.origin)
      .post("/secrets")
      .set("x-tenant-id", "acme")
      .send({ keyId, secret: "acme's secret" });
    expect(sealed.status, sealed.text).toBe(201);
    const blob = (sealed.body as { blob: string }).blob;
    const own = await request(plain.origin)
      .post("/secrets/open")
      .set("x-tenant-id", "acme")
      .send({ blob });
    expect(own.body).toEqual({ secret: "acme's secret" });
    const other = await request(plain.origin)
      .post("/secrets/open")
      .set("x-tenant-id", "globex")
      .send({ blob });
    expect(other.status).toBe(403);
    expect(JSON.parse(other.text)).toMatchObject({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
    });
    expect(other.text).not.toContain("secret");
  });
});

describe("the target URI under Fastify's trustProxy", () => {
  const PATH = "/orders/7?x=1";

  it("ignores X-Forwarded-Proto / -Host with new FastifyAdapter() (trustProxy off)", async () => {
    const before = handled.length;
    const forged = await request(plain.origin)
      .get(PATH)
      .set({ ...(await signedGet(`https://evil.example${PATH}`)), ...FORWARDED });
    expectSignatureProblem(forged, "signature");
    expect(handled.length).toBe(before);

    const real = `${plain.origin}${PATH}`;
    const headers = await signedGet(real);
    const res = await request(plain.origin)
      .get(PATH)
      .set({ ...headers, ...FORWARDED });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ protocol: "http", host: new URL(real).host });
    // The response is bound to the target the connection and Host field name.
    expect(await verifyResponse(res, { method: "GET", url: real, headers })).toMatchObject({
      ok: true,
    });
    expect(
      await verifyResponse(res, { method: "GET", url: `https://evil.example${PATH}`, headers }),
    ).toMatchObject({ ok: false, check: "signature" });
  });

  // No Host: no authority, neither assumed (`localhost`) nor taken from an untrusted field.
  it("ignores X-Forwarded-Host on an HTTP/1.0 request without Host (request.host is '')", async () => {
    const port = new URL(plain.origin).port;
    for (const signedFor of ["localhost", "evil.example"]) {
      const headers = await signedGet(`http://${signedFor}${PATH}`);
      const fields = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
      const own = await rawExchange(port, `GET ${PATH} HTTP/1.0\r\n${fields.join("")}\r\n`);
      expect(own).toMatch(/^HTTP\/1\.1 401 [\s\S]*no Host header/);
      const forwarded = await rawExchange(
        port,
        `GET ${PATH} HTTP/1.0\r\n${fields.join("")}X-Forwarded-Host: evil.example\r\n\r\n`,
      );
      expect(forwarded).toMatch(/^HTTP\/1\.1 401 [\s\S]*no Host header/);
    }
  });

  it("ignores them when trustProxy names other addresses than the peer", async () => {
    const forged = await request(elsewhere.origin)
      .get(PATH)
      .set({ ...(await signedGet(`https://evil.example${PATH}`)), ...FORWARDED });
    expectSignatureProblem(forged, "signature");
    const ok = await request(elsewhere.origin)
      .get(PATH)
      .set({ ...(await signedGet(`${elsewhere.origin}${PATH}`)), ...FORWARDED });
    expect(ok.status, ok.text).toBe(200);
  });

  it("uses them with trustProxy: true, and signs the response for the forwarded target", async () => {
    const forwardedUrl = `https://evil.example${PATH}`;
    const headers = await signedGet(forwardedUrl);
    const res = await request(trusted.origin)
      .get(PATH)
      .set({ ...headers, ...FORWARDED });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ protocol: "https", host: "evil.example" });
    expect(await verifyResponse(res, { method: "GET", url: forwardedUrl, headers })).toMatchObject({
      ok: true,
    });

    // The connection's own target is not what the trusted proxy says the client asked for.
    const direct = await request(trusted.origin)
      .get(PATH)
      .set({ ...(await signedGet(`${trusted.origin}${PATH}`)), ...FORWARDED });
    expectSignatureProblem(direct, "signature");
  });

  it("uses the last entry of a forwarded list, the one the trusted proxy appended", async () => {
    const fields = {
      "x-forwarded-proto": "http, https",
      "x-forwarded-host": "client.example, api.example.com",
    };
    const ok = await request(trusted.origin)
      .get(PATH)
      .set({ ...(await signedGet(`https://api.example.com${PATH}`)), ...fields });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.body).toEqual({ protocol: "https", host: "api.example.com" });
    const clientWritten = await request(trusted.origin)
      .get(PATH)
      .set({ ...(await signedGet(`http://client.example${PATH}`)), ...fields });
    expectSignatureProblem(clientWritten, "signature");
  });

  it.each([
    ["X-Forwarded-Host", { "x-forwarded-host": "api.example.com," }],
    ["X-Forwarded-Proto", { "x-forwarded-proto": "https," }],
  ])(
    "refuses the derived components when a trusted %s ends in an empty entry",
    async (_name, fields) => {
      // Fastify answers the empty last entry: neither the Host field nor the connection's
      // scheme stands in for it.
      const res = await request(trusted.origin)
        .get(PATH)
        .set({ ...(await signedGet(`${trusted.origin}${PATH}`)), ...fields });
      expectSignatureProblem(res, "components");
    },
  );
});
