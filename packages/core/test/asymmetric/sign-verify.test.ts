/**
 * Every signature the KMS makes is checked by the `openssl` CLI with the public key from
 * getPublicKey, and signatures OpenSSL makes with its own keys are checked by the KMS.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  InvalidSignatureError,
  type KeySpec,
  type MessageType,
  type SigningAlgorithm,
  UnsupportedOperationError,
} from "../../src/index.ts";
import {
  type ImportingKms,
  importingKms,
  openssl,
  opensslAccepts,
  Scratch,
  utf8,
} from "./harness.ts";

interface Case {
  readonly spec: KeySpec;
  readonly algorithm: SigningAlgorithm;
  readonly messageType: MessageType;
}

const HASH: Record<string, string> = { "256": "sha256", "384": "sha384", "512": "sha512" };
const hashOf = (algorithm: SigningAlgorithm): string => HASH[algorithm.slice(-3)]!;

const RSA_ALGORITHMS: SigningAlgorithm[] = [
  "RSASSA_PSS_SHA_256",
  "RSASSA_PSS_SHA_384",
  "RSASSA_PSS_SHA_512",
  "RSASSA_PKCS1_V1_5_SHA_256",
  "RSASSA_PKCS1_V1_5_SHA_384",
  "RSASSA_PKCS1_V1_5_SHA_512",
];

const CASES: Case[] = [
  ...(["RSA_2048", "RSA_3072", "RSA_4096"] as const).flatMap((spec) =>
    RSA_ALGORITHMS.flatMap((algorithm) => [
      { spec, algorithm, messageType: "RAW" as const },
      ...(algorithm.startsWith("RSASSA_PKCS1")
        ? [{ spec, algorithm, messageType: "DIGEST" as const }]
        : []),
    ]),
  ),
  ...(
    [
      ["ECC_NIST_P256", "ECDSA_SHA_256"],
      ["ECC_NIST_P384", "ECDSA_SHA_384"],
      ["ECC_NIST_P521", "ECDSA_SHA_512"],
      ["ECC_SECG_P256K1", "ECDSA_SHA_256"],
    ] as const
  ).flatMap(([spec, algorithm]) =>
    (["RAW", "DIGEST"] as const).map((messageType) => ({ spec, algorithm, messageType })),
  ),
  { spec: "ECC_NIST_EDWARDS25519", algorithm: "ED25519_SHA_512", messageType: "RAW" },
];

/** The OpenSSL command line that verifies (or, with `sign`, makes) a signature for a case. */
function opensslArgs(
  c: Case,
  mode: "verify" | "sign",
  keyPem: string,
  input: string,
  signature: string,
): string[] {
  const keyArgs = mode === "verify" ? ["-pubin", "-inkey", keyPem] : ["-inkey", keyPem];
  const sigArgs = mode === "verify" ? ["-sigfile", signature] : ["-out", signature];
  const pss = c.algorithm.startsWith("RSASSA_PSS")
    ? ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"]
    : [];
  if (c.algorithm === "ED25519_SHA_512") {
    return ["pkeyutl", `-${mode}`, ...keyArgs, "-rawin", "-in", input, ...sigArgs];
  }
  if (c.messageType === "DIGEST") {
    // pkeyutl over a digest: for RSA the digest option makes it a DigestInfo (PKCS#1 v1.5).
    const digest = c.spec.startsWith("RSA") ? ["-pkeyopt", `digest:${hashOf(c.algorithm)}`] : [];
    return ["pkeyutl", `-${mode}`, ...keyArgs, "-in", input, ...sigArgs, ...digest, ...pss];
  }
  const sigopt = pss.map((a) => (a === "-pkeyopt" ? "-sigopt" : a));
  const dgstKey = mode === "verify" ? ["-verify", keyPem] : ["-sign", keyPem];
  return [
    "dgst",
    `-${hashOf(c.algorithm)}`,
    ...dgstKey,
    ...sigopt,
    ...(mode === "verify" ? ["-signature", signature] : ["-out", signature]),
    input,
  ];
}

function genpkeyArgs(spec: KeySpec, out: string): string[] {
  const base = ["genpkey", "-out", out];
  if (spec.startsWith("RSA")) {
    return [...base, "-algorithm", "RSA", "-pkeyopt", `rsa_keygen_bits:${spec.slice(4)}`];
  }
  if (spec === "ECC_NIST_EDWARDS25519") return [...base, "-algorithm", "ED25519"];
  const curve = {
    ECC_NIST_P256: "P-256",
    ECC_NIST_P384: "P-384",
    ECC_NIST_P521: "P-521",
    ECC_SECG_P256K1: "secp256k1",
  }[spec as string]!;
  return [...base, "-algorithm", "EC", "-pkeyopt", `ec_paramgen_curve:${curve}`];
}

const message = utf8("The quick brown fox jumps over the lazy dog, signed by a KMS key.");

function inputFor(c: Case): Uint8Array {
  return c.messageType === "DIGEST"
    ? createHash(hashOf(c.algorithm)).update(message).digest()
    : message;
}

let h: ImportingKms;
const scratch = new Scratch();
/** One KMS-generated key per spec (with its public key as PEM) and one OpenSSL-generated key. */
const kmsKeys = new Map<KeySpec, { keyId: string; publicPem: string }>();
const opensslKeys = new Map<KeySpec, { keyId: string; privatePem: string }>();

beforeAll(async () => {
  h = await importingKms();
  for (const spec of new Set(CASES.map((c) => c.spec))) {
    const { keyMetadata } = await h.kms.createKey({ keySpec: spec, keyUsage: "SIGN_VERIFY" });
    const { publicKey } = await h.kms.getPublicKey({ keyId: keyMetadata.keyId });
    const publicPem = scratch.path(".pem");
    openssl([
      "pkey",
      "-pubin",
      "-inform",
      "DER",
      "-in",
      scratch.write(publicKey),
      "-out",
      publicPem,
    ]);
    kmsKeys.set(spec, { keyId: keyMetadata.keyId, publicPem });

    const privatePem = scratch.path(".pem");
    openssl(genpkeyArgs(spec, privatePem));
    const der = scratch.path(".der");
    openssl(["pkcs8", "-topk8", "-nocrypt", "-in", privatePem, "-outform", "DER", "-out", der]);
    opensslKeys.set(spec, {
      keyId: await h.importKey(spec, "SIGN_VERIFY", scratch.read(der)),
      privatePem,
    });
  }
}, 120_000);

afterAll(() => scratch.dispose());

const name = (c: Case) => `${c.spec} ${c.algorithm} ${c.messageType}`;

describe("KMS signatures verified by OpenSSL", () => {
  it.each(CASES.map((c) => [name(c), c] as const))("%s", async (_label, c) => {
    const { keyId, publicPem } = kmsKeys.get(c.spec)!;
    const input = inputFor(c);
    const { signature, signingAlgorithm } = await h.kms.sign({
      keyId,
      message: input,
      messageType: c.messageType,
      signingAlgorithm: c.algorithm,
    });
    expect(signingAlgorithm).toBe(c.algorithm);
    const inputPath = scratch.write(input);
    expect(
      opensslAccepts(opensslArgs(c, "verify", publicPem, inputPath, scratch.write(signature))),
    ).toBe(true);
    // The check can fail: one flipped bit and OpenSSL rejects the same signature.
    const tampered = signature.slice();
    tampered[tampered.length - 2]! ^= 0x01;
    expect(
      opensslAccepts(opensslArgs(c, "verify", publicPem, inputPath, scratch.write(tampered))),
    ).toBe(false);
    // And the KMS agrees with itself.
    await expect(
      h.kms.verify({
        keyId,
        message: input,
        messageType: c.messageType,
        signingAlgorithm: c.algorithm,
        signature,
      }),
    ).resolves.toMatchObject({ signatureValid: true });
  });
});

describe("OpenSSL signatures verified by the KMS", () => {
  it.each(CASES.map((c) => [name(c), c] as const))("%s", async (_label, c) => {
    const { keyId, privatePem } = opensslKeys.get(c.spec)!;
    const input = inputFor(c);
    const sigPath = scratch.path();
    openssl(opensslArgs(c, "sign", privatePem, scratch.write(input), sigPath));
    const signature = scratch.read(sigPath);
    const request = {
      keyId,
      message: input,
      messageType: c.messageType,
      signingAlgorithm: c.algorithm,
    };
    await expect(h.kms.verify({ ...request, signature })).resolves.toMatchObject({
      signatureValid: true,
    });
    const other = input.slice();
    other[0]! ^= 0x80;
    await expect(h.kms.verify({ ...request, message: other, signature })).rejects.toBeInstanceOf(
      InvalidSignatureError,
    );
  });
});

describe("signature format", () => {
  it("returns ECDSA signatures DER-encoded (SEQUENCE of two INTEGERs), as AWS does", async () => {
    const { keyId } = kmsKeys.get("ECC_NIST_P256")!;
    for (const messageType of ["RAW", "DIGEST"] as const) {
      const c: Case = { spec: "ECC_NIST_P256", algorithm: "ECDSA_SHA_256", messageType };
      const { signature } = await h.kms.sign({
        keyId,
        message: inputFor(c),
        messageType,
        signingAlgorithm: c.algorithm,
      });
      expect(signature[0]).toBe(0x30);
      expect(signature[1]).toBe(signature.length - 2);
      expect(signature[2]).toBe(0x02);
    }
  });

  it("a DIGEST signature verifies as a RAW signature of the message it is the digest of", async () => {
    const { keyId } = kmsKeys.get("ECC_NIST_P384")!;
    const digest = createHash("sha384").update(message).digest();
    const { signature } = await h.kms.sign({
      keyId,
      message: digest,
      messageType: "DIGEST",
      signingAlgorithm: "ECDSA_SHA_384",
    });
    await expect(
      h.kms.verify({ keyId, message, signingAlgorithm: "ECDSA_SHA_384", signature }),
    ).resolves.toMatchObject({ signatureValid: true });
  });

  it("refuses RSASSA_PSS over a DIGEST with UnsupportedOperationError (no hand-rolled EMSA-PSS)", async () => {
    const { keyId } = kmsKeys.get("RSA_2048")!;
    await expect(
      h.kms.sign({
        keyId,
        message: new Uint8Array(32),
        messageType: "DIGEST",
        signingAlgorithm: "RSASSA_PSS_SHA_256",
      }),
    ).rejects.toBeInstanceOf(UnsupportedOperationError);
  });

  it("rejects a garbage signature with InvalidSignatureError, never a false result", async () => {
    for (const [spec, algorithm] of [
      ["RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"],
      ["ECC_NIST_P256", "ECDSA_SHA_256"],
      ["ECC_NIST_EDWARDS25519", "ED25519_SHA_512"],
    ] as const) {
      const { keyId } = kmsKeys.get(spec)!;
      for (const signature of [
        new Uint8Array(1),
        new Uint8Array(64).fill(0xff),
        new Uint8Array(600),
      ]) {
        await expect(
          h.kms.verify({ keyId, message, signingAlgorithm: algorithm, signature }),
        ).rejects.toBeInstanceOf(InvalidSignatureError);
      }
    }
  });
});
