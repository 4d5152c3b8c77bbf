import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createKms, InvalidCiphertextError, ValidationError } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { PrismaPg } from "@prisma/adapter-pg";
import { beforeAll, describe, expect, test } from "vitest";
import {
  defineModels,
  fieldEncryption,
  type ModelConfig,
  type NativeTypesDescriptor,
  parseSchema,
  type SchemaDescriptor,
} from "../src/index.ts";
import { generateSchema, type SchemaDb, withPostgresSchema } from "./generated-schemas.ts";

/**
 * A `@db.Uuid` context column reads a UUID back in PostgreSQL's own spelling (lower case, with
 * hyphens): a value written in another is bound to text the row never reads back. Writes, and
 * lookups sealed under such a value, are refused unless it is given as the database reads it.
 */

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "generated", "native-types-writes");

/** Models on a datasource named `pg`, whose native type attributes are `@pg.…`. */
const SCHEMA = `datasource pg {
  provider = "postgresql"
}

generator client {
  provider            = "prisma-client"
  output              = "./client"
  moduleFormat        = "esm"
  runtime             = "nodejs"
  importFileExtension = "ts"
}

generator kms {
  provider = "node ../../../src/generator.ts"
  output   = "./kms"
}

/// @kms.context(tenantId)
model Tenant {
  tenantId String    @id @pg.Uuid
  accounts Account[]
}

/// @kms.context(tenantId)
model Account {
  id       Int     @id @default(autoincrement())
  tenantId String  @pg.Uuid
  tenant   Tenant  @relation(fields: [tenantId], references: [tenantId])
  /// @kms.encrypted
  note     String
  /// @kms.encrypted(deterministic)
  email    String?
}

/// @kms.context(tenantId)
model Chart {
  id       Int    @id @default(autoincrement())
  tenantId String
  recordId String @pg.Uuid
  /// @kms.encrypted @kms.context(recordId)
  entry    String
}

model KmsDataKey {
  id                String @id
  kmsKeyId          String
  wrappedKey        Bytes
  encryptionContext String
  purpose           String
  createdAt         BigInt
}
`;

const TABLES = `
CREATE TABLE "KmsDataKey" ("id" TEXT PRIMARY KEY, "kmsKeyId" TEXT NOT NULL, "wrappedKey" BYTEA NOT NULL,
  "encryptionContext" TEXT NOT NULL, "purpose" TEXT NOT NULL, "createdAt" BIGINT NOT NULL);
CREATE TABLE "Tenant" ("tenantId" UUID PRIMARY KEY);
CREATE TABLE "Account" ("id" SERIAL PRIMARY KEY, "tenantId" UUID NOT NULL REFERENCES "Tenant" ("tenantId"),
  "note" TEXT NOT NULL, "email" TEXT);
CREATE TABLE "Chart" ("id" SERIAL PRIMARY KEY, "tenantId" TEXT NOT NULL, "recordId" UUID NOT NULL,
  "entry" TEXT NOT NULL);
`;

/** One UUID in the spellings PostgreSQL takes; it reads every one back as the first. */
const CANONICAL = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
const SPELLINGS = [
  "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
  "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
  "a0eebc999c0b4ef8bb6d6bb9bd380a11",
] as const;

/** What the tests use of the generated client. */
interface Client {
  $extends(extension: unknown): Client;
  $disconnect(): Promise<void>;
  tenant: Delegate;
  account: Delegate;
  chart: Delegate;
}
interface Delegate {
  create(args: unknown): Promise<Record<string, unknown>>;
  update(args: unknown): Promise<Record<string, unknown>>;
  updateMany(args: unknown): Promise<unknown>;
  deleteMany(args?: unknown): Promise<unknown>;
  findMany(args?: unknown): Promise<Record<string, unknown>[]>;
  findFirst(args?: unknown): Promise<Record<string, unknown> | null>;
}
type ClientClass = new (options: { adapter: unknown }) => Client;

let PgClient: ClientClass;
/** The generator's module for SCHEMA. */
let generated: SchemaDescriptor;

beforeAll(async () => {
  generateSchema(out, SCHEMA);
  PgClient = (
    (await import(pathToFileURL(join(out, "client", "client.ts")).href)) as {
      PrismaClient: ClientClass;
    }
  ).PrismaClient;
  generated = (
    (await import(pathToFileURL(join(out, "kms", "kms-schema.ts")).href)) as {
      kmsSchema: SchemaDescriptor;
    }
  ).kmsSchema;
}, 60_000);

/** The generated descriptor without its native types, as an older generator's module gives it. */
function withoutNativeTypes(schema: SchemaDescriptor): SchemaDescriptor {
  return defineModels(
    Object.fromEntries(
      Object.entries(schema).map(([name, model]) => [
        name,
        {
          encrypted: model.encrypted,
          blindIndexes: model.blindIndexes,
          relations: model.relations,
          foreignKeys: model.foreignKeys,
          context: model.context,
        },
      ]),
    ),
  );
}

const { url, skipReason } = databaseTarget("postgres");

describe.skipIf(skipReason !== undefined)("@db.Uuid context values on PostgreSQL", () => {
  /** Runs `body` on a fresh schema with the tables, a client on it, and the raw driver. */
  const withDb = (body: (db: SchemaDb<Client>) => Promise<void>): Promise<void> =>
    withPostgresSchema(
      {
        url: url as string,
        prefix: "kms_uuid",
        tables: TABLES,
        makeClient: (adapter) => new PgClient({ adapter }),
      },
      body,
    );

  test("what the refusal prevents: a UUID written in another spelling reads back in PostgreSQL's, and the row does not decrypt", () =>
    withDb(async (db) => {
      // Unchecked: a descriptor without native types (an older generator's module).
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: withoutNativeTypes(generated) }),
      );
      for (const spelling of SPELLINGS) {
        await db.client.tenant.create({ data: { tenantId: spelling } });
        await prisma.account.create({
          data: { tenantId: spelling, note: "secret" },
          select: { id: true },
        });
        const [tenant] = await db.raw("Tenant");
        expect(tenant?.tenantId).toBe(CANONICAL);
        const [row] = await db.raw("Account");
        expect(row?.tenantId).toBe(CANONICAL);
        await expect(prisma.account.findFirst()).rejects.toThrow(InvalidCiphertextError);
        await db.client.account.deleteMany();
        await db.client.tenant.deleteMany();
      }
    }));

  /** The refusal of `value` (any spelling of CANONICAL) in `Model.column`. */
  const refusal = (model: string, column: string, value: string) =>
    new RegExp(
      `^${model}\\.${column} is @pg\\.Uuid, which PostgreSQL reads back in lower case with hyphens \\("${CANONICAL}"\\), not as "${value.replace(/[{}]/g, "\\$&")}" was given: .*; give ${column} as "${CANONICAL}"$`,
    );

  test("a write refuses a context value in another spelling than PostgreSQL reads back, and writes nothing", () =>
    withDb(async (db) => {
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: generated }),
      );
      // A row that seals nothing under the column takes any spelling.
      await prisma.tenant.create({ data: { tenantId: SPELLINGS[0] } });
      for (const spelling of SPELLINGS) {
        const write = prisma.account.create({ data: { tenantId: spelling, note: "secret" } });
        await expect(write).rejects.toThrow(ValidationError);
        await expect(
          prisma.account.create({ data: { tenantId: spelling, note: "secret" } }),
        ).rejects.toThrow(refusal("Account", "tenantId", spelling));
      }
      await expect(
        prisma.account.create({ data: { tenantId: "t1", note: "secret" } }),
      ).rejects.toThrow(
        /^Account\.tenantId is @pg\.Uuid, which PostgreSQL reads back in lower case with hyphens: its value is not a UUID; give tenantId as a UUID, in that spelling$/,
      );
      expect(await db.raw("Account")).toEqual([]);
      // The field's own context column (`@kms.context(recordId)` on the field).
      await expect(
        prisma.chart.create({ data: { tenantId: "t1", recordId: SPELLINGS[0], entry: "x" } }),
      ).rejects.toThrow(refusal("Chart", "recordId", SPELLINGS[0]));
      expect(await db.raw("Chart")).toEqual([]);
      // A row created through its parent takes the parent's value.
      await expect(
        prisma.tenant.create({
          data: { tenantId: SPELLINGS[1], accounts: { create: { note: "secret" } } },
        }),
      ).rejects.toThrow(refusal("Account", "tenantId", SPELLINGS[1]));
      expect(await db.raw("Account")).toEqual([]);
    }));

  test("the spelling PostgreSQL reads back is written, looked up and decrypted", () =>
    withDb(async (db) => {
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: generated }),
      );
      await prisma.tenant.create({
        data: { tenantId: CANONICAL, accounts: { create: { note: "first", email: "a@x.test" } } },
      });
      await prisma.account.create({
        data: { tenantId: CANONICAL, note: "second", email: "b@x.test" },
      });
      await prisma.chart.create({ data: { tenantId: "t1", recordId: CANONICAL, entry: "x" } });
      expect(
        await prisma.account.findFirst({ where: { tenantId: CANONICAL, email: "b@x.test" } }),
      ).toMatchObject({ note: "second" });
      expect(await prisma.chart.findFirst()).toMatchObject({ recordId: CANONICAL, entry: "x" });
      // A where that seals nothing under the column takes any spelling: the database compares
      // UUIDs, and the rows decrypt under the spelling they read back in.
      expect(
        await prisma.account.findMany({
          where: { tenantId: SPELLINGS[0] },
          orderBy: { id: "asc" },
        }),
      ).toMatchObject([{ note: "first" }, { note: "second" }]);
    }));

  test("a lookup or update sealed under a context value in another spelling is refused", () =>
    withDb(async (db) => {
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: generated }),
      );
      await prisma.tenant.create({ data: { tenantId: CANONICAL } });
      const { id } = await prisma.account.create({
        data: { tenantId: CANONICAL, note: "first", email: "a@x.test" },
      });
      for (const spelling of SPELLINGS) {
        // Sealed under the value as given, the operand would match no row.
        await expect(
          prisma.account.findFirst({ where: { tenantId: spelling, email: "a@x.test" } }),
        ).rejects.toThrow(refusal("Account", "tenantId", spelling));
        await expect(
          prisma.account.findMany({
            where: { tenantId: { equals: spelling }, email: { in: ["a@x.test"] } },
          }),
        ).rejects.toThrow(refusal("Account", "tenantId", spelling));
        // The update would match the row and seal the new value under the value as given.
        await expect(
          prisma.account.update({ where: { id, tenantId: spelling }, data: { note: "second" } }),
        ).rejects.toThrow(refusal("Account", "tenantId", spelling));
        await expect(
          prisma.account.updateMany({ where: { tenantId: spelling }, data: { note: "second" } }),
        ).rejects.toThrow(refusal("Account", "tenantId", spelling));
      }
      // Nothing changed; an update that reads the column from its row takes its spelling.
      expect(await prisma.account.findFirst({ where: { id } })).toMatchObject({ note: "first" });
      await prisma.account.update({ where: { id }, data: { note: "second" } });
      expect(await prisma.account.findFirst({ where: { id } })).toMatchObject({ note: "second" });
    }));

  test("SQL Server's uniqueidentifier (read back in capitals): a descriptor saying so refuses a lowercase value and takes the capitals", () =>
    withDb(async (db) => {
      // Chart.tenantId is text here, which keeps any spelling: it stands in for SQL Server's
      // column, which reads every spelling back in capitals.
      const chart: ModelConfig = {
        encrypted: { entry: {} },
        context: { fromRow: ["tenantId"] },
        nativeTypes: { provider: "sqlserver", columns: { tenantId: "UniqueIdentifier" } },
      };
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: defineModels({ Chart: chart }) }),
      );
      const upper = CANONICAL.toUpperCase();
      await expect(
        prisma.chart.create({ data: { tenantId: CANONICAL, recordId: CANONICAL, entry: "x" } }),
      ).rejects.toThrow(
        new RegExp(
          `^Chart\\.tenantId is @db\\.UniqueIdentifier, which SQL Server reads back in capitals with hyphens \\("${upper}"\\), not as "${CANONICAL}" was given: .*; give tenantId as "${upper}"$`,
        ),
      );
      expect(await db.raw("Chart")).toEqual([]);
      await prisma.chart.create({ data: { tenantId: upper, recordId: CANONICAL, entry: "x" } });
      expect(await prisma.chart.findFirst()).toMatchObject({ tenantId: upper, entry: "x" });
    }));
});

describe("native types in the generator's module and in refusals", () => {
  test("the module records the datasource's name where it is not db", () => {
    const expected: NativeTypesDescriptor = {
      provider: "postgresql",
      datasource: "pg",
      columns: { tenantId: "Uuid" },
    };
    expect(generated.Account?.nativeTypes).toEqual(expected);
    expect(parseSchema(SCHEMA).Account?.nativeTypes).toEqual(expected);
    expect(generated.Chart?.nativeTypes).toEqual({ ...expected, columns: { recordId: "Uuid" } });
  });

  const padded = (datasource: string) => `datasource ${datasource} {
  provider = "postgresql"
}

/// @kms.context(tenantId)
model Account {
  id       Int    @id @default(autoincrement())
  tenantId String @${datasource}.Char(8)
  /// @kms.encrypted
  note     String @${datasource}.Char(200)
}`;

  test("refusals write native types with the datasource's own attribute name", async () => {
    expect(() => parseSchema(padded("pg"))).toThrow(
      /^model "Account" field "note": ciphertext cannot be kept in @pg\.Char\(200\): .*; use @pg\.VarChar\(n\) or @pg\.Text$/,
    );
    const config: ModelConfig = {
      encrypted: { note: {} },
      context: { fromRow: ["tenantId"] },
      nativeTypes: { provider: "postgresql", datasource: "pg", columns: { tenantId: "Char(8)" } },
    };
    const kmsSchema = defineModels({ Account: config });
    expect(kmsSchema.Account?.nativeTypes?.datasource).toBe("pg");
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    // Nothing connects before a query.
    const client = new PgClient({
      adapter: new PrismaPg({ connectionString: "postgres://nobody@127.0.0.1:1/none" }),
    });
    expect(() => client.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }))).toThrow(
      /^model "Account" context column "tenantId": a context column cannot be @pg\.Char\(8\): .*; use @pg\.VarChar\(n\) or @pg\.Text$/,
    );
    expect(() => parseSchema(padded("db"))).toThrow(/cannot be kept in @db\.Char\(200\)/);
  });

  test("a datasource name that is no name is refused", () => {
    for (const datasource of ["", "@pg", "pg.", 1]) {
      const nativeTypes = { datasource, columns: { tenantId: "Uuid" } };
      expect(() =>
        defineModels({
          Account: { context: { fromRow: ["tenantId"] }, nativeTypes } as unknown as ModelConfig,
        }),
      ).toThrow(ValidationError);
    }
  });

  test("a uniqueidentifier context column loads: its values are checked when written", () => {
    const text = `datasource db {
  provider = "sqlserver"
}

/// @kms.context(tenantId)
model Account {
  id       Int    @id @default(autoincrement())
  tenantId String @db.UniqueIdentifier
  /// @kms.encrypted
  note     String
}`;
    expect(parseSchema(text).Account?.nativeTypes).toEqual({
      provider: "sqlserver",
      columns: { tenantId: "UniqueIdentifier" },
    });
  });
});
