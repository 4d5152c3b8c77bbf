import { createKms, type Kms, ValidationError } from "@kms/core";
import {
  Column,
  DataSource,
  Entity,
  JoinColumn,
  type Logger,
  ManyToOne,
  PrimaryGeneratedColumn,
  type Relation,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, encryptedWhere, fieldEncryption } from "../src/index.ts";
import type { TestDatabase } from "./backends.ts";
import { failure } from "./backends.ts";

@Entity("kms_ctx_tenants")
class Tenant {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  name: string;
}

/** `fromRow` names a property the entity does not have (a typo of `tenantId`). */
@Entity("kms_ctx_typo_rows")
class TypoRow {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "int" })
  tenantId: number;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantID"] } })
  note: string | null;
}

/** `rowIdentity` names a property the entity does not have. */
@Entity("kms_ctx_typo_ids")
class TypoIdentity {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 36 })
  recordId: string;

  @EncryptedColumn({
    deterministic: true,
    nullable: true,
    context: { fromScope: ["tenant"], rowIdentity: ["recordID"] },
  })
  code: string | null;
}

/** Context bound to another encrypted column. */
@Entity("kms_ctx_encrypted")
class BoundToEncrypted {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn({ deterministic: true, nullable: true })
  email: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["email"] } })
  note: string | null;
}

/** Context bound to the blind index column of another encrypted column. */
@Entity("kms_ctx_blind_index")
class BoundToBlindIndex {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn({ nullable: true, blindIndex: { column: "phoneIndex" } })
  phone: string | null;

  phoneIndex?: string | null;

  @EncryptedColumn({ nullable: true, context: { rowIdentity: ["phoneIndex"] } })
  note: string | null;
}

/** Context bound to a relation property: its value is an entity, not a column value. */
@Entity("kms_ctx_relation")
class BoundToRelation {
  @PrimaryGeneratedColumn()
  id: number;

  @ManyToOne(() => Tenant)
  tenant: Relation<Tenant>;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenant"] } })
  note: string | null;
}

/** The join column of a relation, declared as a plain column beside it: a real column. */
@Entity("kms_ctx_join_column")
class BoundToJoinColumn {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "int" })
  tenantId: number;

  @ManyToOne(() => Tenant)
  @JoinColumn({ name: "tenantId" })
  tenant: Relation<Tenant>;

  @EncryptedColumn({
    deterministic: true,
    nullable: true,
    context: { fromRow: ["tenantId"] },
  })
  note: string | null;
}

/** Context bound to a decimal column: the database writes the value with its own scale. */
@Entity("kms_ctx_decimal")
class BoundToDecimal {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "decimal", precision: 10, scale: 2 })
  price: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["price"] } })
  note: string | null;
}

/** Context bound to a timestamp column: read back as a Date, in the database's own form. */
@Entity("kms_ctx_timestamp")
class BoundToTimestamp {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: Date })
  at: Date;

  @EncryptedColumn({ nullable: true, context: { rowIdentity: ["at"] } })
  note: string | null;
}

/** An address embedded with the prefix "work": its street is the column `workStreet`. */
class WorkAddress {
  @EncryptedColumn({ nullable: true, context: { fromRow: ["t"] } })
  street: string | null;
}

/**
 * An own property `workStreet` (stored as "legacy_ws") beside the embedded `work.street` (stored
 * as "workStreet"): an own column is bound by its property name, an embedded one by its database
 * column name, so both would be bound as "workStreet".
 */
@Entity("kms_ctx_colliding")
class CollidingBindings {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  t: string;

  @EncryptedColumn({ nullable: true, name: "legacy_ws", context: { fromRow: ["t"] } })
  workStreet: string | null;

  @Column(() => WorkAddress, { prefix: "work" })
  work: WorkAddress;
}

/** A zip code blind-indexed in `zipIndex`: embedded with the prefix "work", `workZipindex`. */
class WorkZip {
  @EncryptedColumn({ nullable: true, blindIndex: { column: "zipIndex" } })
  zip: string | null;

  zipIndex?: string | null;
}

/** An own encrypted `workZipindex` beside the blind index column `workZipindex` of `work.zip`. */
@Entity("kms_ctx_colliding_index")
class CollidingIndex {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  t: string;

  @EncryptedColumn({ nullable: true, name: "legacy_wzi" })
  workZipindex: string | null;

  @Column(() => WorkZip, { prefix: "work" })
  work: WorkZip;
}

const ENTITIES = [
  Tenant,
  CollidingBindings,
  CollidingIndex,
  BoundToDecimal,
  BoundToTimestamp,
  TypoRow,
  TypoIdentity,
  BoundToEncrypted,
  BoundToBlindIndex,
  BoundToRelation,
  BoundToJoinColumn,
];

/** Records the statements sent after the schema is built. */
class RecordingLogger implements Logger {
  readonly statements: string[] = [];
  logQuery(sql: string): void {
    this.statements.push(sql);
  }
  logQueryError(_error: string | Error, sql: string): void {
    this.statements.push(sql);
  }
  logQuerySlow(_time: number, sql: string): void {
    this.statements.push(sql);
  }
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** A Kms whose calls are counted, to show a refusal comes before any of them. */
function counting(kms: Kms): { kms: Kms; calls: string[] } {
  const calls: string[] = [];
  const counted = new Proxy(kms, {
    get(target, property) {
      const value = Reflect.get(target, property) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push(String(property));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { kms: counted, calls };
}

/** Statements that touch a table: anything but transaction control. */
function tableStatements(statements: readonly string[]): string[] {
  return statements.filter(
    (sql) => !/^(BEGIN|START TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b/i.test(sql),
  );
}

/**
 * `fromRow`/`rowIdentity` names are checked against the entity's TypeORM metadata when its
 * descriptor is first built: before any statement on its table and before any KMS call. Run
 * once per backend.
 */
export function describeContextColumns(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`context columns on ${name}`, () => {
    let db: TestDatabase;
    let ds: DataSource;
    let logger: RecordingLogger;
    let calls: string[];

    beforeEach(async () => {
      db = await open();
      const base = await createKms();
      const keyId = (await base.createKey()).keyMetadata.keyId;
      const counted = counting(base);
      calls = counted.calls;
      logger = new RecordingLogger();
      ds = await db.connect(fieldEncryption({ kms: counted.kms, keyId }), {
        entities: ENTITIES,
        logger,
      });
      logger.statements.length = 0;
      calls.length = 0;
    });
    afterEach(async () => {
      await db.close();
    });

    const refusals: readonly {
      readonly case: string;
      readonly entity: new () => object;
      readonly row: Record<string, unknown>;
      /** A column and value that make a valid row when inserted with the raw driver. */
      readonly seed: readonly [string, string | number | null];
      readonly message: RegExp;
    }[] = [
      {
        case: "an unknown fromRow name",
        entity: TypoRow,
        seed: ["tenantId", 1],
        row: { tenantId: 1, note: "n" },
        message:
          /^TypoRow\.note: context\.fromRow names "tenantID", which is not a column of TypoRow; name a property declared with @Column \(or @PrimaryColumn\) on TypoRow, not encrypted and not a blind index$/,
      },
      {
        case: "an unknown rowIdentity name",
        entity: TypoIdentity,
        seed: ["recordId", "r-1"],
        row: { recordId: "r-1", code: "c" },
        message:
          /^TypoIdentity\.code: context\.rowIdentity names "recordID", which is not a column of TypoIdentity; /,
      },
      {
        case: "an encrypted column",
        entity: BoundToEncrypted,
        seed: ["note", null],
        row: { email: "a@example.com", note: "n" },
        message:
          /^BoundToEncrypted\.note: context\.fromRow names "email", which is itself encrypted: values are bound to what the column holds in the clear; name a property/,
      },
      {
        case: "a blind index column",
        entity: BoundToBlindIndex,
        seed: ["note", null],
        row: { phone: "+1 555 0100", note: "n" },
        message:
          /^BoundToBlindIndex\.note: context\.rowIdentity names "phoneIndex", which is the blind index of BoundToBlindIndex\.phone: .*; name a property/,
      },
      {
        case: "a relation property",
        entity: BoundToRelation,
        seed: ["note", null],
        row: { tenant: { id: 1 }, note: "n" },
        message:
          /^BoundToRelation\.note: context\.fromRow names "tenant", which is a relation of BoundToRelation, not a column: declare its join column as a @Column beside it and name that; /,
      },
      {
        case: "a decimal column",
        entity: BoundToDecimal,
        seed: ["price", "1.50"],
        row: { price: "1.5", note: "n" },
        message:
          /^BoundToDecimal\.note: context\.fromRow names "price", a (decimal|numeric) column: the database stores such values in a form of its own \(scale, exponent, rounding, time zone\), which a value bound as written would not match once read back; bind a string or integer column$/,
      },
      {
        case: "a timestamp column",
        entity: BoundToTimestamp,
        seed: ["at", "2024-01-05 10:00:00"],
        row: { at: "2024-01-05 10:00:00", note: "n" },
        message:
          /^BoundToTimestamp\.note: context\.rowIdentity names "at", a (datetime|timestamp without time zone) column: the database stores such values in a form of its own/,
      },
      {
        case: "two encrypted columns bound under one field name",
        entity: CollidingBindings,
        seed: ["t", "t1"],
        row: { t: "t1", workStreet: "home office", work: { street: "1 Main St" } },
        message:
          /^CollidingBindings\.workStreet and CollidingBindings\.work\.street are both bound to the field name "workStreet" \(an own property is bound by its name, a column of an embedded class by its database column name\): values of one would decrypt \(or, for a blind index, match\) as the other's; /,
      },
      {
        case: "an encrypted column and a blind index bound under one field name",
        entity: CollidingIndex,
        seed: ["t", "t1"],
        row: { t: "t1", workZipindex: "x", work: { zip: "12345" } },
        message:
          /^CollidingIndex\.workZipindex and CollidingIndex\.work\.zipIndex \(the blind index of work\.zip\) are both bound to the field name "workZipindex" /,
      },
    ];

    describe.each(refusals)("$case as context", ({ entity, row, seed, message }) => {
      test("is refused on save before any statement or KMS call", async () => {
        const repo = ds.getRepository(entity);
        const error = await failure(() => repo.save(repo.create(row)));
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(message);
        expect(tableStatements(logger.statements)).toEqual([]);
        expect(calls).toEqual([]);
        // A refused descriptor is not cached as valid: the next use is refused again.
        expect(await failure(() => repo.save(repo.create(row)))).toBeInstanceOf(ValidationError);
        expect(tableStatements(logger.statements)).toEqual([]);
        expect(calls).toEqual([]);
      });

      test("is refused when a row loads and on encryptedWhere, before any KMS call", async () => {
        const repo = ds.getRepository(entity);
        const table = db.q(repo.metadata.tableName);
        await db.raw(`INSERT INTO ${table} (${db.q(seed[0])}) VALUES (?)`, [seed[1]]);
        const found = await failure(() => repo.find());
        expect(found).toBeInstanceOf(ValidationError);
        expect((found as Error).message).toMatch(message);
        const where = await failure(() => encryptedWhere(repo, row));
        expect(where).toBeInstanceOf(ValidationError);
        expect((where as Error).message).toMatch(message);
        expect(calls).toEqual([]);
      });
    });

    test("check() refuses each of them at startup, before any statement or KMS call", async () => {
      for (const { entity, message } of refusals) {
        const encryption = fieldEncryption({ kms: await createKms(), keyId: "unused" });
        const single = await db.connect(encryption, { entities: [Tenant, entity], logger });
        logger.statements.length = 0;
        const error = await failure(async () => encryption.check(single));
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(message);
        expect(logger.statements).toEqual([]);
      }
      expect(calls).toEqual([]);
    });

    test("check() passes a valid configuration and refuses a DataSource it cannot check", async () => {
      const encryption = fieldEncryption({ kms: await createKms(), keyId: "unused" });
      const valid = await db.connect(encryption, { entities: [Tenant, BoundToJoinColumn] });
      expect(encryption.check(valid)).toBeUndefined();
      // The subscriber in `valid` is another encryption's.
      const other = fieldEncryption({ kms: await createKms(), keyId: "unused" });
      expect(() => other.check(valid)).toThrow(
        /^the DataSource's field encryption subscriber belongs to another fieldEncryption/,
      );
      const uninitialized = new DataSource({ type: "better-sqlite3", database: ":memory:" });
      expect(() => encryption.check(uninitialized)).toThrow(
        /^the DataSource is not initialized: call check\(\) after dataSource\.initialize\(\)/,
      );
    });

    test("a relation's join column declared as a @Column binds the values", async () => {
      const tenant = await ds.getRepository(Tenant).save({ name: "acme" });
      const other = await ds.getRepository(Tenant).save({ name: "globex" });
      const repo = ds.getRepository(BoundToJoinColumn);
      const saved = await repo.save(repo.create({ tenantId: tenant.id, note: "bound" }));
      expect(calls).toContain("generateDataKey");
      const [stored] = await db.raw(
        `SELECT ${db.q("note")} FROM ${db.q("kms_ctx_join_column")} WHERE ${db.q("id")} = ?`,
        [saved.id],
      );
      expect(String(stored?.note)).toMatch(/^kms1:/);
      expect(await repo.findOneBy({ id: saved.id })).toMatchObject({
        tenantId: tenant.id,
        note: "bound",
      });
      // Bound to the tenant: the same value looked up under another tenant matches nothing.
      expect(
        await repo.findBy(await encryptedWhere(repo, { tenantId: tenant.id, note: "bound" })),
      ).toHaveLength(1);
      expect(
        await repo.findBy(await encryptedWhere(repo, { tenantId: other.id, note: "bound" })),
      ).toHaveLength(0);
    });
  });
}
