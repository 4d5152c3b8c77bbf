import { createKms, ValidationError } from "@kms/core";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { describe, expect, test } from "vitest";
import { defineModels, fieldEncryption, type ModelConfig, parseSchema } from "../src/index.ts";
import { schemaText, sqliteTest } from "./backends.ts";
import { Prisma as BrowserPrisma } from "./generated/browser.ts";
import { Prisma, PrismaClient } from "./generated/client.ts";
import { kmsSchema } from "./generated/kms/kms-schema.ts";

/** The test schema's Chart model (test/prisma/schema.prisma), as typed configuration. */
const chart = {
  encrypted: {
    ssn: { mode: "deterministic" },
    name: {},
    note: { context: { fromRow: ["recordId"] } },
    vitals: { type: "json", context: { fromRow: ["recordId"] } },
  },
  relations: { owner: "User" },
  context: { fromRow: ["tenantId"] },
} as const satisfies ModelConfig;

/** A schema.prisma text of one Chart model around `fieldLines`. */
function chartSchema(fieldLines: string, modelDoc = "/// @kms.context(tenantId)"): string {
  return `${modelDoc}
model Chart {
  id       Int    @id
  tenantId String
  recordId String
  ${fieldLines}
}`;
}

/** The message of the ValidationError `load` throws. */
function refusal(load: () => unknown): string {
  try {
    load();
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return (error as ValidationError).message;
  }
  throw new Error("expected a ValidationError, nothing was thrown");
}

const checked = (models: Readonly<Record<string, ModelConfig>>) =>
  defineModels(models, { checkAgainst: Prisma });

/**
 * Refused configurations that schema text can express too: `defineModels` checked against the
 * generated client must refuse them with exactly the message `parseSchema` gives.
 */
const refusedAsInSchemaText: [string, Readonly<Record<string, ModelConfig>>, string, string][] = [
  [
    "an unknown model context column",
    { Chart: { ...chart, context: { fromRow: ["tenant"] } } },
    chartSchema("/// @kms.encrypted\n  note String", "/// @kms.context(tenant)"),
    'model "Chart": context column "tenant" is not a column of Chart',
  ],
  [
    "an unknown field context column",
    {
      Chart: {
        ...chart,
        encrypted: { ...chart.encrypted, note: { context: { fromRow: ["recordID"] } } },
      },
    },
    chartSchema("/// @kms.encrypted @kms.context(recordID)\n  note String"),
    'model "Chart" field "note": context column "recordID" is not a column of Chart',
  ],
  [
    "an encrypted model context column",
    { Chart: { ...chart, encrypted: { ...chart.encrypted, tenantId: {} } } },
    `/// @kms.context(tenantId)
model Chart {
  id       Int    @id
  /// @kms.encrypted
  tenantId String
}`,
    'model "Chart": context column "tenantId" is itself encrypted',
  ],
  [
    "an encrypted field context column",
    {
      Chart: {
        ...chart,
        encrypted: { ...chart.encrypted, recordId: {} },
      },
    },
    `model Chart {
  id       Int    @id
  /// @kms.encrypted
  recordId String
  /// @kms.encrypted @kms.context(recordId)
  note     String
}`,
    'model "Chart": context column "recordId" is itself encrypted',
  ],
];

/** Refused configurations that schema text cannot express (its fields are the model's own). */
const refusedConfigOnly: [string, Readonly<Record<string, ModelConfig>>, string][] = [
  [
    "an unknown model",
    { Chart: chart, Chrat: {} },
    'model "Chrat": not a model of the Prisma schema',
  ],
  [
    "an unknown encrypted column",
    { Chart: { ...chart, encrypted: { ...chart.encrypted, nte: {} } } },
    'model "Chart" field "nte": not a column of Chart',
  ],
  [
    "an unknown blind index column",
    { Chart: { ...chart, blindIndexes: { nameIdx: { of: "name" } } } },
    'model "Chart" blind index "nameIdx": not a column of Chart',
  ],
  [
    "a relation to an unknown model",
    { Chart: { ...chart, relations: { owner: "Usr" } } },
    'model "Chart" relation "owner": "Usr" is not a model of the Prisma schema',
  ],
  [
    "an unknown foreign key column",
    { Chart: { ...chart, foreignKeys: { owner: ["ownerID"] } } },
    'model "Chart" relation "owner": foreign key column "ownerID" is not a column of Chart',
  ],
];

describe("defineModels checked against the generated client (checkAgainst)", () => {
  test.each(refusedAsInSchemaText)(
    "%s is refused with the message schema text gets",
    (_label, models, schema, message) => {
      const fromSchema = refusal(() => parseSchema(schema));
      expect(fromSchema).toContain(message);
      expect(refusal(() => checked(models))).toBe(fromSchema);
    },
  );

  test.each(refusedConfigOnly)("%s is refused", (_label, models, message) => {
    expect(refusal(() => checked(models))).toBe(message);
    // Unchecked, the same configuration is accepted: only the generated client knows the columns.
    expect(() => defineModels(models)).not.toThrow();
  });

  test("a correct configuration passes and gives the unchecked descriptor", () => {
    const models = { Chart: chart, Audit: {} };
    expect(checked(models)).toEqual(defineModels(models));
    // The namespace of `browser.ts` lists the same models and fields.
    expect(defineModels(models, { checkAgainst: BrowserPrisma })).toEqual(defineModels(models));
  });

  test("a model named in lower case is found under its capitalized enum", () => {
    const namespace = { ModelName: { users: "users" }, UsersScalarFieldEnum: { id: "id" } };
    expect(() =>
      defineModels({ users: { encrypted: { id: {} } } }, { checkAgainst: namespace }),
    ).not.toThrow();
    expect(
      refusal(() =>
        defineModels({ users: { encrypted: { email: {} } } }, { checkAgainst: namespace }),
      ),
    ).toBe('model "users" field "email": not a column of users');
  });

  const notNamespaces: [string, unknown, RegExp][] = [
    ["undefined", undefined, /"checkAgainst" expected the generated client's Prisma namespace/],
    [
      "a client",
      new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: ":memory:" }) }),
      /has no ModelName/,
    ],
    [
      "an object without enums",
      { ModelName: { Chart: "Chart" } },
      /has no ChartScalarFieldEnum for model "Chart"/,
    ],
    ["a ModelName with a non-string", { ModelName: { Chart: 1 } }, /ModelName holds a non-string/],
  ];
  test.each(notNamespaces)("checkAgainst: %s is refused", (_label, checkAgainst, message) => {
    const load = () =>
      defineModels({ Chart: chart }, { checkAgainst } as unknown as Parameters<
        typeof defineModels
      >[1]);
    expect(load).toThrow(ValidationError);
    expect(load).toThrow(message);
  });

  test("options that are not an object are refused", () => {
    expect(() =>
      defineModels({ Chart: chart }, "Prisma" as unknown as Parameters<typeof defineModels>[1]),
    ).toThrow(/defineModels options expected an object/);
  });
});

/**
 * Columns of the wrong type for what the configuration puts in them. `checkAgainst` reads names
 * only (the namespace lists no types), so these pass `defineModels` and are refused when the
 * extension is applied, from the types the generated client gives its columns.
 */
const wrongColumnTypes: [string, Readonly<Record<string, ModelConfig>>, string][] = [
  [
    "an encrypted enum column",
    { Invoice: { encrypted: { status: {} }, context: { fromRow: ["tenantId"] } } },
    'model "Invoice" field "status": only String and Bytes columns can be encrypted',
  ],
  [
    "an encrypted Int column",
    { Audit: { encrypted: { id: {} } } },
    'model "Audit" field "id": only String and Bytes columns can be encrypted',
  ],
  [
    "a Bytes column with text storage",
    { User: { encrypted: { avatar: {} }, context: { fromRow: ["tenantId"] } } },
    'model "User" field "avatar": storage "text" needs a String column, not Bytes',
  ],
  [
    "a String column with bytes storage",
    { User: { encrypted: { name: { storage: "bytes" } }, context: { fromRow: ["tenantId"] } } },
    'model "User" field "name": storage "bytes" needs a Bytes column, not String',
  ],
  [
    "a blind index in a Bytes column",
    {
      User: {
        encrypted: { name: {} },
        blindIndexes: { avatar: { of: "name" } },
        context: { fromRow: ["tenantId"] },
      },
    },
    'model "User" field "avatar": a blind index column must be a String',
  ],
];

describe("foreign keys", () => {
  test("schema text reads them from @relation(fields: […]) on the side that holds them", () => {
    const parsed = parseSchema(`model Tenant {
  id       String    @id
  invoices Invoice[]
}

/// @kms.context(tenantId)
model Invoice {
  id       Int    @id
  tenantId String
  region   String
  tenant   Tenant @relation("billing", fields: [tenantId, region], references: [id, region]) // the owner
  /// @kms.encrypted
  memo     String
}`);
    expect(parsed.Invoice?.foreignKeys).toEqual({ tenant: ["tenantId", "region"] });
    expect(parsed.Tenant?.foreignKeys).toEqual({});
  });

  test("the descriptor works out once what writes derive from the model alone", () => {
    const parsed = parseSchema(schemaText);
    // Each encrypted field's blind index columns, for writes and lookups of the field.
    expect(parsed.User?.blindIndexNames).toEqual(["phoneIndex"]);
    expect(parsed.User?.indexesOf.phone).toEqual([
      ["phoneIndex", { of: "phone", bytes: 12, normalize: ["trim", "lowercase"], type: "string" }],
    ]);
    expect(parsed.User?.indexesOf.name).toEqual([]);
    // The foreign keys holding a column values are bound to, with the fields bound to it: a
    // relation write through one (`tenant: { connect }`) would rebind them.
    expect(parsed.Invoice?.boundForeignKeys).toEqual([
      { relation: "tenant", columns: ["tenantId"], fields: ["memo", "in", "equals"] },
    ]);
    expect(parsed.InvoiceLine?.boundForeignKeys).toEqual([
      { relation: "invoice", columns: ["tenantId"], fields: ["text"] },
    ]);
    // A foreign key of columns no value is bound to, and a model without one, list none.
    expect(parsed.Chart?.boundForeignKeys).toEqual([]);
    expect(parsed.Tenant?.boundForeignKeys).toEqual([]);
    expect(Object.isFrozen(parsed.Invoice?.boundForeignKeys[0])).toBe(true);
    expect(Object.isFrozen(parsed.User?.indexesOf.phone)).toBe(true);
  });

  test("schema text names each relation as Prisma does, so each side finds its pair", () => {
    const parsed = parseSchema(`model Tenant {
  id       String    @id
  invoices Invoice[]
  watching Invoice[] @relation("Watchers")
  billed   Invoice[] @relation(name: "Billing")
}

/// @kms.context(tenantId)
model Invoice {
  id         Int      @id
  tenantId   String
  tenant     Tenant   @relation(fields: [tenantId], references: [id])
  billedToId String?
  billedTo   Tenant?  @relation(fields: [billedToId], references: [id], name: "Billing")
  watchers   Tenant[] @relation("Watchers")
  parentId   Int?
  parent     Invoice? @relation("Revisions", fields: [parentId], references: [id])
  revisions  Invoice[] @relation("Revisions")
  /// @kms.encrypted
  memo       String
}`);
    expect(parsed.Tenant?.links).toEqual({
      invoices: "InvoiceToTenant",
      watching: "Watchers",
      billed: "Billing",
    });
    expect(parsed.Invoice?.links).toEqual({
      tenant: "InvoiceToTenant",
      billedTo: "Billing",
      watchers: "Watchers",
      parent: "Revisions",
      revisions: "Revisions",
    });
    // The generator reads Prisma's own names: the test schema's agree with schema text's.
    const fromText = parseSchema(schemaText);
    for (const [name, model] of Object.entries(kmsSchema)) {
      expect(model.links, name).toEqual(fromText[name]?.links);
    }
    expect(kmsSchema.Tenant?.links).toEqual({
      invoices: "InvoiceToTenant",
      watching: "InvoiceWatchers",
    });
  });

  const invalid: [string, ModelConfig, string][] = [
    [
      "a link of a relation not in relations",
      { links: { owner: "ChartToUser" } },
      'model "Chart" relation "owner": a link needs the relation in "relations"',
    ],
    [
      "a link that is not a name",
      { relations: { owner: "User" }, links: { owner: "" } },
      'model "Chart" relation "owner": links must name relations',
    ],
    [
      "a foreign key of a relation not in relations",
      { foreignKeys: { owner: ["ownerId"] } },
      'model "Chart" relation "owner": a foreign key needs the relation in "relations"',
    ],
    [
      "a foreign key that is not a list of columns",
      { relations: { owner: "User" }, foreignKeys: { owner: "ownerId" as unknown as string[] } },
      'model "Chart" relation "owner": foreignKeys must be a list of non-empty column or key names',
    ],
  ];
  test.each(invalid)("defineModels refuses %s", (_label, config, message) => {
    expect(refusal(() => defineModels({ Chart: config }))).toBe(message);
  });
});

describe("column types", () => {
  test("schema text refuses columns of other types, lists included, with the same messages", () => {
    const enumSchema = `enum InvoiceStatus {
  OPEN
  PAID
}

/// @kms.context(tenantId)
model Invoice {
  id       Int           @id
  tenantId String
  /// @kms.encrypted
  status   InvoiceStatus
}`;
    expect(refusal(() => parseSchema(enumSchema))).toBe(wrongColumnTypes[0]?.[2]);
    expect(refusal(() => parseSchema(chartSchema("/// @kms.encrypted\n  tags String[]")))).toBe(
      'model "Chart" field "tags": only String and Bytes columns can be encrypted',
    );
    expect(
      refusal(() =>
        parseSchema(
          chartSchema(
            "/// @kms.encrypted\n  note String\n  /// @kms.blindIndex(of: note)\n  noteIdx String[]",
          ),
        ),
      ),
    ).toBe('model "Chart" field "noteIdx": a blind index column must be a String');
  });

  /** The refusal of applying the extension with `schema`, checked to come before any query. */
  async function refusedWhenApplied(schema: ReturnType<typeof defineModels>): Promise<string> {
    let queries = 0;
    const base = new PrismaClient({
      adapter: new PrismaBetterSqlite3({ url: "file:/nonexistent/kms-prisma/never.db" }),
    }).$extends({
      query: {
        $allOperations({ args, query }) {
          queries += 1;
          return query(args);
        },
      },
    });
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    const message = refusal(() =>
      base.$extends(fieldEncryption({ kms, keyId: keyMetadata.keyId, schema })),
    );
    expect(queries).toBe(0);
    return message;
  }

  test.each(wrongColumnTypes)(
    "%s passes checkAgainst and is refused when the extension is applied, before any query",
    async (_label, models, message) => {
      expect(await refusedWhenApplied(checked(models))).toBe(message);
    },
  );

  // Unchecked, `defineModels` cannot see the columns; the client's field references can. A
  // misspelt encrypted field would otherwise be written in plaintext, and a relation field holds
  // no value to encrypt.
  const unknownColumns: (readonly [string, Readonly<Record<string, ModelConfig>>, string])[] = [
    [
      "a relation field as an encrypted field",
      { Chart: { ...chart, encrypted: { ...chart.encrypted, owner: {} } } },
      'model "Chart" field "owner": not a column of Chart',
    ],
    ...refusedConfigOnly.filter(([, , message]) => message.includes("not a column")),
    ...refusedAsInSchemaText
      .filter(([, , , message]) => message.includes("not a column"))
      .map(([label, models, , message]) => [label, models, message] as const),
  ];
  test.each(unknownColumns)(
    "%s, unchecked by defineModels, is refused when the extension is applied",
    async (_label, models, message) => {
      expect(() => defineModels(models)).not.toThrow();
      expect(await refusedWhenApplied(defineModels(models))).toBe(message);
    },
  );

  // A write binds `String(value)` of a context column; a read binds the row's value as the
  // client returns it. A Decimal comes back as a Prisma.Decimal ("1.50" as 1.5), which no row
  // context holds, so every read of a row written under one failed; a Boolean, a DateTime or
  // Bytes is no text at all. (Int, BigInt, Float and enums round-trip: context-types.behaviour.)
  const contextColumnTypes: (readonly [string, string])[] = [
    ["amount", "Decimal"],
    ["takenAt", "DateTime"],
    ["flagged", "Boolean"],
  ];
  test.each(contextColumnTypes)(
    "a %s context column (%s) is refused when the extension is applied and when schema text is loaded, naming column and type",
    async (column, type) => {
      const message = `model "Reading" context column "${column}": a context column must be String, Int, BigInt, Float or an enum, not ${type}`;
      const modelWide = defineModels({
        Reading: { encrypted: { value: {} }, context: { fromRow: [column] } },
      });
      expect(await refusedWhenApplied(modelWide)).toMatch(new RegExp(`^${message}: `));
      // A field's own context columns are context columns too.
      const fieldOwn = defineModels({
        Reading: {
          encrypted: { value: { context: { fromRow: [column] } } },
          context: { fromRow: ["rank"] },
        },
      });
      expect(await refusedWhenApplied(fieldOwn)).toMatch(new RegExp(`^${message}: `));
      const text = schemaText.replace(
        "/// @kms.context(rank, serial, weight, status)",
        `/// @kms.context(${column})`,
      );
      expect(text).not.toBe(schemaText);
      expect(refusal(() => parseSchema(text))).toMatch(new RegExp(`^${message}: `));
    },
  );

  test("a list column is refused as a context column", () => {
    const text = chartSchema(
      "/// @kms.encrypted\n  note String\n  tags String[]",
      "/// @kms.context(tags)",
    );
    expect(refusal(() => parseSchema(text))).toMatch(
      /^model "Chart" context column "tags": a context column must be String, Int, BigInt, Float or an enum, not a list \(String\[\]\)/,
    );
  });

  // A composite type (`type X {}`, MongoDB) is neither a model nor a scalar, as an enum is; its
  // value is an object, no text a row context could hold.
  test("a composite type column is refused as a context column; an enum one is not", () => {
    const withTypes = (column: string) => `${chartSchema(
      `/// @kms.encrypted\n  note String\n  place Place\n  status Status`,
      `/// @kms.context(${column})`,
    )}
type Place {
  city String
}
enum Status {
  OPEN
}`;
    expect(refusal(() => parseSchema(withTypes("place")))).toMatch(
      /^model "Chart" context column "place": a context column must be String, Int, BigInt, Float or an enum, not Place: /,
    );
    expect(parseSchema(withTypes("status")).Chart?.context.fromRow).toEqual(["status"]);
  });
});

describe("descriptors under their own names", () => {
  // Values are bound to the descriptor's `name`: registered under another model's key, one
  // descriptor would bind two models' values under one name, and a value copied from one
  // model's column into the other's would decrypt there.
  test("a descriptor under another model's name is refused when the extension is made", async () => {
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    const models = parseSchema(schemaText);
    const made = (schema: Readonly<Record<string, unknown>>) => () =>
      fieldEncryption({ kms, keyId: keyMetadata.keyId, schema: schema as typeof models });
    expect(refusal(made({ ...models, Post: models.Memo }))).toBe(
      '"schema": the descriptor under "Post" is model "Memo": give each model its own descriptor, under its own name',
    );
    expect(refusal(made({ ...models, Post: { ...models.Post, name: 1 } }))).toMatch(
      /the descriptor under "Post" is model without a name/,
    );
    expect(made(models)).not.toThrow();
    expect(made(kmsSchema)).not.toThrow();
  });
});

describe("checked at startup, on SQLite", () => {
  // Each refusal comes while the extended client is built, before any query: the base client
  // counts every query that reaches it, and its database file does not even exist.
  test.each([
    ...refusedAsInSchemaText.map(([label, models, , message]) => [label, models, message] as const),
    ...refusedConfigOnly,
  ])("%s: refused before any query runs", async (_label, models, message) => {
    let queries = 0;
    const base = new PrismaClient({
      adapter: new PrismaBetterSqlite3({ url: "file:/nonexistent/kms-prisma/never.db" }),
    }).$extends({
      query: {
        $allOperations({ args, query }) {
          queries += 1;
          return query(args);
        },
      },
    });
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    expect(() =>
      base.$extends(fieldEncryption({ kms, keyId: keyMetadata.keyId, schema: checked(models) })),
    ).toThrow(message);
    expect(queries).toBe(0);
  });

  sqliteTest(
    "a checked configuration encrypts and decrypts like the schema text",
    async ({ db, kms, keyId }) => {
      const prisma = db.prisma.$extends(
        fieldEncryption({
          kms,
          keyId,
          schema: defineModels({ Chart: chart }, { checkAgainst: Prisma }),
        }),
      );
      const created = await prisma.chart.create({
        data: {
          tenantId: "t1",
          recordId: "r1",
          ssn: "123-45-6789",
          note: "allergic to penicillin",
          vitals: { bp: "120/80" },
        },
      });
      const stored = await db.raw("Chart", created.id);
      expect(stored.ssn).toMatch(/^kms1:/);
      expect(stored.note).toMatch(/^kms1:/);
      expect(stored.vitals).toMatch(/^kms1:/);
      const read = await prisma.chart.findUniqueOrThrow({
        where: { tenantId_ssn: { tenantId: "t1", ssn: "123-45-6789" } },
      });
      expect(read.note).toBe("allergic to penicillin");
      expect(read.vitals).toEqual({ bp: "120/80" });
    },
  );
});
