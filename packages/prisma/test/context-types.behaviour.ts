import { createKms, FieldEncryptionEngine, type Kms, reencryptFields } from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";

const PREFIX = "kms1:";

/**
 * Context columns of every type the extension accepts (Int, BigInt, Float, an enum; String is
 * every other model's): a value written through the extension, read back through it, and moved
 * by the re-encryption job is bound to the same text each time.
 */
export function describeContextTypes(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`context column types on ${name}`, () => {
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

    const reading = parseSchema(schemaText).Reading as ModelDescriptor;
    // Values whose text a careless binding would change: the ends of each range, a double
    // with no short decimal form, exponent forms (1e21 and 5e-7 print as such), negative zero.
    const rows = [
      { rank: 7, serial: 2n ** 63n - 1n, weight: 0.1 + 0.2, status: "OPEN" },
      { rank: -2147483648, serial: -(2n ** 63n), weight: 1e21, status: "PAID" },
      { rank: 2147483647, serial: 5n, weight: 5e-7, status: "OPEN" },
      { rank: 0, serial: 0n, weight: -0, status: "PAID" },
      // (Prisma 7.10 itself stores 1.7976931348623155e308 as Infinity on SQLite.)
      { rank: 1, serial: 1n, weight: 1.5e300, status: "OPEN" },
      { rank: 2, serial: 2n, weight: -Number.MIN_VALUE, status: "OPEN" },
    ] as const;

    test("Int, BigInt, Float and enum columns bind the text a read of the row and the job give back", async () => {
      const engine = new FieldEncryptionEngine({
        kms,
        keyId,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        legacyPlaintext: true,
      });
      const prisma = db.prisma.$extends(
        fieldEncryption({ kms, keyId, schema: schemaText, engine }),
      );
      const written: number[] = [];
      for (const [i, row] of rows.entries()) {
        // A BigInt column takes a number too; it reads back as a bigint of the same text.
        const data = i === 2 ? { ...row, serial: Number(row.serial) } : row;
        written.push((await prisma.reading.create({ data: { ...data, value: `secret ${i}` } })).id);
      }
      for (const id of written) {
        expect(String((await db.raw("Reading", id)).value).startsWith(PREFIX)).toBe(true);
      }
      const read = async () =>
        (await prisma.reading.findMany({ orderBy: { id: "asc" } })).map((r) => r.value);
      expect(await read()).toEqual(rows.map((_, i) => `secret ${i}`));
      // Legacy plaintext rows of the same values, which the job seals under what it reads.
      for (const [i, row] of rows.entries()) {
        await db.prisma.reading.create({ data: { ...row, value: `legacy ${i}` } });
      }
      const source = () =>
        prismaReencryptSource({ delegate: db.prisma.reading as never, model: reading, engine });
      expect(
        await reencryptFields({
          engine,
          source: source(),
          model: "Reading",
          fields: reading.encrypted,
        }),
      ).toMatchObject({ scanned: rows.length * 2, reencrypted: rows.length, conflicts: 0 });
      const all = [...rows.map((_, i) => `secret ${i}`), ...rows.map((_, i) => `legacy ${i}`)];
      expect(await read()).toEqual(all);
      // Every value again, those the extension wrote too: the job opens them under its binding.
      const moved = await reencryptFields({
        engine,
        source: source(),
        model: "Reading",
        fields: reading.encrypted,
        shouldReencrypt: () => true,
      });
      expect(moved).toMatchObject({ reencrypted: rows.length * 2, conflicts: 0 });
      expect(await read()).toEqual(all);
      // A row is bound to its own columns: with another rank its value does not open.
      const [first, second] = written as [number, number];
      await db.rawSet("Reading", second, "value", (await db.raw("Reading", first)).value);
      await expect(prisma.reading.findUnique({ where: { id: second } })).rejects.toThrow(
        "field value is not valid ciphertext",
      );
    });
  });
}
