import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type ComponentSource,
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  createPrivateKeySigner,
  createPublicKeyVerifier,
  createSignatureBase,
  type InnerList,
  isInnerList,
  type MessageVerifier,
  parseDictionary,
  type SignatureAlgorithm,
  verifyContentDigest,
  verifyMessage,
} from "../src/index.ts";

interface Vectors {
  keys: Record<string, { publicKeyPem?: string; privateKeyPem?: string; secretBase64?: string }>;
  messages: Record<
    string,
    {
      method?: string;
      url?: string;
      status?: number;
      headers: Record<string, string>;
      body: string;
    }
  >;
  vectors: {
    label: string;
    section: string;
    algorithm: SignatureAlgorithm;
    keyid: string;
    message: string;
    deterministic: boolean;
    signatureBase: string;
    signatureInput: string;
    signature: string;
  }[];
}

const data = JSON.parse(
  readFileSync(new URL("./vectors/rfc9421-appendix-b.json", import.meta.url), "utf8"),
) as Vectors;
const CREATED_MS = 1618884473 * 1000;

function source(name: string): ComponentSource {
  const m = data.messages[name]!;
  const body = new TextEncoder().encode(m.body);
  if (m.method !== undefined) {
    return { message: { method: m.method, url: m.url!, headers: m.headers, body } };
  }
  return { message: { status: m.status!, headers: m.headers, body } };
}

function verifierFor(keyid: string, algorithm: SignatureAlgorithm): MessageVerifier {
  const key = data.keys[keyid]!;
  if (algorithm === "hmac-sha256")
    return createHmacVerifier(Buffer.from(key.secretBase64!, "base64"));
  return createPublicKeyVerifier(key.publicKeyPem!, algorithm);
}

describe("RFC 9421 Appendix B", () => {
  describe.each(data.vectors)("$section $label ($algorithm)", (v) => {
    const input = parseDictionary(v.signatureInput).get(v.label) as InnerList;

    it("rebuilds the exact signature base", () => {
      expect(isInnerList(input)).toBe(true);
      expect(createSignatureBase(input, source(v.message))).toBe(v.signatureBase);
    });

    it("verifies the published signature with the published key", async () => {
      const sig = parseDictionary(v.signature).get(v.label);
      const bytes = (sig as { value: Uint8Array }).value;
      const verifier = verifierFor(v.keyid, v.algorithm);
      const base = new TextEncoder().encode(v.signatureBase);
      expect(await verifier.verify(base, bytes)).toBe(true);
      const tampered = Uint8Array.from(bytes);
      tampered[5]! ^= 1;
      expect(await verifier.verify(base, tampered)).toBe(false);
      expect(await verifier.verify(new TextEncoder().encode(`${v.signatureBase} `), bytes)).toBe(
        false,
      );
    });

    it("passes verifyMessage end to end", async () => {
      const { message } = source(v.message);
      const headers = {
        ...(message.headers as Record<string, string>),
        "signature-input": v.signatureInput,
        signature: v.signature,
      };
      const result = await verifyMessage(
        { ...message, headers },
        {
          keyLookup: (id) => (id === v.keyid ? verifierFor(v.keyid, v.algorithm) : undefined),
          now: () => CREATED_MS,
        },
      );
      expect(result).toMatchObject({ ok: true, label: v.label, keyId: v.keyid });
    });

    // Only deterministic algorithms can reproduce the published signature bytes.
    if (v.deterministic) {
      it("re-signs to the exact published bytes", async () => {
        const key = data.keys[v.keyid]!;
        const signer =
          v.algorithm === "hmac-sha256"
            ? createHmacSigner(Buffer.from(key.secretBase64!, "base64"))
            : createPrivateKeySigner(key.privateKeyPem!, v.algorithm);
        const signature = await signer.sign(new TextEncoder().encode(v.signatureBase));
        expect(`${v.label}=:${Buffer.from(signature).toString("base64")}:`).toBe(v.signature);
      });
    }
  });

  it("B.1.2's RSA-PSS private key signs what its public key verifies", async () => {
    const key = data.keys["test-key-rsa-pss"]!;
    const signer = createPrivateKeySigner(key.privateKeyPem!, "rsa-pss-sha512");
    const base = new TextEncoder().encode("base");
    const verifier = createPublicKeyVerifier(key.publicKeyPem!, "rsa-pss-sha512");
    expect(await verifier.verify(base, await signer.sign(base))).toBe(true);
  });

  it("RFC 9530: recomputes the Content-Digest of both example messages", () => {
    for (const name of ["test-request", "test-response"]) {
      const m = data.messages[name]!;
      const body = new TextEncoder().encode(m.body);
      expect(computeContentDigest(body, ["sha-512"])).toBe(m.headers["content-digest"]);
      expect(verifyContentDigest(m.headers["content-digest"]!, body)).toEqual({
        ok: true,
        algorithms: ["sha-512"],
      });
    }
  });
});
