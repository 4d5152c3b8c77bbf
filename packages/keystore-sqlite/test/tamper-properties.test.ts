/**
 * Property-style tamper tests for the SQLite key store, driven by a seeded PRNG (fast-check is
 * not a devDependency of this package): each iteration prints its seed, so a failure replays.
 *
 * What the design promises (docs/FORMAT.md §4 and §4.1, docs/THREAT-MODEL.md "Write access to
 * the key store"): every key record, its version rows included, carries a record seal (a MAC
 * under the root key), so a record whose wrapped bytes, or the (key_id, version) its rows are
 * filed under, were changed is refused as a whole: every use of that key fails with
 * `RootKeyError` naming the key's ARN and the store, before any material is unwrapped, and no
 * other key is affected. (Material is also AES-256-GCM under the root key with AAD
 * `kms/wrap/v1|<keyId>|<version>`, the second line of defence behind the seal.)
 *
 * Every check runs on a fresh Kms over a copy of one prepared file: the HSM caches unwrapped
 * material per key version, so a Kms that had used the keys before the tampering would test
 * its caches rather than the file.
 */

import { createDecipheriv, createPrivateKey, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createKms,
  isKmsError,
  type KeySpec,
  type KeyUsage,
  type Kms,
  type KmsErrorCode,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { mulberry32 } from "@kms/tooling/random";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { retainSqliteHandle, SqliteKeyStore } from "../src/index.ts";

/** Seeded choices of rows, offsets and operations. */
function prng(seed: number) {
  const next = mulberry32(seed);
  const int = (n: number): number => Math.floor(next() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  return { int, pick };
}
type Prng = ReturnType<typeof prng>;

const seeds = (base: number, count: number): number[] =>
  Array.from({ length: count }, (_, i) => base + i);

const encoder = new TextEncoder();
const context = { purpose: "tamper-test" };

/** Raw connection to tamper with or read the file; retained so the GC never finalizes it. */
function raw(path: string, readonly = false): Database.Database {
  return retainSqliteHandle(new Database(path, { readonly }));
}

type KeyKind = "symmetric" | "hmac" | "ecc";

interface FixtureKey {
  readonly keyId: string;
  readonly arn: string;
  readonly kind: KeyKind;
  readonly versions: readonly number[];
  /** Symmetric keys: one ciphertext under each version. */
  readonly ciphertexts: ReadonlyMap<number, { blob: Uint8Array; plaintext: Uint8Array }>;
  /** HMAC keys: a MAC under the current version, to check the material is the same. */
  readonly mac?: { readonly message: Uint8Array; readonly mac: Uint8Array };
}

interface VersionRow {
  readonly key_id: string;
  readonly version: number;
  readonly wrapped_material: Buffer;
}

let dir: string;
let basePath: string;
const root = randomBytes(32);
const fixture: FixtureKey[] = [];

function filesOf(path: string): string[] {
  return [path, `${path}-wal`, `${path}-shm`];
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "kms-sqlite-tamper-"));
  basePath = join(dir, "base.db");
  const kms = await createKms({
    store: SqliteKeyStore.open({ path: basePath }),
    rootKey: Uint8Array.from(root),
    audit: false,
  });
  // Three symmetric keys with 1, 3 and 2 versions (so rows can move between versions of one key
  // as well as between keys), one HMAC key and one ECC key (material that is not an AES key).
  for (const rotations of [0, 2, 1]) {
    const { keyId, arn } = (await kms.createKey()).keyMetadata;
    const ciphertexts = new Map<number, { blob: Uint8Array; plaintext: Uint8Array }>();
    for (let version = 1; version <= rotations + 1; version++) {
      if (version > 1) await kms.rotateKeyOnDemand({ keyId });
      const plaintext = encoder.encode(`key ${keyId} version ${version}`);
      const { ciphertextBlob } = await kms.encrypt({
        keyId,
        plaintext,
        encryptionContext: context,
      });
      ciphertexts.set(version, { blob: ciphertextBlob, plaintext });
    }
    const versions = [...ciphertexts.keys()];
    fixture.push({
      keyId,
      arn,
      kind: "symmetric",
      versions,
      ciphertexts,
    });
  }
  const hmac = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
    .keyMetadata;
  const message = encoder.encode("mac me");
  const { mac } = await kms.generateMac({
    keyId: hmac.keyId,
    message,
    macAlgorithm: "HMAC_SHA_256",
  });
  fixture.push({
    keyId: hmac.keyId,
    arn: hmac.arn,
    kind: "hmac",
    versions: [1],
    ciphertexts: new Map(),
    mac: { message, mac },
  });
  const ecc = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
    .keyMetadata;
  fixture.push({
    keyId: ecc.keyId,
    arn: ecc.arn,
    kind: "ecc",
    versions: [1],
    ciphertexts: new Map(),
  });
  await kms.close();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** The keys whose stored record the mutation changed: their seal no longer matches. */
type Altered = Set<string>;

interface Mutation {
  readonly description: string;
  apply(db: Database.Database, altered: Altered): void;
}

const allRows = (): { keyId: string; version: number }[] =>
  fixture.flatMap((k) => k.versions.map((version) => ({ keyId: k.keyId, version })));

function readWrapped(db: Database.Database, keyId: string, version: number): Buffer {
  const row = db
    .prepare<[string, number], VersionRow>(
      "SELECT * FROM kms_key_versions WHERE key_id = ? AND version = ?",
    )
    .get(keyId, version);
  if (row === undefined) throw new Error(`no row ${keyId} v${version}`);
  return row.wrapped_material;
}

function writeWrapped(db: Database.Database, keyId: string, version: number, bytes: Buffer) {
  const changed = db
    .prepare("UPDATE kms_key_versions SET wrapped_material = ? WHERE key_id = ? AND version = ?")
    .run(bytes, keyId, version).changes;
  if (changed !== 1) throw new Error(`no row ${keyId} v${version}`);
}

function flipMutation(r: Prng): Mutation {
  const { keyId, version } = r.pick(allRows());
  // Wrapped lengths differ by key spec (69 bytes for 32-byte material, more for PKCS#8).
  const where = r.int(2 ** 30);
  const mask = 1 + r.int(255);
  return {
    description: `flip byte ${where} mod length of ${keyId} v${version} with ${mask}`,
    apply(db, altered) {
      const bytes = Buffer.from(readWrapped(db, keyId, version));
      bytes[where % bytes.length]! ^= mask;
      writeWrapped(db, keyId, version, bytes);
      altered.add(keyId);
    },
  };
}

function swapMutation(r: Prng): Mutation {
  const rows = allRows();
  const a = r.int(rows.length);
  let b = r.int(rows.length - 1);
  if (b >= a) b++;
  const x = rows[a]!;
  const y = rows[b]!;
  return {
    description: `swap wrapped material of ${x.keyId} v${x.version} and ${y.keyId} v${y.version}`,
    apply(db, altered) {
      const wx = readWrapped(db, x.keyId, x.version);
      const wy = readWrapped(db, y.keyId, y.version);
      writeWrapped(db, x.keyId, x.version, wy);
      writeWrapped(db, y.keyId, y.version, wx);
      // Two versions of one key alter one record; of two keys, both.
      altered.add(x.keyId);
      altered.add(y.keyId);
    },
  };
}

/**
 * Files a version row under another key: in place of one of its versions, or as a new version
 * that the current_version column then points to. Both records change: the source lost a
 * version, the target holds material that is not its own.
 */
function moveMutation(r: Prng): Mutation {
  const source = r.pick(allRows());
  const target = r.pick(fixture.filter((k) => k.keyId !== source.keyId));
  const append = r.int(2) === 1;
  const version = append ? Math.max(...target.versions) + 1 : r.pick(target.versions);
  return {
    description: `move ${source.keyId} v${source.version} to ${target.keyId} v${version}${append ? " (new current version)" : " (replacing it)"}`,
    apply(db, altered) {
      if (!append) {
        db.prepare("DELETE FROM kms_key_versions WHERE key_id = ? AND version = ?").run(
          target.keyId,
          version,
        );
      }
      const moved = db
        .prepare(
          "UPDATE kms_key_versions SET key_id = ?, version = ? WHERE key_id = ? AND version = ?",
        )
        .run(target.keyId, version, source.keyId, source.version).changes;
      if (moved !== 1) throw new Error("row not moved");
      if (append) {
        db.prepare("UPDATE kms_keys SET current_version = ? WHERE key_id = ?").run(
          version,
          target.keyId,
        );
      }
      altered.add(target.keyId);
      altered.add(source.keyId);
    },
  };
}

/** How a use must fail: the error code, and what its message must name. */
interface Refusal {
  readonly code: KmsErrorCode;
  readonly names: readonly string[];
}

/**
 * What every use of `key` must do: fail with a RootKeyError naming the key's ARN and the store
 * when its record was altered (FORMAT.md §4.1), succeed otherwise.
 */
function expectedFailure(key: FixtureKey, altered: Altered, store: string): Refusal | undefined {
  return altered.has(key.keyId) ? { code: "RootKeyError", names: [key.arn, store] } : undefined;
}

/**
 * Runs `use`; when `expected` names an error, the use must fail with exactly that KMS error,
 * whose message names what `expected` lists, and return nothing. Otherwise it must succeed, and
 * `check` sees the result.
 */
async function expectOutcome<T>(
  where: string,
  expected: Refusal | undefined,
  use: () => Promise<T>,
  check: (result: T) => Promise<void> | void,
): Promise<void> {
  let result: T;
  try {
    result = await use();
  } catch (error) {
    expect(isKmsError(error), `${where}: not a KMS error: ${String(error)}`).toBe(true);
    if (expected === undefined)
      expect.fail(`${where}: failed on an untouched key: ${String(error)}`);
    expect((error as { code: string }).code, `${where}: ${String(error)}`).toBe(expected.code);
    for (const name of expected.names) {
      expect((error as Error).message, `${where}: the message names ${name}`).toContain(name);
    }
    return;
  }
  expect(expected, `${where}: succeeded on an altered key record`).toBeUndefined();
  await check(result);
}

/** Every use of every fixture key, each checked against what the seal promises for it. */
async function checkAllUses(kms: Kms, altered: Altered, store: string, label: string) {
  for (const key of fixture) {
    const at = (what: string) => `${label}: ${what} on ${key.kind} ${key.keyId}`;
    // One outcome for every use of the key: the seal covers the whole record, so no version of
    // an altered key is used, whichever version the tampering touched.
    const failure = expectedFailure(key, altered, store);
    await expectOutcome(
      at("describeKey"),
      failure,
      () => kms.describeKey({ keyId: key.keyId }),
      (r) => expect(r.keyMetadata.arn).toBe(key.arn),
    );
    switch (key.kind) {
      case "symmetric": {
        for (const [version, { blob, plaintext }] of key.ciphertexts) {
          await expectOutcome(
            at(`decrypt v${version}`),
            failure,
            () => kms.decrypt({ ciphertextBlob: blob, encryptionContext: context }),
            (r) => expect(Buffer.from(r.plaintext).equals(plaintext)).toBe(true),
          );
          // reEncrypt unwraps the source version, then seals under the current one.
          await expectOutcome(
            at(`reEncrypt v${version} to itself`),
            failure,
            () =>
              kms.reEncrypt({
                ciphertextBlob: blob,
                sourceEncryptionContext: context,
                destinationKeyId: key.keyId,
              }),
            async (r) => {
              const back = await kms.decrypt({ ciphertextBlob: r.ciphertextBlob });
              expect(Buffer.from(back.plaintext).equals(plaintext)).toBe(true);
            },
          );
        }
        const plaintext = encoder.encode(`fresh under ${key.keyId}`);
        await expectOutcome(
          at("encrypt"),
          failure,
          () => kms.encrypt({ keyId: key.keyId, plaintext }),
          async (r) => {
            const back = await kms.decrypt({ ciphertextBlob: r.ciphertextBlob });
            expect(Buffer.from(back.plaintext).equals(plaintext)).toBe(true);
          },
        );
        await expectOutcome(
          at("generateDataKey"),
          failure,
          () => kms.generateDataKey({ keyId: key.keyId, keySpec: "AES_256" }),
          async (r) => {
            const back = await kms.decrypt({ ciphertextBlob: r.ciphertextBlob });
            expect(Buffer.from(back.plaintext).equals(r.plaintext)).toBe(true);
          },
        );
        await expectOutcome(
          at("generateDataKeyWithoutPlaintext"),
          failure,
          () => kms.generateDataKeyWithoutPlaintext({ keyId: key.keyId, keySpec: "AES_256" }),
          () => undefined,
        );
        break;
      }
      case "hmac": {
        const { message, mac } = key.mac!;
        await expectOutcome(
          at("generateMac"),
          failure,
          () => kms.generateMac({ keyId: key.keyId, message, macAlgorithm: "HMAC_SHA_256" }),
          // HMAC is deterministic: the same MAC as before proves the same material.
          (r) => expect(Buffer.from(r.mac).equals(mac)).toBe(true),
        );
        await expectOutcome(
          at("verifyMac"),
          failure,
          () => kms.verifyMac({ keyId: key.keyId, message, mac, macAlgorithm: "HMAC_SHA_256" }),
          (r) => expect(r.macValid).toBe(true),
        );
        break;
      }
      case "ecc": {
        const message = encoder.encode("sign me");
        await expectOutcome(
          at("sign"),
          failure,
          () => kms.sign({ keyId: key.keyId, message, signingAlgorithm: "ECDSA_SHA_256" }),
          async (r) => {
            const verified = await kms.verify({
              keyId: key.keyId,
              message,
              signature: r.signature,
              signingAlgorithm: "ECDSA_SHA_256",
            });
            expect(verified.signatureValid).toBe(true);
          },
        );
        await expectOutcome(
          at("getPublicKey"),
          failure,
          () => kms.getPublicKey({ keyId: key.keyId }),
          (r) => expect(r.publicKey.length).toBeGreaterThan(0),
        );
        break;
      }
    }
  }
}

/** Applies one seeded mutation to a copy of the prepared file; returns the keys it altered. */
async function runTamperIteration(seed: number, make: (r: Prng) => Mutation): Promise<Altered> {
  const path = join(dir, `tamper-${seed}.db`);
  for (const [from, to] of filesOf(basePath).map((f, i) => [f, filesOf(path)[i]!] as const)) {
    if (existsSync(from)) copyFileSync(from, to);
  }
  const mutation = make(prng(seed));
  const label = `seed ${seed}: ${mutation.description}`;
  const altered: Altered = new Set();
  const db = raw(path);
  try {
    db.transaction(() => mutation.apply(db, altered))();
  } finally {
    db.close();
  }
  const store = SqliteKeyStore.open({ path });
  const kms = await createKms({ store, rootKey: Uint8Array.from(root), audit: false });
  try {
    await checkAllUses(kms, altered, store.description, label);
    return altered;
  } finally {
    await kms.close();
    for (const file of filesOf(path)) rmSync(file, { force: true });
  }
}

/**
 * Runs the seeds and checks they exercised both outcomes: some altered keys were refused and
 * some untouched keys were used, in every iteration.
 */
async function runTamperSeeds(base: number, make: (r: Prng) => Mutation): Promise<void> {
  for (const seed of seeds(base, 30)) {
    const altered = await runTamperIteration(seed, make);
    expect(altered.size, `seed ${seed}: a key was altered`).toBeGreaterThan(0);
    expect(altered.size, `seed ${seed}: a key was left alone`).toBeLessThan(fixture.length);
  }
}

describe("SqliteKeyStore: tampering with sealed key records (seeded)", () => {
  test("the untouched copy works for every key (control)", async () => {
    await runTamperIteration(1, () => ({ description: "no change", apply: () => undefined }));
  });

  test("a flipped byte in one version's wrapped material fails every use of that key with RootKeyError; other keys work", async () => {
    await runTamperSeeds(10_000, flipMutation);
  });

  test("wrapped material swapped between two versions fails every use of the key(s) holding them; other keys work", async () => {
    await runTamperSeeds(20_000, swapMutation);
  });

  test("a version row moved to another key fails every use of both keys with RootKeyError, never uses the material", async () => {
    await runTamperSeeds(30_000, moveMutation);
  });
});

/** Material per docs/FORMAT.md §4, unwrapped independently of the HSM with the known root key. */
function unwrap(keyId: string, version: number, w: Uint8Array): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", root, w.subarray(9, 21));
  decipher.setAAD(encoder.encode(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]);
}

interface Secret {
  readonly name: string;
  readonly bytes: Buffer;
  /**
   * Also look for 16-byte runs at either end. Not for a PKCS#8 key pair as a whole: it starts
   * with a fixed header and ends with the public point, which the store keeps in clear.
   */
  readonly runs: boolean;
}

/** The secret bytes behind a version: the AES or HMAC key, or a key pair and its private scalar. */
function secretsOf(name: string, keySpec: string, material: Buffer): Secret[] {
  if (!keySpec.startsWith("ECC_")) return [{ name, bytes: material, runs: true }];
  const jwk = createPrivateKey({ key: material, format: "der", type: "pkcs8" }).export({
    format: "jwk",
  });
  return [
    { name: `${name} (PKCS#8)`, bytes: material, runs: false },
    { name: `${name} (private scalar)`, bytes: Buffer.from(jwk.d!, "base64url"), runs: true },
  ];
}

/** A secret in the file as raw bytes (whole, or a 16-byte run at either end) or as text. */
function leakIn(file: Buffer, { bytes: secret, runs }: Secret): string | undefined {
  if (file.indexOf(secret) !== -1) return "raw bytes";
  if (runs && file.indexOf(secret.subarray(0, 16)) !== -1) return "first 16 bytes";
  if (runs && file.indexOf(secret.subarray(-16)) !== -1) return "last 16 bytes";
  for (const form of [
    secret.toString("hex"),
    secret.toString("hex").toUpperCase(),
    secret.toString("base64"),
    secret.toString("base64url"),
  ]) {
    if (file.indexOf(form) !== -1) return `text ${form}`;
  }
  return undefined;
}

describe("SqliteKeyStore: no plaintext key material at rest (seeded random operations)", () => {
  test("the database file and its WAL never hold material or data keys, only wrapped material", async () => {
    for (const seed of seeds(40_000, 6)) {
      const r = prng(seed);
      const path = join(dir, `at-rest-${seed}.db`);
      const clock = new ManualClock();
      const kms = await createKms({
        store: SqliteKeyStore.open({ path }),
        rootKey: Uint8Array.from(root),
        audit: false,
        clock,
      });
      const keys: string[] = [];
      const dataKeys: Buffer[] = [];
      /** Every (key, version) ever stored, with its wrapped bytes, including destroyed ones. */
      const stored = new Map<string, { keySpec: string; wrapped: Buffer; id: string; v: number }>();
      const snapshot = () => {
        const db = raw(path, true);
        try {
          const rows = db
            .prepare<[], VersionRow & { key_spec: string }>(
              "SELECT v.key_id, v.version, v.wrapped_material, k.key_spec FROM kms_key_versions v JOIN kms_keys k USING (key_id)",
            )
            .all();
          for (const row of rows) {
            stored.set(`${row.key_id}#${row.version}`, {
              keySpec: row.key_spec,
              wrapped: Buffer.from(row.wrapped_material),
              id: row.key_id,
              v: row.version,
            });
          }
        } finally {
          db.close();
        }
      };
      const tolerate = async (p: Promise<unknown>) => {
        // Random operations hit state errors (disabled key, rotation limit): KMS errors only.
        const error = await p.then(
          () => undefined,
          (e: unknown) => e,
        );
        if (error !== undefined) expect(isKmsError(error), String(error)).toBe(true);
      };
      const specs: readonly { keySpec: KeySpec; keyUsage: KeyUsage }[] = [
        { keySpec: "SYMMETRIC_DEFAULT", keyUsage: "ENCRYPT_DECRYPT" },
        { keySpec: "SYMMETRIC_DEFAULT", keyUsage: "ENCRYPT_DECRYPT" },
        { keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" },
        { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" },
      ];
      for (let step = 0; step < 24; step++) {
        const keyId = keys.length === 0 ? undefined : r.pick(keys);
        const op = keyId === undefined ? 0 : r.int(9);
        switch (op) {
          case 0:
            keys.push((await kms.createKey(r.pick(specs))).keyMetadata.keyId);
            break;
          case 1:
            await tolerate(kms.rotateKeyOnDemand({ keyId: keyId! }));
            break;
          case 2:
            await tolerate(
              kms.generateDataKey({ keyId: keyId!, keySpec: "AES_256" }).then((dk) => {
                dataKeys.push(Buffer.from(dk.plaintext));
              }),
            );
            break;
          case 3:
            await tolerate(
              kms
                .encrypt({ keyId: keyId!, plaintext: randomBytes(1 + r.int(200)) })
                .then((e) => kms.decrypt({ ciphertextBlob: e.ciphertextBlob })),
            );
            break;
          case 4:
            await tolerate(
              kms.generateMac({
                keyId: keyId!,
                message: randomBytes(16),
                macAlgorithm: "HMAC_SHA_256",
              }),
            );
            await tolerate(
              kms.sign({
                keyId: keyId!,
                message: randomBytes(16),
                signingAlgorithm: "ECDSA_SHA_256",
              }),
            );
            break;
          case 5:
            await tolerate(
              r.int(2) === 0 ? kms.disableKey({ keyId: keyId! }) : kms.enableKey({ keyId: keyId! }),
            );
            break;
          case 6:
            await tolerate(
              kms.tagResource({ keyId: keyId!, tags: [{ tagKey: `t${step}`, tagValue: "v" }] }),
            );
            await tolerate(kms.createAlias({ aliasName: `alias/k${step}`, targetKeyId: keyId! }));
            break;
          case 7:
            // Destroyed keys' material must not linger in clear in freed pages either.
            await tolerate(kms.scheduleKeyDeletion({ keyId: keyId!, pendingWindowInDays: 7 }));
            break;
          case 8:
            clock.advanceDays(8);
            await kms.runMaintenance();
            break;
        }
        snapshot();
      }
      const secrets: Secret[] = [{ name: "root key", bytes: root, runs: true }];
      for (const [name, s] of stored) {
        secrets.push(...secretsOf(`material of ${name}`, s.keySpec, unwrap(s.id, s.v, s.wrapped)));
      }
      for (const [i, bytes] of dataKeys.entries()) {
        secrets.push({ name: `data key ${i}`, bytes, runs: true });
      }
      expect(stored.size, `seed ${seed}: the run stored some material`).toBeGreaterThan(0);

      const scan = (phase: string) => {
        for (const file of filesOf(path).slice(0, 2)) {
          if (!existsSync(file)) continue;
          const bytes = readFileSync(file);
          for (const secret of secrets) {
            const leak = leakIn(bytes, secret);
            expect(leak, `seed ${seed} ${phase}: ${secret.name} in ${file}`).toBeUndefined();
          }
        }
      };
      // While open (recent pages are in the WAL) and after close (checkpointed into the file).
      scan("open");
      await kms.close();
      scan("closed");
      // Control: the scan does see what the store keeps, so a miss above is not a blind scan.
      const onDisk = Buffer.concat(
        filesOf(path)
          .slice(0, 2)
          .filter((f) => existsSync(f))
          .map((f) => readFileSync(f)),
      );
      stored.clear();
      snapshot();
      for (const [name, s] of stored) {
        expect(onDisk.indexOf(s.wrapped), `seed ${seed}: wrapped ${name} on disk`).not.toBe(-1);
      }
      for (const f of filesOf(path)) rmSync(f, { force: true });
    }
  });
});
