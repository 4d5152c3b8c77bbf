/**
 * `node bench/asymmetric.bench.ts`: sign/verify ops/s per key spec through the full Kms facade
 * beside raw node:crypto with the same key type, measured in the same process. The raw baseline
 * holds a KeyObject already parsed, as a caller of node:crypto would.
 */
import {
  createHmac,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from "node:crypto";
import { compare } from "@kms/tooling/bench";
import { createKms, type KeySpec, type Kms, type SigningAlgorithm } from "../src/index.ts";

interface SigningCase {
  readonly spec: KeySpec;
  readonly algorithm: SigningAlgorithm;
  /** node:crypto digest name (null for Ed25519 and ML-DSA) and key options for the baseline. */
  readonly hash: string | null;
  readonly options?: Record<string, number>;
  /** node:crypto key type and parameters for the baseline key. */
  readonly raw: () => KeyObject;
}

const PSS = { padding: 6, saltLength: -1 }; // RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST
const rsa = (bits: number) => () =>
  generateKeyPairSync("rsa", { modulusLength: bits, publicExponent: 0x10001 }).privateKey;
const ec = (namedCurve: string) => () => generateKeyPairSync("ec", { namedCurve }).privateKey;
const ml = (type: "ml-dsa-44" | "ml-dsa-65" | "ml-dsa-87") => () =>
  generateKeyPairSync(type as "ed25519").privateKey;

const CASES: readonly SigningCase[] = [
  { spec: "RSA_2048", algorithm: "RSASSA_PKCS1_V1_5_SHA_256", hash: "sha256", raw: rsa(2048) },
  {
    spec: "RSA_2048",
    algorithm: "RSASSA_PSS_SHA_256",
    hash: "sha256",
    options: PSS,
    raw: rsa(2048),
  },
  { spec: "RSA_3072", algorithm: "RSASSA_PKCS1_V1_5_SHA_384", hash: "sha384", raw: rsa(3072) },
  { spec: "RSA_4096", algorithm: "RSASSA_PKCS1_V1_5_SHA_512", hash: "sha512", raw: rsa(4096) },
  { spec: "ECC_NIST_P256", algorithm: "ECDSA_SHA_256", hash: "sha256", raw: ec("P-256") },
  { spec: "ECC_NIST_P384", algorithm: "ECDSA_SHA_384", hash: "sha384", raw: ec("P-384") },
  { spec: "ECC_NIST_P521", algorithm: "ECDSA_SHA_512", hash: "sha512", raw: ec("P-521") },
  { spec: "ECC_SECG_P256K1", algorithm: "ECDSA_SHA_256", hash: "sha256", raw: ec("secp256k1") },
  {
    spec: "ECC_NIST_EDWARDS25519",
    algorithm: "ED25519_SHA_512",
    hash: null,
    raw: () => generateKeyPairSync("ed25519").privateKey,
  },
  { spec: "ML_DSA_44", algorithm: "ML_DSA_SHAKE_256", hash: null, raw: ml("ml-dsa-44") },
  { spec: "ML_DSA_65", algorithm: "ML_DSA_SHAKE_256", hash: null, raw: ml("ml-dsa-65") },
  { spec: "ML_DSA_87", algorithm: "ML_DSA_SHAKE_256", hash: null, raw: ml("ml-dsa-87") },
];

export async function asymmetricBench(kms: Kms): Promise<void> {
  const message = randomBytes(256);
  for (const c of CASES) {
    const { keyMetadata } = await kms.createKey({ keySpec: c.spec, keyUsage: "SIGN_VERIFY" });
    const keyId = keyMetadata.keyId;
    const privateKey = c.raw();
    const publicKey = createPublicKey(privateKey);
    const rawSignature = sign(c.hash, message, { key: privateKey, ...c.options });
    const request = { keyId, message, signingAlgorithm: c.algorithm };
    const { signature } = await kms.sign(request);
    await compare(
      `sign ${c.spec} ${c.algorithm}, 256-byte message`,
      {
        name: "node:crypto sign",
        run: () => sign(c.hash, message, { key: privateKey, ...c.options }),
      },
      [{ name: "kms.sign", run: () => kms.sign(request) }],
    );
    await compare(
      `verify ${c.spec} ${c.algorithm}, 256-byte message`,
      {
        name: "node:crypto verify",
        run: () => verify(c.hash, message, { key: publicKey, ...c.options }, rawSignature),
      },
      [{ name: "kms.verify", run: () => kms.verify({ ...request, signature }) }],
    );
  }

  // The two noble paths (node:crypto has no digest-input ECDSA and no Ed25519ph).
  const p256 = await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" });
  const digest = randomBytes(32);
  const p256Raw = ec("P-256")();
  await compare(
    "sign ECC_NIST_P256 ECDSA_SHA_256 DIGEST (noble) vs node:crypto RAW",
    { name: "node:crypto sign (hashes 256 B)", run: () => sign("sha256", message, p256Raw) },
    [
      {
        name: "kms.sign DIGEST",
        run: () =>
          kms.sign({
            keyId: p256.keyMetadata.keyId,
            message: digest,
            messageType: "DIGEST",
            signingAlgorithm: "ECDSA_SHA_256",
          }),
      },
    ],
  );
  const ed = await kms.createKey({ keySpec: "ECC_NIST_EDWARDS25519", keyUsage: "SIGN_VERIFY" });
  const edRaw = generateKeyPairSync("ed25519").privateKey;
  const sha512 = randomBytes(64);
  await compare(
    "sign ECC_NIST_EDWARDS25519 ED25519_PH_SHA_512 (noble) vs node:crypto Ed25519",
    { name: "node:crypto Ed25519 sign", run: () => sign(null, message, edRaw) },
    [
      {
        name: "kms.sign ED25519_PH_SHA_512",
        run: () =>
          kms.sign({
            keyId: ed.keyMetadata.keyId,
            message: sha512,
            messageType: "DIGEST",
            signingAlgorithm: "ED25519_PH_SHA_512",
          }),
      },
    ],
  );

  const hmacKey = await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" });
  const rawHmacKey = randomBytes(32);
  await compare(
    "generateMac HMAC_256, 256-byte message",
    {
      name: "node:crypto createHmac",
      run: () => createHmac("sha256", rawHmacKey).update(message).digest(),
    },
    [
      {
        name: "kms.generateMac",
        run: () =>
          kms.generateMac({
            keyId: hmacKey.keyMetadata.keyId,
            message,
            macAlgorithm: "HMAC_SHA_256",
          }),
      },
    ],
  );
}

if (import.meta.main) {
  await asymmetricBench(await createKms());
}
