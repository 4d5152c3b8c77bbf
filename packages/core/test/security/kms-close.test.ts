/**
 * What a closed Kms leaves in memory (found in review): close() flushed the audit trail and
 * closed the store, but the HSM kept the root key, the record-seal keys, every unwrapped key
 * version and the raw private secrets cached for @noble until the garbage collector took the
 * Kms, and the Kms kept answering calls with them. The HSM is reached here through the
 * SoftwareHsm.open that createKms calls; the raw secrets through the @noble calls that get them.
 */
import { randomFillSync } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { asymmetricHsm } from "../../src/hsm/asymmetric.ts";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { rotateRootKey } from "../../src/hsm/root-key-rotation.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { KeyStoreConflictError, KmsInternalError, MemoryAuditSink } from "../../src/index.ts";
import { MemoryKeyStore } from "../../src/keystore/memory-key-store.ts";
import { createKms, type Kms } from "../../src/kms.ts";

const seen = vi.hoisted(() => ({
  /** Secret keys @noble signed with (ECDSA scalars). */
  signedWith: [] as Uint8Array[],
  /** Expanded ML-DSA secret keys @noble derived. */
  derived: [] as Uint8Array[],
}));
vi.mock("@noble/curves/nist.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/curves/nist.js")>();
  const p256 = {
    ...real.p256,
    sign: (message: Uint8Array, secretKey: Uint8Array, options?: object) => {
      seen.signedWith.push(secretKey);
      return real.p256.sign(message, secretKey, options as never);
    },
  };
  return { ...real, p256 };
});
vi.mock("@noble/post-quantum/ml-dsa.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/post-quantum/ml-dsa.js")>();
  const ml_dsa44 = {
    ...real.ml_dsa44,
    keygen: (seed?: Uint8Array) => {
      const pair = real.ml_dsa44.keygen(seed);
      seen.derived.push(pair.secretKey);
      return pair;
    },
  };
  return { ...real, ml_dsa44 };
});

afterEach(() => {
  vi.restoreAllMocks();
  seen.signedWith.length = 0;
  seen.derived.length = 0;
});

const zeroed = (bytes: Uint8Array): boolean => bytes.every((b) => b === 0);
const message = new TextEncoder().encode("close me");

/** createKms, with the SoftwareHsm it opened. */
async function openKms(store = new MemoryKeyStore(), sink = new MemoryAuditSink()) {
  const open = vi.spyOn(SoftwareHsm, "open");
  const kms = await createKms({ store, audit: sink });
  const hsm = await open.mock.results[0]!.value;
  open.mockRestore();
  return { kms, hsm: hsm as SoftwareHsm, store, sink };
}

/** Uses one key of each kind, so that the HSM caches something of each. */
async function useKeys(kms: Kms) {
  const symmetric = (await kms.createKey()).keyMetadata.keyId;
  const { ciphertextBlob } = await kms.encrypt({ keyId: symmetric, plaintext: message });
  const ecc = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
    .keyMetadata.keyId;
  await kms.sign({
    keyId: ecc,
    message: new Uint8Array(32).fill(7),
    messageType: "DIGEST",
    signingAlgorithm: "ECDSA_SHA_256",
  });
  const mlDsa = (await kms.createKey({ keySpec: "ML_DSA_44", keyUsage: "SIGN_VERIFY" })).keyMetadata
    .keyId;
  // From here on, only the secret key signing derives and caches.
  seen.derived.length = 0;
  await kms.sign({
    keyId: mlDsa,
    message: new Uint8Array(64).fill(1),
    messageType: "EXTERNAL_MU",
    signingAlgorithm: "ML_DSA_SHAKE_256",
  });
  const hmac = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata.keyId;
  await kms.generateMac({ keyId: hmac, message, macAlgorithm: "HMAC_SHA_256" });
  return { symmetric, ciphertextBlob, ecc, mlDsa, hmac };
}

describe("Kms.close releases what the HSM holds", () => {
  it("zero-fills the raw private secrets the HSM cached", async () => {
    const { kms } = await openKms();
    await useKeys(kms);
    // The ECDSA scalar and the ML-DSA expanded secret key cached for signing.
    expect(seen.signedWith).toHaveLength(1);
    expect(seen.derived).toHaveLength(1);
    const secrets = [...seen.signedWith, ...seen.derived];
    expect(secrets.every((s) => !zeroed(s))).toBe(true);

    await kms.close();
    expect(secrets.every(zeroed)).toBe(true);
  });

  it("drops the root, seal and unwrapped keys: the HSM refuses work it did from cache", async () => {
    const { kms, hsm, store } = await openKms();
    const { symmetric, ecc } = await useKeys(kms);
    const record = (await store.getKey(symmetric))!;
    const ref = {
      keyId: symmetric,
      version: 1,
      wrappedMaterial: record.versions[0]!.wrappedMaterial,
    };
    const eccRef = {
      keyId: ecc,
      version: 1,
      wrappedMaterial: (await store.getKey(ecc))!.versions[0]!.wrappedMaterial,
    };
    // Served from the cache before close.
    expect(hsm.encryptToBlob(ref, message, new Uint8Array(0))).toBeInstanceOf(Uint8Array);

    await kms.close();
    expect(hsm.closed).toBe(true);
    const refused = [
      () => hsm.encryptToBlob(ref, message, new Uint8Array(0)),
      () => hsm.unwrapMaterial(ref),
      () => hsm.generateSymmetricMaterial(symmetric, 2),
      () => hsm.recordSealMac(new Uint8Array(8)),
      () => hsm.verifyRecordSealMac(hsm.rootKeyId, new Uint8Array(8), new Uint8Array(32)),
      () =>
        asymmetricHsm(hsm).sign(
          eccRef,
          "ECC_NIST_P256",
          "ECDSA_SHA_256",
          "DIGEST",
          new Uint8Array(32).fill(7),
        ),
    ];
    for (const call of refused) {
      expect(call).toThrow(KmsInternalError);
      expect(call).toThrow(/the HSM is closed/);
    }
  });

  it("refuses every later call with KmsInternalError, unaudited, and closes once", async () => {
    const { kms, sink } = await openKms();
    const { symmetric, ciphertextBlob, ecc } = await useKeys(kms);
    await kms.close();
    const events = sink.events.length;

    const calls: [string, () => Promise<unknown>][] = [
      ["encrypt", () => kms.encrypt({ keyId: symmetric, plaintext: message })],
      ["decrypt", () => kms.decrypt({ ciphertextBlob })],
      ["describeKey", () => kms.describeKey({ keyId: ecc })],
      ["createKey", () => kms.createKey()],
      ["listKeys", () => kms.listKeys()],
      ["runMaintenance", () => kms.runMaintenance()],
    ];
    for (const [operation, call] of calls) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, operation).toBeInstanceOf(KmsInternalError);
      expect((error as Error).message).toBe(`${operation} failed: this Kms is closed`);
    }
    expect(sink.events).toHaveLength(events);
    await expect(kms.close()).resolves.toBeUndefined();
  });

  it("releases the HSM even when closing the store fails", async () => {
    const store = new MemoryKeyStore();
    store.close = () => Promise.reject(new Error("store went away"));
    const { kms, hsm } = await openKms(store);
    await useKeys(kms);
    await expect(kms.close()).rejects.toThrow("store went away");
    expect(hsm.closed).toBe(true);
    expect(seen.signedWith.every(zeroed)).toBe(true);
  });
});

describe("no other copy of a secret outlives its use", () => {
  it("the ML-DSA secret key derived to compute a new key's public key is wiped", async () => {
    const { kms } = await openKms();
    await kms.createKey({ keySpec: "ML_DSA_44", keyUsage: "SIGN_VERIFY" });
    // Only the public key is kept; nothing is cached until the key signs.
    expect(seen.derived).toHaveLength(1);
    expect(zeroed(seen.derived[0]!)).toBe(true);
  });

  it("rotateRootKey releases the HSM it opened with both root keys, however it ends", async () => {
    const store = new MemoryKeyStore();
    const from = randomFillSync(new Uint8Array(32));
    const to = randomFillSync(new Uint8Array(32));
    const kms = await createKms({ store, rootKey: Uint8Array.from(from), audit: false });
    await kms.createKey();
    await kms.createKey();
    await createKms({
      store,
      rootKey: Uint8Array.from(to),
      unwrapRootKeys: [Uint8Array.from(from)],
      audit: false,
    });

    const open = vi.spyOn(SoftwareHsm, "open");
    await expect(
      rotateRootKey({
        store,
        from: RootKeySource.fromBytes(from),
        to: RootKeySource.fromBytes(to),
        onProgress: () => {
          throw new KeyStoreConflictError("interrupted");
        },
      }),
    ).rejects.toThrow("interrupted");
    const interrupted = (await open.mock.results[0]!.value) as SoftwareHsm;
    expect(interrupted.closed).toBe(true);

    const result = await rotateRootKey({ store, from, to });
    expect(result.rewrittenKeys).toBeGreaterThan(0);
    const finished = (await open.mock.results[1]!.value) as SoftwareHsm;
    expect(finished.closed).toBe(true);
  });
});
