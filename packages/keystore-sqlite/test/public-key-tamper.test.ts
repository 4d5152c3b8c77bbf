/**
 * The stored public key of an asymmetric key is not covered by the root key's wrapping, but it is
 * part of the key record, which the record seal covers (docs/FORMAT.md §4.1). A writer of the
 * database who swaps it for another key's must not make that key's signatures verify, nor make
 * RSA encryption go to the other key: both records no longer match their seals, so every use of
 * either key, the private side included, fails with RootKeyError naming the key and the store.
 * (Behind the seal, the KMS also checks a public key against the private material.)
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, type KeySpec, type KeyUsage, type Kms } from "@kms/core";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { retainSqliteHandle, SqliteKeyStore } from "../src/index.ts";

const root = randomBytes(32);
const message = new TextEncoder().encode("pay 100 to alice");
let dir: string;
let path: string;

const open = (): Promise<Kms> =>
  createKms({ store: SqliteKeyStore.open({ path }), rootKey: Uint8Array.from(root), audit: false });

/** The refusal of a swapped key: a RootKeyError whose message names the key's ARN and the store. */
async function refusedAsAltered(use: Promise<unknown>, keyId: string): Promise<void> {
  const error: unknown = await use.then(
    () => expect.fail(`a use of ${keyId} succeeded on its altered record`),
    (e: unknown) => e,
  );
  expect(error).toMatchObject({ code: "RootKeyError" });
  expect((error as Error).message).toContain(`:key/${keyId} in key store ${storeName} `);
  expect((error as Error).message).toContain("does not match its record seal");
}

async function pair(kms: Kms, keySpec: KeySpec, keyUsage: KeyUsage): Promise<[string, string]> {
  const a = (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
  const b = (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
  return [a, b];
}

/** Exchanges the public_key columns of two keys' version 1 with the driver directly. */
function swapPublicKeys(a: string, b: string): void {
  const db = retainSqliteHandle(new Database(path));
  const read = db.prepare(
    "SELECT public_key FROM kms_key_versions WHERE key_id = ? AND version = 1",
  );
  const write = db.prepare(
    "UPDATE kms_key_versions SET public_key = ? WHERE key_id = ? AND version = 1",
  );
  const pa = (read.get(a) as { public_key: Buffer }).public_key;
  const pb = (read.get(b) as { public_key: Buffer }).public_key;
  db.transaction(() => {
    write.run(pb, a);
    write.run(pa, b);
  })();
  db.close();
}

let signers: [string, string];
let encrypters: [string, string];
let mlDsa: [string, string];
let forged: Uint8Array;
let forgedMlDsa: Uint8Array;
let untouched: string;
/** The store's description, which refusals name. */
let storeName: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "kms-public-key-"));
  path = join(dir, "keys.db");
  const store = SqliteKeyStore.open({ path });
  storeName = store.description;
  const kms = await createKms({ store, rootKey: Uint8Array.from(root), audit: false });
  signers = await pair(kms, "ECC_NIST_P256", "SIGN_VERIFY");
  encrypters = await pair(kms, "RSA_2048", "ENCRYPT_DECRYPT");
  mlDsa = await pair(kms, "ML_DSA_44", "SIGN_VERIFY");
  untouched = (await kms.createKey({ keySpec: "ECC_NIST_P384", keyUsage: "SIGN_VERIFY" }))
    .keyMetadata.keyId;
  // The attacker's signatures: made by key B, to be passed off as key A's.
  forged = (await kms.sign({ keyId: signers[1], message, signingAlgorithm: "ECDSA_SHA_256" }))
    .signature;
  forgedMlDsa = (await kms.sign({ keyId: mlDsa[1], message, signingAlgorithm: "ML_DSA_SHAKE_256" }))
    .signature;
  await kms.close();
  swapPublicKeys(...signers);
  swapPublicKeys(...encrypters);
  swapPublicKeys(...mlDsa);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a swapped public_key column", () => {
  test("does not make another key's signature verify", async () => {
    const kms = await open();
    for (const [keyId, signature, signingAlgorithm] of [
      [signers[0], forged, "ECDSA_SHA_256"],
      [mlDsa[0], forgedMlDsa, "ML_DSA_SHAKE_256"],
    ] as const) {
      await refusedAsAltered(kms.verify({ keyId, message, signature, signingAlgorithm }), keyId);
    }
    await kms.close();
  });

  test("is not handed out by GetPublicKey, nor used to encrypt", async () => {
    const kms = await open();
    for (const keyId of [...signers, ...encrypters, ...mlDsa]) {
      await refusedAsAltered(kms.getPublicKey({ keyId }), keyId);
    }
    for (const keyId of encrypters) {
      await refusedAsAltered(
        kms.encrypt({ keyId, plaintext: message, encryptionAlgorithm: "RSAES_OAEP_SHA_256" }),
        keyId,
      );
    }
    await kms.close();
  });

  test("refuses the private side too: the altered record is not used for anything", async () => {
    const kms = await open();
    for (const [keyId, signingAlgorithm] of [
      [signers[0], "ECDSA_SHA_256"],
      [signers[1], "ECDSA_SHA_256"],
      [mlDsa[0], "ML_DSA_SHAKE_256"],
    ] as const) {
      await refusedAsAltered(kms.sign({ keyId, message, signingAlgorithm }), keyId);
    }
    await refusedAsAltered(kms.describeKey({ keyId: encrypters[1] }), encrypters[1]);
    await kms.close();
  });
});

test("an untouched key's public key verifies and is handed out, next to the altered ones", async () => {
  const kms = await open();
  // Created in beforeAll, before the swap: it lives in the tampered file.
  const keyId = untouched;
  const { signature } = await kms.sign({ keyId, message, signingAlgorithm: "ECDSA_SHA_384" });
  await expect(
    kms.verify({ keyId, message, signature, signingAlgorithm: "ECDSA_SHA_384" }),
  ).resolves.toMatchObject({ signatureValid: true });
  expect((await kms.getPublicKey({ keyId })).publicKey.length).toBeGreaterThan(0);
  await kms.close();
});
