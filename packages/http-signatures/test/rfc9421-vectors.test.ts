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
  type RequestMessage,
  type SignatureAlgorithm,
  signMessage,
  type VerificationPolicy,
  verifyContentDigest,
  verifyMessage,
} from "../src/index.ts";

type Fields = Record<string, string | string[]>;

/** A request of Appendix B.4, changed as the RFC says. */
interface Transformation {
  change: string;
  method: string;
  url: string;
  headers: Fields;
}

interface Vectors {
  keys: Record<string, { publicKeyPem?: string; privateKeyPem?: string; secretBase64?: string }>;
  messages: Record<
    string,
    {
      method?: string;
      url?: string;
      status?: number;
      headers: Fields;
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
  transformations: {
    label: string;
    valid: Transformation[];
    invalid: Transformation[];
  };
}

const data = JSON.parse(
  readFileSync(new URL("./vectors/rfc9421-appendix-b.json", import.meta.url), "utf8"),
) as Vectors;
const CREATED_MS = 1618884473 * 1000;
type Vector = Vectors["vectors"][number];

function source(name: string): ComponentSource {
  const m = data.messages[name]!;
  const body = m.body === "" ? undefined : new TextEncoder().encode(m.body);
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

/** The vector's message with its Signature-Input and Signature fields. */
function signedMessage(v: Vector): ComponentSource["message"] {
  const { message } = source(v.message);
  const headers = {
    ...(message.headers as Fields),
    "signature-input": v.signatureInput,
    signature: v.signature,
  };
  return { ...message, headers };
}

function vectorPolicy(v: Vector, extra: Partial<VerificationPolicy> = {}): VerificationPolicy {
  return {
    keyLookup: (id) => (id === v.keyid ? verifierFor(v.keyid, v.algorithm) : undefined),
    now: () => CREATED_MS,
    ...extra,
  };
}

const vector = (section: string): Vector => data.vectors.find((v) => v.section === section)!;

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
      // The examples show the signature mechanics; several cover too little for the default
      // policy (below), so this one accepts any coverage.
      const result = await verifyMessage(
        signedMessage(v),
        vectorPolicy(v, { requiredComponents: [] }),
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
      const digest = m.headers["content-digest"] as string;
      expect(computeContentDigest(body, ["sha-512"])).toBe(digest);
      expect(verifyContentDigest(digest, body)).toEqual({
        ok: true,
        algorithms: ["sha-512"],
      });
    }
  });
});

describe("RFC 9421 Appendix B.3: a TLS-terminating proxy signs for the service behind it", () => {
  const v = vector("B.3");
  const key = data.keys[v.keyid]!;
  const covered = ["@path", "@query", "@method", "@authority", "client-cert"];

  it("signs the RFC's signature base, and its own (randomized) ECDSA signature verifies", async () => {
    const { message } = source(v.message);
    const fields = await signMessage(message, {
      signer: createPrivateKeySigner(key.privateKeyPem!, "ecdsa-p256-sha256"),
      components: covered,
      label: v.label,
      keyId: v.keyid,
      now: () => CREATED_MS,
    });
    expect(fields.base).toBe(v.signatureBase);
    expect(fields.signatureInput).toBe(v.signatureInput);
    // ECDSA signs with a fresh nonce: not the RFC's bytes, but as valid.
    expect(fields.signature).not.toBe(v.signature);
    const ours = {
      ...message,
      headers: {
        ...(message.headers as Fields),
        "signature-input": fields.signatureInput,
        signature: fields.signature,
      },
    };
    const policy = vectorPolicy(v, { requiredComponents: covered, algorithms: [v.algorithm] });
    expect(await verifyMessage(ours, policy)).toMatchObject({ ok: true, label: "ttrp" });
    expect(await verifyMessage(signedMessage(v), policy)).toMatchObject({ ok: true });
  });

  it("fails once the Client-Cert the proxy vouched for is changed", async () => {
    const message = signedMessage(v) as RequestMessage;
    const swapped = {
      ...message,
      headers: { ...(message.headers as Fields), "client-cert": ":AAAA:" },
    };
    expect(await verifyMessage(swapped, vectorPolicy(v, { requiredComponents: [] }))).toMatchObject(
      { ok: false, check: "signature" },
    );
  });
});

describe("RFC 9421 Appendix B.4: transformations a signature survives, and those it does not", () => {
  const v = vector("B.4");
  const { label, valid, invalid } = data.transformations;
  const transformed = (t: Transformation): RequestMessage => ({
    method: t.method,
    url: t.url,
    headers: { ...t.headers, "signature-input": v.signatureInput, signature: v.signature },
  });
  // Which transformations keep the signature is a question about the signature, not about how
  // much a policy wants covered.
  const policy = vectorPolicy(v, { requiredComponents: [], label });

  it("verifies the original request", async () => {
    expect(await verifyMessage(signedMessage(v), policy)).toMatchObject({ ok: true, label });
  });

  it.each(valid)("still verifies: $change", async (t) => {
    expect(await verifyMessage(transformed(t), policy)).toMatchObject({ ok: true, label });
  });

  it.each(invalid)("no longer verifies: $change", async (t) => {
    expect(await verifyMessage(transformed(t), policy)).toMatchObject({
      ok: false,
      check: "signature",
    });
  });
});

describe("RFC 9421 Appendix B under the default policy", () => {
  // What each example lacks for the default coverage: `@method`, the target (`@target-uri`, or
  // `@authority` with `@path` and `@query`) and, for content, `content-digest`.
  const expected: Record<string, string | undefined> = {
    "B.2.1": 'signature must cover "@method"', // covers nothing
    "B.2.2": 'signature must cover "@method"',
    "B.2.3": undefined,
    "B.2.4": undefined, // a response: "@status" and "content-digest"
    "B.2.5": 'signature must cover "@method"',
    "B.2.6": 'signature must cover "@target-uri" (or "@authority" with "@path" and "@query")',
    "B.3": 'signature must cover "content-digest": the message has content',
    "B.4": 'signature must cover "@target-uri" (or "@authority" with "@path" and "@query")',
  };

  it.each(data.vectors)("$section $label", async (v) => {
    const result = await verifyMessage(signedMessage(v), vectorPolicy(v));
    const detail = expected[v.section];
    expect(result).toMatchObject(
      detail === undefined ? { ok: true } : { ok: false, check: "components", detail },
    );
  });

  it("refuses B.4's first transformation, which adds a query parameter the signature does not cover", async () => {
    const t = data.transformations.valid[0]!;
    expect(t.url).toContain("param=added");
    const message: RequestMessage = {
      method: t.method,
      url: t.url,
      headers: {
        ...t.headers,
        "signature-input": vector("B.4").signatureInput,
        signature: vector("B.4").signature,
      },
    };
    expect(await verifyMessage(message, vectorPolicy(vector("B.4")))).toMatchObject({
      ok: false,
      check: "components",
    });
  });
});
