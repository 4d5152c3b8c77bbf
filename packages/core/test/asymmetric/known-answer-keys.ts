/**
 * Builders for the known-answer suites (rsa-/ecdsa-/ecdh-known-answers.test.ts): the vectors
 * give keys as numbers and points, the KMS imports PKCS#8 and SPKI. The DER here is written by
 * hand rather than by node:crypto, so a test can also hand the KMS a key OpenSSL would refuse to
 * write (an off-curve public key in a private key, a public key with another exponent).
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { p256, p384, p521 } from "@noble/curves/nist.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { asymmetricHsm, type SigningMessageType } from "../../src/hsm/asymmetric.ts";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { type KeySpec, MemoryKeyStore, type SigningAlgorithm } from "../../src/index.ts";
import { hex } from "./harness.ts";

export type EccSpec = "ECC_NIST_P256" | "ECC_NIST_P384" | "ECC_NIST_P521" | "ECC_SECG_P256K1";

interface CurveFacts {
  /** DER of the named curve's OBJECT IDENTIFIER (RFC 5480 §2.1.1.1). */
  readonly oid: Uint8Array;
  /** Bytes of a field element and of a scalar. */
  readonly size: number;
  readonly noble: typeof p256 | typeof p384 | typeof p521 | typeof secp256k1;
}

export const CURVES: Readonly<Record<EccSpec, CurveFacts>> = {
  ECC_NIST_P256: { oid: hex("06082a8648ce3d030107"), size: 32, noble: p256 },
  ECC_NIST_P384: { oid: hex("06052b81040022"), size: 48, noble: p384 },
  ECC_NIST_P521: { oid: hex("06052b81040023"), size: 66, noble: p521 },
  ECC_SECG_P256K1: { oid: hex("06052b8104000a"), size: 32, noble: secp256k1 },
};

const EC_PUBLIC_KEY_OID = hex("06072a8648ce3d0201");

export function readVectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`./vectors/${name}`, import.meta.url), "utf8")) as T;
}

export const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/** One DER TLV; lengths up to 65535, which covers every key here. */
function tlv(tag: number, ...content: Uint8Array[]): Uint8Array {
  const body = concat(...content);
  const n = body.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return concat(Uint8Array.of(tag, ...length), body);
}

/** A hex number as exactly `size` big-endian bytes (vectors drop or add leading zeros). */
export function fixedBytes(value: string, size: number): Uint8Array {
  const digits = value.replace(/^0+/, "").toLowerCase();
  if (digits.length > size * 2) throw new Error(`${value} does not fit ${size} bytes`);
  return hex(digits.padStart(size * 2, "0"));
}

/** SubjectPublicKeyInfo (RFC 5480) for a SEC 1 point on the spec's curve. */
export function ecSpki(spec: EccSpec, point: Uint8Array): Uint8Array {
  return tlv(
    0x30,
    tlv(0x30, EC_PUBLIC_KEY_OID, CURVES[spec].oid),
    tlv(0x03, Uint8Array.of(0), point),
  );
}

/** Uncompressed SEC 1 point from its coordinates. */
export function ecPoint(spec: EccSpec, x: string, y: string): Uint8Array {
  const { size } = CURVES[spec];
  return concat(Uint8Array.of(0x04), fixedBytes(x, size), fixedBytes(y, size));
}

/**
 * PKCS#8 (RFC 5208) around an RFC 5915 ECPrivateKey. Without `point` the optional public key is
 * left out, so that OpenSSL derives it from d (the test can then compare the KMS's public key
 * with the vector's); with one, it is stored as given, even when it is not d·G.
 */
export function ecPkcs8(spec: EccSpec, d: string, point?: Uint8Array): Uint8Array {
  const { size, oid } = CURVES[spec];
  const ecPrivateKey = tlv(
    0x30,
    tlv(0x02, Uint8Array.of(1)),
    tlv(0x04, fixedBytes(d, size)),
    ...(point === undefined ? [] : [tlv(0xa1, tlv(0x03, Uint8Array.of(0), point))]),
  );
  return tlv(
    0x30,
    tlv(0x02, Uint8Array.of(0)),
    tlv(0x30, EC_PUBLIC_KEY_OID, oid),
    tlv(0x04, ecPrivateKey),
  );
}

/** DER ECDSA-Sig-Value from r and s, as AWS returns ECDSA signatures. */
export function ecdsaDer(spec: EccSpec, r: string, s: string): Uint8Array {
  const { size, noble } = CURVES[spec];
  const compact = concat(fixedBytes(r, size), fixedBytes(s, size));
  return noble.Signature.fromBytes(compact, "compact").toBytes("der");
}

const big = (value: string): bigint => BigInt(`0x${value}`);
const b64url = (value: bigint): string => {
  const digits = value.toString(16);
  return Buffer.from(digits.length % 2 ? `0${digits}` : digits, "hex").toString("base64url");
};
const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;
function inverse(a: bigint, m: bigint): bigint {
  let [oldR, r, oldS, s] = [mod(a, m), m, 1n, 0n];
  while (r !== 0n) {
    const q = oldR / r;
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  if (oldR !== 1n) throw new Error("not invertible");
  return mod(oldS, m);
}

/**
 * PKCS#8 of an RSA key given as n, e, d and the primes (CAVP and RSA Laboratories vectors);
 * the CRT exponents and coefficient are derived when a vector leaves them out.
 */
export function rsaPkcs8(key: {
  readonly n: string;
  readonly e: string;
  readonly d: string;
  readonly p: string;
  readonly q: string;
}): Uint8Array {
  const [p, q, d] = [big(key.p), big(key.q), big(key.d)];
  const jwk = {
    kty: "RSA",
    n: b64url(big(key.n)),
    e: b64url(big(key.e)),
    d: b64url(d),
    p: b64url(p),
    q: b64url(q),
    dp: b64url(d % (p - 1n)),
    dq: b64url(d % (q - 1n)),
    qi: b64url(inverse(q, p)),
  };
  return new Uint8Array(
    createPrivateKey({ key: jwk, format: "jwk" }).export({ format: "der", type: "pkcs8" }),
  );
}

/** SPKI of an RSA public key (n, e). */
export function rsaSpki(n: string, e: string): Uint8Array {
  return new Uint8Array(
    createPublicKey({
      key: { kty: "RSA", n: b64url(big(n)), e: b64url(big(e)) },
      format: "jwk",
    }).export({ format: "der", type: "spki" }),
  );
}

export type PublicKeyVerifier = (
  spec: KeySpec,
  spki: Uint8Array,
  algorithm: SigningAlgorithm,
  messageType: SigningMessageType,
  message: Uint8Array,
  signature: Uint8Array,
) => boolean;

/**
 * Verification with a public key alone, through the HSM primitive `Kms.verify` ends in (RAW and
 * DIGEST): the Kms itself verifies only with keys whose private material it holds, and CAVP and
 * Wycheproof verification vectors give public keys only.
 */
export async function publicKeyVerifier(): Promise<PublicKeyVerifier> {
  const root = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), new MemoryKeyStore());
  return (spec, spki, algorithm, messageType, message, signature) =>
    asymmetricHsm(hsm).verify(
      globalThis.crypto.randomUUID(),
      1,
      spki,
      spec,
      algorithm,
      messageType,
      message,
      signature,
    );
}
