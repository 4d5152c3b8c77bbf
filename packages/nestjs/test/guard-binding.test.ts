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
  MemoryNonceStore,
  type MessageSigner,
  type MessageVerifier,
  signRequest,
} from "@kms/http-signatures";
import {
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  UseGuards,
} from "@nestjs/common";
import { APP_GUARD } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EffectiveSignaturePolicy, KmsModule, SignatureGuard } from "../src/index.ts";
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

describe("a subclass whose nonce store is not the app-wide guard's", () => {
  /** The app-wide guard's store: this instance's memory, empty again on another instance. */
  let instanceStore = new MemoryNonceStore();
  /** The subclass's store, shared by every instance (as a Redis store would be). */
  const sharedStore = new MemoryNonceStore();

  class SharedNonceGuard extends SignatureGuard {
    protected override policyFor(execution: ExecutionContext): EffectiveSignaturePolicy {
      return { ...super.policyFor(execution), nonceStore: sharedStore };
    }
  }

  @Controller("shared")
  @UseGuards(SharedNonceGuard)
  class SharedController {
    @Get()
    receive(): string {
      return "shared";
    }
  }

  let sharedApp: INestApplication;
  let sharedOrigin: string;
  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          signature: {
            keyLookup: (id) => registry.get(id),
            nonceStore: { checkAndStore: (nonce, ttl) => instanceStore.checkAndStore(nonce, ttl) },
          },
        }),
      ],
      controllers: [SharedController],
      providers: [SharedNonceGuard, { provide: APP_GUARD, useClass: SignatureGuard }],
    }).compile();
    sharedApp = moduleRef.createNestApplication();
    sharedOrigin = await listen(sharedApp);
  });
  afterAll(() => sharedApp.close());

  it("records the request's nonce in the subclass's own store, so a replay elsewhere meets it", async () => {
    const headers = await signRequest(
      { method: "GET", url: `${sharedOrigin}/shared`, headers: {} },
      { signer: client, nonce: true },
    );
    const ok = await request(sharedOrigin).get("/shared").set(headers);
    expect(ok.status, ok.text).toBe(200);
    expect(sharedStore.size).toBe(1);
    // Replayed to another instance: its app-wide guard has not seen the nonce, the shared store has.
    instanceStore = new MemoryNonceStore();
    const replay = await request(sharedOrigin).get("/shared").set(headers);
    expect(replay.status, replay.text).toBe(401);
    expect(JSON.parse(replay.text)).toMatchObject({ check: "replay" });
  });
});
