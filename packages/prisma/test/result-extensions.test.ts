import { type KmsLike, ValidationError } from "@kms/core";
import { describe, expect } from "vitest";
import { defineModels, fieldEncryption, parseSchema } from "../src/index.ts";
// `test` with the fixtures `db`, `kms` and `keyId`, each set up for the tests that name it.
import { schemaText, type TestDatabase, sqliteTest as test } from "./backends.ts";
import { kmsSchema } from "./generated/kms/kms-schema.ts";

/**
 * Result fields of other extensions (`$extends({ result })`) named in a `select`: Prisma selects
 * the columns a field `needs` below this extension's query hook and computes the field from the
 * hook's result, so the hook must let the name through, decrypt what Prisma added and leave
 * the row as the select shaped it, with whatever the field needs still there.
 */
/**
 * A result as plain data: Prisma returns rows with result fields as proxies that carry a
 * `util.inspect` symbol, which `toEqual` would compare.
 */
const plain = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

describe("result fields of other extensions in a select", () => {
  const alice = { tenantId: "t1", email: "alice@x", name: "Alice" };

  test("applied after the extension or before it, needing encrypted or context columns", async ({
    db,
    kms,
    keyId,
  }) => {
    const seen: unknown[] = [];
    const after = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText })).$extends({
      result: {
        user: {
          // An encrypted column: decrypted before the field is computed.
          greeting: {
            needs: { name: true },
            compute: (u) => {
              seen.push(u.name);
              return `hi ${u.name}`;
            },
          },
        },
      },
    });
    const created = await after.user.create({ data: alice });
    const greeted = await after.user.findMany({ select: { id: true, greeting: true } });
    expect(plain(greeted)).toEqual([{ id: created.id, greeting: "hi Alice" }]);
    expect(seen).toEqual(["Alice"]);
    // The shape the select asked for: the context column read to decrypt is not part of it.
    expect(Object.keys(greeted[0] as object)).toEqual(["id", "greeting"]);
    expect(plain(await after.user.findFirst({ select: { greeting: true, name: true } }))).toEqual({
      greeting: "hi Alice",
      name: "Alice",
    });
    expect(
      plain(await after.user.findFirst({ select: { greeting: true, tenantId: true } })),
    ).toEqual({
      greeting: "hi Alice",
      tenantId: "t1",
    });

    // A context column as the need, from an extension applied before this one.
    const before = db.prisma
      .$extends({
        result: {
          user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
        },
      })
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    const labelled = await before.user.findMany({ select: { id: true, label: true, name: true } });
    expect(plain(labelled)).toEqual([{ id: created.id, label: "of t1", name: "Alice" }]);
    expect(Object.keys(labelled[0] as object).sort()).toEqual(["id", "label", "name"]);
  });

  test("a field needing a value bound to its row, and result fields of related rows", async ({
    db,
    kms,
    keyId,
  }) => {
    const prisma = db.prisma
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends({
        result: {
          chart: { noteLength: { needs: { note: true }, compute: (c) => c.note?.length ?? 0 } },
          post: { teaser: { needs: { body: true }, compute: (p) => p.body.slice(0, 4) } },
          user: { initial: { needs: { name: true }, compute: (u) => u.name?.charAt(0) } },
        },
      });
    const user = await prisma.user.create({ data: alice });
    // `note` is bound to the row's recordId besides its tenant: both are read to decrypt it.
    await prisma.chart.create({
      data: { tenantId: "t1", recordId: "r1", ssn: "123", note: "bound to r1" },
    });
    expect(plain(await prisma.chart.findMany({ select: { noteLength: true } }))).toEqual([
      { noteLength: 11 },
    ]);
    await prisma.post.create({
      data: { tenantId: "t1", title: "t", body: "secret body", authorId: user.id },
    });
    const posts = await prisma.post.findMany({
      select: { title: true, teaser: true, author: { select: { initial: true } } },
    });
    expect(plain(posts)).toEqual([{ title: "t", teaser: "secr", author: { initial: "A" } }]);
    const users = await prisma.user.findMany({
      select: { initial: true, posts: { select: { teaser: true } } },
    });
    expect(plain(users)).toEqual([{ initial: "A", posts: [{ teaser: "secr" }] }]);
    expect(Object.keys(users[0]?.posts[0] as object)).toEqual(["teaser"]);
  });

  test("a query's omit of a column a field needs: computed, and the column kept out of the row's keys", async ({
    db,
    kms,
    keyId,
  }) => {
    // Prisma reads an omitted column a result field needs and hides it itself once the field is
    // computed, which it does only from a row holding the column. The extension reads an omitted
    // context column back to decrypt, and used to delete it again: the field went missing.
    const prisma = db.prisma
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
        },
      });
    const user = await prisma.user.create({ data: alice, omit: { tenantId: true } });
    expect([user.label, user.tagged, Object.keys(user).includes("tenantId")]).toEqual([
      "of t1",
      "Alice of t1",
      false,
    ]);
    await prisma.post.create({
      data: { tenantId: "t1", title: "t", body: "secret body", authorId: user.id },
    });
    const read = await prisma.user.findUniqueOrThrow({
      where: { id: user.id },
      omit: { tenantId: true, name: true },
      include: { posts: { omit: { tenantId: true } } },
    });
    expect(plain(read)).toMatchObject({
      label: "of t1",
      tagged: "Alice of t1",
      posts: [{ body: "secret body", place: "in t1" }],
    });
    expect(Object.keys(read)).not.toContain("tenantId");
    expect(Object.keys(read)).not.toContain("name");
    expect(Object.keys(read.posts[0] as object)).not.toContain("tenantId");
    const fluent = await prisma.post.findFirst().author({ omit: { tenantId: true } });
    expect([fluent?.label, Object.keys(fluent ?? {}).includes("tenantId")]).toEqual([
      "of t1",
      false,
    ]);
    // Omitting the field itself: not computed, and the column stays out.
    const unlabelled = await prisma.user.findFirstOrThrow({
      omit: { label: true, tenantId: true },
    });
    expect(Object.keys(unlabelled)).not.toContain("label");
    expect(Object.keys(unlabelled)).not.toContain("tenantId");
    expect(unlabelled.tagged).toBe("Alice of t1");
  });

  test("a query extension applied after this one that adds to the select: what it adds is kept", async ({
    db,
    kms,
    keyId,
  }) => {
    // Prisma shapes result fields by the arguments the innermost hook ran the query with. The
    // extension gave Prisma the caller's arguments back, dropping what a hook inside its own
    // added: a field that hook named was not computed, a column it named not returned.
    type Select = Record<string, unknown> & { posts?: { select?: Record<string, unknown> } };
    const prisma = db.prisma
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends({
        result: {
          user: { label: { needs: { tenantId: true }, compute: (u) => `of ${u.tenantId}` } },
          post: {
            tag: {
              needs: { tenantId: true, title: true },
              compute: (p) => `${p.tenantId}/${p.title}`,
            },
          },
        },
      })
      .$extends({
        query: {
          user: {
            async findMany({ args, query }) {
              const select = (args.select ?? {}) as Select;
              const posts = select.posts ?? {};
              const widened = {
                ...select,
                label: true,
                plain: true,
                posts: { ...posts, select: { ...posts.select, tag: true } },
              };
              return query({ ...args, select: widened as NonNullable<typeof args.select> });
            },
          },
        },
      });
    const { id } = await prisma.user.create({ data: { ...alice, plain: "p" } });
    await prisma.post.create({ data: { tenantId: "t1", title: "t", body: "b", authorId: id } });
    const [row] = await prisma.user.findMany({
      select: { name: true, posts: { select: { body: true } } },
    });
    expect(plain(row)).toEqual({
      name: "Alice",
      label: "of t1",
      plain: "p",
      posts: [{ body: "b", tag: "t1/t" }],
    });
    // The tenant, read here to decrypt, is hidden behind the fields needing it, as Prisma does.
    expect(Object.keys(row as object).sort()).toEqual(["label", "name", "plain", "posts"]);
    expect(Object.keys(row?.posts[0] as object).sort()).toEqual(["body", "tag"]);
    // A column read here that the hook names too cannot be told from one it copied: taken as
    // read here, it comes back only where a field needs it, hidden behind the field.
    const naming = db.prisma
      .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
      .$extends({
        query: {
          user: {
            async findFirst({ args, query }) {
              return query({ ...args, select: { ...args.select, tenantId: true, id: true } });
            },
          },
        },
      });
    expect(plain(await naming.user.findFirst({ select: { name: true } }))).toEqual({
      name: "Alice",
      id,
    });
  });

  describe("one named like a column, needing an encrypted column the select leaves out", () => {
    // A result field that shadows the column `plain`: a select of `plain` alone looks like a
    // select of plain columns, but Prisma adds the field's needs below the query hook, and the
    // encrypted `name` among them comes back to be decrypted. The extension took the field for
    // the column and read no tenant for it: the query failed, a write after committing (a caller
    // retrying it created the row twice).
    const shadow = {
      result: {
        user: {
          plain: {
            needs: { plain: true, name: true },
            compute: (u: { plain: string | null; name: string | null }) => `${u.plain} / ${u.name}`,
          },
        },
      },
    };
    const only = { select: { plain: true } } as const;

    /** Every write family with `select: { plain: true }`, its result and what it left stored. */
    async function writeEach(prisma: ReturnType<typeof extend>, db: TestDatabase): Promise<void> {
      const stored = async (id: number) => {
        const row = await db.raw("User", id);
        return row === undefined ? undefined : { plain: row.plain, name: String(row.name) };
      };
      const users = () => db.prisma.user.count();
      expect(plain(await prisma.user.create({ data: { ...alice, plain: "p" }, ...only }))).toEqual({
        plain: "p / Alice",
      });
      expect(await users()).toBe(1);
      const { id } = await db.prisma.user.findFirstOrThrow({ where: { plain: "p" } });
      expect(await stored(id)).toEqual({ plain: "p", name: expect.stringMatching(/^kms1:/) });

      expect(
        plain(await prisma.user.update({ where: { id }, data: { plain: "q" }, ...only })),
      ).toEqual({ plain: "q / Alice" });
      expect((await stored(id))?.plain).toBe("q");
      const key = { tenantId_email: { tenantId: "t1", email: alice.email } };
      expect(
        plain(
          await prisma.user.upsert({ where: key, create: alice, update: { plain: "u" }, ...only }),
        ),
      ).toEqual({ plain: "u / Alice" });
      expect([(await stored(id))?.plain, await users()]).toEqual(["u", 1]);
      const bob = { tenantId: "t1", email: "bob@x", name: "Bob", plain: "b" };
      expect(
        plain(
          await prisma.user.upsert({
            where: { tenantId_email: { tenantId: "t1", email: bob.email } },
            create: bob,
            update: {},
            ...only,
          }),
        ),
      ).toEqual({ plain: "b / Bob" });
      expect(await users()).toBe(2);
      expect(
        plain(
          await prisma.user.createManyAndReturn({
            data: [{ ...bob, email: "cy@x", name: "Cy", plain: "c" }],
            ...only,
          }),
        ),
      ).toEqual([{ plain: "c / Cy" }]);
      expect(await users()).toBe(3);
      expect(
        plain(
          await prisma.user.updateManyAndReturn({
            where: { tenantId: "t1", email: "cy@x" },
            data: { plain: "d" },
            ...only,
          }),
        ),
      ).toEqual([{ plain: "d / Cy" }]);
      expect(await db.prisma.user.count({ where: { plain: "d" } })).toBe(1);

      // Nested: the rows a write returns through a relation, and a write nested in another.
      const post = await prisma.post.create({
        data: { tenantId: "t1", title: "t", body: "b", author: { connect: { id } } },
        select: { title: true, author: { select: { plain: true } } },
      });
      expect(plain(post)).toEqual({ title: "t", author: { plain: "u / Alice" } });
      expect(await db.prisma.post.count()).toBe(1);
      const nested = await prisma.user.update({
        where: { id },
        data: { plain: "n", posts: { create: { tenantId: "t1", title: "t2", body: "b2" } } },
        select: { plain: true, posts: { select: { title: true }, orderBy: { id: "asc" } } },
      });
      expect(plain(nested)).toEqual({
        plain: "n / Alice",
        posts: [{ title: "t" }, { title: "t2" }],
      });
      expect([(await stored(id))?.plain, await db.prisma.post.count()]).toEqual(["n", 2]);

      // In an interactive transaction, which a failure would roll back.
      const inTx = await prisma.$transaction((tx) =>
        tx.user.create({ data: { ...bob, email: "dee@x", name: "Dee", plain: "e" }, ...only }),
      );
      expect([plain(inTx), await users()]).toEqual([{ plain: "e / Dee" }, 4]);

      // Its posts first: they refer to it.
      await db.prisma.post.deleteMany();
      expect(plain(await prisma.user.delete({ where: { id }, ...only }))).toEqual({
        plain: "n / Alice",
      });
      expect([await stored(id), await users()]).toEqual([undefined, 3]);
    }
    const extend = (db: TestDatabase, kms: KmsLike, keyId: string) =>
      db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText })).$extends(shadow);

    test("computed in reads and in the rows every write returns, each write done once", async ({
      db,
      kms,
      keyId,
    }) => {
      const prisma = extend(db, kms, keyId);
      await writeEach(prisma, db);
      expect(plain(await prisma.user.findMany({ ...only, orderBy: { id: "asc" } }))).toEqual([
        { plain: "b / Bob" },
        { plain: "d / Cy" },
        { plain: "e / Dee" },
      ]);
      const read = await prisma.user.findFirstOrThrow({
        where: { tenantId: "t1", email: "bob@x" },
        ...only,
      });
      // The tenant read to decrypt `name` is needed by no result field: not left on the row.
      expect(["tenantId" in read, "name" in read]).toEqual([false, false]);
    });

    test("when the extension does not know the field: writes still succeed, reads are refused", async ({
      db,
      kms,
      keyId,
    }) => {
      // Applied through a `$extends` that bypasses the one of the client fieldEncryption returns,
      // the field is unknown to the extension, which takes it for the column. A write's select
      // reads every context column all the same; a read, which changes nothing, is refused.
      const prismaExtends = db.prisma.$extends as (this: unknown, extension: unknown) => unknown;
      const bypassing = db.prisma
        .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
        .$extends({
          client: {
            $extends(this: unknown, extension: unknown) {
              return prismaExtends.call(this, extension);
            },
          },
        });
      const prisma = (bypassing.$extends as (extension: unknown) => unknown)(shadow) as ReturnType<
        typeof extend
      >;
      await writeEach(prisma, db);
      await expect(prisma.user.findFirst(only)).rejects.toThrow(
        /^User\.name came back without tenantId, which it decrypts with: a result field of another extension that needs name is named like a column of User, .*apply that extension through the returned client, give the field a name of its own, or select tenantId too$/,
      );
      // Selected with it, or read whole, the field is computed from the plaintext.
      expect(
        plain(
          await prisma.user.findFirst({
            where: { tenantId: "t1", email: "bob@x" },
            select: { plain: true, name: true },
          }),
        ),
      ).toEqual({ plain: "b / Bob", name: "Bob" });
      expect(
        (await prisma.user.findFirstOrThrow({ where: { tenantId: "t1", email: "bob@x" } })).plain,
      ).toBe("b / Bob");
    });
  });

  test("the generator's descriptor lets them through; a hand-written one only when it lists every relation", async ({
    db,
    kms,
    keyId,
  }) => {
    const result = {
      result: {
        user: {
          greeting: {
            needs: { name: true },
            compute: (u: { name: string | null }) => `hi ${u.name}`,
          },
        },
      },
    };
    const generated = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: kmsSchema }));
    await generated.user.create({ data: alice });
    expect(
      plain(await generated.$extends(result).user.findMany({ select: { greeting: true } })),
    ).toEqual([{ greeting: "hi Alice" }]);

    // A hand-written configuration may leave a relation out: a name it does not know may be one,
    // which the extension would not walk into.
    const config = { User: parseSchemaConfig() };
    const handWritten = db.prisma
      .$extends(fieldEncryption({ kms, keyId, schema: defineModels(config) }))
      .$extends(result);
    const refused = handWritten.user.findMany({ select: { greeting: true } });
    await expect(refused).rejects.toThrow(ValidationError);
    await expect(handWritten.user.findMany({ select: { greeting: true } })).rejects.toThrow(
      /User\.greeting is not a column of User nor a relation its descriptor lists: .*give defineModels every relation and \{ listsEveryRelation: true \}/,
    );
    const listing = db.prisma
      .$extends(
        fieldEncryption({
          kms,
          keyId,
          schema: defineModels(config, { listsEveryRelation: true }),
        }),
      )
      .$extends(result);
    expect(plain(await listing.user.findMany({ select: { greeting: true } }))).toEqual([
      { greeting: "hi Alice" },
    ]);
    expect(() => defineModels(config, { listsEveryRelation: "yes" as never })).toThrow(
      /"listsEveryRelation" expected a boolean/,
    );
  });
});

/** The User model of the test schema as a hand-written configuration, without its relations. */
function parseSchemaConfig() {
  const user = parseSchema(schemaText).User;
  if (user === undefined) throw new Error("no User");
  return {
    encrypted: Object.fromEntries(
      Object.entries(user.encrypted).map(([field, spec]) => [
        field,
        { mode: spec.mode, type: spec.type, storage: spec.storage },
      ]),
    ),
    context: { fromRow: [...user.context.fromRow] },
  };
}
