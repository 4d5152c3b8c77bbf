/**
 * The HSM extension for every key that is not SYMMETRIC_DEFAULT: RSA, ECC, Ed25519, HMAC and
 * ML-DSA. Private material exists in plaintext only here; it is stored wrapped under the root
 * key by the SoftwareHsm (PKCS#8 DER for RSA/ECC/Ed25519, the 32-byte seed ξ for ML-DSA, raw
 * bytes for HMAC) and parsed once per key version into a cached KeyObject.
 *
 * Crypto sources: node:crypto (OpenSSL) for everything it offers; @noble/curves for the two
 * things node cannot do — ECDSA over a caller-supplied digest and Ed25519ph (RFC 8032
 * HashEdDSA); @noble/post-quantum for ML-DSA keygen from a seed and external-μ signing, and as
 * the ML-DSA fallback on Node versions whose OpenSSL lacks it.
 */
import {
  constants,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPair,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
  privateDecrypt,
  privateEncrypt,
  publicDecrypt,
  publicEncrypt,
  randomFillSync,
  timingSafeEqual,
} from "node:crypto";
import { promisify } from "node:util";
import { eddsa } from "@noble/curves/abstract/edwards.js";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256, p384, p521 } from "@noble/curves/nist.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { invalidCiphertext } from "../envelope/ciphertext-blob.ts";
import { KmsInternalError, RootKeyError, ValidationError } from "../errors.ts";
import {
  type CurveName,
  type HashName,
  KEY_SPEC_TABLE,
  type KeySpecInfo,
  SIGNING_ALGORITHM_TABLE,
} from "../key-specs.ts";
import type { KeySpec, SigningAlgorithm } from "../types.ts";
import type { MaterialRef, SoftwareHsm } from "./software-hsm.ts";

const generateKeyPairAsync = promisify(generateKeyPair);

/** Signing input after the operation layer has checked the message type and length. */
export type SigningMessageType = "RAW" | "DIGEST" | "EXTERNAL_MU";

/** New material for a key version: wrapped private part plus the DER SPKI, if any. */
export interface WrappedKeyMaterial {
  readonly wrappedMaterial: Uint8Array;
  readonly publicKey?: Uint8Array;
}

/** A fresh key pair for generateDataKeyPair: the caller asked for the private key itself. */
export interface DerKeyPair {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

type Loaded =
  | { readonly kind: "keyObject"; readonly key: KeyObject; scalar?: Uint8Array }
  | {
      readonly kind: "mlDsa";
      readonly secretKey: Uint8Array;
      readonly key: KeyObject | undefined;
      /** SPKI of the public key, derived from the seed. */
      readonly spki: Uint8Array;
    }
  | { readonly kind: "hmac"; readonly key: KeyObject };

/** Parsed keys per key version are cached; the bound keeps a huge key count from pinning memory. */
const MAX_CACHED_VERSIONS = 4096;

const NOBLE_CURVES = { "P-256": p256, "P-384": p384, "P-521": p521, secp256k1 } as const;

/** OpenSSL's names for the curves, as KeyObject.asymmetricKeyDetails reports them. */
const OPENSSL_CURVE_NAMES: Readonly<Record<CurveName, string>> = {
  "P-256": "prime256v1",
  "P-384": "secp384r1",
  "P-521": "secp521r1",
  secp256k1: "secp256k1",
};

const ML_DSA = { "ml-dsa-44": ml_dsa44, "ml-dsa-65": ml_dsa65, "ml-dsa-87": ml_dsa87 } as const;

/** id-ml-dsa-44/65/87 (NIST CSOR 2.16.840.1.101.3.4.3.17–19), for the SPKI AlgorithmIdentifier. */
const ML_DSA_OID_LAST_BYTE = { "ml-dsa-44": 0x11, "ml-dsa-65": 0x12, "ml-dsa-87": 0x13 } as const;

/** DigestInfo prefixes of RFC 8017 §9.2 note 1, for PKCS#1 v1.5 over a supplied digest. */
const DIGEST_INFO_PREFIX: Readonly<Partial<Record<HashName, Buffer>>> = {
  sha256: Buffer.from("3031300d060960864801650304020105000420", "hex"),
  sha384: Buffer.from("3041300d060960864801650304020205000430", "hex"),
  sha512: Buffer.from("3051300d060960864801650304020305000440", "hex"),
};

/**
 * Ed25519ph over a caller-supplied SHA-512 digest: noble's RFC 8032 EdDSA with the Ed25519
 * parameters, the dom2 prefix with phflag = 1, and the prehash step left to the caller.
 * (noble's own `ed25519ph` always hashes the message itself.)
 */
const ed25519phDigest = eddsa(ed25519.Point, sha512, {
  adjustScalarBytes: (bytes: Uint8Array) => {
    bytes[0]! &= 248;
    bytes[31]! &= 127;
    bytes[31]! |= 64;
    return bytes;
  },
  domain: (data: Uint8Array, context: Uint8Array, phflag: boolean) => {
    const prefix = Buffer.from("SigEd25519 no Ed25519 collisions", "ascii");
    return Buffer.concat([prefix, Uint8Array.of(phflag ? 1 : 0, context.length), context, data]);
  },
  prehash: (digest: Uint8Array) => digest,
  zip215: false,
});

function derLength(length: number): number[] {
  if (length < 0x80) return [length];
  if (length < 0x100) return [0x81, length];
  return [0x82, length >> 8, length & 0xff];
}

/** SubjectPublicKeyInfo for an ML-DSA public key (RFC 9881: no parameters). */
export function mlDsaSpki(variant: keyof typeof ML_DSA, publicKey: Uint8Array): Uint8Array {
  const algorithm = [0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];
  algorithm.push(ML_DSA_OID_LAST_BYTE[variant]);
  const bitString = [0x03, ...derLength(publicKey.length + 1), 0x00];
  const bodyLength = algorithm.length + bitString.length + publicKey.length;
  return Buffer.concat([
    Uint8Array.from([0x30, ...derLength(bodyLength), ...algorithm, ...bitString]),
    publicKey,
  ]);
}

let nodeMlDsa: boolean | undefined;
/** Node ≥ 24.7 with OpenSSL ≥ 3.5 signs ML-DSA natively (several times faster than JS). */
function nodeHasMlDsa(): boolean {
  if (nodeMlDsa === undefined) {
    try {
      createPrivateKey({
        key: Buffer.alloc(32, 1),
        format: "raw-seed",
        asymmetricKeyType: "ml-dsa-44",
      } as unknown as Parameters<typeof createPrivateKey>[0]);
      nodeMlDsa = true;
    } catch {
      nodeMlDsa = false;
    }
  }
  return nodeMlDsa;
}

function specInfo(spec: KeySpec): KeySpecInfo {
  return KEY_SPEC_TABLE[spec];
}

function exportDer(pair: { publicKey: KeyObject; privateKey: KeyObject }): DerKeyPair {
  const der = pair.privateKey.export({ format: "der", type: "pkcs8" });
  try {
    return {
      privateKey: new Uint8Array(der),
      publicKey: new Uint8Array(pair.publicKey.export({ format: "der", type: "spki" })),
    };
  } finally {
    // Copied above; the export itself would otherwise stay in the heap until overwritten.
    der.fill(0);
  }
}

/**
 * node:crypto wants a Buffer; `Buffer.from(bytes)` copies small inputs into Node's shared pool,
 * where nothing would ever wipe them. Passes a copy to `use` and wipes it afterwards.
 */
function withBufferCopy<T>(material: Uint8Array, use: (copy: Buffer) => T): T {
  const copy = Buffer.from(material);
  try {
    return use(copy);
  } finally {
    copy.fill(0);
  }
}

/**
 * Generates an RSA, ECC or Ed25519 key pair as DER. Asynchronous because RSA-4096 generation
 * takes long enough to stall the event loop.
 */
export async function generateDerKeyPair(spec: KeySpec): Promise<DerKeyPair> {
  const info = specInfo(spec);
  switch (info.family) {
    case "RSA":
      return exportDer(
        await generateKeyPairAsync("rsa", {
          modulusLength: info.modulusBits!,
          publicExponent: 0x10001,
        }),
      );
    case "ECC":
      return exportDer(await generateKeyPairAsync("ec", { namedCurve: info.curve! }));
    case "ED25519":
      return exportDer(await generateKeyPairAsync("ed25519"));
    default:
      throw new KmsInternalError(`${spec} has no DER key pair form`);
  }
}

/**
 * A secret node:crypto returned as a Buffer, copied into a plain Uint8Array; the Buffer is wiped,
 * since nothing else would clear the secret from it before its memory is reused.
 */
function copySecret(secret: Buffer): Uint8Array {
  try {
    return new Uint8Array(secret);
  } finally {
    secret.fill(0);
  }
}

function base64UrlBytes(value: string | undefined): Uint8Array {
  if (value === undefined) throw new KmsInternalError("key export lacks a component");
  // Decoded into Node's shared pool: copied out, then wiped (this decodes private scalars too).
  return copySecret(Buffer.from(value, "base64url"));
}

/** Uncompressed SEC1 point (EC) or the 32-byte key (Ed25519) from a public KeyObject. */
function rawPublicKey(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: "jwk" });
  if (jwk.kty === "OKP") return base64UrlBytes(jwk.x);
  return Buffer.concat([Uint8Array.of(0x04), base64UrlBytes(jwk.x), base64UrlBytes(jwk.y)]);
}

function rsaPadding(algorithm: SigningAlgorithm): Record<string, number> {
  return algorithm.startsWith("RSASSA_PSS")
    ? // AWS uses a salt as long as the digest.
      { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
    : { padding: constants.RSA_PKCS1_PADDING };
}

/**
 * The peer's public key for ECDH, accepted only when OpenSSL's own DER encoding of the parsed key
 * is exactly the given bytes: trailing bytes and BER forms would otherwise give one key any
 * number of accepted encodings. (OpenSSL keeps the point's SEC 1 form, so a compressed point
 * passes, as RFC 5480 allows.) OpenSSL parses the point at infinity but cannot encode it, so it
 * is refused here too.
 * @throws ValidationError naming what is wrong with the key (never its bytes).
 */
function peerPublicKey(spec: KeySpec, peerSpki: Uint8Array): KeyObject {
  const curve = specInfo(spec).curve!;
  let peer: KeyObject;
  try {
    peer = createPublicKey({ key: Buffer.from(peerSpki), format: "der", type: "spki" });
  } catch (error) {
    throw new ValidationError(`"publicKey" must be a DER SubjectPublicKeyInfo`, { cause: error });
  }
  if (
    peer.asymmetricKeyType !== "ec" ||
    peer.asymmetricKeyDetails?.namedCurve !== OPENSSL_CURVE_NAMES[curve]
  ) {
    throw new ValidationError(`"publicKey" must be an ${curve} public key to agree with ${spec}`);
  }
  let canonical: Buffer;
  try {
    canonical = peer.export({ format: "der", type: "spki" });
  } catch (error) {
    const problem = `"publicKey" must be a point on ${curve}, not the point at infinity`;
    throw new ValidationError(problem, { cause: error });
  }
  if (!canonical.equals(peerSpki)) {
    throw new ValidationError(
      canonical.length < peerSpki.length && canonical.equals(peerSpki.subarray(0, canonical.length))
        ? `"publicKey" must end where its SubjectPublicKeyInfo ends`
        : `"publicKey" must be the DER encoding of its SubjectPublicKeyInfo (no BER forms, a named curve)`,
    );
  }
  // OpenSSL also parses (and re-encodes) X9.62's hybrid form 06/07, which RFC 5480 §2.2 says
  // MUST NOT be used: it would be a third accepted encoding of one peer key.
  const form = ecPointForm(canonical);
  if (form !== 0x04 && form !== 0x02 && form !== 0x03) {
    throw new ValidationError(
      `"publicKey" must hold its point uncompressed (04) or compressed (02, 03), as RFC 5480 requires`,
    );
  }
  return peer;
}

/**
 * The SEC 1 form byte of the point in an EC SubjectPublicKeyInfo that is OpenSSL's own DER:
 * SEQUENCE { AlgorithmIdentifier, BIT STRING { unused-bits 00, point } }.
 */
function ecPointForm(spki: Uint8Array): number | undefined {
  let at = 0;
  const header = (): number => {
    at++; // tag: fixed by the structure, which OpenSSL itself wrote
    let length = spki[at++] ?? 0;
    if (length >= 0x80) {
      const count = length & 0x7f;
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + (spki[at++] ?? 0);
    }
    return length;
  };
  header(); // SubjectPublicKeyInfo
  const algorithmIdentifier = header();
  at += algorithmIdentifier;
  header(); // subjectPublicKey BIT STRING
  return spki[at + 1];
}

/**
 * Per-SoftwareHsm extension for non-symmetric keys. Obtain it with `asymmetricHsm(hsm)`; its
 * methods take a MaterialRef and return results, never material (except `generateDerKeyPair`,
 * whose whole purpose is a key pair for the caller).
 */
export class AsymmetricHsm {
  readonly #hsm: SoftwareHsm;
  readonly #private = new Map<string, Loaded>();
  readonly #public = new Map<string, KeyObject>();
  /** SPKI derived from each version's (authenticated) private material. */
  readonly #authentic = new Map<string, Uint8Array>();

  constructor(hsm: SoftwareHsm) {
    this.#hsm = hsm;
    hsm.onClose(() => this.#clear());
  }

  /** Generates and wraps material for a key version of `spec`. */
  async generate(keyId: string, version: number, spec: KeySpec): Promise<WrappedKeyMaterial> {
    const info = specInfo(spec);
    let material: Uint8Array;
    if (info.family === "HMAC") {
      material = randomFillSync(new Uint8Array(info.hmacKeyBytes!));
    } else if (info.family === "ML_DSA") {
      material = randomFillSync(new Uint8Array(32));
    } else {
      material = (await generateDerKeyPair(spec)).privateKey;
    }
    try {
      return this.importMaterial(keyId, version, spec, material);
    } finally {
      material.fill(0);
    }
  }

  /**
   * Wraps given material for a key version (PKCS#8 DER, ML-DSA seed, or HMAC key bytes) and
   * derives its public key. Used by `generate` and by tests that need known-answer keys.
   * @throws ValidationError when the material does not fit the spec.
   */
  importMaterial(
    keyId: string,
    version: number,
    spec: KeySpec,
    material: Uint8Array,
  ): WrappedKeyMaterial {
    const info = specInfo(spec);
    let publicKey: Uint8Array | undefined;
    switch (info.family) {
      case "HMAC":
        // HMAC takes keys of any length (RFC 2104); createKey always generates the spec's length,
        // and known-answer tests import the RFC 4231 keys, whose lengths differ.
        if (material.length === 0) throw new ValidationError(`${spec} material must not be empty`);
        break;
      case "ML_DSA": {
        if (material.length !== 32) throw new ValidationError(`${spec} seed must be 32 bytes`);
        const pair = ML_DSA[info.mlDsa!].keygen(material);
        // Only the public key is wanted here: the expanded secret key is wiped, not left to the
        // garbage collector (signing derives and caches its own, wiped by forget and close).
        publicKey = mlDsaSpki(info.mlDsa!, pair.publicKey);
        pair.secretKey.fill(0);
        break;
      }
      case "RSA":
      case "ECC":
      case "ED25519": {
        const key = this.#parsePkcs8(material, spec);
        publicKey = new Uint8Array(
          createPublicKey(key).export({ format: "der", type: "spki" }) as Buffer,
        );
        break;
      }
      default:
        throw new KmsInternalError(`${spec} material is not handled by the asymmetric HSM`);
    }
    return {
      wrappedMaterial: this.#hsm.wrapMaterial(keyId, version, material),
      ...(publicKey !== undefined ? { publicKey } : {}),
    };
  }

  #parsePkcs8(material: Uint8Array, spec: KeySpec): KeyObject {
    const info = specInfo(spec);
    let key: KeyObject;
    try {
      key = withBufferCopy(material, (der) =>
        createPrivateKey({ key: der, format: "der", type: "pkcs8" }),
      );
    } catch (error) {
      throw new ValidationError(`${spec} material must be a PKCS#8 DER private key`, {
        cause: error,
      });
    }
    const details = key.asymmetricKeyDetails;
    const fits =
      info.family === "RSA"
        ? key.asymmetricKeyType === "rsa" && details?.modulusLength === info.modulusBits
        : info.family === "ECC"
          ? key.asymmetricKeyType === "ec" &&
            details?.namedCurve === OPENSSL_CURVE_NAMES[info.curve!]
          : key.asymmetricKeyType === "ed25519";
    if (!fits) throw new ValidationError(`the PKCS#8 key is not a ${spec} key`);
    return key;
  }

  #load(ref: MaterialRef, spec: KeySpec): Loaded {
    const cacheKey = `${ref.keyId}#${ref.version}`;
    let loaded = this.#private.get(cacheKey);
    if (loaded !== undefined) return loaded;
    const material = this.#hsm.unwrapMaterial(ref);
    try {
      const info = specInfo(spec);
      if (info.family === "HMAC") {
        loaded = { kind: "hmac", key: createSecretKey(material) };
      } else if (info.family === "ML_DSA") {
        const pair = ML_DSA[info.mlDsa!].keygen(material);
        const { secretKey } = pair;
        const spki = mlDsaSpki(info.mlDsa!, pair.publicKey);
        const key = nodeHasMlDsa()
          ? withBufferCopy(material, (seed) =>
              createPrivateKey({
                key: seed,
                format: "raw-seed",
                asymmetricKeyType: info.mlDsa!,
              } as unknown as Parameters<typeof createPrivateKey>[0]),
            )
          : undefined;
        loaded = { kind: "mlDsa", secretKey, key, spki };
      } else {
        loaded = { kind: "keyObject", key: this.#parsePkcs8(material, spec) };
      }
    } finally {
      material.fill(0);
    }
    if (this.#private.size >= MAX_CACHED_VERSIONS) {
      const oldest = this.#private.keys().next().value;
      if (oldest !== undefined) this.#dropPrivate(oldest);
    }
    this.#private.set(cacheKey, loaded);
    return loaded;
  }

  /**
   * The version's stored public key (SPKI), once it is checked against the private material.
   * The stored copy is not covered by the root key's wrapping: without this check, a writer of
   * the key store could swap in a key of their own, so that their signatures verify and RSA
   * encryption is to them. The derivation runs once per version; later calls compare bytes.
   * @throws RootKeyError when the stored public key is not the material's; as the material's
   *   unwrapping otherwise.
   */
  authenticPublicKey(ref: MaterialRef, spec: KeySpec, stored: Uint8Array): Uint8Array {
    const cacheKey = `${ref.keyId}#${ref.version}`;
    let derived = this.#authentic.get(cacheKey);
    if (derived === undefined) {
      const loaded = this.#load(ref, spec);
      if (loaded.kind === "hmac") {
        throw new KmsInternalError(`${spec} keys have no public key`);
      }
      derived =
        loaded.kind === "mlDsa"
          ? loaded.spki
          : new Uint8Array(
              createPublicKey(loaded.key).export({ format: "der", type: "spki" }) as Buffer,
            );
      if (this.#authentic.size >= MAX_CACHED_VERSIONS) {
        const oldest = this.#authentic.keys().next().value;
        if (oldest !== undefined) this.#authentic.delete(oldest);
      }
      this.#authentic.set(cacheKey, derived);
    }
    if (!Buffer.from(derived.buffer, derived.byteOffset, derived.byteLength).equals(stored)) {
      throw new RootKeyError(
        `the stored public key of key ${ref.keyId} version ${ref.version} does not match its material`,
      );
    }
    return stored;
  }

  #publicKey(keyId: string, version: number, spki: Uint8Array): KeyObject {
    const cacheKey = `${keyId}#${version}`;
    let key = this.#public.get(cacheKey);
    if (key === undefined) {
      key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
      if (this.#public.size >= MAX_CACHED_VERSIONS) {
        const oldest = this.#public.keys().next().value;
        if (oldest !== undefined) this.#public.delete(oldest);
      }
      this.#public.set(cacheKey, key);
    }
    return key;
  }

  #keyObject(ref: MaterialRef, spec: KeySpec): Loaded & { kind: "keyObject" } {
    const loaded = this.#load(ref, spec);
    if (loaded.kind !== "keyObject") throw new KmsInternalError(`${spec} is not a key pair`);
    return loaded;
  }

  /** The private scalar (ECDSA) or seed (Ed25519) for noble, exported once and cached. */
  #scalar(loaded: Loaded & { kind: "keyObject" }): Uint8Array {
    loaded.scalar ??= base64UrlBytes(loaded.key.export({ format: "jwk" }).d);
    return loaded.scalar;
  }

  /**
   * Signs with the key version's private key. The operation layer has already checked that
   * the algorithm fits the spec and the message fits the message type.
   */
  sign(
    ref: MaterialRef,
    spec: KeySpec,
    algorithm: SigningAlgorithm,
    messageType: SigningMessageType,
    message: Uint8Array,
  ): Uint8Array {
    const info = specInfo(spec);
    const { hash } = SIGNING_ALGORITHM_TABLE[algorithm];
    if (info.family === "ML_DSA") {
      const loaded = this.#load(ref, spec);
      if (loaded.kind !== "mlDsa") throw new KmsInternalError(`${spec} is not ML-DSA`);
      const dsa = ML_DSA[info.mlDsa!];
      if (messageType === "EXTERNAL_MU") {
        return dsa.internal.sign(message, loaded.secretKey, { externalMu: true });
      }
      if (loaded.key !== undefined) return new Uint8Array(nodeSign(null, message, loaded.key));
      return dsa.sign(message, loaded.secretKey);
    }
    const loaded = this.#keyObject(ref, spec);
    switch (info.family) {
      case "RSA":
        if (messageType === "DIGEST") {
          // EMSA-PKCS1-v1_5 over a given digest: OpenSSL's type-1 padding of the DigestInfo.
          const digestInfo = Buffer.concat([DIGEST_INFO_PREFIX[hash!]!, message]);
          return new Uint8Array(
            privateEncrypt({ key: loaded.key, padding: constants.RSA_PKCS1_PADDING }, digestInfo),
          );
        }
        return new Uint8Array(
          nodeSign(hash!, message, { key: loaded.key, ...rsaPadding(algorithm) }),
        );
      case "ECC":
        if (messageType === "DIGEST") {
          return NOBLE_CURVES[info.curve!].sign(message, this.#scalar(loaded), {
            prehash: false,
            format: "der",
          });
        }
        return new Uint8Array(nodeSign(hash!, message, { key: loaded.key, dsaEncoding: "der" }));
      case "ED25519":
        if (algorithm === "ED25519_PH_SHA_512") {
          return ed25519phDigest.sign(message, this.#scalar(loaded));
        }
        return new Uint8Array(nodeSign(null, message, loaded.key));
      default:
        throw new KmsInternalError(`${spec} does not sign`);
    }
  }

  /**
   * Verifies with the key version's public key (no private material is touched). Malformed
   * signatures are invalid signatures, not errors.
   */
  verify(
    keyId: string,
    version: number,
    spki: Uint8Array,
    spec: KeySpec,
    algorithm: SigningAlgorithm,
    messageType: SigningMessageType,
    message: Uint8Array,
    signature: Uint8Array,
  ): boolean {
    const info = specInfo(spec);
    const { hash } = SIGNING_ALGORITHM_TABLE[algorithm];
    if (info.family === "ML_DSA") {
      const dsa = ML_DSA[info.mlDsa!];
      const raw = spki.subarray(spki.length - dsa.lengths.publicKey!);
      // A Node without ML-DSA cannot even parse the SPKI: no KeyObject is asked of it there.
      const native =
        messageType === "RAW" && nodeHasMlDsa() ? this.#publicKey(keyId, version, spki) : undefined;
      try {
        if (messageType === "EXTERNAL_MU") {
          return dsa.internal.verify(signature, message, raw, { externalMu: true });
        }
        if (native !== undefined) return nodeVerify(null, message, native, signature);
        return dsa.verify(signature, message, raw);
      } catch {
        return false;
      }
    }
    const key = this.#publicKey(keyId, version, spki);
    try {
      switch (info.family) {
        case "RSA":
          // RFC 8017 §8.2.2 and §8.1.2 step 1, for every RSA scheme and message type:
          // publicDecrypt, and OpenSSL's PSS verification, read a shorter signature as the same
          // integer, so one signature would have several accepted encodings.
          if (signature.length !== info.modulusBits! / 8) return false;
          if (messageType === "DIGEST") {
            if (algorithm.startsWith("RSASSA_PSS")) return false;
            const recovered = publicDecrypt(
              { key, padding: constants.RSA_PKCS1_PADDING },
              signature,
            );
            const expected = Buffer.concat([DIGEST_INFO_PREFIX[hash!]!, message]);
            return recovered.length === expected.length && timingSafeEqual(recovered, expected);
          }
          return nodeVerify(hash!, message, { key, ...rsaPadding(algorithm) }, signature);
        case "ECC":
          if (messageType === "DIGEST") {
            // lowS: false — OpenSSL and AWS produce and accept either S.
            return NOBLE_CURVES[info.curve!].verify(signature, message, rawPublicKey(key), {
              prehash: false,
              format: "der",
              lowS: false,
            });
          }
          return nodeVerify(hash!, message, { key, dsaEncoding: "der" }, signature);
        case "ED25519":
          if (algorithm === "ED25519_PH_SHA_512") {
            return ed25519phDigest.verify(signature, message, rawPublicKey(key));
          }
          return nodeVerify(null, message, key, signature);
        default:
          return false;
      }
    } catch {
      // A signature that does not even parse is simply not a valid signature.
      return false;
    }
  }

  /** RSA-OAEP with MGF1 over the same hash, as AWS's RSAES_OAEP_SHA_1/256. */
  encrypt(
    keyId: string,
    version: number,
    spki: Uint8Array,
    hash: HashName,
    plaintext: Uint8Array,
  ): Uint8Array {
    const key = this.#publicKey(keyId, version, spki);
    return new Uint8Array(
      publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, plaintext),
    );
  }

  /** @throws InvalidCiphertextError for any failure, without saying which. */
  decrypt(ref: MaterialRef, spec: KeySpec, hash: HashName, ciphertext: Uint8Array): Uint8Array {
    const { key } = this.#keyObject(ref, spec);
    // RFC 8017 §7.1.2 step 1: OpenSSL reads a shorter input as the same integer, so a ciphertext
    // with a leading 00 byte dropped would decrypt too — two ciphertexts for one plaintext.
    if (ciphertext.length !== specInfo(spec).modulusBits! / 8) throw invalidCiphertext();
    try {
      return copySecret(
        privateDecrypt(
          { key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash },
          ciphertext,
        ),
      );
    } catch {
      throw invalidCiphertext();
    }
  }

  /**
   * ECDH: the raw shared secret Z (the x-coordinate), as AWS's DeriveSharedSecret returns it.
   * @throws ValidationError when the peer key is not exactly the DER SPKI of a point on the key's
   *   curve (see `peerPublicKey`).
   */
  deriveSharedSecret(ref: MaterialRef, spec: KeySpec, peerSpki: Uint8Array): Uint8Array {
    const peer = peerPublicKey(spec, peerSpki);
    const { key } = this.#keyObject(ref, spec);
    return copySecret(diffieHellman({ privateKey: key, publicKey: peer }));
  }

  generateMac(ref: MaterialRef, spec: KeySpec, hash: HashName, message: Uint8Array): Uint8Array {
    const loaded = this.#load(ref, spec);
    if (loaded.kind !== "hmac") throw new KmsInternalError(`${spec} is not an HMAC key`);
    return new Uint8Array(createHmac(hash, loaded.key).update(message).digest());
  }

  /** Constant-time comparison of the expected and given MAC. */
  verifyMac(
    ref: MaterialRef,
    spec: KeySpec,
    hash: HashName,
    message: Uint8Array,
    mac: Uint8Array,
  ): boolean {
    const expected = this.generateMac(ref, spec, hash, message);
    // The length of a MAC is public (it is fixed by the algorithm), so checking it first leaks
    // nothing; timingSafeEqual requires equal lengths.
    return expected.length === mac.length && timingSafeEqual(expected, mac);
  }

  /**
   * Drops a cached private key, wiping the raw secrets it holds for @noble (a KeyObject cannot
   * be wiped): dropping the reference alone would leave them in the heap for as long as the
   * garbage collector pleases, also after their key is destroyed.
   */
  #dropPrivate(cacheKey: string): void {
    const loaded = this.#private.get(cacheKey);
    this.#private.delete(cacheKey);
    if (loaded?.kind === "keyObject") loaded.scalar?.fill(0);
    if (loaded?.kind === "mlDsa") loaded.secretKey.fill(0);
  }

  /** Drops every cached key, wiping raw secrets (when the SoftwareHsm closes). */
  #clear(): void {
    for (const cacheKey of [...this.#private.keys()]) this.#dropPrivate(cacheKey);
    this.#public.clear();
    this.#authentic.clear();
  }

  /** Drops cached keys of a destroyed key. */
  forget(keyId: string): void {
    const prefix = `${keyId}#`;
    for (const cacheKey of [...this.#private.keys()]) {
      if (cacheKey.startsWith(prefix)) this.#dropPrivate(cacheKey);
    }
    for (const cache of [this.#public, this.#authentic]) {
      for (const cacheKey of cache.keys()) {
        if (cacheKey.startsWith(prefix)) cache.delete(cacheKey);
      }
    }
  }
}

const extensions = new WeakMap<SoftwareHsm, AsymmetricHsm>();

/** The asymmetric extension of a SoftwareHsm, created on first use. */
export function asymmetricHsm(hsm: SoftwareHsm): AsymmetricHsm {
  let extension = extensions.get(hsm);
  if (extension === undefined) {
    extension = new AsymmetricHsm(hsm);
    extensions.set(hsm, extension);
  }
  return extension;
}
