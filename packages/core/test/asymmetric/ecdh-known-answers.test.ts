/**
 * ECDH known answers through Kms.deriveSharedSecret with imported keys (sources in each
 * vectors/ecdh-*.json): the NIST CAVP KAS ECC CDH validity test for P-256/384/521 and Wycheproof
 * secp256r1, and the peer-key rules: a bad peer key is a ValidationError that names the problem
 * and not the bytes, and a key is taken only in the exact DER encoding OpenSSL would write.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { ValidationError } from "../../src/index.ts";
import { hex, type ImportingKms, importingKms } from "./harness.ts";
import {
  CURVES,
  concat,
  type EccSpec,
  ecPkcs8,
  ecPoint,
  ecSpki,
  fixedBytes,
  readVectors,
} from "./known-answer-keys.ts";

interface CavpKas {
  readonly tests: {
    readonly keySpec: EccSpec;
    readonly count: number;
    readonly dsIUT: string;
    readonly QsIUTx: string;
    readonly QsIUTy: string;
    readonly QsCAVSx: string;
    readonly QsCAVSy: string;
    readonly Z: string;
    readonly valid: boolean;
    readonly code: number;
    readonly result: string;
  }[];
}

interface WycheproofEcdh {
  readonly tests: {
    readonly tcId: number;
    readonly comment: string;
    readonly flags: string[];
    readonly public: string;
    readonly private: string;
    readonly shared: string;
    readonly result: "valid" | "invalid" | "acceptable";
  }[];
  readonly invalidAsn: {
    readonly private: string;
    readonly shared: string;
    readonly wellFormedPublic: string;
    readonly tests: { readonly tcId: number; readonly comment: string; readonly public: string }[];
  };
}

const kas = readVectors<CavpKas>("ecdh-cavp-kas-zz.json");
const wycheproof = readVectors<WycheproofEcdh>("ecdh-wycheproof-secp256r1.json");

const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

let h: ImportingKms;
beforeAll(async () => {
  h = await importingKms();
});

const derive = async (keyId: string, publicKey: Uint8Array): Promise<string> =>
  toHex(
    (await h.kms.deriveSharedSecret({ keyId, keyAgreementAlgorithm: "ECDH", publicKey }))
      .sharedSecret,
  );

describe("NIST CAVP KAS ECC CDH (ZZ only), the KMS as the IUT", () => {
  const rows = kas.tests.map(
    (t) => [`${t.keySpec} COUNT ${t.count}: ${t.code} ${t.result}`, t] as const,
  );

  it.each(rows)("%s", async (_name, t) => {
    const own = ecPoint(t.keySpec, t.QsIUTx, t.QsIUTy);
    const peer = ecSpki(t.keySpec, ecPoint(t.keySpec, t.QsCAVSx, t.QsCAVSy));
    const expectedZ = toHex(fixedBytes(t.Z, CURVES[t.keySpec].size));
    // async: the harness's import throws synchronously for a key pair the HSM refuses.
    const importOwn = async () =>
      h.importKey(t.keySpec, "KEY_AGREEMENT", ecPkcs8(t.keySpec, t.dsIUT, own));
    switch (t.code) {
      case 0: // correct
      case 13: // correct, and Z starts with a zero nibble: the output keeps its full length
        expect(await derive(await importOwn(), peer)).toBe(expectedZ);
        return;
      case 1: // the peer's x or y changed: not a point on the curve
      case 2:
        await expect(derive(await importOwn(), peer)).rejects.toBeInstanceOf(ValidationError);
        return;
      case 5: // the IUT's own public key is off the curve: the KMS refuses the key pair
      case 6:
        await expect(importOwn()).rejects.toBeInstanceOf(ValidationError);
        return;
      case 7: // the IUT's private key changed, or the published Z did
      case 8:
        expect(await derive(await importOwn(), peer)).not.toBe(expectedZ);
        return;
      default:
        throw new Error(`unexpected result code ${t.code}`);
    }
  });

  it("covers every result code on each of the three curves", () => {
    for (const spec of ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] as const) {
      const codes = new Set(kas.tests.filter((t) => t.keySpec === spec).map((t) => t.code));
      expect([...codes].sort((a, b) => a - b)).toEqual([0, 1, 2, 5, 6, 7, 8, 13]);
    }
  });
});

describe("Wycheproof ECDH secp256r1", () => {
  const keys = new Map<string, Promise<string>>();
  /** One KMS key per Wycheproof private key (vectors write it with a sign byte at times). */
  const keyFor = (d: string) => {
    const normalized = toHex(fixedBytes(d, 32));
    let keyId = keys.get(normalized);
    if (keyId === undefined) {
      keyId = h.importKey("ECC_NIST_P256", "KEY_AGREEMENT", ecPkcs8("ECC_NIST_P256", normalized));
      keys.set(normalized, keyId);
    }
    return keyId;
  };

  const rows = wycheproof.tests.map(
    (t) => [`tcId ${t.tcId} ${t.result} [${t.flags.join(", ")}]: ${t.comment}`, t] as const,
  );
  it.each(rows)("%s", async (_name, t) => {
    const keyId = await keyFor(t.private);
    // Of the "acceptable" cases only the compressed point is taken (OpenSSL decodes it, RFC 5480
    // allows it); keys on explicitly encoded curves are not DER OpenSSL would write.
    const accepted = t.result === "valid" || t.flags.includes("CompressedPublic");
    if (accepted) {
      expect(await derive(keyId, hex(t.public))).toBe(t.shared);
    } else {
      await expect(derive(keyId, hex(t.public))).rejects.toBeInstanceOf(ValidationError);
    }
  });

  const asn = wycheproof.invalidAsn;
  it("the InvalidAsn cases' key itself, DER-encoded, agrees", async () => {
    expect(await derive(await keyFor(asn.private), hex(asn.wellFormedPublic))).toBe(asn.shared);
  });

  it.each(asn.tests.map((t) => [`tcId ${t.tcId}: ${t.comment}`, t] as const))(
    "InvalidAsn %s is refused",
    async (_name, t) => {
      const keyId = await keyFor(asn.private);
      await expect(derive(keyId, hex(t.public))).rejects.toBeInstanceOf(ValidationError);
    },
  );
});

describe("peer keys: failures are ValidationError, and only exact DER is taken", () => {
  const specs = ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"] as const;
  const keyOf = new Map<EccSpec, Promise<string>>();
  const keyFor = (spec: EccSpec) => {
    let keyId = keyOf.get(spec);
    if (keyId === undefined) {
      keyId = (async () =>
        (await h.kms.createKey({ keySpec: spec, keyUsage: "KEY_AGREEMENT" })).keyMetadata.keyId)();
      keyOf.set(spec, keyId);
    }
    return keyId;
  };
  const peerOf = (spec: EccSpec) =>
    ecSpki(
      spec,
      CURVES[spec].noble.getPublicKey(CURVES[spec].noble.utils.randomSecretKey(), false),
    );
  const refusal = async (spec: EccSpec, publicKey: Uint8Array): Promise<ValidationError> => {
    const error = await derive(await keyFor(spec), publicKey).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    const message = (error as ValidationError).message;
    // The message names the problem, never the key's bytes.
    expect(message).not.toContain(toHex(publicKey).slice(-16));
    return error as ValidationError;
  };

  it.each(specs)("%s: the point at infinity", async (spec) => {
    // SEC 1 §2.3.3: the point at infinity is the single octet 00.
    const error = await refusal(spec, ecSpki(spec, Uint8Array.of(0)));
    expect(error.message).toMatch(/point at infinity/);
  });

  it.each(specs)("%s: a valid key with bytes after it", async (spec) => {
    const peer = peerOf(spec);
    expect(await derive(await keyFor(spec), peer)).toHaveLength(CURVES[spec].size * 2);
    for (const extra of [Uint8Array.of(0), Uint8Array.of(0x05, 0x00)]) {
      const error = await refusal(spec, concat(peer, extra));
      expect(error.message).toMatch(/must end where its SubjectPublicKeyInfo ends/);
    }
  });

  it.each(specs)(
    "%s: the point compressed agrees; in X9.62 hybrid form it is refused",
    async (spec) => {
      const { noble } = CURVES[spec];
      const secret = noble.utils.randomSecretKey();
      const uncompressed = noble.getPublicKey(secret, false);
      const keyId = await keyFor(spec);
      const z = await derive(keyId, ecSpki(spec, uncompressed));
      expect(await derive(keyId, ecSpki(spec, noble.getPublicKey(secret, true)))).toBe(z);
      // RFC 5480 §2.2: the hybrid form (06/07 by the parity of y, then x and y) MUST NOT be used.
      // OpenSSL parses it and writes it back unchanged, so only an explicit rule refuses it.
      const hybrid = uncompressed.slice();
      hybrid[0] = 0x06 | (uncompressed[uncompressed.length - 1]! & 1);
      const error = await refusal(spec, ecSpki(spec, hybrid));
      expect(error.message).toMatch(/uncompressed \(04\) or compressed/);
    },
  );

  it.each(specs)("%s: the same key with a BER (long-form) outer length", async (spec) => {
    const peer = peerOf(spec);
    // Re-encode the outer SEQUENCE length one byte longer than DER allows.
    const bodyStart = peer[1]! & 0x80 ? 2 + (peer[1]! & 0x7f) : 2;
    const body = peer.subarray(bodyStart);
    const ber = concat(Uint8Array.of(0x30, 0x82, body.length >> 8, body.length & 0xff), body);
    const error = await refusal(spec, ber);
    expect(error.message).toMatch(/DER/);
  });
});
