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
// for the column back and hides it again (non-enumerable), so results keep the shape the client
// promises: not in Object.keys, spread or JSON.

const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "kms-prisma-omit-"));
const file = join(dir, "test.db");
const db = retainSqliteHandle(new Database(file));
db.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
const base = new PrismaClient({
  adapter: new PrismaBetterSqlite3({ url: `file:${file}` }),
  omit: { user: { tenantId: true }, post: { tenantId: true }, chart: { recordId: true } },
});
const kms = await createKms();
const { keyId } = (await kms.createKey()).keyMetadata;
const extend = () => base.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
let prisma: ReturnType<typeof extend>;

/** The keys a row shows: Object.keys, which spread and JSON follow. */
const shown = (row: object | null | undefined): string[] => Object.keys(row ?? {});
/**
 * What code reading a row by the names it expects finds of its tenant: a response schema
 * (fast-json-stringify, Fastify), a GraphQL resolver, zod's `pick`, `row.tenantId ?? fallback`
 * read a property whether it is enumerable or not.
 */
const tenantByName = (row: object | null | undefined): [unknown, boolean] => [
  (row as { tenantId?: unknown } | null | undefined)?.tenantId,
  typeof row === "object" && row !== null && "tenantId" in row,
];

beforeAll(() => {
  prisma = extend();
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
    expect(shown(user)).not.toContain("tenantId");
    expect(JSON.parse(JSON.stringify(user))).not.toHaveProperty("tenantId");
    expect({ ...user }).not.toHaveProperty("tenantId");
    const found = await prisma.user.findMany({ where: { tenantId: "t1" } });
    expect(found.map((u) => [u.name, shown(u).includes("tenantId")])).toEqual([["Ann", false]]);
    // Stored encrypted all the same.
    const raw = db.prepare(`SELECT "name" FROM "User" WHERE "id" = ?`).get(user.id) as {
      name: string;
    };
    expect(raw.name.startsWith("kms1:")).toBe(true);
  });

  test("a column read back only to decrypt is removed: code reading the row by name finds none", async () => {
    // The extension kept every column it read back as a hidden property, which code reading the
    // row by name found where Prisma returns none. None of this client's result fields (it has
    // none) can need it: removed, as before it was hidden.
    const found = await prisma.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      include: { posts: true },
    });
    expect([found.name, tenantByName(found)]).toEqual(["Ann", [undefined, false]]);
    expect(tenantByName(found.posts[0])).toEqual([undefined, false]);
    const selected = await prisma.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      select: { id: true, name: true },
    });
    expect([selected.name, tenantByName(selected)]).toEqual(["Ann", [undefined, false]]);
    const created = await prisma.user.create({
      data: { tenantId: "t3", email: "eve@example.com", name: "Eve" },
      select: { id: true, name: true },
    });
    expect([created.name, tenantByName(created)]).toEqual(["Eve", [undefined, false]]);
    await base.user.delete({ where: { id: created.id } });
  });

  test("a query's own omit: false returns the column; its omit: true strips it", async () => {
    const [asked] = await prisma.user.findMany({
      where: { tenantId: "t1" },
      omit: { tenantId: false },
    });
    expect(asked).toMatchObject({ tenantId: "t1", name: "Ann" });
    const [own] = await prisma.user.findMany({ where: { tenantId: "t1" }, omit: { name: true } });
    expect(shown(own)).not.toContain("tenantId");
    expect(shown(own)).not.toContain("name");
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
    expect(read.posts.map((p) => [p.body, shown(p).includes("tenantId")])).toEqual([
      ["secret body", false],
    ]);
    const selected = await prisma.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      select: { name: true, posts: true },
    });
    expect(selected).toEqual({
      name: "Ann",
      posts: [expect.objectContaining({ body: "secret body" })],
    });
    expect(shown(selected.posts[0])).not.toContain("tenantId");
  });

  test("a field's own context column omitted globally", async () => {
    const chart = await prisma.chart.create({
      data: { tenantId: "t1", recordId: "r1", ssn: "123", note: "bound to r1" },
    });
    expect(chart.note).toBe("bound to r1");
    expect(shown(chart)).not.toContain("recordId");
    const updated = await prisma.chart.update({
      where: { id: chart.id },
      data: { recordId: "r2", note: "bound to r2", vitals: null },
    });
    expect([updated.note, shown(updated).includes("recordId")]).toEqual(["bound to r2", false]);
  });
});

describe("result fields of other extensions that need a column the client omits", () => {
  // Prisma reads what a result field `needs` even where an omit leaves it out, computes the field
  // from the row the query hook returns, and hides the column itself. The extension, asking for
  // the omitted context column back, used to delete it from the rows again: the field, which
  // Prisma computes only from a row that has all it needs, was missing from every result.
  const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
  const computed = () =>
    base
      .$extends({
        result: {
          user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
        },
      })
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends({
        result: {
          user: {
            tagged: {
              needs: { name: true, tenantId: true },
              compute: (u) => `${u.name} of ${u.tenantId}`,
            },
          },
          post: { place: { needs: { tenantId: true }, compute: (p) => `in ${p.tenantId}` } },
          chart: {
            record: {
              needs: { note: true, recordId: true },
              compute: (c) => `${c.note} @${c.recordId}`,
            },
          },
        },
      });

  test("are computed in reads, included relations, the fluent API and written rows", async () => {
    const client = computed();
    const user = await client.user.create({
      data: { tenantId: "t9", email: "nia@example.com", name: "Nia" },
    });
    expect([user.label, user.tagged, shown(user).includes("tenantId")]).toEqual([
      "of t9",
      "Nia of t9",
      false,
    ]);
    await client.post.create({
      data: { tenantId: "t9", title: "T9", body: "body of t9", authorId: user.id },
    });
    await client.chart.create({
      data: { tenantId: "t9", recordId: "r9", ssn: "999", note: "note 9", ownerId: user.id },
    });

    const read = await client.user.findFirstOrThrow({
      where: { tenantId: "t9" },
      include: { posts: true, charts: true },
    });
    expect(plain(read)).toEqual({
      id: user.id,
      email: "nia@example.com",
      name: "Nia",
      phone: null,
      phoneIndex: null,
      profile: null,
      score: null,
      avatar: null,
      plain: null,
      label: "of t9",
      tagged: "Nia of t9",
      posts: [
        {
          id: expect.any(Number),
          title: "T9",
          body: "body of t9",
          publishedAt: null,
          authorId: user.id,
          place: "in t9",
        },
      ],
      charts: [
        {
          id: expect.any(Number),
          tenantId: "t9",
          ssn: "999",
          name: null,
          note: "note 9",
          vitals: null,
          ownerId: user.id,
          record: "note 9 @r9",
        },
      ],
    });
    expect(shown(read.posts[0])).not.toContain("tenantId");
    expect(shown(read.charts[0])).not.toContain("recordId");

    const fluent = await client.user.findFirst({ where: { tenantId: "t9" } }).posts();
    expect(fluent?.map((p) => [p.place, shown(p).includes("tenantId")])).toEqual([
      ["in t9", false],
    ]);
    const [many] = await client.user.createManyAndReturn({
      data: [{ tenantId: "t9", email: "noa@example.com", name: "Noa" }],
    });
    expect([many?.label, many?.tagged, shown(many).includes("tenantId")]).toEqual([
      "of t9",
      "Noa of t9",
      false,
    ]);
    // The query's own omit of the column, too: Prisma reads it for the field all the same.
    const own = await client.chart.findFirstOrThrow({
      where: { tenantId: "t9" },
      omit: { tenantId: true },
    });
    expect([own.record, shown(own).includes("tenantId"), shown(own).includes("recordId")]).toEqual([
      "note 9 @r9",
      false,
      false,
    ]);
  });

  test("code reading a row by name finds the column where Prisma leaves it: nowhere on the client queried", async () => {
    // On the client the query runs on, Prisma hides the column behind the field that needs it,
    // as it does without the extension, once the extension gives it the query's own shape back.
    const client = computed();
    const labelled = await client.user.findFirstOrThrow({ where: { tenantId: "t1" } });
    expect([labelled.label, labelled.tagged, tenantByName(labelled)]).toEqual([
      "of t1",
      "Ann of t1",
      [undefined, false],
    ]);
    const fromPrisma = await base
      .$extends({
        result: {
          user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
        },
      })
      .user.findFirstOrThrow({ where: { tenantId: "t1" } });
    expect([fromPrisma.label, tenantByName(fromPrisma)]).toEqual(["of t1", [undefined, false]]);
    const selected = await client.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      select: { id: true, label: true, name: true },
    });
    expect([selected.label, tenantByName(selected)]).toEqual(["of t1", [undefined, false]]);
    const written = await client.user.update({
      where: { id: labelled.id },
      data: { name: "Ann" },
      include: { posts: true },
    });
    expect([written.tagged, tenantByName(written)]).toEqual(["Ann of t1", [undefined, false]]);
    expect([written.posts[0]?.place, tenantByName(written.posts[0])]).toEqual([
      "in t1",
      [undefined, false],
    ]);
  });

  test("readable by name on another client made from the same extended client: the documented exposure", async () => {
    // Prisma tells the extension neither which client a query runs on nor its result fields: it
    // learns them from the `$extends` of the client it returns, for all the clients made from it.
    // A field of one of them that needs the column keeps it, hidden, on the rows of the others.
    const encrypted = base.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    const labelled = encrypted.$extends({
      result: {
        user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
      },
    });
    const row = await encrypted.user.findFirstOrThrow({ where: { tenantId: "t1" } });
    expect([row.name, tenantByName(row), shown(row).includes("tenantId")]).toEqual([
      "Ann",
      ["t1", true],
      false,
    ]);
    expect(JSON.stringify(row)).not.toContain("tenantId");
    // A select, which names the fields Prisma computes, reads and keeps only what they need.
    const selected = await encrypted.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      select: { id: true, name: true },
    });
    expect(tenantByName(selected)).toEqual([undefined, false]);
    const own = await labelled.user.findFirstOrThrow({ where: { tenantId: "t1" } });
    expect([own.label, tenantByName(own)]).toEqual(["of t1", [undefined, false]]);
  });

  test("what differs from Prisma: rows copied outside the extension, a compute that copies its row", async () => {
    // The hidden column is an own property, but not enumerable: a copy of the row leaves it out.
    const label = {
      result: {
        user: {
          label: {
            needs: { tenantId: true },
            compute: (u: { tenantId: string }) => `of ${u.tenantId}`,
          },
        },
      },
    };
    // A query extension applied before this one runs around it and returns a copy of its rows:
    // Prisma finds the tenant missing from the copy and leaves the field out.
    const copying = {
      query: {
        user: {
          async $allOperations({ args, query }: { args: unknown; query: (a: unknown) => unknown }) {
            const row = await query(args);
            return typeof row === "object" && row !== null && !Array.isArray(row)
              ? { ...row }
              : row;
          },
        },
      },
    };
    const where = { where: { tenantId: "t1" } };
    const copied = base
      .$extends(copying)
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends(label);
    const withoutExtension = base.$extends(copying).$extends(label);
    expect((await withoutExtension.user.findFirstOrThrow(where)).label).toBe("of t1");
    expect((await copied.user.findFirstOrThrow(where)).label).toBeUndefined();
    // Selected, the field gets its tenant from Prisma, not from the extension.
    expect((await copied.user.findFirstOrThrow({ ...where, select: { label: true } })).label).toBe(
      "of t1",
    );
    // Selected beside an encrypted field, whose context the extension reads itself: a field the
    // select names is sure to need the tenant, so the row keeps it as it is, for the copy too,
    // and Prisma hides it behind the field.
    const withName = await copied.user.findFirstOrThrow({
      ...where,
      select: { label: true, name: true },
    });
    expect([withName.label, withName.name, Object.keys(withName).sort()]).toEqual([
      "of t1",
      "Ann",
      ["label", "name"],
    ]);
    // A compute reading the row by name finds the tenant; one copying the row does not.
    const keysSeen = {
      result: {
        user: {
          keysSeen: { needs: { tenantId: true }, compute: (u: object) => Object.keys({ ...u }) },
        },
      },
    };
    const seen = await base
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends(keysSeen)
      .user.findFirstOrThrow(where);
    expect(seen.keysSeen).not.toContain("tenantId");
    expect((await base.$extends(keysSeen).user.findFirstOrThrow(where)).keysSeen).toContain(
      "tenantId",
    );
  });

  test("a query's omit of the column holding undefined returns it, as Prisma does", async () => {
    // Prisma spreads the query's omit over the client's: a key of its own overrides the client's,
    // whatever it holds, so the column is read and returned. The extension took `undefined` for
    // "not said" and hid the column.
    // Written as an application without exactOptionalPropertyTypes, or spreading options, does.
    const unsaid = { tenantId: undefined } as unknown as { tenantId?: boolean };
    const tenantOf = (row: object): unknown => (row as { tenantId?: unknown }).tenantId;
    const fromPrisma = await base.user.findFirstOrThrow({
      where: { tenantId: "t1" },
      omit: unsaid,
    });
    expect(tenantOf(fromPrisma)).toBe("t1");
    const row = await prisma.user.findFirstOrThrow({ where: { tenantId: "t1" }, omit: unsaid });
    expect([tenantOf(row), shown(row).includes("tenantId"), row.name]).toEqual(["t1", true, "Ann"]);
  });
});
