/**
 * Interoperability with the independent `http-message-signatures` package (dhensby), both ways.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { createSigner, createVerifier, httpbis } from "http-message-signatures";
import { describe, expect, it } from "vitest";
import {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  createPrivateKeySigner,
  createPublicKeyVerifier,
  type MessageSigner,
  type MessageVerifier,
  type RequestMessage,
  type ResponseMessage,
  type SignatureAlgorithm,
  signMessage,
  signRequest,
  verifyMessage,
} from "../src/index.ts";

type Pair = { sign: KeyObject | Buffer; verify: KeyObject | Buffer };
const secret = randomBytes(32);
const keys: Record<SignatureAlgorithm, Pair> = {
  "hmac-sha256": { sign: secret, verify: secret },
  "ecdsa-p256-sha256": pair(generateKeyPairSync("ec", { namedCurve: "P-256" })),
  "ecdsa-p384-sha384": pair(generateKeyPairSync("ec", { namedCurve: "P-384" })),
  ed25519: pair(generateKeyPairSync("ed25519")),
  "rsa-pss-sha512": pair(generateKeyPairSync("rsa", { modulusLength: 2048 })),
  "rsa-v1_5-sha256": pair(generateKeyPairSync("rsa", { modulusLength: 2048 })),
};
function pair(p: { privateKey: KeyObject; publicKey: KeyObject }): Pair {
  return { sign: p.privateKey, verify: p.publicKey };
}
const algorithms = Object.keys(keys) as SignatureAlgorithm[];
const body = '{"hello": "world"}';
const baseRequest = () => ({
  method: "POST",
  url: "https://example.com/foo?param=Value&Pet=dog",
  headers: {
    "content-type": "application/json",
    "content-digest": computeContentDigest(new TextEncoder().encode(body), ["sha-512"]),
  } as Record<string, string>,
});
const fields = [
  "@method",
  "@authority",
  "@path",
  "@query",
  "@target-uri",
  "content-type",
  "content-digest",
];

const ourSigner = (alg: SignatureAlgorithm, keyId: string): MessageSigner =>
  alg === "hmac-sha256"
    ? createHmacSigner(secret, { keyId })
    : createPrivateKeySigner(keys[alg].sign as KeyObject, alg, { keyId });
const ourVerifier = (alg: SignatureAlgorithm): MessageVerifier =>
  alg === "hmac-sha256"
    ? createHmacVerifier(secret)
    : createPublicKeyVerifier(keys[alg].verify as KeyObject, alg);

describe.each(algorithms)("interop %s", (alg) => {
  it("them → us", async () => {
    const req = baseRequest();
    const signed = await httpbis.signMessage(
      {
        key: createSigner(keys[alg].sign as never, alg, "their-key"),
        fields,
        params: ["created", "keyid", "alg"],
      },
      req,
    );
    const result = await verifyMessage(
      { ...signed, body: new TextEncoder().encode(body) },
      {
        keyLookup: (id) =>
          id !== "their-key"
            ? undefined
            : alg === "hmac-sha256"
              ? createHmacVerifier(secret)
              : createPublicKeyVerifier(keys[alg].verify as KeyObject, alg),
        contentDigest: "required",
        algorithms: [alg],
      },
    );
    expect(result).toMatchObject({ ok: true, keyId: "their-key", algorithm: alg });
  });

  it("us → them", async () => {
    const req = baseRequest();
    const signer =
      alg === "hmac-sha256"
        ? createHmacSigner(secret, { keyId: "our-key" })
        : createPrivateKeySigner(keys[alg].sign as KeyObject, alg, { keyId: "our-key" });
    const added = await signRequest(
      { ...req, body },
      { signer, components: fields, includeAlg: true, digest: false },
    );
    const headers = { ...req.headers, ...added };
    const verify = (h: Record<string, string>) =>
      httpbis.verifyMessage(
        {
          keyLookup: async (params) =>
            params.keyid === "our-key"
              ? {
                  id: "our-key",
                  algs: [alg],
                  verify: createVerifier(keys[alg].verify as never, alg),
                }
              : null,
        },
        { ...req, headers: h },
      );
    expect(await verify(headers)).toBe(true);
    await expect(verify({ ...headers, "content-type": "text/plain" })).resolves.not.toBe(true);
  });
});

/**
 * A response signed with `;req` components binds it to the request it answers (RFC 9421 §2.4):
 * the request's method, target and signature are part of the response's signature base.
 */
describe.each(algorithms)("interop %s, a response bound to its request", (alg) => {
  const responseBody = '{"ok":true}';
  const contentDigest = computeContentDigest(new TextEncoder().encode(responseBody), ["sha-256"]);
  const responseHeaders = { "content-type": "application/json", "content-digest": contentDigest };

  /** A request as the server received it, signed by the client (label sig1). */
  async function signedRequest(
    url = "https://example.com/foo?param=Value&Pet=dog",
  ): Promise<RequestMessage & { headers: Record<string, string> }> {
    const req = { ...baseRequest(), url };
    const added = await signRequest(
      { ...req, body },
      { signer: ourSigner(alg, "client"), components: ["@method", "@target-uri"], digest: false },
    );
    return { ...req, headers: { ...req.headers, ...added } };
  }

  it("us → them", async () => {
    const request = await signedRequest();
    const response: ResponseMessage = {
      status: 200,
      headers: responseHeaders,
      body: new TextEncoder().encode(responseBody),
    };
    const fields = await signMessage(response, {
      signer: ourSigner(alg, "server"),
      request,
      includeAlg: true,
      components: [
        "@status",
        "content-type",
        "content-digest",
        { component: "@method", req: true },
        { component: "@target-uri", req: true },
        { component: "signature", key: "sig1", req: true },
      ],
    });
    expect(fields.signatureInput).toContain('"signature";key="sig1";req');
    const verify = (status: number, req: RequestMessage & { headers: Record<string, string> }) =>
      httpbis.verifyMessage(
        {
          keyLookup: async (params) =>
            params.keyid === "server"
              ? {
                  id: "server",
                  algs: [alg],
                  verify: createVerifier(keys[alg].verify as never, alg),
                }
              : null,
        },
        {
          status,
          headers: {
            ...responseHeaders,
            "signature-input": fields.signatureInput,
            signature: fields.signature,
          },
        },
        req,
      );
    expect(await verify(200, request)).toBe(true);
    await expect(verify(201, request)).resolves.not.toBe(true);
    // The same response offered as the answer to another request of the same client.
    const other = await signedRequest("https://example.com/bar");
    await expect(verify(200, other)).resolves.not.toBe(true);
  });

  it("them → us", async () => {
    const request = await signedRequest();
    const signed = await httpbis.signMessage(
      {
        key: createSigner(keys[alg].sign as never, alg, "server"),
        fields: [
          "@status",
          "content-type",
          "content-digest",
          '"@method";req',
          '"@target-uri";req',
          '"signature";key="sig1";req',
        ],
        params: ["created", "keyid", "alg"],
      },
      { status: 200, headers: { ...responseHeaders } },
      request,
    );
    const policy = {
      keyLookup: (id: string) => (id === "server" ? ourVerifier(alg) : undefined),
      algorithms: [alg],
    };
    const response = {
      status: 200,
      headers: signed.headers as Record<string, string>,
      body: new TextEncoder().encode(responseBody),
    };
    expect(await verifyMessage(response, policy, request)).toMatchObject({
      ok: true,
      keyId: "server",
      algorithm: alg,
      covered: expect.arrayContaining(['"signature";key="sig1";req', '"@method";req']),
    });
    // Bound to the request: another request (its own signature) does not verify it.
    const other = await signedRequest("https://example.com/bar");
    expect(await verifyMessage(response, policy, other)).toMatchObject({
      ok: false,
      check: "signature",
    });
    expect(
      await verifyMessage({ ...response, body: new TextEncoder().encode("{}") }, policy, request),
    ).toMatchObject({ ok: false, check: "content-digest" });
  });
});
