// `tenantHeader` behind `SignatureGuard`: the header names the tenant only when the accepted
// signature covers it. A signature over the method and target alone (the default policy asks
// no more) vouches for the request, not for a header that a proxy on the way, or anyone
// replaying it where nonces are off, can change.
import "reflect-metadata";
import { createKms, currentEncryptionContext } from "@kms/core";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
} from "@kms/http-signatures";
import { Controller, type INestApplication, Inject, Post } from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsContextInterceptor, KmsModule, KmsService, RequireSignature } from "../src/index.ts";
import { listen } from "./helpers.ts";

const secret = new Uint8Array(32).fill(0xa);
const kms = await createKms();
const { keyId: dataKey } = (await kms.createKey({})).keyMetadata;
const secretOfB = await kms.encrypt({
  keyId: dataKey,
  plaintext: Buffer.from("tenant B's secret"),
  encryptionContext: { tenant: "tenant-b" },
});

@Controller()
class ReadController {
  constructor(@Inject(KmsService) private readonly kmsService: KmsService) {}

  @Post("read")
  @RequireSignature()
  async read(): Promise<{ secret: string }> {
    const { plaintext } = await this.kmsService.kms.decrypt({
      ciphertextBlob: secretOfB.ciphertextBlob,
      encryptionContext: currentEncryptionContext() ?? {},
    });
    return { secret: Buffer.from(plaintext).toString() };
  }
}

let app: INestApplication;
let origin: string;
beforeAll(async () => {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        kms,
        mapKmsErrors: true,
        signature: {
          keyLookup: (id) => (id === "partner-a" ? createHmacVerifier(secret) : undefined),
          nonceStore: false,
        },
        context: { tenantHeader: "x-tenant-id" },
      }),
    ],
    controllers: [ReadController],
    providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
  }).compile();
  app = moduleRef.createNestApplication({ rawBody: true, logger: false });
  origin = await listen(app);
});
afterAll(async () => {
  await app.close();
  await kms.close();
});

/** Partner A's signed request for tenant A, its tenant header then set to `sent`. */
async function send(components: ComponentSpec[], sent: string): Promise<Response> {
  const url = `${origin}/read`;
  const body = "{}";
  const headers = { "content-type": "application/json", "x-tenant-id": "tenant-a" };
  const added = await signRequest(
    { method: "POST", url, headers, body },
    { signer: createHmacSigner(secret, { keyId: "partner-a" }), components },
  );
  return fetch(url, {
    method: "POST",
    headers: { ...headers, ...added, "x-tenant-id": sent },
    body,
  });
}

const UNCOVERED: ComponentSpec[] = ["@method", "@target-uri", "content-digest"];

describe("tenantHeader behind SignatureGuard", () => {
  it("refuses a tenant header that the accepted signature does not cover", async () => {
    const res = await send(UNCOVERED, "tenant-b");
    expect(res.status).toBe(400);
    const body = await res.text();
    expect(JSON.parse(body)).toMatchObject({
      type: expect.stringMatching(/\/context\/tenant-missing$/),
    });
    expect(body).not.toContain("tenant B's secret");
  });

  it("refuses it also when it is the one the signer sent", async () => {
    const res = await send(UNCOVERED, "tenant-a");
    expect(res.status).toBe(400);
  });

  it("takes the tenant from a covered header, plain or byte-sequence wrapped", async () => {
    for (const tenantId of ["x-tenant-id", { component: "x-tenant-id", bs: true }] as const) {
      const res = await send([...UNCOVERED, tenantId], "tenant-a");
      // Tenant A's context does not open tenant B's secret.
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ code: "InvalidCiphertextException" });
    }
  });

  it("still refuses a covered header changed on the way (the signature fails)", async () => {
    const res = await send([...UNCOVERED, "x-tenant-id"], "tenant-b");
    expect(res.status).toBe(401);
  });
});
