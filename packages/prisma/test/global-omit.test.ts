import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms } from "@kms/core";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { schemaText } from "./backends.ts";
import { PrismaClient } from "./generated/client.ts";

// A client-level omit of a context column (`new PrismaClient({ omit })`) is applied after the
// query hook has seen the arguments: the rows came back without the column their values decrypt
// with, so every read failed (and `create` reported failure after writing). The extension asks
// for the column back and strips it again, so results keep the shape the client promises.

const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "kms-prisma-omit-"));
const file = join(dir, "test.db");
const db = retainSqliteHandle(new Database(file));
db.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
const base = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${file}` }),
  omit: { user: { tenantId: true }, post: { tenantId: true }, chart: { recordId: true } },
});
const extend = async () => {
  const kms = await createKms();
  const { keyId } = (await kms.createKey()).keyMetadata;
  return base.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
};
let prisma: Awaited<ReturnType<typeof extend>>;

beforeAll(async () => {
  prisma = await extend();
});
afterAll(async () => {
  await base.$disconnect();
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("a client that omits context columns", () => {
  test("creates and reads, returning rows without the omitted columns", async () => {
    const user = await prisma.user.create({
      data: { tenantId: "t1", email: "ann@example.com", name: "Ann" },
    });
    expect(user).toMatchObject({ email: "ann@example.com", name: "Ann" });
    expect("tenantId" in user).toBe(false);
    const found = await prisma.user.findMany({ where: { tenantId: "t1" } });
    expect(found.map((u) => [u.name, "tenantId" in u])).toEqual([["Ann", false]]);
    // Stored encrypted all the same.
    const raw = db.prepare(`SELECT "name" FROM "User" WHERE "id" = ?`).get(user.id) as {
      name: string;
    };
    expect(raw.name.startsWith("kms1:")).toBe(true);
  });

  test("a query's own omit: false returns the column; its omit: true strips it", async () => {
    const [asked] = await prisma.user.findMany({
      where: { tenantId: "t1" },
      omit: { tenantId: false },
    });
    expect(asked).toMatchObject({ tenantId: "t1", name: "Ann" });
    const [own] = await prisma.user.findMany({ where: { tenantId: "t1" }, omit: { name: true } });
    expect(own && ("tenantId" in own || "name" in own)).toBe(false);
    expect(own?.email).toBe("ann@example.com");
  });

  test("included relations, with the global omit of their own model", async () => {
    const user = await prisma.user.findFirstOrThrow({ where: { tenantId: "t1" } });
    await prisma.post.create({
      data: { tenantId: "t1", title: "T", body: "secret body", authorId: user.id },
    });
    const read = await prisma.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      include: { posts: true },
    });
    expect(read.posts.map((p) => [p.body, "tenantId" in p])).toEqual([["secret body", false]]);
    const selected = await prisma.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      select: { name: true, posts: true },
    });
    expect(selected).toEqual({
      name: "Ann",
      posts: [expect.objectContaining({ body: "secret body" })],
    });
    expect("tenantId" in (selected.posts[0] as object)).toBe(false);
  });

  test("a field's own context column omitted globally", async () => {
    const chart = await prisma.chart.create({
      data: { tenantId: "t1", recordId: "r1", ssn: "123", note: "bound to r1" },
    });
    expect(chart.note).toBe("bound to r1");
    expect("recordId" in chart).toBe(false);
    const updated = await prisma.chart.update({
      where: { id: chart.id },
      data: { recordId: "r2", note: "bound to r2", vitals: null },
    });
    expect([updated.note, "recordId" in updated]).toEqual(["bound to r2", false]);
  });
});
