import { FieldEncryptionEngine } from "@kms/core";
import { expect } from "vitest";
import {
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  parseSchema,
} from "../src/index.ts";
import { schemaText, sqliteTest } from "./backends.ts";

// The recipe of the README's "Raw queries" section. SQLite only: the PostgreSQL tests give each
// run its own schema through the driver adapter, which raw SQL does not see.

sqliteTest(
  "raw queries return what is stored; an engine shared with the extension opens it",
  async ({ db, kms, keyId }) => {
    const models = parseSchema(schemaText);
    const engine = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
    });
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: models, engine }));
    const alice = { tenantId: "t1", email: "alice@example.com", name: "Alice", phone: "555" };
    const created = await prisma.user.create({ data: alice });
    const rows = await prisma.$queryRaw<{ id: number; tenantId: string; name: string }[]>`
      SELECT "id", "tenantId", "name" FROM "User" WHERE "tenantId" = ${"t1"}`;
    const row = rows[0] as (typeof rows)[number];
    expect(row.name.startsWith("kms1:")).toBe(true);
    const user = models.User as ModelDescriptor;
    const spec = (field: string) =>
      user.encrypted[field] as NonNullable<(typeof user.encrypted)[string]>;
    const binding = { model: "User", field: "name", context: { tenantId: row.tenantId } };
    expect(await engine.decryptText(binding, spec("name"), row.name)).toBe("Alice");
    // Lookups in raw SQL compare stored forms: a deterministic ciphertext, a blind index.
    const context = { tenantId: "t1" };
    const email = await engine.encryptText(
      { model: "User", field: "email", context },
      spec("email"),
      alice.email,
    );
    const phoneIndex = await engine.blindIndex(
      { model: "User", field: "phoneIndex", context },
      user.blindIndexes.phoneIndex as NonNullable<(typeof user.blindIndexes)[string]>,
      alice.phone,
    );
    const found = await prisma.$queryRaw<{ id: number }[]>`
      SELECT "id" FROM "User" WHERE "email" = ${email} AND "phoneIndex" = ${phoneIndex}`;
    expect(found.map((r) => Number(r.id))).toEqual([created.id]);
  },
);
