import type { JsonValue } from "@kms/core";
import { describe, expect, expectTypeOf } from "vitest";
import { defineModels, type FieldInputType, fieldEncryption } from "../src/index.ts";
// `test` with the fixtures `db`, `kms` and `keyId`, each set up for the tests that name it.
import { schemaText, sqliteTest as test } from "./backends.ts";
import type { PrismaClient } from "./generated/client.ts";
import { kmsSchema } from "./generated/kms/kms-schema.ts";

// Each `@ts-expect-error` is checked by `tsc` (the package typecheck covers test/): it fails the
// typecheck if the line compiles. Where such a call also runs, the runtime rejects the same
// value, so the types describe what the extension really accepts.

describe("typed inputs", () => {
  test("declared types map to the JS types a write accepts", () => {
    expectTypeOf<FieldInputType<"date?">>().toEqualTypeOf<Date>();
    expectTypeOf<FieldInputType<"number">>().toEqualTypeOf<number>();
    expectTypeOf<FieldInputType<"bigint">>().toEqualTypeOf<bigint>();
    expectTypeOf<FieldInputType<"bytes">>().toEqualTypeOf<Uint8Array>();
    expectTypeOf<string>().toExtend<FieldInputType<"decimal">>();
    expectTypeOf<{ a: (number | null)[] }>().toExtend<FieldInputType<"json">>();
  });

  test("data takes the declared JS types: create, createMany, update, upsert, nested writes", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    const user = await prisma.user.create({
      data: {
        tenantId: "t1",
        email: "a@x",
        profile: { tags: ["a"], n: null },
        score: 1.5,
        posts: {
          create: [{ tenantId: "t1", title: "p", body: "b", publishedAt: new Date(1) }],
        },
      },
      include: { posts: true },
    });
    expectTypeOf(user.score).toEqualTypeOf<number | null>();
    expect(user.profile).toEqual({ tags: ["a"], n: null });
    expect(user.score).toBe(1.5);
    expect(user.posts[0]?.publishedAt).toEqual(new Date(1));

    const many = await prisma.user.createMany({
      data: [{ tenantId: "t1", email: "b@x", score: 2, profile: [true] }],
    });
    expect(many.count).toBe(1);

    const updated = await prisma.user.update({
      where: { id: user.id, tenantId: "t1" },
      data: {
        score: { set: 3 },
        profile: null,
        posts: {
          updateMany: { where: { tenantId: "t1" }, data: { publishedAt: { set: new Date(2) } } },
          create: { tenantId: "t1", title: "q", body: "c", publishedAt: null },
        },
      },
      include: { posts: { orderBy: { id: "asc" } } },
    });
    expectTypeOf(updated.posts[0]?.publishedAt).toEqualTypeOf<Date | null | undefined>();
    expect(updated.score).toBe(3);
    expect(updated.profile).toBeNull();
    expect(updated.posts.map((p) => p.publishedAt)).toEqual([new Date(2), null]);

    const post = await prisma.post.update({
      where: { id: updated.posts[1]?.id ?? 0, tenantId: "t1" },
      data: {
        publishedAt: new Date(3),
        // The author's tenant is its own, not the post's: the nested where pins it.
        author: { update: { where: { tenantId: "t1" }, data: { score: 4 } } },
      },
      include: { author: true },
    });
    expect(post.publishedAt).toEqual(new Date(3));
    expect(post.author.score).toBe(4);

    const upserted = await prisma.user.upsert({
      where: { id: user.id, tenantId: "t1" },
      create: { tenantId: "t1", email: "a@x", score: 0 },
      update: {
        profile: { v: 1 },
        posts: {
          upsert: {
            where: { id: post.id, tenantId: "t1" },
            create: { tenantId: "t1", title: "r", body: "d" },
            update: { publishedAt: new Date(4) },
          },
        },
      },
      select: { profile: true, posts: { select: { publishedAt: true }, orderBy: { id: "asc" } } },
    });
    expectTypeOf(upserted).toEqualTypeOf<{
      profile: JsonValue;
      posts: { publishedAt: Date | null }[];
    }>();
    expect(upserted).toEqual({
      profile: { v: 1 },
      posts: [{ publishedAt: new Date(2) }, { publishedAt: new Date(4) }],
    });
  });

  test("a value of another type is refused by the types and by the extension alike", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    const { id } = await prisma.user.create({ data: { tenantId: "t1", email: "a@x" } });
    await expect(
      prisma.post.create({
        data: {
          tenantId: "t1",
          title: "x",
          body: "y",
          authorId: id,
          // @ts-expect-error a date field rejects a number
          publishedAt: 5,
        },
      }),
    ).rejects.toThrow(/declared as date, got number/);
    await expect(
      prisma.user.create({
        data: {
          tenantId: "t1",
          email: "b@x",
          // @ts-expect-error a number field rejects an object
          score: { n: 1 },
        },
      }),
    ).rejects.toThrow(/only plain values or \{ set \} can be written/);
    await expect(
      prisma.user.update({
        where: { id, tenantId: "t1" },
        // @ts-expect-error the update form `{ set }` is typed too
        data: { score: { set: "1" } },
      }),
    ).rejects.toThrow(/declared as number, got string/);
    await expect(
      prisma.user.update({
        where: { id, tenantId: "t1" },
        // @ts-expect-error a json field rejects a function
        data: { profile: () => 1 },
      }),
    ).rejects.toThrow(/declared as json/);
    await expect(
      prisma.user.update({
        where: { id, tenantId: "t1" },
        data: {
          // @ts-expect-error nested writes are typed with the related model's fields
          posts: { create: { tenantId: "t1", title: "x", body: "y", publishedAt: "2020-01-01" } },
        },
      }),
    ).rejects.toThrow(/declared as date, got string/);
    await expect(
      prisma.user.createMany({
        data: [
          { tenantId: "t1", email: "c@x", score: 1 },
          // @ts-expect-error every element of createMany's data
          { tenantId: "t1", email: "d@x", score: "1" },
        ],
      }),
    ).rejects.toThrow(/declared as number, got string/);
    expect(await prisma.user.count()).toBe(1);
  });

  test("where-equality on a deterministic typed field takes the declared type", async ({
    db,
    kms,
    keyId,
  }) => {
    const schema = defineModels({
      User: {
        encrypted: {
          email: { mode: "deterministic" },
          score: { type: "number", mode: "deterministic", optional: true },
        },
        context: { fromRow: ["tenantId"] },
      },
    });
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema }));
    await prisma.user.create({ data: { tenantId: "t1", email: "a@x", score: 41.5 } });
    await prisma.user.create({ data: { tenantId: "t1", email: "b@x", score: 7 } });
    const found = await prisma.user.findMany({ where: { tenantId: "t1", score: 41.5 } });
    expect(found.map((u) => u.email)).toEqual(["a@x"]);
    expect(await prisma.user.count({ where: { tenantId: "t1", score: { in: [7, 41.5] } } })).toBe(
      2,
    );
    expect(
      await prisma.user.count({
        where: { tenantId: "t1", OR: [{ score: { not: 7 } }, { score: null }] },
      }),
    ).toBe(1);
    await expect(
      // @ts-expect-error where-equality takes the declared type, not the column's string
      prisma.user.findFirst({ where: { tenantId: "t1", score: "41.5" } }),
    ).rejects.toThrow(/declared as number, got string/);
    const deleted = await prisma.user.deleteMany({ where: { tenantId: "t1", score: 7 } });
    expect(deleted.count).toBe(1);
  });

  test("untyped clients keep Prisma's input types; other extensions and options still apply", ({
    db,
    kms,
    keyId,
  }) => {
    // Never called: only their types matter.
    const untyped = () => {
      const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
      // @ts-expect-error schema text carries no types: the column's `string` stays
      return prisma.user.create({ data: { tenantId: "t1", email: "a@x", score: 1 } });
    };
    expect(untyped).toBeTypeOf("function");
    const stored = () => {
      // Written apart from `$extends(…)`, the extension cannot know the client: results only.
      const extension = fieldEncryption({ kms, keyId, schema: kmsSchema });
      const prisma = db.prisma.$extends(extension);
      // @ts-expect-error inputs keep Prisma's `string` here
      return prisma.user.create({ data: { tenantId: "t1", email: "a@x", score: 1 } });
    };
    expectTypeOf<Awaited<ReturnType<typeof stored>>["score"]>().toEqualTypeOf<number | null>();

    // An explicit type map names the client too (a type argument stops TypeScript inferring it).
    const explicit = () => {
      const prisma = db.prisma.$extends(
        fieldEncryption<{ User: { score: "number?" } }, PrismaClient>({
          kms,
          keyId,
          schema: schemaText,
        }),
      );
      return prisma.user.create({ data: { tenantId: "t1", email: "a@x", score: 1 } });
    };
    expectTypeOf<Awaited<ReturnType<typeof explicit>>["score"]>().toEqualTypeOf<number | null>();

    // Global omit options and result extensions applied later keep typing the results.
    const layered = (base: PrismaClient<never, { user: { plain: true } }>) => {
      const prisma = base.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema })).$extends({
        result: { user: { doubled: { needs: { id: true }, compute: (u) => u.id * 2 } } },
      });
      return Promise.all([
        prisma.user.update({ where: { id: 1 }, data: { score: 2 } }),
        prisma.user.create({
          data: { tenantId: "t1", email: "a@x", score: 1 },
          select: { doubled: true, score: true },
        }),
      ]);
    };
    type Layered = Awaited<ReturnType<typeof layered>>;
    expectTypeOf<Layered[0]["doubled"]>().toEqualTypeOf<number>();
    expectTypeOf<Layered[0]["score"]>().toEqualTypeOf<number | null>();
    expectTypeOf<Layered[0]>().not.toHaveProperty("plain");
    expectTypeOf<Layered[1]>().toEqualTypeOf<{ doubled: number; score: number | null }>();

    // `ReturnType` of a method (no delegate to read the model's types from) types as before.
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    type Found = Awaited<ReturnType<typeof prisma.post.findFirstOrThrow>>;
    expectTypeOf<Found["publishedAt"]>().toEqualTypeOf<Date | null>();
  });
});
