/**
 * A signature that covers Content-Digest in a structured form (`;sf`, or one member by `;key`)
 * vouches for the field just as the plain form does, so the body is checked against it under
 * the default `contentDigest: "if-present"`: otherwise the body could be swapped under a
 * signed digest that nobody compares.
 */
import { createHash } from "node:crypto";
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

/**
 * A `;key` component covers one member of the field, and only that member is a claim the signer
 * vouches for. The field check compares the members in an accepted algorithm, so a covered member
 * in another algorithm would go unchecked while an uncovered one, added by whoever changed the
 * body, passed: every covered key must be an algorithm that is checked against the body.
 */
describe.each([
  ["content-digest", "Content-Digest"],
  ["repr-digest", "Repr-Digest"],
] as const)('a signature covering "%s";key', (field, fieldName) => {
  const original = new TextEncoder().encode('{"to":"alice","amount":1}');
  const forged = new TextEncoder().encode('{"to":"mallory","amount":1000000}');
  const member = (alg: "sha-256" | "sha-384" | "sha-512", bytes: Uint8Array) =>
    `${alg}=:${createHash(alg.replace("-", "")).update(bytes).digest("base64")}:`;

  async function signedOver(fieldValue: string, key: string): Promise<RequestMessage> {
    const request: RequestMessage = {
      method: "PUT",
      url: "https://api.test/transfers/7",
      headers: { [field]: fieldValue },
      body: original,
    };
    const fields = await signMessage(request, {
      signer,
      components: ["@method", "@target-uri", { component: field, key }],
      now: () => T0,
    });
    return {
      ...request,
      headers: {
        ...(request.headers as Record<string, string>),
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
  }

  /** The body swapped, the covered member kept, and a member for the new body appended. */
  function swapped(signed: RequestMessage, appended: string): RequestMessage {
    const headers = signed.headers as Record<string, string>;
    return {
      ...signed,
      headers: { ...headers, [field]: `${headers[field]}, ${appended}` },
      body: forged,
    };
  }

  async function expectFailure(message: RequestMessage, p: VerificationPolicy, detail: RegExp) {
    for (const result of [
      await verifyMessage(message, p),
      await verifyMessageEagerly(message, p),
    ]) {
      expect(result).toMatchObject({ ok: false, check: field });
      if (!result.ok) expect(result.detail).toMatch(detail);
    }
  }

  it("refuses a covered key outside digestAlgorithms, so an uncovered member cannot vouch for another body", async () => {
    const signed = await signedOver(member("sha-256", original), "sha-256");
    const p = { ...policy, digestAlgorithms: ["sha-512"] as const };
    const notAccepted = new RegExp(
      `^${fieldName} "sha-256" is covered by the signature \\(;key\\) but is not an accepted algorithm \\(sha-512\\)`,
    );
    await expectFailure(swapped(signed, member("sha-512", forged)), p, notAccepted);
    // The honest message too: its covered digest cannot be checked under this policy.
    await expectFailure(signed, p, notAccepted);
  });

  it("refuses a covered key in an algorithm no policy checks (sha-384)", async () => {
    const signed = await signedOver(member("sha-384", original), "sha-384");
    const notAccepted = new RegExp(
      `^${fieldName} "sha-384" is covered by the signature \\(;key\\) but is not an accepted algorithm \\(sha-256, sha-512\\)`,
    );
    await expectFailure(swapped(signed, member("sha-256", forged)), policy, notAccepted);
    await expectFailure(swapped(signed, member("sha-512", forged)), policy, notAccepted);
    await expectFailure(signed, policy, notAccepted);
  });

  it("refuses a covered key in an accepted algorithm that does not match the body", async () => {
    const signed = await signedOver(member("sha-256", original), "sha-256");
    await expectFailure(
      swapped(signed, member("sha-512", forged)),
      policy,
      new RegExp(`^${fieldName} sha-256 does not match the body`),
    );
  });

  it("accepts the honest message when the covered key is an accepted algorithm", async () => {
    for (const [fieldValue, key] of [
      [member("sha-512", original), "sha-512"],
      // An uncovered member beside it is checked too, and passes when it matches.
      [`${member("sha-256", original)}, ${member("sha-512", original)}`, "sha-256"],
    ] as const) {
      const signed = await signedOver(fieldValue, key);
      for (const p of [policy, { ...policy, digestAlgorithms: [key] }]) {
        expect(await verifyMessage(signed, p)).toMatchObject({ ok: true });
        expect(await verifyMessageEagerly(signed, p)).toMatchObject({ ok: true });
      }
    }
  });
});
