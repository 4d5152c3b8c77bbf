// The README example, run as written, so the documentation cannot rot.
import { createKms } from "@kms/core";
import { readmeDrift } from "@kms/tooling/readme";
import { expect, it } from "vitest";
import {
  createKmsSigner,
  createKmsVerifier,
  createSignedFetch,
  MemoryNonceStore,
  type VerificationPolicy,
  verifyMessage,
} from "../src/index.ts";

it("runs the README example: accepted once, a replay and a changed body refused", async () => {
  const kms = await createKms();
  const { keyId } = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata;

  // Receiver: one policy, and so one nonce store, for every request it verifies.
  const policy: VerificationPolicy = {
    keyLookup: (id) =>
      id === "orders" ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" }) : undefined,
    requiredComponents: ["@method", "@target-uri"],
    // The host[:port]s this receiver answers to: a signature made for another one is refused.
    authorities: ["billing.internal"],
    contentDigest: "required",
    nonceStore: new MemoryNonceStore(),
  };
  async function receive(request: Request): Promise<Response> {
    const body = new Uint8Array(await request.arrayBuffer()); // the raw bytes, for Content-Digest
    const { method, url, headers } = request;
    const result = await verifyMessage({ method, url, headers, body }, policy);
    // The result names the failed check, e.g. "content-digest", "replay".
    if (!result.ok) return new Response(`${result.check}: ${result.detail}`, { status: 401 });
    return new Response(null, { status: 204 });
  }

  // Sender: every request is signed (Content-Digest + Signature-Input + Signature).
  let sent: Request | undefined;
  const signedFetch = createSignedFetch({
    signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256", publishedKeyId: "orders" }),
    nonce: true,
    // Here the receiver above answers in-process; without `fetch`, the global fetch sends it.
    fetch: async (input, init) => {
      sent = new Request(input, init);
      return receive(sent.clone());
    },
  });
  const res = await signedFetch("https://billing.internal/hooks/paid", {
    method: "POST",
    body: '{"id":7}',
  });
  expect(res.status).toBe(204);

  // The same signed request again: the nonce store refuses it.
  const replay = await receive(sent!.clone());
  expect(replay.status).toBe(401);
  expect(await replay.text()).toMatch(/^replay: /);

  // Its headers on another body: the Content-Digest no longer matches.
  const tampered = await receive(new Request(sent!, { body: '{"id":8}' }));
  expect(tampered.status).toBe(401);
  expect(await tampered.text()).toMatch(/^content-digest: /);

  // Signed for another service that shares the key: refused here.
  const elsewhere = await signedFetch("https://billing.staging.internal/hooks/paid", {
    method: "POST",
    body: '{"id":7}',
  });
  expect(elsewhere.status).toBe(401);
  expect(await elsewhere.text()).toMatch(/^components: .*not one this server answers to/);
  await kms.close();
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/http-signatures",
    blocks: 1,
    adapted: [
      // The test keeps what it sent, to replay it; it asserts the status rather than printing it.,
      "fetch: async (input, init) => receive(new Request(input, init)),",
      "console.log(res.status); // 204",
    ],
  });
  expect(drift).toEqual([]);
});
