/**
 * Test-only routes for the asymmetric suites: a Kms whose HSM shares its root key with a second
 * SoftwareHsm, so tests can import known key material (RFC vectors, OpenSSL-generated keys)
 * exactly as createKey would store generated material, and helpers to drive the `openssl` CLI as
 * the independent implementation.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { asymmetricHsm } from "../../src/hsm/asymmetric.ts";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import {
  createKms,
  type KeySpec,
  type KeyUsage,
  type Kms,
  MemoryKeyStore,
  type SigningAlgorithm,
} from "../../src/index.ts";
import { SealedKeyStore } from "../../src/keystore/sealed-key-store.ts";

export interface ImportingKms {
  readonly kms: Kms;
  /** Stores `material` (PKCS#8 DER, ML-DSA seed or HMAC key) as a new key; returns its id. */
  importKey(spec: KeySpec, usage: KeyUsage, material: Uint8Array): Promise<string>;
  /**
   * Verifies with a public key alone, through the HSM primitive `Kms.verify` ends in. The Kms
   * itself only verifies with keys whose stored public key matches their private material (a
   * store writer cannot swap it), and vectors such as Wycheproof give public keys only.
   */
  verifyWithPublicKey(
    spec: KeySpec,
    spki: Uint8Array,
    algorithm: SigningAlgorithm,
    message: Uint8Array,
    signature: Uint8Array,
  ): boolean;
}

export async function importingKms(): Promise<ImportingKms> {
  const root = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: root });
  const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), store);
  // Sealed with the shared root key (FORMAT §4.1), as the Kms's own createKey would seal it.
  const sealed = new SealedKeyStore(store, hsm);
  async function store_(
    keyId: string,
    spec: KeySpec,
    usage: KeyUsage,
    wrapped: { wrappedMaterial: Uint8Array; publicKey?: Uint8Array },
  ): Promise<string> {
    await sealed.createKey({
      keyId,
      revision: 1,
      createdAt: Date.now(),
      description: "imported by a test",
      keySpec: spec,
      keyUsage: usage,
      origin: "AWS_KMS",
      multiRegion: false,
      keyState: "Enabled",
      rotation: { enabled: false, periodInDays: 365, onDemandRotations: 0 },
      tags: [],
      versions: [{ version: 1, createdAt: Date.now(), keyMaterialId: "00".repeat(32), ...wrapped }],
      currentVersion: 1,
    });
    return keyId;
  }
  return {
    kms,
    importKey(spec, usage, material) {
      const keyId = globalThis.crypto.randomUUID();
      return store_(
        keyId,
        spec,
        usage,
        asymmetricHsm(hsm).importMaterial(keyId, 1, spec, material),
      );
    },
    verifyWithPublicKey(spec, spki, algorithm, message, signature) {
      const keyId = globalThis.crypto.randomUUID();
      return asymmetricHsm(hsm).verify(keyId, 1, spki, spec, algorithm, "RAW", message, signature);
    },
  };
}

/** A scratch directory for OpenSSL's input and output files. */
export class Scratch {
  readonly dir = mkdtempSync(join(tmpdir(), "kms-asym-"));
  #n = 0;

  write(bytes: Uint8Array | string, suffix = ".bin"): string {
    const path = join(this.dir, `f${this.#n++}${suffix}`);
    writeFileSync(path, bytes);
    return path;
  }

  path(suffix = ".bin"): string {
    return join(this.dir, `f${this.#n++}${suffix}`);
  }

  read(path: string): Uint8Array {
    return new Uint8Array(readFileSync(path));
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs openssl; throws with its stderr when it exits non-zero. */
export function openssl(args: readonly string[], input?: Uint8Array): Buffer {
  return execFileSync("openssl", args, {
    ...(input !== undefined ? { input } : {}),
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/** True when openssl accepts the signature (exit 0), false when it reports a failure. */
export function opensslAccepts(args: readonly string[]): boolean {
  try {
    openssl(args);
    return true;
  } catch {
    return false;
  }
}

export function hex(value: string): Uint8Array {
  return new Uint8Array(Buffer.from(value.replace(/\s+/g, ""), "hex"));
}

export const utf8 = (value: string): Uint8Array => new TextEncoder().encode(value);
