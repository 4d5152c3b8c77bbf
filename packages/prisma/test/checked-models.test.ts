import { createKms, ValidationError } from "@kms/core";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { describe, expect, test } from "vitest";
import { defineModels, fieldEncryption, type ModelConfig, parseSchema } from "../src/index.ts";
import { sqliteTest } from "./backends.ts";
import { Prisma as BrowserPrisma } from "./generated/browser.ts";
import { Prisma, PrismaClient } from "./generated/client.ts";

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
