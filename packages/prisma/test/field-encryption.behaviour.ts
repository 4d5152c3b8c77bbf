import {
  createKms,
  FieldEncryptionEngine,
  InvalidCiphertextError,
  type Kms,
  MemoryDataKeyStore,
  type ReencryptCheckpoint,
  reencryptFields,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  defineModels,
  type FieldEncryptionOptions,
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
  type SchemaDescriptor,
} from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";
import { Prisma } from "./generated/client.ts";

const PREFIX = "kms1:";

/** An update's `data: {}`: the extension's read of a row's context columns before it writes. */
const isEmptyData = (data: unknown) =>
  typeof data === "object" && data !== null && Object.keys(data).length === 0;

/** The behaviour every database must show; run once per backend. */
export function describeFieldEncryption(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`@kms/prisma on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;

    const extend = (extra: Partial<FieldEncryptionOptions> = {}) =>
      db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText, ...extra }));
    let prisma: ReturnType<typeof extend>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      prisma = extend();
    });
    afterEach(async () => {
      await db.close();
    });

    const alice = {
      tenantId: "t1",
      email: "alice@example.com",
      name: "Alice Liddell",
      phone: "+1 555 0100",
      profile: { likes: ["tea"], age: 7 } as unknown as string,
      score: 41.5 as unknown as string,
      avatar: Uint8Array.from(Buffer.from("AVATAR-BYTES")),
    };

    test("stored values are ciphertext; the extended client returns plaintext", async () => {
      const created = await prisma.user.create({ data: alice });
      expect(created).toMatchObject({ ...alice, avatar: expect.any(Uint8Array) });
      expect(Buffer.from(created.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
      const raw = await db.raw("User", created.id);
      for (const field of ["email", "name", "phone", "profile", "score"]) {
        expect(String(raw[field]).startsWith(PREFIX), field).toBe(true);
        expect(String(raw[field])).not.toContain("alice");
      }
      expect(raw.tenantId).toBe("t1");
      expect(raw.phoneIndex).toMatch(/^[A-Za-z0-9_-]{16}$/);
      expect(Buffer.from(raw.avatar as Uint8Array).includes("AVATAR")).toBe(false);
      const found = await prisma.user.findUnique({ where: { id: created.id } });
      expect(found?.profile).toEqual({ likes: ["tea"], age: 7 } as unknown as string);
      expect(found?.score).toBe(41.5 as unknown as string);
      // The base client is not encrypting: it sees what is stored.
      const base = await db.prisma.user.findUnique({ where: { id: created.id } });
      expect(base?.name?.startsWith(PREFIX)).toBe(true);
    });

    test("deterministic fields support equality, in, notIn, not and unique constraints", async () => {
      await prisma.user.create({ data: alice });
      await prisma.user.create({ data: { tenantId: "t1", email: "bob@example.com" } });
      await prisma.user.create({
        data: { tenantId: "t2", email: "alice@example.com", name: "Other Alice" },
      });
      const byUnique = await prisma.user.findUnique({
        where: { tenantId_email: { tenantId: "t1", email: "alice@example.com" } },
      });
      expect(byUnique?.name).toBe("Alice Liddell");
      const t2 = await prisma.user.findFirst({
        where: { tenantId: "t2", email: { equals: "alice@example.com" } },
      });
      expect(t2?.name).toBe("Other Alice");
      const inList = await prisma.user.findMany({
        where: { tenantId: "t1", email: { in: ["bob@example.com", "nobody@example.com"] } },
      });
      expect(inList.map((u) => u.email)).toEqual(["bob@example.com"]);
      const notIn = await prisma.user.findMany({
        where: { tenantId: "t1", email: { notIn: ["bob@example.com"] } },
      });
      expect(notIn.map((u) => u.email)).toEqual(["alice@example.com"]);
      const not = await prisma.user.count({
        where: { tenantId: "t1", email: { not: "alice@example.com" } },
      });
      expect(not).toBe(1);
      await expect(
        prisma.user.create({ data: { tenantId: "t1", email: "bob@example.com" } }),
      ).rejects.toThrow(/Unique constraint/i);
    });

    test("blind-indexed fields are found by normalized equality", async () => {
      const created = await prisma.user.create({ data: alice });
      const found = await prisma.user.findMany({
        where: { tenantId: "t1", phone: "  +1 555 0100 " },
      });
      expect(found.map((u) => u.id)).toEqual([created.id]);
      expect(
        await prisma.user.count({ where: { tenantId: "t1", phone: { in: ["x", "+1 555 0100"] } } }),
      ).toBe(1);
      expect(await prisma.user.count({ where: { tenantId: "t2", phone: "+1 555 0100" } })).toBe(0);
      await expect(
        prisma.user.create({ data: { tenantId: "t1", email: "m@x", phoneIndex: "forged" } }),
      ).rejects.toBeInstanceOf(ValidationError);
    });

    test("filters that cannot run on ciphertext are errors, not wrong results", async () => {
      await expect(
        prisma.user.findMany({ where: { tenantId: "t1", email: { contains: "alice" } } }),
      ).rejects.toThrow(/"contains" filter cannot run on ciphertext/);
      await expect(
        prisma.user.findMany({ where: { tenantId: "t1", name: "Alice" } }),
      ).rejects.toThrow(/randomized/);
      await expect(prisma.user.findMany({ where: { email: "alice@example.com" } })).rejects.toThrow(
        /tenantId/,
      );
      await expect(prisma.user.findMany({ orderBy: { name: "asc" } })).rejects.toThrow(/ordering/);
      await expect(
        prisma.user.findMany({ where: { tenantId: "t1" }, distinct: ["name"] }),
      ).rejects.toThrow(/User.name is encrypted: distinct cannot compare ciphertext/);
      await expect(
        prisma.user.findMany({ where: { tenantId: "t1" }, distinct: "name" }),
      ).rejects.toThrow(/distinct/);
      await expect(
        prisma.user.findMany({ where: { tenantId: "t1", phoneIndex: "x" } }),
      ).rejects.toThrow(/blind index/);
      expect(await prisma.user.count({ where: { name: null } })).toBe(0);
      await expect(
        prisma.user.count({ where: { tenantId: "t1", phone: 5 as unknown as string } }),
      ).rejects.toThrow(/User.phone is a string: got number/);
      // As in Prisma, `undefined` means "no filter", on encrypted fields too (JavaScript callers
      // build such wheres from optional query parameters; the types here forbid it).
      const all = await prisma.user.count({ where: { tenantId: "t1" } });
      const unset = (where: object) => where as { tenantId: string };
      expect(await prisma.user.count({ where: unset({ tenantId: "t1", email: undefined }) })).toBe(
        all,
      );
      expect(
        await prisma.user.count({ where: unset({ tenantId: "t1", email: { equals: undefined } }) }),
      ).toBe(all);
    });

    test("a ciphertext copied to another row, tenant or column does not decrypt", async () => {
      const a = await prisma.user.create({ data: alice });
      const b = await prisma.user.create({
        data: { tenantId: "t2", email: "b@example.com", name: "Bob" },
      });
      const c = await prisma.user.create({
        data: { tenantId: "t1", email: "c@example.com", name: "Carol" },
      });
      const stolen = (await db.raw("User", a.id)).name;
      await db.rawSet("User", b.id, "name", stolen);
      await expect(prisma.user.findUnique({ where: { id: b.id } })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      await db.rawSet("User", c.id, "phone", stolen);
      await expect(prisma.user.findUnique({ where: { id: c.id } })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      // Same tenant, same column, other row: `name` is bound to tenant, model and field only, so
      // the copy would read; a field bound to its row is tested in field-context.behaviour.ts.
      expect((await prisma.user.findUnique({ where: { id: a.id } }))?.name).toBe("Alice Liddell");
    });

    test("plaintext in an encrypted column is an error unless legacy reads are enabled", async () => {
      const a = await prisma.user.create({ data: { tenantId: "t1", email: "a@example.com" } });
      await db.rawSet("User", a.id, "name", "legacy plain name");
      await expect(prisma.user.findUnique({ where: { id: a.id } })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      const legacy = extend({ legacyPlaintext: true });
      expect((await legacy.user.findUnique({ where: { id: a.id } }))?.name).toBe(
        "legacy plain name",
      );
    });

    test("refuses to encrypt a value that is already ciphertext", async () => {
      const a = await prisma.user.create({ data: alice });
      const stored = (await db.raw("User", a.id)).name as string;
      await expect(
        prisma.user.update({ where: { id: a.id }, data: { name: stored } }),
      ).rejects.toThrow(/already holds ciphertext/);
    });

    test("applied twice in one chain of $extends: refused when applied, before any query", async () => {
      // A second instance inside the first took the first's ciphertext for values to encrypt
      // ("already holds ciphertext") and its own results for values to decrypt.
      const again = () => fieldEncryption({ kms, keyId, schema: schemaText });
      expect(() => prisma.$extends(again())).toThrow(ValidationError);
      expect(() => prisma.$extends(again())).toThrow(/already applied to this client/);
      // Through clients made from the extended one too, other extensions between.
      const labelled = prisma.$extends({
        result: { user: { label: { needs: { tenantId: true }, compute: (u) => u.tenantId } } },
      });
      expect(() => labelled.$extends(again())).toThrow(/already applied/);
      // Two instances side by side on the base client are two chains: both work.
      const sibling = db.prisma.$extends(again());
      const { id } = await prisma.user.create({ data: alice, select: { id: true } });
      expect(
        await sibling.user.findUniqueOrThrow({ where: { id }, select: { name: true } }),
      ).toEqual({ name: alice.name });
    });

    test("a key holding undefined in write data writes nothing, as in Prisma", async () => {
      // JavaScript callers spread optional inputs (`{ ...form }`); the types here forbid it.
      const unset = <T>(data: object) => data as T;
      type UserData = Parameters<typeof prisma.user.update>[0]["data"];
      const a = await prisma.user.create({
        data: unset({ tenantId: "t1", email: "a@x", name: undefined, phone: undefined }),
      });
      expect([a.name, a.phone, a.phoneIndex]).toEqual([null, null, null]);
      await prisma.user.update({ where: { id: a.id }, data: { name: "Ann" } });
      const kept = await prisma.user.update({
        where: { id: a.id },
        data: unset<UserData>({ name: undefined, plain: "p1" }),
      });
      expect([kept.name, kept.plain]).toEqual(["Ann", "p1"]);
      // Not a change of the context column, so nothing to orphan.
      const same = await prisma.user.update({
        where: { id: a.id },
        data: unset<UserData>({ tenantId: undefined, plain: "p2" }),
      });
      expect([same.tenantId, same.name, same.plain]).toEqual(["t1", "Ann", "p2"]);
      // Nothing to encrypt: no need to read the row's tenant first, so a batch takes it too.
      const [batched] = await prisma.$transaction([
        prisma.user.update({
          where: { id: a.id },
          data: unset<UserData>({ name: undefined, plain: "p3" }),
        }),
      ]);
      expect([batched.name, batched.plain]).toEqual(["Ann", "p3"]);
      expect(String((await db.raw("User", a.id)).name).startsWith(PREFIX)).toBe(true);
      // The same for a column a field is bound to (`note` and `vitals` to `recordId`).
      const chart = await prisma.chart.create({
        data: { tenantId: "t1", recordId: "r1", ssn: "1", note: "N", vitals: "{}" },
      });
      const [updated] = await prisma.$transaction([
        prisma.chart.update({
          where: { id: chart.id, tenantId: "t1" },
          data: unset<Parameters<typeof prisma.chart.update>[0]["data"]>({
            recordId: undefined,
            note: undefined,
            name: "Chart",
          }),
        }),
      ]);
      expect([updated.recordId, updated.note, updated.name]).toEqual(["r1", "N", "Chart"]);
      // A bound field left undefined is not rewritten: moving its row column still orphans it.
      await expect(
        prisma.chart.update({
          where: { id: chart.id, tenantId: "t1" },
          data: unset<Parameters<typeof prisma.chart.update>[0]["data"]>({
            recordId: "r2",
            note: undefined,
            vitals: "{}",
          }),
        }),
      ).rejects.toThrow(/changing recordId would orphan the values of note bound to it/);
    });

    test("a Prisma.Decimal looks up a deterministic decimal field as a value", async () => {
      const decimals = extend({
        schema: defineModels({
          User: {
            encrypted: { plain: { mode: "deterministic", type: "decimal" } },
            context: { fromRow: ["tenantId"] },
          },
        }),
      });
      const a = await decimals.user.create({
        data: { tenantId: "t1", email: "a@x", plain: new Prisma.Decimal("1.5") as never },
      });
      await decimals.user.create({ data: { tenantId: "t1", email: "b@x", plain: "2.5" } });
      const where = { tenantId: "t1", plain: new Prisma.Decimal("1.5") as never };
      expect((await decimals.user.findMany({ where })).map((u) => u.id)).toEqual([a.id]);
      expect(String((await db.raw("User", a.id)).plain).startsWith(PREFIX)).toBe(true);
    });

    test("booleans and decimals are stored as ciphertext and returned as boolean and Prisma.Decimal", async () => {
      const created = await prisma.ledger.create({
        data: {
          tenantId: "t1",
          active: true as never,
          verified: false as never,
          balance: new Prisma.Decimal("1.50") as never,
        },
      });
      const raw = await db.raw("Ledger", created.id);
      for (const field of ["active", "verified", "balance"]) {
        expect(String(raw[field]).startsWith(PREFIX), field).toBe(true);
      }
      const other = await prisma.ledger.create({
        data: { tenantId: "t1", active: false as never, verified: true as never, balance: "-0.25" },
      });
      // Read warm (the data keys cached) and cold (a fresh engine, one decryptMany).
      for (const client of [prisma, extend()]) {
        const [first, second] = await client.ledger.findMany({
          where: { tenantId: "t1" },
          orderBy: { id: "asc" },
        });
        expect(first).toMatchObject({ id: created.id, active: true, verified: false });
        expect(second).toMatchObject({ id: other.id, active: false, verified: true });
        const balance = first?.balance as unknown;
        expect(balance).toBeInstanceOf(Prisma.Decimal);
        expect(String(balance)).toBe("1.5");
        expect((balance as Prisma.Decimal).equals("1.50")).toBe(true);
        expect(String(second?.balance)).toBe("-0.25");
      }
      expect(created.active).toBe(true);
      expect(created.balance as unknown).toBeInstanceOf(Prisma.Decimal);
      // A deterministic boolean is looked up by equality; false is a value, not "no filter".
      const unverified = await prisma.ledger.findMany({
        where: { tenantId: "t1", verified: false as never },
      });
      expect(unverified.map((l) => l.id)).toEqual([created.id]);
      expect(
        await prisma.ledger.count({ where: { tenantId: "t1", verified: { in: [true] as never } } }),
      ).toBe(1);
      const updated = await prisma.ledger.update({
        where: { id: created.id },
        data: { active: false as never, balance: 2.25 as never },
      });
      expect(updated).toMatchObject({ active: false });
      expect(String(updated.balance)).toBe("2.25");
      await expect(
        prisma.ledger.create({ data: { tenantId: "t1", active: "yes" } }),
      ).rejects.toBeInstanceOf(ValidationError);
    });

    test("aggregate and groupBy take lookups in where; computing over encrypted fields is refused", async () => {
      await prisma.user.create({ data: { ...alice, score: 3 as unknown as string } });
      await prisma.user.create({ data: { tenantId: "t1", email: "b@x", name: "B" } });
      const where = { tenantId: "t1", email: alice.email };
      expect(await prisma.user.aggregate({ where, _count: true })).toEqual({ _count: 1 });
      expect(
        await prisma.user.groupBy({ by: ["tenantId"], where, _count: { _all: true } }),
      ).toEqual([{ tenantId: "t1", _count: { _all: 1 } }]);
      // A value that happens to spell an encrypted field's name is only a value.
      expect(await prisma.user.aggregate({ where: { plain: "email" }, _count: true })).toEqual({
        _count: 0,
      });
      const refused = /User\.(email|name|score) is encrypted: (aggregate|groupBy) cannot compute/;
      await expect(prisma.user.groupBy({ by: ["email"] })).rejects.toThrow(refused);
      await expect(prisma.user.aggregate({ _max: { name: true } })).rejects.toThrow(refused);
      await expect(prisma.user.aggregate({ _count: { email: true } })).rejects.toThrow(refused);
      await expect(
        prisma.user.groupBy({ by: ["tenantId"], having: { score: { _max: { gt: "1" } } } }),
      ).rejects.toThrow(refused);
      await expect(
        prisma.user.groupBy({ by: ["tenantId"], orderBy: { _count: { name: "asc" } } }),
      ).rejects.toThrow(refused);
    });

    test("aggregate over a model with a BigInt column takes BigInt values", async () => {
      // KmsDataKey is the test schema's one model with a BigInt column; here it is an encrypted
      // model and data keys live in memory.
      const keys = extend({
        schema: defineModels({
          KmsDataKey: { encrypted: { purpose: {} }, context: { fromRow: ["kmsKeyId"] } },
        }),
        dataKeyModel: "Audit",
        dataKeyStore: new MemoryDataKeyStore(),
      });
      const row = {
        kmsKeyId: "k1",
        wrappedKey: new Uint8Array(1),
        encryptionContext: "{}",
        purpose: "p",
      };
      await keys.kmsDataKey.create({ data: { ...row, id: "a", createdAt: 5n } });
      await keys.kmsDataKey.create({ data: { ...row, id: "b", createdAt: 9n } });
      expect(await keys.kmsDataKey.aggregate({ where: { createdAt: 5n }, _count: true })).toEqual({
        _count: 1,
      });
      expect(
        await keys.kmsDataKey.groupBy({
          by: ["kmsKeyId"],
          having: { createdAt: { _sum: { gt: 10n } } },
          _count: { _all: true },
        }),
      ).toEqual([{ kmsKeyId: "k1", _count: { _all: 2 } }]);
    });

    test("count with select counts what was selected, nothing more", async () => {
      await prisma.user.create({ data: alice });
      await prisma.user.create({ data: { tenantId: "t1", email: "b@x" } });
      expect(await prisma.user.count({ select: { _all: true, name: true } })).toEqual({
        _all: 2,
        name: 1,
      });
    });

    test("bulk writes, updates, upserts and deletes", async () => {
      await prisma.user.createMany({
        data: [
          { tenantId: "t1", email: "u1@x", name: "U1" },
          { tenantId: "t1", email: "u2@x", name: "U2" },
        ],
      });
      const returned = await prisma.user.createManyAndReturn({
        data: [{ tenantId: "t2", email: "u3@x", name: "U3" }],
      });
      expect(returned[0]?.name).toBe("U3");
      const u1 = await prisma.user.findFirstOrThrow({ where: { tenantId: "t1", email: "u1@x" } });
      const updated = await prisma.user.update({
        where: { id: u1.id },
        data: { name: { set: "U1b" } },
      });
      expect(updated.name).toBe("U1b");
      expect(
        await prisma.user.updateMany({ where: { tenantId: "t1" }, data: { phone: "000" } }),
      ).toEqual({ count: 2 });
      expect((await prisma.user.findMany({ where: { tenantId: "t1", phone: "000" } })).length).toBe(
        2,
      );
      await expect(prisma.user.updateMany({ data: { phone: "1" } })).rejects.toThrow(/tenantId/);
      const up1 = await prisma.user.upsert({
        where: { tenantId_email: { tenantId: "t1", email: "u9@x" } },
        create: { tenantId: "t1", email: "u9@x", name: "new" },
        update: { name: "updated" },
      });
      expect(up1.name).toBe("new");
      const up2 = await prisma.user.upsert({
        where: { tenantId_email: { tenantId: "t1", email: "u9@x" } },
        create: { tenantId: "t1", email: "u9@x", name: "new" },
        update: { name: "updated" },
      });
      expect([up2.id, up2.name]).toEqual([up1.id, "updated"]);
      expect(String((await db.raw("User", up2.id)).name).startsWith(PREFIX)).toBe(true);
      const deleted = await prisma.user.delete({ where: { id: up2.id } });
      expect(deleted.name).toBe("updated");
      expect(await prisma.user.deleteMany({ where: { tenantId: "t1", email: "u2@x" } })).toEqual({
        count: 1,
      });
      await expect(prisma.user.findUniqueOrThrow({ where: { id: up2.id } })).rejects.toThrow();
      await expect(
        prisma.user.update({ where: { id: u1.id }, data: { tenantId: "t9" } }),
      ).rejects.toThrow(/orphan/);
    });

    test("nested writes are encrypted and included relations are decrypted", async () => {
      const user = await prisma.user.create({
        data: {
          ...alice,
          posts: {
            create: [
              {
                tenantId: "t1",
                title: "one",
                body: "first secret body",
                publishedAt: new Date("2026-01-02") as unknown as string,
              },
              { tenantId: "t1", title: "two", body: "second secret body" },
            ],
          },
        },
        include: { posts: true },
      });
      expect(user.posts.map((p) => p.body)).toEqual(["first secret body", "second secret body"]);
      expect(user.posts[0]?.publishedAt).toEqual(new Date("2026-01-02"));
      for (const p of user.posts) {
        const raw = await db.raw("Post", p.id);
        expect(String(raw.body).startsWith(PREFIX)).toBe(true);
        expect(String(raw.body)).not.toContain("secret");
      }
      await prisma.user.update({
        where: { id: user.id },
        data: {
          posts: {
            // A post's tenant is its own (it may differ from its author's): the nested where
            // pins it.
            update: {
              where: { id: user.posts[1]?.id as number, tenantId: "t1" },
              data: { body: "edited body" },
            },
            create: { tenantId: "t1", title: "three", body: "third body" },
          },
        },
      });
      const selected = await prisma.user.findUnique({
        where: { id: user.id },
        select: { email: true, posts: { select: { body: true }, orderBy: { id: "asc" } } },
      });
      expect(selected).toEqual({
        email: "alice@example.com",
        posts: [{ body: "first secret body" }, { body: "edited body" }, { body: "third body" }],
      });
      const fluent = await prisma.user.findUnique({ where: { id: user.id } }).posts();
      expect(fluent?.map((p) => p.body)).toEqual([
        "first secret body",
        "edited body",
        "third body",
      ]);
      const post = await prisma.post.findFirst({
        where: { title: "two" },
        include: { author: true },
      });
      expect(post?.author.name).toBe("Alice Liddell");
      // The author's tenant is its own, not the post's: the relation filter pins it.
      const filtered = await prisma.post.findMany({
        where: { tenantId: "t1", author: { is: { tenantId: "t1", email: "alice@example.com" } } },
      });
      expect(filtered).toHaveLength(3);
      await expect(
        prisma.post.findMany({
          where: { tenantId: "t1", author: { is: { email: "alice@example.com" } } },
        }),
      ).rejects.toThrow(/User binds encrypted fields to tenantId/);
    });

    test("a relation its descriptor does not list is refused, never walked past", async () => {
      const userConfig = {
        encrypted: { email: { mode: "deterministic" as const }, name: {} },
        context: { fromRow: ["tenantId"] },
      };
      // The encrypted model alone, as a hand-written configuration often starts.
      const partial = extend({ schema: defineModels({ User: userConfig }) });
      const user = await partial.user.create({
        data: { tenantId: "t1", email: "alice@x", name: "Alice" },
      });
      await db.prisma.post.create({
        data: { tenantId: "t1", title: "t", body: "b", authorId: user.id },
      });
      const unlisted = /Post\.author is not a column of Post nor a relation its descriptor lists/;
      const attempts: Record<string, () => Promise<unknown>> = {
        // Would return the author's ciphertext as its values.
        include: () => partial.post.findMany({ include: { author: true } }),
        select: () => partial.post.findMany({ select: { author: { select: { name: true } } } }),
        fluent: () => partial.post.findFirst().author(),
        // Would compare the plaintext with ciphertext, and send it to the database.
        filter: () =>
          partial.post.findMany({
            where: { author: { is: { tenantId: "t1", email: "alice@x" } } },
          }),
        "filter in OR": () =>
          partial.post.count({ where: { OR: [{ author: { tenantId: "t1", email: "alice@x" } }] } }),
        "filtered relation count": () =>
          partial.user.findMany({
            select: { _count: { select: { posts: { where: { title: "t" } } } } },
          }),
        // Would store the plaintext.
        "nested create": () =>
          partial.post.create({
            data: {
              tenantId: "t1",
              title: "t",
              body: "b",
              author: { create: { tenantId: "t1", email: "bob@x", name: "Plain Bob" } },
            },
          }),
        "nested connect": () =>
          partial.post.update({
            where: { id: 1 },
            data: { author: { connect: { tenantId_email: { tenantId: "t1", email: "alice@x" } } } },
          }),
      };
      for (const [label, run] of Object.entries(attempts)) {
        const message =
          label === "filtered relation count" ? /User\.posts is not a column/ : unlisted;
        await expect(run(), label).rejects.toThrow(message);
        await expect(run(), label).rejects.toBeInstanceOf(ValidationError);
      }
      expect(await db.prisma.user.count()).toBe(1);
      expect(String((await db.raw("Post", 1)).authorId)).toBe(String(user.id));
      // What reads no value of the related rows still works: a bare relation count, a compound
      // unique, the model's own columns.
      expect(
        await partial.user.findMany({ select: { id: true, _count: { select: { posts: true } } } }),
      ).toEqual([{ id: user.id, _count: { posts: 1 } }]);
      expect(
        (
          await partial.user.findUnique({
            where: { tenantId_email: { tenantId: "t1", email: "alice@x" } },
          })
        )?.name,
      ).toBe("Alice");
      expect(await partial.post.count({ where: { tenantId: "t1" } })).toBe(1);
      // Listed on both sides, the same queries encrypt, look up and decrypt.
      const listed = extend({
        schema: defineModels({
          User: { ...userConfig, relations: { posts: "Post" } },
          Post: { relations: { author: "User" } },
        }),
      });
      const post = await listed.post.findFirstOrThrow({ include: { author: true } });
      expect(post.author.name).toBe("Alice");
      expect(await listed.post.findFirst().author()).toMatchObject({ name: "Alice" });
      expect(
        await listed.post.count({
          where: { author: { is: { tenantId: "t1", email: "alice@x" } } },
        }),
      ).toBe(1);
      const bob = await listed.post.create({
        data: {
          tenantId: "t1",
          title: "t",
          body: "b",
          author: { create: { tenantId: "t1", email: "bob@x", name: "Plain Bob" } },
        },
        include: { author: true },
      });
      expect(bob.author.name).toBe("Plain Bob");
      expect(String((await db.raw("User", bob.authorId)).name).startsWith(PREFIX)).toBe(true);
    });

    test("ordering or distinct over ciphertext is refused in relations as at the top", async () => {
      const user = await prisma.user.create({
        data: { ...alice, posts: { create: { tenantId: "t1", title: "a", body: "first body" } } },
        include: { posts: true },
      });
      const post = user.posts[0] as { id: number };
      const ordering = (field: string) =>
        new RegExp(`${field} is encrypted: ordering by ciphertext is meaningless`);
      const distinct = (field: string) =>
        new RegExp(`${field} is encrypted: distinct cannot compare ciphertext`);
      const refused: [() => Promise<unknown>, RegExp][] = [
        // Ordering included rows.
        [
          () => prisma.user.findMany({ include: { posts: { orderBy: { body: "asc" } } } }),
          ordering("Post.body"),
        ],
        [
          () =>
            prisma.user.findMany({
              select: { posts: { orderBy: [{ title: "asc" }, { body: "desc" }] } },
            }),
          ordering("Post.body"),
        ],
        [
          () =>
            prisma.user.findMany({
              include: { posts: { include: { comments: { orderBy: { text: "asc" } } } } },
            }),
          ordering("Comment.text"),
        ],
        [
          () =>
            prisma.user.findUnique({ where: { id: user.id } }).posts({ orderBy: { body: "asc" } }),
          ordering("Post.body"),
        ],
        // Ordering by a related row's field, at the top and in an include.
        [
          () => prisma.post.findMany({ orderBy: { author: { name: "asc" } } }),
          ordering("User.name"),
        ],
        [
          () =>
            prisma.post.findMany({
              orderBy: [{ id: "asc" }, { author: { phone: { sort: "asc", nulls: "last" } } }],
            }),
          ordering("User.phone"),
        ],
        [() => prisma.user.findMany({ orderBy: { email: "asc" } }), ordering("User.email")],
        [
          () => prisma.chart.findMany({ orderBy: { owner: { email: "desc" } } }),
          ordering("User.email"),
        ],
        [
          () => prisma.post.aggregate({ orderBy: { author: { name: "asc" } }, _count: true }),
          ordering("User.name"),
        ],
        [
          () =>
            prisma.user.findMany({
              include: { posts: { orderBy: { author: { profile: "asc" } } } },
            }),
          ordering("User.profile"),
        ],
        // Distinct over included rows.
        [
          () => prisma.user.findMany({ select: { posts: { distinct: ["body"] } } }),
          distinct("Post.body"),
        ],
        [
          () => prisma.user.findMany({ include: { posts: { distinct: "body" } } }),
          distinct("Post.body"),
        ],
        [
          () => prisma.user.findMany({ include: { charts: { distinct: ["note"] } } }),
          distinct("Chart.note"),
        ],
        // A deterministic field bound to the tenant: the included rows' where must pin it, as
        // the parent's does not say which tenant a user's charts are of.
        [
          () =>
            prisma.user.findMany({
              where: { tenantId: "t1" },
              include: { charts: { distinct: ["ssn"] } },
            }),
          /Chart\.ssn is bound to its row's tenantId: each row seals an equal value differently/,
        ],
        // A cursor is a lookup: on a randomized field it is refused as a where is.
        [
          () =>
            prisma.user.findMany({
              include: { posts: { cursor: { id: post.id, body: "first body" } } },
            }),
          /Post.body is randomized/,
        ],
        [
          () => prisma.post.findMany({ cursor: { id: post.id, body: "first body" } }),
          /Post.body is randomized/,
        ],
      ];
      for (const [run, message] of refused) {
        await expect(run(), String(run)).rejects.toThrow(message);
      }
      // Ordering by plain columns, by a relation's count, and distinct over a deterministic
      // field still work.
      const ordered = await prisma.user.findMany({
        where: { tenantId: "t1" },
        orderBy: { posts: { _count: "desc" } },
        include: {
          posts: { orderBy: [{ title: "asc" }, { author: { tenantId: "asc" } }] },
          charts: { where: { tenantId: "t1" }, distinct: ["ssn"] },
        },
      });
      expect(ordered[0]?.posts.map((p) => p.body)).toEqual(["first body"]);
      expect(
        (await prisma.post.findMany({ orderBy: { author: { plain: "asc" } } })).map((p) => p.body),
      ).toEqual(["first body"]);
    });

    test("fields named like filter operators are fields inside a compound unique", async () => {
      await db.prisma.tenant.create({ data: { id: "t1", name: "One" } });
      const invoice = await prisma.invoice.create({
        data: { tenantId: "t1", memo: "memo", in: "IN-1", equals: "EQ-1" },
      });
      const stored = await db.raw("Invoice", invoice.id);
      expect(String(stored.in).startsWith(PREFIX)).toBe(true);
      expect(String(stored.equals).startsWith(PREFIX)).toBe(true);
      // `tenantId_in` mixes a column and a field named "in"; `in_equals` holds nothing but
      // fields named like operators.
      const byTenantIn = await prisma.invoice.findUnique({
        where: { tenantId_in: { tenantId: "t1", in: "IN-1" } },
      });
      expect(byTenantIn?.memo).toBe("memo");
      const byInEquals = await prisma.invoice.findUnique({
        where: { in_equals: { equals: "EQ-1", in: "IN-1" }, tenantId: "t1" },
      });
      expect(byInEquals?.memo).toBe("memo");
      // The compound unique pins the tenant for an update of an encrypted field.
      const updated = await prisma.invoice.update({
        where: { tenantId_in: { tenantId: "t1", in: "IN-1" } },
        data: { memo: "edited" },
      });
      expect(updated.memo).toBe("edited");
      // The same operators on a field are still a filter.
      expect(
        await prisma.invoice.count({
          where: {
            tenantId: "t1",
            id: { in: [invoice.id], not: 0 },
            in: { in: ["IN-1"] },
            equals: { equals: "EQ-1", not: "x" },
          },
        }),
      ).toBe(1);
    });

    test("a relation write that would change a context column is refused", async () => {
      await db.prisma.tenant.createMany({
        data: [
          { id: "t1", name: "One" },
          { id: "t2", name: "Two" },
        ],
      });
      const invoice = await prisma.invoice.create({
        data: { tenantId: "t1", memo: "secret memo", in: "IN-1" },
      });
      const where = { id: invoice.id };
      const own = /Invoice\.tenant: "(connect|connectOrCreate|create)" would change tenantId/;
      const back =
        /Tenant\.invoices: "(connect|connectOrCreate|set)" would move Invoice rows to another tenantId/;
      const refused: [() => Promise<unknown>, RegExp][] = [
        [() => prisma.invoice.update({ where, data: { tenant: { connect: { id: "t2" } } } }), own],
        [
          () =>
            prisma.invoice.update({
              where,
              data: {
                memo: "rewritten",
                tenant: {
                  connectOrCreate: { where: { id: "t3" }, create: { id: "t3", name: "Three" } },
                },
              },
            }),
          own,
        ],
        [
          () =>
            prisma.invoice.update({
              where,
              data: { tenant: { create: { id: "t4", name: "Four" } } },
            }),
          own,
        ],
        [
          () =>
            prisma.invoice.upsert({
              where,
              create: { tenantId: "t1" },
              update: { tenant: { connect: { id: "t2" } } },
            }),
          own,
        ],
        [
          () =>
            prisma.tenant.update({
              where: { id: "t2" },
              data: { invoices: { connect: { id: invoice.id } } },
            }),
          back,
        ],
        [
          () => prisma.tenant.update({ where: { id: "t2" }, data: { invoices: { set: [where] } } }),
          back,
        ],
        [
          () =>
            prisma.tenant.create({
              data: {
                id: "t5",
                name: "Five",
                invoices: { connectOrCreate: { where, create: { memo: "new" } } },
              },
            }),
          back,
        ],
      ];
      for (const [run, message] of refused) {
        await expect(run(), String(run)).rejects.toThrow(message);
      }
      // A nested create takes its foreign key from Prisma, where the extension cannot see it.
      await expect(
        prisma.tenant.create({
          data: { id: "t6", name: "Six", invoices: { create: { memo: "m" } } },
        }),
      ).rejects.toThrow(/Invoice binds encrypted fields to tenantId/);
      const read = await prisma.invoice.findUniqueOrThrow({ where });
      expect([read.tenantId, read.memo]).toEqual(["t1", "secret memo"]);
      // Writing the column itself re-encrypts, as for any context column: every field bound to
      // it must be rewritten in the same update.
      await expect(prisma.invoice.update({ where, data: { tenantId: "t2" } })).rejects.toThrow(
        /orphan/,
      );
      const moved = await prisma.invoice.update({
        where,
        data: { tenantId: "t2", memo: "secret memo", in: "IN-1", equals: null },
      });
      expect([moved.tenantId, moved.memo]).toEqual(["t2", "secret memo"]);
      expect(
        (
          await prisma.invoice.findUnique({
            where: { tenantId_in: { tenantId: "t2", in: "IN-1" } },
          })
        )?.memo,
      ).toBe("secret memo");
      // Writes through the relation that leave the foreign key alone still work.
      const renamed = await prisma.invoice.update({
        where,
        data: { tenant: { update: { name: "Two, renamed" } } },
        include: { tenant: true },
      });
      expect([renamed.tenant.name, renamed.memo]).toEqual(["Two, renamed", "secret memo"]);
      const tenant = await prisma.tenant.update({
        where: { id: "t2" },
        data: {
          invoices: { update: { where: { id: invoice.id, tenantId: "t2" }, data: { memo: "m2" } } },
        },
        include: { invoices: true },
      });
      expect(tenant.invoices.map((i) => i.memo)).toEqual(["m2"]);
    });

    test("a relation write that changes a context column goes through when every value bound to it is written null", async () => {
      await db.prisma.tenant.createMany({
        data: [
          { id: "t1", name: "One" },
          { id: "t2", name: "Two" },
        ],
      });
      // A create whose bound values are all null seals nothing: the foreign key may set the
      // column (a form sends null for its empty fields).
      const created = await prisma.invoice.create({
        data: { tenant: { connect: { id: "t1" } }, memo: null, in: null },
      });
      expect(created).toMatchObject({ tenantId: "t1", memo: null, in: null });
      const invoice = await prisma.invoice.create({
        data: { tenantId: "t1", memo: "secret memo", in: "IN-1", equals: "EQ-1" },
      });
      const where = { id: invoice.id, tenantId: "t1" };
      // Values left as they are, or written, would stay sealed under the old tenant.
      const refused: (() => Promise<unknown>)[] = [
        () =>
          prisma.invoice.update({
            where,
            data: { tenant: { connect: { id: "t2" } }, memo: null, in: null },
          }),
        () =>
          prisma.invoice.update({
            where,
            data: { tenant: { connect: { id: "t2" } }, memo: "m", in: null, equals: null },
          }),
        () => prisma.invoice.create({ data: { tenant: { connect: { id: "t1" } }, memo: "m" } }),
      ];
      for (const run of refused) {
        await expect(run(), String(run)).rejects.toThrow(
          /Invoice\.tenant: "connect" would change tenantId without re-encrypting/,
        );
      }
      // Clearing every one of them leaves nothing to orphan, as writing the column itself does.
      const moved = await prisma.invoice.update({
        where,
        data: { tenant: { connect: { id: "t2" } }, memo: null, in: { set: null }, equals: null },
      });
      expect(moved).toMatchObject({ tenantId: "t2", memo: null, in: null, equals: null });
      // A line created in the same write takes no tenant from the invoice's where: the
      // connect changes it.
      await expect(
        prisma.invoice.update({
          where: { id: invoice.id, tenantId: "t2" },
          data: {
            tenant: { connect: { id: "t1" } },
            memo: null,
            in: null,
            equals: null,
            lines: { create: { number: 1, text: "line" } },
          },
        }),
      ).rejects.toThrow(/InvoiceLine binds encrypted fields to tenantId/);
      expect(await db.prisma.invoiceLine.count()).toBe(0);
    });

    test("a nullable foreign key that is a context column is disconnected as the column is set to null", async () => {
      // Drafts bound to their author: `authorId` is the context column and the foreign key of
      // the optional `author` relation.
      const byAuthor: SchemaDescriptor = {
        ...parseSchema(schemaText),
        ...defineModels({
          Draft: {
            encrypted: { body: {} },
            relations: { author: "User", parent: "Draft", revisions: "Draft" },
            foreignKeys: { author: ["authorId"], parent: ["parentId"] },
            context: { fromRow: ["authorId"] },
          },
        }),
      };
      const bound = extend({ schema: byAuthor });
      const user = await bound.user.create({ data: { tenantId: "t1", email: "a@x" } });
      const draft = await bound.draft.create({ data: { authorId: user.id, body: "secret" } });
      const where = { id: draft.id, authorId: user.id };
      await expect(
        bound.draft.update({ where, data: { author: { disconnect: true } } }),
      ).rejects.toThrow(/Draft\.author: "disconnect" would change authorId/);
      await expect(
        bound.draft.update({ where, data: { author: { disconnect: true }, body: "x" } }),
      ).rejects.toThrow(/Draft\.author: "disconnect" would change authorId/);
      expect(await bound.draft.findUniqueOrThrow({ where: { id: draft.id } })).toMatchObject({
        authorId: user.id,
        body: "secret",
      });
      const cleared = await bound.draft.update({
        where,
        data: { author: { disconnect: true }, body: null },
      });
      expect(cleared).toMatchObject({ authorId: null, body: null });
    });

    test("a nested create takes from its parent only the context columns its foreign key holds", async () => {
      const user = await prisma.user.create({ data: { tenantId: "t1", email: "a@x" } });
      const draft = await prisma.draft.create({
        data: { tenantId: "t1", body: "kept", authorId: user.id },
      });
      // A draft's tenant is no part of its foreign key to its author or its parent: created
      // through either, it would hold no tenant and values sealed under the parent's.
      const refused: (() => Promise<unknown>)[] = [
        () =>
          prisma.user.update({
            where: { id: user.id, tenantId: "t1" },
            data: { drafts: { create: { body: "x" } } },
          }),
        () =>
          prisma.user.update({
            where: { id: user.id, tenantId: "t1" },
            data: { drafts: { createMany: { data: [{ body: "x" }] } } },
          }),
        () =>
          prisma.user.update({
            where: { id: user.id, tenantId: "t1" },
            data: {
              drafts: { connectOrCreate: { where: { id: 999_999 }, create: { body: "x" } } },
            },
          }),
        () =>
          prisma.user.create({
            data: { tenantId: "t1", email: "b@x", drafts: { create: { body: "x" } } },
          }),
        () =>
          prisma.draft.update({
            where: { id: draft.id, tenantId: "t1" },
            data: { revisions: { create: { body: "x" } } },
          }),
      ];
      for (const run of refused) {
        const error = await run().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error, String(run)).toBeInstanceOf(ValidationError);
        expect((error as Error).message, String(run)).toMatch(
          /Draft binds encrypted fields to tenantId: include it in the data/,
        );
      }
      expect(await db.prisma.draft.count()).toBe(1);
      // With its own tenant, or with nothing to seal, it is created.
      const revised = await prisma.draft.update({
        where: { id: draft.id, tenantId: "t1" },
        data: { revisions: { create: [{ tenantId: "t1", body: "rev" }, { body: null }] } },
        include: { revisions: { orderBy: { id: "asc" } } },
      });
      expect(revised.revisions).toMatchObject([
        { tenantId: "t1", body: "rev" },
        { tenantId: null, body: null },
      ]);
      // An invoice line's tenant is part of its foreign key to the invoice: Prisma sets it from
      // the invoice, so the line takes the invoice's tenant.
      await db.prisma.tenant.create({ data: { id: "t1", name: "One" } });
      const invoice = await prisma.invoice.create({
        data: { tenantId: "t1", memo: "m", lines: { create: { number: 1, text: "first line" } } },
      });
      await prisma.invoice.update({
        where: { tenantId_id: { tenantId: "t1", id: invoice.id } },
        data: { lines: { createMany: { data: [{ number: 2, text: "second line" }] } } },
      });
      const lines = await prisma.invoiceLine.findMany({ orderBy: { number: "asc" } });
      expect(lines.map((l) => [l.tenantId, l.text])).toEqual([
        ["t1", "first line"],
        ["t1", "second line"],
      ]);
      expect(String((await db.prisma.invoiceLine.findFirstOrThrow()).text)).toMatch(/^kms1:/);
    });

    test("writes through an implicit many-to-many are not taken for moves through a foreign key", async () => {
      await db.prisma.tenant.createMany({
        data: [
          { id: "t1", name: "One" },
          { id: "t2", name: "Two" },
        ],
      });
      const invoice = await prisma.invoice.create({
        data: { tenantId: "t1", memo: "secret memo" },
      });
      // `watching` and `tenant.invoices` both join tenants to invoices; only the latter sets an
      // invoice's `tenantId`.
      await prisma.tenant.update({
        where: { id: "t2" },
        data: { watching: { connect: { id: invoice.id } } },
      });
      await prisma.tenant.update({
        where: { id: "t1" },
        data: { watching: { set: [{ id: invoice.id }] } },
      });
      await prisma.tenant.update({
        where: { id: "t1" },
        data: { watching: { disconnect: { id: invoice.id } } },
      });
      const watched = await prisma.tenant.findUniqueOrThrow({
        where: { id: "t2" },
        include: { watching: true },
      });
      expect(watched.watching.map((i) => [i.tenantId, i.memo])).toEqual([["t1", "secret memo"]]);
      await expect(
        prisma.tenant.update({
          where: { id: "t2" },
          data: { invoices: { connect: { id: invoice.id } } },
        }),
      ).rejects.toThrow(/Tenant\.invoices: "connect" would move Invoice rows to another tenantId/);
    });

    test("a context column set to null binds no values: every write that would seal under it is refused", async () => {
      const user = await prisma.user.create({ data: { tenantId: "t1", email: "a@x" } });
      const draft = await prisma.draft.create({
        data: { tenantId: "t1", threadId: "th1", body: "secret", reply: "re", authorId: user.id },
      });
      // The where pins threadId too: each write below is refused for its null column alone.
      const where = { id: draft.id, tenantId: "t1", threadId: "th1" };
      const cleared = { tenantId: null, body: "x", reply: null };
      const refused: (() => Promise<unknown>)[] = [
        () => prisma.draft.create({ data: { tenantId: null, body: "x" } }),
        () => prisma.draft.update({ where, data: cleared }),
        // Without the tenant in where: refused before the row is read (or found missing).
        () =>
          prisma.draft.update({
            where: { id: draft.id },
            data: { tenantId: { set: null }, body: { set: "x" }, reply: null },
          }),
        () => prisma.draft.update({ where: { id: 999_999 }, data: cleared }),
        // A field's own context column: `reply` is bound to threadId.
        () => prisma.draft.update({ where, data: { threadId: null, reply: "x" } }),
        () =>
          prisma.draft.updateMany({ where: { tenantId: "t1", threadId: "th1" }, data: cleared }),
        () => prisma.draft.upsert({ where, create: { tenantId: "t1" }, update: cleared }),
        () =>
          prisma.draft.upsert({
            where: { id: 999_999, tenantId: "t1" },
            create: { tenantId: null, body: "x" },
            update: {},
          }),
        () =>
          prisma.user.update({
            where: { id: user.id },
            data: { drafts: { update: { where, data: cleared } } },
          }),
        () =>
          prisma.user.update({
            where: { id: user.id },
            data: {
              drafts: { updateMany: { where: { tenantId: "t1", threadId: "th1" }, data: cleared } },
            },
          }),
        () =>
          prisma.user.upsert({
            where: { id: user.id },
            create: { tenantId: "t1", email: "b@x" },
            update: { drafts: { update: { where, data: cleared } } },
          }),
        () =>
          prisma.user.update({
            where: { id: user.id },
            data: {
              drafts: { upsert: { where, create: { tenantId: null, body: "x" }, update: cleared } },
            },
          }),
        // A nested create does not fall back on its parent's tenant when its own is null.
        () =>
          prisma.user.update({
            where: { id: user.id, tenantId: "t1" },
            data: { drafts: { create: { tenantId: null, body: "x" } } },
          }),
      ];
      for (const run of refused) {
        const error = await run().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error, String(run)).toBeInstanceOf(ValidationError);
        expect((error as Error).message, String(run)).toMatch(
          /Draft: (tenantId|threadId) set to null cannot bind encrypted values/,
        );
      }
      expect(await prisma.draft.findMany()).toEqual([
        expect.objectContaining({ tenantId: "t1", threadId: "th1", body: "secret", reply: "re" }),
      ]);
      // Clearing the fields with the column needs no context and leaves a readable row. A row
      // created inside it takes no tenant from it: it gives its own.
      const bareData = { tenantId: null, threadId: null, body: null, reply: { set: null } };
      await expect(
        prisma.draft.update({
          where,
          data: { ...bareData, revisions: { create: { body: "x" } } },
        }),
      ).rejects.toThrow(/Draft binds encrypted fields to tenantId: include it in the data/);
      const bare = await prisma.draft.update({
        where: { id: draft.id },
        data: { ...bareData, revisions: { create: { tenantId: "t1", body: "kept" } } },
        include: { revisions: true },
      });
      expect(bare).toMatchObject({ tenantId: null, body: null, reply: null });
      expect(bare.revisions).toMatchObject([{ tenantId: "t1", body: "kept" }]);
      const revision = bare.revisions[0]?.id as number;
      expect(await prisma.draft.findUniqueOrThrow({ where: { id: revision } })).toMatchObject({
        body: "kept",
      });
      const fresh = await prisma.draft.create({ data: { tenantId: null, body: null } });
      expect(await prisma.draft.findUniqueOrThrow({ where: { id: fresh.id } })).toMatchObject({
        tenantId: null,
        body: null,
      });
      // Giving the row a tenant again seals under it.
      await prisma.draft.update({
        where: { id: draft.id },
        data: { tenantId: "t2", threadId: "th2", body: "again", reply: "re2" },
      });
      expect(await prisma.draft.findUniqueOrThrow({ where: { id: draft.id } })).toMatchObject({
        tenantId: "t2",
        body: "again",
        reply: "re2",
      });
    });

    test("moving a row to a new context seals its values under the new one, on every path", async () => {
      const user = await prisma.user.create({ data: { tenantId: "t1", email: "a@x" } });
      const draft = await prisma.draft.create({
        data: { tenantId: "t1", threadId: "th1", body: "b1", reply: "r1", authorId: user.id },
      });
      const read = async () => {
        const row = await prisma.draft.findUniqueOrThrow({ where: { id: draft.id } });
        return [row.tenantId, row.threadId, row.body, row.reply];
      };
      await prisma.draft.update({
        where: { id: draft.id, tenantId: "t1", threadId: "th1" },
        data: { tenantId: "t2", threadId: "th2", body: "b2", reply: "r2" },
      });
      expect(await read()).toEqual(["t2", "th2", "b2", "r2"]);
      // The row's old tenant is read first, but the data's new one binds the values.
      await prisma.draft.update({
        where: { id: draft.id },
        data: { tenantId: { set: "t3" }, threadId: "th3", body: "b3", reply: "r3" },
      });
      expect(await read()).toEqual(["t3", "th3", "b3", "r3"]);
      await prisma.draft.updateMany({
        where: { tenantId: "t3", threadId: "th3" },
        data: { tenantId: "t4", body: "b4", reply: "r4" },
      });
      expect(await read()).toEqual(["t4", "th3", "b4", "r4"]);
      await prisma.draft.upsert({
        where: { id: draft.id, tenantId: "t4" },
        create: { tenantId: "t4" },
        update: { tenantId: "t5", threadId: "th5", body: "b5", reply: "r5" },
      });
      expect(await read()).toEqual(["t5", "th5", "b5", "r5"]);
      await prisma.user.upsert({
        where: { id: user.id },
        create: { tenantId: "t1", email: "b@x" },
        update: {
          drafts: {
            update: {
              where: { id: draft.id, tenantId: "t5" },
              data: { tenantId: "t6", threadId: "th6", body: "b6", reply: "r6" },
            },
          },
        },
      });
      expect(await read()).toEqual(["t6", "th6", "b6", "r6"]);
      // An upsert's create is bound to its own tenant, not to the where's.
      const created = await prisma.draft.upsert({
        where: { id: 999_999, tenantId: "t1" },
        create: { tenantId: "t7", threadId: "th7", body: "b7", reply: "r7" },
        update: {},
      });
      expect(
        await prisma.draft.findUniqueOrThrow({ where: { id: created.id, tenantId: "t7" } }),
      ).toMatchObject({ body: "b7", reply: "r7" });
    });

    test("an update that reads its row's tenant first writes only while the row still holds it", async () => {
      const user = await prisma.user.create({
        data: { tenantId: "t1", email: "a@x", name: "Ann", phone: "555" },
      });
      // Another writer moves the row to t2 (with every value, as the extension requires) right
      // after the update has read its tenant. Query extensions run in the order they were
      // applied: one applied after this one sees its queries, the read among them.
      let moved = false;
      const racing = db.prisma
        .$extends(fieldEncryption({ kms, keyId, schema: schemaText }))
        .$extends({
          query: {
            user: {
              async update({ args, query }) {
                const result = await query(args);
                if (isEmptyData(args.data) && !moved) {
                  moved = true;
                  await prisma.user.update({
                    where: { id: user.id },
                    data: {
                      ...{ tenantId: "t2", email: "a@x", name: "Ann", phone: "555" },
                      ...{ profile: null, score: null, avatar: null },
                    },
                  });
                }
                return result;
              },
            },
          },
        });
      await expect(
        racing.user.update({ where: { id: user.id }, data: { name: "Ann B" } }),
      ).rejects.toMatchObject({ code: "P2025" });
      expect(moved).toBe(true);
      // The row holds t2's values, none sealed under the tenant it left.
      expect(await prisma.user.findUniqueOrThrow({ where: { id: user.id } })).toMatchObject({
        tenantId: "t2",
        name: "Ann",
        phone: "555",
      });
      // Unraced, the same update reads the row's tenant and writes.
      expect(
        await racing.user.update({ where: { id: user.id }, data: { name: "Ann C" } }),
      ).toMatchObject({ tenantId: "t2", name: "Ann C" });
    });

    test("an upsert's create is bound to its own data only: Prisma copies nothing from the where", async () => {
      // The where pins tenant and thread, but the created row holds neither (both columns are
      // nullable): values sealed under the where's would never decrypt, not even in the
      // upsert's own result.
      const refused: [() => Promise<unknown>, RegExp][] = [
        [
          () =>
            prisma.draft.upsert({
              where: { id: 999_999, tenantId: "t1" },
              create: { body: "x" },
              update: {},
            }),
          /Draft binds encrypted fields to tenantId: include it in the data/,
        ],
        [
          () =>
            prisma.draft.upsert({
              where: { id: 999_999, tenantId: "t1", threadId: "th1" },
              create: { tenantId: "t1", reply: "x" },
              update: {},
            }),
          /Draft\.reply binds its values to threadId: include threadId in the data/,
        ],
      ];
      for (const [run, message] of refused) {
        const error = await run().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error, String(run)).toBeInstanceOf(ValidationError);
        expect((error as Error).message, String(run)).toMatch(message);
      }
      expect(await db.prisma.draft.count()).toBe(0);
      // The where still gives the update's context; the create gives its own.
      const created = await prisma.draft.upsert({
        where: { id: 999_999, tenantId: "t1", threadId: "th1" },
        create: { tenantId: "t2", threadId: "th2", body: "b", reply: "r" },
        update: { body: "never" },
      });
      expect(await prisma.draft.findUniqueOrThrow({ where: { id: created.id } })).toMatchObject({
        tenantId: "t2",
        body: "b",
        reply: "r",
      });
      const updated = await prisma.draft.upsert({
        where: { id: created.id, tenantId: "t2", threadId: "th2" },
        create: { tenantId: "t9" },
        update: { body: "b2", reply: "r2" },
      });
      expect(updated).toMatchObject({ tenantId: "t2", body: "b2", reply: "r2" });
    });

    test("models bound to the ambient context need it and are bound to it", async () => {
      const user = await prisma.user.create({ data: { tenantId: "t1", email: "a@x" } });
      const post = await prisma.post.create({
        data: { tenantId: "t1", title: "t", body: "b", authorId: user.id },
      });
      await expect(
        prisma.comment.create({ data: { text: "hello", postId: post.id } }),
      ).rejects.toThrow(/runWithEncryptionContext/);
      // Await inside the scope: Prisma queries are lazy and run when awaited.
      const comment = await runWithEncryptionContext({ tenantId: "t1" }, async () =>
        prisma.comment.create({ data: { text: "hello", postId: post.id } }),
      );
      expect(comment.text).toBe("hello");
      expect(String((await db.raw("Comment", comment.id)).text).startsWith(PREFIX)).toBe(true);
      const read = await runWithEncryptionContext({ tenantId: "t1" }, async () =>
        prisma.comment.findUnique({ where: { id: comment.id } }),
      );
      expect(read?.text).toBe("hello");
      await expect(
        runWithEncryptionContext({ tenantId: "t2" }, async () =>
          prisma.comment.findUnique({ where: { id: comment.id } }),
        ),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("batch and interactive transactions", async () => {
      const [a, b] = await prisma.$transaction([
        prisma.user.create({ data: { tenantId: "t1", email: "a@x", name: "A" } }),
        prisma.user.create({ data: { tenantId: "t1", email: "b@x", name: "B" } }),
      ]);
      expect([a.name, b.name]).toEqual(["A", "B"]);
      const c = await prisma.$transaction(async (tx) => {
        const found = await tx.user.findFirstOrThrow({ where: { tenantId: "t1", email: "a@x" } });
        return tx.user.create({ data: { tenantId: "t1", email: "c@x", name: `${found.name}+C` } });
      });
      expect(c.name).toBe("A+C");
      expect(String((await db.raw("User", c.id)).name).startsWith(PREFIX)).toBe(true);
      await expect(
        prisma.$transaction(async (tx) => {
          await tx.user.create({ data: { tenantId: "t1", email: "d@x", name: "D" } });
          throw new Error("rollback");
        }),
      ).rejects.toThrow("rollback");
      expect(await prisma.user.count({ where: { tenantId: "t1", email: "d@x" } })).toBe(0);
    });

    test("data keys made inside an interactive transaction serve later writers once it commits", async () => {
      const dataKeys = () => db.prisma.kmsDataKey.count();
      const user = (email: string) => ({ tenantId: "t7", email, name: email.toUpperCase() });
      const first = await prisma.$transaction(async (tx) => tx.user.create({ data: user("i1@x") }));
      const afterFirst = await dataKeys();
      expect(afterFirst).toBeGreaterThan(0);
      // Another interactive transaction and a plain write under the same context reuse them.
      await prisma.$transaction(async (tx) => {
        await tx.user.create({ data: user("i2@x") });
      });
      await prisma.user.create({ data: user("i3@x") });
      expect(await dataKeys()).toBe(afterFirst);
      const fresh = extend();
      expect((await fresh.user.findUnique({ where: { id: first.id } }))?.name).toBe("I1@X");
      expect(await fresh.user.count({ where: { tenantId: "t7", email: "i3@x" } })).toBe(1);
    });

    test("data keys made inside a rolled-back interactive transaction are never reused", async () => {
      const dataKeys = () => db.prisma.kmsDataKey.count();
      const user = (email: string) => ({ tenantId: "t8", email, name: email.toUpperCase() });
      await expect(
        prisma.$transaction(async (tx) => {
          await tx.user.create({ data: user("r1@x") });
          throw new Error("rollback");
        }),
      ).rejects.toThrow("rollback");
      // Whether or not the key rows rolled back with it (they share SQLite's one connection),
      // the next writer makes its own keys, so nothing is sealed under a key that may be gone.
      const afterRollback = await dataKeys();
      const later = await prisma.user.create({ data: user("r2@x") });
      expect(await dataKeys()).toBeGreaterThan(afterRollback);
      expect((await extend().user.findUnique({ where: { id: later.id } }))?.name).toBe("R2@X");
    });

    test("a data key first used inside a rolled-back transaction still reads after a restart", async () => {
      await expect(
        prisma.$transaction(async (tx) => {
          await tx.user.create({ data: { tenantId: "t1", email: "first@x", name: "first" } });
          throw new Error("rollback");
        }),
      ).rejects.toThrow("rollback");
      const later = await prisma.user.create({
        data: { tenantId: "t1", email: "later@x", name: "later" },
      });
      const fresh = extend();
      expect((await fresh.user.findUnique({ where: { id: later.id } }))?.name).toBe("later");
    });

    test("a fresh client reads everything back from the database and the KMS alone", async () => {
      const created = await prisma.user.create({ data: alice });
      const fresh = extend();
      const read = await fresh.user.findFirst({ where: { tenantId: "t1", email: alice.email } });
      expect(read?.name).toBe(alice.name);
      expect(read?.id).toBe(created.id);
    });

    test("rotation job: legacy plaintext and an old KMS key are re-encrypted, resumably", async () => {
      const descriptor = parseSchema(schemaText);
      const legacyEngine = new FieldEncryptionEngine({
        kms,
        keyId,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        legacyPlaintext: true,
      });
      // Two rows written in clear before encryption was adopted, one already encrypted.
      await db.prisma.user.createMany({
        data: [
          { tenantId: "t1", email: "old1@x", name: "Old One", phone: "111" },
          { tenantId: "t2", email: "old2@x", name: "Old Two" },
        ],
      });
      const encrypted = await prisma.user.create({
        data: { tenantId: "t1", email: "new@x", name: "New" },
      });
      const fields = descriptor.User?.encrypted ?? {};
      const source = prismaReencryptSource({
        delegate: db.prisma.user as never,
        model: descriptor.User as ModelDescriptor,
        engine: legacyEngine,
      });
      const checkpoints: ReencryptCheckpoint[] = [];
      const done = await reencryptFields({
        engine: legacyEngine,
        source,
        model: "User",
        fields,
        batchSize: 2,
        onProgress: (c) => {
          checkpoints.push(c);
        },
      });
      expect(done).toMatchObject({ scanned: 3, reencrypted: 2, conflicts: 0 });
      expect(checkpoints).toHaveLength(2);
      const rows = await prisma.user.findMany({ orderBy: { id: "asc" } });
      expect(rows.map((r) => r.name)).toEqual(["Old One", "Old Two", "New"]);
      expect(String((await db.raw("User", 1)).name).startsWith(PREFIX)).toBe(true);
      expect(await prisma.user.count({ where: { tenantId: "t1", email: "old1@x" } })).toBe(1);
      expect(await prisma.user.count({ where: { tenantId: "t1", phone: "111" } })).toBe(1);

      // Rotate to a new KMS key: every row moves, and reads keep working throughout.
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const jobWith = (engine: FieldEncryptionEngine) =>
        reencryptFields({
          engine,
          source: prismaReencryptSource({
            delegate: db.prisma.user as never,
            model: descriptor.User as ModelDescriptor,
            engine,
          }),
          model: "User",
          fields,
        });
      // Data keys are unwrapped only under the configured KMS keys: with the new key alone, the
      // rows under the old one read as tampered, and the job stops before moving any.
      const forgetful = new FieldEncryptionEngine({
        kms,
        keyId: newKey,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const before = (await db.raw("User", 1)).name;
      await expect(jobWith(forgetful)).rejects.toBeInstanceOf(InvalidCiphertextError);
      expect((await db.raw("User", 1)).name).toBe(before);
      const newKeyOnly = db.prisma.$extends(
        fieldEncryption({ kms, keyId: newKey, schema: schemaText }),
      );
      await expect(newKeyOnly.user.findUnique({ where: { id: 1 } })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      const rotating = new FieldEncryptionEngine({
        kms,
        keyId: newKey,
        previousKeyIds: [keyId],
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const during = db.prisma.$extends(
        fieldEncryption({ kms, keyId: newKey, schema: schemaText, engine: rotating }),
      );
      expect((await during.user.findUnique({ where: { id: 1 } }))?.name).toBe("Old One");
      const rotated = await jobWith(rotating);
      expect(rotated.reencrypted).toBe(3);
      for (const id of [1, 2, encrypted.id]) {
        const info = await rotating.inspect((await db.raw("User", id)).name as string);
        expect(info).toMatchObject({ legacy: false, kmsKeyId: expect.stringContaining(newKey) });
      }
      // Every row moved: the old key need not be listed any more.
      const after = db.prisma.$extends(fieldEncryption({ kms, keyId: newKey, schema: schemaText }));
      expect((await after.user.findMany({ orderBy: { id: "asc" } })).map((r) => r.name)).toEqual([
        "Old One",
        "Old Two",
        "New",
      ]);
      expect(await after.user.count({ where: { tenantId: "t1", email: "old1@x" } })).toBe(1);
      expect(await after.user.count({ where: { tenantId: "t1", phone: "111" } })).toBe(1);
    });

    test("rotation job: a row whose new form another row already holds under a unique constraint is skipped and named, and the job finishes", async () => {
      const descriptor = parseSchema(schemaText);
      const model = descriptor.User as ModelDescriptor;
      let current = keyId;
      const engine = new FieldEncryptionEngine({
        kms,
        keyId: () => current,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const app = db.prisma.$extends(
        fieldEncryption({ kms, keyId: () => current, schema: descriptor, engine }),
      );
      const old = await app.user.create({
        data: { tenantId: "t1", email: "dup@x", name: "Old Dup" },
      });
      const other = await app.user.create({ data: { tenantId: "t1", email: "other@x" } });
      // A new KMS key: while the job has not reached the old row, its lookups miss and the
      // application creates the same email again, in the new form.
      current = (await kms.createKey()).keyMetadata.keyId;
      const duplicate = await app.user.create({
        data: { tenantId: "t1", email: "dup@x", name: "New Dup" },
      });
      const source = prismaReencryptSource({ delegate: db.prisma.user as never, model, engine });
      const run = () => reencryptFields({ engine, source, model: "User", fields: model.encrypted });
      expect(await run()).toMatchObject({ scanned: 3, reencrypted: 1, conflicts: 1 });
      expect(source.skipped).toEqual([
        {
          cursor: old.id,
          reason: "unique-constraint",
          constraint: expect.anything(),
        },
      ]);
      const constraint = source.skipped[0]?.constraint;
      expect([constraint].flat().join(" ")).toMatch(/email|User/);
      // Row ids and constraint names only: no value, no ciphertext.
      expect(JSON.stringify(source.skipped)).not.toMatch(/dup@x|Dup|kms1:/);
      // The skipped row is left as it was and still reads; the other moved.
      expect((await app.user.findUniqueOrThrow({ where: { id: old.id } })).name).toBe("Old Dup");
      const keyOf = async (id: number) =>
        (await engine.inspect((await db.raw("User", id)).email as string)) as { kmsKeyId: string };
      expect((await keyOf(old.id)).kmsKeyId).toContain(keyId);
      expect((await keyOf(other.id)).kmsKeyId).toContain(current);
      // Once a human removes the duplicate, the next run moves the row.
      await app.user.delete({ where: { id: duplicate.id } });
      expect(await run()).toMatchObject({ reencrypted: 1, conflicts: 0 });
      expect((await keyOf(old.id)).kmsKeyId).toContain(current);
      expect(source.skipped).toHaveLength(1);
    });

    test("rotation job: a row holding a value under a null context column is refused, not sealed under the text null", async () => {
      const drafts = parseSchema(schemaText).Draft as ModelDescriptor;
      const legacyEngine = new FieldEncryptionEngine({
        kms,
        keyId,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        legacyPlaintext: true,
      });
      // Written in clear before encryption was adopted; a draft without a tenant and no value
      // has nothing to bind and passes.
      await db.prisma.draft.create({ data: { tenantId: "t1", body: "filed" } });
      await db.prisma.draft.create({ data: { tenantId: null, body: null } });
      const orphan = await db.prisma.draft.create({ data: { tenantId: null, body: "unfiled" } });
      const run = () =>
        reencryptFields({
          engine: legacyEngine,
          source: prismaReencryptSource({
            delegate: db.prisma.draft as never,
            model: drafts,
            engine: legacyEngine,
            fields: ["body"],
          }),
          model: "Draft",
          fields: { body: drafts.encrypted.body as NonNullable<typeof drafts.encrypted.body> },
        });
      // Sealed under the text "null", the value would open in a row of a tenant called "null".
      await expect(run()).rejects.toThrow(
        new RegExp(
          `^Draft row ${orphan.id}: tenantId is null, so its values of body cannot be bound`,
        ),
      );
      expect((await db.raw("Draft", orphan.id)).body).toBe("unfiled");
      await db.prisma.draft.update({ where: { id: orphan.id }, data: { body: null } });
      expect(await run()).toMatchObject({ scanned: 3, reencrypted: 1 });
      expect((await prisma.draft.findFirstOrThrow({ where: { tenantId: "t1" } })).body).toBe(
        "filed",
      );
    });

    test("deleting the KMS key crypto-shreds the rows", async () => {
      const created = await prisma.user.create({ data: alice });
      await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
      await expect(extend().user.findUnique({ where: { id: created.id } })).rejects.toThrow(
        /pending deletion|PendingDeletion|state/i,
      );
      expect(
        (await extend().audit.create({ data: { message: "unencrypted still works" } })).message,
      ).toBe("unencrypted still works");
    });
  });
}
