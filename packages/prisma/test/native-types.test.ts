import { mkdirSync, writeFileSync } from "node:fs";
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
  parseSchema,
  type SchemaDescriptor,
} from "../src/index.ts";
import { schemaModuleSource } from "../src/internal/schema-module.ts";
import { readSchemaText } from "../src/internal/schema-text.ts";
import { configFromAnnotations } from "../src/schema-descriptor.ts";
import { generateSchema, type SchemaDb, withPostgresSchema } from "./generated-schemas.ts";

/**
 * Native types (`@db.Char(8)`) that change what a column reads back break the binding of
 * values to their context columns, and the ciphertext itself: schema text and the generator
 * record them in the descriptor, and the unsafe ones are refused when the schema is read, when
 * `prisma generate` runs and when the extension is applied.
 */

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "generated", "native-types");

function schema(provider: string, models: string, datasource = "db"): string {
  return `datasource ${datasource} {\n  provider = "${provider}"\n}\n\n${models}\n`;
}

/** A model bound to `tenantId`, with `note` encrypted; `columns` adds or replaces lines. */
function account(columns: Readonly<Record<string, string>>, modelDoc = "@kms.context(tenantId)") {
  const lines: Record<string, string> = {
    id: "Int    @id @default(autoincrement())",
    tenantId: "String",
    note: "String /// @kms.encrypted",
    ...columns,
  };
  const body = Object.entries(lines)
    .map(([name, rest]) => `  ${name} ${rest}`)
    .join("\n");
  return `/// ${modelDoc}\nmodel Account {\n${body}\n}`;
}

const refused: readonly [string, string, RegExp][] = [
  [
    "a CHAR(n) context column on PostgreSQL (read back blank-padded)",
    schema("postgresql", account({ tenantId: "String @db.Char(8)" })),
    /^model "Account" context column "tenantId": a context column cannot be @db\.Char\(8\): values are bound to the column's text, and PostgreSQL pads a CHAR\(n\) value shorter than n with spaces \("t1" reads back as "t1 {6}"\), so its rows would not decrypt; use @db\.VarChar\(n\) or @db\.Text$/,
  ],
  [
    "a CHAR(n) context column on MySQL (trailing spaces stripped)",
    schema("mysql", account({ tenantId: "String @db.Char(36)" })),
    /context column "tenantId": a context column cannot be @db\.Char\(36\): .*MySQL and MariaDB strip the trailing spaces of a CHAR\(n\) value/,
  ],
  [
    "an NCHAR(n) context column on SQL Server",
    schema("sqlserver", account({ tenantId: "String @db.NChar(8)" })),
    /context column "tenantId": a context column cannot be @db\.NChar\(8\): .*SQL Server pads/,
  ],
  [
    "a context column of a field's own @kms.context",
    schema(
      "postgresql",
      account(
        {
          recordId: "String @db.Char(36)",
          chart: "String /// @kms.encrypted @kms.context(recordId)",
        },
        "Accounts.",
      ),
    ),
    /^model "Account" context column "recordId": a context column cannot be @db\.Char\(36\)/,
  ],
  [
    "a datasource of another name (@pg.Char)",
    schema("postgresql", account({ tenantId: "String @pg.Char(8)" }), "pg"),
    /^model "Account" context column "tenantId": a context column cannot be @pg\.Char\(8\)/,
  ],
  [
    "a Float context column in PostgreSQL's real",
    schema("postgresql", account({ weight: "Float @db.Real" }, "@kms.context(weight)")),
    /^model "Account" context column "weight": a context column cannot be @db\.Real: values are bound to the column's text, and PostgreSQL keeps a single-precision number, which reads back as another double than was written .*; use @db\.DoublePrecision$/,
  ],
  [
    "a Float context column in MySQL's FLOAT",
    schema("mysql", account({ weight: "Float @db.Float" }, "@kms.context(weight)")),
    /context column "weight": a context column cannot be @db\.Float: .*0\.30000000000000004 as 0\.3, or as 0\.30000001192092896.*; use @db\.Double$/,
  ],
  [
    "a Float context column in SQL Server's float(24)",
    schema("sqlserver", account({ weight: "Float @db.Float(24)" }, "@kms.context(weight)")),
    /context column "weight": a context column cannot be @db\.Float\(24\): .*; use @db\.Float\(53\)$/,
  ],
  [
    "a Float context column in CockroachDB's FLOAT4",
    schema("cockroachdb", account({ weight: "Float @db.Float4" }, "@kms.context(weight)")),
    /context column "weight": a context column cannot be @db\.Float4: .*; use @db\.Float8$/,
  ],
  [
    "an Inet context column (read back in PostgreSQL's spelling)",
    schema("postgresql", account({ tenantId: "String @db.Inet" })),
    /context column "tenantId": a context column cannot be @db\.Inet: .*"10\.0\.0\.1\/32" as "10\.0\.0\.1"/,
  ],
  [
    "a YEAR context column",
    schema("mysql", account({ year: "Int @db.Year" }, "@kms.context(year)")),
    /context column "year": a context column cannot be @db\.Year: .*70 as 1970/,
  ],
  [
    "ciphertext in a CHAR(n) column on PostgreSQL (read back blank-padded)",
    schema("postgresql", account({ note: "String @db.Char(200) /// @kms.encrypted" })),
    /^model "Account" field "note": ciphertext cannot be kept in @db\.Char\(200\): PostgreSQL pads a CHAR\(n\) value shorter than n with spaces, and the padded text reads back as no ciphertext, so every read would fail; use @db\.VarChar\(n\) or @db\.Text$/,
  ],
  [
    "ciphertext in a column too short for an empty value's (randomized: 67 characters)",
    schema("postgresql", account({ note: "String @db.VarChar(66) /// @kms.encrypted" })),
    /^model "Account" field "note": ciphertext cannot fit in @db\.VarChar\(66\): it holds at most 66 characters, and a randomized value's ciphertext has at least 67 \(kms1: and the base64url of the 46 bytes every value adds, an empty value's\), so every write would fail; a value of k bytes takes 5 \+ ⌈4\(k \+ 46\)\/3⌉ characters$/,
  ],
  [
    "deterministic ciphertext in a column too short for an empty value's (51 characters)",
    schema("mysql", account({ note: "String @db.VarChar(50) /// @kms.encrypted(deterministic)" })),
    /field "note": ciphertext cannot fit in @db\.VarChar\(50\): .*a deterministic value's ciphertext has at least 51 /,
  ],
  [
    "ciphertext in a UUID column",
    schema("postgresql", account({ note: "String @db.Uuid /// @kms.encrypted" })),
    /field "note": ciphertext cannot be kept in @db\.Uuid: the column takes no kms1:… text/,
  ],
  [
    "bytes ciphertext in a BINARY(n) column (zero-padded)",
    schema("mysql", account({ note: "Bytes @db.Binary(255) /// @kms.encrypted" })),
    /field "note": ciphertext cannot be kept in @db\.Binary\(255\): a BINARY\(n\) column pads a value shorter than n with zero bytes/,
  ],
  [
    "bytes ciphertext in a VARBINARY(n) shorter than the overhead",
    schema("mysql", account({ note: "Bytes @db.VarBinary(45) /// @kms.encrypted" })),
    /field "note": ciphertext cannot fit in @db\.VarBinary\(45\): it holds at most 45 bytes, and a randomized value's ciphertext has 46 bytes besides the value's own/,
  ],
  [
    "a blind index in a column shorter than the index (16 bytes: 22 characters)",
    schema(
      "postgresql",
      account({ noteIndex: "String? @db.VarChar(21) /// @kms.blindIndex(of: note)" }),
    ),
    /^model "Account" field "noteIndex": a blind index cannot fit in @db\.VarChar\(21\): it holds at most 21 characters, and an index of 16 bytes is 22 \(base64url\), so every write would fail$/,
  ],
  [
    "a blind index of 32 bytes in CHAR(42)",
    schema(
      "mysql",
      account({ noteIndex: "String? @db.Char(42) /// @kms.blindIndex(of: note, bytes: 32)" }),
    ),
    /field "noteIndex": a blind index cannot fit in @db\.Char\(42\): .*an index of 32 bytes is 43/,
  ],
];

describe("native types that change what a column reads back are refused", () => {
  test.each(refused)("from schema text: %s", (_, text, message) => {
    expect(() => parseSchema(text)).toThrow(ValidationError);
    expect(() => parseSchema(text)).toThrow(message);
  });

  test("safe native types are accepted, and recorded for the columns the annotations name", () => {
    const text = schema(
      "postgresql",
      account(
        {
          tenantId: "String @db.Uuid",
          // A string argument holds no attribute.
          region: 'String @default("@db.Char(8)") @db.VarChar(255)',
          weight: "Float @db.DoublePrecision",
          note: "String @db.Text /// @kms.encrypted",
          short: "String @db.VarChar(67) /// @kms.encrypted",
          email: "String @db.VarChar(51) /// @kms.encrypted(deterministic)",
          emailIndex: 'String? @db.Char(22) @map("email_index") /// @kms.blindIndex(of: email)',
          label: "String @db.Char(3)",
          amount: "Decimal @db.Decimal(10, 2)",
        },
        "@kms.context(tenantId, region, weight)",
      ),
    );
    expect(parseSchema(text).Account?.nativeTypes).toEqual({
      provider: "postgresql",
      columns: {
        tenantId: "Uuid",
        region: "VarChar(255)",
        weight: "DoublePrecision",
        note: "Text",
        short: "VarChar(67)",
        email: "VarChar(51)",
        emailIndex: "Char(22)",
      },
    });
    // MySQL keeps a CHAR(n) value without padding: ciphertext there reads back whole.
    expect(() =>
      parseSchema(schema("mysql", account({ note: "String @db.Char(200) /// @kms.encrypted" }))),
    ).not.toThrow();
    // SQL Server's float is float(53), a double.
    for (const type of ["Float", "Float(53)"]) {
      expect(() =>
        parseSchema(
          schema("sqlserver", account({ weight: `Float @db.${type}` }, "@kms.context(weight)")),
        ),
      ).not.toThrow();
    }
    // A schema without native types records none.
    expect(parseSchema(schema("postgresql", account({}))).Account?.nativeTypes).toBeUndefined();
  });

  test("typed configuration: nativeTypes is optional, and checked when given", () => {
    const base: ModelConfig = { encrypted: { note: {} }, context: { fromRow: ["tenantId"] } };
    expect(defineModels({ Account: base }).Account?.nativeTypes).toBeUndefined();
    const junk: unknown[] = [
      "Char(8)",
      { columns: "x" },
      { columns: ["Char(8)"] },
      { columns: { tenantId: 8 } },
      { columns: { tenantId: "@db.Char(8)" } },
      { provider: "", columns: {} },
      { provider: 1, columns: {} },
    ];
    for (const nativeTypes of junk) {
      expect(() =>
        defineModels({ Account: { ...base, nativeTypes } as unknown as ModelConfig }),
      ).toThrow(ValidationError);
    }
  });
});

// The PostgreSQL models of the tests below: safe native types (Account), and the two failures
// the refusals prevent (Padded, Single).
const ACCOUNT = `/// @kms.context(tenantId, region, weight)
model Account {
  id         Int     @id @default(autoincrement())
  tenantId   String  @db.Uuid
  region     String  @db.VarChar(255)
  weight     Float   @db.DoublePrecision
  /// @kms.encrypted
  note       String  @db.Text
  /// @kms.encrypted(deterministic)
  email      String  @db.VarChar(255)
  /// @kms.blindIndex(of: note)
  noteIndex  String? @db.Char(22)
}`;
const UNSAFE = `/// @kms.context(tenantId)
model Padded {
  id       Int    @id @default(autoincrement())
  tenantId String @db.Char(8)
  /// @kms.encrypted
  note     String
}

/// @kms.context(weight)
model Single {
  id     Int   @id @default(autoincrement())
  weight Float @db.Real
  /// @kms.encrypted
  note   String
}`;
const DATA_KEYS = `model KmsDataKey {
  id                String @id
  kmsKeyId          String
  wrappedKey        Bytes
  encryptionContext String
  purpose           String
  createdAt         BigInt
}`;
const TABLES = `
CREATE TABLE "KmsDataKey" ("id" TEXT PRIMARY KEY, "kmsKeyId" TEXT NOT NULL, "wrappedKey" BYTEA NOT NULL,
  "encryptionContext" TEXT NOT NULL, "purpose" TEXT NOT NULL, "createdAt" BIGINT NOT NULL);
CREATE TABLE "Account" ("id" SERIAL PRIMARY KEY, "tenantId" UUID NOT NULL, "region" VARCHAR(255) NOT NULL,
  "weight" DOUBLE PRECISION NOT NULL, "note" TEXT NOT NULL, "email" VARCHAR(255) NOT NULL, "noteIndex" CHAR(22));
CREATE TABLE "Padded" ("id" SERIAL PRIMARY KEY, "tenantId" CHAR(8) NOT NULL, "note" TEXT NOT NULL);
CREATE TABLE "Single" ("id" SERIAL PRIMARY KEY, "weight" REAL NOT NULL, "note" TEXT NOT NULL);
`;

const CLIENT_GENERATOR = `generator client {
  provider            = "prisma-client"
  output              = "./client"
  moduleFormat        = "esm"
  runtime             = "nodejs"
  importFileExtension = "ts"
}`;
const KMS_GENERATOR = `generator kms {
  provider = "node ../../../../src/generator.ts"
  output   = "./kms"
}`;

/** Generates `text` in `out/<name>`. */
const generate = (name: string, text: string): string => generateSchema(join(out, name), text);

/** What the tests use of the generated PostgreSQL client. */
interface Client {
  $extends(extension: unknown): Client;
  $disconnect(): Promise<void>;
  account: Delegate;
  padded: Delegate;
  single: Delegate;
}
interface Delegate {
  create(args: unknown): Promise<Record<string, unknown>>;
  findMany(args?: unknown): Promise<Record<string, unknown>[]>;
  findFirst(args?: unknown): Promise<Record<string, unknown> | null>;
}
type ClientClass = new (options: { adapter: unknown }) => Client;

const pgText = (...models: string[]) => schema("postgresql", models.join("\n\n"));
let PgClient: ClientClass;
/** The generator's module for the safe models. */
let generated: SchemaDescriptor;

beforeAll(async () => {
  const client = generate("client", `${CLIENT_GENERATOR}\n\n${pgText(ACCOUNT, UNSAFE, DATA_KEYS)}`);
  PgClient = (
    (await import(pathToFileURL(join(client, "client", "client.ts")).href)) as {
      PrismaClient: ClientClass;
    }
  ).PrismaClient;
  const safe = generate("safe", `${KMS_GENERATOR}\n\n${pgText(ACCOUNT, DATA_KEYS)}`);
  generated = (
    (await import(pathToFileURL(join(safe, "kms", "kms-schema.ts")).href)) as {
      kmsSchema: SchemaDescriptor;
    }
  ).kmsSchema;
}, 60_000);

/** A client of the generated PostgreSQL models; nothing connects before a query. */
function offlineClient(): Client {
  return new PgClient({
    adapter: new PrismaPg({ connectionString: "postgres://nobody@127.0.0.1:1/none" }),
  });
}

describe("the kms-prisma-types generator", () => {
  test("refuses the unsafe native types when prisma generate runs", () => {
    let failure: unknown;
    try {
      generate("unsafe", `${KMS_GENERATOR}\n\n${pgText(UNSAFE, DATA_KEYS)}`);
    } catch (error) {
      failure = error;
    }
    const stderr = String((failure as { stderr?: unknown } | undefined)?.stderr ?? "");
    expect(stderr).toMatch(
      /model "Padded" context column "tenantId": a context column cannot be @db\.Char\(8\)/,
    );
  });

  test("writes the native types into its module, as schema text reads them", () => {
    const parsed = parseSchema(pgText(ACCOUNT, DATA_KEYS));
    expect(generated.Account?.nativeTypes).toEqual({
      provider: "postgresql",
      columns: {
        tenantId: "Uuid",
        region: "VarChar(255)",
        weight: "DoublePrecision",
        note: "Text",
        email: "VarChar(255)",
        noteIndex: "Char(22)",
      },
    });
    expect({ ...generated.Account }).toEqual({ ...parsed.Account });
  });

  test("a module carrying an unsafe native type is refused when the extension is applied; one without (an older generator's) still loads", async () => {
    // The module the generator would write for the unsafe models, had it not refused them.
    const configs = configFromAnnotations(readSchemaText(pgText(UNSAFE, DATA_KEYS)));
    expect(configs.Padded?.nativeTypes).toEqual({
      provider: "postgresql",
      columns: { tenantId: "Char(8)" },
    });
    const file = join(out, "unsafe-module", "kms-schema.ts");
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, schemaModuleSource(configs));
    const { kmsSchema } = (await import(pathToFileURL(file).href)) as {
      kmsSchema: SchemaDescriptor;
    };
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    const client = offlineClient();
    expect(() => client.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }))).toThrow(
      /^model "Padded" context column "tenantId": a context column cannot be @db\.Char\(8\)/,
    );
    const single = { Single: kmsSchema.Single } as SchemaDescriptor;
    expect(() => client.$extends(fieldEncryption({ kms, keyId, schema: single }))).toThrow(
      /^model "Single" context column "weight": a context column cannot be @db\.Real/,
    );
    const { nativeTypes: _, ...older } = configs.Padded as ModelConfig;
    expect(() =>
      client.$extends(fieldEncryption({ kms, keyId, schema: defineModels({ Padded: older }) })),
    ).not.toThrow();
  });
});

const { url, skipReason } = databaseTarget("postgres");

describe.skipIf(skipReason !== undefined)("native types on PostgreSQL", () => {
  /** Runs `body` on a fresh schema with the tables, a client on it, and the raw driver. */
  const withDb = (body: (db: SchemaDb<Client>) => Promise<void>): Promise<void> =>
    withPostgresSchema(
      {
        url: url as string,
        prefix: "kms_native",
        tables: TABLES,
        makeClient: (adapter) => new PgClient({ adapter }),
      },
      body,
    );

  test("@db.Uuid, @db.VarChar(255) and @db.DoublePrecision context columns, @db.Text and @db.VarChar(255) ciphertext and a @db.Char(22) blind index round-trip", () =>
    withDb(async (db) => {
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: generated }),
      );
      const tenantId = crypto.randomUUID();
      // A double with no short decimal form, which a REAL column would have read back as 0.3.
      const context = { tenantId, region: "eu-west-1", weight: 0.1 + 0.2 };
      await prisma.account.create({ data: { ...context, note: "first", email: "a@example.com" } });
      await prisma.account.create({ data: { ...context, note: "second", email: "b@example.com" } });
      const read = await prisma.account.findMany({ orderBy: { id: "asc" } });
      expect(read).toMatchObject([
        { ...context, note: "first", email: "a@example.com" },
        { ...context, note: "second", email: "b@example.com" },
      ]);
      expect(
        await prisma.account.findFirst({ where: { ...context, email: "b@example.com" } }),
      ).toMatchObject({ note: "second" });
      expect(
        await prisma.account.findFirst({ where: { ...context, note: "first" } }),
      ).toMatchObject({ email: "a@example.com" });
      const [row] = await db.raw("Account", "id");
      expect(row?.tenantId).toBe(tenantId);
      expect(String(row?.note)).toMatch(/^kms1:/);
      expect(String(row?.email)).toMatch(/^kms1:/);
      expect(String(row?.noteIndex)).toMatch(/^[\w-]{22}$/);
    }));

  test("what the refusals prevent: without native types in the descriptor (an older generator's module), a CHAR(8) or REAL context column reads back another text and the rows do not decrypt", () =>
    withDb(async (db) => {
      const older = defineModels({
        Padded: { encrypted: { note: {} }, context: { fromRow: ["tenantId"] } },
        Single: { encrypted: { note: {} }, context: { fromRow: ["weight"] } },
      });
      const prisma = db.client.$extends(
        fieldEncryption({ kms: db.kms, keyId: db.keyId, schema: older }),
      );
      await prisma.padded.create({
        data: { tenantId: "t1", note: "secret" },
        select: { id: true },
      });
      expect((await db.raw("Padded", "id"))[0]?.tenantId).toBe("t1      ");
      await expect(prisma.padded.findFirst()).rejects.toThrow(InvalidCiphertextError);
      await prisma.single.create({
        data: { weight: 0.1 + 0.2, note: "secret" },
        select: { id: true },
      });
      expect((await db.raw("Single", "id"))[0]?.weight).toBe(0.3);
      await expect(prisma.single.findFirst()).rejects.toThrow(InvalidCiphertextError);
    }));
});
