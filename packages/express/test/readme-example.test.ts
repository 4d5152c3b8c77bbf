// The README example, run as written (listening on a free port, plus a client), so the
// documentation cannot rot.
import type { Server } from "node:http";
import { createKms } from "@kms/core";
import {
  createKmsSigner,
  createKmsVerifier,
  createSignedFetch,
  MemoryNonceStore,
  verifyMessage,
} from "@kms/http-signatures";
import { readmeDrift } from "@kms/tooling/readme";
import express from "express";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  captureRawBody,
  kmsContext,
  kmsErrorHandler,
  signResponse,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const kms = await createKms();
const { keyId } = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
  .keyMetadata;

// The README names its public host[:port]s; here the one the app listens on, once it does.
const ownAuthorities: string[] = [];

const app = express();
app.use(express.json({ verify: captureRawBody })); // keep the raw bytes for Content-Digest
app.use(
  verifySignature({
    keyLookup: (id) =>
      id === "partner-a" ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" }) : undefined,
    requiredComponents: ["@method", "@target-uri", "x-tenant-id"], // the tenant is signed
    authorities: ownAuthorities,
    contentDigest: "required",
    nonceStore: new MemoryNonceStore(),
  }),
);
app.use(signResponse({ signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }) }));
app.use(kmsContext({ tenantHeader: "x-tenant-id" })); // trusted: the signature covers it
app.post("/orders", (_req, res) => res.json({ ok: true }));
app.use(kmsErrorHandler()); // after the routes: KmsErrors as problem+json

let server: Server;
let origin: string;
beforeAll(async () => {
  ({ server, origin } = await listen(app));
  ownAuthorities.push(new URL(origin).host);
});
afterAll(async () => {
  await close(server);
  await kms.close();
});

/** The partner's client; it signs its tenant header unless told to sign only the defaults. */
function client(capture: (headers: Headers) => void, { signTenant = true } = {}) {
  return createSignedFetch({
    signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256", publishedKeyId: "partner-a" }),
    nonce: true,
    ...(signTenant
      ? {
          components: ["@method", "@target-uri", "content-digest", "content-type", "x-tenant-id"],
        }
      : {}),
    fetch: (input, init) => {
      capture(new Headers(init?.headers));
      return fetch(input, init);
    },
  });
}

const init = {
  method: "POST",
  headers: { "content-type": "application/json", "x-tenant-id": "acme" },
  body: '{"note":"hi"}',
};

it("answers a signed request with a response signed for it", async () => {
  let sent = new Headers();
  const url = `${origin}/orders`;
  const res = await client((h) => {
    sent = h;
  })(url, init);
  const text = await res.text();
  expect(res.status).toBe(200);
  expect(JSON.parse(text)).toEqual({ ok: true });

  sent.set("host", new URL(url).host);
  const verified = await verifyMessage(
    { status: res.status, headers: res.headers, body: new TextEncoder().encode(text) },
    {
      keyLookup: () => createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" }),
      contentDigest: "required",
      requiredComponents: [{ component: "signature", key: "sig1", req: true }],
    },
    { method: "POST", url, headers: sent },
  );
  expect(verified).toMatchObject({ ok: true });
});

it("refuses unsigned and replayed requests, and one whose signature leaves the tenant out", async () => {
  const url = `${origin}/orders`;
  const unsigned = await fetch(url, init);
  expect(unsigned.status).toBe(401);
  expect(unsigned.headers.get("content-type")).toMatch(/^application\/problem\+json/);

  let sent = new Headers();
  await client((h) => {
    sent = h;
  })(url, init);
  const replay = await fetch(url, { ...init, headers: sent });
  expect(replay.status).toBe(401);
  expect(await replay.json()).toMatchObject({ type: expect.stringMatching(/\/replay$/) });

  // Signed, but not its tenant: whoever relayed it could have set the header.
  const unsignedTenant = await client(() => {}, { signTenant: false })(url, init);
  expect(unsignedTenant.status).toBe(401);
  expect(await unsignedTenant.json()).toMatchObject({
    type: expect.stringMatching(/\/signature\/components$/),
    detail: expect.stringContaining('"x-tenant-id"'),
  });
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/express",
    blocks: 1,
    adapted: [
      // The authority the test listens on; a free port; `_req` for the linter.
      'authorities: ["api.example.com", "api.example.com:8443"], // the host[:port]s of this server',
      'app.post("/orders", (req, res) => res.json({ ok: true }));',
      "app.listen(3000);",
    ],
  });
  expect(drift).toEqual([]);
});
