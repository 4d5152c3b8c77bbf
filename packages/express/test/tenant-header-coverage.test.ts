// `tenantHeader` behind `verifySignature`: the header names the tenant only when the accepted
// signature covers it. A signature over the method and target alone (the default policy asks
// no more) vouches for the request, not for a header anyone who saw it can change on the way
// or in a replay of a signature made without a nonce.
import type { Server } from "node:http";
import { createKms, currentEncryptionContext } from "@kms/core";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
} from "@kms/http-signatures";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  captureRawBody,
  kmsContext,
  kmsErrorHandler,
  signResponse,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const secret = new Uint8Array(32).fill(0xa);
const kms = await createKms();
const { keyId: dataKey } = (await kms.createKey({})).keyMetadata;
const secretOfB = await kms.encrypt({
  keyId: dataKey,
  plaintext: Buffer.from("tenant B's secret"),
  encryptionContext: { tenant: "tenant-b" },
});

const app = express();
app.use(express.json({ verify: captureRawBody }));
app.use(
  verifySignature({
    keyLookup: (id) => (id === "partner-a" ? createHmacVerifier(secret) : undefined),
  }),
);
app.use(signResponse({ signer: createHmacSigner(secret, { keyId: "server" }) }));
app.use(kmsContext({ tenantHeader: "x-tenant-id" }));
app.post("/read", async (_req, res) => {
  const { plaintext } = await kms.decrypt({
    ciphertextBlob: secretOfB.ciphertextBlob,
    encryptionContext: currentEncryptionContext() ?? {},
  });
  res.json({ secret: Buffer.from(plaintext).toString() });
});
app.use(kmsErrorHandler());

// The other order: the context app-wide, the signature checked on the route.
const contextFirst = express();
contextFirst.use(express.json({ verify: captureRawBody }));
contextFirst.use(kmsContext({ tenantHeader: "x-tenant-id" }));
contextFirst.post(
  "/read",
  verifySignature({
    keyLookup: (id) => (id === "partner-a" ? createHmacVerifier(secret) : undefined),
  }),
  async (_req, res) => {
    const { plaintext } = await kms.decrypt({
      ciphertextBlob: secretOfB.ciphertextBlob,
      encryptionContext: currentEncryptionContext() ?? {},
    });
    res.json({ secret: Buffer.from(plaintext).toString() });
  },
);
contextFirst.use(kmsErrorHandler());

let server: Server;
let origin: string;
let contextFirstServer: Server;
let contextFirstOrigin: string;
beforeAll(async () => {
  ({ server, origin } = await listen(app));
  ({ server: contextFirstServer, origin: contextFirstOrigin } = await listen(contextFirst));
});
afterAll(async () => {
  await close(server);
  await close(contextFirstServer);
  await kms.close();
});

/** Partner A's signed request for tenant A, its tenant header then set to `sent`. */
async function send(components: ComponentSpec[], sent: string, to = origin): Promise<Response> {
  const url = `${to}/read`;
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

describe("tenantHeader behind verifySignature", () => {
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

describe("tenantHeader with kmsContext before verifySignature", () => {
  it("refuses a signature that does not cover the header the tenant came from", async () => {
    for (const sent of ["tenant-b", "tenant-a"]) {
      const res = await send(UNCOVERED, sent, contextFirstOrigin);
      expect(res.status).toBe(400);
      const body = await res.text();
      expect(JSON.parse(body)).toMatchObject({
        type: expect.stringMatching(/\/context\/tenant-unsigned$/),
      });
      expect(body).not.toContain("tenant B's secret");
    }
  });

  it("runs the handler under the tenant of a covered header", async () => {
    const res = await send([...UNCOVERED, "x-tenant-id"], "tenant-a", contextFirstOrigin);
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ code: "InvalidCiphertextException" });
  });
});
