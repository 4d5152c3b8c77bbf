import "reflect-metadata";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import {
  And,
  Brackets,
  Column,
  type DataSource,
  Entity,
  type FindOperator,
  type FindOptionsWhere,
  Like,
  ManyToOne,
  Not,
  Or,
  PrimaryGeneratedColumn,
  Raw,
  type Relation,
  type Repository,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  encryptedWhere,
  type FieldEncryptionOptions,
  fieldEncryption,
  reencryptEntities,
} from "../src/index.ts";
import { failure, openMariadb, openPostgres, openSqlite, type TestDatabase } from "./backends.ts";

// TypeORM inlines a Raw condition's SQL as written. find() brackets each property's condition,
// but update/delete criteria and QueryBuilder.where(object) join a where's properties with a
// bare AND, and QueryBuilder.andWhere appends to a one-property where without brackets:
// `label = 'x' OR label = 'y' AND tenantId = ?` matches every tenant's "x" rows. Wherever the
// adapter adds a condition of its own beside the caller's where (the tenant `encryptedWhere`'s
// `context` limits the lookup to, the job's primary key cursor and the scope its where selects),
// a Raw in that where is refused, naming its column.

class RawMeta {
  @Column({ type: String, length: 16, nullable: true })
  source: string | null;
}

@Entity("kms_raw_docs")
class RawDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @Column({ type: String, length: 16 })
  label: string;

  @EncryptedColumn({ deterministic: true, context: { fromRow: ["tenantId"] } })
  holder: string;

  @Column(() => RawMeta)
  meta: RawMeta;

  @Column({ type: "int", default: 0 })
  uses: number;
}

/** No encrypted column of its own: only its relation's where is limited to the tenant. */
@Entity("kms_raw_notes")
class RawNote {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 16 })
  text: string;

  @ManyToOne(() => RawDoc, { nullable: true })
  doc: Relation<RawDoc> | null;
}

/** A column bound to the run's scope, beside the row's tenant: `where` selects the scope's rows. */
@Entity("kms_raw_memos")
class RawMemo {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @Column({ type: String, length: 16 })
  label: string;

  @EncryptedColumn({ nullable: true, context: { fromScope: ["tenant"] } })
  body: string | null;
}

const ENTITIES = [RawDoc, RawNote, RawMemo];

const T1 = { context: { tenantId: "t1" } };

/** An OR at the top of Raw's SQL: within its brackets it matches "x" or "y" labels. */
const xOrY = (alias: string) => `${alias} = 'x' OR ${alias} = 'y'`;

/**
 * Raw wherever it is, on a plain column: joined into the pinned where, each would reach other
 * tenants' rows in update criteria. Brackets around it (Not, And, Or) do not contain SQL that
 * closes them.
 */
const RAW_ON_LABEL: readonly [string, FindOperator<string>][] = [
  ["Raw(fn)", Raw(xOrY)],
  ["Raw(sql)", Raw("'x' OR 1=1")],
  ["Not(Raw)", Not(Raw((alias) => `${alias} = 'z') OR (${alias} = 'x'`))],
  [
    "And(Like, Raw)",
    And(
      Like("%"),
      Raw((alias) => `${alias} = 'z') OR 1=1 OR (${alias} = 'z'`),
    ),
  ],
  ["Or(Raw, Like)", Or(Raw(xOrY), Like("q%"))],
];

const PREFIX = "kms1:";

function describeRawOperators(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(
    `Raw beside the adapter's conditions on ${name}`,
    () => {
      let db: TestDatabase;
      let kms: Kms;
      let keyId: string;
      let ds: DataSource;
      let docs: Repository<RawDoc>;
      let notes: Repository<RawNote>;

      const connect = async (extra: Partial<FieldEncryptionOptions> = {}) =>
        db.connect(fieldEncryption({ kms, keyId, ...extra }), { entities: ENTITIES });

      beforeEach(async () => {
        db = await open();
        kms = await createKms();
        keyId = (await kms.createKey()).keyMetadata.keyId;
        ds = await connect();
        docs = ds.getRepository(RawDoc);
        notes = ds.getRepository(RawNote);
        for (const [tenantId, holder, label] of [
          ["t1", "a", "x"],
          ["t1", "b", "y"],
          ["t2", "a", "x"],
          ["t2", "c", "y"],
        ] as const) {
          const doc = await docs.save(
            Object.assign(new RawDoc(), { tenantId, holder, label, meta: { source: label } }),
          );
          await notes.save(Object.assign(new RawNote(), { text: label, doc }));
        }
      });
      afterEach(async () => {
        await db.close();
      });

      /** Every doc as "tenant:holder:uses", in id order. */
      const state = async () =>
        (await docs.find({ order: { id: "ASC" } })).map(
          (d) => `${d.tenantId}:${d.holder}:${d.uses}`,
        );
      const UNTOUCHED = ["t1:a:0", "t1:b:0", "t2:a:0", "t2:c:0"];

      const refusedNaming = async (path: string, run: () => Promise<unknown>) => {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          new RegExp(
            `^"context" gives tenantId = "t1", which the lookup is limited to, but the where compares ${path.replace(".", "\\.")} with Raw SQL`,
          ),
        );
      };

      test.each(RAW_ON_LABEL)(
        "%s on a plain column beside the tenant pin is refused, naming the column",
        async (_, raw) => {
          for (const where of [
            { label: raw, holder: Not("b") },
            { holder: Not("b"), label: raw },
            { label: raw },
          ] as FindOptionsWhere<RawDoc>[]) {
            await refusedNaming("label", () => encryptedWhere(docs, where, T1));
            await refusedNaming("label", () => encryptedWhere(docs, [where], T1));
            await refusedNaming("label", async () =>
              docs.update(await encryptedWhere(docs, where, T1), { uses: 1 }),
            );
          }
          expect(await state()).toEqual(UNTOUCHED);
        },
      );

      test("update and delete criteria with Raw beside the pin never reach another tenant's rows", async () => {
        const where = { label: Raw(xOrY), holder: Not("b") } as FindOptionsWhere<RawDoc>;
        // Refused before any statement: joined with a bare AND, TypeORM would run
        // `label = 'x' OR label = 'y' AND holder <> ? AND tenantId = ?`, matching t2's "x" row.
        await refusedNaming("label", async () =>
          docs.update(await encryptedWhere(docs, where, T1), { uses: 1 }),
        );
        await refusedNaming("label", async () =>
          docs.delete(await encryptedWhere(docs, where, T1)),
        );
        await refusedNaming("label", async () =>
          docs
            .createQueryBuilder("d")
            .where(await encryptedWhere(docs, where, T1))
            .getMany(),
        );
        expect(await state()).toEqual(UNTOUCHED);
        // The pin itself keeps writes on t1's rows: the same criteria with operators TypeORM
        // compares as parameters update t1's "a" only.
        await docs.update(
          await encryptedWhere(docs, { label: Or(Like("x"), Like("y")), holder: Not("b") }, T1),
          { uses: 1 },
        );
        expect(await state()).toEqual(["t1:a:1", "t1:b:0", "t2:a:0", "t2:c:0"]);
      });

      test("Raw in an embedded where beside the pin is refused, naming its path", async () => {
        const where = { meta: { source: Raw(xOrY) }, holder: Not("b") } as FindOptionsWhere<RawDoc>;
        await refusedNaming("meta.source", async () =>
          docs.update(await encryptedWhere(docs, where, T1), { uses: 1 }),
        );
        expect(await state()).toEqual(UNTOUCHED);
      });

      test("Raw beside a pin that a relation's where gets is refused, wherever it is", async () => {
        // RawNote has no context column: the pin is the related doc's `tenantId = "t1"`.
        const outer = { text: Raw(xOrY), doc: { holder: Not("b") } } as FindOptionsWhere<RawNote>;
        const inner = { doc: { label: Raw(xOrY), holder: Not("b") } } as FindOptionsWhere<RawNote>;
        await refusedNaming("text", async () =>
          notes
            .createQueryBuilder("n")
            .leftJoin("n.doc", "doc")
            .where(await encryptedWhere(notes, outer, T1))
            .getMany(),
        );
        await refusedNaming("doc.label", () => encryptedWhere(notes, inner, T1));
        // Without Raw the relation's pin holds, in a QueryBuilder as in a find.
        const texts = async (rows: Promise<RawNote[]>) => (await rows).map((n) => n.text).sort();
        // (One where per query: TypeORM turns its operators' values into stored forms in place.)
        const plain = () => encryptedWhere(notes, { doc: { holder: Not("b") } }, T1);
        expect(await texts(notes.find({ where: await plain() }))).toEqual(["x"]);
        expect(
          await texts(
            notes
              .createQueryBuilder("n")
              .leftJoin("n.doc", "doc")
              .where(await plain())
              .getMany(),
          ),
        ).toEqual(["x"]);
      });

      test("Raw stays usable where no pin is added, and on the where's own tenant", async () => {
        // No `context` option: nothing of the adapter's is joined to it (TypeORM's own rules).
        expect(
          (await docs.findBy(await encryptedWhere(docs, { tenantId: "t1", label: Raw(xOrY) })))
            .length,
        ).toBe(2);
        // The tenant given by equality in the where is the caller's own condition, not a pin.
        expect(
          (await docs.findBy(await encryptedWhere(docs, { tenantId: "t1", label: Raw(xOrY) }, T1)))
            .length,
        ).toBe(2);
      });

      /** Inserts a memo with the raw driver: legacy plaintext, as before the column was encrypted. */
      const insertMemo = (tenantId: string, label: string, body: string) =>
        db.raw(
          `INSERT INTO ${db.q("kms_raw_memos")} (${db.q("tenantId")}, ${db.q("label")}, ${db.q("body")}) VALUES (?, ?, ?)`,
          [tenantId, label, body],
        );
      const memoBodies = async () =>
        (await db.raw(`SELECT * FROM ${db.q("kms_raw_memos")} ORDER BY ${db.q("id")}`)).map((r) =>
          String(r.body).startsWith(PREFIX) ? `${r.tenantId}:sealed` : `${r.tenantId}:${r.body}`,
        );

      test("reencryptEntities refuses Raw in its where before reading a row", async () => {
        const legacy = await connect({ legacyPlaintext: true });
        await insertMemo("t1", "x", "one");
        await insertMemo("t2", "y", "two");
        await insertMemo("t1", "y", "three");
        const before = await memoBodies();
        // TypeORM would run `tenantId = ? AND label = 'x' OR label = 'y'`: t2's "y" row would be
        // sealed under t1's scope, where t2 could never open it again.
        const error = await failure(() =>
          reencryptEntities(legacy, RawMemo, {
            context: { tenant: "t1" },
            where: { tenantId: "t1", label: Raw(xOrY) },
          }),
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^RawMemo\.label is compared with Raw SQL in "where"/,
        );
        expect(await memoBodies()).toEqual(before);
      });

      test("reencryptEntities refuses a one-property Raw where, which the cursor could not bound", async () => {
        const legacy = await connect({ legacyPlaintext: true });
        for (const label of ["x", "x", "y", "x"]) await insertMemo("t1", label, `body ${label}`);
        // `label = 'x' OR label = 'y' AND id > :cursor`: the cursor would bound the "y" rows only,
        // and each batch of one would read the first "x" row again, forever.
        const aborter = new AbortController();
        let batches = 0;
        const error = await failure(() =>
          reencryptEntities(legacy, RawMemo, {
            context: { tenant: "t1" },
            where: [{ label: Raw(xOrY) }],
            batchSize: 1,
            signal: aborter.signal,
            onProgress: () => {
              if (++batches > 8) aborter.abort();
            },
          }),
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^RawMemo\.label is compared with Raw SQL in "where"/,
        );
        expect(batches).toBe(0);
        // Operators TypeORM compares as parameters are bounded by the cursor: every row once.
        const done = await reencryptEntities(legacy, RawMemo, {
          context: { tenant: "t1" },
          where: { label: Or(Like("x"), Like("y")) },
          batchSize: 1,
        });
        expect(done).toMatchObject({ scanned: 4, reencrypted: 4 });
      });

      test("a Brackets condition keeps Raw apart from the pin in a QueryBuilder", async () => {
        // The documented way to combine Raw with a pinned lookup: its own brackets.
        const rows = await docs
          .createQueryBuilder("d")
          .where(await encryptedWhere(docs, { holder: Not("b") }, T1))
          .andWhere(new Brackets((qb) => qb.where("d.label = 'x' OR d.label = 'y'")))
          .getMany();
        expect(rows.map((d) => `${d.tenantId}:${d.holder}`)).toEqual(["t1:a"]);
      });
    },
  );
}

const postgres = databaseTarget("postgres");
const mariadb = databaseTarget("mariadb");

describeRawOperators("SQLite (better-sqlite3)", openSqlite);
describeRawOperators(
  "PostgreSQL (pg)",
  () => openPostgres(postgres.url as string),
  postgres.skipReason,
);
describeRawOperators(
  "MariaDB (mysql2)",
  () => openMariadb(mariadb.url as string),
  mariadb.skipReason,
);
