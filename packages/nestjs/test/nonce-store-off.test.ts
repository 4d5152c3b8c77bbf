/**
 * `nonceStore: false` turns replay protection off for real. The guard builds a policy per
 * request; passing nothing instead of `false` let @kms/http-signatures make its default store,
 * fresh for each request: it remembered nothing, yet refused what any store refuses (a nonce
 * on a signature with neither `created` nor `expires`, which no store could keep forever).
 */
import "reflect-metadata";
import { createKms } from "@kms/core";
import { createKmsSigner, createKmsVerifier, signRequest } from "@kms/http-signatures";
import { Controller, Post } from "@nestjs/common";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { KmsModule, RequireSignature } from "../src/index.ts";
import { listen } from "./helpers.ts";

@Controller("hooks")
@RequireSignature()
class HooksController {
  @Post()
  receive(): { ok: true } {
    return { ok: true };
  }
}

describe("nonceStore: false", () => {
  it("accepts a nonce on a signature without created when created is optional, and a replay of it", async () => {
    const kms = await createKms();
    const hmac = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          signature: {
            nonceStore: false,
            requireCreated: false,
            keyLookup: (id, ctx) =>
              id === hmac
                ? createKmsVerifier({ kms: ctx.kms, keyId: hmac, algorithm: "hmac-sha256" })
                : undefined,
          },
        }),
      ],
      controllers: [HooksController],
    }).compile();
    const app = moduleRef.createNestApplication({ rawBody: true, logger: false });
    const origin = await listen(app);
    try {
      const signer = createKmsSigner({ kms, keyId: hmac, algorithm: "hmac-sha256" });
      const headers = await signRequest(
        { method: "POST", url: `${origin}/hooks`, headers: {} },
        { signer, nonce: true, created: false },
      );
      const first = await request(origin).post("/hooks").set(headers).send();
      expect(first.status, first.text).toBe(201);
      const replay = await request(origin).post("/hooks").set(headers).send();
      expect(replay.status, replay.text).toBe(201);
    } finally {
      await app.close();
      await kms.close();
    }
  });
});
