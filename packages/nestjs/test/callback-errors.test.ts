/**
 * Application callbacks (key lookup, verifier, nonce store, context `setup`) that throw
 * something other than an Error, or answer null. Nest answers a thrown non-Error object with a
 * `statusCode` and `message` with that status and message, so the guard and the context
 * interceptor must hand Nest an Error; the handler must never run.
 */
import "reflect-metadata";
import { currentEncryptionContext } from "@kms/core";
import {
  createHmacSigner,
  createHmacVerifier,
  type MessageVerifier,
  type NonceStore,
  signRequest,
} from "@kms/http-signatures";
import { Controller, Get, type INestApplication, UseInterceptors } from "@nestjs/common";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterEach, describe, expect, it } from "vitest";
import {
  KmsContextInterceptor,
  type KmsContextOptions,
  KmsModule,
  RequireSignature,
  type SignaturePolicy,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const secret = Buffer.alloc(32, 0x4b);
const signer = createHmacSigner(secret, { keyId: "k" });
const handled: string[] = [];

/** Thrown by a key registry's HTTP client: not an Error, but shaped like an HTTP error. */
const REGISTRY_FAULT = { statusCode: 404, message: "no key k in registry http://10.0.0.5/keys" };

@Controller()
class OrdersController {
  @Get("signed")
  @RequireSignature()
  signed(): string {
    handled.push("signed");
    return "ran";
  }

  @Get("tenant")
  @UseInterceptors(KmsContextInterceptor)
  tenant(): unknown {
    handled.push("tenant");
    return { context: currentEncryptionContext() ?? null };
  }
}

let app: INestApplication | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

async function serve(options: {
  signature?: SignaturePolicy;
  context?: KmsContextOptions;
  mapKmsErrors?: boolean;
}): Promise<string> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        mapKmsErrors: options.mapKmsErrors ?? false,
        signature: { nonceStore: false, ...options.signature },
        ...(options.context !== undefined ? { context: options.context } : {}),
      }),
    ],
    controllers: [OrdersController],
  }).compile();
  app = moduleRef.createNestApplication({ logger: false });
  return listen(app);
}

async function getSigned(origin: string): Promise<request.Response> {
  const headers = await signRequest(
    { method: "GET", url: `${origin}/signed`, headers: {} },
    { signer, nonce: true },
  );
  return request(origin).get("/signed").set(headers);
}

function expectOpaque500(res: request.Response): void {
  expect(res.status, res.text).toBe(500);
  expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
  expect(JSON.parse(res.text)).toMatchObject({
    type: "https://kms.dev/problems/kms/internal",
    status: 500,
  });
}

const rejecting = (value: unknown): MessageVerifier => ({
  algorithm: "hmac-sha256",
  verify: () => Promise.reject(value),
});

describe("SignatureGuard when a callback throws a value that is not an Error", () => {
  it.each<[string, SignaturePolicy]>([
    ["keyLookup throws undefined", { keyLookup: () => throwing(undefined) }],
    ['keyLookup throws "route"', { keyLookup: () => throwing("route") }],
    ["keyLookup rejects with null", { keyLookup: () => Promise.reject(null) }],
    ['the verifier rejects with "route"', { keyLookup: () => rejecting("route") }],
    [
      "the nonce store rejects with undefined",
      {
        keyLookup: () => createHmacVerifier(secret),
        nonceStore: { checkAndStore: () => Promise.reject(undefined) } satisfies NonceStore,
      },
    ],
  ])("%s: an opaque 500 kms/internal, the handler never runs", async (_name, signature) => {
    const origin = await serve({ signature, mapKmsErrors: true });
    const before = handled.length;
    expectOpaque500(await getSigned(origin));
    expect(handled.length).toBe(before);
  });

  it("never answers with the status and message of an HTTP-error-shaped value", async () => {
    const origin = await serve({ signature: { keyLookup: () => throwing(REGISTRY_FAULT) } });
    const res = await getSigned(origin);
    expect(res.status).toBe(500);
    expect(res.text).not.toContain("registry");
    expect(handled).not.toContain("signed");
  });

  // The null itself is read in @kms/http-signatures (check `key`); this pins the type and answer.
  it("answers 401 unknown key when keyLookup returns null, as for undefined", async () => {
    const origin = await serve({ signature: { keyLookup: () => null } });
    const res = await getSigned(origin);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({ check: "key" });
  });
});

describe("KmsContextInterceptor when setup misbehaves", () => {
  it.each<[string, unknown]>([
    ["undefined", undefined],
    ['"route"', "route"],
    ["an HTTP-error-shaped value", REGISTRY_FAULT],
  ])("setup throwing %s: an opaque 500, the handler never runs", async (_name, thrown) => {
    const origin = await serve({ context: { setup: () => throwing(thrown) }, mapKmsErrors: true });
    const before = handled.length;
    const res = await request(origin).get("/tenant");
    expectOpaque500(res);
    expect(res.text).not.toContain("registry");
    expect(handled.length).toBe(before);
  });

  it("setup returning null refuses the request as undefined does (400 tenant-missing)", async () => {
    const origin = await serve({ context: { setup: () => null } });
    const before = handled.length;
    const res = await request(origin).get("/tenant");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
    });
    expect(handled.length).toBe(before);
  });

  it("setup returning null runs the handler without a context when required is false", async () => {
    const origin = await serve({ context: { setup: () => null, required: false } });
    const res = await request(origin).get("/tenant");
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ context: null });
  });
});

function throwing(value: unknown): never {
  throw value;
}
