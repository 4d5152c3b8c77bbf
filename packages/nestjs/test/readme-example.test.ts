// The README example, run as written (plus a client), so the documentation cannot rot.
import "reflect-metadata";
import { createKms, currentEncryptionContext, type Kms } from "@kms/core";
import {
  createKmsSigner,
  createKmsVerifier,
  createSignedFetch,
  verifyMessage,
} from "@kms/http-signatures";
import { readmeDrift } from "@kms/tooling/readme";
import { Body, Controller, type INestApplication, Inject, Module, Post } from "@nestjs/common";
import { APP_INTERCEPTOR, NestFactory } from "@nestjs/core";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  EncryptionContext,
  KmsContextInterceptor,
  KmsModule,
  KmsService,
  RequireSignature,
  SignResponse,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

let hmacKeyId = "";
let sharedKms: Kms;

@Controller("orders")
class OrdersController {
  constructor(@Inject(KmsService) private readonly kms: KmsService) {}

  @Post()
  @RequireSignature({ requiredComponents: ["@method", "@target-uri"], contentDigest: "required" })
  @SignResponse()
  async create(@Body() body: { note: string }, @EncryptionContext() context: object) {
    const { ciphertextBlob } = await this.kms.kms.encrypt({
      keyId: "alias/orders",
      plaintext: new TextEncoder().encode(body.note),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    return { stored: ciphertextBlob.length, context };
  }
}

@Module({
  imports: [
    KmsModule.forRootAsync({
      mapKmsErrors: true,
      useFactory: async () => {
        const kms = await createKms();
        const { keyId } = (
          await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
        ).keyMetadata;
        const orders = (await kms.createKey({})).keyMetadata.keyId;
        await kms.createAlias({ aliasName: "alias/orders", targetKeyId: orders });
        sharedKms = kms;
        hmacKeyId = keyId;
        return {
          kms,
          closeOnDestroy: true,
          signature: {
            keyLookup: (id, { kms }) =>
              id === "partner-a"
                ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" })
                : undefined,
          },
          responseSigning: {
            signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }),
          },
        };
      },
    }),
  ],
  controllers: [OrdersController],
  providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
})
class AppModule {}

let app: INestApplication;
let origin: string;

beforeAll(async () => {
  app = await NestFactory.create(AppModule, { rawBody: true, logger: false });
  origin = await listen(app);
});
afterAll(() => app.close());

it("runs the README example end to end with a signing client", async () => {
  let sentHeaders = new Headers();
  const signedFetch = createSignedFetch({
    signer: createKmsSigner({
      kms: sharedKms,
      keyId: hmacKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner-a",
    }),
    nonce: true,
    fetch: (input, init) => {
      sentHeaders = new Headers(init?.headers);
      return fetch(input, init);
    },
  });
  const url = `${origin}/orders`;
  const init = {
    method: "POST",
    headers: { "content-type": "application/json", "x-tenant-id": "acme" },
    body: '{"note":"hi"}',
  };
  const res = await signedFetch(url, init);
  const text = await res.text();
  expect(res.status).toBe(201);
  expect(JSON.parse(text)).toMatchObject({ context: { tenant: "acme" } });

  // The response verifies with the server's key, bound to the request that was sent.
  sentHeaders.set("host", new URL(url).host);
  const response = {
    status: res.status,
    headers: res.headers,
    body: new TextEncoder().encode(text),
  };
  const policy = {
    keyLookup: () =>
      createKmsVerifier({ kms: sharedKms, keyId: hmacKeyId, algorithm: "hmac-sha256" }),
    contentDigest: "required" as const,
    requiredComponents: [{ component: "signature", key: "sig1", req: true }],
  };
  expect(
    await verifyMessage(response, policy, { method: "POST", url, headers: sentHeaders }),
  ).toMatchObject({
    ok: true,
  });

  // An unsigned request is refused before the handler.
  const unsigned = await fetch(url, init);
  expect(unsigned.status).toBe(401);
  expect(unsigned.headers.get("content-type")).toMatch(/^application\/problem\+json/);
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/nestjs",
    blocks: 1,
    adapted: [
      // Nest's logger off, and a free loopback port (test/helpers.ts) instead of 3000.
      "const app = await NestFactory.create(AppModule, { rawBody: true });",
      "await app.listen(3000);",
    ],
  });
  expect(drift).toEqual([]);
});
