import "reflect-metadata";
import { createKms, type Kms, type KmsLike, UnsupportedOperationError } from "@kms/core";
import { createKmsSigner, createKmsVerifier, signRequest } from "@kms/http-signatures";
import { Controller, type INestApplication, Module, Post } from "@nestjs/common";
import { APP_GUARD } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { describe, expect, it, vi } from "vitest";
import {
  KMS_CLIENT,
  KmsModule,
  type KmsModuleOptions,
  KmsService,
  RequireSignature,
  SignatureGuard,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

/** A config module like @nestjs/config: the KMS settings come from an injected provider. */
const APP_CONFIG = "APP_CONFIG";
interface AppConfig {
  readonly partnerKeyId: string;
}
@Module({
  providers: [{ provide: APP_CONFIG, useValue: { partnerKeyId: "partner-a" } }],
  exports: [APP_CONFIG],
})
class ConfigModule {}

@Controller("hooks")
class HooksController {
  calls = 0;
  @Post()
  @RequireSignature()
  receive(): string {
    this.calls++;
    return "received";
  }
}

@Controller("open")
class OpenController {
  @Post()
  open(): string {
    return "open";
  }
}

describe("KmsModule.forRootAsync", () => {
  it("builds the options from an injected config, with a KMS HMAC key for signatures", async () => {
    let created: Kms | undefined;
    let hmacKeyId = "";
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRootAsync({
          imports: [ConfigModule],
          inject: [APP_CONFIG],
          useFactory: async (config: AppConfig): Promise<KmsModuleOptions> => {
            created = await createKms();
            hmacKeyId = (
              await created.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
            ).keyMetadata.keyId;
            return {
              kms: created,
              closeOnDestroy: true,
              signature: {
                keyLookup: (id, { kms }) =>
                  id === config.partnerKeyId
                    ? createKmsVerifier({ kms, keyId: hmacKeyId, algorithm: "hmac-sha256" })
                    : undefined,
                requiredComponents: ["@method", "@target-uri"],
              },
            };
          },
        }),
      ],
      controllers: [HooksController],
    }).compile();
    const app = moduleRef.createNestApplication({ rawBody: true });
    const origin = await listen(app);
    try {
      const service = app.get(KmsService);
      expect(service.kms).toBe(created);
      expect(service.core).toBe(created);
      expect(app.get<KmsLike>(KMS_CLIENT)).toBe(created);

      const url = `${origin}/hooks`;
      const signer = createKmsSigner({
        kms: created!,
        keyId: hmacKeyId,
        algorithm: "hmac-sha256",
        publishedKeyId: "partner-a",
      });
      const headers = await signRequest(
        { method: "POST", url, headers: { "content-type": "application/json" }, body: "{}" },
        { signer, nonce: true },
      );
      const ok = await request(origin)
        .post("/hooks")
        .set({ "content-type": "application/json", ...headers })
        .send("{}");
      expect(ok.status).toBe(201);
      expect(app.get(HooksController).calls).toBe(1);

      const wrongKey = signRequest(
        { method: "POST", url, headers: { "content-type": "application/json" }, body: "{}" },
        {
          signer: createKmsSigner({
            kms: created!,
            keyId: hmacKeyId,
            algorithm: "hmac-sha256",
            publishedKeyId: "partner-b",
          }),
          nonce: true,
        },
      );
      const refused = await request(origin)
        .post("/hooks")
        .set({ "content-type": "application/json", ...(await wrongKey) })
        .send("{}");
      expect(refused.status).toBe(401);
      expect(JSON.parse(refused.text).check).toBe("key");
      expect(app.get(HooksController).calls).toBe(1);
    } finally {
      const close = vi.spyOn(created!, "close");
      await app.close();
      expect(close).toHaveBeenCalledOnce();
    }
  });
});

describe("KmsModule.forRoot", () => {
  it("creates an in-memory Kms when none is given, and closes it on shutdown", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({})],
    }).compile();
    const service = moduleRef.get(KmsService);
    const kms = service.core;
    const key = await kms.createKey({});
    const { ciphertextBlob } = await kms.encrypt({
      keyId: key.keyMetadata.keyId,
      plaintext: new Uint8Array([1, 2, 3]),
    });
    expect(ciphertextBlob.length).toBeGreaterThan(3);
    const close = vi.spyOn(kms, "close");
    await moduleRef.close();
    expect(close).toHaveBeenCalledOnce();
  });

  it("leaves a passed-in KMS open (its owner closes it) and accepts any KmsLike", async () => {
    const close = vi.fn();
    const fake = { close } as unknown as KmsLike;
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({ kms: fake })],
    }).compile();
    const service = moduleRef.get(KmsService);
    expect(service.kms).toBe(fake);
    expect(() => service.core).toThrow(UnsupportedOperationError);
    await moduleRef.close();
    expect(close).not.toHaveBeenCalled();
  });

  it("verifies once when the guard is bound app-wide and by @RequireSignature", async () => {
    const kms = await createKms();
    const hmac = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          signature: {
            keyLookup: (id, ctx) =>
              id === hmac
                ? createKmsVerifier({ kms: ctx.kms, keyId: hmac, algorithm: "hmac-sha256" })
                : undefined,
          },
        }),
      ],
      controllers: [HooksController, OpenController],
      providers: [{ provide: APP_GUARD, useClass: SignatureGuard }],
    }).compile();
    const app = moduleRef.createNestApplication({ rawBody: true });
    const origin = await listen(app);
    try {
      const signer = createKmsSigner({ kms, keyId: hmac, algorithm: "hmac-sha256" });
      const headers = await signRequest(
        { method: "POST", url: `${origin}/hooks`, headers: {} },
        { signer, nonce: true },
      );
      const res = await request(origin).post("/hooks").set(headers).send();
      expect(res.status).toBe(201);
      // App-wide: an undecorated route is verified too.
      const open = await request(origin).post("/open").send();
      expect(open.status).toBe(401);
      expect(JSON.parse(open.text).check).toBe("signature-missing");
    } finally {
      await app.close();
      await kms.close();
    }
  });

  it("fails loudly (500, not 401) when no keyLookup is configured", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [KmsModule.forRoot({})],
      controllers: [HooksController],
    }).compile();
    const app = moduleRef.createNestApplication({ rawBody: true, logger: false });
    const origin = await listen(app);
    try {
      const signer = {
        algorithm: "hmac-sha256" as const,
        keyId: "k",
        sign: async () => new Uint8Array(32),
      };
      const headers = await signRequest(
        { method: "POST", url: `${origin}/hooks`, headers: {} },
        { signer, nonce: true },
      );
      const res = await request(origin).post("/hooks").set(headers).send();
      expect(res.status).toBe(500);
    } finally {
      await app.close();
    }
  });
});

describe("SignatureGuard failure modes", () => {
  async function appWith(
    kms: Kms,
    keyId: string,
    rawBody: boolean,
  ): Promise<{ app: INestApplication; origin: string }> {
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          signature: {
            keyLookup: (id, ctx) =>
              id === keyId
                ? createKmsVerifier({ kms: ctx.kms, keyId, algorithm: "hmac-sha256" })
                : undefined,
          },
        }),
      ],
      controllers: [HooksController],
    }).compile();
    const app = moduleRef.createNestApplication({ rawBody, logger: false });
    return { app, origin: await listen(app) };
  }

  it("reports a KMS fault during verification as a server error, never as a bad signature", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const { app, origin } = await appWith(kms, keyId, true);
    try {
      const signer = createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" });
      const headers = await signRequest(
        { method: "POST", url: `${origin}/hooks`, headers: {} },
        { signer, nonce: true },
      );
      await kms.disableKey({ keyId });
      const res = await request(origin).post("/hooks").set(headers).send();
      expect(res.status).toBe(500);
      expect(app.get(HooksController).calls).toBe(0);
    } finally {
      await app.close();
      await kms.close();
    }
  });

  it("refuses (400) a body Nest parsed without keeping the raw bytes", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const { app, origin } = await appWith(kms, keyId, false);
    try {
      const url = `${origin}/hooks`;
      const body = '{"a":1}';
      const headers = await signRequest(
        { method: "POST", url, headers: { "content-type": "application/json" }, body },
        { signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }), nonce: true },
      );
      const res = await request(origin)
        .post("/hooks")
        .set({ "content-type": "application/json", ...headers })
        .send(body);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text)).toMatchObject({
        type: "https://kms.dev/problems/signature/body",
      });
      expect(JSON.parse(res.text).detail).toContain("rawBody: true");
      expect(app.get(HooksController).calls).toBe(0);
    } finally {
      await app.close();
      await kms.close();
    }
  });
});
