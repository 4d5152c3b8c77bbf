/**
 * The optional trailing ECDSA signature (docs/FORMAT.md §5.5). The signer's public key travels
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

/** @throws InvalidCiphertextException when the context's public key is not a point on the curve. */
export function importVerifyingKey(spec: SignatureSpec, encoded: string | undefined): KeyObject {
  if (encoded === undefined) throw invalidMessage();
  try {
    const point = ECDH.convertKey(
      Buffer.from(encoded, "base64"),
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

/** Signature footer: u16 BE length || DER-encoded ECDSA signature. */
export function signatureFooter(signer: Sign, key: KeyObject): Buffer {
  const der = signer.sign({ key, dsaEncoding: "der" });
  const out = publicBuffer(2 + der.length);
  out.writeUInt16BE(der.length, 0);
  der.copy(out, 2);
  return out;
}

/** Longest DER ECDSA signature we accept (P-384: at most 104 bytes). */
export const MAX_SIGNATURE_LENGTH = 128;
