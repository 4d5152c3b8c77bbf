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
  type SignatureAlgorithm,
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
