import { ValidationError } from "@kms/core";
import { describe, expect } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { clone } from "../src/internal/codec.ts";
// `test` with the fixtures `db`, `kms` and `keyId`, each set up for the tests that name it.
import { schemaText, sqliteTest as test } from "./backends.ts";
import type { PrismaClient } from "./generated/client.ts";

// The extension rewrites a copy of every query's arguments, never the caller's objects. The copy
// used to be recursive and to assign each member: an own "__proto__" member (JSON.parse makes
// one from a request body) became the copy's prototype and vanished from the data, and a value
// nested a few thousand levels deep overflowed the stack with a RangeError.

/** What JSON.parse makes of a body with a "__proto__" member: an own member, not a prototype. */
const withProtoMember = () => JSON.parse('{"__proto__":{"a":1},"bp":"120/80"}') as object;

/** An array `depth` levels deep, built without recursion. */
function nested(depth: number): unknown[] {
  let value: unknown[] = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

/** The levels of an array built by `nested`, counted without recursion. */
function depthOf(value: unknown): number {
  let depth = 0;
  for (let at = value; Array.isArray(at); at = at[0]) depth += 1;
  return depth;
}

/**
 * The client with field encryption, and the arguments it hands on to Prisma: an extension added
 * after it (query hooks run in the order the extensions were added) records them and answers
 * `{}` without asking the database.
 */
function recordingClient(base: PrismaClient, encryption: ReturnType<typeof fieldEncryption>) {
  const handedOn: unknown[] = [];
  const client = base.$extends(encryption).$extends({
    query: {
      user: {
        async $allOperations({ args }) {
          handedOn.push(args);
          return {};
        },
      },
    },
  });
  return { client, handedOn };
}

describe("the extension's copy of a query's arguments", () => {
  test('keeps an own "__proto__" member of an encrypted json value', async ({ db, kms, keyId }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    const profile = withProtoMember();
    const user = await prisma.user.create({
      data: { tenantId: "t1", email: "ann@example.com", profile: profile as never },
    });
    for (const read of [
      user.profile,
      (await prisma.user.findFirst({ where: { id: user.id, tenantId: "t1" } }))?.profile,
    ]) {
      expect(Object.keys(read as unknown as object)).toEqual(["__proto__", "bp"]);
      expect(Object.getPrototypeOf(read)).toBe(Object.prototype);
      expect(JSON.stringify(read)).toBe('{"__proto__":{"a":1},"bp":"120/80"}');
    }
    // Stored encrypted, like any other value.
    expect(String((await db.raw("User", user.id)).profile)).toMatch(/^kms1:/);
    // The caller's object is untouched.
    expect(JSON.stringify(profile)).toBe('{"__proto__":{"a":1},"bp":"120/80"}');
  });

  test('keeps an own "__proto__" member of a value for a column it does not encrypt', async ({
    db,
    kms,
    keyId,
  }) => {
    const { client, handedOn } = recordingClient(
      db.prisma,
      fieldEncryption({ kms, keyId, schema: schemaText }),
    );
    // `plain` is a column of an encrypted model that the extension leaves alone; a Json column
    // gets its value the same way.
    const plain = withProtoMember();
    await client.user.update({
      where: { id: 1, tenantId: "t1" },
      data: { plain: plain as never },
    });
    const [args] = handedOn as { data: { plain: object } }[];
    expect(args?.data.plain).not.toBe(plain);
    expect(Object.keys(args?.data.plain ?? {})).toEqual(["__proto__", "bp"]);
    expect(Object.getPrototypeOf(args?.data.plain)).toBe(Object.prototype);
    expect(JSON.stringify(args?.data.plain)).toBe('{"__proto__":{"a":1},"bp":"120/80"}');
  });

  test("an encrypted json value nested too deep is refused with a ValidationError", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    // Within what Prisma's own copy of the arguments takes: it is recursive, and a value some
    // thousands of levels deeper ends in its RangeError before the extension runs.
    for (const depth of [513, 4_000]) {
      const created = prisma.user.create({
        data: {
          tenantId: "t1",
          email: `deep-${depth}@example.com`,
          profile: nested(depth) as never,
        },
      });
      await expect(created, String(depth)).rejects.toThrow(ValidationError);
      await expect(created).rejects.toThrow(/nesting deeper than 512 levels/);
    }
    expect(await db.prisma.user.count()).toBe(0);
  });
});

describe("clone", () => {
  test("copies arrays and plain objects, keeps other values, and shares nothing it copied", () => {
    const date = new Date(0);
    const bytes = new Uint8Array([1]);
    const bare = Object.assign(Object.create(null) as object, { a: 1 });
    const shared = { s: 1 };
    // biome-ignore lint/suspicious/noSparseArray: a hole must stay a hole.
    const source = { date, bytes, bare, list: [1, , { shared }], again: shared };
    const copy = clone(source);
    expect(copy).toEqual(source);
    expect(copy.date).toBe(date);
    expect(copy.bytes).toBe(bytes);
    expect(copy.bare).toBe(bare);
    expect(copy.list).not.toBe(source.list);
    expect(1 in copy.list).toBe(false);
    expect(copy.list).toHaveLength(3);
    expect(copy.again).not.toBe(shared);
    expect((copy.list[2] as { shared: object }).shared).not.toBe(shared);
    expect((copy.list[2] as { shared: object }).shared).not.toBe(copy.again);
  });

  test('keeps own "__proto__" members at any depth', () => {
    const source = JSON.parse('[{"x":{"__proto__":{"polluted":true},"y":[{"__proto__":null}]}}]');
    const copy = clone(source) as [{ x: Record<string, unknown> }];
    expect(JSON.stringify(copy)).toBe(JSON.stringify(source));
    expect(Object.getPrototypeOf(copy[0].x)).toBe(Object.prototype);
    expect(copy[0].x.polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  // Prisma copies a query's arguments itself before the extension's hook, recursively: through
  // the client, arguments this deep or with a cycle end in Prisma's RangeError first.
  test("copies a value nested deeper than the call stack", () => {
    const deep = nested(100_000);
    const copy = clone({ data: { plain: deep } });
    // Compared by identity alone: a deep comparison would overflow the stack itself.
    expect(copy.data.plain === deep).toBe(false);
    expect(depthOf(copy.data.plain)).toBe(100_000);
  });

  test("refuses a value that holds itself with a ValidationError", () => {
    const looped: Record<string, unknown> = { a: 1 };
    looped.inner = { back: [looped] };
    expect(() => clone({ data: { profile: looped } })).toThrow(ValidationError);
    expect(() => clone([looped])).toThrow(/the query's arguments hold a cycle/);
  });
});
