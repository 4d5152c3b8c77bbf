// Blind indexes of typed columns (FORMAT §6.5): a row saved with one form of a value is found by
// a lookup with another (a decimal saved as a number is found by the string a load returns); a
// form the column refuses is refused in a lookup too, instead of silently matching nothing.
import "reflect-metadata";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { Column, type DataSource, Entity, PrimaryGeneratedColumn, type Repository } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { encryptedSpecsOf } from "../src/encrypted-column.ts";
import {
  EncryptedColumn,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import { openMariadb, openPostgres, openSqlite, type TestDatabase } from "./backends.ts";

@Entity("kms_payments")
class Payment {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({
    type: "decimal",
    nullable: true,
    blindIndex: { column: "amountIndex" },
    context: { fromRow: ["tenantId"] },
  })
  amount: string | number | null;

  amountIndex?: string | null;

  @EncryptedColumn({
    type: "date",
    nullable: true,
    blindIndex: { column: "paidAtIndex" },
    context: { fromRow: ["tenantId"] },
  })
  paidAt: Date | null;

  paidAtIndex?: string | null;

  @EncryptedColumn({
    type: "bigint",
    nullable: true,
    blindIndex: { column: "refIndex" },
    context: { fromRow: ["tenantId"] },
  })
  ref: bigint | null;

  refIndex?: string | null;
}

/** decimal.js (Prisma's Decimal) as far as the value codec reads it. */
class FakeDecimal {
  readonly #text: string;
  constructor(text: string) {
    this.#text = text;
  }
  toFixed(): string {
    return this.#text;
  }
  isNaN(): boolean {
    return false;
  }
  toString(): string {
    return String(Number(this.#text));
  }
}

describeTypedIndexes("SQLite", openSqlite);
const pg = databaseTarget("postgres");
describeTypedIndexes("PostgreSQL", () => openPostgres(pg.url as string), pg.skipReason);
const maria = databaseTarget("mariadb");
describeTypedIndexes("MariaDB", () => openMariadb(maria.url as string), maria.skipReason);

function describeTypedIndexes(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`typed blind indexes on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let payments: Repository<Payment>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      encryption = fieldEncryption({ kms, keyId });
      ds = await db.connect(encryption, { entities: [Payment] });
      payments = ds.getRepository(Payment);
    });
    afterEach(async () => {
      await db.close();
    });

    const save = (values: Partial<Payment>) =>
      payments.save(Object.assign(new Payment(), { tenantId: "t1", ...values }));
    const ids = async (where: Record<string, unknown>) =>
      (await payments.findBy(await encryptedWhere(payments, { tenantId: "t1", ...where }))).map(
        (p) => p.id,
      );

    test("each index spec carries its column's type", () => {
      const types = encryptedSpecsOf(Payment).map((s) => [s.property, s.blindIndex?.type]);
      expect(types).toEqual([
        ["amount", "decimal"],
        ["paidAt", "date"],
        ["ref", "bigint"],
      ]);
    });

    test("a decimal saved as a number or a string is found by either, and by the loaded value", async () => {
      const byNumber = await save({ amount: 1.5 });
      const byString = await save({ amount: "2.25" });
      await payments.save(Object.assign(new Payment(), { tenantId: "t2", amount: 1.5 }));
      for (const form of [1.5, "1.5", new FakeDecimal("1.50")]) {
        expect(await ids({ amount: form })).toEqual([byNumber.id]);
      }
      for (const form of [2.25, "2.25"]) expect(await ids({ amount: form })).toEqual([byString.id]);
      const loaded = await payments.findOneOrFail({ where: { id: byNumber.id } });
      expect(loaded.amount).toBe("1.5");
      expect(await ids({ amount: loaded.amount })).toEqual([byNumber.id]);
    });

    test("a date is found by a Date, and a lookup with a string is refused, not silently empty", async () => {
      const paidAt = new Date("2026-03-01T12:00:00.000Z");
      const saved = await save({ paidAt });
      expect(await ids({ paidAt: new Date(paidAt.getTime()) })).toEqual([saved.id]);
      const error = await ids({ paidAt: paidAt.toISOString() }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(/a blind index of a date field takes a valid Date/);
    });

    test("a bigint column can have a blind index", async () => {
      const saved = await save({ ref: 2n ** 70n });
      expect(await ids({ ref: 2n ** 70n })).toEqual([saved.id]);
      expect(await ids({ ref: 2n ** 70n + 1n })).toEqual([]);
    });

    test("an index the untyped engine wrote from a number is rewritten by re-encrypting every value", async () => {
      const saved = await save({ amount: 1.5 });
      // What the subscriber wrote before indexes knew their type: the JSON text of the number.
      const old = await encryption.engine.blindIndex(
        { model: "Payment", field: "amountIndex", context: { tenantId: "t1" } },
        { bytes: 16 },
        1.5,
      );
      await db.raw(`UPDATE ${db.q("kms_payments")} SET ${db.q("amountIndex")} = ? WHERE id = ?`, [
        old,
        saved.id,
      ]);
      expect(await ids({ amount: "1.5" })).toEqual([]);
      const done = await reencryptEntities(ds, Payment, { shouldReencrypt: () => true });
      expect(done.reencrypted).toBe(1);
      expect(await ids({ amount: "1.5" })).toEqual([saved.id]);
      expect(await ids({ amount: 1.5 })).toEqual([saved.id]);
    });
  });
}
