import "reflect-metadata";
import { randomBytes } from "node:crypto";
import {
  createHmacSigner,
  createHmacVerifier,
  type MessageSigner,
  type MessageVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { Body, Controller, type INestApplication, Post, Req, UseGuards } from "@nestjs/common";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  KmsModule,
  RequireSignature,
  SignatureGuard,
  Signed,
  SignResponse,
  SkipSignature,
  VerifySignature,
  verifiedSignatureOf,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const clientSecret = randomBytes(32);
const partnerSecret = randomBytes(32);
const serverSecret = randomBytes(32);
const client = createHmacSigner(clientSecret, { keyId: "client-1" });
const serverVerifier = createHmacVerifier(serverSecret);
const handled: string[] = [];

/** A user's subclass: keys come from its own registry through the protected hook. */
class PartnerSignatureGuard extends SignatureGuard {
  protected override resolveKey(keyId: string): MessageVerifier | undefined {
    return keyId === "partner" ? createHmacVerifier(partnerSecret) : undefined;
  }
}

// The decorator names (@VerifySignature, @Signed) here; the long names below.
@Controller()
@VerifySignature()
class OrdersController {
  @Post("orders")
  @Signed()
  create(@Body() body: unknown, @Req() req: object): unknown {
    handled.push("orders");
    return { got: body, label: verifiedSignatureOf(req)?.label };
  }

  @Post("notes")
  note(@Req() req: { rawBody?: Buffer }): string {
    handled.push("notes");
    return `note of ${req.rawBody?.length} bytes`;
  }

  @Post("webhooks")
  @RequireSignature({
    tag: "webhook",
    requiredComponents: ["@method", "@target-uri", "content-digest"],
  })
  webhook(): string {
    handled.push("webhooks");
    return "ok";
  }

  @Post("health")
  @SkipSignature()
  health(): string {
    handled.push("health");
    return "up";
  }

  @Post("broken-signer")
  @SignResponse({
    signer: {
      algorithm: "hmac-sha256",
      keyId: "down",
      sign: () => Promise.reject(new Error("KMS unreachable")),
    } satisfies MessageSigner,
  })
  broken(): string {
    handled.push("broken-signer");
    return "secret result";
  }
}

@Controller("partner")
@UseGuards(PartnerSignatureGuard)
class PartnerController {
  @Post()
  receive(): string {
    handled.push("partner");
    return "partner ok";
  }
}

// Open by default, with one route that demands a signature: the method's decorator decides.
@Controller("open")
@SkipSignature()
class OpenController {
  @Post("transfer")
  @RequireSignature()
  transfer(): string {
    handled.push("transfer");
    return "moved";
  }
}

let app: INestApplication;
let origin: string;

beforeAll(async () => {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        signature: {
          keyLookup: (id) => (id === "client-1" ? createHmacVerifier(clientSecret) : undefined),
          requiredComponents: ["@method", "@target-uri"],
          contentDigest: "required",
        },
        responseSigning: { signer: createHmacSigner(serverSecret, { keyId: "server" }) },
      }),
    ],
    controllers: [OrdersController, PartnerController, OpenController],
    providers: [PartnerSignatureGuard],
  }).compile();
  app = moduleRef.createNestApplication({ rawBody: true });
  origin = await listen(app);
});
afterAll(() => app.close());

async function signed(
  path: string,
  body: string,
  options: { type?: string; signer?: MessageSigner; tag?: string } = {},
) {
  const url = `${origin}${path}`;
  const type = options.type ?? "application/json";
  const headers = await signRequest(
    { method: "POST", url, headers: { "content-type": type }, body },
    {
      signer: options.signer ?? client,
      nonce: true,
      ...(options.tag !== undefined ? { tag: options.tag } : {}),
    },
  );
  return { url, headers: { "content-type": type, ...headers }, body };
}

function expectProblem(res: request.Response, check: string): void {
  expect(res.status).toBe(401);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(res.headers["www-authenticate"]).toBe("Signature");
  const problem = JSON.parse(res.text);
  expect(problem).toMatchObject({
    type: `https://kms.dev/problems/signature/${check}`,
    title: "HTTP message signature rejected",
    status: 401,
    check,
  });
  expect(typeof problem.detail).toBe("string");
}

describe("SignatureGuard", () => {
  it("lets a signed JSON request through with Nest's rawBody", async () => {
    const sent = await signed("/orders", '{"amount":10}');
    const res = await request(origin).post("/orders").set(sent.headers).send(sent.body);
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ got: { amount: 10 }, label: "sig1" });
  });

  it("reads a body no parser consumed (text/plain) and checks its digest", async () => {
    const sent = await signed("/notes", "hello nest", { type: "text/plain" });
    const ok = await request(origin).post("/notes").set(sent.headers).send(sent.body);
    expect(ok.status).toBe(201);
    expect(ok.text).toBe("note of 10 bytes");
    const again = await signed("/notes", "hello nest", { type: "text/plain" });
    const tampered = await request(origin).post("/notes").set(again.headers).send("hello NEST");
    expectProblem(tampered, "content-digest");
  });

  const rejections: [
    string,
    (h: Record<string, string>) => Record<string, string>,
    string,
    string?,
  ][] = [
    ["an unsigned request", () => ({ "content-type": "application/json" }), "signature-missing"],
    ["a tampered body", (h) => h, "content-digest", '{"amount":1000}'],
    ["a forged signature", (h) => ({ ...h, signature: "sig1=:AAAA:" }), "signature"],
    [
      "an unknown key",
      (h) => ({ ...h, "signature-input": h["signature-input"]!.replace("client-1", "x") }),
      "key",
    ],
    [
      "a garbage Signature-Input",
      (h) => ({ ...h, "signature-input": "((" }),
      "signature-malformed",
    ],
    [
      "a signature not covering the target",
      (h) => ({ ...h, "signature-input": h["signature-input"]!.replace('"@target-uri" ', "") }),
      "components",
    ],
  ];

  it.each(rejections)(
    "answers 401 problem+json to %s, and the handler never runs",
    async (_name, mutate, check, newBody) => {
      const before = handled.length;
      const sent = await signed("/orders", '{"amount":10}');
      const res = await request(origin)
        .post("/orders")
        .set(mutate(sent.headers))
        .send(newBody ?? sent.body);
      expectProblem(res, check);
      expect(handled.length).toBe(before);
    },
  );

  it("refuses a replayed request (module's default in-memory nonce store)", async () => {
    const sent = await signed("/orders", "{}");
    expect((await request(origin).post("/orders").set(sent.headers).send(sent.body)).status).toBe(
      201,
    );
    const before = handled.length;
    const replay = await request(origin).post("/orders").set(sent.headers).send(sent.body);
    expectProblem(replay, "replay");
    expect(handled.length).toBe(before);
  });

  it("requires a nonce by default, since replay protection is on", async () => {
    const url = `${origin}/orders`;
    const headers = await signRequest(
      { method: "POST", url, headers: { "content-type": "application/json" }, body: "{}" },
      { signer: client },
    );
    const res = await request(origin)
      .post("/orders")
      .set({ "content-type": "application/json", ...headers })
      .send("{}");
    expectProblem(res, "nonce");
  });

  it("layers the route's @RequireSignature policy over the class's and module's", async () => {
    const untagged = await signed("/webhooks", "{}");
    expectProblem(
      await request(origin).post("/webhooks").set(untagged.headers).send(untagged.body),
      "tag",
    );
    const tagged = await signed("/webhooks", "{}", { tag: "webhook" });
    const ok = await request(origin).post("/webhooks").set(tagged.headers).send(tagged.body);
    expect(ok.status).toBe(201);
  });

  it("@SkipSignature exempts a route", async () => {
    const res = await request(origin).post("/health").send();
    expect(res.status).toBe(201);
    expect(res.text).toBe("up");
  });

  it("enforces a method's @RequireSignature under its controller's @SkipSignature", async () => {
    const before = handled.length;
    expectProblem(await request(origin).post("/open/transfer").send(), "signature-missing");
    expect(handled.length).toBe(before);
    const sent = await signed("/open/transfer", "{}");
    const ok = await request(origin).post("/open/transfer").set(sent.headers).send(sent.body);
    expect(ok.status).toBe(201);
    expect(handled.at(-1)).toBe("transfer");
  });

  it("lets a subclass resolve keys through the protected resolveKey hook", async () => {
    const partner = createHmacSigner(partnerSecret, { keyId: "partner" });
    const sent = await signed("/partner", "{}", { signer: partner });
    const ok = await request(origin).post("/partner").set(sent.headers).send(sent.body);
    expect(ok.status).toBe(201);
    expect(ok.text).toBe("partner ok");
    // The module's client key is not known to the subclass.
    const before = handled.length;
    const other = await signed("/partner", "{}");
    expectProblem(
      await request(origin).post("/partner").set(other.headers).send(other.body),
      "key",
    );
    expect(handled.length).toBe(before);
  });
});

describe("SignResponseInterceptor", () => {
  const serverPolicy = {
    keyLookup: (id: string) => (id === "server" ? serverVerifier : undefined),
    contentDigest: "required" as const,
    requiredComponents: [
      "@status",
      { component: "@method", req: true },
      { component: "@target-uri", req: true },
      { component: "signature", key: "sig1", req: true },
    ],
  };

  it("signs the response, bound to the request and its signature (;req)", async () => {
    const sent = await signed("/orders", '{"a":1}');
    const res = await request(origin).post("/orders").set(sent.headers).send(sent.body);
    expect(res.status).toBe(201);
    expect(res.headers["signature-input"]).toContain('"signature";key="sig1";req');
    const reqMessage = {
      method: "POST",
      url: sent.url,
      headers: { ...sent.headers, host: new URL(sent.url).host },
    };
    const response = {
      status: res.status,
      headers: res.headers as Record<string, string>,
      body: new TextEncoder().encode(res.text),
    };
    expect(await verifyMessage(response, serverPolicy, reqMessage)).toMatchObject({
      ok: true,
      keyId: "server",
    });

    // Not valid for another request, nor with another body, nor another status.
    const other = await signed("/orders", '{"a":2}');
    expect(
      await verifyMessage(response, serverPolicy, { ...reqMessage, headers: other.headers }),
    ).toMatchObject({ ok: false, check: "signature" });
    expect(
      await verifyMessage(
        { ...response, body: new TextEncoder().encode('{"got":{"a":2}}') },
        serverPolicy,
        reqMessage,
      ),
    ).toMatchObject({ ok: false, check: "content-digest" });
    expect(
      await verifyMessage({ ...response, status: 200 }, serverPolicy, reqMessage),
    ).toMatchObject({ ok: false, check: "signature" });
  });

  it("answers 500 problem+json, never the unsigned result, when the signer fails", async () => {
    const sent = await signed("/broken-signer", "{}");
    const res = await request(origin).post("/broken-signer").set(sent.headers).send(sent.body);
    expect(res.status).toBe(500);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/signature/response-signing",
      detail: "the signer failed",
    });
    expect(res.text).not.toContain("secret result");
    expect(res.headers.signature).toBeUndefined();
  });
});
