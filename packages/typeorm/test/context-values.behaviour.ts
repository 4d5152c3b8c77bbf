import { createKms, ValidationError } from "@kms/core";
import { Column, type DataSource, Entity, PrimaryGeneratedColumn } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, encryptedWhere, fieldEncryption } from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";

/** A client-chosen UUID as the row identity. */
@Entity("kms_ctxv_uuid_docs")
class UuidDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "uuid" })
  recordId: string;

  @EncryptedColumn({ nullable: true, context: { rowIdentity: ["recordId"] } })
  note: string | null;

  @EncryptedColumn({ deterministic: true, nullable: true, context: { rowIdentity: ["recordId"] } })
  code: string | null;
}

/** An integer context column, nullable. */
@Entity("kms_ctxv_numbered_docs")
class NumberedDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "int", nullable: true })
  orgNo: number | string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["orgNo"] } })
  note: string | null;
}

/** A text context column, given numbers as well as strings. */
@Entity("kms_ctxv_text_docs")
class TextDoc {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  orgId: string | number;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["orgId"] } })
  note: string | null;
}

/** A fixed-length context column; TypeORM calls the type "character" on SQLite. */
function declareCodedDoc(type: "char" | "character") {
  @Entity("kms_ctxv_coded_docs")
  class CodedDoc {
    @PrimaryGeneratedColumn()
    id: number;

    @Column({ type, length: 4 })
    region: string;

    @EncryptedColumn({ nullable: true, context: { fromRow: ["region"] } })
    note: string | null;
  }
  return CodedDoc;
}

const CodedDoc = declareCodedDoc("char");
const SqliteCodedDoc = declareCodedDoc("character");

/**
 * Context values are bound in the form the database gives them back, and a null context value
 * binds nothing. Run once per backend.
 */
export function describeContextValues(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`context values on ${name}`, () => {
    let db: TestDatabase;
    let ds: DataSource;
    let codedDoc: typeof CodedDoc;

    beforeEach(async () => {
      db = await open();
      const kms = await createKms();
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      codedDoc = db.kind === "sqlite" ? SqliteCodedDoc : CodedDoc;
      ds = await db.connect(fieldEncryption({ kms, keyId }), {
        entities: [UuidDoc, NumberedDoc, TextDoc, codedDoc],
      });
    });
    afterEach(async () => {
      await db.close();
    });

    const stored = async (table: string, id: number, column: string) =>
      (
        await db.raw(`SELECT ${db.q(column)} FROM ${db.q(table)} WHERE ${db.q("id")} = ?`, [id])
      )[0]?.[column];

    test("a UUID given in upper case or without hyphens is bound as the database gives it back", async () => {
      const docs = ds.getRepository(UuidDoc);
      const upper = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
      const saved = await docs.save(
        Object.assign(new UuidDoc(), { recordId: upper, note: "secret", code: "C-1" }),
      );
      // PostgreSQL's uuid and MariaDB's (10.7+) store it in lower case; SQLite keeps the text.
      const native = db.kind !== "sqlite";
      expect(await stored("kms_ctxv_uuid_docs", saved.id, "recordId")).toBe(
        native ? upper.toLowerCase() : upper,
      );
      expect(await docs.findOneByOrFail({ id: saved.id })).toMatchObject({
        note: "secret",
        code: "C-1",
      });
      // Looked up in the case it was written in.
      const found = await docs.findBy(await encryptedWhere(docs, { recordId: upper, code: "C-1" }));
      expect(found.map((d) => d.id)).toEqual([saved.id]);
      if (native) {
        const recordId = "B1FFCD0A9D1C4FF9AC7E7CCACE491B22";
        const bare = await docs.save(
          Object.assign(new UuidDoc(), { recordId, note: "bare", code: "C-2" }),
        );
        expect(await stored("kms_ctxv_uuid_docs", bare.id, "recordId")).toBe(
          "b1ffcd0a-9d1c-4ff9-ac7e-7ccace491b22",
        );
        expect((await docs.findOneByOrFail({ id: bare.id })).note).toBe("bare");
        const byBare = await docs.findBy(await encryptedWhere(docs, { recordId, code: "C-2" }));
        expect(byBare.map((d) => d.id)).toEqual([bare.id]);
      }
    });

    test("an integer column is bound as the integer: a string of digits is canonical, anything else refused", async () => {
      const docs = ds.getRepository(NumberedDoc);
      const saved = await docs.save(Object.assign(new NumberedDoc(), { orgNo: "007", note: "n7" }));
      expect(Number(await stored("kms_ctxv_numbered_docs", saved.id, "orgNo"))).toBe(7);
      expect((await docs.findOneByOrFail({ id: saved.id })).note).toBe("n7");
      const big = await docs.save(Object.assign(new NumberedDoc(), { orgNo: 42n, note: "n42" }));
      expect((await docs.findOneByOrFail({ id: big.id })).note).toBe("n42");
      // The database would round 7.5, or read " 7" and "7a" in ways of its own.
      for (const orgNo of [7.5, " 7", "7a", "+7", "1e3"]) {
        const error = await failure(() =>
          docs.save(Object.assign(new NumberedDoc(), { orgNo, note: "x" })),
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^NumberedDoc\.orgNo is an integer column bound into encrypted values: give it an integer/,
        );
      }
      expect(await docs.count()).toBe(2);
    });

    test("a number given to a text column is bound only where the database stores it as JavaScript writes it", async () => {
      const docs = ds.getRepository(TextDoc);
      // SQLite reads a number as an SQL literal and prints a REAL its own way ("1.0e+21",
      // "5.0e-07", "22960677215.104961"), an integer beyond 64 bits as a REAL; MariaDB prints a
      // literal with an exponent as a DOUBLE ("1e21", "0.0000005"); PostgreSQL stores the text.
      const exact = [123, -5, -0, 2 ** 60];
      const cases = {
        sqlite: {
          // The largest double below 2^63 is an integer of SQLite's 64 bits.
          stored: [...exact, 2 ** 63 - 1024],
          refused: [0.5, 22960677215.10496, 2 ** 63, -(2 ** 63), 1e21, 5e-7, -1e21, NaN, Infinity],
        },
        mariadb: {
          stored: [...exact, 2 ** 63, 1e20, 0.5, 22960677215.10496, 0.000001],
          refused: [1e21, 5e-7, -1e21, 1.5e-7, NaN, Infinity],
        },
        postgres: {
          stored: [...exact, 2 ** 63, 0.5, 22960677215.10496, 1e21, 5e-7, NaN, Infinity],
          refused: [],
        },
      }[db.kind];
      for (const orgId of cases.stored) {
        const saved = await docs.save(Object.assign(new TextDoc(), { orgId, note: `n ${orgId}` }));
        expect([orgId, await stored("kms_ctxv_text_docs", saved.id, "orgId")]).toEqual([
          orgId,
          String(orgId),
        ]);
        expect((await docs.findOneByOrFail({ id: saved.id })).note).toBe(`n ${orgId}`);
      }
      for (const orgId of cases.refused) {
        const error = await failure(() =>
          docs.save(Object.assign(new TextDoc(), { orgId, note: "x" })),
        );
        expect([orgId, error]).toEqual([orgId, expect.any(ValidationError)]);
        expect((error as Error).message).toMatch(
          /^TextDoc\.orgId is a varchar column bound into encrypted values, and (SQLite|MySQL\/MariaDB) stores a number given to it in a text form of its own, which the value bound would not match once read back: give it as a string/,
        );
        // As a string it is stored as written.
        const saved = await docs.save(
          Object.assign(new TextDoc(), { orgId: String(orgId), note: `s ${orgId}` }),
        );
        expect((await docs.findOneByOrFail({ id: saved.id })).note).toBe(`s ${orgId}`);
      }
      expect(await docs.count()).toBe(cases.stored.length + cases.refused.length);
    });

    test("a char(n) value is bound as the database gives it back: padded on PostgreSQL, trimmed on MariaDB", async () => {
      const docs = ds.getRepository(codedDoc);
      const short = await docs.save(Object.assign(new codedDoc(), { region: "eu", note: "n-eu" }));
      const spaced = await docs.save(
        Object.assign(new codedDoc(), { region: "us ", note: "n-us" }),
      );
      const forms = { postgres: ["eu  ", "us  "], mariadb: ["eu", "us"], sqlite: ["eu", "us "] };
      expect([
        await stored("kms_ctxv_coded_docs", short.id, "region"),
        await stored("kms_ctxv_coded_docs", spaced.id, "region"),
      ]).toEqual(forms[db.kind]);
      const read = await docs.find({ order: { id: "ASC" } });
      expect(read.map((d) => d.note)).toEqual(["n-eu", "n-us"]);
    });

    test("a context column set to null while a value is written is refused: the value is not sealed under the stored one", async () => {
      const docs = ds.getRepository(NumberedDoc);
      const saved = await docs.save(Object.assign(new NumberedDoc(), { orgNo: 1, note: "n1" }));
      for (const write of [
        () => docs.save({ id: saved.id, orgNo: null, note: "n2" }),
        () => docs.save(Object.assign(new NumberedDoc(), { orgNo: null, note: "n3" })),
        () => docs.update(saved.id, { orgNo: null, note: "n4" }),
      ]) {
        const error = await failure(write);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^NumberedDoc\.note is bound to NumberedDoc\.orgNo, which is null: a value cannot be bound to a null context/,
        );
      }
      expect(await docs.find()).toEqual([
        Object.assign(new NumberedDoc(), { id: saved.id, orgNo: 1, note: "n1" }),
      ]);
      // Without a value to seal, the context may go.
      await docs.save({ id: saved.id, orgNo: null, note: null });
      expect(await docs.findOneByOrFail({ id: saved.id })).toMatchObject({
        orgNo: null,
        note: null,
      });
    });
  });
}
