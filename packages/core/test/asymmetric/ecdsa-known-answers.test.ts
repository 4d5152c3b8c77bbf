/**
 * ECDSA known answers through the KMS's sign and verify (sources in each vectors/ecdsa-*.json):
 * RFC 6979 A.2.6/A.2.7 for P-384 and P-521 with imported keys, NIST CAVP SigVer for P-256/384/521
 * and Wycheproof secp256k1 with public keys. Each case runs both verification paths: RAW
 * (node:crypto) and DIGEST (@noble/curves), which must agree with the vectors and so with each
 * other.
 */
import { createHash, verify as nodeVerify } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { InvalidSignatureError, type SigningAlgorithm } from "../../src/index.ts";
import { hex, type ImportingKms, importingKms, utf8 } from "./harness.ts";
import {
  CURVES,
  type EccSpec,
  ecdsaDer,
  ecPkcs8,
  ecPoint,
  ecSpki,
  type PublicKeyVerifier,
  publicKeyVerifier,
  readVectors,
} from "./known-answer-keys.ts";

interface Rfc6979 {
  readonly keys: {
    readonly keySpec: EccSpec;
    readonly signingAlgorithm: SigningAlgorithm;
    readonly hash: string;
    readonly x: string;
    readonly Ux: string;
    readonly Uy: string;
    readonly signatures: { readonly message: string; readonly r: string; readonly s: string }[];
  }[];
}

interface CavpSigVer {
  readonly tests: {
    readonly keySpec: EccSpec;
    readonly signingAlgorithm: SigningAlgorithm;
    readonly msg: string;
    readonly qx: string;
    readonly qy: string;
    readonly r: string;
    readonly s: string;
    readonly valid: boolean;
    readonly result: string;
  }[];
}

interface WycheproofEcdsa {
  readonly groups: {
    readonly publicKey: string;
    readonly tests: {
      readonly tcId: number;
      readonly comment: string;
      readonly flags: string[];
      readonly msg: string;
      readonly sig: string;
      readonly result: "valid" | "invalid";
    }[];
  }[];
}

const rfc6979 = readVectors<Rfc6979>("ecdsa-rfc6979-p384-p521.json");
const cavp = readVectors<CavpSigVer>("ecdsa-cavp-sigver.json");
const secp256k1 = readVectors<WycheproofEcdsa>("ecdsa-wycheproof-secp256k1-sha256.json");

const HASH_OF: Readonly<Partial<Record<SigningAlgorithm, string>>> = {
  ECDSA_SHA_256: "sha256",
  ECDSA_SHA_384: "sha384",
  ECDSA_SHA_512: "sha512",
};
const digestOf = (algorithm: SigningAlgorithm, message: Uint8Array): Uint8Array =>
  new Uint8Array(createHash(HASH_OF[algorithm]!).update(message).digest());

let h: ImportingKms;
let verifyWithPublicKey: PublicKeyVerifier;
beforeAll(async () => {
  h = await importingKms();
  verifyWithPublicKey = await publicKeyVerifier();
});

/** Both KMS verification paths for a public key alone; a key OpenSSL cannot parse verifies nothing. */
function acceptedBy(
  spec: EccSpec,
  spki: Uint8Array,
  algorithm: SigningAlgorithm,
  message: Uint8Array,
  signature: Uint8Array,
): { raw: boolean; digest: boolean } {
  const attempt = (messageType: "RAW" | "DIGEST", input: Uint8Array) => {
    try {
      return verifyWithPublicKey(spec, spki, algorithm, messageType, input, signature);
    } catch {
      return false;
    }
  };
  return {
    raw: attempt("RAW", message),
    digest: attempt("DIGEST", digestOf(algorithm, message)),
  };
}

describe("RFC 6979 A.2.6 / A.2.7 with the RFC's private keys", () => {
  const rows = rfc6979.keys.flatMap((key) =>
    key.signatures.map((sig) => [`${key.keySpec} "${sig.message}"`, key, sig] as const),
  );

  it.each(rows)("%s", async (_name, key, sig) => {
    // Without a public key in the PKCS#8, OpenSSL derives it: the KMS must publish the RFC's U.
    const keyId = await h.importKey(key.keySpec, "SIGN_VERIFY", ecPkcs8(key.keySpec, key.x));
    const point = ecPoint(key.keySpec, key.Ux, key.Uy);
    const { publicKey } = await h.kms.getPublicKey({ keyId });
    expect(Buffer.from(publicKey).toString("hex")).toBe(
      Buffer.from(ecSpki(key.keySpec, point)).toString("hex"),
    );

    const message = utf8(sig.message);
    const signature = ecdsaDer(key.keySpec, sig.r, sig.s);
    const raw = { keyId, message, signingAlgorithm: key.signingAlgorithm, signature } as const;
    const ofDigest = {
      ...raw,
      message: digestOf(key.signingAlgorithm, message),
      messageType: "DIGEST",
    } as const;
    await expect(h.kms.verify(raw)).resolves.toMatchObject({ signatureValid: true });
    await expect(h.kms.verify(ofDigest)).resolves.toMatchObject({ signatureValid: true });
    const otherMessage = { ...raw, message: utf8(`${sig.message}.`) };
    await expect(h.kms.verify(otherMessage)).rejects.toBeInstanceOf(InvalidSignatureError);
    const otherS = ecdsaDer(key.keySpec, sig.r, (BigInt(`0x${sig.s}`) ^ 1n).toString(16));
    await expect(h.kms.verify({ ...raw, signature: otherS })).rejects.toBeInstanceOf(
      InvalidSignatureError,
    );
    await expect(h.kms.verify({ ...ofDigest, signature: otherS })).rejects.toBeInstanceOf(
      InvalidSignatureError,
    );

    // The KMS's own signatures (random k) verify under the RFC's key in the other library:
    // RAW ones (OpenSSL) with @noble/curves, DIGEST ones (@noble/curves) with OpenSSL.
    const signedRaw = await h.kms.sign({ keyId, message, signingAlgorithm: key.signingAlgorithm });
    expect(
      CURVES[key.keySpec].noble.verify(
        signedRaw.signature,
        digestOf(key.signingAlgorithm, message),
        point,
        { prehash: false, format: "der", lowS: false },
      ),
    ).toBe(true);
    const signedDigest = await h.kms.sign({
      keyId,
      message: digestOf(key.signingAlgorithm, message),
      messageType: "DIGEST",
      signingAlgorithm: key.signingAlgorithm,
    });
    const spki = { key: Buffer.from(publicKey), format: "der", type: "spki" } as const;
    expect(
      nodeVerify(key.hash, message, { ...spki, dsaEncoding: "der" }, signedDigest.signature),
    ).toBe(true);
  });
});

describe("NIST CAVP ECDSA SigVer (FIPS 186-3)", () => {
  const rows = cavp.tests.map(
    (t, i) => [`${t.keySpec} #${i} ${t.valid ? "valid" : t.result}`, t] as const,
  );
  it.each(rows)("%s", (_name, t) => {
    const spki = ecSpki(t.keySpec, ecPoint(t.keySpec, t.qx, t.qy));
    const signature = ecdsaDer(t.keySpec, t.r, t.s);
    const accepted = acceptedBy(t.keySpec, spki, t.signingAlgorithm, hex(t.msg), signature);
    expect(accepted).toEqual({ raw: t.valid, digest: t.valid });
  });

  it("covers every result kind for each of the three curves", () => {
    for (const spec of ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] as const) {
      const kinds = new Set(cavp.tests.filter((t) => t.keySpec === spec).map((t) => t.result));
      expect([...kinds].sort()).toEqual([
        "1 - Message changed",
        "2 - R changed",
        "3 - S changed",
        "4 - Q changed",
        "valid",
      ]);
    }
  });
});

describe("Wycheproof ECDSA secp256k1 / SHA-256", () => {
  const rows = secp256k1.groups.flatMap((group) =>
    group.tests.map((t) => [`tcId ${t.tcId} ${t.result}: ${t.comment}`, group, t] as const),
  );
  it.each(rows)("%s", (_name, group, t) => {
    const spki = ecSpki("ECC_SECG_P256K1", hex(group.publicKey));
    const valid = t.result === "valid";
    expect(acceptedBy("ECC_SECG_P256K1", spki, "ECDSA_SHA_256", hex(t.msg), hex(t.sig))).toEqual({
      raw: valid,
      digest: valid,
    });
  });
});
