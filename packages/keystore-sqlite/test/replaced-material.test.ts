import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, RootKeySource, rotateRootKey, type StoredKey } from "@kms/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";
import { prepare, retain } from "../src/internal/retain.ts";
import { makeKey, next } from "./fixtures/keys.ts";

/**
 * What a copy of the key store taken now would hold: the database file and every side file
 * SQLite may keep beside it (a rollback journal only exists outside WAL mode, but is checked so
 * that a change of journal mode cannot hide material from this scan). Read synchronously: an
 * asynchronous read would yield to the event loop, where the store's deferred truncation runs.
 */
function filesOnDisk(path: string): Buffer {
  return Buffer.concat(
    [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]
      .filter((file) => existsSync(file))
      .map((file) => readFileSync(file)),
  );
}

function walSize(path: string): number {
  return statSync(`${path}-wal`).size;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Larger than a page, so it lives in overflow pages that replacing it frees. */
function oversized(): Uint8Array {
  return new Uint8Array(randomBytes(9_000));
}

/**
 * Whether any 32-byte slice of `material` is in `bytes`: overflow pages split a large value
 * into pieces, each behind a page header, so the whole never appears in one piece.
 */
function holdsAnyOf(bytes: Buffer, material: Uint8Array): boolean {
  for (let at = 0; at + 32 <= material.length; at += 32) {
    if (bytes.indexOf(material.subarray(at, at + 32)) !== -1) return true;
  }
  return false;
}

function withMaterial(key: StoredKey, ...materials: Uint8Array[]): StoredKey {
  return {
    ...key,
    versions: materials.map((wrappedMaterial, i) => ({
      version: i + 1,
      createdAt: 1,
      keyMaterialId: String(i + 1).padStart(2, "0"),
      wrappedMaterial,
    })),
    currentVersion: materials.length,
  };
}

describe("wrapped material that an update replaces", () => {
  let dir: string;
  let path: string;
  const toClose: { close(): unknown }[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-replaced-"));
    path = join(dir, "kms.db");
  });
  afterEach(async () => {
    for (const c of toClose.splice(0).reverse()) await c.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A second connection that has read the file, as another process sharing it would have. */
  function otherConnection(): Database.Database {
    const other = retain(new Database(path));
    toClose.push(other);
    expect(prepare(other, "SELECT count(*) FROM kms_keys").pluck().get()).toBeGreaterThan(0);
    return other;
  }

  it("is in neither the database file nor its WAL once rotateRootKey resolves, while the file stays open", async () => {
    const from = new Uint8Array(randomBytes(32));
    const to = new Uint8Array(randomBytes(32));
    // The application keeps its store open during the rotation, as `kms serve` would.
    const appStore = SqliteKeyStore.open({ path });
    const kms = await createKms({ store: appStore, rootKey: RootKeySource.fromBytes(from) });
    toClose.push(kms);
    const keyIds: string[] = [];
    for (let k = 0; k < 5; k++) {
      const { keyMetadata } = await kms.createKey({ description: `key ${k}` });
      keyIds.push(keyMetadata.keyId);
    }
    await kms.rotateKeyOnDemand({ keyId: keyIds[0]! });
    const { keyMetadata: signing } = await kms.createKey({
      keySpec: "ECC_NIST_P256",
      keyUsage: "SIGN_VERIFY",
    });
    keyIds.push(signing.keyId);
    const { ciphertextBlob } = await kms.encrypt({
      keyId: keyIds[0]!,
      plaintext: new TextEncoder().encode("payroll"),
    });
    const underOldRootKey: Buffer[] = [];
    for (const keyId of keyIds) {
      for (const v of (await appStore.getKey(keyId))!.versions) {
        underOldRootKey.push(Buffer.from(v.wrappedMaterial));
      }
    }
    expect(underOldRootKey).toHaveLength(7);
    const before = filesOnDisk(path);
    for (const blob of underOldRootKey) expect(before.indexOf(blob)).toBeGreaterThan(-1);
    otherConnection();

    const operatorStore = SqliteKeyStore.open({ path });
    toClose.push(operatorStore);
    const result = await rotateRootKey({ store: operatorStore, from, to });
    expect(result.rewrappedVersions).toBe(7);

    const after = filesOnDisk(path);
    underOldRootKey.forEach((blob, i) => {
      expect(after.indexOf(blob), `version ${i} wrapped under the retired root key`).toBe(-1);
    });
    // The re-wrapped keys still work under the new root key.
    const rotated = await createKms({ store: operatorStore, rootKey: RootKeySource.fromBytes(to) });
    toClose.push(rotated);
    const { plaintext } = await rotated.decrypt({ ciphertextBlob });
    expect(new TextDecoder().decode(plaintext)).toBe("payroll");
  });

  it("leaves the WAL at the next write that replaces none, even when the material filled overflow pages", async () => {
    const store = SqliteKeyStore.open({ path });
    toClose.push(store);
    const old = oversized();
    const key = withMaterial(makeKey("k-1"), old);
    await store.createKey(key);
    await store.createKey(makeKey("k-other"));
    otherConnection();
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(true);

    const replacement = oversized();
    await store.updateKey(next(withMaterial(key, replacement)));
    await store.putSettingIfAbsent("unrelated", "x");
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(false);
    expect(holdsAnyOf(filesOnDisk(path), replacement)).toBe(true);
    expect((await store.getKey("k-1"))!.versions[0]!.wrappedMaterial).toStrictEqual(replacement);
  });

  it("leaves the WAL on the next turn of the event loop without another write, also when a version is removed", async () => {
    const store = SqliteKeyStore.open({ path });
    toClose.push(store);
    const removed = oversized();
    const key = withMaterial(makeKey("k-1"), makeKey("k-1").versions[0]!.wrappedMaterial, removed);
    await store.createKey(key);
    otherConnection();
    expect(holdsAnyOf(filesOnDisk(path), removed)).toBe(true);

    await store.updateKey(next(withMaterial(key, key.versions[0]!.wrappedMaterial)));
    await nextTurn();
    expect(holdsAnyOf(filesOnDisk(path), removed)).toBe(false);
  });

  it("leaves the WAL at close while another connection keeps the file open", async () => {
    const store = SqliteKeyStore.open({ path });
    const old = oversized();
    const key = withMaterial(makeKey("k-1"), old);
    await store.createKey(key);
    otherConnection();
    await store.updateKey(next(withMaterial(key, oversized())));
    await store.close();
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(false);
  });

  it("tries again at the next write, and at close, when a reader held the WAL during the truncation", async () => {
    const store = SqliteKeyStore.open({ path });
    toClose.push(store);
    const old = oversized();
    const key = withMaterial(makeKey("k-1"), old);
    await store.createKey(key);
    const reader = otherConnection();
    const inTransaction = prepare(reader, "SELECT count(*) FROM kms_keys").pluck();
    reader.exec("BEGIN");
    inTransaction.get();

    await store.updateKey(next(withMaterial(key, oversized())));
    await nextTurn();
    // wal_checkpoint(TRUNCATE) reports that reader as busy and leaves the WAL in place.
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(true);
    await store.putSettingIfAbsent("while-reading", "x");
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(true);

    reader.exec("COMMIT");
    await store.putSettingIfAbsent("after-reading", "x");
    expect(holdsAnyOf(filesOnDisk(path), old)).toBe(false);

    // The same through close, the last chance this store has.
    const older = oversized();
    const other = withMaterial(makeKey("k-2"), older);
    await store.createKey(other);
    reader.exec("BEGIN");
    inTransaction.get();
    await store.updateKey(next(withMaterial(other, oversized())));
    await nextTurn();
    expect(holdsAnyOf(filesOnDisk(path), older)).toBe(true);
    reader.exec("COMMIT");
    await store.close();
    expect(holdsAnyOf(filesOnDisk(path), older)).toBe(false);
  });

  it("empties the WAL once for updates that re-wrap key after key, and never for an added version or a metadata change", async () => {
    const store = SqliteKeyStore.open({ path });
    toClose.push(store);
    const keys = Array.from({ length: 5 }, (_, i) =>
      withMaterial(makeKey(`k-${i}`), Uint8Array.of(i, 1)),
    );
    for (const key of keys) await store.createKey(key);
    await nextTurn();

    // Ordinary writes append to the WAL and nothing more: no checkpoint, no extra fsyncs.
    let size = walSize(path);
    const rotated = next(withMaterial(keys[0]!, Uint8Array.of(0, 1), Uint8Array.of(0, 2)));
    await store.updateKey(rotated);
    await store.updateKey(next(rotated, { description: "renamed" }));
    await nextTurn();
    expect(walSize(path)).toBeGreaterThan(size);

    // Re-wrapping without yielding (as rotateRootKey does) batches the truncation.
    size = walSize(path);
    for (const key of keys.slice(1)) {
      await store.updateKey(next(withMaterial(key, Uint8Array.of(9, 9))));
      const grown = walSize(path);
      expect(grown).toBeGreaterThan(size);
      size = grown;
    }
    await nextTurn();
    expect(walSize(path)).toBe(0);
  });
});
