// The README's recipe for several partner keys: a signature over x-tenant-id proves that some
// accepted key named the tenant, not that this key may act for it, so each key id is bound to
// its tenants in `resolve`. Run as written, and compared line by line with the README.
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import { createKms, currentEncryptionContext } from "@kms/core";
import { createHmacSigner, createHmacVerifier, signRequest } from "@kms/http-signatures";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  captureRawBody,
  defaultKmsContext,
  kmsContext,
  kmsErrorHandler,
  verifiedSignatureOf,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const secrets = new Map([
  ["partner-a", new Uint8Array(32).fill(0xa)],
  ["partner-b", new Uint8Array(32).fill(0xb)],
]);
const kms = await createKms();
const { keyId: dataKey } = (await kms.createKey({})).keyMetadata;
const secretOfA = await kms.encrypt({
  keyId: dataKey,
  plaintext: Buffer.from("tenant A's secret"),
  encryptionContext: { tenant: "tenant-a" },
});

const app = express();
app.use(express.json({ verify: captureRawBody }));
app.use(
  verifySignature({
    keyLookup: (id) => {
      const secret = secrets.get(id);
      return secret === undefined ? undefined : createHmacVerifier(secret);
    },
    requiredComponents: ["@method", "@target-uri", "x-tenant-id"],
  }),
);
// Which tenants each partner key may act for.
const tenantsOfKey = new Map([
  ["partner-a", new Set(["tenant-a"])],
  ["partner-b", new Set(["tenant-b"])],
]);
app.use(
  kmsContext({
    resolve: (req) => {
      const keyId = verifiedSignatureOf(req)?.keyId ?? "";
      const tenant = req.get("x-tenant-id") ?? "";
      const mayAct = tenantsOfKey.get(keyId)?.has(tenant) === true;
      // `tenant` present but undefined: refused (400), never read from elsewhere.
      return defaultKmsContext(req, { tenant: mayAct ? tenant : undefined });
    },
  }),
);
app.post("/read", async (_req, res) => {
  const { plaintext } = await kms.decrypt({
    ciphertextBlob: secretOfA.ciphertextBlob,
    encryptionContext: currentEncryptionContext() ?? {},
  });
  res.json({ secret: Buffer.from(plaintext).toString() });
});
app.use(kmsErrorHandler());

let server: Server;
let origin: string;
beforeAll(async () => {
  ({ server, origin } = await listen(app));
});
afterAll(async () => {
  await close(server);
  await kms.close();
});

async function read(partner: string, tenant: string): Promise<Response> {
  const url = `${origin}/read`;
  const body = "{}";
  const headers = { "content-type": "application/json", "x-tenant-id": tenant };
  const signer = createHmacSigner(secrets.get(partner) as Uint8Array, { keyId: partner });
  const added = await signRequest(
    { method: "POST", url, headers, body },
    {
      signer,
      nonce: true,
      components: ["@method", "@target-uri", "content-digest", "x-tenant-id"],
    },
  );
  return fetch(url, { method: "POST", headers: { ...headers, ...added }, body });
}

describe("tenants bound to the partner key that signs", () => {
  it("refuses a partner naming another partner's tenant, though its signature covers it", async () => {
    const res = await read("partner-b", "tenant-a");
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      type: expect.stringMatching(/\/context\/tenant-missing$/),
    });
  });

  it("lets a partner act for its own tenant", async () => {
    const res = await read("partner-a", "tenant-a");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ secret: "tenant A's secret" });
  });

  it("is the README's recipe, line for line", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
    const recipe = /^ {2}```ts\n([\s\S]*?tenantsOfKey[\s\S]*?)^ {2}```$/m.exec(readme)?.[1];
    expect(recipe).toBeDefined();
    const squash = (text: string) => text.replace(/\s+/g, "").replace(/,(?=[)\]}])/g, "");
    const test = squash(readFileSync(new URL(import.meta.url), "utf8"));
    const missing = (recipe ?? "")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !test.includes(squash(line).replace(/[,;]$/, "")));
    expect(missing).toEqual([]);
  });
});
