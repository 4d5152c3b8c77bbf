/**
 * Several signature guards on one route: an app-wide `SignatureGuard` and a controller's
 * subclass with its own keys. Each guard class must verify with its own hooks; the dedup that
 * spares a guard bound twice (kms.module.test.ts: app-wide and by @RequireSignature) must not
 * let one class's acceptance stand for another's.
 */
import "reflect-metadata";
import {
  createHmacSigner,
  createHmacVerifier,
  type MessageSigner,
  type MessageVerifier,
  signRequest,
} from "@kms/http-signatures";
import { Controller, Get, type INestApplication, UseGuards } from "@nestjs/common";
import { APP_GUARD } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, SignatureGuard } from "../src/index.ts";
import { listen } from "./helpers.ts";

const clientSecret = Buffer.alloc(32, 0x63);
const partnerSecret = Buffer.alloc(32, 0x70);
const client = createHmacSigner(clientSecret, { keyId: "client-1" });
const partner = createHmacSigner(partnerSecret, { keyId: "partner" });
const handled: string[] = [];

/** The app's registry knows every key; partner routes accept partner keys only. */
const registry = new Map([
  ["client-1", createHmacVerifier(clientSecret)],
  ["partner", createHmacVerifier(partnerSecret)],
]);

class PartnerSignatureGuard extends SignatureGuard {
  protected override resolveKey(keyId: string): MessageVerifier | undefined {
    return keyId === "partner" ? registry.get(keyId) : undefined;
  }
}

@Controller("partner")
@UseGuards(PartnerSignatureGuard)
class PartnerController {
  @Get()
  receive(): string {
    handled.push("partner");
    return "partner only";
  }
}

let app: INestApplication;
let origin: string;

beforeAll(async () => {
  const moduleRef = await Test.createTestingModule({
    imports: [KmsModule.forRoot({ signature: { keyLookup: (id) => registry.get(id) } })],
    controllers: [PartnerController],
    providers: [PartnerSignatureGuard, { provide: APP_GUARD, useClass: SignatureGuard }],
  }).compile();
  app = moduleRef.createNestApplication();
  origin = await listen(app);
});
afterAll(() => app.close());

async function signedHeaders(path: string, signer: MessageSigner) {
  return signRequest(
    { method: "GET", url: `${origin}${path}`, headers: {} },
    { signer, nonce: true },
  );
}

describe("an app-wide SignatureGuard next to a controller's subclass", () => {
  it("runs the subclass's own key lookup after the app-wide guard accepted the request", async () => {
    const before = handled.length;
    const res = await request(origin)
      .get("/partner")
      .set(await signedHeaders("/partner", client));
    expect(res.status, res.text).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({ check: "key" });
    expect(handled.length).toBe(before);

    // A partner's request passes both guards: its nonce is not a replay to the second one …
    const headers = await signedHeaders("/partner", partner);
    const ok = await request(origin).get("/partner").set(headers);
    expect(ok.status, ok.text).toBe(200);
    // … but the same request sent again is.
    const replay = await request(origin).get("/partner").set(headers);
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.text)).toMatchObject({ check: "replay" });
  });
});
