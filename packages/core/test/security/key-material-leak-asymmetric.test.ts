import { createDecipheriv, createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  isKmsError,
  type KeySpec,
  type KeyUsage,
  type Kms,
  type KmsError,
  MAX_MAC_MESSAGE_BYTES,
  MAX_SIGN_MESSAGE_BYTES,
  MemoryAuditSink,
  MemoryKeyStore,
  type StoredKey,
  ValidationError,
} from "../../src/index.ts";

/*
 * key-material-leak.test.ts does this for symmetric keys. Here: every other kind of key (HMAC of
 * each size, RSA for encryption and for signing, ECC for signing and for key agreement, Ed25519,
 * ML-DSA), made to fail in every way a caller can make it fail, often with secret bytes as the
 * bad input. The test recovers each key's private material on its own (known root key,
 * docs/FORMAT.md §4 and §4.3) and looks for any 16 bytes of it in every rendering of every error,
 * of the Kms, and in the audit trail.
 */

const root = randomBytes(32);
const MALLORY = "arn:aws:iam::999999999999:user/mallory";

/** A secret and what it is, for the failure message. */
interface Secret {
  readonly name: string;
  readonly bytes: Uint8Array;
}

const KEYS: readonly (readonly [KeySpec, KeyUsage])[] = [
  ["HMAC_224", "GENERATE_VERIFY_MAC"],
  ["HMAC_256", "GENERATE_VERIFY_MAC"],
  ["HMAC_384", "GENERATE_VERIFY_MAC"],
  ["HMAC_512", "GENERATE_VERIFY_MAC"],
  ["RSA_2048", "ENCRYPT_DECRYPT"],
  ["RSA_2048", "SIGN_VERIFY"],
  ["ECC_NIST_P256", "SIGN_VERIFY"],
  ["ECC_NIST_P521", "SIGN_VERIFY"],
  ["ECC_SECG_P256K1", "SIGN_VERIFY"],
  ["ECC_NIST_P256", "KEY_AGREEMENT"],
  ["ECC_NIST_P384", "KEY_AGREEMENT"],
  ["ECC_NIST_EDWARDS25519", "SIGN_VERIFY"],
  ["ML_DSA_44", "SIGN_VERIFY"],
  ["ML_DSA_87", "SIGN_VERIFY"],
];

const SIGNING_ALGORITHM: Partial<Record<KeySpec, string>> = {
  RSA_2048: "RSASSA_PSS_SHA_256",
  ECC_NIST_P256: "ECDSA_SHA_256",
  ECC_NIST_P521: "ECDSA_SHA_512",
  ECC_SECG_P256K1: "ECDSA_SHA_256",
  ECC_NIST_EDWARDS25519: "ED25519_SHA_512",
  ML_DSA_44: "ML_DSA_SHAKE_256",
  ML_DSA_87: "ML_DSA_SHAKE_256",
};
const MAC_ALGORITHM: Partial<Record<KeySpec, string>> = {
  HMAC_224: "HMAC_SHA_224",
  HMAC_256: "HMAC_SHA_256",
  HMAC_384: "HMAC_SHA_384",
  HMAC_512: "HMAC_SHA_512",
};
const CURVE: Partial<Record<KeySpec, string>> = {
  ECC_NIST_P256: "P-256",
  ECC_NIST_P384: "P-384",
};

// ---------------------------------------------------------------------------------------------
// The scanner: any 16-byte window of any secret, in raw, hex, base64, base64url or decimal form.

const WINDOW = 16;

/** Every 16-byte window of every secret, found by its first four bytes. */
class SecretWindows {
  readonly #byPrefix = new Map<number, { name: string; window: Buffer }[]>();
  #count = 0;

  add(secret: Secret): void {
    const bytes = Buffer.from(secret.bytes);
    for (let at = 0; at + WINDOW <= bytes.length; at++) {
      const window = bytes.subarray(at, at + WINDOW);
      const prefix = window.readUInt32BE(0);
      const list = this.#byPrefix.get(prefix) ?? [];
      list.push({ name: `${secret.name} at ${at}`, window });
      this.#byPrefix.set(prefix, list);
      this.#count += 1;
    }
  }

  get count(): number {
    return this.#count;
  }

  /** The window of a secret found in `haystack`, if any. */
  findIn(haystack: Buffer): string | undefined {
    for (let at = 0; at + WINDOW <= haystack.length; at++) {
      const candidates = this.#byPrefix.get(haystack.readUInt32BE(at));
      if (candidates === undefined) continue;
      const here = haystack.subarray(at, at + WINDOW);
      const hit = candidates.find((c) => c.window.equals(here));
      if (hit !== undefined) return hit.name;
    }
    return undefined;
  }
}

/**
 * The bytes a text could be carrying: itself as a binary string, and every run of hex (also
 * space- or colon-separated, as inspect prints a Buffer), base64 or base64url (at each of the four
 * alignments, so a secret that does not start on a 3-byte boundary of the encoded bytes is found
 * too), and decimal byte lists (inspect of a Uint8Array, JSON of one as `{"0":1,…}`).
 */
function decodings(text: string): Buffer[] {
  const out = [Buffer.from(text, "latin1")];
  for (const [run] of text.matchAll(/[0-9a-f]{32,}/gi)) {
    out.push(Buffer.from(run, "hex"), Buffer.from(run.slice(1), "hex"));
  }
  for (const [run] of text.matchAll(/[0-9a-f]{2}(?:[ :][0-9a-f]{2}){15,}/gi)) {
    out.push(Buffer.from(run.replace(/[ :]/g, ""), "hex"));
  }
  for (const [run] of text.matchAll(/[A-Za-z0-9+/_-]{20,}/g)) {
    const standard = run.replace(/-/g, "+").replace(/_/g, "/");
    for (let shift = 0; shift < 4; shift++) out.push(Buffer.from(standard.slice(shift), "base64"));
  }
  const decimalRuns = [
    ...text.matchAll(/\b\d{1,3}(?:\s*,\s*\d{1,3}){15,}/g),
    ...text.matchAll(/"\d+":\d{1,3}(?:,"\d+":\d{1,3}){15,}/g),
  ];
  for (const [run] of decimalRuns) {
    const numbers = run
      .split(",")
      .map((item) => Number(item.replace(/^\s*"\d+":/, "").trim()))
      .filter((n) => Number.isInteger(n) && n >= 0 && n <= 255);
    out.push(Buffer.from(numbers));
  }
  return out;
}

let windows: SecretWindows;

/** Where a secret shows in `text`, or undefined. */
function leakIn(text: string): string | undefined {
  for (const bytes of decodings(text)) {
    const hit = windows.findIn(bytes);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

/** Every text form an error takes when logged, serialized or printed, its causes included. */
function renderings(error: unknown): [string, string][] {
  const out: [string, string][] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    const where = depth === 0 ? "" : `cause ${depth} `;
    if (current instanceof Error) {
      out.push([`${where}message`, current.message], [`${where}stack`, String(current.stack)]);
      current = current.cause;
    } else {
      out.push([`${where}value`, inspect(current, { depth: Number.POSITIVE_INFINITY })]);
      current = undefined;
    }
  }
  out.push([
    "JSON",
    (() => {
      try {
        return JSON.stringify(error) ?? "";
      } catch (e) {
        return String(e);
      }
    })(),
  ]);
  out.push([
    "inspect",
    inspect(error, { showHidden: true, depth: Number.POSITIVE_INFINITY, maxArrayLength: null }),
  ]);
  return out;
}

function leaksOf(label: string, error: unknown): string[] {
  return renderings(error).flatMap(([form, text]) => {
    const hit = leakIn(text);
    return hit === undefined ? [] : [`${label} (${form}): ${hit}`];
  });
}

// ---------------------------------------------------------------------------------------------
// Recovering the private material on the test's own (FORMAT §4, §4.3).

function unwrap(keyId: string, version: number, w: Uint8Array): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", root, w.subarray(9, 21));
  decipher.setAAD(new TextEncoder().encode(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]);
}

const PRIVATE_JWK_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"] as const;

/**
 * The private members of a PKCS#8 key: what is secret in it, without the DER framing that every
 * key of its kind shares.
 */
function privateMembers(name: string, pkcs8: Uint8Array): Secret[] {
  const jwk = createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" }).export({
    format: "jwk",
  });
  return PRIVATE_JWK_MEMBERS.flatMap((member) => {
    const value = jwk[member];
    return value === undefined
      ? []
      : [{ name: `${name} ${member}`, bytes: Buffer.from(value, "base64url") }];
  });
}

const ML_DSA = { ML_DSA_44: ml_dsa44, ML_DSA_65: ml_dsa65, ML_DSA_87: ml_dsa87 } as const;

/**
 * An ML-DSA seed and the secret parts of the private key expanded from it (FIPS 204: ρ ‖ K ‖ tr ‖
 * s1 ‖ s2 ‖ t0; ρ and tr follow from the public key), which the KMS holds in memory.
 */
function mlDsaSecrets(name: string, keySpec: keyof typeof ML_DSA, seed: Uint8Array): Secret[] {
  const { secretKey } = ML_DSA[keySpec].keygen(seed);
  return [
    { name: `${name} seed`, bytes: seed },
    { name: `${name} K`, bytes: secretKey.slice(32, 64) },
    { name: `${name} s1‖s2‖t0`, bytes: secretKey.slice(128) },
  ];
}

function materialSecrets(record: StoredKey): Secret[] {
  return record.versions.flatMap((v) => {
    const material = unwrap(record.keyId, v.version, v.wrappedMaterial);
    const name = `${record.keySpec}/${record.keyUsage} ${record.keyId}`;
    if (record.keySpec.startsWith("HMAC_")) return [{ name: `${name} HMAC key`, bytes: material }];
    if (record.keySpec in ML_DSA) {
      return mlDsaSecrets(name, record.keySpec as keyof typeof ML_DSA, material);
    }
    return privateMembers(name, material);
  });
}

// ---------------------------------------------------------------------------------------------

let store: MemoryKeyStore;
let sink: MemoryAuditSink;
let kms: Kms;
const secrets: Secret[] = [];
const errors: [string, KmsError][] = [];

/** The call must fail with a KmsError: a call that succeeds proves nothing here. */
async function collect(label: string, action: () => Promise<unknown>): Promise<void> {
  const error = await Promise.resolve()
    .then(action)
    .then(
      () => new Error(`${label}: expected a failure, the call succeeded`),
      (e: unknown) => e,
    );
  if (!isKmsError(error)) throw new Error(`${label}: expected a KmsError, got ${String(error)}`);
  errors.push([label, error]);
}

/** `seed` repeated to `length` bytes: an oversized input made of secret bytes. */
function tiled(seed: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += seed.length) out.set(seed.subarray(0, length - at), at);
  return out;
}

function spki(curve: string): Uint8Array {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
  return new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
}

/** The failures a caller can provoke with one key, most of them with the key's secrets as input. */
async function provokeFailures(keySpec: KeySpec, keyUsage: KeyUsage, keyId: string) {
  const label = `${keySpec}/${keyUsage}`;
  const record = (await store.getKey(keyId))!;
  const own = materialSecrets(record);
  const secret = own[0]!.bytes;
  const material = unwrap(keyId, 1, record.versions[0]!.wrappedMaterial);
  const other = new Uint8Array(32).fill(7);
  const call = kms as unknown as Record<string, (r: unknown, o?: unknown) => Promise<unknown>>;
  const fail = (what: string, method: string, request: object, options?: object) =>
    collect(`${label} ${what}`, () => call[method]!.call(kms, { keyId, ...request }, options));

  if (keyUsage === "GENERATE_VERIFY_MAC") {
    const macAlgorithm = MAC_ALGORITHM[keySpec]!;
    const wrongAlgorithm = macAlgorithm === "HMAC_SHA_256" ? "HMAC_SHA_512" : "HMAC_SHA_256";
    await fail("verifyMac with the key as MAC", "verifyMac", {
      message: secret,
      mac: secret,
      macAlgorithm,
    });
    await fail("verifyMac, wrong algorithm", "verifyMac", {
      message: other,
      mac: secret,
      macAlgorithm: wrongAlgorithm,
    });
    await fail("generateMac, wrong algorithm", "generateMac", {
      message: secret,
      macAlgorithm: wrongAlgorithm,
    });
    await fail("generateMac, oversized message of key bytes", "generateMac", {
      message: tiled(secret, MAX_MAC_MESSAGE_BYTES + 1),
      macAlgorithm,
    });
    await fail("generateMac, empty message", "generateMac", {
      message: new Uint8Array(0),
      macAlgorithm,
    });
    await fail("generateMac, message as a number array", "generateMac", {
      message: [...secret],
      macAlgorithm,
    });
    await fail("generateMac, unknown algorithm", "generateMac", {
      message: secret,
      macAlgorithm: "HMAC_SHA_1",
    });
    await fail("sign with a MAC key", "sign", {
      message: secret,
      signingAlgorithm: "ECDSA_SHA_256",
    });
    await fail("encrypt with a MAC key", "encrypt", { plaintext: secret });
    await fail(
      "generateMac denied",
      "generateMac",
      { message: secret, macAlgorithm },
      {
        principal: MALLORY,
      },
    );
    await fail(
      "verifyMac denied",
      "verifyMac",
      { message: secret, mac: secret, macAlgorithm },
      {
        principal: MALLORY,
      },
    );
  } else if (keyUsage === "ENCRYPT_DECRYPT") {
    const encryptionAlgorithm = "RSAES_OAEP_SHA_256";
    await fail("decrypt of random bytes", "decrypt", {
      ciphertextBlob: randomBytes(256),
      encryptionAlgorithm,
    });
    await fail("decrypt of the key's own PKCS#8", "decrypt", {
      ciphertextBlob: material,
      encryptionAlgorithm,
    });
    await fail("decrypt of a private member", "decrypt", {
      ciphertextBlob: own.find((s) => s.name.endsWith(" d"))!.bytes,
      encryptionAlgorithm,
    });
    await fail("decrypt, wrong algorithm", "decrypt", {
      ciphertextBlob: randomBytes(256),
      encryptionAlgorithm: "SYMMETRIC_DEFAULT",
    });
    await fail("encrypt of too much key material", "encrypt", {
      plaintext: material.subarray(0, 300),
      encryptionAlgorithm,
    });
    await fail("encrypt, no algorithm", "encrypt", { plaintext: secret });
    await fail("sign with an encryption key", "sign", {
      message: secret,
      signingAlgorithm: "RSASSA_PSS_SHA_256",
    });
    await fail("reEncrypt of random bytes", "reEncrypt", {
      ciphertextBlob: randomBytes(256),
      sourceKeyId: keyId,
      sourceEncryptionAlgorithm: encryptionAlgorithm,
      destinationKeyId: keyId,
      destinationEncryptionAlgorithm: encryptionAlgorithm,
    });
    await fail("generateDataKey under an RSA key", "generateDataKey", { keySpec: "AES_256" });
    await fail(
      "decrypt denied",
      "decrypt",
      { ciphertextBlob: randomBytes(256), encryptionAlgorithm },
      {
        principal: MALLORY,
      },
    );
  } else if (keyUsage === "KEY_AGREEMENT") {
    const curve = CURVE[keySpec]!;
    await fail("ECDH with its own private key as peer", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: material,
    });
    await fail("ECDH with a private member as peer", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: secret,
    });
    await fail("ECDH with a peer on another curve", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: spki(curve === "P-256" ? "P-384" : "P-256"),
    });
    const peer = Buffer.from(spki(curve));
    const offCurve = Buffer.from(peer);
    offCurve[offCurve.length - 1]! ^= 1;
    await fail("ECDH with a point off the curve", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: offCurve,
    });
    await fail("ECDH with a peer and trailing key bytes", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: Buffer.concat([peer, secret]),
    });
    await fail("ECDH, unknown algorithm", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDHE",
      publicKey: peer,
    });
    await fail("sign with a key-agreement key", "sign", {
      message: secret,
      signingAlgorithm: "ECDSA_SHA_256",
    });
    await fail("getPublicKey of a key id in another case", "getPublicKey", {
      keyId: keyId.toUpperCase(),
    });
    await fail(
      "ECDH denied",
      "deriveSharedSecret",
      {
        keyAgreementAlgorithm: "ECDH",
        publicKey: peer,
      },
      { principal: MALLORY },
    );
    // A secret the KMS hands out: the test looks for it too.
    const { sharedSecret } = await kms.deriveSharedSecret({
      keyId,
      keyAgreementAlgorithm: "ECDH",
      publicKey: peer,
    });
    secrets.push({ name: `${label} shared secret`, bytes: Uint8Array.from(sharedSecret) });
  } else {
    const signingAlgorithm = SIGNING_ALGORITHM[keySpec]!;
    const wrongAlgorithm = signingAlgorithm === "ECDSA_SHA_384" ? "ECDSA_SHA_256" : "ECDSA_SHA_384";
    const isMlDsa = keySpec.startsWith("ML_DSA");
    await fail("verify with a private member as signature", "verify", {
      message: secret,
      signature: secret,
      signingAlgorithm,
    });
    await fail("verify with the PKCS#8 or seed as signature", "verify", {
      message: other,
      signature: material,
      signingAlgorithm,
    });
    await fail("sign, wrong algorithm", "sign", {
      message: secret,
      signingAlgorithm: wrongAlgorithm,
    });
    await fail("sign, oversized message of key bytes", "sign", {
      message: tiled(secret, MAX_SIGN_MESSAGE_BYTES + 1),
      signingAlgorithm,
    });
    await fail("sign, digest of the wrong size", "sign", {
      message: secret.subarray(0, 5),
      messageType: "DIGEST",
      signingAlgorithm,
    });
    // ML-DSA takes EXTERNAL_MU, but as 64 bytes: its 32-byte seed is not one.
    await fail("sign, wrong message type or size", "sign", {
      message: isMlDsa ? secret : tiled(secret, 64),
      messageType: "EXTERNAL_MU",
      signingAlgorithm,
    });
    await fail("sign, message as a number array", "sign", {
      message: [...secret],
      signingAlgorithm,
    });
    await fail("encrypt with a signing key", "encrypt", {
      plaintext: secret,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    await fail("ECDH with a signing key", "deriveSharedSecret", {
      keyAgreementAlgorithm: "ECDH",
      publicKey: material,
    });
    await fail(
      "sign denied",
      "sign",
      { message: secret, signingAlgorithm },
      { principal: MALLORY },
    );
  }

  // The key's state, not the request, refuses these.
  const normal: [string, object] =
    keyUsage === "GENERATE_VERIFY_MAC"
      ? ["generateMac", { message: secret, macAlgorithm: MAC_ALGORITHM[keySpec]! }]
      : keyUsage === "ENCRYPT_DECRYPT"
        ? [
            "encrypt",
            { plaintext: secret.subarray(0, 16), encryptionAlgorithm: "RSAES_OAEP_SHA_256" },
          ]
        : keyUsage === "KEY_AGREEMENT"
          ? [
              "deriveSharedSecret",
              { keyAgreementAlgorithm: "ECDH", publicKey: spki(CURVE[keySpec]!) },
            ]
          : ["sign", { message: secret, signingAlgorithm: SIGNING_ALGORITHM[keySpec]! }];
  await kms.disableKey({ keyId });
  await fail("while disabled", ...normal);
  await kms.enableKey({ keyId });
  await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
  await fail("while pending deletion", ...normal);
  await kms.cancelKeyDeletion({ keyId });
  await kms.enableKey({ keyId });
  await fail("with a grant token of key bytes", normal[0], {
    ...normal[1],
    grantTokens: [Buffer.from(secret).toString("base64url")],
  });
}

beforeAll(async () => {
  store = new MemoryKeyStore();
  sink = new MemoryAuditSink();
  kms = await createKms({ store, rootKey: Uint8Array.from(root), audit: sink });
  const created: [KeySpec, KeyUsage, string][] = [];
  for (const [keySpec, keyUsage] of KEYS) {
    const { keyId } = (await kms.createKey({ keySpec, keyUsage })).keyMetadata;
    created.push([keySpec, keyUsage, keyId]);
  }
  secrets.push({ name: "root key", bytes: root });
  for (const record of await store.listKeys({ limit: 100 }))
    secrets.push(...materialSecrets(record));

  // Private keys the KMS hands out: the test looks for them too.
  const symmetric = (await kms.createKey()).keyMetadata.keyId;
  for (const keyPairSpec of ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_EDWARDS25519"] as const) {
    const pair = await kms.generateDataKeyPair({ keyId: symmetric, keyPairSpec });
    secrets.push(...privateMembers(`data key pair ${keyPairSpec}`, pair.privateKeyPlaintext));
  }

  for (const [keySpec, keyUsage, keyId] of created) await provokeFailures(keySpec, keyUsage, keyId);

  // The store, read back with another root key, and with records altered behind the KMS's back.
  const otherRoot = await createKms({ store, rootKey: randomBytes(32) }).catch((e: unknown) => e);
  if (isKmsError(otherRoot)) errors.push(["another root key", otherRoot]);
  const [, , rsaId] = created.find(([s, u]) => s === "RSA_2048" && u === "ENCRYPT_DECRYPT")!;
  const [, , ecId] = created.find(([s, u]) => s === "ECC_NIST_P256" && u === "SIGN_VERIFY")!;
  await tamper(rsaId, (v) => {
    const wrappedMaterial = Uint8Array.from(v.wrappedMaterial);
    wrappedMaterial[40]! ^= 1;
    return { ...v, wrappedMaterial };
  });
  await tamper(ecId, (v) => ({ ...v, publicKey: spki("P-256") }));
  const reopened = await createKms({
    store,
    rootKey: Uint8Array.from(root),
    unsealedRecords: "seal",
  });
  await collect("altered wrapped material: decrypt", () =>
    reopened.encrypt({
      keyId: rsaId,
      plaintext: new Uint8Array(4),
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    }),
  );
  await collect("altered public key: getPublicKey", () => reopened.getPublicKey({ keyId: ecId }));
  await collect("altered public key: verify", () =>
    reopened.verify({
      keyId: ecId,
      message: new Uint8Array(4),
      signature: new Uint8Array(70),
      signingAlgorithm: "ECDSA_SHA_256",
    }),
  );

  windows = new SecretWindows();
  for (const secret of secrets) windows.add(secret);
}, 60_000);

/** Rewrites a key's only version in the store, dropping its seal so that a reopen reseals it. */
async function tamper(
  keyId: string,
  change: (v: StoredKey["versions"][number]) => StoredKey["versions"][number],
): Promise<void> {
  const { seal: _dropped, ...record } = (await store.getKey(keyId))!;
  await store.updateKey({
    ...record,
    revision: record.revision + 1,
    versions: record.versions.map(change),
  });
}

describe("private key material of every key family never leaves in the clear", () => {
  it("the test recovered the private material of every key and provoked its failures", () => {
    const names = secrets.map((s) => s.name);
    for (const [keySpec, keyUsage] of KEYS) {
      const own = names.filter(
        (n) => n.startsWith(`${keySpec}/${keyUsage} `) && !n.endsWith("shared secret"),
      );
      const expected = keySpec.startsWith("RSA_") ? 6 : keySpec.startsWith("ML_DSA_") ? 3 : 1;
      expect(own, `${keySpec}/${keyUsage}`).toHaveLength(expected);
      const failures = errors.filter(([label]) => label.startsWith(`${keySpec}/${keyUsage} `));
      expect(failures.length, `${keySpec}/${keyUsage}`).toBeGreaterThanOrEqual(9);
    }
    expect(names.filter((n) => n.endsWith("shared secret"))).toHaveLength(2);
    expect(names.filter((n) => n.startsWith("data key pair"))).toHaveLength(6 + 1 + 1);
    // Every failure kind is there: refusals, bad input, bad signatures and MACs, key states.
    const codes = new Set(errors.map(([, e]) => e.code));
    for (const code of [
      "AccessDeniedException",
      "ValidationException",
      "InvalidKeyUsageException",
      "KMSInvalidSignatureException",
      "KMSInvalidMacException",
      "InvalidCiphertextException",
      "DisabledException",
      "KMSInvalidStateException",
      "RootKeyError",
    ]) {
      expect(codes, code).toContain(code);
    }
  });

  it("self-check: the scanner finds any 16 bytes of a secret in any form and any place", () => {
    const rsa = secrets.find(
      (s) => s.name.includes("RSA_2048/SIGN_VERIFY") && s.name.endsWith(" q"),
    )!;
    const seed = secrets.find((s) => s.name.includes("ML_DSA_44") && s.name.endsWith(" K"))!;
    const run = Buffer.from(rsa.bytes.subarray(37, 37 + WINDOW));
    const misaligned = Buffer.concat([randomBytes(1), run]);
    const planted: [string, unknown][] = [
      ["hex, mid-secret", new ValidationError(`bad key ${run.toString("hex")}`)],
      ["HEX", new Error(`key=${run.toString("hex").toUpperCase()}.`)],
      ["base64, misaligned", new Error(`blob ${misaligned.toString("base64")}`)],
      ["base64url", new Error(`blob:${misaligned.toString("base64url")}`)],
      ["binary string", new Error(`raw ${run.toString("latin1")}`)],
      ["Buffer in a property", Object.assign(new Error("x"), { detail: Buffer.from(seed.bytes) })],
      [
        "Uint8Array in a cause",
        new Error("outer", { cause: { bytes: Uint8Array.from(seed.bytes) } }),
      ],
      [
        "Uint8Array, JSON",
        Object.assign(new Error("x"), { toJSON: () => ({ k: Uint8Array.from(seed.bytes) }) }),
      ],
      [
        "deep in a cause chain",
        new ValidationError("a", {
          cause: new Error("b", { cause: new Error(`c ${run.toString("base64url")}`) }),
        }),
      ],
    ];
    for (const [how, error] of planted) expect(leaksOf(how, error), how).not.toEqual([]);
    const clean = new Error(`bad key ${randomBytes(64).toString("hex")}`, {
      cause: { bytes: randomBytes(64) },
    });
    expect(leaksOf("unrelated bytes", clean)).toEqual([]);
  });

  it("no error carries a secret in its message, stack, causes, JSON or inspect output", () => {
    const leaks = errors.flatMap(([label, error]) => leaksOf(label, error));
    expect(leaks).toEqual([]);
  });

  it("inspect, JSON and string forms of the Kms reveal nothing", () => {
    const renderingsOfKms = [
      inspect(kms),
      inspect(kms, { showHidden: true, depth: Number.POSITIVE_INFINITY, getters: true }),
      JSON.stringify(kms),
      String(kms),
    ];
    for (const text of renderingsOfKms) expect(leakIn(text)).toBeUndefined();
  });

  it("the audit trail of all those calls holds no secret", () => {
    expect(sink.events.length).toBeGreaterThan(errors.length);
    expect(leakIn(JSON.stringify(sink.events))).toBeUndefined();
    for (const event of sink.events)
      expect(leakIn(inspect(event, { depth: null }))).toBeUndefined();
  });

  it("no store record holds private material, in a byte field or as text", async () => {
    for (const record of await store.listKeys({ limit: 100 })) {
      for (const v of record.versions) {
        for (const bytes of [v.wrappedMaterial, v.publicKey ?? new Uint8Array(0)]) {
          expect(windows.findIn(Buffer.from(bytes)), record.keyId).toBeUndefined();
        }
      }
      const text = JSON.stringify(record, (_k, v: unknown) =>
        v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v,
      );
      expect(leakIn(text), record.keyId).toBeUndefined();
    }
  });
});
