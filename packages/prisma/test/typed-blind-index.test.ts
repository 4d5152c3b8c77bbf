// Blind indexes of typed fields through the extension (FORMAT §6.5): a row written with one form
// of a value is found by a lookup with another, as a read hands the value back (a decimal comes
// back as Prisma.Decimal); a form the field refuses is refused in a lookup too, instead of
// silently matching nothing.
import {
  createKms,
  FieldEncryptionEngine,
  type Kms,
  reencryptFields,
  ValidationError,
} from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { openPostgres, openSqlite, schemaText, type TestDatabase } from "./backends.ts";
import { Prisma } from "./generated/client.ts";

const postgres = databaseTarget("postgres");
describeTypedIndexes("SQLite", openSqlite);
describeTypedIndexes("PostgreSQL", () => openPostgres(postgres.url as string), postgres.skipReason);

function describeTypedIndexes(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`typed blind indexes on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    const extend = () => db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    let prisma: ReturnType<typeof extend>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      prisma = extend();
    });
    afterEach(async () => {
      await db.close();
    });

    const ids = async (where: Record<string, unknown>) =>
      (await prisma.payment.findMany({ where: { tenantId: "t1", ...where } as never })).map(
        (p) => p.id,
      );

    test("the descriptor gives each index its source's type", () => {
      const payment = parseSchema(schemaText).Payment as ModelDescriptor;
      expect(payment.blindIndexes.amountIndex?.type).toBe("decimal");
      expect(payment.blindIndexes.paidAtIndex?.type).toBe("date");
      expect(payment.blindIndexes.refIndex?.type).toBe("bigint");
    });

    test("a decimal written as a number, a string or a Prisma.Decimal is found by any of them", async () => {
      const byNumber = await prisma.payment.create({
        data: { tenantId: "t1", amount: 1.5 as never },
      });
      const byDecimal = await prisma.payment.create({
        data: { tenantId: "t1", amount: new Prisma.Decimal("2.25") as never },
      });
      const byString = await prisma.payment.create({ data: { tenantId: "t1", amount: "3" } });
      await prisma.payment.create({ data: { tenantId: "t2", amount: 1.5 as never } });
      for (const form of [1.5, "1.5", new Prisma.Decimal("1.5"), new Prisma.Decimal("1.50")]) {
        expect(await ids({ amount: form })).toEqual([byNumber.id]);
      }
      for (const form of [2.25, "2.25", new Prisma.Decimal("2.25")]) {
        expect(await ids({ amount: form })).toEqual([byDecimal.id]);
      }
      for (const form of [3, "3", new Prisma.Decimal(3)]) {
        expect(await ids({ amount: { in: [form] } })).toEqual([byString.id]);
      }
      // The value a read returns, handed back to a lookup.
      const read = await prisma.payment.findUniqueOrThrow({ where: { id: byNumber.id } });
      expect(read.amount as unknown).toBeInstanceOf(Prisma.Decimal);
      expect(await ids({ amount: read.amount })).toEqual([byNumber.id]);
    });

    test("a date is found by a Date, and a lookup with a string is refused, not silently empty", async () => {
      const paidAt = new Date("2026-03-01T12:00:00.000Z");
      const created = await prisma.payment.create({
        data: { tenantId: "t1", paidAt: paidAt as never },
      });
      expect(await ids({ paidAt: new Date(paidAt.getTime()) })).toEqual([created.id]);
      const read = await prisma.payment.findUniqueOrThrow({ where: { id: created.id } });
      expect(await ids({ paidAt: read.paidAt })).toEqual([created.id]);
      await expect(ids({ paidAt: paidAt.toISOString() })).rejects.toThrow(
        /a blind index of a date field takes a valid Date, got string/,
      );
      await expect(ids({ paidAt: paidAt.toISOString() })).rejects.toBeInstanceOf(ValidationError);
    });

    test("a bigint field can have a blind index", async () => {
      const created = await prisma.payment.create({
        data: { tenantId: "t1", ref: (2n ** 70n) as never },
      });
      expect(await ids({ ref: 2n ** 70n })).toEqual([created.id]);
      expect(await ids({ ref: 2n ** 70n + 1n })).toEqual([]);
    });

    test("indexes the untyped engine wrote from a number or a Decimal are rewritten by a re-encryption of every value", async () => {
      // What the extension wrote before indexes knew their type: the JSON text of the number.
      const engine = new FieldEncryptionEngine({
        kms,
        keyId,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const model = parseSchema(schemaText).Payment as ModelDescriptor;
      const index = model.blindIndexes.amountIndex as NonNullable<
        ModelDescriptor["blindIndexes"][string]
      >;
      const created = await prisma.payment.create({
        data: { tenantId: "t1", amount: 1.5 as never },
      });
      const untyped = { bytes: index.bytes, normalize: index.normalize };
      const context = { tenantId: "t1" };
      const binding = { model: "Payment", field: "amountIndex", context };
      await db.rawSet(
        "Payment",
        created.id,
        "amountIndex",
        await engine.blindIndex(binding, untyped, 1.5),
      );
      expect(await ids({ amount: new Prisma.Decimal("1.5") })).toEqual([]);

      const done = await reencryptFields({
        engine,
        source: prismaReencryptSource({ delegate: db.prisma.payment as never, model, engine }),
        model: "Payment",
        fields: model.encrypted,
        shouldReencrypt: () => true,
      });
      expect(done.reencrypted).toBe(1);
      expect(await ids({ amount: new Prisma.Decimal("1.5") })).toEqual([created.id]);
      expect(await ids({ amount: 1.5 })).toEqual([created.id]);
    });
  });
}
