/**
 * A KMS refuses a Verify or VerifyMac whose message or signature is out of its bounds with a
 * ValidationException, before looking at the key. Both come from the message being verified,
 * so through `createKmsVerifier` they must fail the signature check: propagated, they would
 * read as a KMS outage (a 500, not a 401) that any client can trigger.
 */
import { createKms, type KeySpec, type KeyUsage, type Kms } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKmsSigner,
  createKmsVerifier,
  type RequestMessage,
  type SignatureAlgorithm,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
} from "../src/index.ts";

const specs: [SignatureAlgorithm, KeySpec, KeyUsage][] = [
  ["hmac-sha256", "HMAC_256", "GENERATE_VERIFY_MAC"],
  ["ecdsa-p256-sha256", "ECC_NIST_P256", "SIGN_VERIFY"],
  ["ed25519", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY"],
  ["rsa-pss-sha512", "RSA_2048", "SIGN_VERIFY"],
  ["rsa-v1_5-sha256", "RSA_3072", "SIGN_VERIFY"],
];
const T0 = 1_700_000_000_000;
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

let kms: Kms;
const keyIds = new Map<SignatureAlgorithm, string>();

beforeAll(async () => {
  kms = await createKms();
  for (const [alg, keySpec, keyUsage] of specs) {
    keyIds.set(alg, (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId);
  }
});
afterAll(() => kms.close());

describe.each(specs)("verifying through the KMS, %s", (algorithm) => {
  const policyFor = (keyId: string): VerificationPolicy => ({
    keyLookup: (id) => (id === "orders" ? createKmsVerifier({ kms, keyId, algorithm }) : undefined),
    now: () => T0,
  });

  async function signedRequest(headers: Record<string, string> = {}): Promise<RequestMessage> {
    const keyId = keyIds.get(algorithm) as string;
    const message: RequestMessage = { method: "POST", url: "https://api.test/orders", headers };
    const fields = await signMessage(message, {
      signer: createKmsSigner({ kms, keyId, algorithm, publishedKeyId: "orders" }),
      components: ["@method", "@target-uri", ...Object.keys(headers)],
      now: () => T0,
    });
    return {
      ...message,
      headers: {
        ...headers,
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
  }

  const withSignature = (message: RequestMessage, value: string): RequestMessage => ({
    ...message,
    headers: { ...(message.headers as Record<string, string>), signature: value },
  });

  it("accepts its own signature", async () => {
    const policy = policyFor(keyIds.get(algorithm) as string);
    expect(await verifyMessage(await signedRequest(), policy)).toMatchObject({ ok: true });
  });

  it.each([
    ["empty", 0],
    ["longer than any KMS key's (513 bytes)", 513],
    ["over the KMS's 6144 bytes", 6145],
  ])("answers a signature that is %s as a failed signature", async (_name, length) => {
    const policy = policyFor(keyIds.get(algorithm) as string);
    const message = withSignature(
      await signedRequest(),
      `sig1=:${b64(new Uint8Array(length).fill(1))}:`,
    );
    expect(await verifyMessage(message, policy)).toEqual({
      ok: false,
      check: "signature",
      detail: "signature does not match the signature base",
      label: "sig1",
    });
  });

  it("answers a signature base over the KMS's 4096 bytes as a failed signature", async () => {
    const policy = policyFor(keyIds.get(algorithm) as string);
    // Signed with a short header, then padded by a client: the base no longer fits a RAW message.
    const signed = await signedRequest({ "x-note": "short" });
    const padded: RequestMessage = {
      ...signed,
      headers: { ...(signed.headers as Record<string, string>), "x-note": "x".repeat(5000) },
    };
    expect(await verifyMessage(padded, policy)).toEqual({
      ok: false,
      check: "signature",
      detail: "signature does not match the signature base",
      label: "sig1",
    });
  });

  it("still propagates an error about the key itself", async () => {
    const message = await signedRequest();
    await expect(verifyMessage(message, policyFor("alias/missing"))).rejects.toMatchObject({
      code: "NotFoundException",
    });
  });
});
