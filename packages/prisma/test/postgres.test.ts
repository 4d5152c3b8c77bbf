import { createKms, FieldEncryptionEngine, reencryptFields, ValidationError } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { PrismaPg } from "@prisma/adapter-pg";
import { describe, expect, test } from "vitest";
import {
  type ModelDescriptor,
  PrismaDataKeyStore,
  type PrismaReencryptSourceOptions,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { openPostgres, schemaText } from "./backends.ts";
import { describeContextTypes } from "./context-types.behaviour.ts";
import { describeFieldContext } from "./field-context.behaviour.ts";
import { describeFieldEncryption } from "./field-encryption.behaviour.ts";
import { PrismaClient as PgPrismaClient } from "./generated-pg/client.ts";
import { describeQueryForms } from "./query-forms.behaviour.ts";
import { describeReencryptReach } from "./reencrypt-reach.behaviour.ts";
import { describeScopeExclusions } from "./scope-exclusions.behaviour.ts";

const { url, skipReason } = databaseTarget("postgres");
const open = () => openPostgres(url as string);

describeFieldEncryption("PostgreSQL (pg)", open, skipReason);
describeFieldContext("PostgreSQL (pg)", open, skipReason);
describeReencryptReach("PostgreSQL (pg)", open, skipReason);
describeScopeExclusions("PostgreSQL (pg)", open, skipReason);
describeContextTypes("PostgreSQL (pg)", open, skipReason);
describeQueryForms("PostgreSQL (pg)", open, skipReason);

describe.skipIf(skipReason !== undefined)("the re-encryption job on PostgreSQL", () => {
  test("tables a raw query does not find by name (the adapter's schema option alone) fail the job before any row moves; countRows finds them", async () => {
    const db = await open();
    const { schema } = db.location as { schema: string };
    // Prisma's own queries name the schema; raw ones go by the search path, left as it is.
    const client = new PgPrismaClient({
      adapter: new PrismaPg({ connectionString: url as string }, { schema }),
    });
    try {
      const kms = await createKms();
      const { keyMetadata } = await kms.createKey();
      const engine = new FieldEncryptionEngine({
        kms,
        keyId: keyMetadata.keyId,
        dataKeyStore: new PrismaDataKeyStore(client.kmsDataKey),
        legacyPlaintext: true,
      });
      const memo = parseSchema(schemaText).Memo as ModelDescriptor;
      const { id } = await client.memo.create({ data: { tenantId: "t1", body: "in clear" } });
      const job = (countRows?: PrismaReencryptSourceOptions["countRows"]) =>
        reencryptFields({
          engine,
          source: prismaReencryptSource({
            delegate: client.memo as never,
            model: memo,
            engine,
            ...(countRows === undefined ? {} : { countRows }),
          }),
          model: "Memo",
          fields: memo.encrypted,
        });
      const failed = await job().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failed).toBeInstanceOf(ValidationError);
      expect((failed as Error).message).toMatch(
        /^Memo: counting the table's rows with a raw query through the delegate's client failed/,
      );
      expect((failed as Error).cause).toBeDefined();
      expect((await db.raw("Memo", id)).body).toBe("in clear");
      const counted = await job(async ({ after, upTo }) => {
        const rows = await client.$queryRawUnsafe<{ n: bigint }[]>(
          `SELECT COUNT(*) AS n FROM "${schema}"."Memo" WHERE ($1::int IS NULL OR "id" > $1) AND ($2::int IS NULL OR "id" <= $2)`,
          after ?? null,
          upTo ?? null,
        );
        return rows[0]?.n ?? 0;
      });
      expect(counted).toMatchObject({ scanned: 1, reencrypted: 1 });
      expect(String((await db.raw("Memo", id)).body)).toMatch(/^kms1:/);
    } finally {
      await client.$disconnect();
      await db.close();
    }
  });
});
