import { createKms, InvalidCiphertextError, type Kms, ValidationError } from "@kms/core";
import {
  type BeforeQueryEvent,
  Column,
  type DataSource,
  Entity,
  type EntitySubscriberInterface,
  PrimaryColumn,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  type FieldEncryptionOptions,
  fieldEncryption,
  reencryptEntities,
} from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";

/**
 * Declares `id` its primary key; the tests rebuild its table as the database may really hold
 * it (`synchronize: false` against a schema made elsewhere): keyed by (tenantId, id), or by
 * nothing.
 */
@Entity("kms_pk_notes")
class TenantNote {
  @PrimaryColumn({ type: Number })
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  body: string | null;
}

@Entity("kms_pk_composite")
class CompositeNote {
  @PrimaryColumn({ type: String, length: 64 })
  tenantId: string;

  @PrimaryColumn({ type: Number })
  id: number;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  body: string | null;
}

/** A primary key TypeORM lets `@Column` declare nullable (`@PrimaryColumn` refuses it). */
@Entity("kms_pk_nullable")
class NullableKeyNote {
  @Column({ type: Number, primary: true, nullable: true })
  id: number | null;

  @EncryptedColumn({ nullable: true })
  body: string | null;
}

const ENTITIES = [TenantNote, CompositeNote, NullableKeyNote];
const PREFIX = "kms1:";

/**
 * `reencryptEntities` pages by the primary key and writes each row back by it: a key the
 * database does not keep unique and non-null (the entity declares one the table does not have)
 * would skip rows, write one tenant's values into another's row, or never read a row. Run once
 * per backend.
 */
export function describeReencryptPrimaryKey(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`reencryptEntities' primary key on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;

    const connect = async (
      extra: Partial<FieldEncryptionOptions> = {},
    ): Promise<{ ds: DataSource }> => {
      const encryption = fieldEncryption({ kms, keyId, ...extra });
      return { ds: await db.connect(encryption, { entities: ENTITIES }) };
    };

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      await db.close();
    });

    const table = () => db.q("kms_pk_notes");
    /** The notes table as another tool made it: `primaryKey` its columns, or none. */
    const rebuild = async (primaryKey: readonly string[] | undefined) => {
      await db.raw(`DROP TABLE ${table()}`);
      await db.raw(
        `CREATE TABLE ${table()} (${db.q("id")} integer ${primaryKey === undefined ? "NULL" : "NOT NULL"}, ${db.q("tenantId")} varchar(64) NOT NULL, ${db.q("body")} text NULL${primaryKey === undefined ? "" : `, PRIMARY KEY (${primaryKey.map((c) => db.q(c)).join(", ")})`})`,
      );
    };
    const insert = (id: number | null, tenantId: string, body: string) =>
      db.raw(
        `INSERT INTO ${table()} (${db.q("id")}, ${db.q("tenantId")}, ${db.q("body")}) VALUES (?, ?, ?)`,
        [id, tenantId, body],
      );
    /** Each row's tenant and body, "sealed" for ciphertext, sorted (nulls sort apart by backend). */
    const bodies = async () =>
      (await db.raw(`SELECT ${db.q("tenantId")} AS t, ${db.q("body")} AS b FROM ${table()}`))
        .map((r) => [String(r.t), String(r.b).startsWith(PREFIX) ? "sealed" : String(r.b)])
        .sort((x, y) => x.join().localeCompare(y.join()));
    const refusal = async (run: () => Promise<unknown>) => {
      const error = await failure(run);
      expect(error).toBeInstanceOf(ValidationError);
      return (error as Error).message;
    };
    const SHARED =
      /^TenantNote: two rows of kms_pk_notes hold the same id \(its primary key on the entity, which the database does not keep unique\)/;

    test("a composite primary key is refused before any statement, naming its columns", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      expect(await refusal(() => reencryptEntities(ds, CompositeNote))).toMatch(
        /^CompositeNote: reencryptEntities pages and writes rows by a single-column primary key, and this one is composite \(tenantId, id\)/,
      );
    });

    test("a primary key the entity declares nullable is refused before any statement", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      expect(await refusal(() => reencryptEntities(ds, NullableKeyNote))).toMatch(
        /^NullableKeyNote\.id is the primary key but nullable/,
      );
    });

    test("a primary key two rows share stops the job before it skips one of them", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      await rebuild(["tenantId", "id"]);
      await insert(1, "t1", "a1");
      await insert(1, "t2", "b1");
      await insert(2, "t1", "a2");
      // Paged by `id > 1` after the first batch, the second row holding id 1 would never be read.
      expect(await refusal(() => reencryptEntities(ds, TenantNote, { batchSize: 1 }))).toMatch(
        SHARED,
      );
      expect(await bodies()).toEqual([
        ["t1", "a1"],
        ["t1", "a2"],
        ["t2", "b1"],
      ]);
    });

    test("a primary key two rows share stops the job before it writes one tenant's value into the other's row", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      await rebuild(["tenantId", "id"]);
      await insert(1, "t1", "same");
      await insert(1, "t2", "same");
      // `WHERE id = 1 AND body = 'same'` matches both rows: t2's would hold t1's ciphertext.
      expect(await refusal(() => reencryptEntities(ds, TenantNote))).toMatch(SHARED);
      // The other tenant's row is outside `where`, not outside the write by id.
      expect(
        await refusal(() => reencryptEntities(ds, TenantNote, { where: { tenantId: "t1" } })),
      ).toMatch(SHARED);
      expect(await bodies()).toEqual([
        ["t1", "same"],
        ["t2", "same"],
      ]);
      // With the schema the entity declares, the same rows (ids now apart) migrate.
      await db.raw(`UPDATE ${table()} SET ${db.q("id")} = 2 WHERE ${db.q("tenantId")} = ?`, ["t2"]);
      expect(await reencryptEntities(ds, TenantNote)).toMatchObject({
        scanned: 2,
        reencrypted: 2,
        conflicts: 0,
      });
      const notes = await ds.getRepository(TenantNote).find({ order: { id: "ASC" } });
      expect(notes.map((n) => [n.tenantId, n.body])).toEqual([
        ["t1", "same"],
        ["t2", "same"],
      ]);
    });

    test("a write that lands in two rows (a duplicate inserted meanwhile) stops the job", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      await rebuild(["tenantId", "id"]);
      await insert(1, "t1", "same");
      let fired = false;
      const concurrent: EntitySubscriberInterface = {
        beforeQuery: async (event: BeforeQueryEvent) => {
          if (fired || !/^UPDATE\b/i.test(event.query) || !event.query.includes("kms_pk_notes")) {
            return;
          }
          fired = true;
          await insert(1, "t2", "same");
        },
      };
      (ds.subscribers as EntitySubscriberInterface[]).push(concurrent);
      expect(await refusal(() => reencryptEntities(ds, TenantNote))).toMatch(
        /^TenantNote: the write of the row with id 1 changed 2 rows of kms_pk_notes/,
      );
      expect(fired).toBe(true);
      // Too late for t2's row, which now holds t1's value: the job says so rather than count a
      // conflict that every later run would meet as an undecryptable value.
      const [, t2] = await db.raw(
        `SELECT ${db.q("body")} AS b FROM ${table()} ORDER BY ${db.q("tenantId")}`,
      );
      expect(String(t2?.b)).toMatch(/^kms1:/);
      // Read through the job's DataSource: another would synchronize the table to the entity.
      const opened = await failure(() =>
        ds.getRepository(TenantNote).findOneByOrFail({ tenantId: "t2" }),
      );
      expect(opened).toBeInstanceOf(InvalidCiphertextError);
    });

    test("a row whose primary key is null stops the job: paging by it never reads that row", async () => {
      const { ds } = await connect({ legacyPlaintext: true });
      await rebuild(undefined);
      await insert(1, "t1", "a1");
      await insert(null, "t1", "lost");
      expect(await refusal(() => reencryptEntities(ds, TenantNote))).toMatch(
        /^TenantNote: a row of kms_pk_notes holds a null id \(its primary key on the entity, which the database lets be null\)/,
      );
      expect(await bodies()).toEqual([
        ["t1", "a1"],
        ["t1", "lost"],
      ]);
    });
  });
}
