/**
 * Application callbacks that throw something other than an Error. Express's router reads a
 * falsy value passed to `next` as success and `"route"` / `"router"` as routing instructions,
 * so the middleware must hand the error handler an Error, never let the handler run.
 */
import { createKms } from "@kms/core";
import {
  createHmacSigner,
  createKmsVerifier,
  type MessageVerifier,
  signRequest,
} from "@kms/http-signatures";
import express, { type NextFunction, type Request, type Response } from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { kmsContext, verifySignature } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const secret = Buffer.alloc(32, 0x4b);
const signer = createHmacSigner(secret, { keyId: "k" });

/** An app whose handler reports that it ran, and whose error handler reports what it got. */
async function answerOf(middleware: express.RequestHandler, headers: Record<string, string>) {
  const app = express();
  app.use(middleware);
  app.get("/orders", (_req, res) => {
    res.json({ handled: true });
  });
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const err = error as { name?: unknown; code?: unknown; cause?: unknown };
    res.status(500).json({
      error: error instanceof Error,
      name: err?.name,
      code: err?.code,
      cause: String(err?.cause),
    });
  });
  const { server, origin } = await listen(app);
  try {
    const res = await request(origin).get("/orders").set(headers);
    return { status: res.status, body: res.body as Record<string, unknown> };
  } finally {
    await close(server);
  }
}

async function signedHeaders(): Promise<Record<string, string>> {
  return signRequest(
    { method: "GET", url: "http://127.0.0.1/orders", headers: {} },
    // What verifySignature requires by default; the key lookup runs before the base is compared.
    { signer, components: ["@method", "@target-uri"] },
  );
}

const rejecting = (value: unknown): MessageVerifier => ({
  algorithm: "hmac-sha256",
  verify: () => Promise.reject(value),
});

describe("verifySignature when a callback throws a value that is not an Error", () => {
  it.each<[string, VerifySignatureLookup]>([
    ["keyLookup throws undefined", () => throwing(undefined)],
    ["keyLookup throws null", () => throwing(null)],
    ['keyLookup throws "route"', () => throwing("route")],
    ['keyLookup throws "router"', () => throwing("router")],
    ['keyLookup rejects with "route"', () => Promise.reject("route")],
    ['the verifier rejects with "route"', () => rejecting("route")],
  ])(
    "%s: the error handler gets a KmsInternalError, the handler never runs",
    async (_name, keyLookup) => {
      const answer = await answerOf(verifySignature({ keyLookup }), await signedHeaders());
      expect(answer.status).toBe(500);
      expect(answer.body).toMatchObject({
        error: true,
        name: "KmsInternalError",
        code: "KMSInternalException",
      });
    },
  );

  it("passes an Error on unchanged", async () => {
    const answer = await answerOf(
      verifySignature({ keyLookup: () => throwing(new RangeError("store down")) }),
      await signedHeaders(),
    );
    expect(answer).toEqual({
      status: 500,
      body: { error: true, name: "RangeError", cause: "undefined" },
    });
  });

  // The null itself is read in @kms/http-signatures (check `key`); this pins the Express answer.
  it("answers 401 unknown key when keyLookup returns null, as for undefined", async () => {
    const answer = await answerOf(
      verifySignature({ keyLookup: () => null }),
      await signedHeaders(),
    );
    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({ check: "key", detail: "keyid is not a known key" });
  });
});

describe("verifySignature when the KMS refuses the server's own verification key", () => {
  // A disabled or deleted verification key is the server's fault: answered as the KMS error it
  // is, kmsErrorHandler would tell the client 409 "a key this request needs is disabled".
  it("hands the error handler an internal error with the KMS error as its cause", async () => {
    const kms = await createKms();
    try {
      const { keyId } = (
        await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
      ).keyMetadata;
      await kms.disableKey({ keyId });
      const verifier = createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" });
      const answer = await answerOf(
        verifySignature({ keyLookup: () => verifier }),
        await signedHeaders(),
      );
      expect(answer).toEqual({
        status: 500,
        body: {
          error: true,
          name: "KmsInternalError",
          code: "KMSInternalException",
          cause: expect.stringContaining("DisabledError"),
        },
      });
    } finally {
      await kms.close();
    }
  });
});

describe("kmsContext when resolve misbehaves", () => {
  it.each<[string, unknown]>([
    ["undefined", undefined],
    ['"route"', "route"],
  ])(
    "resolve throwing %s reaches the error handler, the handler never runs",
    async (_name, thrown) => {
      const answer = await answerOf(kmsContext({ resolve: () => throwing(thrown) }), {});
      expect(answer.status).toBe(500);
      expect(answer.body).toMatchObject({ error: true, name: "KmsInternalError" });
    },
  );

  it("resolve returning null refuses the request as undefined does (400 tenant-missing)", async () => {
    const answer = await answerOf(kmsContext({ resolve: () => null }), {});
    expect(answer.status).toBe(400);
    expect(answer.body).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
      status: 400,
    });
  });
});

type VerifySignatureLookup = Parameters<typeof verifySignature>[0]["keyLookup"];

function throwing(value: unknown): never {
  throw value;
}
