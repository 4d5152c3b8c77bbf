/**
 * Signature guards other than the module's own on one route: an app-wide `SignatureGuard` next
 * to a subclass, or guards built by hand (`app.useGlobalGuards(new SignatureGuard(…))`,
 * `@UseGuards(new SignatureGuard(…))`). A request is verified once per check, the checks
 * compared by value (effective policy, KMS, nonce store, hooks), not by class or instance: an
 * equal check is not run again (one VerifyMac in the audit trail, the nonce recorded once). A
 * check that differs still runs, refuses what its own policy refuses, and does not take the
 * request's own nonce for a replay.
 */
import "reflect-metadata";
import { createKms, MemoryAuditSink } from "@kms/core";
import {
  createKmsSigner,
  createKmsVerifier,
  MemoryNonceStore,
  type NonceStore,
  signRequest,
  type VerificationResult,
} from "@kms/http-signatures";
import {
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Injectable,
  UnauthorizedException,
  UseGuards,
} from "@nestjs/common";
import { APP_GUARD, Reflector } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, describe, expect, it } from "vitest";
import {
  type EffectiveSignaturePolicy,
  KmsModule,
  type KmsModuleOptions,
  KmsService,
  SignatureGuard,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const sink = new MemoryAuditSink();
const kms = await createKms({ audit: sink });
const { keyId } = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
  .keyMetadata;
const verifier = createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" });
const signer = createKmsSigner({ kms, keyId, algorithm: "hmac-sha256", publishedKeyId: "partner" });
/** One function, so that policies naming it are equal by value. */
const keyLookup = (id: string) => (id === "partner" ? verifier : undefined);
const AMOUNT_COVERED = ["@method", "@target-uri", "x-amount"];

afterAll(() => kms.close());

/** A nonce store that counts the calls reaching it (with RedisNonceStore, round trips). */
class CountingNonceStore implements NonceStore {
  calls = 0;
  readonly #inner = new MemoryNonceStore();
  checkAndStore(nonce: string, ttlMs: number): Promise<boolean> {
    this.calls++;
    return this.#inner.checkAndStore(nonce, ttlMs);
  }
}

const handled: string[] = [];

interface Sent {
  readonly status: number;
  readonly check: unknown;
  /** The server's VerifyMac calls for this request (the client's own signing excluded). */
  readonly verifyMacs: number;
}

/** Sends `headers` (a signed request's) to `path`, with `x-amount: 10`. */
async function send(origin: string, path: string, headers: Record<string, string>): Promise<Sent> {
  const before = sink.events.length;
  const res = await request(origin)
    .get(path)
    .set({ ...headers, "x-amount": "10" });
  const verifyMacs = sink.events.slice(before).filter((e) => e.eventName === "VerifyMac").length;
  const check =
    res.status === 200 ? undefined : (JSON.parse(res.text) as { check?: unknown }).check;
  return { status: res.status, check, verifyMacs };
}

async function signed(
  origin: string,
  path: string,
  options: { nonce?: boolean; components?: string[] } = {},
): Promise<Record<string, string>> {
  return signRequest(
    { method: "GET", url: `${origin}${path}`, headers: { "x-amount": "10" } },
    {
      signer,
      nonce: options.nonce ?? true,
      ...(options.components === undefined ? {} : { components: options.components }),
    },
  );
}

async function start(
  options: KmsModuleOptions,
  controllers: NonNullable<Parameters<typeof Test.createTestingModule>[0]["controllers"]>,
  providers: NonNullable<Parameters<typeof Test.createTestingModule>[0]["providers"]> = [],
  globalGuards: (app: INestApplication) => SignatureGuard[] = () => [],
): Promise<{ app: INestApplication; origin: string }> {
  const moduleRef = await Test.createTestingModule({
    imports: [KmsModule.forRoot({ kms, closeOnDestroy: false, ...options })],
    controllers,
    providers,
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  app.useGlobalGuards(...globalGuards(app));
  return { app, origin: await listen(app) };
}

/** Changes how a refusal reads, not what is refused: its check is the module's. */
@Injectable()
class PlainRefusalGuard extends SignatureGuard {
  protected override rejection(failure: Extract<VerificationResult, { ok: false }>): Error {
    return new UnauthorizedException({ check: failure.check });
  }
}

/** Stricter than the module: the amount header must be signed. */
@Injectable()
class AmountGuard extends SignatureGuard {
  protected override policyFor(execution: ExecutionContext): EffectiveSignaturePolicy {
    return { ...super.policyFor(execution), requiredComponents: AMOUNT_COVERED };
  }
}

@Controller("orders")
@UseGuards(PlainRefusalGuard)
class OrdersController {
  @Get()
  list(): string {
    handled.push("orders");
    return "orders";
  }
}

@Controller("payments")
@UseGuards(AmountGuard)
class PaymentsController {
  @Get()
  pay(): string {
    handled.push("payments");
    return "paid";
  }
}

describe("an app-wide SignatureGuard next to a subclass", () => {
  it.each([
    ["with a nonce store, a request with a nonce", true],
    ["with replay protection off, a request without a nonce", false],
  ])("verifies once when the subclass's check is the same: %s", async (_, withNonce) => {
    const store = new CountingNonceStore();
    const { app, origin } = await start(
      { signature: { keyLookup, nonceStore: withNonce ? store : false } },
      [OrdersController],
      [PlainRefusalGuard, { provide: APP_GUARD, useClass: SignatureGuard }],
    );
    try {
      const headers = await signed(origin, "/orders", { nonce: withNonce });
      handled.length = 0;
      const ok = await send(origin, "/orders", headers);
      expect(ok).toEqual({ status: 200, check: undefined, verifyMacs: 1 });
      expect(handled).toEqual(["orders"]);
      if (!withNonce) return;
      expect(store.calls).toBe(1);
      const replay = await send(origin, "/orders", headers);
      expect(replay).toMatchObject({ status: 401, check: "replay" });
      // Without a nonce the first guard refuses it; the handler never runs.
      const unprotected = await send(
        origin,
        "/orders",
        await signed(origin, "/orders", { nonce: false }),
      );
      expect(unprotected).toMatchObject({ status: 401, check: "nonce" });
      expect(handled).toEqual(["orders"]);
    } finally {
      await app.close();
    }
  });

  it("runs a stricter subclass's own checks, without taking the request's nonce for a replay", async () => {
    const store = new CountingNonceStore();
    const { app, origin } = await start(
      { signature: { keyLookup, nonceStore: store } },
      [PaymentsController],
      [AmountGuard, { provide: APP_GUARD, useClass: SignatureGuard }],
    );
    try {
      handled.length = 0;
      // Accepted by the app-wide guard, refused by the subclass: the amount is not signed.
      const uncovered = await send(origin, "/payments", await signed(origin, "/payments"));
      expect(uncovered).toMatchObject({ status: 401, check: "components" });
      expect(handled).toEqual([]);

      const headers = await signed(origin, "/payments", { components: AMOUNT_COVERED });
      store.calls = 0;
      const ok = await send(origin, "/payments", headers);
      expect(ok).toEqual({ status: 200, check: undefined, verifyMacs: 2 });
      expect(store.calls).toBe(1);
      expect(handled).toEqual(["payments"]);
      expect(await send(origin, "/payments", headers)).toMatchObject({
        status: 401,
        check: "replay",
      });
    } finally {
      await app.close();
    }
  });
});

// Guards built by hand: for `@UseGuards(instance)` they exist before any module does.
const handBuilt = new KmsService(kms, { kms });
const partnerStore = new CountingNonceStore();
/** A fresh options object on each call, equal in value every time. */
const partnerOptions = (extra: KmsModuleOptions["signature"] = {}): KmsModuleOptions => ({
  signature: { keyLookup, nonceStore: partnerStore, ...extra },
});

@Controller("reports")
class ReportsController {
  @Get()
  @UseGuards(new SignatureGuard(new Reflector(), handBuilt, partnerOptions(), partnerStore))
  list(): string {
    handled.push("reports");
    return "reports";
  }

  @Get("amounts")
  @UseGuards(
    new SignatureGuard(
      new Reflector(),
      handBuilt,
      partnerOptions({ requiredComponents: AMOUNT_COVERED }),
      partnerStore,
    ),
  )
  amounts(): string {
    handled.push("amounts");
    return "amounts";
  }
}

describe("two SignatureGuards built with new: app-wide, and in @UseGuards on a route", () => {
  let app: INestApplication;
  let origin: string;
  async function startReports() {
    ({ app, origin } = await start({}, [ReportsController], [], (nest) => [
      new SignatureGuard(nest.get(Reflector), nest.get(KmsService), partnerOptions(), partnerStore),
    ]));
  }

  it("verifies once when their options are equal in value (distinct objects)", async () => {
    await startReports();
    try {
      const headers = await signed(origin, "/reports");
      partnerStore.calls = 0;
      handled.length = 0;
      expect(await send(origin, "/reports", headers)).toEqual({
        status: 200,
        check: undefined,
        verifyMacs: 1,
      });
      expect(partnerStore.calls).toBe(1);
      expect(await send(origin, "/reports", headers)).toMatchObject({
        status: 401,
        check: "replay",
      });
      expect(handled).toEqual(["reports"]);
    } finally {
      await app.close();
    }
  });

  it("verifies again with the route's stricter options, the nonce recorded once", async () => {
    await startReports();
    try {
      handled.length = 0;
      const uncovered = await send(
        origin,
        "/reports/amounts",
        await signed(origin, "/reports/amounts"),
      );
      expect(uncovered).toMatchObject({ status: 401, check: "components", verifyMacs: 1 });
      expect(handled).toEqual([]);
      const headers = await signed(origin, "/reports/amounts", { components: AMOUNT_COVERED });
      partnerStore.calls = 0;
      expect(await send(origin, "/reports/amounts", headers)).toEqual({
        status: 200,
        check: undefined,
        verifyMacs: 2,
      });
      expect(partnerStore.calls).toBe(1);
      expect(handled).toEqual(["amounts"]);
    } finally {
      await app.close();
    }
  });
});

// Built without a nonce store (three arguments), from one options object whose signatures
// need cover only the method: one signature verifies on every GET route.
const methodOnly: KmsModuleOptions = { signature: { keyLookup, requiredComponents: ["@method"] } };
const first = new SignatureGuard(new Reflector(), handBuilt, methodOnly);
const second = new SignatureGuard(new Reflector(), handBuilt, methodOnly);

@Controller("archive")
class ArchiveController {
  @Get("both")
  @UseGuards(first, second)
  both(): string {
    return "both";
  }

  @Get("second")
  @UseGuards(second)
  only(): string {
    return "second";
  }
}

describe("two SignatureGuards built without a nonce store, alike", () => {
  it("share a replay domain: a request one accepted is a replay to the other's routes", async () => {
    const { app, origin } = await start({}, [ArchiveController]);
    try {
      const headers = await signed(origin, "/archive/both", { components: ["@method"] });
      expect(await send(origin, "/archive/both", headers)).toMatchObject({
        status: 200,
        verifyMacs: 1,
      });
      // Sent again to a route that only the second guards: it was recorded for the second too.
      expect(await send(origin, "/archive/second", headers)).toMatchObject({
        status: 401,
        check: "replay",
      });
    } finally {
      await app.close();
    }
  });
});
