/**
 * Generates the golden vectors in test/golden/keys-v1/: a fixed test-only root key, a snapshot of
 * a MemoryKeyStore holding one key of each non-symmetric family (docs/FORMAT.md §4.3), and what
 * those keys produced: signatures, MACs, RSA ciphertexts and ECDH shared secrets. Every later
 * version of @kms/core must still read these keys and reproduce or verify every result
 * (test/golden/keys-v1.test.ts), so they are generated once and committed.
 *
 *   node packages/core/scripts/make-golden-key-vectors.ts [--force]
 *
 * Refuses to overwrite existing vectors without --force: regenerating them hides format breaks,
 * which is exactly what they exist to catch. Read test/golden/README.md first.
 */
import { createHash, createPublicKey, diffieHellman, generateKeyPairSync } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type {
  EncryptionAlgorithm,
  KeySpec,
  KeyUsage,
  MacAlgorithm,
  SigningAlgorithm,
} from "../src/index.ts";
import { goldenKms, refuseToOverwrite, writeGoldenStore } from "./golden-store.ts";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "golden", "keys-v1");
// Test-only root key ("golden-keys-v1-test-only-key...."): it protects nothing but these vectors.
const ROOT_KEY_HEX = "676f6c64656e2d6b6579732d76312d746573742d6f6e6c792d6b65792e2e2e2e";

interface GoldenSignature {
  name: string;
  keyId: string;
  signingAlgorithm: SigningAlgorithm;
  messageType: "RAW" | "DIGEST" | "EXTERNAL_MU";
  message: Uint8Array;
  signature: Uint8Array;
  /** The KMS must produce exactly this signature again (no randomness in the scheme). */
  deterministic: boolean;
}
interface GoldenMac {
  name: string;
  keyId: string;
  macAlgorithm: MacAlgorithm;
  message: Uint8Array;
  mac: Uint8Array;
}
interface GoldenCiphertext {
  name: string;
  keyId: string;
  encryptionAlgorithm: EncryptionAlgorithm;
  ciphertextBlob: Uint8Array;
  plaintext: Uint8Array;
}
interface GoldenSharedSecret {
  name: string;
  keyId: string;
  /** DER SPKI of the peer; its PKCS#8 is kept (test-only) so ECDH can be checked from its side. */
  peerPublicKey: Uint8Array;
  peerPrivateKey: Uint8Array;
  sharedSecret: Uint8Array;
}

const HASHES = { SHA_256: "sha256", SHA_384: "sha384", SHA_512: "sha512" } as const;

async function main(): Promise<void> {
  refuseToOverwrite(OUT, ["root-key.hex", "store.json", "operations.json"]);
  const { kms, store } = await goldenKms(ROOT_KEY_HEX);
  const encoder = new TextEncoder();
  const signatures: GoldenSignature[] = [];
  const macs: GoldenMac[] = [];
  const ciphertexts: GoldenCiphertext[] = [];
  const sharedSecrets: GoldenSharedSecret[] = [];

  async function createKey(keySpec: KeySpec, keyUsage: KeyUsage): Promise<string> {
    const { keyMetadata } = await kms.createKey({
      keySpec,
      keyUsage,
      description: `golden keys v1: ${keySpec} ${keyUsage}`,
    });
    return keyMetadata.keyId;
  }

  async function sign(
    keyId: string,
    signingAlgorithm: SigningAlgorithm,
    messageType: GoldenSignature["messageType"],
    message: Uint8Array,
    deterministic: boolean,
  ): Promise<void> {
    const { signature } = await kms.sign({ keyId, signingAlgorithm, messageType, message });
    signatures.push({
      name: `${signingAlgorithm} ${messageType}`,
      keyId,
      signingAlgorithm,
      messageType,
      message,
      signature,
      deterministic,
    });
  }

  const text = (what: string) => encoder.encode(`golden keys v1: ${what}`);
  const digest = (hash: string, what: string) =>
    new Uint8Array(createHash(hash).update(text(what)).digest());

  const rsaSign = await createKey("RSA_2048", "SIGN_VERIFY");
  for (const hash of ["SHA_256", "SHA_512"] as const) {
    const pkcs1 = `RSASSA_PKCS1_V1_5_${hash}` as const;
    await sign(rsaSign, pkcs1, "RAW", text(pkcs1), true);
    await sign(rsaSign, pkcs1, "DIGEST", digest(HASHES[hash], pkcs1), true);
    const pss = `RSASSA_PSS_${hash}` as const;
    await sign(rsaSign, pss, "RAW", text(pss), false);
  }

  const rsaEncrypt = await createKey("RSA_2048", "ENCRYPT_DECRYPT");
  for (const encryptionAlgorithm of ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"] as const) {
    const plaintext = text(encryptionAlgorithm);
    const { ciphertextBlob } = await kms.encrypt({
      keyId: rsaEncrypt,
      plaintext,
      encryptionAlgorithm,
    });
    ciphertexts.push({
      name: encryptionAlgorithm,
      keyId: rsaEncrypt,
      encryptionAlgorithm,
      ciphertextBlob,
      plaintext,
    });
  }

  for (const [spec, algorithm, hash] of [
    ["ECC_NIST_P256", "ECDSA_SHA_256", "sha256"],
    ["ECC_NIST_P521", "ECDSA_SHA_512", "sha512"],
    ["ECC_SECG_P256K1", "ECDSA_SHA_256", "sha256"],
  ] as const) {
    const keyId = await createKey(spec, "SIGN_VERIFY");
    await sign(keyId, algorithm, "RAW", text(`${spec} ${algorithm}`), false);
    await sign(keyId, algorithm, "DIGEST", digest(hash, `${spec} ${algorithm}`), false);
  }

  const ecdh = await createKey("ECC_NIST_P384", "KEY_AGREEMENT");
  const peer = generateKeyPairSync("ec", { namedCurve: "P-384" });
  const peerPublicKey = new Uint8Array(peer.publicKey.export({ format: "der", type: "spki" }));
  const { sharedSecret } = await kms.deriveSharedSecret({
    keyId: ecdh,
    keyAgreementAlgorithm: "ECDH",
    publicKey: peerPublicKey,
  });
  const { publicKey: ecdhPublic } = await kms.getPublicKey({ keyId: ecdh });
  const fromPeer = diffieHellman({
    privateKey: peer.privateKey,
    publicKey: createPublicKey({
      key: Buffer.from(ecdhPublic),
      format: "der",
      type: "spki",
    }),
  });
  if (!fromPeer.equals(sharedSecret)) throw new Error("ECDH does not agree from the peer's side");
  sharedSecrets.push({
    name: "ECDH P-384",
    keyId: ecdh,
    peerPublicKey,
    peerPrivateKey: new Uint8Array(peer.privateKey.export({ format: "der", type: "pkcs8" })),
    sharedSecret,
  });

  const ed25519 = await createKey("ECC_NIST_EDWARDS25519", "SIGN_VERIFY");
  await sign(ed25519, "ED25519_SHA_512", "RAW", text("ED25519_SHA_512"), true);
  await sign(ed25519, "ED25519_PH_SHA_512", "DIGEST", digest("sha512", "ED25519_PH_SHA_512"), true);

  for (const [spec, macAlgorithm] of [
    ["HMAC_224", "HMAC_SHA_224"],
    ["HMAC_256", "HMAC_SHA_256"],
    ["HMAC_384", "HMAC_SHA_384"],
    ["HMAC_512", "HMAC_SHA_512"],
  ] as const) {
    const keyId = await createKey(spec, "GENERATE_VERIFY_MAC");
    const message = text(macAlgorithm);
    const { mac } = await kms.generateMac({ keyId, macAlgorithm, message });
    macs.push({ name: macAlgorithm, keyId, macAlgorithm, message, mac });
  }

  const mlDsa = await createKey("ML_DSA_65", "SIGN_VERIFY");
  await sign(mlDsa, "ML_DSA_SHAKE_256", "RAW", text("ML_DSA_65 RAW"), false);
  const { publicKey: mlDsaSpki } = await kms.getPublicKey({ keyId: mlDsa });
  // μ = SHAKE256(SHAKE256(pk, 64) ‖ 0 ‖ 0 ‖ M, 64), FIPS 204 with an empty context.
  const pk = mlDsaSpki.subarray(mlDsaSpki.length - 1952);
  const tr = createHash("shake256", { outputLength: 64 }).update(pk).digest();
  const mu = createHash("shake256", { outputLength: 64 })
    .update(Buffer.concat([tr, Uint8Array.of(0, 0), text("ML_DSA_65 EXTERNAL_MU")]))
    .digest();
  await sign(mlDsa, "ML_DSA_SHAKE_256", "EXTERNAL_MU", new Uint8Array(mu), false);

  const keyCount = await writeGoldenStore(OUT, ROOT_KEY_HEX, store, "operations.json", {
    signatures,
    macs,
    ciphertexts,
    sharedSecrets,
  });
  console.log(
    `wrote ${keyCount} keys, ${signatures.length} signatures, ${macs.length} MACs, ` +
      `${ciphertexts.length} ciphertexts and ${sharedSecrets.length} shared secret to ${OUT}`,
  );
}

await main();
