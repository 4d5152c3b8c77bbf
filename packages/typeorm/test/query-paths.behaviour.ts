import { inspect } from "node:util";
import { createKms, type Kms, runWithEncryptionContext, ValidationError } from "@kms/core";
import {
  And,
  Between,
  Brackets,
  type DataSource,
  type EntitySubscriberInterface,
  Equal,
  type FindOptionsWhere,
  ILike,
  In,
  IsNull,
  LessThan,
  Like,
  type Logger,
  Not,
  type ObjectLiteral,
  Or,
  Raw,
  type Repository,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  encryptedParameter,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import type { TestDatabase } from "./backends.ts";
import { failure } from "./backends.ts";
import { Card, Note, Post, User } from "./entities.ts";

interface Logged {
  readonly sql: string;
  readonly params: readonly unknown[];
}

function paramList(parameters: unknown): unknown[] {
  if (Array.isArray(parameters)) return [...parameters];
  return parameters === undefined ? [] : [parameters];
}

/** TypeORM's logger sees every statement first, with its parameters, before beforeQuery. */
class RecordingLogger implements Logger {
  readonly lines: Logged[] = [];
  logQuery(sql: string, parameters?: unknown[] | ObjectLiteral): void {
    this.lines.push({ sql, params: paramList(parameters) });
  }
  logQueryError(_error: string | Error, sql: string, parameters?: unknown[] | ObjectLiteral) {
    this.lines.push({ sql, params: paramList(parameters) });
  }
  logQuerySlow(_time: number, sql: string, parameters?: unknown[] | ObjectLiteral): void {
    this.lines.push({ sql, params: paramList(parameters) });
  }
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** Logged lines whose SQL or parameters carry `secret` (parameters printed in full). */
function leaks(lines: readonly Logged[], secret: string): string[] {
  return lines
    .filter(
      ({ sql, params }) => sql.includes(secret) || inspect(params, { depth: 6 }).includes(secret),
    )
    .map(({ sql, params }) => `${sql.slice(0, 120)} ${inspect(params)}`);
}

/**
 * Every TypeORM API path by which a value meant for an encrypted or blind-indexed column can
 * reach a statement: rewritten to its stored form, or refused before any statement or log line.
 */
export function describeQueryPaths(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`query paths on ${name}`, () => {
    // "§" is outside base64url: it never turns up inside a ciphertext or an index by chance.
    const SECRET = "§4111 1111 1111 1111§";
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let logger: RecordingLogger;
    let users: Repository<User>;
    let cards: Repository<Card>;
    let posts: Repository<Post>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      encryption = fieldEncryption({ kms, keyId });
      logger = new RecordingLogger();
      ds = await db.connect(encryption, { entities: [Card], logger });
      users = ds.getRepository(User);
      cards = ds.getRepository(Card);
      posts = ds.getRepository(Post);
    });
    afterEach(async () => {
      await db.close();
    });

    const alice = () =>
      Object.assign(new User(), {
        tenantId: "t1",
        email: "alice@example.com",
        phone: SECRET,
        profile: null,
        avatar: null,
      });
    const card = (tenantId: string, holder: string | null, pan: string | null) =>
      Object.assign(new Card(), { tenantId, holder, pan });

    const rawCard = async (id: number) =>
      (
        await db.raw(`SELECT * FROM ${db.q("kms_cards")} WHERE ${db.q("id")} = ?`, [id])
      )[0] as Record<string, unknown>;

    /** Runs each attempt; each must be a ValidationError matching `message`, with no log line. */
    async function expectRefusedSilently(
      attempts: Readonly<Record<string, () => Promise<unknown>>>,
      message: RegExp,
    ): Promise<void> {
      const outcomes: Record<string, string> = {};
      for (const [label, run] of Object.entries(attempts)) {
        const before = logger.lines.length;
        const error = await failure(run);
        const lines = logger.lines.slice(before);
        outcomes[label] =
          error instanceof ValidationError && message.test(error.message)
            ? lines.length === 0
              ? "refused"
              : `refused after ${lines.length} log line(s): ${lines[0]?.sql.slice(0, 80)}`
            : `${error === undefined ? "answered" : inspect(error).slice(0, 200)}`;
        if (error instanceof Error) expect(error.message).not.toContain(SECRET);
        expect(leaks(lines, SECRET), label).toEqual([]);
      }
      expect(outcomes).toEqual(
        Object.fromEntries(Object.keys(attempts).map((label) => [label, "refused"])),
      );
    }

    test("a value or an operator on a blind index column is refused before any log line, on every path", async () => {
      const u = await users.save(alice());
      const c = await cards.save(card("t1", "holder", SECRET));
      await runWithEncryptionContext({ tenant: "t1" }, () =>
        posts.save(Object.assign(new Post(), { body: "hello", author: u })),
      );
      const m = ds.manager;
      await expectRefusedSilently(
        {
          "findBy value": () => users.findBy({ phoneIndex: SECRET }),
          "findOneBy Equal": () => users.findOneBy({ phoneIndex: Equal(SECRET) }),
          "findBy Raw(fn)": () =>
            users.findBy({ phoneIndex: Raw((alias) => `${alias} = :v`, { v: SECRET }) }),
          "findBy Raw(sql)": () => users.findBy({ phoneIndex: Raw(`'${SECRET}'`) }),
          "findBy Like": () => users.findBy({ phoneIndex: Like(`%${SECRET}%`) }),
          "findBy In": () => users.findBy({ phoneIndex: In([SECRET]) }),
          "findBy ILike": () => users.findBy({ phoneIndex: ILike(SECRET) }),
          "findBy Between": () => users.findBy({ phoneIndex: Between(SECRET, `${SECRET}~`) }),
          "findBy Not": () => users.findBy({ phoneIndex: Not(SECRET) }),
          "findBy Or/And": () =>
            users.findBy({ phoneIndex: Or(IsNull(), And(Not(IsNull()), Equal(SECRET))) }),
          "find where array": () => users.find({ where: [{ id: u.id }, { phoneIndex: SECRET }] }),
          "find nested relation": () => posts.findBy({ author: { phoneIndex: SECRET } }),
          "find relation where": () =>
            posts.find({ relations: { author: true }, where: { author: { phoneIndex: SECRET } } }),
          countBy: () => users.countBy({ phoneIndex: SECRET }),
          existsBy: () => users.existsBy({ phoneIndex: SECRET }),
          findAndCountBy: () => users.findAndCountBy({ phoneIndex: SECRET }),
          sum: () => users.sum("id", { phoneIndex: SECRET }),
          average: () => users.average("id", { phoneIndex: SECRET }),
          "update criteria": () => users.update({ phoneIndex: SECRET }, { tenantId: "t1" }),
          "delete criteria": () => users.delete({ phoneIndex: SECRET }),
          "increment criteria": () => cards.increment({ panIndex: SECRET }, "uses", 1),
          "softDelete criteria": () => cards.softDelete({ panIndex: SECRET }),
          "restore criteria": () => cards.restore({ panIndex: SECRET }),
          "manager.findBy": () => m.findBy(User, { phoneIndex: SECRET }),
          "manager.update": () => m.update(User, { phoneIndex: SECRET }, { tenantId: "t1" }),
          "manager.delete": () => m.delete(User, { phoneIndex: SECRET }),
          "QueryBuilder where(object)": () =>
            users.createQueryBuilder("u").where({ phoneIndex: SECRET }).getMany(),
          "QueryBuilder Brackets": () =>
            users
              .createQueryBuilder("u")
              .where("u.id > 0")
              .andWhere(new Brackets((qb) => qb.where({ phoneIndex: SECRET })))
              .getMany(),
          "QueryBuilder setFindOptions": () =>
            users
              .createQueryBuilder("u")
              .setFindOptions({ where: { phoneIndex: SECRET } })
              .getMany(),
          "QueryBuilder update where": () =>
            users
              .createQueryBuilder()
              .update(User)
              .set({ tenantId: "t1" })
              .where({ phoneIndex: SECRET })
              .execute(),
          "QueryBuilder delete where": () =>
            users.createQueryBuilder().delete().from(User).where({ phoneIndex: SECRET }).execute(),
          "listener-less update set": () =>
            users
              .createQueryBuilder()
              .update(User)
              .set({ phoneIndex: SECRET })
              .where({ id: u.id })
              .callListeners(false)
              .execute(),
          "listener-less insert": () =>
            cards
              .createQueryBuilder()
              .insert()
              .values({ tenantId: "t1", panIndex: SECRET })
              .callListeners(false)
              .execute(),
        },
        /^(User\.phoneIndex is the blind index of User\.phone|Card\.panIndex is the blind index of Card\.pan): /,
      );
      // Writing the index yourself is refused by the subscriber, as before.
      await expect(users.update(u.id, { phoneIndex: SECRET })).rejects.toThrow(
        /^User\.phoneIndex is a blind index: it is computed, not written/,
      );
      await expect(cards.decrement({ id: c.id }, "panIndex", 1)).rejects.toThrow(
        /^Card\.panIndex is a blind index/,
      );
      // Nothing changed; the indexes computed by the subscriber still find their rows.
      expect(await users.count()).toBe(1);
      expect(
        (await users.findBy(await encryptedWhere(users, { tenantId: "t1", phone: SECRET }))).map(
          (x) => x.id,
        ),
      ).toEqual([u.id]);
      expect(
        (await cards.findBy(await encryptedWhere(cards, { tenantId: "t1", pan: SECRET }))).map(
          (x) => x.id,
        ),
      ).toEqual([c.id]);
      // IsNull on the index column sends no value and stays TypeORM's.
      expect(await users.countBy({ phoneIndex: IsNull() })).toBe(0);
    });

    test("a plaintext value on an encrypted column is refused before any log line, on every path", async () => {
      const u = await users.save(Object.assign(alice(), { phone: "+1 555 0100" }));
      const c = await cards.save(card("t1", "holder", "4000"));
      const m = ds.manager;
      await expectRefusedSilently(
        {
          "QueryBuilder where(object)": () =>
            users.createQueryBuilder("u").where({ email: SECRET }).getMany(),
          "QueryBuilder where(array)": () =>
            users
              .createQueryBuilder("u")
              .where([{ id: u.id }, { email: SECRET }])
              .getMany(),
          "QueryBuilder Brackets": () =>
            users
              .createQueryBuilder("u")
              .where("u.id > 0")
              .andWhere(
                new Brackets((qb) => {
                  qb.where({ tenantId: "t1" }).orWhere({ phone: SECRET });
                }),
              )
              .getMany(),
          "QueryBuilder update where": () =>
            cards
              .createQueryBuilder()
              .update(Card)
              .set({ uses: 2 })
              .where({ holder: SECRET })
              .execute(),
          "QueryBuilder softDelete where": () =>
            cards.createQueryBuilder().softDelete().where({ holder: SECRET }).execute(),
          "find nested relation": () => posts.findBy({ author: { email: SECRET } }),
          "find relation where": () =>
            users.find({ relations: { posts: true }, where: { posts: { body: SECRET } } }),
          "findBy value": () => users.findBy({ email: SECRET }),
          "findBy Raw(fn)": () =>
            users.findBy({ email: Raw((alias) => `${alias} = :v`, { v: SECRET }) }),
          "findBy Raw(sql)": () => users.findBy({ phone: Raw(`'${SECRET}'`) }),
          "findBy Like": () => users.findBy({ email: Like(`%${SECRET}%`) }),
          "findBy In": () => cards.findBy({ pan: In([SECRET]) }),
          "findBy Not": () => cards.findBy({ holder: Not(SECRET) }),
          "findBy LessThan": () => users.findBy({ email: LessThan(SECRET) }),
          "findBy Between": () => cards.findBy({ holder: Between(SECRET, `${SECRET}~`) }),
          "findBy ILike": () => cards.findBy({ pan: ILike(SECRET) }),
          "find Or": () => users.findBy({ email: Or(Equal(SECRET), IsNull()) }),
          exists: () => users.exists({ where: { email: SECRET } }),
          existsBy: () => users.existsBy({ profile: SECRET as never }),
          countBy: () => users.countBy({ email: SECRET }),
          sum: () => users.sum("id", { email: SECRET }),
          minimum: () => users.minimum("id", { phone: SECRET }),
          "increment criteria": () => cards.increment({ holder: SECRET }, "uses", 1),
          "decrement criteria": () => cards.decrement({ pan: SECRET }, "uses", 1),
          "softDelete criteria": () => cards.softDelete({ holder: SECRET }),
          "restore criteria": () => cards.restore({ pan: SECRET }),
          "manager.findBy": () => m.findBy(User, { email: SECRET }),
          "manager.countBy": () => m.countBy(Card, { pan: SECRET }),
          "manager.delete": () => m.delete(Card, { holder: SECRET }),
        },
        /^(User|Card|Post)\.(email|phone|profile|holder|pan|body) is encrypted: (a plaintext value reached a query|Raw\(\) would send)/,
      );
      expect((await cards.findOneByOrFail({ id: c.id })).uses).toBe(0);
      expect(await cards.count()).toBe(1);
    });

    test("increment/decrement of an encrypted column is refused: SQL arithmetic on ciphertext would destroy it", async () => {
      const notes = ds.getRepository(Note);
      const note = await notes.save(Object.assign(new Note(), { title: "title", code: "C-1" }));
      const c = await cards.save(card("t1", "holder", "4000"));
      const before = logger.lines.length;
      for (const run of [
        () => notes.increment({ id: note.id }, "title", 1),
        () => notes.decrement({ id: note.id }, "code", 1),
        () => cards.increment({ id: c.id }, "holder", 1),
        () => cards.increment({ id: c.id }, "pan", 1),
        // An insert's SQL expression reaches only the subscriber (beforeInsert).
        () =>
          cards
            .createQueryBuilder()
            .insert()
            .values({ tenantId: "t1", holder: () => "'plain'" })
            .execute(),
        // The update guard refuses these itself: no subscriber hook runs without listeners.
        () =>
          notes
            .createQueryBuilder()
            .update(Note)
            .set({ title: () => "'plain'" })
            .where({ id: note.id })
            .callListeners(false)
            .execute(),
        () =>
          cards
            .createQueryBuilder()
            .update(Card)
            .set({ pan: () => "pan" })
            .where({ id: c.id })
            .callListeners(false)
            .execute(),
      ]) {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^(Note|Card)\.(title|code|holder|pan) is encrypted: a SQL expression cannot run on ciphertext/,
        );
      }
      const listenerless = await failure(() =>
        cards
          .createQueryBuilder()
          .update(Card)
          .set({ uses: 9, panIndex: () => "NULL" })
          .where({ id: c.id })
          .callListeners(false)
          .execute(),
      );
      expect(listenerless).toBeInstanceOf(ValidationError);
      expect((listenerless as Error).message).toMatch(/^Card\.panIndex is a blind index/);
      const writes = logger.lines.slice(before).filter((l) => /^\s*(UPDATE|INSERT)/i.test(l.sql));
      expect(writes).toEqual([]);
      expect(await cards.count()).toBe(1);
      expect((await rawCard(c.id)).panIndex).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(await notes.findOneByOrFail({ id: note.id })).toMatchObject({
        title: "title",
        code: "C-1",
      });
      expect(await cards.findOneByOrFail({ id: c.id })).toMatchObject({
        holder: "holder",
        pan: "4000",
        uses: 0,
      });
    });

    test("a loaded entity saves back with its blind index: the loaded index string is not taken for a value", async () => {
      const u = await users.save(alice());
      const c = await cards.save(card("t1", "holder", SECRET));
      const indexOf = async (id: number) => (await rawCard(id)).panIndex;
      const index = await indexOf(c.id);

      // Change detection runs the index column's transformer on the loaded string; the save
      // must still write only what changed (and the index the subscriber computes).
      const loaded = await cards.findOneByOrFail({ id: c.id });
      expect(loaded.panIndex).toBe(index);
      loaded.uses = 3;
      await cards.save(loaded);
      expect(loaded.panIndex).toBe(index);
      await cards.save(loaded);
      expect(await rawCard(c.id)).toMatchObject({ uses: 3, panIndex: index });

      // Loaded through a relation (eager author) and through a transaction's manager.
      const post = await runWithEncryptionContext({ tenant: "t1" }, async () => {
        await posts.save(Object.assign(new Post(), { body: "hello", author: u }));
        const p = await posts.findOneByOrFail({ author: { id: u.id } });
        p.body = "edited";
        return posts.save(p);
      });
      expect(post.author.phoneIndex).toMatch(/^[A-Za-z0-9_-]{22}$/);
      await ds.transaction(async (manager) => {
        const author = await manager.findOneByOrFail(User, { id: u.id });
        author.profile = { likes: ["x"], age: 3 };
        await manager.save(author);
      });
      const reloaded = await users.findOneByOrFail({ id: u.id });
      expect(reloaded.profile).toEqual({ likes: ["x"], age: 3 });
      expect(reloaded.phoneIndex).toBe(post.author.phoneIndex);

      // A changed value gets a new index; the old value no longer finds the row.
      loaded.pan = "5000";
      await cards.save(loaded);
      expect(await indexOf(c.id)).not.toBe(index);
      expect(
        await cards.countBy(await encryptedWhere(cards, { tenantId: "t1", pan: SECRET })),
      ).toBe(0);
      expect(
        await cards.countBy(await encryptedWhere(cards, { tenantId: "t1", pan: "5000" })),
      ).toBe(1);
      expect(leaks(logger.lines, SECRET)).toEqual([]);
    });

    test("lookups and writes through encryptedWhere and the subscriber send only stored forms, on every path", () =>
      // Post.body is bound to the scope's tenant.
      runWithEncryptionContext({ tenant: "t1" }, async () => {
        const u = await users.save(alice());
        const c = await cards.save(card("t1", SECRET, SECRET));
        const other = await cards.save(card("t1", "someone", "4000"));
        await posts.save(Object.assign(new Post(), { body: SECRET, author: u }));
        // The caller's object holds the plaintext and, as after a load, the index string.
        expect(u.phone).toBe(SECRET);
        expect(u.phoneIndex).toMatch(/^[A-Za-z0-9_-]{22}$/);
        expect(c.panIndex).toBe((await rawCard(c.id)).panIndex);

        const byPan = await encryptedWhere(cards, { tenantId: "t1", pan: SECRET });
        const byHolder = await encryptedWhere(cards, { tenantId: "t1", holder: SECRET });
        const byPhone = await encryptedWhere(users, { tenantId: "t1", phone: SECRET });
        const ids = (rows: readonly { id: number }[]) => rows.map((r) => r.id).sort();

        expect(ids(await users.findBy(byPhone))).toEqual([u.id]);
        expect(
          ids(
            await cards.findBy(await encryptedWhere(cards, { tenantId: "t1", pan: In([SECRET]) })),
          ),
        ).toEqual([c.id]);
        expect(
          ids(
            await cards.findBy(await encryptedWhere(cards, { tenantId: "t1", pan: Not(SECRET) })),
          ),
        ).toEqual([other.id]);
        expect(ids(await posts.findBy({ author: byPhone }))).toHaveLength(1);
        expect(
          ids(
            await users.find({
              relations: { posts: true },
              where: await encryptedWhere(users, { tenantId: "t1", phone: SECRET }),
            }),
          ),
        ).toEqual([u.id]);
        expect(await users.existsBy(byPhone)).toBe(true);
        expect(await cards.countBy(byHolder)).toBe(1);
        expect(await cards.sum("uses", byPan)).toBe(0);
        expect(
          ids(
            await cards
              .createQueryBuilder("c")
              .where(new Brackets((qb) => qb.where(byPan).orWhere({ id: -1 })))
              .getMany(),
          ),
        ).toEqual([c.id]);
        const index = await encryptedParameter(cards, "pan", SECRET, {
          context: { tenantId: "t1" },
        });
        expect(
          ids(await cards.createQueryBuilder("c").where("c.panIndex = :i", { i: index }).getMany()),
        ).toEqual([c.id]);
        expect(ids(await ds.manager.findBy(Card, byHolder))).toEqual([c.id]);

        await cards.increment(byPan, "uses", 2);
        await cards.decrement(byHolder, "uses", 1);
        expect((await cards.findOneByOrFail({ id: c.id })).uses).toBe(1);
        await cards.update(byPan, { uses: 5 });
        expect((await cards.findOneByOrFail({ id: c.id })).uses).toBe(5);
        await cards.softDelete(byPan);
        expect(await cards.findOneBy({ id: c.id })).toBeNull();
        await cards.restore(byHolder);
        expect((await cards.findOneByOrFail({ id: c.id })).holder).toBe(SECRET);

        // preload merges the given plaintext into the loaded row; only the id reaches SQL.
        const preloaded = await cards.preload({ id: other.id, holder: SECRET });
        expect(preloaded?.holder).toBe(SECRET);
        expect((await cards.findOneByOrFail({ id: other.id })).holder).toBe("someone");

        // upsert on the deterministic column as conflict path: ciphertext in the ON CONFLICT row.
        await cards.upsert(card("t1", SECRET, "5000"), ["holder"]);
        expect(await cards.count()).toBe(2);
        expect((await cards.findOneByOrFail({ id: c.id })).pan).toBe("5000");
        await cards.upsert(card("t1", "new holder", SECRET), ["holder"]);
        expect(await cards.count()).toBe(3);

        await cards.delete(await encryptedWhere(cards, { tenantId: "t1", holder: "new holder" }));
        expect(await cards.count()).toBe(2);

        expect(leaks(logger.lines, SECRET)).toEqual([]);
        expect(logger.lines.length).toBeGreaterThan(20);
      }));

    test("encryptedParameter gives one stored value, and refuses null and operators", async () => {
      await cards.save(card("t1", "h", "4000"));
      const options = { context: { tenantId: "t1" } };
      expect(await encryptedParameter(cards, "pan", "4000", options)).toBe(
        (await cards.findOneByOrFail({ tenantId: "t1" })).panIndex,
      );
      // A precomputed index string is a plain value to an object where: only a condition
      // string takes it.
      const index = await encryptedParameter(cards, "pan", "4000", options);
      await expect(cards.findBy({ panIndex: index as string })).rejects.toThrow(
        /^Card\.panIndex is the blind index of Card\.pan: /,
      );
      expect(
        await cards.createQueryBuilder("c").where("c.panIndex = :index", { index }).getCount(),
      ).toBe(1);
      for (const value of [null, In(["4000"]), IsNull()]) {
        const error = await failure(() => encryptedParameter(cards, "pan", value, options));
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(/^"value" of Card\.pan must be a single value/);
      }
    });

    test("a tenant given in `context` limits the lookup to its rows: Not and In as equality", async () => {
      const [a1, b1] = await cards.save([card("t1", "a", "1"), card("t1", "b", "2")]);
      const a2 = await cards.save(card("t2", "a", "1"));
      const t1 = { context: { tenantId: "t1" } };
      const found = async (where: FindOptionsWhere<Card> | FindOptionsWhere<Card>[]) =>
        (
          await cards.find({
            where: Array.isArray(where)
              ? await encryptedWhere(cards, where, t1)
              : await encryptedWhere(cards, where, t1),
            order: { id: "ASC" },
          })
        ).map((c) => c.id);
      // t2's row holds "a" sealed under t2: no value sealed under t1, which Not would match.
      expect(await found({ holder: "a" })).toEqual([a1?.id]);
      expect(await found({ holder: Not("a") })).toEqual([b1?.id]);
      expect(await found({ pan: Not("1") })).toEqual([b1?.id]);
      expect(await found({ holder: In(["a", "b"]) })).toEqual([a1?.id, b1?.id]);
      expect(await found({ holder: Not(In(["a"])) })).toEqual([b1?.id]);
      expect(await found({ pan: Not(In(["1"])) })).toEqual([b1?.id]);
      expect(await found({ holder: Not(IsNull()) })).toEqual([a1?.id, b1?.id]);
      expect(await found([{ holder: Not("a") }, { pan: "1" }])).toEqual([a1?.id, b1?.id]);
      // A condition of the where's own on the tenant column is kept beside the context's.
      expect(await found({ tenantId: In(["t1", "t2"]), holder: Not("a") })).toEqual([b1?.id]);
      // One no row of t1 matches contradicts the context, as another value would: refused.
      const excluded = await failure(() =>
        encryptedWhere(cards, { tenantId: Not("t1"), holder: Not("a") }, t1),
      );
      expect(excluded).toBeInstanceOf(ValidationError);
      expect((excluded as Error).message).toBe(
        `"context" gives tenantId = "t1" but the where has tenantId: Not("t1"), which no row holding "t1" matches`,
      );
      // A null tenant beside the context's would match no row, silently: refused as two values.
      const nullTenant = { tenantId: null, holder: "a" } as unknown as FindOptionsWhere<Card>;
      const contradiction = await failure(() => encryptedWhere(cards, nullTenant, t1));
      expect(contradiction).toBeInstanceOf(ValidationError);
      expect((contradiction as Error).message).toBe(
        `"context" gives tenantId = "t1" but the where has tenantId = null`,
      );
      expect(await encryptedWhere(cards, { pan: Not("1") }, t1)).toMatchObject({ tenantId: "t1" });
      // Writes through such a where touch the context's rows only.
      await cards.update(await encryptedWhere(cards, { holder: Not("b") }, t1), { uses: 7 });
      expect((await cards.find({ order: { id: "ASC" } })).map((c) => c.uses)).toEqual([7, 0, 0]);
      await cards.delete(await encryptedWhere(cards, { pan: Not("2") }, t1));
      expect((await cards.find({ order: { id: "ASC" } })).map((c) => c.id)).toEqual([
        b1?.id,
        a2.id,
      ]);
    });

    test("the migration job writes blind indexes that lookups find", async () => {
      const c = await cards.save(card("t1", "h", SECRET));
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = fieldEncryption({ kms, keyId: newKey, previousKeyIds: [keyId] });
      const rds = await db.connect(rotated, { entities: [Card] });
      const result = await reencryptEntities(rds, Card);
      expect(result.reencrypted).toBe(1);
      const repo = rds.getRepository(Card);
      expect(
        (await repo.findBy(await encryptedWhere(repo, { tenantId: "t1", pan: SECRET }))).map(
          (x) => x.id,
        ),
      ).toEqual([c.id]);
    });

    /**
     * Runs `write` once, right after the first statement that matches `when` completes (the
     * update's check), on a connection of its own: the "concurrent writer" of a race, placed
     * deterministically between the check and the UPDATE.
     */
    const between = (when: RegExp, write: () => Promise<unknown>) => {
      let done = false;
      const subscriber: EntitySubscriberInterface = {
        async afterQuery(event) {
          if (done || !when.test(event.query)) return;
          done = true;
          await write();
        },
      };
      (ds.subscribers as EntitySubscriberInterface[]).push(subscriber);
      return () => {
        const list = ds.subscribers as EntitySubscriberInterface[];
        list.splice(list.indexOf(subscriber), 1);
        return done;
      };
    };

    /** Copies a value of `column` sealed under tenant t1 into `id` with the raw driver. */
    const bindConcurrently = (id: number, from: number, column: string) => async () => {
      const value = (await rawCard(from))[column];
      await db.raw(`UPDATE ${db.q("kms_cards")} SET ${db.q(column)} = ? WHERE ${db.q("id")} = ?`, [
        value,
        id,
      ]);
    };

    test("a context column update is atomic with its check: a row bound in between is never moved", async () => {
      const source = await cards.save(card("t1", null, "concurrent pan"));
      const row = await cards.save(card("t1", null, null));
      const stop = between(/kms_stranded/, bindConcurrently(row.id, source.id, "pan"));
      const error = await failure(() => cards.update(row.id, { tenantId: "t2" }));
      expect(stop()).toBe(true);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^Card\.tenantId is part of the encryption context of Card\.holder, Card\.pan: a concurrent write stored one of them/,
      );
      // The row kept its tenant, so the concurrent writer's value still decrypts.
      expect(await cards.findOneByOrFail({ id: row.id })).toMatchObject({
        tenantId: "t1",
        pan: "concurrent pan",
      });
    });

    test("a multi-row context update that meets a row bound in between changes no row", async () => {
      const source = await cards.save(card("t1", null, "4000"));
      const a = await cards.save(card("t1", null, null));
      const b = await cards.save(card("t1", null, null));
      const stop = between(/kms_stranded/, bindConcurrently(b.id, source.id, "pan"));
      const error = await failure(() =>
        cards
          .createQueryBuilder()
          .update(Card)
          .set({ tenantId: "t2" })
          .where("id IN (:...ids)", { ids: [a.id, b.id] })
          .execute(),
      );
      expect(stop()).toBe(true);
      expect(error).toBeInstanceOf(ValidationError);
      const after = await cards.find({ order: { id: "ASC" } });
      expect(after.map((x) => [x.id, x.tenantId, x.pan])).toEqual([
        [source.id, "t1", "4000"],
        [a.id, "t1", null],
        [b.id, "t1", "4000"],
      ]);
      // Inside the caller's transaction the refusal reaches the caller, who rolls back.
      const stop2 = between(/kms_stranded/, bindConcurrently(a.id, source.id, "pan"));
      await expect(
        ds.transaction((manager) => manager.update(Card, { id: a.id }, { tenantId: "t2" })),
      ).rejects.toThrow(/a concurrent write stored one of them/);
      expect(stop2()).toBe(true);
      expect((await cards.findOneByOrFail({ id: a.id })).tenantId).toBe("t1");
    });

    /**
     * Waits until an UPDATE of kms_cards from another connection is queued behind the row lock
     * that `holder` (a connection id) holds. Polls the server: the wait is what is being
     * arranged, not a duration. MariaDB's lock tables lag behind a fresh wait, so there the
     * statement's presence in the process list (it cannot finish before the holder commits) is
     * the signal.
     */
    async function waitForQueuedUpdate(holder: number): Promise<void> {
      const [sql, params] =
        db.kind === "postgres"
          ? [
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid))",
              [holder],
            ]
          : [
              `SELECT count(*) AS n FROM information_schema.PROCESSLIST
               WHERE DB = DATABASE() AND ID <> ? AND INFO LIKE 'UPDATE %kms_cards%'`,
              [holder],
            ];
      for (let i = 0; i < 2000; i++) {
        const rows = await db.raw(sql, params);
        if (Number(rows[0]?.n) > 0) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      throw new Error("the update never queued behind the writer's row lock");
    }

    test("two transactions interleaved: an update queued behind a writer that binds the row does not move it", async (ctx) => {
      // SQLite has one connection: there is no second transaction to interleave.
      if (db.kind === "sqlite") ctx.skip();
      const row = await cards.save(card("t1", null, null));
      const writer = ds.createQueryRunner();
      try {
        const [{ id: holder }] = (await writer.query(
          db.kind === "postgres" ? "SELECT pg_backend_pid() AS id" : "SELECT CONNECTION_ID() AS id",
        )) as [{ id: number }];
        await writer.startTransaction();
        // The writer binds a value under the row's current tenant; not committed yet.
        await writer.manager.update(Card, { id: row.id }, { tenantId: "t1", pan: SECRET });
        // The move's check sees the committed row (nothing bound) and passes; its UPDATE then
        // queues behind the writer's row lock.
        const moving = failure(() => cards.update(row.id, { tenantId: "t2" }));
        await waitForQueuedUpdate(Number(holder));
        await writer.commitTransaction();
        const error = await moving;
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^Card\.tenantId is part of the encryption context of Card\.holder, Card\.pan: a concurrent write stored one of them/,
        );
      } finally {
        if (writer.isTransactionActive) await writer.rollbackTransaction();
        await writer.release();
      }
      // The row kept the tenant its value is sealed under: it still decrypts and is found.
      expect(await cards.findOneByOrFail({ id: row.id })).toMatchObject({
        tenantId: "t1",
        pan: SECRET,
      });
      expect(
        await cards.countBy(await encryptedWhere(cards, { tenantId: "t1", pan: SECRET })),
      ).toBe(1);
      expect(leaks(logger.lines, SECRET)).toEqual([]);
    });

    test("the context check covers the whole where, orWhere included", async () => {
      const a = await cards.save(card("t1", null, null));
      const b = await cards.save(card("t1", null, null));
      const bound = await cards.save(card("t1", "h", null));
      const move = (first: number, second: number) =>
        cards
          .createQueryBuilder()
          .update(Card)
          .set({ tenantId: "t2" })
          .where("id = :first", { first })
          .orWhere("id = :second", { second })
          .execute();
      // Neither row holds a bound column: nothing to refuse.
      expect((await move(a.id, b.id)).affected).toBe(2);
      await expect(move(bound.id, a.id)).rejects.toThrow(
        /^Card\.tenantId is part of the encryption context of Card\.holder, Card\.pan: an update that changes it/,
      );
      await expect(move(a.id, bound.id)).rejects.toBeInstanceOf(ValidationError);
      expect((await cards.find({ order: { id: "ASC" } })).map((x) => x.tenantId)).toEqual([
        "t2",
        "t2",
        "t1",
      ]);
      // The usual update passes, with one check before and one after, and no lock left open.
      await cards.update(bound.id, { tenantId: "t1", holder: "h2" });
      expect((await cards.findOneByOrFail({ id: bound.id })).holder).toBe("h2");
    });
  });
}
