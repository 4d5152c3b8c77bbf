import { ValidationError } from "@kms/core";
import { expect } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { schemaText, sqliteTest } from "./backends.ts";

// Null is stored as null, so a null check runs on a randomized field as on any other, in each
// of the forms Prisma takes for it; a non-null value there is still a lookup it cannot make.

sqliteTest("null checks on a randomized field, in every form", async ({ db, kms, keyId }) => {
  const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
  await prisma.user.create({ data: { tenantId: "t1", email: "a@example.com", name: "Ann" } });
  await prisma.user.create({ data: { tenantId: "t1", email: "b@example.com" } });
  const count = (name: object | null) =>
    prisma.user.count({ where: { tenantId: "t1", name: name as never } });
  expect(await count({ not: { equals: null } })).toBe(1);
  expect(await count({ not: null })).toBe(1);
  expect(await count({ equals: null })).toBe(1);
  expect(await count(null)).toBe(1);
  await expect(count({ not: { equals: "Ann" } })).rejects.toThrow(ValidationError);
  await expect(count({ not: { equals: "Ann" } })).rejects.toThrow(/User\.name is randomized/);
});
