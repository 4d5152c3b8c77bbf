/**
 * Request bodies sent with a Content-Encoding. Content-Digest covers the coded bytes (RFC 9530
 * §2), but Nest's parsers keep `rawBody` after undoing the coding: that copy is not the body as
 * sent, and a digest of the decoded content must not verify against it.
 */
import "reflect-metadata";
import { randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
} from "@kms/http-signatures";
import {
  Body,
  Controller,
  type INestApplication,
  type NestApplicationOptions,
  Post,
  Req,
  UseGuards,
} from "@nestjs/common";
import { Test } from "@nestjs/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, RequireSignature, SignatureGuard } from "../src/index.ts";
import { listen } from "./helpers.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "k" });
const JSON_BODY = Buffer.from('{"amount":1000}');

class SecondGuard extends SignatureGuard {}

@Controller()
@RequireSignature({ contentDigest: "required" })
class InboxController {
  readonly received: { body: unknown; rawBody: Buffer | undefined }[] = [];

  @Post("in")
  in(@Body() body: unknown, @Req() req: { rawBody?: Buffer }): { ok: true } {
    this.received.push({ body, rawBody: req.rawBody });
    return { ok: true };
  }

  // A second guard class verifies again, from the bytes the first one read.
  @Post("in-twice")
  @UseGuards(SecondGuard)
  inTwice(): { ok: true } {
    return { ok: true };
  }
}

async function serve(options: NestApplicationOptions): Promise<[INestApplication, string]> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        signature: { keyLookup: (id) => (id === "k" ? createHmacVerifier(secret) : undefined) },
      }),
    ],
    controllers: [InboxController],
    providers: [SecondGuard],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false, ...options });
  return [app, await listen(app)];
}

/** POSTs `sent` with the given coding and a Content-Digest over `digested`, signed. */
async function post(
  origin: string,
  sent: Buffer,
  digested: Buffer,
  fields: Record<string, string>,
  path = "/in",
): Promise<{ status: number; problem: { check?: string; detail?: string } }> {
  const url = `${origin}${path}`;
  const headers = { ...fields, "content-digest": computeContentDigest(digested) };
  const added = await signRequest(
    { method: "POST", url, headers, body: sent },
    { signer, nonce: true, digest: false },
  );
  const res = await fetch(url, { method: "POST", headers: { ...headers, ...added }, body: sent });
  const text = await res.text();
  return { status: res.status, problem: res.status === 201 ? {} : JSON.parse(text) };
}

const gzipJson = { "content-type": "application/json", "content-encoding": "gzip" };

describe("rawBody: true with a coded request body", () => {
  let app: INestApplication;
  let origin: string;
  beforeAll(async () => {
    [app, origin] = await serve({ rawBody: true });
  });
  afterAll(() => app.close());

  it("refuses a digest of the decoded content, which Nest's rawBody holds", async () => {
    const { status, problem } = await post(origin, gzipSync(JSON_BODY), JSON_BODY, gzipJson);
    expect(status).toBe(401);
    expect(problem).toMatchObject({
      check: "content-digest",
      detail: "the raw body is needed to check Content-Digest",
    });
    expect(app.get(InboxController).received).toEqual([]);
  });

  it("cannot check a digest of the coded bytes either: they are gone", async () => {
    const gz = gzipSync(JSON_BODY);
    const { status, problem } = await post(origin, gz, gz, gzipJson);
    expect(status).toBe(401);
    expect(problem.check).toBe("content-digest");
  });

  it("still uses rawBody for an identity coding", async () => {
    const fields = { "content-type": "application/json", "content-encoding": "identity" };
    const { status } = await post(origin, JSON_BODY, JSON_BODY, fields);
    expect(status).toBe(201);
  });

  it("verifies a coded body no parser consumed (the guard reads the bytes as sent)", async () => {
    const gz = gzipSync(Buffer.from("plain text"));
    const fields = { "content-type": "text/plain", "content-encoding": "gzip" };
    expect((await post(origin, gz, gz, fields)).status).toBe(201);
    expect((await post(origin, gz, gz, fields, "/in-twice")).status).toBe(201);
  });
});

describe("bodyParser: false (the README's way to verify coded bodies)", () => {
  let app: INestApplication;
  let origin: string;
  beforeAll(async () => {
    [app, origin] = await serve({ bodyParser: false });
  });
  afterAll(() => app.close());

  it("verifies the digest of the coded bytes, left in rawBody for the handler to decode", async () => {
    const gz = gzipSync(JSON_BODY);
    expect((await post(origin, gz, gz, gzipJson)).status).toBe(201);
    const [received] = app.get(InboxController).received;
    expect(received?.body).toBeUndefined();
    expect(JSON.parse(gunzipSync(received?.rawBody ?? Buffer.alloc(0)).toString())).toEqual({
      amount: 1000,
    });
  });
});
