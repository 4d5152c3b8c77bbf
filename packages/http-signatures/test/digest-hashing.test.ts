/**
 * When a signature covers Content-Digest and Repr-Digest and the body is the whole
 * representation, both fields are checked against the same bytes: each algorithm is hashed
 * once per verification, not once per field. Counted on node:crypto's `hash`, the one-shot
 * function the digest checks use.
 */
import * as crypto from "node:crypto";
import { beforeEach, describe, expect, it, vi } from "vitest";
import {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  return { ...actual, hash: vi.fn(actual.hash) };
});

const SECRET = new Uint8Array(32).fill(0x61);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About digest hashing, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const body = new TextEncoder().encode('{"amount":10}');
const both = computeContentDigest(body, ["sha-256", "sha-512"]);

async function signedRequest(headers: Record<string, string>): Promise<RequestMessage> {
  const message: RequestMessage = {
    method: "POST",
    url: "https://api.test/payments",
    headers,
    body,
  };
  const fields = await signMessage(message, {
    signer,
    components: ["@method", ...Object.keys(headers)],
    now: () => T0,
  });
  return {
    ...message,
    headers: { ...headers, "signature-input": fields.signatureInput, signature: fields.signature },
  };
}

/** The algorithms `hash` was called with over `bytes`, in call order. */
function hashedAlgorithms(bytes: Uint8Array): string[] {
  return vi
    .mocked(crypto.hash)
    .mock.calls.filter(([, data]) => data === bytes)
    .map(([alg]) => alg);
}

describe("digest checks hash the body once per algorithm", () => {
  beforeEach(() => {
    vi.mocked(crypto.hash).mockClear();
  });

  it.each([
    ["verifyMessage", verifyMessage],
    ["verifyMessageEagerly", verifyMessageEagerly],
  ] as const)("%s, Content-Digest and Repr-Digest both covered", async (_name, verify) => {
    const message = await signedRequest({ "content-digest": both, "repr-digest": both });
    vi.mocked(crypto.hash).mockClear();
    expect(await verify(message, { ...policy, reprDigest: "required" })).toMatchObject({
      ok: true,
    });
    expect(hashedAlgorithms(body).sort()).toEqual(["sha256", "sha512"]);
  });

  it("still hashes each algorithm once with one field covered", async () => {
    const message = await signedRequest({ "content-digest": both });
    vi.mocked(crypto.hash).mockClear();
    await expect(verifyMessage(message, policy)).resolves.toMatchObject({ ok: true });
    expect(hashedAlgorithms(body).sort()).toEqual(["sha256", "sha512"]);
  });

  it("still checks each field on its own: a false Repr-Digest fails after a true Content-Digest", async () => {
    const other = computeContentDigest(new TextEncoder().encode('{"amount":11}'), ["sha-256"]);
    const message = await signedRequest({ "content-digest": both, "repr-digest": other });
    await expect(verifyMessage(message, policy)).resolves.toEqual({
      ok: false,
      check: "repr-digest",
      detail: "Repr-Digest sha-256 does not match the body",
      label: "sig1",
    });
  });
});
