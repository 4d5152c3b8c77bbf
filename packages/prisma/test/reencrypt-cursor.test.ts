import { FieldEncryptionEngine, reencryptFields, ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  fieldEncryption,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { sameCursor } from "../src/reencrypt-source.ts";
import { schemaText, sqliteTest as test } from "./backends.ts";

const line = parseSchema(schemaText).InvoiceLine;
if (line === undefined) throw new Error("the test schema has no InvoiceLine");

/**
 * The job pages by `cursorField` and writes each row by it. InvoiceLine's id is (tenantId,
 * number): `number` alone repeats across tenants, as a careless choice of cursor would.
 */
describe("prismaReencryptSource over a cursor column that is not unique", () => {
  test("is refused before any row moves, rather than write one tenant's values into another's row or skip rows", async ({
    db,
    kms,
    keyId,
  }) => {
    const engine = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      legacyPlaintext: true,
    });
    await db.prisma.tenant.createMany({
      data: [
        { id: "t1", name: "one" },
        { id: "t2", name: "two" },
      ],
    });
    await db.prisma.invoice.create({ data: { id: 1, tenantId: "t1" } });
    await db.prisma.invoice.create({ data: { id: 2, tenantId: "t2" } });
    // Legacy plaintext, equal in both tenants' line 1. Before the check, a run in batches of
    // one reported { scanned: 3 } over these five rows: it wrote t1's line 1 into t2's (which
    // then failed to decrypt) and never read t1's line 2 (left in clear).
    const lines = [
      { tenantId: "t1", number: 1, invoiceId: 1, text: "same" },
      { tenantId: "t2", number: 1, invoiceId: 2, text: "same" },
      { tenantId: "t2", number: 2, invoiceId: 2, text: "a" },
      { tenantId: "t1", number: 2, invoiceId: 1, text: "b" },
      { tenantId: "t1", number: 3, invoiceId: 1, text: "c" },
    ];
    await db.prisma.invoiceLine.createMany({ data: lines });
    const run = (batchSize: number) =>
      reencryptFields({
        engine,
        source: prismaReencryptSource({
          delegate: db.prisma.invoiceLine as never,
          model: line,
          engine,
          cursorField: "number",
        }),
        model: "InvoiceLine",
        fields: line.encrypted,
        batchSize,
      });
    const refused = /^InvoiceLine: two rows hold the same number, so the job cannot page by it/;
    for (const batchSize of [1, 3, 10]) {
      const error = await run(batchSize).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(refused);
    }
    // Nothing moved: every line still holds its legacy value, readable in its own tenant.
    const order = [{ tenantId: "asc" as const }, { number: "asc" as const }];
    const expected = ["same", "b", "c", "same", "a"];
    expect((await db.prisma.invoiceLine.findMany({ orderBy: order })).map((l) => l.text)).toEqual(
      expected,
    );
    const prisma = db.prisma.$extends(
      fieldEncryption({ kms, keyId, schema: schemaText, legacyPlaintext: true }),
    );
    expect((await prisma.invoiceLine.findMany({ orderBy: order })).map((l) => l.text)).toEqual(
      expected,
    );
  });
});

describe("two cursor values are one", () => {
  it.each([
    ["equal ids", 7, 7, true],
    ["other ids", 7, 8, false],
    ["equal strings", "a", "a", true],
    ["a number and its bigint", 7, 7n, true],
    ["Dates of one millisecond", new Date(1_700_000_000_001), new Date(1_700_000_000_001), true],
    // String() of a Date keeps whole seconds: rows made within one second are still two.
    [
      "Dates one millisecond apart",
      new Date(1_700_000_000_001),
      new Date(1_700_000_000_002),
      false,
    ],
    ["equal bytes", Uint8Array.of(1, 2), Uint8Array.of(1, 2), true],
    ["other bytes", Uint8Array.of(1, 2), Uint8Array.of(1, 3), false],
  ])("%s", (_, a, b, same) => {
    expect(sameCursor(a, b)).toBe(same);
  });
});
