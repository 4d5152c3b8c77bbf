import type { JsonValue } from "@kms/core";
import { describe, expect, expectTypeOf } from "vitest";
import { defineModels, fieldEncryption, parseSchema } from "../src/index.ts";
// `test` with the fixtures `db`, `kms` and `keyId`, each set up for the tests that name it.
import { schemaText, sqliteTest as test } from "./backends.ts";
import { Prisma } from "./generated/client.ts";
import { type KmsFieldTypes, kmsSchema } from "./generated/kms/kms-schema.ts";

// The assertions that matter here are checked by `tsc` (the package typecheck covers test/);
// the runtime half shows the declared types are what the extension really returns.

describe("typed results", () => {
  test("the generator emits what parseSchema reads, and the declared types", () => {
    expect(kmsSchema).toEqual(parseSchema(schemaText));
    expectTypeOf<KmsFieldTypes["User"]>().toEqualTypeOf<{ profile: "json?"; score: "number?" }>();
    expectTypeOf<KmsFieldTypes["Post"]>().toEqualTypeOf<{ publishedAt: "date?" }>();
    expectTypeOf<keyof KmsFieldTypes["Comment"]>().toEqualTypeOf<never>();
    expectTypeOf<KmsFieldTypes["Ledger"]>().toEqualTypeOf<{
      active: "boolean?";
      verified: "boolean?";
      balance: "decimal?";
    }>();
  });

  test("booleans and decimals: boolean and Prisma.Decimal, in and out", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    const created = await prisma.ledger.create({
      data: { tenantId: "t1", active: true, verified: false, balance: new Prisma.Decimal("1.50") },
    });
    expectTypeOf(created.active).toEqualTypeOf<boolean | null>();
    expectTypeOf(created.balance).toEqualTypeOf<Prisma.Decimal | null>();
    expect(created).toMatchObject({ active: true, verified: false });
    expect(created.balance).toBeInstanceOf(Prisma.Decimal);
    expect(created.balance?.eq("1.5")).toBe(true);
    const found = await prisma.ledger.findFirstOrThrow({
      where: { tenantId: "t1", verified: false },
      select: { balance: true },
    });
    expectTypeOf(found).toEqualTypeOf<{ balance: Prisma.Decimal | null }>();
    expect(found.balance?.plus(1).toString()).toBe("2.5");
  });

  test("results carry the declared JS types, nested and selected ones too", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    // Write inputs take the declared types too (see typed-inputs.test.ts).
    const profile = { likes: ["tea"], age: 7 };
    const created = await prisma.user.create({
      data: {
        tenantId: "t1",
        email: "a@x",
        profile,
        score: 41.5,
        posts: {
          create: { tenantId: "t1", title: "p", body: "b", publishedAt: new Date(5) },
        },
      },
      include: { posts: true },
    });
    expectTypeOf(created.profile).toEqualTypeOf<JsonValue | null>();
    expectTypeOf(created.profile).not.toEqualTypeOf<string | null>();
    expectTypeOf(created.score).toEqualTypeOf<number | null>();
    expectTypeOf(created.email).toEqualTypeOf<string>();
    expectTypeOf(created.posts[0]?.publishedAt).toEqualTypeOf<Date | null | undefined>();
    expect(created.profile).toEqual(profile);
    expect(created.score).toBe(41.5);
    expect(created.posts[0]?.publishedAt).toEqual(new Date(5));

    const found = await prisma.user.findUniqueOrThrow({
      where: { id: created.id },
      select: { score: true, posts: { select: { publishedAt: true } } },
    });
    expectTypeOf(found).toEqualTypeOf<{
      score: number | null;
      posts: { publishedAt: Date | null }[];
    }>();
    // Never called: only its type error matters.
    // @ts-expect-error a number column is no longer typed as a string
    const misuse = () => found.score?.startsWith("4");
    expect(misuse).toBeTypeOf("function");
    expect(found.score?.toFixed(1)).toBe("41.5");

    type Selected = Prisma.Result<typeof prisma.user, { select: { profile: true } }, "findFirst">;
    expectTypeOf<Selected>().toEqualTypeOf<{ profile: JsonValue | null } | null>();

    const post = await prisma.post.findFirstOrThrow({ include: { author: true } });
    expectTypeOf(post.publishedAt).toEqualTypeOf<Date | null>();
    expectTypeOf(post.author.profile).toEqualTypeOf<JsonValue | null>();
    expect(post.publishedAt?.getTime()).toBe(5);

    const fluent = await prisma.user.findUnique({ where: { id: created.id } }).posts();
    expectTypeOf(fluent).toEqualTypeOf<
      | {
          id: number;
          tenantId: string;
          title: string;
          body: string;
          publishedAt: Date | null;
          authorId: number;
        }[]
      | null
    >();

    const updated = await prisma.user.update({
      where: { id: created.id },
      data: { score: 7 },
    });
    expectTypeOf(updated.score).toEqualTypeOf<number | null>();
    const upserted = await prisma.user.upsert({
      where: { id: created.id, tenantId: "t1" },
      create: { tenantId: "t1", email: "a@x" },
      update: { profile: [1, 2] },
    });
    expectTypeOf(upserted.profile).toEqualTypeOf<JsonValue | null>();
    expect(upserted.profile).toEqual([1, 2]);
    const many = await prisma.user.createManyAndReturn({
      data: [{ tenantId: "t1", email: "b@x", score: 1 }],
    });
    expectTypeOf(many[0]?.score).toEqualTypeOf<number | null | undefined>();
    const [inBatch] = await prisma.$transaction([prisma.post.findMany()]);
    expectTypeOf(inBatch[0]?.publishedAt).toEqualTypeOf<Date | null | undefined>();
    await prisma.$transaction(async (tx) => {
      const u = await tx.user.findFirstOrThrow({ where: { id: created.id } });
      expectTypeOf(u.score).toEqualTypeOf<number | null>();
    });
  });

  test("typed configuration and an explicit type map type results the same way", ({
    db,
    kms,
    keyId,
  }) => {
    const schema = defineModels({
      User: {
        encrypted: {
          email: { mode: "deterministic" },
          profile: { type: "json", optional: true },
          score: { type: "number" },
        },
        relations: { posts: "Post" },
      },
      Post: { encrypted: { publishedAt: { type: "date" } } },
    });
    const fromConfig = db.prisma.$extends(fieldEncryption({ kms, keyId, schema }));
    type ConfigUser = Awaited<ReturnType<typeof fromConfig.user.findFirstOrThrow>>;
    expectTypeOf<ConfigUser["profile"]>().toEqualTypeOf<JsonValue | null>();
    // Declared without `optional: true`: the type map says the column is required.
    expectTypeOf<ConfigUser["score"]>().toEqualTypeOf<number>();
    expectTypeOf<ConfigUser["email"]>().toEqualTypeOf<string>();

    const explicit = db.prisma.$extends(
      fieldEncryption<{ Post: { publishedAt: "date?" } }>({ kms, keyId, schema: schemaText }),
    );
    type ExplicitPost = Awaited<ReturnType<typeof explicit.post.findFirstOrThrow>>;
    expectTypeOf<ExplicitPost["publishedAt"]>().toEqualTypeOf<Date | null>();
    type ExplicitUser = Awaited<ReturnType<typeof explicit.user.findFirstOrThrow>>;
    expectTypeOf<ExplicitUser["profile"]>().toEqualTypeOf<string | null>();

    // Schema text alone carries no types: Prisma's generated ones stay.
    const untyped = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    type UntypedUser = Awaited<ReturnType<typeof untyped.user.findFirstOrThrow>>;
    expectTypeOf<UntypedUser["score"]>().toEqualTypeOf<string | null>();
    // @ts-expect-error a type map entry must be a field value type
    fieldEncryption<{ User: { score: "float" } }>({ kms, keyId, schema: schemaText });
  });
});
