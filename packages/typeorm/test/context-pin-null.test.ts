import "reflect-metadata";
import { createKms, ValidationError } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import {
  And,
  Column,
  type DataSource,
  Entity,
  Equal,
  type FindOperator,
  type FindOptionsWhere,
  In,
  IsNull,
  Like,
  Not,
  Or,
  PrimaryGeneratedColumn,
  Raw,
  type Repository,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, encryptedWhere, fieldEncryption } from "../src/index.ts";
import { failure, openMariadb, openPostgres, openSqlite, type TestDatabase } from "./backends.ts";

// `context` pins a tenant column (`tenantId = "t1"`) beside the where's own condition on it. A
// null check or comparison there can only match no row of that tenant: refused, as a bare null
// is, rather than answered with a silently empty result. Raw SQL is refused as well: TypeORM
// joins it into the pin without brackets, where it could reach other tenants' rows.

/** A nullable tenant column, so that rows without a tenant exist beside the tenants' rows. */
@Entity("kms_pin_null_docs")
class PinDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64, nullable: true })
  tenantId: string | null;

  @EncryptedColumn({ deterministic: true, nullable: true, context: { fromRow: ["tenantId"] } })
  holder: string | null;

  @Column({ type: "int", default: 0 })
  uses: number;
}

type Condition = FindOperator<string | null>;

const T1 = { context: { tenantId: "t1" } };

/** Conditions that assert the tenant is null: refused with the bare null's message. */
const NULL_TENANT: readonly [string, Condition][] = [
  ["IsNull()", IsNull()],
  ["Equal(null)", Equal(null)],
  ["In([null])", In([null])],
  ["In([null, null])", In([null, null])],
];

/**
 * Conditions that no row holding "t1" can satisfy because of a null check or a comparison with
 * null (never true in SQL): refused, naming the column and the condition.
 */
const NEVER_BESIDE_T1: readonly [string, Condition][] = [
  ["Not(Equal(null))", Not(Equal(null))],
  ["Not(In([null]))", Not(In([null]))],
  ["Not(null)", Not(null as unknown as string)],
  ['In([null, "t2"])', In([null, "t2"])],
  ['Not(In([null, "t2"]))', Not(In([null, "t2"]))],
  ["Not(Not(IsNull()))", Not(Not(IsNull()))],
  ['And(IsNull(), Not("t2"))', And(IsNull(), Not("t2"))],
  ["And(Not(IsNull()), IsNull())", And(Not(IsNull()), IsNull())],
  ['Or(IsNull(), Equal("t2"))', Or(IsNull(), Equal("t2"))],
  ['And(IsNull(), Like("t%"))', And(IsNull(), Like("t%"))],
];

/** Raw SQL anywhere in the condition: it cannot be kept within the tenant's rows. */
const RAW: readonly [string, Condition][] = [
  ["Raw IS NOT NULL OR", Raw((alias) => `${alias} IS NOT NULL OR 1=1`)],
  ["Raw breaking out of brackets", Raw(() => "1=1) OR (1=1")],
  ["Raw string", Raw("'t1' OR 1=1")],
  ["Raw IS NULL", Raw((alias) => `${alias} IS NULL`)],
  ["Not(Raw)", Not(Raw((alias) => `${alias} = 'x' OR 1=1`))],
  [
    "And(Not(IsNull()), Raw)",
    And(
      Not(IsNull()),
      Raw((alias) => `${alias} = 't1' OR 1=1`),
    ),
  ],
  [
    'Or(Raw, Equal("t1"))',
    Or(
      Raw((alias) => `${alias} IS NOT NULL`),
      Equal("t1"),
    ),
  ],
];

/** Conditions that hold for "t1" (redundant beside the pin): the lookup keeps to t1's rows. */
const HOLD_FOR_T1: readonly [string, Condition][] = [
  ["Not(IsNull())", Not(IsNull())],
  ['Not(Equal("t2"))', Not(Equal("t2"))],
  ['In(["t1"])', In(["t1"])],
  ['In([null, "t1"])', In([null, "t1"])],
  ['In(["t1", "t2"])', In(["t1", "t2"])],
  ['Or(IsNull(), Equal("t1"))', Or(IsNull(), Equal("t1"))],
  ['And(Not(IsNull()), Not("t2"))', And(Not(IsNull()), Not("t2"))],
  // Not judged here (the database compares patterns): kept, and still limited to t1's rows.
  ['Like("t%")', Like("t%")],
  ['Or(IsNull(), Like("t%"))', Or(IsNull(), Like("t%"))],
];

/**
 * Conditions that exclude "t1" without any null: a contradiction, refused as a where's own
 * `tenantId: "t2"` beside the pin is (they used to match no row, silently).
 */
const EXCLUDE_T1: readonly [string, Condition][] = [
  ['Not("t1")', Not("t1")],
  ['In(["t2"])', In(["t2"])],
  ["In([])", In([])],
];

function describeContextPinNull(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`a null check beside a context pin on ${name}`, () => {
    let db: TestDatabase;
    let ds: DataSource;
    let docs: Repository<PinDoc>;
    /** Ids by "tenant:holder". */
    let ids: Record<string, number>;

    beforeEach(async () => {
      db = await open();
      const kms = await createKms();
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [PinDoc] });
      docs = ds.getRepository(PinDoc);
      ids = {};
      for (const [tenantId, holder] of [
        ["t1", "a"],
        ["t1", "b"],
        ["t2", "a"],
        ["t2", "c"],
        [null, null],
      ] as const) {
        const saved = await docs.save(Object.assign(new PinDoc(), { tenantId, holder }));
        ids[`${tenantId}:${holder}`] = saved.id;
      }
    });
    afterEach(async () => {
      await db.close();
    });

    const where = (tenantId: Condition, rest: FindOptionsWhere<PinDoc> = {}) =>
      ({ tenantId, ...rest }) as FindOptionsWhere<PinDoc>;
    const found = async (w: FindOptionsWhere<PinDoc>) =>
      (await docs.find({ where: await encryptedWhere(docs, w, T1), order: { id: "ASC" } })).map(
        (d) => `${d.tenantId}:${d.holder}`,
      );

    test.each(NULL_TENANT)("%s on the tenant is refused as a bare null is", async (_, op) => {
      for (const run of [
        () => encryptedWhere(docs, where(op), T1),
        () => encryptedWhere(docs, where(op, { holder: Not("a") }), T1),
        () => encryptedWhere(docs, [where(op, { holder: "a" })], T1),
      ]) {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toBe(
          `"context" gives tenantId = "t1" but the where has tenantId = null`,
        );
      }
    });

    test.each(NEVER_BESIDE_T1)("%s on the tenant is refused, named", async (shown, op) => {
      for (const run of [
        () => encryptedWhere(docs, where(op), T1),
        () => encryptedWhere(docs, [where(op, { holder: Not("a") })], T1),
      ]) {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toContain(
          `"context" gives tenantId = "t1" but the where has tenantId: ${shown}, which no row holding "t1" matches`,
        );
      }
    });

    test.each(RAW)(
      "%s on the tenant is refused: it could reach other tenants' rows",
      async (_, op) => {
        const error = await failure(() =>
          encryptedWhere(docs, where(op, { holder: Not("b") }), T1),
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^"context" gives tenantId = "t1", which the lookup is limited to, but the where compares tenantId with Raw SQL/,
        );
      },
    );

    test.each(HOLD_FOR_T1)("%s on the tenant keeps the lookup on t1's rows", async (_, op) => {
      expect(await found(where(op))).toEqual(["t1:a", "t1:b"]);
      // Not on the encrypted column would match t2's "a" (sealed under t2) and the null row.
      expect(await found(where(op, { holder: Not("b") }))).toEqual(["t1:a"]);
      expect(await found(where(op, { holder: "a" }))).toEqual(["t1:a"]);
    });

    test.each(EXCLUDE_T1)("%s on the tenant is refused, as another value is", async (shown, op) => {
      for (const run of [
        () => encryptedWhere(docs, where(op), T1),
        () => encryptedWhere(docs, [where(op, { holder: Not("b") })], T1),
      ]) {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toBe(
          `"context" gives tenantId = "t1" but the where has tenantId: ${shown}, which no row holding "t1" matches`,
        );
      }
    });

    test("writes through Not(IsNull()) beside the pin touch t1's rows only", async () => {
      const notB = await encryptedWhere(docs, where(Not(IsNull()), { holder: Not("b") }), T1);
      await docs.update(notB, { uses: 7 });
      const uses = async () =>
        Object.fromEntries(
          (await docs.find({ order: { id: "ASC" } })).map((d) => [
            `${d.tenantId}:${d.holder}`,
            d.uses,
          ]),
        );
      expect(await uses()).toEqual({ "t1:a": 7, "t1:b": 0, "t2:a": 0, "t2:c": 0, "null:null": 0 });
      await docs.delete(await encryptedWhere(docs, where(Not(IsNull()), { holder: Not("a") }), T1));
      expect(Object.keys(await uses())).toEqual(["t1:a", "t2:a", "t2:c", "null:null"]);
      expect(await docs.findOneBy({ id: ids["t1:b"] as number })).toBeNull();
    });
  });
}

const postgres = databaseTarget("postgres");
const mariadb = databaseTarget("mariadb");

describeContextPinNull("SQLite (better-sqlite3)", openSqlite);
describeContextPinNull(
  "PostgreSQL (pg)",
  () => openPostgres(postgres.url as string),
  postgres.skipReason,
);
describeContextPinNull(
  "MariaDB (mysql2)",
  () => openMariadb(mariadb.url as string),
  mariadb.skipReason,
);
