import { createKms, DataKeyCache, type Kms, MemoryDataKeyStore, ValidationError } from "@kms/core";
import { DataSource } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { encryptionOf, fieldEncryption } from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";
import { Note, User } from "./entities.ts";

const alice = () =>
  Object.assign(new User(), {
    tenantId: "t1",
    email: "alice@example.com",
    phone: "+1 555 0100",
    profile: { likes: ["tea"], age: 7 },
    avatar: Uint8Array.from(Buffer.from("AVATAR-BYTES")),
  });

/** A Kms that counts its calls by method name. */
function counting(kms: Kms): { kms: Kms; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const counted = new Proxy(kms, {
    get(target, property) {
      const value = Reflect.get(target, property) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.set(String(property), (calls.get(String(property)) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { kms: counted, calls };
}

/**
 * How a DataSource is set up for field encryption: the column types chosen for it, `install()`,
 * `check()`, `encryptionOf()`, and the `dataKeyTable` and `dataKeyCache` options. Run once per
 * backend.
 */
export function describeDataSourceSetup(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`DataSource setup on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      await db.close();
    });

    const columnType = async (table: string, column: string): Promise<string> => {
      const sql =
        db.kind === "sqlite"
          ? `SELECT type AS t FROM pragma_table_info(?) WHERE name = ?`
          : db.kind === "postgres"
            ? `SELECT data_type AS t FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?`
            : `SELECT DATA_TYPE AS t FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?`;
      const [row] = await db.raw(sql, [table, column]);
      return String(row?.t).toLowerCase();
    };

    test("a DataSource destroyed and initialized again with dropSchema: no data key cached before is used", async () => {
      const ds = await db.connect(fieldEncryption({ kms, keyId }));
      await ds.getRepository(User).save(alice());
      await ds.destroy();
      // The same DataSource object, as test setups and dev reloads do: new tables, the data key
      // table included.
      ds.setOptions({ dropSchema: true });
      await ds.initialize();
      const bob = Object.assign(alice(), { email: "bob@example.com", phone: "+1 555 0101" });
      await ds.getRepository(User).save(bob);
      const fresh = await db.connect(fieldEncryption({ kms, keyId }));
      const users = await fresh.getRepository(User).find();
      expect(users.map((u) => [u.email, u.phone, u.profile])).toEqual([
        ["bob@example.com", "+1 555 0101", { likes: ["tea"], age: 7 }],
      ]);
      expect(Buffer.from(users[0]?.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
    });

    test("a bytes column without columnType gets the driver's binary type: bytea on PostgreSQL, blob elsewhere", async () => {
      const encryption = fieldEncryption({ kms, keyId });
      const ds = await db.connect(encryption);
      expect(await columnType("kms_users", "avatar")).toBe(
        db.kind === "postgres" ? "bytea" : "blob",
      );
      const users = ds.getRepository(User);
      const saved = await users.save(alice());
      const [raw] = await db.raw(
        `SELECT ${db.q("avatar")} FROM ${db.q("kms_users")} WHERE ${db.q("id")} = ?`,
        [saved.id],
      );
      expect(raw?.avatar).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(raw?.avatar as Uint8Array).includes("AVATAR")).toBe(false);
      const found = await users.findOneByOrFail({ id: saved.id });
      expect(Buffer.from(found.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
    });

    test("install() adds the subscriber to an initialized DataSource once; encryptionOf() finds it", async () => {
      const encryption = fieldEncryption({ kms, keyId });
      const ds = await db.connect(encryption, { withoutSubscriber: true });
      expect(encryptionOf(ds, false)).toBeUndefined();
      const missing = await failure(async () => encryptionOf(ds));
      expect(missing).toBeInstanceOf(ValidationError);
      expect((missing as Error).message).toMatch(
        /^the DataSource has no field encryption subscriber/,
      );

      encryption.install(ds);
      encryption.install(ds);
      expect(ds.subscribers).toHaveLength(1);
      expect(encryptionOf(ds)).toBe(encryption);
      expect(encryption.check(ds)).toBeUndefined();

      const users = ds.getRepository(User);
      const saved = await users.save(alice());
      const [raw] = await db.raw(
        `SELECT ${db.q("email")} FROM ${db.q("kms_users")} WHERE ${db.q("id")} = ?`,
        [saved.id],
      );
      expect(String(raw?.email)).toMatch(/^kms1:/);
      expect(await users.findOneByOrFail({ id: saved.id })).toMatchObject({
        email: "alice@example.com",
        profile: { likes: ["tea"], age: 7 },
      });
    });

    test("install() refuses a DataSource without the data key entity, before initialize(), or with another encryption's subscriber", async () => {
      const encryption = fieldEncryption({ kms, keyId });
      const bare = await db.connect(encryption, { withoutSubscriber: true, dataKeyEntities: [] });
      const noEntity = await failure(async () => encryption.install(bare));
      expect(noEntity).toBeInstanceOf(ValidationError);
      expect((noEntity as Error).message).toBe(
        `the DataSource has no entity for the data key table "kms_data_keys": list fieldEncryption(...).entities in its entities (or give fieldEncryption a dataKeyStore)`,
      );
      expect(bare.subscribers).toHaveLength(0);

      // initialize() replaces the subscriber list: one added before it would be dropped.
      const uninitialized = new DataSource({ type: "better-sqlite3", database: ":memory:" });
      expect(() => encryption.install(uninitialized)).toThrow(
        /^the DataSource is not initialized: call install\(\) after dataSource\.initialize\(\)/,
      );

      const ds = await db.connect(encryption);
      const other = fieldEncryption({ kms, keyId });
      expect(() => other.install(ds)).toThrow(
        /^the DataSource already has the field encryption subscriber of another fieldEncryption/,
      );
      expect(encryptionOf(ds)).toBe(encryption);
    });

    test("check() and the first write refuse a DataSource without the data key entity, naming it", async () => {
      const encryption = fieldEncryption({ kms, keyId });
      const ds = await db.connect(encryption, { dataKeyEntities: [] });
      const message =
        /^the DataSource has no entity for the data key table "kms_data_keys": list fieldEncryption\(\.\.\.\)\.entities in its entities/;
      expect(() => encryption.check(ds)).toThrow(message);
      const users = ds.getRepository(User);
      const user = alice();
      const saved = await failure(() => users.save(user));
      expect(saved).toBeInstanceOf(ValidationError);
      expect((saved as Error).message).toMatch(message);
      expect(user.email).toBe("alice@example.com");
      expect(await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_users")}`)).toEqual([]);

      // Another encryption's data key entity (another table) does not stand in for this one's.
      const own = fieldEncryption({ kms, keyId, dataKeyTable: "kms_app_keys" });
      const elsewhere = await db.connect(own, { dataKeyEntities: encryption.entities });
      const wrongTable =
        /^the DataSource's KmsDataKey entity is the table "kms_data_keys", not this encryption's data key table "kms_app_keys"/;
      expect(() => own.check(elsewhere)).toThrow(wrongTable);
      const wrong = await failure(() => elsewhere.getRepository(User).save(alice()));
      expect((wrong as Error).message).toMatch(wrongTable);

      // With a data key store of its own, the encryption lists no entity and needs none.
      const custom = fieldEncryption({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
      expect(custom.entities).toEqual([]);
      const plain = await db.connect(custom, { dataKeyEntities: [] });
      expect(custom.check(plain)).toBeUndefined();
    });

    test("dataKeyTable puts the wrapped data keys in the named table, where a fresh process finds them", async () => {
      const encryption = fieldEncryption({ kms, keyId, dataKeyTable: "kms_app_keys" });
      const ds = await db.connect(encryption);
      encryption.check(ds);
      const saved = await ds.getRepository(User).save(alice());
      const keys = await db.raw(
        `SELECT ${db.q("id")}, ${db.q("kmsKeyId")}, ${db.q("purpose")} FROM ${db.q("kms_app_keys")}`,
      );
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) {
        expect(String(key.id)).toMatch(/^[0-9a-f]{32}$/);
        expect(String(key.kmsKeyId)).toContain(keyId);
        expect(["randomized", "stable"]).toContain(key.purpose);
      }
      expect(
        await failure(() => db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`)),
      ).toBeInstanceOf(Error);

      const fresh = fieldEncryption({ kms, keyId, dataKeyTable: "kms_app_keys" });
      const reread = await db.connect(fresh);
      expect(await reread.getRepository(User).findOneByOrFail({ id: saved.id })).toMatchObject({
        email: "alice@example.com",
        phone: "+1 555 0100",
      });
    });

    test("dataKeyCache holds the engine's data keys under its own limits; cache is exclusive with it", async () => {
      const counted = counting(kms);
      const dataKeyCache = new DataKeyCache({ maxAgeMs: 60_000, maxMessages: 2 });
      const encryption = fieldEncryption({ kms: counted.kms, keyId, dataKeyCache });
      const ds = await db.connect(encryption);
      const notes = ds.getRepository(Note);
      for (let i = 0; i < 5; i++) {
        await notes.save(Object.assign(new Note(), { title: `note ${i}`, code: null }));
      }
      // Two values per data key: five titles take three.
      expect(counted.calls.get("generateDataKey")).toBe(3);
      expect(dataKeyCache.size).toBeGreaterThan(0);
      expect((await notes.find({ order: { id: "ASC" } })).map((n) => n.title)).toEqual([
        "note 0",
        "note 1",
        "note 2",
        "note 3",
        "note 4",
      ]);

      const both = await failure(async () =>
        fieldEncryption({ kms, keyId, dataKeyCache, cache: { maxValues: 2 } }),
      );
      expect(both).toBeInstanceOf(ValidationError);
      expect((both as Error).message).toMatch(/"cache" and "dataKeyCache" are exclusive/);
    });
  });
}
