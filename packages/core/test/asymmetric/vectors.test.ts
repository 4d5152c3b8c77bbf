/** Known-answer vectors (see vectors/README.md for sources) through the public Kms methods. */
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { p256 } from "@noble/curves/nist.js";
import { beforeAll, describe, expect, it } from "vitest";
import { InvalidMacError, InvalidSignatureError, type MacAlgorithm } from "../../src/index.ts";
import { hex, type ImportingKms, importingKms } from "./harness.ts";

const hmacVectors = JSON.parse(
  readFileSync(new URL("./vectors/rfc4231-hmac.json", import.meta.url), "utf8"),
) as { cases: Record<string, string>[] };
interface EdVector {
  readonly name: string;
  readonly secretKey: string;
  readonly publicKey: string;
  readonly message: string;
  readonly signature: string;
}
interface EcdsaVector {
  readonly name: string;
  readonly privateKey?: string;
  readonly message: string;
  readonly r: string;
  readonly s: string;
  readonly valid: boolean;
}
interface SignatureVectors {
  readonly ed25519: EdVector[];
  readonly ed25519ph: EdVector[];
  readonly ecdsaP256Sha256: EcdsaVector[];
  readonly wycheproofEcdsaP256Sha256: { publicKey: string; tests: EcdsaVector[] };
}
const sigVectors = JSON.parse(
  readFileSync(new URL("./vectors/signatures.json", import.meta.url), "utf8"),
) as SignatureVectors;
const named = <T extends { name: string }>(list: T[]): [string, T][] =>
  list.map((v) => [v.name, v]);

const ED25519_PKCS8_PREFIX = hex("302e020100300506032b657004220420");
const P256_SPKI_PREFIX = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const derSignature = (r: string, s: string) =>
  p256.Signature.fromBytes(concat(hex(r), hex(s)), "compact").toBytes("der");

let h: ImportingKms;
beforeAll(async () => {
  h = await importingKms();
});

describe("RFC 4231 HMAC through generateMac / verifyMac", () => {
  const specs = [
    ["HMAC_224", "HMAC_SHA_224", "sha224"],
    ["HMAC_256", "HMAC_SHA_256", "sha256"],
    ["HMAC_384", "HMAC_SHA_384", "sha384"],
    ["HMAC_512", "HMAC_SHA_512", "sha512"],
  ] as const;
  const rows = hmacVectors.cases.flatMap((c) =>
    specs.map((s) => [`${c.name} ${s[1]}`, c, ...s] as const),
  );
  it.each(rows)("%s", async (_name, c, spec, algorithm, field) => {
    const keyId = await h.importKey(spec, "GENERATE_VERIFY_MAC", hex(c.key!));
    const message = hex(c.data!);
    const { mac } = await h.kms.generateMac({
      keyId,
      message,
      macAlgorithm: algorithm as MacAlgorithm,
    });
    expect(Buffer.from(mac).toString("hex")).toBe(c[field]);
    await expect(
      h.kms.verifyMac({ keyId, message, macAlgorithm: algorithm, mac: hex(c[field]!) }),
    ).resolves.toMatchObject({ macValid: true });
    const wrong = hex(c[field]!);
    wrong[wrong.length - 1]! ^= 1;
    await expect(
      h.kms.verifyMac({ keyId, message, macAlgorithm: algorithm, mac: wrong }),
    ).rejects.toBeInstanceOf(InvalidMacError);
  });
});

describe("RFC 8032 Ed25519 (PureEdDSA, RAW)", () => {
  it.each(named(sigVectors.ed25519))("%s", async (_n, v) => {
    const keyId = await h.importKey(
      "ECC_NIST_EDWARDS25519",
      "SIGN_VERIFY",
      concat(ED25519_PKCS8_PREFIX, hex(v.secretKey)),
    );
    const { publicKey } = await h.kms.getPublicKey({ keyId });
    expect(Buffer.from(publicKey).subarray(-32).toString("hex")).toBe(v.publicKey);
    const message = hex(v.message);
    // Ed25519 is deterministic: the KMS must produce exactly the published signature.
    const { signature } = await h.kms.sign({
      keyId,
      message,
      signingAlgorithm: "ED25519_SHA_512",
    });
    expect(Buffer.from(signature).toString("hex")).toBe(v.signature);
    await expect(
      h.kms.verify({
        keyId,
        message,
        signingAlgorithm: "ED25519_SHA_512",
        signature: hex(v.signature),
      }),
    ).resolves.toMatchObject({ signatureValid: true });
    const tampered = hex(v.signature);
    tampered[0]! ^= 1;
    await expect(
      h.kms.verify({ keyId, message, signingAlgorithm: "ED25519_SHA_512", signature: tampered }),
    ).rejects.toBeInstanceOf(InvalidSignatureError);
  });
});

describe("RFC 8032 Ed25519ph (HashEdDSA, DIGEST)", () => {
  it.each(named(sigVectors.ed25519ph))("%s", async (_n, v) => {
    const keyId = await h.importKey(
      "ECC_NIST_EDWARDS25519",
      "SIGN_VERIFY",
      concat(ED25519_PKCS8_PREFIX, hex(v.secretKey)),
    );
    const digest = createHash("sha512").update(hex(v.message)).digest();
    const request = {
      keyId,
      message: digest,
      messageType: "DIGEST",
      signingAlgorithm: "ED25519_PH_SHA_512",
    } as const;
    const { signature } = await h.kms.sign(request);
    expect(Buffer.from(signature).toString("hex")).toBe(v.signature);
    await expect(h.kms.verify({ ...request, signature })).resolves.toMatchObject({
      signatureValid: true,
    });
    // A PureEdDSA signature of the same bytes is a different signature and must not pass.
    const pure = await h.kms.sign({
      keyId,
      message: digest,
      signingAlgorithm: "ED25519_SHA_512",
    });
    await expect(h.kms.verify({ ...request, signature: pure.signature })).rejects.toBeInstanceOf(
      InvalidSignatureError,
    );
  });
});

describe("RFC 6979 ECDSA P-256 verified by the KMS", () => {
  it.each(named(sigVectors.ecdsaP256Sha256))("%s", async (_n, v) => {
    const d = hex(v.privateKey!);
    const point = p256.getPublicKey(d, false);
    const pkcs8 = createPrivateKey({
      key: {
        kty: "EC",
        crv: "P-256",
        d: Buffer.from(d).toString("base64url"),
        x: Buffer.from(point.subarray(1, 33)).toString("base64url"),
        y: Buffer.from(point.subarray(33)).toString("base64url"),
      },
      format: "jwk",
    }).export({ format: "der", type: "pkcs8" });
    const keyId = await h.importKey("ECC_NIST_P256", "SIGN_VERIFY", new Uint8Array(pkcs8));
    const signature = derSignature(v.r, v.s);
    const message = hex(v.message);
    await expect(
      h.kms.verify({ keyId, message, signingAlgorithm: "ECDSA_SHA_256", signature }),
    ).resolves.toMatchObject({ signatureValid: true });
    await expect(
      h.kms.verify({
        keyId,
        message: createHash("sha256").update(message).digest(),
        messageType: "DIGEST",
        signingAlgorithm: "ECDSA_SHA_256",
        signature,
      }),
    ).resolves.toMatchObject({ signatureValid: true });
    await expect(
      h.kms.verify({
        keyId,
        message: hex("73616d706c66"),
        signingAlgorithm: "ECDSA_SHA_256",
        signature,
      }),
    ).rejects.toBeInstanceOf(InvalidSignatureError);
  });
});

describe("Wycheproof ECDSA P-256 verified by the HSM primitive behind Kms.verify", () => {
  const group = sigVectors.wycheproofEcdsaP256Sha256;
  it.each(named(group.tests))("%s", (_n, t) => {
    const valid = h.verifyWithPublicKey(
      "ECC_NIST_P256",
      concat(P256_SPKI_PREFIX, hex(group.publicKey)),
      "ECDSA_SHA_256",
      hex(t.message),
      derSignature(t.r, t.s),
    );
    expect(valid).toBe(t.valid);
  });
});
