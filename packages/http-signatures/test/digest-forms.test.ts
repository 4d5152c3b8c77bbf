/**
 * A signature that covers Content-Digest in a structured form (`;sf`, or one member by `;key`)
 * vouches for the field just as the plain form does, so the body is checked against it under
 * the default `contentDigest: "if-present"`: otherwise the body could be swapped under a
 * signed digest that nobody compares.
 */
import { describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  type RequestMessage,
  signMessage,
  type VerificationPolicy,
  verifyMessage,
  verifyMessageEagerly,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x24);
const T0 = 1_700_000_000_000;
const signer = createHmacSigner(SECRET, { keyId: "k1" });
const policy: VerificationPolicy = {
  // About digest forms, not about what a signature must cover: accept any coverage.
  requiredComponents: [],
  keyLookup: (id) => (id === "k1" ? createHmacVerifier(SECRET) : undefined),
  now: () => T0,
};
const body = new TextEncoder().encode('{"amount":10}');
const message: RequestMessage = {
  method: "POST",
  url: "https://api.test/payments",
  headers: { "content-type": "application/json", "content-digest": computeContentDigest(body) },
  body,
};

async function signedWith(component: ComponentSpec): Promise<RequestMessage> {
  const fields = await signMessage(message, {
    signer,
    components: ["@method", "@target-uri", component],
    now: () => T0,
  });
  return {
    ...message,
    headers: {
      ...(message.headers as Record<string, string>),
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    },
  };
}

const forms: [string, ComponentSpec][] = [
  ["plain", "content-digest"],
  [";sf", { component: "content-digest", sf: true }],
  [';key="sha-256"', { component: "content-digest", key: "sha-256" }],
];

describe.each(forms)('a signature covering "content-digest" (%s)', (_name, component) => {
  it("accepts the body it was signed over", async () => {
    const signed = await signedWith(component);
    expect(await verifyMessage(signed, policy)).toMatchObject({ ok: true });
    expect(await verifyMessageEagerly(signed, policy)).toMatchObject({ ok: true });
  });

  it("refuses another body under the signed digest, by default and when required", async () => {
    const swapped = {
      ...(await signedWith(component)),
      body: new TextEncoder().encode('{"amount":10000}'),
    };
    for (const contentDigest of [undefined, "if-present", "required"] as const) {
      const p = contentDigest === undefined ? policy : { ...policy, contentDigest };
      for (const result of [
        await verifyMessage(swapped, p),
        await verifyMessageEagerly(swapped, p),
      ]) {
        expect(result.ok).toBe(false);
        // "required" insists on the plain form; the other forms fail on the body itself.
        if (!result.ok) {
          expect(result.check).toBe(
            contentDigest === "required" && component !== "content-digest"
              ? "components"
              : "content-digest",
          );
        }
      }
    }
  });
});
