/**
 * A guard built without the module's nonce store still refuses replays. The guard builds a policy
 * per request, and a policy naming no store got @kms/http-signatures' default one, made fresh for
 * each policy object: it remembered nothing, so every replay passed. That happened to a guard
 * built by hand for `app.useGlobalGuards(new SignatureGuard(…))`, and to a subclass whose own
 * constructor passes its parent three arguments (the nonce store is an optional fourth).
 */
import "reflect-metadata";
import { createHmacSigner, createHmacVerifier, signRequest } from "@kms/http-signatures";
import { Controller, Get, Inject, Injectable, type Type, UseGuards } from "@nestjs/common";
import { Reflector } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { describe, expect, it } from "vitest";
import {
  KMS_MODULE_OPTIONS,
  KmsModule,
  type KmsModuleOptions,
  KmsService,
  SignatureGuard,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const secret = Buffer.alloc(32, 0x6b);
const signer = createHmacSigner(secret, { keyId: "client-1" });
const verifier = createHmacVerifier(secret);

/** A subclass with a constructor of its own, as one adding a dependency would have. */
@Injectable()
class AuditedSignatureGuard extends SignatureGuard {
  constructor(
    @Inject(Reflector) reflector: Reflector,
    @Inject(KmsService) kmsService: KmsService,
    @Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions,
  ) {
    super(reflector, kmsService, options);
  }
}

@Controller("audited")
@UseGuards(AuditedSignatureGuard)
class AuditedController {
  @Get()
  receive(): string {
    return "audited";
  }
}

@Controller("global")
class GlobalController {
  @Get()
  receive(): string {
    return "global";
  }
}

async function start(controller: Type, global: boolean) {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        signature: { keyLookup: (id) => (id === "client-1" ? verifier : undefined) },
      }),
    ],
    controllers: [controller],
    providers: [AuditedSignatureGuard],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  if (global) {
    app.useGlobalGuards(
      new SignatureGuard(app.get(Reflector), app.get(KmsService), app.get(KMS_MODULE_OPTIONS)),
    );
  }
  return { app, origin: await listen(app) };
}

describe("a SignatureGuard built without the module's nonce store", () => {
  it.each([
    ["a subclass passing three arguments", AuditedController, false, "/audited"],
    ["new SignatureGuard(...) in useGlobalGuards", GlobalController, true, "/global"],
  ] as const)("refuses a replay: %s", async (_, controller, global, path) => {
    const { app, origin } = await start(controller, global);
    try {
      const headers = await signRequest(
        { method: "GET", url: `${origin}${path}`, headers: {} },
        { signer, nonce: true },
      );
      const first = await request(origin).get(path).set(headers);
      expect(first.status, first.text).toBe(200);
      const replay = await request(origin).get(path).set(headers);
      expect(replay.status, replay.text).toBe(401);
      expect(JSON.parse(replay.text)).toMatchObject({ check: "replay" });
      // A fresh nonce still passes: the store is the guard's, kept across requests.
      const next = await signRequest(
        { method: "GET", url: `${origin}${path}`, headers: {} },
        { signer, nonce: true },
      );
      expect((await request(origin).get(path).set(next)).status).toBe(200);
    } finally {
      await app.close();
    }
  });
});
