import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms } from "@kms/core";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import Database from "better-sqlite3";
import { describe, expect, test } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { schemaText } from "./backends.ts";
import { PrismaClient } from "./generated/client.ts";

// The shape of every result, differentially: each query shape (select, omit, include, nested
// selects, `_count`, result fields of other extensions needing encrypted or context columns, one
// of them named like a column) in each operation that returns rows (the find operations, the
// fluent API, create, update, upsert, delete, createManyAndReturn, updateManyAndReturn,
// transactions) runs through the extension and through the same client without it, each on its
// own database holding the same rows (in clear for the second), under the same global omit. The
// results must be equal as JSON, that is in their values and their enumerable keys at every
// depth, and in what reading a context column by name gives; and hold no ciphertext.
// Before the extension hid the context columns it reads back, results lost every result field
// needing one of them wherever an omit (the query's or the client's) left it out; once it hid
// them, code reading them by name found them where Prisma returns none; and a select of the
// field named like a column failed, after committing in a write.

const here = dirname(fileURLToPath(import.meta.url));

/** A client without the extension, with the result fields below; the extended one acts as one. */
const withResultFields = (base: PrismaClient, between: (c: PrismaClient) => PrismaClient) =>
  between(
    base.$extends({
      result: {
        user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
        post: { place: { needs: { tenantId: true }, compute: (p) => `in ${p.tenantId}` } },
        chart: { record: { needs: { recordId: true }, compute: (c) => `#${c.recordId}` } },
      },
    }) as unknown as PrismaClient,
  ).$extends({
    result: {
      user: {
        greeting: { needs: { name: true }, compute: (u) => `hi ${u.name}` },
        tagged: {
          needs: { name: true, tenantId: true },
          compute: (u) => `${u.name}@${u.tenantId}`,
        },
        // Named like a column, which it shadows, and needing an encrypted one.
        plain: { needs: { plain: true, name: true }, compute: (u) => `${u.plain} / ${u.name}` },
      },
      post: { teaser: { needs: { body: true }, compute: (p) => p.body.slice(0, 4) } },
      chart: { noteLength: { needs: { note: true }, compute: (c) => c.note?.length ?? 0 } },
    },
  });
type Client = ReturnType<typeof withResultFields>;

async function openPair(omit: Record<string, Record<string, boolean>> | undefined) {
  const kms = await createKms();
  const { keyId } = (await kms.createKey()).keyMetadata;
  const open = () => {
    const dir = mkdtempSync(join(tmpdir(), "kms-prisma-shapes-"));
    const file = join(dir, "test.db");
    const db = retainSqliteHandle(new Database(file));
    db.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
    const base = new PrismaClient({
      adapter: new PrismaBetterSqlite3({ url: `file:${file}` }),
      ...(omit === undefined ? {} : { omit }),
    });
    const close = async () => {
      await base.$disconnect();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    };
    return { base, db, close };
  };
  const encrypted = open();
  const clear = open();
  return {
    encrypted: withResultFields(
      encrypted.base,
      (c) =>
        c.$extends(fieldEncryption({ kms, keyId, schema: schemaText })) as unknown as PrismaClient,
    ),
    clear: withResultFields(clear.base, (c) => c),
    /** The stored `name` of user 1, read with the driver: ciphertext only where it should be. */
    storedName: () =>
      (encrypted.db.prepare(`SELECT "name" FROM "User" WHERE "id" = 1`).get() as { name: string })
        .name,
    close: async () => {
      await encrypted.close();
      await clear.close();
    },
  };
}

/**
 * What code reading a row's properties by name sees of its context columns, at every depth: a
 * response schema (fast-json-stringify, GraphQL resolvers, zod's `pick`) or `row.tenantId ?? x`
 * reads what `in` and a property read give, not what the row's keys or its JSON show.
 */
function byName(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(byName);
  if (typeof value !== "object" || value === null) return value;
  const row = value as Record<string, unknown>;
  const seen: Record<string, unknown> = {};
  for (const column of ["tenantId", "recordId"]) {
    seen[column] = column in row ? (row[column] ?? null) : "absent";
  }
  for (const [key, nested] of Object.entries(row)) {
    if (typeof nested === "object" && nested !== null) seen[key] = byName(nested);
  }
  return seen;
}

/**
 * A result as JSON and as code reading it by name sees it, or the error's class and last line,
 * so that a refusal compares too.
 */
async function outcome(run: () => Promise<unknown>): Promise<string> {
  try {
    const result = await run();
    return `${JSON.stringify(result) ?? "undefined"}\n  by name: ${JSON.stringify(byName(result))}`;
  } catch (error) {
    const message = error instanceof Error ? error.message.trim().split("\n").at(-1) : "";
    return `${error instanceof Error ? error.name : typeof error}: ${message}`;
  }
}

const userShapes: object[] = [
  {},
  { select: { id: true, name: true } },
  { select: { id: true, name: undefined, greeting: true } },
  { select: { id: true, label: true } },
  { select: { email: true, label: true, tagged: true } },
  { select: { plain: true } },
  { select: { id: true, plain: true, posts: { select: { title: true } } } },
  { omit: { tenantId: true } },
  { omit: { name: true } },
  { omit: { tenantId: false } },
  { omit: { tenantId: undefined } },
  { omit: { label: true, tenantId: true } },
  { omit: { name: true, tenantId: true } },
  { include: { posts: true, charts: true } },
  { include: { posts: { select: { teaser: true, place: true } } } },
  { include: { posts: { omit: { tenantId: true } } }, omit: { tenantId: true } },
  { select: { name: true, posts: { select: { place: true, body: true } } } },
  { select: { id: true, _count: true } },
  { include: { _count: { select: { posts: true } } } },
  { select: { charts: { select: { noteLength: true, record: true } } } },
  { include: { charts: { omit: { recordId: true, tenantId: true } } } },
];
const postShapes: object[] = [
  {},
  { select: { teaser: true } },
  { select: { place: true, title: true } },
  { omit: { tenantId: true } },
  { omit: { body: true } },
  { select: { author: { select: { tagged: true } } } },
  { select: { title: true, author: { select: { plain: true } } } },
  { include: { author: true } },
  { include: { author: { omit: { tenantId: true } } } },
];
const chartShapes: object[] = [
  {},
  { select: { noteLength: true } },
  { select: { record: true, note: true } },
  { omit: { recordId: true } },
  { omit: { tenantId: true, recordId: true } },
];

type Operation = readonly [name: string, run: (c: Client, shape: object) => Promise<unknown>];
const tmp = { tenantId: "t1", email: "tmp@example.com", name: "Tmp" };
const userOperations: Operation[] = [
  ["findUnique", (c, s) => c.user.findUnique({ where: { id: 1 }, ...s })],
  ["findUniqueOrThrow", (c, s) => c.user.findUniqueOrThrow({ where: { id: 1 }, ...s })],
  ["findFirst", (c, s) => c.user.findFirst({ where: { tenantId: "t1" }, ...s })],
  ["findFirstOrThrow", (c, s) => c.user.findFirstOrThrow({ where: { tenantId: "t1" }, ...s })],
  ["findMany", (c, s) => c.user.findMany({ orderBy: { id: "asc" }, ...s })],
  ["post.findFirst().author()", (c, s) => c.post.findFirst().author(s as never)],
  ["update", (c, s) => c.user.update({ where: { id: 1 }, data: { name: "Ann" }, ...s })],
  [
    "upsert (update)",
    (c, s) =>
      c.user.upsert({
        where: { tenantId_email: { tenantId: "t1", email: "ann@example.com" } },
        create: { tenantId: "t1", email: "ann@example.com" },
        update: { name: "Ann" },
        ...s,
      }),
  ],
  [
    "create, upsert (create), delete",
    async (c, s) => [
      await c.user.create({ data: tmp, ...s }),
      await c.user.upsert({
        where: { tenantId_email: { tenantId: "t1", email: "tmp2@example.com" } },
        create: { ...tmp, email: "tmp2@example.com" },
        update: {},
        ...s,
      }),
      await c.user.delete({
        where: { tenantId_email: { tenantId: "t1", email: tmp.email } },
        ...s,
      }),
      await c.user.delete({
        where: { tenantId_email: { tenantId: "t1", email: "tmp2@example.com" } },
        ...s,
      }),
    ],
  ],
  [
    "interactive and batch $transaction",
    async (c, s) => [
      await c.$transaction(async (tx) => tx.user.findFirst({ where: { tenantId: "t1" }, ...s })),
      await c.$transaction([c.user.findMany({ where: { tenantId: "t1" }, ...s })]),
    ],
  ],
];
/** createManyAndReturn and updateManyAndReturn take no to-many include or `_count`. */
const userManyOperations: Operation[] = [
  [
    "createManyAndReturn",
    async (c, s) => {
      const made = await c.user.createManyAndReturn({ data: [{ ...tmp, tenantId: "t2" }], ...s });
      await c.user.deleteMany({ where: { tenantId: "t2" } });
      return made;
    },
  ],
  [
    "updateManyAndReturn",
    (c, s) =>
      c.user.updateManyAndReturn({ where: { tenantId: "t1" }, data: { name: "Ann" }, ...s }),
  ],
];
const postOperations: Operation[] = [
  ["findMany", (c, s) => c.post.findMany(s)],
  ["user.findUnique().posts()", (c, s) => c.user.findUnique({ where: { id: 1 } }).posts(s)],
  ["chart.findFirst().owner().posts()", (c, s) => c.chart.findFirst().owner().posts(s)],
  ["update", (c, s) => c.post.update({ where: { id: 1 }, data: { body: "secret body" }, ...s })],
  [
    "create, createManyAndReturn, updateManyAndReturn",
    async (c, s) => {
      const data = { tenantId: "t1", title: "tmp", body: "tmp body", authorId: 1 };
      const made = [
        await c.post.create({ data, ...s }),
        await c.post.createManyAndReturn({ data: [data], ...s }),
        await c.post.updateManyAndReturn({
          where: { tenantId: "t1", title: "tmp" },
          data: { body: "tmp body 2" },
          ...s,
        }),
      ];
      await c.post.deleteMany({ where: { title: "tmp" } });
      return made;
    },
  ],
];
const chartOperations: Operation[] = [
  ["findMany", (c, s) => c.chart.findMany(s)],
  ["user.findFirst().charts()", (c, s) => c.user.findFirst().charts(s)],
  [
    "update",
    (c, s) => c.chart.update({ where: { recordId: "r1" }, data: { note: "a note" }, ...s }),
  ],
  [
    "updateManyAndReturn",
    (c, s) =>
      c.chart.updateManyAndReturn({
        where: { tenantId: "t1", recordId: "r1" },
        data: { note: "a note" },
        ...s,
      }),
  ],
  [
    "create, delete",
    async (c, s) => [
      await c.chart.create({
        data: { tenantId: "t1", recordId: "r9", ssn: "9", note: "nine" },
        ...s,
      }),
      await c.chart.delete({ where: { recordId: "r9" }, ...s }),
    ],
  ],
];

const toMany = (shape: object) => /posts|charts|_count/.test(JSON.stringify(shape));

describe.each([
  ["no global omit", undefined],
  [
    "a global omit of context and encrypted columns",
    {
      user: { tenantId: true },
      post: { tenantId: true, body: true },
      chart: { recordId: true, note: true },
    },
  ],
])("result shapes with %s", (_name, omit) => {
  test("equal to the same queries without the extension", { timeout: 60_000 }, async () => {
    const pair = await openPair(omit);
    const differences: string[] = [];
    const compare = async (label: string, run: (c: Client) => Promise<unknown>) => {
      const encrypted = await outcome(() => run(pair.encrypted));
      const clear = await outcome(() => run(pair.clear));
      if (encrypted !== clear || encrypted.includes("kms1:")) {
        differences.push(`${label}\n  extension: ${encrypted}\n  in clear:  ${clear}`);
      }
    };
    try {
      await compare("seed", async (c) => {
        const user = await c.user.create({
          data: { tenantId: "t1", email: "ann@example.com", name: "Ann", plain: "p" },
          select: { id: true },
        });
        await c.post.create({
          data: { tenantId: "t1", title: "T", body: "secret body", authorId: user.id },
          select: { id: true },
        });
        await c.chart.create({
          data: { tenantId: "t1", recordId: "r1", ssn: "1", note: "a note", ownerId: user.id },
          select: { id: true },
        });
      });
      expect(pair.storedName()).toMatch(/^kms1:/);
      for (const shape of userShapes) {
        const operations = toMany(shape)
          ? userOperations
          : [...userOperations, ...userManyOperations];
        for (const [name, run] of operations) {
          await compare(`user ${name} ${JSON.stringify(shape)}`, (c) => run(c, shape));
        }
      }
      for (const [shapes, operations, model] of [
        [postShapes, postOperations, "post"],
        [chartShapes, chartOperations, "chart"],
      ] as const) {
        for (const shape of shapes) {
          for (const [name, run] of operations) {
            // The fluent API through `owner()` takes no include of the author back.
            if (name.includes("owner") && JSON.stringify(shape).includes("author")) continue;
            await compare(`${model} ${name} ${JSON.stringify(shape)}`, (c) => run(c, shape));
          }
        }
      }
    } finally {
      await pair.close();
    }
    expect(differences).toEqual([]);
  });
});
