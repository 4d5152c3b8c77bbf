/**
 * Several signature guards on one route: an app-wide `SignatureGuard` next to a controller's
 * subclass with its own keys, next to a guard of another `KmsModule`, or next to one built by
 * hand with other options. Each must verify with its own policy: the dedup that spares the
 * same check run twice (app-wide and by @RequireSignature, from one module) must not let an
 * acceptance under a laxer policy stand for a stricter one.
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
  Inject,
  Injectable,
  Module,
  Next,
  Post,
  UseGuards,
} from "@nestjs/common";
import { APP_GUARD, Reflector } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EffectiveSignaturePolicy,
  KMS_MODULE_OPTIONS,
  KmsModule,
  type KmsModuleOptions,
  KmsService,
  RequireSignature,
  SignatureGuard,
} from "../src/index.ts";
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

// The admin API: its routes take admin keys only, while the app's other guards know every key.
const adminSecret = Buffer.alloc(32, 0x61);
const admin = createHmacSigner(adminSecret, { keyId: "admin" });
const adminVerifier = createHmacVerifier(adminSecret);
const allKeys = new Map([...registry, ["admin", adminVerifier]]);
const adminOnly = (id: string) => (id === "admin" ? adminVerifier : undefined);
const shredded: string[] = [];

@Controller("admin")
@RequireSignature()
class AdminController {
  @Post("shred")
  shred(): { shredded: boolean } {
    shredded.push("shred");
    return { shredded: true };
  }
}

async function postShred(origin: string, signer: MessageSigner) {
  const headers = await signRequest(
    { method: "POST", url: `${origin}/admin/shred`, headers: {} },
    { signer, nonce: true },
  );
  return request(origin).post("/admin/shred").set(headers).send();
}

/** Admin-signed passes both guards; partner-signed is refused by the admin route's own check. */
async function expectAdminOnly(origin: string) {
  const before = shredded.length;
  const ok = await postShred(origin, admin);
  expect(ok.status, ok.text).toBe(201);
  expect(shredded.length).toBe(before + 1);
  const refused = await postShred(origin, partner);
  expect(refused.status, refused.text).toBe(401);
  expect(JSON.parse(refused.text)).toMatchObject({ check: "key" });
  expect(shredded.length).toBe(before + 1);
}

describe("an app-wide `new SignatureGuard(…, otherOptions)` next to the module's", () => {
  it("does not let its acceptance stand for a @RequireSignature route's stricter keys", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ signature: { keyLookup: adminOnly } })],
      controllers: [AdminController],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    // Same class, options of its own: e.g. a partner API's guard that knows every key.
    app.useGlobalGuards(
      new SignatureGuard(app.get(Reflector), app.get(KmsService), {
        signature: { keyLookup: (id) => allKeys.get(id) },
      }),
    );
    const origin = await listen(app);
    try {
      await expectAdminOnly(origin);
    } finally {
      await app.close();
    }
  });
});

@Module({
  imports: [KmsModule.forRoot({ isGlobal: false, signature: { keyLookup: adminOnly } })],
  controllers: [AdminController],
})
class AdminModule {}

describe("two KmsModules: a global one with APP_GUARD, a module's own non-global one", () => {
  it("verifies the module's routes with the module's keys after the app-wide guard", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({ signature: { keyLookup: (id) => allKeys.get(id) } }),
        AdminModule,
      ],
      providers: [{ provide: APP_GUARD, useClass: SignatureGuard }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const origin = await listen(app);
    try {
      await expectAdminOnly(origin);
    } finally {
      await app.close();
    }
  });
});

describe("two instances of one subclass, each with keys of its own", () => {
  const KEYS = Symbol("KEYS");

  @Injectable()
  class RegistryGuard extends SignatureGuard {
    readonly #keys: ReadonlyMap<string, MessageVerifier>;
    constructor(
      @Inject(Reflector) reflector: Reflector,
      @Inject(KmsService) kmsService: KmsService,
      @Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions,
      @Inject(KEYS) keys: ReadonlyMap<string, MessageVerifier>,
    ) {
      super(reflector, kmsService, options);
      this.#keys = keys;
    }
    protected override resolveKey(keyId: string): MessageVerifier | undefined {
      return this.#keys.get(keyId);
    }
  }

  @Controller("admin")
  @UseGuards(RegistryGuard)
  class RegistryAdminController {
    @Post("shred")
    shred(): { shredded: boolean } {
      shredded.push("shred");
      return { shredded: true };
    }
  }

  it("verifies with each instance's keys, not once per class", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({})],
      controllers: [RegistryAdminController],
      providers: [{ provide: KEYS, useValue: new Map([["admin", adminVerifier]]) }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    app.useGlobalGuards(
      new RegistryGuard(
        app.get(Reflector),
        app.get(KmsService),
        app.get<KmsModuleOptions>(KMS_MODULE_OPTIONS),
        allKeys,
      ),
    );
    const origin = await listen(app);
    try {
      await expectAdminOnly(origin);
    } finally {
      await app.close();
    }
  });
});

describe("the module's guard bound app-wide and by @RequireSignature", () => {
  it("verifies once: one key lookup per request, its nonce recorded once", async () => {
    const lookups: string[] = [];
    const nonces = new MemoryNonceStore();
    let stored = 0;
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          signature: {
            keyLookup: (id) => {
              lookups.push(id);
              return adminOnly(id);
            },
            nonceStore: {
              checkAndStore: (nonce, ttl) => {
                stored++;
                return nonces.checkAndStore(nonce, ttl);
              },
            },
          },
        }),
      ],
      controllers: [AdminController],
      providers: [{ provide: APP_GUARD, useClass: SignatureGuard }],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    const origin = await listen(app);
    try {
      const headers = await signRequest(
        { method: "POST", url: `${origin}/admin/shred`, headers: {} },
        { signer: admin, nonce: true },
      );
      const ok = await request(origin).post("/admin/shred").set(headers).send();
      expect(ok.status, ok.text).toBe(201);
      expect(lookups).toEqual(["admin"]);
      expect(stored).toBe(1);
      const replay = await request(origin).post("/admin/shred").set(headers).send();
      expect(replay.status, replay.text).toBe(401);
      expect(JSON.parse(replay.text)).toMatchObject({ check: "replay" });
    } finally {
      await app.close();
    }
  });
});

describe("a request a handler passes on with @Next() to another route", () => {
  /** Accepts any signature, and hands the request to the next route matching the path. */
  @Controller("relay")
  class RelayController {
    @Get()
    relay(@Next() next: () => void): void {
      handled.push("relay");
      next();
    }
  }

  /** Same path, stricter: the amount header must be covered. */
  @Controller("relay")
  class AmountController {
    @Get()
    @RequireSignature({ requiredComponents: ["@method", "@target-uri", "x-amount"] })
    amount(): string {
      handled.push("amount");
      return "amount";
    }
  }

  let relayApp: INestApplication;
  let relayOrigin: string;
  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ signature: { keyLookup: (id) => registry.get(id) } })],
      controllers: [RelayController, AmountController],
      providers: [{ provide: APP_GUARD, useClass: SignatureGuard }],
    }).compile();
    relayApp = moduleRef.createNestApplication({ logger: false });
    relayOrigin = await listen(relayApp);
  });
  afterAll(() => relayApp.close());

  it("is verified again under the next route's policy, not let through by the first's", async () => {
    const url = `${relayOrigin}/relay`;
    const uncovered = await signRequest(
      { method: "GET", url, headers: { "x-amount": "10" } },
      { signer: client, nonce: true },
    );
    handled.length = 0;
    const refused = await request(relayOrigin)
      .get("/relay")
      .set({ ...uncovered, "x-amount": "1000000" });
    expect(refused.status, refused.text).toBe(401);
    expect(JSON.parse(refused.text)).toMatchObject({ check: "components" });
    expect(handled).toEqual(["relay"]);

    const covered = await signRequest(
      { method: "GET", url, headers: { "x-amount": "10" } },
      { signer: client, nonce: true, components: ["@method", "@target-uri", "x-amount"] },
    );
    handled.length = 0;
    const ok = await request(relayOrigin)
      .get("/relay")
      .set({ ...covered, "x-amount": "10" });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.text).toBe("amount");
    expect(handled).toEqual(["relay", "amount"]);
  });
});
