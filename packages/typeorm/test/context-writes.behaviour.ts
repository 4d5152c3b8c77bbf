import { createKms, type Kms, ValidationError } from "@kms/core";
import {
  BeforeInsert,
  BeforeUpdate,
  Column,
  type ColumnOptions,
  type DataSource,
  Entity,
  PrimaryColumn,
  PrimaryGeneratedColumn,
  type ValueTransformer,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
} from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";

/** An immutable tenant: TypeORM leaves it out of every UPDATE. */
@Entity("kms_cw_fixed_tenant")
class FixedTenantDoc {
  @PrimaryColumn()
  id: number;

  @Column({ type: String, length: 64, update: false })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** A region the database assigns: TypeORM leaves it out of every INSERT. */
@Entity("kms_cw_default_region")
class DefaultRegionDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 16, insert: false, default: "pending" })
  region: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["region"] } })
  secret: string | null;
}

/** The same without a default: the row gets NULL. */
@Entity("kms_cw_unset_region")
class UnsetRegionDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 16, insert: false, nullable: true })
  region: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["region"] } })
  secret: string | null;
}

@Entity("kms_cw_tenant_docs")
class TenantDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64, nullable: true })
  tenantId: string | null;

  @EncryptedColumn({ nullable: true, blindIndex: {}, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** The database holds "tenant:acme" for the entity's "acme". */
const prefixed: ValueTransformer = {
  to: (value: unknown) => (typeof value === "string" ? `tenant:${value}` : value),
  from: (value: unknown) => (typeof value === "string" ? value.replace(/^tenant:/u, "") : value),
};

@Entity("kms_cw_transformed")
class TransformedDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 64, transformer: prefixed })
  tenant: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenant"] } })
  secret: string | null;
}

/** Canonicalises the tenant after an await, once the subscriber has sealed the values. */
@Entity("kms_cw_async_listener")
class AsyncListenerDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;

  @BeforeInsert()
  @BeforeUpdate()
  async canonicalTenant(): Promise<void> {
    const tenant = this.tenantId;
    await new Promise((resolve) => setImmediate(resolve));
    this.tenantId = tenant.toLowerCase();
  }
}

/** Canonicalises the tenant before the subscriber runs. */
@Entity("kms_cw_sync_listener")
class SyncListenerDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;

  @BeforeInsert()
  @BeforeUpdate()
  canonicalTenant(): void {
    this.tenantId = this.tenantId.toLowerCase();
  }
}

@Entity("kms_cw_short_tenant")
class ShortTenantDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 5 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** A slug lower-cased on its way to the database: a load gives back `to(value)`. */
const lowerCase: ValueTransformer = {
  to: (value: unknown) => (typeof value === "string" ? value.toLowerCase() : value),
  from: (value: unknown) => value,
};

@Entity("kms_cw_slug")
class SlugDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 32, transformer: lowerCase })
  tenant: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenant"] } })
  secret: string | null;

  @EncryptedColumn({ deterministic: true, nullable: true, context: { fromRow: ["tenant"] } })
  handle: string | null;
}

/** A transformer whose load gives back what no context can hold. */
@Entity("kms_cw_boxed_tenant")
class BoxedTenantDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({
    type: "varchar",
    length: 32,
    transformer: { to: (value: unknown) => value, from: (value: unknown) => ({ value }) },
  })
  tenant: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenant"] } })
  secret: string | null;
}

/** 64-bit ids (snowflakes) as context values. */
@Entity("kms_cw_bigint_tenant")
class BigTenantDoc {
  @PrimaryColumn()
  id: number;

  @Column({ type: "bigint" })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** An entity whose context column has `options`, in a table of its own. */
function boundTo(table: string, options: ColumnOptions) {
  @Entity(`kms_cw_type_${table}`)
  class BoundDoc {
    @PrimaryGeneratedColumn()
    id: number;

    @Column(options)
    context: string;

    @EncryptedColumn({ nullable: true, context: { fromRow: ["context"] } })
    secret: string | null;
  }
  Object.defineProperty(BoundDoc, "name", { value: `Bound_${table}` });
  return BoundDoc;
}

const BoundToSimpleJson = boundTo("simple_json", { type: "simple-json" });
const BoundToBoolean = boundTo("boolean", { type: Boolean });
const BoundToMacaddr = boundTo("macaddr", { type: "macaddr" });
const BoundToInet = boundTo("inet", { type: "inet" });
const BoundToCidr = boundTo("cidr", { type: "cidr" });
const BoundToJsonb = boundTo("jsonb", { type: "jsonb" });
const BoundToInet6 = boundTo("inet6", { type: "inet6" });
const BoundToEnum = boundTo("enum", { type: "simple-enum", enum: ["eu", "us"] });

const ENTITIES = [
  FixedTenantDoc,
  DefaultRegionDoc,
  UnsetRegionDoc,
  TenantDoc,
  TransformedDoc,
  AsyncListenerDoc,
  SyncListenerDoc,
  ShortTenantDoc,
  SlugDoc,
  BoxedTenantDoc,
  BigTenantDoc,
];

/**
 * What a write stores in a context column, and what its values are sealed under, agree: columns
 * TypeORM leaves out of a statement, listeners that change them late, value transformers, the
 * column's type and length. Run once per backend.
 */
export function describeContextWrites(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`context writes on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let ds: DataSource;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: ENTITIES });
    });
    afterEach(async () => {
      await db.close();
    });

    /** The entity's rows as a fresh process reads them, with nothing cached. */
    const freshRows = async <T extends object>(entity: new () => T) => {
      const fresh = await db.connect(fieldEncryption({ kms, keyId }), { entities: ENTITIES });
      return fresh.getRepository(entity).find({ order: { id: "ASC" } as never });
    };
    const stored = (table: string, column: string) =>
      db.raw(`SELECT ${db.q(column)} AS v FROM ${db.q(table)} ORDER BY ${db.q("id")}`);

    test("update: false: save() seals under the stored value, update() and upsert() with another are refused", async () => {
      const docs = ds.getRepository(FixedTenantDoc);
      await docs.save({ id: 1, tenantId: "t1", secret: "original" });
      // TypeORM keeps t1; the value is sealed under it, not under the t2 it ignores.
      await docs.save({ id: 1, tenantId: "t2", secret: "changed" });
      expect(await stored("kms_cw_fixed_tenant", "tenantId")).toEqual([{ v: "t1" }]);
      expect(await freshRows(FixedTenantDoc)).toEqual([
        expect.objectContaining({ tenantId: "t1", secret: "changed" }),
      ]);

      const updated = await failure(() => docs.update(1, { tenantId: "t2", secret: "moved" }));
      expect(updated).toBeInstanceOf(ValidationError);
      expect((updated as Error).message).toMatch(
        /^FixedTenantDoc\.tenantId is update: false: an update leaves it as each row holds it, so FixedTenantDoc\.secret would be encrypted under the tenantId given while a matched row holds another/,
      );
      const upserted = await failure(() =>
        docs.upsert({ id: 1, tenantId: "t2", secret: "moved" }, ["id"]),
      );
      expect(upserted).toBeInstanceOf(ValidationError);
      expect((upserted as Error).message).toMatch(
        /^FixedTenantDoc\.secret is bound to FixedTenantDoc\.tenantId: an upsert that overwrites it must overwrite tenantId too \(tenantId is update: false, which TypeORM's upsert leaves out\)/,
      );
      expect(await freshRows(FixedTenantDoc)).toEqual([
        expect.objectContaining({ tenantId: "t1", secret: "changed" }),
      ]);

      // The row's own value in the update: what it is there for, sealing.
      await docs.update(1, { tenantId: "t1", secret: "again" });
      expect(await freshRows(FixedTenantDoc)).toEqual([
        expect.objectContaining({ tenantId: "t1", secret: "again" }),
      ]);
    });

    test("insert: false with a literal default: values are sealed under the default the row gets", async () => {
      const docs = ds.getRepository(DefaultRegionDoc);
      await docs.save({ region: "eu", secret: "s1" });
      await docs.save({ secret: "s2" } as DefaultRegionDoc);
      expect(await stored("kms_cw_default_region", "region")).toEqual([
        { v: "pending" },
        { v: "pending" },
      ]);
      expect(await freshRows(DefaultRegionDoc)).toEqual([
        expect.objectContaining({ region: "pending", secret: "s1" }),
        expect.objectContaining({ region: "pending", secret: "s2" }),
      ]);
    });

    test("insert: false without a literal default: a value bound to it is refused, null passes", async () => {
      const docs = ds.getRepository(UnsetRegionDoc);
      const doc = Object.assign(new UnsetRegionDoc(), { region: "eu", secret: "s1" });
      const error = await failure(() => docs.save(doc));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^UnsetRegionDoc\.region is insert: false without a literal default: TypeORM leaves it out of the INSERT/,
      );
      expect(doc.secret).toBe("s1");
      expect(await stored("kms_cw_unset_region", "id")).toEqual([]);
      await docs.save({ region: "eu", secret: null });
      expect(await freshRows(UnsetRegionDoc)).toEqual([
        expect.objectContaining({ region: null, secret: null }),
      ]);
    });

    test("an insert whose column list leaves a context column out is refused", async () => {
      const error = await failure(() =>
        ds
          .createQueryBuilder()
          .insert()
          .into(TenantDoc, ["secret"])
          .values({ tenantId: "t1", secret: "s1" })
          .execute(),
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^TenantDoc\.secret was encrypted under another TenantDoc\.tenantId than the one this insert stores/,
      );
      expect(await stored("kms_cw_tenant_docs", "id")).toEqual([]);
    });

    test("an async listener that changes a context column after an await: the write is refused", async () => {
      const docs = ds.getRepository(AsyncListenerDoc);
      const refused =
        /^AsyncListenerDoc\.secret was encrypted under another AsyncListenerDoc\.tenantId than the one this (insert|update) stores: tenantId changed after the values were encrypted/;
      const doc = Object.assign(new AsyncListenerDoc(), { tenantId: "ACME", secret: "s1" });
      const saved = await failure(() => docs.save(doc));
      expect(saved).toBeInstanceOf(ValidationError);
      expect((saved as Error).message).toMatch(refused);
      expect(doc.secret).toBe("s1");
      const inserted = await failure(() =>
        docs.insert(Object.assign(new AsyncListenerDoc(), { tenantId: "ACME", secret: "s1" })),
      );
      expect((inserted as Error).message).toMatch(refused);
      expect(await stored("kms_cw_async_listener", "id")).toEqual([]);

      // A tenant the listener leaves as it is: nothing moves.
      const kept = await docs.save(
        Object.assign(new AsyncListenerDoc(), { tenantId: "acme", secret: "s1" }),
      );
      const loaded = await docs.findOneByOrFail({ id: kept.id });
      loaded.tenantId = "GLOBEX";
      loaded.secret = "moved";
      const updated = await failure(() => docs.save(loaded));
      expect((updated as Error).message).toMatch(refused);
      expect(await freshRows(AsyncListenerDoc)).toEqual([
        expect.objectContaining({ tenantId: "acme", secret: "s1" }),
      ]);
    });

    test("a synchronous listener's change of a context column is sealed", async () => {
      const docs = ds.getRepository(SyncListenerDoc);
      const saved = await docs.save(
        Object.assign(new SyncListenerDoc(), { tenantId: "ACME", secret: "s1" }),
      );
      const loaded = await docs.findOneByOrFail({ id: saved.id });
      loaded.tenantId = "GLOBEX";
      loaded.secret = "moved";
      await docs.save(loaded);
      expect(await freshRows(SyncListenerDoc)).toEqual([
        expect.objectContaining({ tenantId: "globex", secret: "moved" }),
      ]);
    });

    test("a transformed context column binds the entity's value everywhere, reencryptEntities included", async () => {
      const docs = ds.getRepository(TransformedDoc);
      const { id } = await docs.save({ tenant: "acme", secret: "s1" });
      expect(await stored("kms_cw_transformed", "tenant")).toEqual([{ v: "tenant:acme" }]);
      const run = await reencryptEntities(ds, TransformedDoc, { shouldReencrypt: () => true });
      expect(run).toMatchObject({ scanned: 1, reencrypted: 1, conflicts: 0 });
      // The update guard compares the tenant as the column stores it: no change, no refusal.
      await docs.update(id, { tenant: "acme" });
      expect(await freshRows(TransformedDoc)).toEqual([
        expect.objectContaining({ tenant: "acme", secret: "s1" }),
      ]);

      // Legacy plaintext migrated under the entity's value, as the subscriber reads it back.
      const legacy = await db.connect(fieldEncryption({ kms, keyId, legacyPlaintext: true }), {
        entities: ENTITIES,
      });
      await db.raw(
        `INSERT INTO ${db.q("kms_cw_transformed")} (${db.q("tenant")}, ${db.q("secret")}) VALUES (?, ?)`,
        ["tenant:globex", "legacy"],
      );
      await reencryptEntities(legacy, TransformedDoc);
      expect(await freshRows(TransformedDoc)).toEqual([
        expect.objectContaining({ tenant: "acme", secret: "s1" }),
        expect.objectContaining({ tenant: "globex", secret: "legacy" }),
      ]);
    });

    test("context column types: only types known to store the text given", async () => {
      const refused: { entity: new () => object; message: RegExp }[] = [
        {
          entity: BoundToSimpleJson,
          message:
            /^Bound_simple_json\.secret: context\.fromRow names "context", a simple-json column: TypeORM converts its values/,
        },
        {
          entity: BoundToBoolean,
          message:
            /^Bound_boolean\.secret: context\.fromRow names "context", a boolean column: TypeORM converts its values/,
        },
      ];
      if (db.kind === "postgres") {
        for (const [entity, type] of [
          [BoundToMacaddr, "macaddr"],
          [BoundToInet, "inet"],
          [BoundToCidr, "cidr"],
          [BoundToJsonb, "jsonb"],
        ] as const) {
          refused.push({
            entity,
            message: new RegExp(
              `^Bound_${type}\\.secret: context\\.fromRow names "context", a ${type} column: (only columns known to store exactly the text they are given can bind values|TypeORM converts)`,
            ),
          });
        }
      }
      if (db.kind === "mariadb") {
        for (const [entity, type] of [
          [BoundToInet6, "inet6"],
          [BoundToEnum, "enum"],
        ] as const) {
          refused.push({
            entity,
            message: new RegExp(
              `^Bound_${type}\\.secret: context\\.fromRow names "context", a ${type} column: only columns known to store exactly the text they are given can bind values`,
            ),
          });
        }
      }
      for (const { entity, message } of refused) {
        const encryption = fieldEncryption({ kms, keyId });
        const single = await db.connect(encryption, { entities: [entity] });
        expect(() => encryption.check(single)).toThrow(message);
        const written = await failure(() =>
          single.getRepository(entity).save({ context: "x", secret: "s" } as never),
        );
        expect((written as Error).message).toMatch(message);
      }

      // An enum on PostgreSQL, a CHECKed varchar on SQLite: labels stored as given.
      if (db.kind !== "mariadb") {
        const encryption = fieldEncryption({ kms, keyId });
        const single = await db.connect(encryption, { entities: [BoundToEnum] });
        encryption.check(single);
        const docs = single.getRepository(BoundToEnum);
        await docs.save({ context: "eu", secret: "s" });
        expect(await docs.find()).toEqual([
          expect.objectContaining({ context: "eu", secret: "s" }),
        ]);
      }
    });

    test("a normalizing value transformer: values are bound to what a load gives back", async () => {
      const docs = ds.getRepository(SlugDoc);
      const { id } = await docs.save({ tenant: "Acme", secret: "s1", handle: "h1" });
      expect(await stored("kms_cw_slug", "tenant")).toEqual([{ v: "acme" }]);
      expect(await freshRows(SlugDoc)).toEqual([
        expect.objectContaining({ tenant: "acme", secret: "s1", handle: "h1" }),
      ]);
      // The lookup and the update guard read the tenant as the row holds it, too.
      const where = await encryptedWhere(docs, { tenant: "ACME", handle: "h1" });
      expect((await docs.findOneByOrFail(where)).secret).toBe("s1");
      await docs.update(id, { tenant: "ACME" });
      const moved = await failure(() => docs.update(id, { tenant: "Globex" }));
      expect((moved as Error).message).toMatch(
        /^SlugDoc\.tenant is part of the encryption context of SlugDoc\.secret, SlugDoc\.handle: an update that changes it must write them too/,
      );
      const loaded = await docs.findOneByOrFail({ id });
      loaded.secret = "s2";
      await docs.save(loaded);
      await docs.update(id, { tenant: "Globex", secret: "s3", handle: "h3" });
      await reencryptEntities(ds, SlugDoc, { shouldReencrypt: () => true });
      expect(await freshRows(SlugDoc)).toEqual([
        expect.objectContaining({ tenant: "globex", secret: "s3", handle: "h3" }),
      ]);

      const boxed = await failure(() =>
        ds.getRepository(BoxedTenantDoc).save({ tenant: "acme", secret: "s1" }),
      );
      expect(boxed).toBeInstanceOf(ValidationError);
      expect((boxed as Error).message).toMatch(
        /^BoxedTenantDoc\.tenant is bound into encrypted values, and its value transformer gives back an object for the value given/,
      );
      expect(await stored("kms_cw_boxed_tenant", "id")).toEqual([]);
    });

    test("integer context values beyond 2^53 − 1: refused on SQLite, whose drivers read them back rounded", async () => {
      const docs = ds.getRepository(BigTenantDoc);
      const largest = String(Number.MAX_SAFE_INTEGER);
      await docs.save({ id: 1, tenantId: largest, secret: "safe" });
      const snowflake = "1234567890123456789";
      for (const tenantId of [snowflake, `-${snowflake}`, "9007199254740992"]) {
        const saved = await failure(() => docs.save({ id: 2, tenantId, secret: "big" }));
        if (db.kind === "sqlite") {
          expect(saved).toBeInstanceOf(ValidationError);
          expect((saved as Error).message).toMatch(
            /^BigTenantDoc\.tenantId is an integer column bound into encrypted values, and SQLite drivers read integers beyond ±9007199254740991 back as rounded numbers/,
          );
        } else {
          expect(saved).toBeUndefined();
          expect((await freshRows(BigTenantDoc))[1]).toEqual(
            expect.objectContaining({ tenantId, secret: "big" }),
          );
        }
      }
      const [safe] = await freshRows(BigTenantDoc);
      // better-sqlite3 gives a number back, PostgreSQL and MariaDB a string.
      expect(String(safe?.tenantId)).toBe(largest);
      expect(safe?.secret).toBe("safe");
    });

    test("varchar(n): trailing spaces beyond n are cut as the database cuts them, other characters refused", async () => {
      const docs = ds.getRepository(ShortTenantDoc);
      const lengthChecked = db.kind !== "sqlite";
      await docs.save({ tenantId: "t1      ", secret: "spaces" });
      expect(await stored("kms_cw_short_tenant", "tenantId")).toEqual([
        { v: lengthChecked ? "t1   " : "t1      " },
      ]);
      const tooLong = await failure(() => docs.save({ tenantId: "tenant1", secret: "long" }));
      if (lengthChecked) {
        expect(tooLong).toBeInstanceOf(ValidationError);
        expect((tooLong as Error).message).toMatch(
          /^ShortTenantDoc\.tenantId is a (varchar|character varying)\(5\) column bound into encrypted values: give it at most 5 characters/,
        );
      } else {
        // SQLite stores the text as given, whatever the declared length.
        expect(tooLong).toBeUndefined();
      }
      expect((await freshRows(ShortTenantDoc)).map((d) => d.secret)).toEqual(
        lengthChecked ? ["spaces"] : ["spaces", "long"],
      );
    });

    test("SQL expressions on encrypted columns and blind indexes are refused with listeners off; the guards reject", async () => {
      const insert = (values: object) =>
        ds
          .createQueryBuilder()
          .insert()
          .into(TenantDoc)
          .values(values as never)
          .callListeners(false);
      const sqlValue = insert({ tenantId: "t1", secret: () => "'4111 1111 1111 1111'" });
      const sqlIndex = insert({ tenantId: "t1", secretIndex: () => "'+1 555 0100'" });
      const sqlSet = ds
        .createQueryBuilder()
        .update(TenantDoc)
        .set({ secret: () => "'x'" })
        .where("1 = 1")
        .callListeners(false);
      for (const [builder, message] of [
        [sqlValue, /^TenantDoc\.secret is encrypted: a SQL expression cannot run on ciphertext/],
        [sqlIndex, /^TenantDoc\.secretIndex is a blind index: it is computed, not written/],
        [sqlSet, /^TenantDoc\.secret is encrypted: a SQL expression cannot run on ciphertext/],
      ] as const) {
        let thrown: unknown;
        let pending: Promise<unknown> | undefined;
        try {
          pending = builder.execute();
        } catch (error) {
          thrown = error;
        }
        // A rejected promise, as from any other failed execute(): never a throw.
        expect(thrown).toBeUndefined();
        await expect(pending).rejects.toThrow(message);
      }
      expect(await stored("kms_cw_tenant_docs", "id")).toEqual([]);
    });
  });
}
