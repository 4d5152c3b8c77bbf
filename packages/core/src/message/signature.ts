/**
 * The optional trailing ECDSA signature (docs/FORMAT.md §5.8). The signer's public key travels
 * in the encryption context as a base64 compressed point, so keyrings (and KMS) bind it to the
 * data key: whoever can only decrypt cannot re-sign a forged message under the same data key.
 */
import {
  createPublicKey,
  createSign,
  createVerify,
  ECDH,
  generateKeyPairSync,
  type KeyObject,
  type Sign,
  type Verify,
} from "node:crypto";
import { publicBuffer } from "../internal/public-bytes.ts";
import { invalidMessage, type SuiteInfo } from "./format.ts";

type SignatureSpec = NonNullable<SuiteInfo["signature"]>;

/** The signing state of one message being encrypted. */
export interface MessageSigning {
  readonly signer: Sign;
  readonly key: KeyObject;
  readonly spec: SignatureSpec;
}

const OPENSSL_CURVE = { "P-384": "secp384r1", "P-256": "prime256v1" } as const;

export interface SigningKey {
  readonly privateKey: KeyObject;
  /** Base64 of the compressed public point, for the encryption context. */
  readonly publicKey: string;
}

export function generateSigningKey(spec: SignatureSpec): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: spec.curve });
  const jwk = publicKey.export({ format: "jwk" });
  const uncompressed = Buffer.concat([
    Buffer.from([0x04]),
    Buffer.from(jwk.x!, "base64url"),
    Buffer.from(jwk.y!, "base64url"),
  ]);
  const compressed = ECDH.convertKey(
    uncompressed,
    OPENSSL_CURVE[spec.curve],
    undefined,
    undefined,
    "compressed",
  ) as Buffer;
  return { privateKey, publicKey: compressed.toString("base64") };
}

/** Bytes of a SEC 1 compressed point: a `02`/`03` prefix, then x. */
const COMPRESSED_POINT_LENGTH = { "P-384": 49, "P-256": 33 } as const;

/**
 * Reads the signer's public key from the context (§5.8), accepting only the one text the
 * encryptor writes: standard padded base64 of a compressed point on the suite's curve. Node's
 * base64 decoder skips characters outside the alphabet and takes base64url and missing padding,
 * and OpenSSL takes any point form, so without these checks one key had many spellings and a
 * reader comparing the context's text to a known signer's could be told "another signer".
 *
 * @throws InvalidCiphertextException when the text is not that spelling of a point on the curve.
 */
export function importVerifyingKey(spec: SignatureSpec, encoded: string | undefined): KeyObject {
  if (encoded === undefined) throw invalidMessage();
  const compressed = Buffer.from(encoded, "base64");
  if (
    compressed.toString("base64") !== encoded ||
    compressed.length !== COMPRESSED_POINT_LENGTH[spec.curve] ||
    (compressed[0] !== 0x02 && compressed[0] !== 0x03)
  ) {
    throw invalidMessage();
  }
  try {
    // Decompressing finds y, so an x with no point on the curve (or x ≥ p) fails here.
    const point = ECDH.convertKey(
      compressed,
      OPENSSL_CURVE[spec.curve],
      undefined,
      undefined,
      "uncompressed",
    ) as Buffer;
    const size = (point.length - 1) / 2;
    return createPublicKey({
      format: "jwk",
      key: {
        kty: "EC",
        crv: spec.curve,
        x: point.subarray(1, 1 + size).toString("base64url"),
        y: point.subarray(1 + size).toString("base64url"),
      },
    });
  } catch (cause) {
    throw invalidMessage(cause);
  }
}

export function newSigner(spec: SignatureSpec): Sign {
  return createSign(spec.hash);
}

export function newVerifier(spec: SignatureSpec): Verify {
  return createVerify(spec.hash);
}

/**
 * Order n of each suite's curve. ECDSA is malleable: when (r, s) verifies, so does (r, n − s).
 */
const CURVE_ORDER: Readonly<Record<SignatureSpec["curve"], bigint>> = {
  "P-256": 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  "P-384":
    0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
};

/**
 * Signature footer: u16 BE length || DER-encoded ECDSA signature with low S (s ≤ n/2, §5.8).
 * node:crypto signs with whichever S comes out (high half the time), so S is normalised here:
 * every signature we write then has one canonical form. Decryption still accepts high S, which
 * every message written before this normalisation may carry.
 */
export function signatureFooter({ signer, key, spec }: MessageSigning): Buffer {
  const raw = signer.sign({ key, dsaEncoding: "ieee-p1363" });
  const size = raw.length / 2;
  const order = CURVE_ORDER[spec.curve];
  let s = BigInt(`0x${raw.subarray(size).toString("hex")}`);
  if (s > order >> 1n) s = order - s;
  const r = derInteger(raw.subarray(0, size));
  const sBytes = derInteger(Buffer.from(s.toString(16).padStart(2 * size, "0"), "hex"));
  // At most 2 × (2 + 49) bytes for P-384, so the sequence length always fits one byte.
  const der = Buffer.concat([Buffer.from([0x30, r.length + sBytes.length]), r, sBytes]);
  const out = publicBuffer(2 + der.length);
  out.writeUInt16BE(der.length, 0);
  der.copy(out, 2);
  return out;
}

/** DER INTEGER of an unsigned big-endian value: minimal length, a 0x00 before a high bit. */
function derInteger(value: Buffer): Buffer {
  let start = 0;
  while (start < value.length - 1 && value[start] === 0) start++;
  const body = value.subarray(start);
  const pad = body[0]! >= 0x80 ? 1 : 0;
  const out = Buffer.alloc(2 + pad + body.length);
  out[0] = 0x02;
  out[1] = pad + body.length;
  body.copy(out, 2 + pad);
  return out;
}

/** Longest DER ECDSA signature we accept (P-384: at most 104 bytes). */
export const MAX_SIGNATURE_LENGTH = 128;
