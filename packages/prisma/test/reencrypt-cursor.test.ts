import { FieldEncryptionEngine, type Kms, reencryptFields, ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  fieldEncryption,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { sameCursor } from "../src/reencrypt-source.ts";
import { schemaText, type TestDatabase, sqliteTest as test } from "./backends.ts";

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

const draft = parseSchema(schemaText).Draft;
if (draft === undefined) throw new Error("the test schema has no Draft");

function engineOn(db: TestDatabase, kms: Kms, keyId: string): FieldEncryptionEngine {
  return new FieldEncryptionEngine({
    kms,
    keyId,
    dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
    legacyPlaintext: true,
  });
}

/**
 * Drafts page by `threadId` (`String?`) in these tests: unique among the rows that have one, but
 * null in the others, which paging by "greater than the last row's" never reaches.
 */
describe("prismaReencryptSource over a cursor column that may be null", () => {
  /** Three drafts of legacy plaintext, one of them without a thread. */
  async function seed(db: TestDatabase) {
    await db.prisma.draft.createMany({
      data: [
        { id: 1, tenantId: "t1", threadId: null, body: "first" },
        { id: 2, tenantId: "t1", threadId: "a", body: "second" },
        { id: 3, tenantId: "t1", threadId: "b", body: "third" },
      ],
    });
  }
  const refused = (field: string, type: string) =>
    new RegExp(
      `^Draft\\.${field} is optional \\(${type}\\?\\): a row whose ${field} is null is never after the last row's, .*give "cursorField" a required unique column \\(the id\\)$`,
    );

  test("is refused when the source is made, naming the model and the field", async ({
    db,
    kms,
    keyId,
  }) => {
    const engine = engineOn(db, kms, keyId);
    for (const [cursorField, type] of [
      ["threadId", "String"],
      ["authorId", "Int"],
    ] as const) {
      const make = () =>
        prismaReencryptSource({
          delegate: db.prisma.draft as never,
          model: draft,
          engine,
          cursorField,
          fields: ["body"],
        });
      expect(make).toThrow(ValidationError);
      expect(make).toThrow(refused(cursorField, type));
    }
  });

  test("stops the job before it moves any row, where the client's schema is out of reach", async ({
    db,
    kms,
    keyId,
  }) => {
    const engine = engineOn(db, kms, keyId);
    const body = draft.encrypted.body;
    if (body === undefined) throw new Error("Draft.body is not encrypted");
    await seed(db);
    // A delegate of its own (no `$parent`): the source cannot read the schema, so it checks rows.
    // SQLite sorts nulls first, where the rows show it; before the check, batches of one failed
    // on Prisma's `gt: null`, and batches of ten moved draft 1 only because it came first (where
    // nulls sort last, PostgreSQL, a run reported success with it left in clear).
    const bare = {
      findMany: (args: Record<string, unknown>) => db.prisma.draft.findMany(args as never),
      updateMany: (args: Record<string, unknown>) => db.prisma.draft.updateMany(args as never),
    };
    for (const batchSize of [1, 10]) {
      const error = await reencryptFields({
        engine,
        source: prismaReencryptSource({
          delegate: bare,
          model: draft,
          engine,
          cursorField: "threadId",
          fields: ["body"],
          countRows: false,
        }),
        model: "Draft",
        fields: { body: body },
        batchSize,
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toBe(
        `Draft: a row's threadId is null, so the job cannot page by it (it would never read the rows whose threadId is null, and leave their values as they are); give "cursorField" a required unique column (the id)`,
      );
    }
    for (const [id, body] of [
      [1, "first"],
      [2, "second"],
      [3, "third"],
    ] as const) {
      expect((await db.raw("Draft", id)).body).toBe(body);
    }
  });
});

describe("prismaReencryptSource over a cursorField that is no column", () => {
  test.for([
    ["nope", "is no field of the model"],
    ["author", "is a relation, not a column"],
    ["revisions", "is a relation, not a column"],
  ] as const)("%s is refused: it %s", async ([cursorField, why], { db, kms, keyId }) => {
    const engine = engineOn(db, kms, keyId);
    const make = () =>
      prismaReencryptSource({
        delegate: db.prisma.draft as never,
        model: draft,
        engine,
        cursorField,
        fields: ["body"],
      });
    expect(make).toThrow(ValidationError);
    expect(make).toThrow(
      `Draft.${cursorField} ${why}, so the job cannot page by it; give "cursorField" a required unique column (the id)`,
    );
  });

  test("a relation is refused from the descriptor, with a delegate whose schema is out of reach", async ({
    db,
    kms,
    keyId,
  }) => {
    const engine = engineOn(db, kms, keyId);
    const bare = { findMany: async () => [], updateMany: async () => ({ count: 0 }) };
    expect(() =>
      prismaReencryptSource({
        delegate: bare,
        model: draft,
        engine,
        cursorField: "author",
        fields: ["body"],
        countRows: false,
      }),
    ).toThrow(/^Draft\.author is a relation, not a column/);
  });
});
