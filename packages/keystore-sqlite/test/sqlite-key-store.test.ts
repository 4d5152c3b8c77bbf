import { chmod, lstat, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KmsInternalError, ValidationError } from "@kms/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteAuditSink, SqliteKeyStore } from "../src/index.ts";
import { prepare, retain } from "../src/internal/retain.ts";
import { makeKey, next } from "./fixtures/keys.ts";
import { RELEASED_MIGRATIONS } from "./fixtures/old-schemas.ts";

/** A raw connection for inspecting the file; retained for the reason in retain.ts. */
function rawDatabase(path: string): Database.Database {
  return retain(new Database(path));
}

function scalar(db: Database.Database, sql: string): unknown {
  return prepare(db, sql).pluck().get();
}

describe("SqliteKeyStore", () => {
  let dir: string;
  let path: string;
  const toClose: { close(): unknown }[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-"));
    path = join(dir, "keys.db");
  });
  afterEach(async () => {
    for (const c of toClose.splice(0)) await c.close();
    await rm(dir, { recursive: true, force: true });
  });

  function open(options: { cacheSize?: number; busyTimeoutMs?: number } = {}): SqliteKeyStore {
    const store = SqliteKeyStore.open({ path, ...options });
    toClose.push(store);
    return store;
  }

  describe("persistence", () => {
    it("yields the same records after closing and reopening the file", async () => {
      const first = open();
      const asymmetric = makeKey("k-asym", {
        keySpec: "ECC_NIST_P256",
        keyUsage: "SIGN_VERIFY",
        policy: '{"Version":"2012-10-17"}',
        tags: [{ tagKey: "env", tagValue: "prod" }],
        versions: [
          {
            version: 1,
            createdAt: 1,
            keyMaterialId: "01",
            wrappedMaterial: Uint8Array.from([0, 255, 0, 255]),
            publicKey: Uint8Array.from([0x30, 0x00, 0xff]),
          },
        ],
      });
      const rotated = next(makeKey("k-sym"), {
        versions: [
          ...makeKey("k-sym").versions,
          {
            version: 2,
            createdAt: 2,
            rotationType: "ON_DEMAND",
            keyMaterialId: "02",
            wrappedMaterial: new Uint8Array(48).fill(0xff),
          },
        ],
        currentVersion: 2,
        rotation: { enabled: true, periodInDays: 90, nextRotationAt: 3, onDemandRotations: 1 },
      });
      await first.createKey(asymmetric);
      await first.createKey(makeKey("k-sym"));
      await first.updateKey(rotated);
      await first.createAlias({
        aliasName: "alias/app",
        targetKeyId: "k-sym",
        createdAt: 5,
        updatedAt: 6,
      });
      await first.putSettingIfAbsent("root-key-check", "abc");
      const before = await first.listKeys({ limit: 10 });
      await first.close();

      const second = open();
      expect(await second.listKeys({ limit: 10 })).toStrictEqual(before);
      expect(await second.getKey("k-sym")).toStrictEqual(before.find((k) => k.keyId === "k-sym"));
      expect(await second.getAlias("alias/app")).toStrictEqual({
        aliasName: "alias/app",
        targetKeyId: "k-sym",
        createdAt: 5,
        updatedAt: 6,
      });
      expect(await second.getSetting("root-key-check")).toBe("abc");
      expect(await second.putSettingIfAbsent("root-key-check", "other")).toBe("abc");
    });

    it("stores material as BLOBs in a WAL-mode file at the current schema version (4: change counter)", async () => {
      const store = open();
      await store.createKey(
        makeKey("k-1", {
          versions: [
            {
              version: 1,
              createdAt: 1,
              keyMaterialId: "01",
              wrappedMaterial: Uint8Array.from([1, 2, 3]),
              publicKey: new Uint8Array(0),
            },
          ],
        }),
      );
      const raw = rawDatabase(path);
      toClose.push(raw);
      expect(scalar(raw, "PRAGMA journal_mode")).toBe("wal");
      expect(scalar(raw, "PRAGMA user_version")).toBe(4);
      // Two rows written (the key and its version), each counted by a trigger.
      expect(scalar(raw, "SELECT counter FROM kms_store_changes")).toBe(2);
      expect(scalar(raw, "SELECT typeof(wrapped_material) FROM kms_key_versions")).toBe("blob");
      expect(scalar(raw, "SELECT typeof(public_key) FROM kms_key_versions")).toBe("blob");
      expect(scalar(raw, "SELECT length(wrapped_material) FROM kms_key_versions")).toBe(3);
    });

    it("applies WAL, synchronous=FULL and busy_timeout to a database it is given, and leaves it open", async () => {
      const db = rawDatabase(path);
      toClose.push(db);
      const store = SqliteKeyStore.open({ database: db, busyTimeoutMs: 1234 });
      expect(store.description).toBe(`sqlite:${path}`);
      expect(scalar(db, "PRAGMA journal_mode")).toBe("wal");
      expect(scalar(db, "PRAGMA synchronous")).toBe(2); // FULL
      expect(scalar(db, "PRAGMA busy_timeout")).toBe(1234);
      expect(scalar(db, "PRAGMA foreign_keys")).toBe(1);
      await store.createKey(makeKey("k-1"));
      await store.close();
      expect(db.open).toBe(true);
      expect(scalar(db, "SELECT count(*) FROM kms_keys")).toBe(1);
    });

    it("honours synchronous: NORMAL when asked", async () => {
      const db = rawDatabase(path);
      toClose.push(db);
      const store = SqliteKeyStore.open({ database: db, synchronous: "NORMAL" });
      expect(scalar(db, "PRAGMA synchronous")).toBe(1);
      await store.close();
    });
  });

  describe("migrating files written by earlier versions", () => {
    /**
     * A file as an earlier release left it: the first `version` migrations, and rows written
     * with only the columns that release knew about.
     */
    function writeOldFile(version: 1 | 2 | 3): void {
      const raw = rawDatabase(path);
      try {
        for (const sql of RELEASED_MIGRATIONS.slice(0, version)) raw.exec(sql);
        raw.exec(`PRAGMA user_version = ${version}`);
        raw
          .prepare(
            `INSERT INTO kms_keys (key_id, revision, created_at, description, key_spec, key_usage,
               origin, multi_region, key_state, rotation_enabled, rotation_period_in_days,
               next_rotation_at, on_demand_rotations, tags, policy, current_version
               ${version >= 2 ? ", grants" : ""})
             VALUES ('k-old', 4, 1, 'old key', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS',
               0, 'Enabled', 1, 90, 7, 0, '[{"tagKey":"env","tagValue":"prod"}]',
               '{"Version":"2012-10-17"}', 1
               ${version >= 2 ? `, '[{"grantId":"g-1","granteePrincipal":"alice","issuingPrincipal":"root","operations":["Decrypt"],"createdAt":2}]'` : ""})`,
          )
          .run();
        raw
          .prepare(
            `INSERT INTO kms_key_versions (key_id, version, created_at, key_material_id,
               wrapped_material) VALUES ('k-old', 1, 1, '01', ?)`,
          )
          .run(Buffer.from([0x00, 0xff, 0x10]));
        raw.exec(`
          INSERT INTO kms_aliases (alias_name, target_key_id, created_at, updated_at)
            VALUES ('alias/old', 'k-old', 3, 4);
          INSERT INTO kms_settings (name, value) VALUES ('root-key-check', 'check');
        `);
      } finally {
        raw.close();
      }
    }

    const oldKey = (grants: boolean) =>
      makeKey("k-old", {
        revision: 4,
        createdAt: 1,
        description: "old key",
        rotation: { enabled: true, periodInDays: 90, nextRotationAt: 7, onDemandRotations: 0 },
        tags: [{ tagKey: "env", tagValue: "prod" }],
        policy: '{"Version":"2012-10-17"}',
        ...(grants
          ? {
              grants: [
                {
                  grantId: "g-1",
                  granteePrincipal: "alice",
                  issuingPrincipal: "root",
                  operations: ["Decrypt"],
                  createdAt: 2,
                },
              ],
            }
          : {}),
        versions: [
          {
            version: 1,
            createdAt: 1,
            keyMaterialId: "01",
            wrappedMaterial: Uint8Array.from([0x00, 0xff, 0x10]),
          },
        ],
      });
    const oldAlias = { aliasName: "alias/old", targetKeyId: "k-old", createdAt: 3, updatedAt: 4 };

    for (const version of [3, 2, 1] as const) {
      it(`upgrades a schema version ${version} file in place: rows kept, unsealed, sealable afterwards, and its writes counted`, async () => {
        writeOldFile(version);
        const store = open();

        const raw = rawDatabase(path);
        toClose.push(raw);
        expect(scalar(raw, "PRAGMA user_version")).toBe(4);
        expect(scalar(raw, "SELECT count(*) FROM kms_keys WHERE seal IS NULL")).toBe(1);
        expect(scalar(raw, "SELECT count(*) FROM kms_aliases WHERE seal IS NULL")).toBe(1);

        const key = await store.getKey("k-old");
        expect(key).toStrictEqual(oldKey(version >= 2));
        expect(key).not.toHaveProperty("seal");
        expect(await store.listKeys({ limit: 10 })).toStrictEqual([oldKey(version >= 2)]);
        expect(await store.getAlias("alias/old")).toStrictEqual(oldAlias);
        expect(await store.listAliases({ limit: 10 })).toStrictEqual([oldAlias]);
        expect(await store.getSetting("root-key-check")).toBe("check");

        // What KmsOptions.unsealedRecords "seal" does: write each record back with a seal.
        await store.updateKey(next(key!, { seal: "seal-k" }));
        await store.updateAlias("alias/old", "k-old", 5, "seal-a");
        await store.close();

        const reopened = open();
        expect(await reopened.getKey("k-old")).toStrictEqual(
          next(oldKey(version >= 2), { seal: "seal-k" }),
        );
        expect(await reopened.getAlias("alias/old")).toStrictEqual({
          ...oldAlias,
          updatedAt: 5,
          seal: "seal-a",
        });
        expect(scalar(raw, "SELECT seal FROM kms_keys")).toBe("seal-k");
        expect(scalar(raw, "SELECT seal FROM kms_aliases")).toBe("seal-a");
        // The migration's rows are not counted; the two writes after it are.
        expect(scalar(raw, "SELECT counter FROM kms_store_changes")).toBeGreaterThanOrEqual(2);
      });
    }
  });

  describe("cache invalidation across connections (PRAGMA data_version)", () => {
    it("sees another connection's update, deletion and alias change on the next read", async () => {
      const reader = open();
      const writer = open();
      const key = makeKey("k-1", { description: "v1" });
      await writer.createKey(key);
      await writer.createAlias({
        aliasName: "alias/a",
        targetKeyId: "k-1",
        createdAt: 1,
        updatedAt: 1,
      });
      await writer.createKey(makeKey("k-2"));

      expect((await reader.getKey("k-1"))?.description).toBe("v1");
      expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k-1");
      // A second read is served from the cache: the very same frozen object.
      expect(await reader.getKey("k-1")).toBe(await reader.getKey("k-1"));

      await writer.updateKey(next(key, { description: "v2" }));
      expect((await reader.getKey("k-1"))?.description).toBe("v2");

      await writer.updateAlias("alias/a", "k-2", 2);
      expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k-2");

      await writer.deleteKey("k-1", 2);
      expect(await reader.getKey("k-1")).toBeUndefined();
    });

    it("keeps its cache across commits to the file that are not key-store writes", async () => {
      // An audit sink or the application's own tables in the same file commit on every call;
      // data_version moves for those too, and clearing on it made every read a miss.
      const reader = open();
      const writer = open();
      await writer.createKey(makeKey("k-1", { description: "v1" }));
      const cached = await reader.getKey("k-1");
      const app = rawDatabase(path);
      toClose.push(app);
      app.exec("CREATE TABLE app_orders (id INTEGER PRIMARY KEY, total INTEGER)");
      for (let i = 0; i < 3; i++) {
        prepare(app, "INSERT INTO app_orders (total) VALUES (?)").run(i);
        expect(await reader.getKey("k-1")).toBe(cached);
      }
      const key = (await writer.getKey("k-1"))!;
      await writer.updateKey(next(key, { description: "v2" }));
      expect((await reader.getKey("k-1"))?.description).toBe("v2");
    });

    it("sees a write to its tables that no store made (an SQL shell, an earlier release)", async () => {
      const reader = open();
      const writer = open();
      await writer.createKey(makeKey("k-1", { description: "v1" }));
      await writer.createAlias({
        aliasName: "alias/a",
        targetKeyId: "k-1",
        createdAt: 1,
        updatedAt: 1,
      });
      expect((await reader.getKey("k-1"))?.description).toBe("v1");
      expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k-1");
      const shell = rawDatabase(path);
      toClose.push(shell);
      shell.exec("UPDATE kms_keys SET key_state = 'Disabled' WHERE key_id = 'k-1'");
      expect((await reader.getKey("k-1"))?.keyState).toBe("Disabled");
      shell.exec("DELETE FROM kms_aliases WHERE alias_name = 'alias/a'");
      expect(await reader.getAlias("alias/a")).toBeUndefined();
    });

    it("sees its own writes at once", async () => {
      const store = open();
      const key = makeKey("k-1");
      await store.createKey(key);
      expect((await store.getKey("k-1"))?.revision).toBe(1);
      await store.updateKey(next(key, { keyState: "Disabled" }));
      expect((await store.getKey("k-1"))?.keyState).toBe("Disabled");
      await store.createAlias({
        aliasName: "alias/x",
        targetKeyId: "k-1",
        createdAt: 1,
        updatedAt: 1,
      });
      expect(await store.getAlias("alias/x")).toBeDefined();
      await store.deleteKey("k-1", 2);
      expect(await store.getKey("k-1")).toBeUndefined();
      expect(await store.getAlias("alias/x")).toBeUndefined();
    });

    it("bounds the cache and still answers every key correctly", async () => {
      const store = open({ cacheSize: 2 });
      for (const id of ["a", "b", "c", "d"])
        await store.createKey(makeKey(id, { description: id }));
      for (let round = 0; round < 3; round++) {
        for (const id of ["a", "b", "c", "d"]) {
          expect((await store.getKey(id))?.description).toBe(id);
        }
      }
    });
  });

  describe("stores sharing one connection", () => {
    it("sees another store's update, deletion and alias change on the same database at once", async () => {
      // PRAGMA data_version ignores the connection's own commits, so it cannot tell these apart.
      const db = rawDatabase(path);
      toClose.push(db);
      const reader = SqliteKeyStore.open({ database: db });
      const writer = SqliteKeyStore.open({ database: db });
      const key = makeKey("k-1");
      await writer.createKey(key);
      await writer.createKey(makeKey("k-2"));
      await writer.createAlias({
        aliasName: "alias/a",
        targetKeyId: "k-1",
        createdAt: 1,
        updatedAt: 1,
      });
      expect((await reader.getKey("k-1"))?.keyState).toBe("Enabled");
      expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k-1");

      await writer.updateKey(next(key, { keyState: "Disabled" }));
      expect((await reader.getKey("k-1"))?.keyState).toBe("Disabled");
      await writer.updateAlias("alias/a", "k-2", 2);
      expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k-2");
      await writer.deleteKey("k-1", 2);
      expect(await reader.getKey("k-1")).toBeUndefined();
    });

    it("refuses to write inside a transaction the connection's owner began, so no acknowledged write rolls back", async () => {
      const db = rawDatabase(path);
      toClose.push(db);
      const store = SqliteKeyStore.open({ database: db });
      await store.createKey(makeKey("k-1"));
      db.exec("BEGIN");
      try {
        for (const write of [
          () => store.createKey(makeKey("k-2")),
          () => store.updateKey(next(makeKey("k-1"))),
          () => store.deleteKey("k-1", 1),
          () =>
            store.createAlias({
              aliasName: "alias/a",
              targetKeyId: "k-1",
              createdAt: 1,
              updatedAt: 1,
            }),
          () => store.putSettingIfAbsent("s", "v"),
        ]) {
          const failure = await write().catch((error: unknown) => error);
          expect(failure).toBeInstanceOf(KmsInternalError);
          expect((failure as Error).message).toMatch(/inside a transaction/);
        }
        // Reads go on.
        expect((await store.getKey("k-1"))?.revision).toBe(1);
      } finally {
        db.exec("ROLLBACK");
      }
      await store.createKey(makeKey("k-2"));
      expect(scalar(db, "SELECT count(*) FROM kms_keys")).toBe(2);
      // Opening (which may migrate) is refused the same way.
      db.exec("BEGIN");
      try {
        expect(() => SqliteKeyStore.open({ database: db })).toThrow(/inside a transaction/);
      } finally {
        db.exec("ROLLBACK");
      }
    });
  });

  describe("files on disk", () => {
    it("creates a new database, its WAL and its shared-memory file readable by the owner only (0600)", async () => {
      const store = open();
      await store.createKey(makeKey("k-1"));
      for (const file of [path, `${path}-wal`, `${path}-shm`]) {
        expect(((await stat(file)).mode & 0o777).toString(8), file).toBe("600");
      }
    });

    it("leaves the mode of an existing file as its owner set it", async () => {
      await writeFile(path, "");
      await chmod(path, 0o640);
      const store = open();
      await store.createKey(makeKey("k-1"));
      expect(((await stat(path)).mode & 0o777).toString(8)).toBe("640");
    });

    it("refuses a path that is a symbolic link to nothing, where SQLite would create the target world-readable", async () => {
      // O_EXCL does not follow the link, so the private file was never created; SQLite then
      // followed it and created the target with the default mode (0644 less the umask).
      const elsewhere = join(dir, "elsewhere.db");
      await symlink(elsewhere, path);
      for (const openIt of [
        () => SqliteKeyStore.open({ path }),
        () => new SqliteAuditSink({ path }),
      ]) {
        let failure: unknown;
        try {
          toClose.push(openIt());
        } catch (error) {
          failure = error;
        }
        expect(failure).toBeInstanceOf(KmsInternalError);
        expect((failure as Error).message).toMatch(/symbolic link/);
      }
      await expect(lstat(elsewhere)).rejects.toMatchObject({ code: "ENOENT" });
      // A link to a file that exists is opened as before, and the file keeps its mode.
      await writeFile(elsewhere, "");
      await chmod(elsewhere, 0o600);
      const store = open();
      await store.createKey(makeKey("k-1"));
      expect(((await stat(elsewhere)).mode & 0o777).toString(8)).toBe("600");
    });

    it("leaves no copy of a destroyed key's wrapped material in the database file or its WAL", async () => {
      const marker = Buffer.from("destroyed-key-material-marker-5f3a9c");
      const small = new Uint8Array(marker);
      // Larger than a page, so it lives in overflow pages that the delete frees.
      const large = Uint8Array.from({ length: 9_000 }, (_, i) => (i * 131 + 7) & 0xff);
      large.set(marker, 4_500);
      const material = (wrappedMaterial: Uint8Array) => [
        { version: 1, createdAt: 1, keyMaterialId: "01", wrappedMaterial },
      ];
      const store = open();
      await store.createKey(makeKey("k-small", { versions: material(small) }));
      await store.createKey(makeKey("k-large", { versions: material(large) }));
      await store.createKey(makeKey("k-kept", { description: "kept" }));
      // A second connection that has read the file, as another process would have.
      const other = rawDatabase(path);
      toClose.push(other);
      expect(scalar(other, "SELECT count(*) FROM kms_keys")).toBe(3);

      const files = async (): Promise<Buffer> =>
        Buffer.concat(
          await Promise.all(
            [path, `${path}-wal`].map((f) => readFile(f).catch(() => Buffer.alloc(0))),
          ),
        );
      expect((await files()).indexOf(marker)).toBeGreaterThan(-1); // the scan sees real content

      await store.deleteKey("k-small", 1);
      await store.deleteKey("k-large", 1);
      expect((await files()).indexOf(marker), "while open").toBe(-1);
      expect((await store.getKey("k-kept"))?.description).toBe("kept");
      await store.close();
      other.close();
      expect((await files()).indexOf(marker), "after close").toBe(-1);
    });
  });

  describe("locking", () => {
    it("ends deleteKey's WAL checkpoint soon when another connection's read holds the WAL, instead of waiting busyTimeoutMs", async () => {
      // While the checkpoint waits, SQLite also holds off every other connection's writer, so
      // waiting the full busyTimeoutMs (5 s by default) stalled this process and failed other
      // processes' writes with SQLITE_BUSY; the destroyed key's frames stay in the WAL either way.
      const db = rawDatabase(path);
      toClose.push(db);
      const store = SqliteKeyStore.open({ database: db, busyTimeoutMs: 10_000 });
      await store.createKey(makeKey("k-1"));
      await store.createKey(makeKey("k-2"));
      const reader = rawDatabase(path);
      toClose.push(reader);
      reader.exec("BEGIN");
      try {
        expect(scalar(reader, "SELECT count(*) FROM kms_keys")).toBe(2);
        const started = performance.now();
        await store.deleteKey("k-1", 1);
        expect(performance.now() - started).toBeLessThan(5_000);
        expect(await store.getKey("k-1")).toBeUndefined();
      } finally {
        reader.exec("COMMIT");
      }
      // The connection keeps the busy timeout it was opened with.
      expect(scalar(db, "PRAGMA busy_timeout")).toBe(10_000);
    }, 30_000);

    it("fails a write with KmsInternalError (SQLITE_BUSY) while another connection holds the write lock, and reads go on", async () => {
      const store = open({ busyTimeoutMs: 50 });
      const key = makeKey("k-1");
      await store.createKey(key);
      const other = rawDatabase(path);
      toClose.push(other);
      other.exec("BEGIN IMMEDIATE");
      try {
        const failure = await store.updateKey(next(key)).catch((error: unknown) => error);
        expect(failure).toBeInstanceOf(KmsInternalError);
        expect((failure as Error).message).toMatch(/SQLITE_BUSY/);
        expect((await store.getKey("k-1"))?.revision).toBe(1);
      } finally {
        other.exec("ROLLBACK");
      }
      await store.updateKey(next(key));
      expect((await store.getKey("k-1"))?.revision).toBe(2);
    });
  });

  describe("errors", () => {
    it("rejects bad options with ValidationError", () => {
      const bad: unknown[] = [
        null,
        undefined,
        "keys.db",
        {},
        { path: "" },
        { path, database: rawDatabase(":memory:") },
        { path, busyTimeoutMs: -1 },
        { path, busyTimeoutMs: 1.5 },
        // SQLite keeps busy_timeout in a C int: 2^32 would wrap to 0 and fail every contended write.
        { path, busyTimeoutMs: 2 ** 31 },
        { database: rawDatabase(":memory:"), busyTimeoutMs: 2 ** 32 },
        { path, cacheSize: Number.NaN },
        { path, synchronous: "OFF" },
      ];
      for (const options of bad) {
        expect(() => SqliteKeyStore.open(options as never)).toThrow(ValidationError);
      }
    });

    it("refuses a file written by a newer schema version", async () => {
      const raw = rawDatabase(path);
      raw.exec("PRAGMA user_version = 99");
      raw.close();
      expect(() => SqliteKeyStore.open({ path })).toThrow(KmsInternalError);
      expect(() => SqliteKeyStore.open({ path })).toThrow(/schema version 99/);
    });

    it("refuses a file that is not a database", async () => {
      await writeFile(path, "definitely not sqlite ".repeat(100));
      expect(() => SqliteKeyStore.open({ path })).toThrow(KmsInternalError);
    });

    it("rejects calls after close, and close is idempotent", async () => {
      const store = SqliteKeyStore.open({ path });
      await store.close();
      await store.close();
      await expect(store.getKey("k-1")).rejects.toBeInstanceOf(KmsInternalError);
      await expect(store.createKey(makeKey("k-1"))).rejects.toBeInstanceOf(KmsInternalError);
    });
  });
});
