import { randomBytes } from "node:crypto";
import {
  createKms,
  InvalidCiphertextError,
  type Kms,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import {
  And,
  type DataSource,
  type EntitySubscriberInterface,
  type FindOptionsWhere,
  In,
  IsNull,
  Like,
  Not,
  Raw,
  type Repository,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  encryptedParameter,
  encryptedWhere,
  type FieldEncryptionOptions,
  fieldEncryption,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import { failure, holdFirstDataKey, type TestDatabase } from "./backends.ts";
import { Account, Note, Post, SavingsAccount, User } from "./entities.ts";

const PREFIX = "kms1:";

/** t2's find of t1's post fails with the generic error; t1's own find still reads both posts. */
function expectOnlyForeignReadFails([mine, foreign]: PromiseSettledResult<Post[]>[]): void {
  expect(foreign?.status === "rejected" && foreign.reason).toBeInstanceOf(InvalidCiphertextError);
  expect(mine?.status === "fulfilled" && mine.value.map((p) => p.body)).toEqual([
    "t1 first",
    "t1 second",
  ]);
}

const alice = () =>
  Object.assign(new User(), {
    tenantId: "t1",
    email: "alice@example.com",
    phone: "+1 555 0100",
    profile: { likes: ["tea"], age: 7 },
    avatar: Uint8Array.from(Buffer.from("AVATAR-BYTES")),
  });

/** The behaviour every database must show; run once per backend. */
export function describeEncryptedColumns(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`@kms/typeorm on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let users: Repository<User>;

    const connect = async (extra: Partial<FieldEncryptionOptions> = {}) => {
      const e = fieldEncryption({ kms, keyId, ...extra });
      return { encryption: e, ds: await db.connect(e) };
    };

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      ({ encryption, ds } = await connect());
      users = ds.getRepository(User);
    });
    afterEach(async () => {
      await db.close();
    });

    const rawUser = async (id: number) =>
      (
        await db.raw(`SELECT * FROM ${db.q("kms_users")} WHERE ${db.q("id")} = ?`, [id])
      )[0] as Record<string, unknown>;

    test("save stores ciphertext, leaves plaintext on the caller's object, find decrypts", async () => {
      const user = alice();
      const saved = await users.save(user);
      expect(saved).toBe(user);
      expect(user.email).toBe("alice@example.com");
      expect(user.profile).toEqual({ likes: ["tea"], age: 7 });
      const raw = await rawUser(user.id);
      for (const column of ["email", "phone", "profile"]) {
        expect(String(raw[column]).startsWith(PREFIX), column).toBe(true);
        expect(String(raw[column])).not.toContain("alice");
        // The whole number: three digits alone turn up in random base64url now and then.
        expect(String(raw[column])).not.toContain("+1 555 0100");
      }
      expect(Buffer.from(raw.avatar as Uint8Array).includes("AVATAR")).toBe(false);
      expect(raw.phoneIndex).toMatch(/^[A-Za-z0-9_-]{22}$/);
      const found = await users.findOneByOrFail({ id: user.id });
      expect(found).toMatchObject({
        tenantId: "t1",
        email: "alice@example.com",
        phone: "+1 555 0100",
        profile: { likes: ["tea"], age: 7 },
      });
      expect(Buffer.from(found.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
      const all = await users.find();
      expect(all.map((u) => u.email)).toEqual(["alice@example.com"]);
    });

    test("insert, update, QueryBuilder getOne/getMany and null values", async () => {
      const user = alice();
      await users.insert(user);
      expect(user.email).toBe("alice@example.com");
      const id = (await users.findOneByOrFail({ tenantId: "t1" })).id;
      await users.update(id, { phone: "+1 555 0199", tenantId: "t1" });
      const updatedRaw = await rawUser(id);
      expect(String(updatedRaw.phone).startsWith(PREFIX)).toBe(true);
      const one = await users.createQueryBuilder("u").where("u.id = :id", { id }).getOneOrFail();
      expect(one.phone).toBe("+1 555 0199");
      await users.update(id, { phone: null });
      const many = await users.createQueryBuilder("u").getMany();
      expect(many[0]?.phone).toBeNull();
      expect((await rawUser(id)).phoneIndex).toBeNull();
      // save() of a loaded entity: only the changed value is rewritten, all decrypt back.
      one.email = "alice@new.example";
      await users.save(one);
      expect(one.email).toBe("alice@new.example");
      expect((await users.findOneByOrFail({ id })).email).toBe("alice@new.example");
    });

    test("relations: eager and `relations:` decrypt both sides; transactions see the same", async () => {
      const user = await users.save(alice());
      await runWithEncryptionContext({ tenant: "t1" }, async () => {
        await ds.transaction(async (manager) => {
          await manager.save(Object.assign(new Post(), { body: "hello world", author: user }));
        });
        const post = await ds.getRepository(Post).findOneByOrFail({ author: { id: user.id } });
        expect(post.body).toBe("hello world");
        expect(post.author.email).toBe("alice@example.com");
        const withPosts = await users.findOneOrFail({
          where: { id: user.id },
          relations: { posts: true },
        });
        expect(withPosts.posts.map((p) => p.body)).toEqual(["hello world"]);
      });
      const raw = await db.raw(`SELECT ${db.q("body")} FROM ${db.q("kms_posts")}`);
      expect(String(raw[0]?.body).startsWith(PREFIX)).toBe(true);
      expect(String(raw[0]?.body)).not.toContain("hello");
    });

    test("tenant binding from the scope: another tenant's scope cannot read the post", async () => {
      const user = await users.save(alice());
      await runWithEncryptionContext({ tenant: "t1" }, () =>
        ds.getRepository(Post).save(Object.assign(new Post(), { body: "secret", author: user })),
      );
      await expect(
        runWithEncryptionContext({ tenant: "t2" }, () => ds.getRepository(Post).find()),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
      await expect(ds.getRepository(Post).find()).rejects.toThrow(/runWithEncryptionContext/);
    });

    test("a value swapped between two rows fails to decrypt", async () => {
      const a = await users.save(alice());
      const b = await users.save(
        Object.assign(alice(), { tenantId: "t2", email: "bob@example.com" }),
      );
      const rawA = await rawUser(a.id);
      // Same column, other row of another tenant.
      await db.raw(`UPDATE ${db.q("kms_users")} SET ${db.q("phone")} = ? WHERE ${db.q("id")} = ?`, [
        rawA.phone,
        b.id,
      ]);
      await expect(users.findOneBy({ id: b.id })).rejects.toBeInstanceOf(InvalidCiphertextError);
      // Same row, another column.
      await db.raw(`UPDATE ${db.q("kms_users")} SET ${db.q("phone")} = ? WHERE ${db.q("id")} = ?`, [
        rawA.email,
        a.id,
      ]);
      await expect(users.findOneBy({ id: a.id })).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("single-table inheritance: rows read through the parent open as the entity they are; a parent update cannot seal them", async () => {
      const inherited = await db.connect(fieldEncryption({ kms, keyId }), {
        entities: [Account, SavingsAccount],
      });
      const accounts = inherited.getRepository(Account);
      const savingsAccounts = inherited.getRepository(SavingsAccount);
      const savings = await savingsAccounts.save(
        Object.assign(new SavingsAccount(), { tenantId: "t1", holder: "Alice", iban: "DE00 1234" }),
      );
      const plain = await accounts.save(
        Object.assign(new Account(), { tenantId: "t1", holder: "Bob" }),
      );

      // TypeORM's INSERT through the parent stores a parent row, whatever the object's class.
      const insertedId = (
        await accounts.insert(
          Object.assign(new SavingsAccount(), { tenantId: "t1", holder: "Dave" }),
        )
      ).identifiers[0]?.id;

      const [child, parent, inserted] = await accounts.find({ order: { id: "ASC" } });
      expect(child).toBeInstanceOf(SavingsAccount);
      expect({ holder: child?.holder, iban: (child as SavingsAccount).iban }).toEqual({
        holder: "Alice",
        iban: "DE00 1234",
      });
      expect({ id: parent?.id, holder: parent?.holder }).toEqual({ id: plain.id, holder: "Bob" });
      expect({ id: inserted?.id, holder: inserted?.holder }).toEqual({
        id: insertedId,
        holder: "Dave",
      });

      // Sealed as an Account, the child row's holder would never decrypt as a SavingsAccount's.
      const rawHolder = async () =>
        (
          await db.raw(
            `SELECT ${db.q("holder")} FROM ${db.q("kms_accounts")} WHERE ${db.q("id")} = ?`,
            [savings.id],
          )
        )[0]?.holder;
      const before = await rawHolder();
      const error = await failure(() =>
        accounts.update({ id: savings.id }, { tenantId: "t1", holder: "Mallory" }),
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^Account\.holder is encrypted and Account has child entities/,
      );
      expect(await rawHolder()).toBe(before);

      // save() through the parent loads the row first: it is sealed as what it is.
      await accounts.save({ id: savings.id, tenantId: "t1", holder: "Carol" });
      expect((await savingsAccounts.findOneByOrFail({ id: savings.id })).holder).toBe("Carol");
    });

    test("a cold cache loads a result with one KMS decrypt per distinct data key", async () => {
      let decrypts = 0;
      const counted = new Proxy(kms, {
        get(target, property) {
          const value = Reflect.get(target, property) as unknown;
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            if (property === "decrypt") decrypts += 1;
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const cold = await connect({ kms: counted });
      const repo = cold.ds.getRepository(User);
      const saved = await repo.save(
        Array.from({ length: 30 }, (_, i) =>
          Object.assign(alice(), { tenantId: `c${i % 3}`, email: `c${i}@example.com` }),
        ),
      );
      cold.encryption.engine.clearCache();
      decrypts = 0;
      const found = await repo.find({ order: { id: "ASC" } });
      expect(found.map((u) => [u.tenantId, u.email, u.phone])).toEqual(
        saved.map((u) => [u.tenantId, u.email, "+1 555 0100"]),
      );
      expect(found.every((u) => u.profile?.likes[0] === "tea")).toBe(true);
      // 3 tenants × (randomized + stable) + the context-free avatar key: 7, not 120 values.
      expect(decrypts).toBeGreaterThan(0);
      expect(decrypts).toBeLessThanOrEqual(7);
      decrypts = 0;
      await repo.find();
      expect(decrypts).toBe(0);
      // A swapped value fails on the batched (cold) path as on the synchronous (warm) one.
      const [first, second] = saved as [User, User];
      const rawFirst = await rawUser(first.id);
      await db.raw(`UPDATE ${db.q("kms_users")} SET ${db.q("phone")} = ? WHERE ${db.q("id")} = ?`, [
        rawFirst.phone,
        second.id,
      ]);
      await expect(repo.find()).rejects.toBeInstanceOf(InvalidCiphertextError);
      cold.encryption.engine.clearCache();
      await expect(repo.find()).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("concurrent cold loads settle on their own values: a find failing on another tenant's row fails no other find", async () => {
      let decrypts = 0;
      const counted = new Proxy(kms, {
        get(target, property) {
          const value = Reflect.get(target, property) as unknown;
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            if (property === "decrypt") decrypts += 1;
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const cold = await connect({ kms: counted });
      const posts = cold.ds.getRepository(Post);
      const post = (body: string) => Object.assign(new Post(), { body });
      const own = await runWithEncryptionContext({ tenant: "t1" }, () =>
        posts.save([post("t1 first"), post("t1 second")]),
      );
      await runWithEncryptionContext({ tenant: "t2" }, () => posts.save(post("t2 first")));
      const ids = own.map((p) => p.id) as [number, number];
      const read = (tenant: string, where: FindOptionsWhere<Post>) =>
        runWithEncryptionContext({ tenant }, () => posts.find({ where, order: { id: "ASC" } }));

      // On SQLite the loads of both finds come back in one tick on its one query runner: their
      // values are decrypted in one batch, which t2's read of t1's post makes fail.
      cold.encryption.engine.clearCache();
      decrypts = 0;
      expectOnlyForeignReadFails(
        await Promise.allSettled([read("t1", { id: In(ids) }), read("t2", { id: ids[0] })]),
      );
      // The retry of each entity on its own shares the load of t1's data key.
      expect(decrypts).toBe(1);

      // Each find fails on its own bad entity only, wherever it is in the batch.
      cold.encryption.engine.clearCache();
      const [all, alone] = await Promise.allSettled([read("t2", {}), read("t1", { id: ids[1] })]);
      expect(all.status === "rejected" && all.reason).toBeInstanceOf(InvalidCiphertextError);
      expect(alone.status === "fulfilled" && alone.value.map((p) => p.body)).toEqual(["t1 second"]);
    });

    test("a warm find opens all its values in one decryptMany, under one promise its first entity returns", async () => {
      const own = await connect();
      const repo = own.ds.getRepository(User);
      await repo.save(
        Array.from({ length: 20 }, (_, i) =>
          Object.assign(alice(), { tenantId: `w${i % 2}`, email: `w${i}@example.com` }),
        ),
      );
      await repo.find();
      const engine = own.encryption.engine;
      const batches: number[] = [];
      let oneByOne = 0;
      const decryptMany = engine.decryptMany.bind(engine);
      const decryptIfCached = engine.decryptIfCached.bind(engine);
      engine.decryptMany = (items) => {
        batches.push(items.length);
        return decryptMany(items);
      };
      engine.decryptIfCached = (...args) => {
        oneByOne += 1;
        return decryptIfCached(...args);
      };
      const subscriber = own.ds.subscribers.find(
        (s) => (s as { owner?: unknown }).owner === own.encryption,
      ) as EntitySubscriberInterface;
      const afterLoad = subscriber.afterLoad?.bind(subscriber);
      const returned: unknown[] = [];
      subscriber.afterLoad = (entity, event) => {
        const promise = afterLoad?.(entity, event);
        returned.push(promise);
        return promise;
      };

      const found = await repo.find({ order: { id: "ASC" } });
      expect(found.map((u) => [u.email, u.phone, u.profile?.likes[0], u.avatar?.length])).toEqual(
        Array.from({ length: 20 }, (_, i) => [`w${i}@example.com`, "+1 555 0100", "tea", 12]),
      );
      // 20 users × 4 encrypted values, none opened one by one.
      expect({ batches, oneByOne }).toEqual({ batches: [80], oneByOne: 0 });
      // TypeORM awaits every promise a load's hooks return: the first entity's holds them all.
      expect(returned).toHaveLength(20);
      expect(returned[0]).toBeInstanceOf(Promise);
      expect(returned.slice(1)).toEqual(Array.from({ length: 19 }, () => undefined));

      // Another find is another broadcast: another promise, though the value's key is cached.
      const again = await repo.findOneByOrFail({ id: found[0]?.id as number });
      expect(again.email).toBe("w0@example.com");
      expect(returned[20]).toBeInstanceOf(Promise);
      expect(returned[20]).not.toBe(returned[0]);
    });

    test("concurrent warm loads settle on their own values: a find failing on another tenant's row fails no other find", async () => {
      const own = await connect();
      const posts = own.ds.getRepository(Post);
      const post = (body: string) => Object.assign(new Post(), { body });
      const saved = await runWithEncryptionContext({ tenant: "t1" }, () =>
        posts.save([post("t1 first"), post("t1 second")]),
      );
      await runWithEncryptionContext({ tenant: "t2" }, () => posts.save(post("t2 first")));
      const ids = saved.map((p) => p.id) as [number, number];
      const read = (tenant: string, where: FindOptionsWhere<Post>) =>
        runWithEncryptionContext({ tenant }, () => posts.find({ where, order: { id: "ASC" } }));
      // Every data key is cached by the saves.
      const engine = own.encryption.engine;
      const batches: number[] = [];
      const decryptMany = engine.decryptMany.bind(engine);
      let kmsDecrypts = 0;
      engine.decryptMany = (items) => {
        batches.push(items.length);
        return decryptMany(items);
      };
      const unwrap = kms.decrypt.bind(kms);
      kms.decrypt = (...args) => {
        kmsDecrypts += 1;
        return unwrap(...args);
      };

      expectOnlyForeignReadFails(
        await Promise.allSettled([read("t1", { id: In(ids) }), read("t2", { id: ids[0] })]),
      );
      // SQLite's one query runner loads both finds in one tick: one batch of 3, which fails, then
      // each find's values again on their own.
      if (db.kind === "sqlite") expect(batches).toEqual([3, 2, 1]);
      expect(kmsDecrypts).toBe(0);

      const [all, alone] = await Promise.allSettled([read("t2", {}), read("t1", { id: ids[1] })]);
      expect(all.status === "rejected" && all.reason).toBeInstanceOf(InvalidCiphertextError);
      expect(alone.status === "fulfilled" && alone.value.map((p) => p.body)).toEqual(["t1 second"]);
    });

    test("strict mode: plaintext in an encrypted column does not load", async () => {
      const a = await users.save(alice());
      await db.raw(`UPDATE ${db.q("kms_users")} SET ${db.q("phone")} = ? WHERE ${db.q("id")} = ?`, [
        "+1 555 0100",
        a.id,
      ]);
      await expect(users.findOneBy({ id: a.id })).rejects.toBeInstanceOf(InvalidCiphertextError);
      await expect(
        users.save(Object.assign(alice(), { email: `${PREFIX}AAAA` })),
      ).rejects.toBeInstanceOf(ValidationError);
    });

    test("deterministic lookups (value, In, Not) and the unique constraint", async () => {
      const a = await users.save(alice());
      await users.save(Object.assign(alice(), { email: "carol@example.com" }));
      const found = await users.findOneBy(
        await encryptedWhere(users, { tenantId: "t1", email: "alice@example.com" }),
      );
      expect(found?.id).toBe(a.id);
      const many = await users.findBy(
        await encryptedWhere(users, {
          tenantId: "t1",
          email: In(["alice@example.com", "carol@example.com"]),
        }),
      );
      expect(many).toHaveLength(2);
      const others = await users.findBy(
        await encryptedWhere(users, { tenantId: "t1", email: Not("alice@example.com") }),
      );
      expect(others.map((u) => u.email)).toEqual(["carol@example.com"]);
      // The same email in another tenant is a different ciphertext: no match, no conflict.
      expect(
        await users.findOneBy(
          await encryptedWhere(users, { tenantId: "t2", email: "alice@example.com" }),
        ),
      ).toBeNull();
      await users.save(Object.assign(alice(), { tenantId: "t2" }));
      await expect(users.save(alice())).rejects.toThrow();
      const qb = await users
        .createQueryBuilder("u")
        .where(await encryptedWhere(users, { tenantId: "t1", email: "carol@example.com" }))
        .getOne();
      expect(qb?.email).toBe("carol@example.com");
      const param = await encryptedParameter(users, "email", "alice@example.com", {
        context: { tenantId: "t1" },
      });
      const byParam = await users
        .createQueryBuilder("u")
        .where("u.email = :e", { e: param })
        .getMany();
      expect(byParam.map((u) => u.id)).toEqual([a.id]);
    });

    test("blind-index lookups, normalized", async () => {
      const a = await users.save(alice());
      await users.save(Object.assign(alice(), { email: "dave@example.com", phone: "+1 555 0111" }));
      const found = await users.findBy(
        await encryptedWhere(users, { tenantId: "t1", phone: "  +1 555 0100 " }),
      );
      expect(found.map((u) => u.id)).toEqual([a.id]);
      const both = await users.findBy(
        await encryptedWhere(users, { tenantId: "t1", phone: In(["+1 555 0100", "+1 555 0111"]) }),
      );
      expect(both).toHaveLength(2);
      expect(
        await users.countBy(await encryptedWhere(users, { tenantId: "t2", phone: "+1 555 0100" })),
      ).toBe(0);
    });

    test("null checks pass through encryptedWhere as in a plain find: no lookup mode, no context", async () => {
      const a = await users.save(alice());
      const bob: User = Object.assign(alice(), {
        email: "bob@example.com",
        phone: null,
        avatar: null,
      });
      const b = await users.save(bob);
      const ids = async (where: FindOptionsWhere<User>) =>
        (await users.findBy(await encryptedWhere(users, where))).map((u) => u.id).sort();
      // `avatar` is randomized with no blind index, `phone` and `email` are bound to tenantId:
      // none of that matters to a check that reads no value.
      expect(await ids({ avatar: IsNull() })).toEqual([b.id]);
      expect(await ids({ avatar: Not(IsNull()) })).toEqual([a.id]);
      expect(await ids({ phone: IsNull() })).toEqual([b.id]);
      expect(
        await ids({ tenantId: "t1", email: "alice@example.com", avatar: Not(IsNull()) }),
      ).toEqual([a.id]);
      expect(await ids({ email: Not(IsNull()), phone: Not(IsNull()) })).toEqual([a.id]);
      // SQL's IN and = never match NULL, with or without encryption.
      expect(await ids({ phone: In([null]) as never })).toEqual([]);
      // A value still needs its mode and its context.
      await expect(encryptedWhere(users, { avatar: new Uint8Array(1) })).rejects.toThrow(
        /User\.avatar is randomized/,
      );
      await expect(encryptedWhere(users, { phone: Not("+1 555 0100") })).rejects.toThrow(
        /User\.phone is bound to User\.tenantId/,
      );
    });

    /** Every statement TypeORM sends from now on (a subscriber sees them before the driver). */
    const recordQueries = () => {
      const queries: { query: string; parameters: unknown[] }[] = [];
      (ds.subscribers as EntitySubscriberInterface[]).push({
        beforeQuery(event) {
          queries.push({
            query: event.query,
            parameters: [...((event.parameters as unknown[]) ?? [])],
          });
        },
      });
      return queries;
    };

    const byPhone = async (tenantId: string, phone: string) =>
      (await users.findBy(await encryptedWhere(users, { tenantId, phone }))).map((u) => u.id);

    test("Raw on an encrypted column is refused before any statement, naming the column", async () => {
      await users.save(alice());
      const secret = "raw-secret@example.com";
      const queries = recordQueries();
      const attempts = [
        () => users.findBy({ email: Raw((alias) => `${alias} = :v`, { v: secret }) }),
        () => users.findBy({ phone: Raw(`'${secret}'`) }),
        () =>
          users.findBy({
            tenantId: "t1",
            email: Not(Raw((alias) => `${alias} = :v`, { v: secret })),
          }),
        () => users.countBy({ profile: And(Raw((alias) => `${alias} <> :v`, { v: secret })) }),
        () =>
          users.update(
            { email: Raw((alias) => `${alias} = :v`, { v: secret }) },
            { tenantId: "t2" },
          ),
        () => users.delete({ phone: Raw(`'${secret}'`) }),
      ];
      for (const run of attempts) {
        const error = await run().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(ValidationError);
        const message = (error as Error).message;
        expect(message).toMatch(/^User\.(email|phone|profile) is encrypted: Raw\(\)/);
        expect(message).toContain("encryptedWhere()");
        expect(message).not.toContain(secret);
      }
      expect(queries).toEqual([]);
      // Raw on a plaintext column is TypeORM's as before.
      expect(await users.countBy({ tenantId: Raw((alias) => `${alias} = :t`, { t: "t1" }) })).toBe(
        1,
      );
      expect((await users.findOneByOrFail({ tenantId: "t1" })).email).toBe("alice@example.com");
    });

    // Conflicts on the (deterministic, unique) email: PostgreSQL leaves a generated id out of
    // the INSERT, so an upsert on "id" never conflicts there.
    test("upsert recomputes the blind index, on conflict and on insert", async () => {
      const a = await users.save(alice());
      await users.upsert(Object.assign(alice(), { phone: "+1 555 0222" }), ["email"]);
      expect((await users.findOneByOrFail({ id: a.id })).phone).toBe("+1 555 0222");
      expect(await byPhone("t1", "+1 555 0222")).toEqual([a.id]);
      expect(await byPhone("t1", "+1 555 0100")).toEqual([]);
      await users.upsert(Object.assign(alice(), { phone: null }), ["email"]);
      expect((await rawUser(a.id)).phoneIndex).toBeNull();
      expect(await users.count()).toBe(1);
      const bob = Object.assign(alice(), { email: "bob@example.com", phone: "+1 555 0333" });
      await users.upsert(bob, ["email"]);
      const b = await users.findOneByOrFail(
        await encryptedWhere(users, { tenantId: "t1", email: "bob@example.com" }),
      );
      expect(await byPhone("t1", "+1 555 0333")).toEqual([b.id]);
      // A QueryBuilder upsert that overwrites the phone gets its index overwritten too.
      await users
        .createQueryBuilder()
        .insert()
        .into(User)
        .values(Object.assign(alice(), { email: "bob@example.com", phone: "+1 555 0444" }))
        .orUpdate(["phone"], ["email"])
        .execute();
      expect(await byPhone("t1", "+1 555 0444")).toEqual([b.id]);
      expect(await byPhone("t1", "+1 555 0333")).toEqual([]);
      expect(await users.count()).toBe(2);
    });

    test("moving a row to another context without its encrypted columns is refused", async () => {
      const a = await users.save(alice());
      const bound =
        /^User\.tenantId is part of the encryption context of User\.phone, User\.profile\b/;
      const queries = recordQueries();
      await expect(
        users.upsert({ id: a.id, tenantId: "t2", email: "alice@example.com" }, ["id"]),
      ).rejects.toThrow(bound);
      await expect(
        users.upsert({ tenantId: "t2", email: "alice@example.com", phone: null }, ["email"]),
      ).rejects.toThrow(
        /^User\.tenantId is part of the encryption context of User\.profile: an upsert that changes it/,
      );
      expect(queries).toEqual([]);
      await expect(users.update(a.id, { tenantId: "t2" })).rejects.toThrow(
        /^User\.tenantId is part of the encryption context of User\.email, User\.phone, User\.profile: an update that changes it must write them too/,
      );
      await expect(users.update(a.id, { tenantId: "t2", email: "a@x" })).rejects.toThrow(bound);
      await expect(users.save({ id: a.id, tenantId: "t2" })).rejects.toBeInstanceOf(
        ValidationError,
      );
      await expect(
        users
          .createQueryBuilder()
          .update(User)
          .set({ tenantId: () => "'t2'" })
          .where("id = :id", { id: a.id })
          .execute(),
      ).rejects.toBeInstanceOf(ValidationError);
      expect(queries.filter((q) => /^\s*UPDATE|^\s*INSERT/i.test(q.query))).toEqual([]);
      const unchanged = await users.findOneByOrFail({ id: a.id });
      expect(unchanged).toMatchObject({
        tenantId: "t1",
        email: "alice@example.com",
        phone: "+1 555 0100",
        profile: { likes: ["tea"], age: 7 },
      });
      // The tenant given only to seal a value (unchanged) is the documented way to update.
      await users.update(a.id, { tenantId: "t1", email: "alice@new.example" });
      // A loaded entity carries every column: save() reseals them all under the new tenant.
      const loaded = await users.findOneByOrFail({ id: a.id });
      loaded.tenantId = "t2";
      await users.save(loaded);
      expect(await users.findOneByOrFail({ id: a.id })).toMatchObject({
        tenantId: "t2",
        email: "alice@new.example",
        phone: "+1 555 0100",
        profile: { likes: ["tea"], age: 7 },
      });
      expect(await byPhone("t2", "+1 555 0100")).toEqual([a.id]);
      // Columns that hold nothing have nothing to reseal.
      const empty: User = Object.assign(alice(), {
        email: "bob@example.com",
        phone: null,
        profile: null,
      });
      const b = await users.save(empty);
      await users.update(b.id, { tenantId: "t3", email: "bob@example.com" });
      expect((await users.findOneByOrFail({ id: b.id })).email).toBe("bob@example.com");
      // An upsert that writes every bound column may overwrite the tenant.
      await users.upsert(
        Object.assign(alice(), {
          tenantId: "t2",
          email: "alice@new.example",
          phone: "+1 555 0999",
        }),
        ["email"],
      );
      expect(await users.findOneByOrFail({ id: a.id })).toMatchObject({
        tenantId: "t2",
        email: "alice@new.example",
        phone: "+1 555 0999",
      });
    });

    test("a context value that differs only in case or trailing spaces is another context", async () => {
      // MariaDB's default collation takes "t1" and "T1 " for "T1"; the values are bound to bytes.
      const a = await users.save(Object.assign(alice(), { tenantId: "T1" }));
      for (const tenantId of ["t1", "T1 "]) {
        await expect(users.update(a.id, { tenantId }), tenantId).rejects.toThrow(
          /^User\.tenantId is part of the encryption context of User\.email, User\.phone, User\.profile: an update that changes it/,
        );
      }
      await users.update(a.id, { tenantId: "T1", email: "alice@new.example" });
      expect(await users.findOneByOrFail({ id: a.id })).toMatchObject({
        tenantId: "T1",
        email: "alice@new.example",
        phone: "+1 555 0100",
      });
    });

    test("unsupported operators and plain values on encrypted columns fail clearly", async () => {
      await users.save(alice());
      await expect(
        encryptedWhere(users, { tenantId: "t1", email: Like("%alice%") }),
      ).rejects.toThrow(/"like" operator cannot run on ciphertext/);
      await expect(
        encryptedWhere(users, { tenantId: "t1", profile: { age: 7 } as never }),
      ).rejects.toThrow(/randomized/);
      await expect(encryptedWhere(users, { email: "alice@example.com" })).rejects.toThrow(
        /tenantId/,
      );
      await expect(users.findOneBy({ email: "alice@example.com" })).rejects.toBeInstanceOf(
        ValidationError,
      );
      await expect(users.findBy({ email: Like("%alice%") })).rejects.toThrow(
        /plaintext value reached a query/,
      );
      await expect(
        users.createQueryBuilder().insert().values(alice()).callListeners(false).execute(),
      ).rejects.toBeInstanceOf(ValidationError);
      expect(await users.count()).toBe(1);
      expect(await users.findBy({ phone: IsNull() })).toEqual([]);
    });

    test("transaction rollback leaves no row, no orphaned data key, and plaintext on the object", async () => {
      const keysBefore = await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`);
      const user = Object.assign(alice(), { tenantId: "t9" });
      await expect(
        ds.transaction(async (manager) => {
          await manager.save(user);
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      expect(user.email).toBe("alice@example.com");
      expect(await users.count()).toBe(0);
      const keysAfter = await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`);
      if (db.kind === "sqlite") expect(keysAfter).toHaveLength(keysBefore.length);
      // Whatever keys survived, new writes never reference a key that is gone.
      const saved = await users.save(Object.assign(alice(), { tenantId: "t9" }));
      const fresh = await connect();
      expect((await fresh.ds.getRepository(User).findOneByOrFail({ id: saved.id })).email).toBe(
        "alice@example.com",
      );
      // A failed insert outside a transaction also restores the caller's object.
      const dup = Object.assign(alice(), { tenantId: "t9" });
      await expect(users.insert(dup)).rejects.toThrow();
      expect(dup.email).toBe("alice@example.com");
    });

    test("a failed save restores plaintext on every entity, also one whose values were still being sealed", async () => {
      // The first entity is still being sealed when the second one's hook rejects and the save
      // is rolled back.
      const hold = holdFirstDataKey();
      const slow = await connect({ dataKeyStore: hold.store });
      const repo = slow.ds.getRepository(User);
      const ok = alice();
      const bad = Object.assign(alice(), { tenantId: undefined, email: "bob@example.com" });
      await expect(repo.save([ok, bad])).rejects.toThrow(/^User\.email is bound to User\.tenantId/);
      await hold.release();
      expect(ok).toMatchObject({ email: "alice@example.com", phone: "+1 555 0100" });
      expect(ok.profile).toEqual({ likes: ["tea"], age: 7 });
      expect(await repo.count()).toBe(0);
      // Saved again, it is sealed afresh.
      await repo.save(ok);
      expect((await repo.findOneByOrFail({ id: ok.id })).email).toBe("alice@example.com");
    });

    test.each(["insert", "upsert", "save without a transaction"] as const)(
      "a failed %s of several entities restores plaintext on every entity: no rollback does it",
      async (how) => {
        const hold = holdFirstDataKey();
        const slow = await connect({ dataKeyStore: hold.store });
        const repo = slow.ds.getRepository(User);
        const ok = alice();
        const bad = Object.assign(alice(), { tenantId: undefined, email: "bob@example.com" });
        const write = {
          insert: () => repo.insert([ok, bad]),
          upsert: () => repo.upsert([ok, bad], ["email"]),
          "save without a transaction": () => repo.save([ok, bad], { transaction: false }),
        }[how];
        await expect(write()).rejects.toThrow(/^User\.email is bound to User\.tenantId/);
        await hold.release();
        expect(ok).toMatchObject({ email: "alice@example.com", phone: "+1 555 0100" });
        expect(ok.profile).toEqual({ likes: ["tea"], age: 7 });
        expect(ok.avatar).toEqual(alice().avatar);
        expect(await repo.count()).toBe(0);
        // Written again under another tenant, its values are sealed afresh and bound to it.
        ok.tenantId = "t2";
        await repo.save(ok);
        expect(await repo.findOneByOrFail({ id: ok.id })).toMatchObject({
          tenantId: "t2",
          email: "alice@example.com",
          phone: "+1 555 0100",
        });
      },
    );

    test("an insert refused by another subscriber's hook: the next write of the object seals its values afresh, bound to its context", async () => {
      const ok = alice();
      const bad = Object.assign(alice(), { email: "bob@example.com" });
      // Refuses once `ok` holds ciphertext; nothing rolls back an insert, and this subscriber
      // is not the encryption's, so `ok` keeps its sealed values for now.
      (ds.subscribers as EntitySubscriberInterface[]).push({
        listenTo: () => User,
        async beforeInsert(event) {
          if (event.entity !== bad) return;
          while (typeof ok.email === "string") await new Promise((r) => setImmediate(r));
          throw new Error("refused by another subscriber");
        },
      });
      await expect(users.insert([ok, bad])).rejects.toThrow("refused by another subscriber");
      ok.tenantId = "t2";
      await users.insert(ok);
      expect(ok).toMatchObject({ email: "alice@example.com", phone: "+1 555 0100" });
      expect(await users.findOneByOrFail({ id: ok.id })).toMatchObject({
        tenantId: "t2",
        email: "alice@example.com",
        phone: "+1 555 0100",
        profile: { likes: ["tea"], age: 7 },
      });
    });

    test("a write reads each encrypted property once: a getter is asked for one value, which is checked, sealed and put back", async () => {
      const subscriber = ds.subscribers.find((s) => s instanceof encryption.subscriber) as Record<
        string,
        (event: unknown) => unknown
      >;
      let counting = false;
      for (const hook of ["beforeInsert", "beforeUpdate"]) {
        const original = (subscriber[hook] as (event: unknown) => unknown).bind(subscriber);
        // The values are read before the hook's first await: its synchronous part is counted.
        subscriber[hook] = (event) => {
          counting = true;
          try {
            return original(event);
          } finally {
            counting = false;
          }
        };
      }
      const user = alice();
      const reads: Record<string, number> = {};
      for (const property of ["email", "phone", "profile", "avatar"] as const) {
        let value: unknown = user[property];
        reads[property] = 0;
        Object.defineProperty(user, property, {
          enumerable: true,
          configurable: true,
          get() {
            if (counting) reads[property] = (reads[property] ?? 0) + 1;
            return value;
          },
          set(next: unknown) {
            value = next;
          },
        });
      }
      const once = { email: 1, phone: 1, profile: 1, avatar: 1 };
      await users.save(user);
      expect(reads).toEqual(once);
      expect(user).toMatchObject({ email: "alice@example.com", phone: "+1 555 0100" });
      for (const property of Object.keys(reads)) reads[property] = 0;
      user.phone = "+1 555 0199";
      await users.save(user);
      expect(reads).toEqual(once);
      expect(user.phone).toBe("+1 555 0199");
      expect(await users.findOneByOrFail({ id: user.id })).toMatchObject({
        email: "alice@example.com",
        phone: "+1 555 0199",
        profile: { likes: ["tea"], age: 7 },
      });
    });

    test("two concurrent saves of one object leave its plaintext on it, and the next save seals afresh", async () => {
      const user = await users.save(alice());
      const loaded = await users.findOneByOrFail({ id: user.id });
      loaded.email = "alicia@example.com";
      loaded.phone = "+1 555 0199";
      // Either may be refused (the values are sealed in place); neither leaves ciphertext behind.
      await Promise.allSettled([users.save(loaded), users.save(loaded)]);
      expect(loaded).toMatchObject({ email: "alicia@example.com", phone: "+1 555 0199" });
      expect(loaded.profile).toEqual({ likes: ["tea"], age: 7 });
      // A value sealed for one of them and left on the object would be written as it is, bound
      // to the old tenant.
      loaded.tenantId = "t2";
      await users.save(loaded);
      expect(await users.findOneByOrFail({ id: user.id })).toMatchObject({
        tenantId: "t2",
        email: "alicia@example.com",
        phone: "+1 555 0199",
      });
    });

    test("ciphertexts use the shared field format and @kms/prisma's binding (model, field, context)", async () => {
      const user = await users.save(alice());
      const raw = await rawUser(user.id);
      const open = (model: string, context: Record<string, string>) =>
        encryption.run(ds, undefined, () =>
          encryption.engine.decryptText(
            { model, field: "email", context },
            { type: "string", mode: "deterministic" },
            String(raw.email),
          ),
        );
      expect(await open("User", { tenantId: "t1" })).toBe("alice@example.com");
      await expect(open("Customer", { tenantId: "t1" })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      await expect(open("User", { tenantId: "t2" })).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("a bulk save creates one data key per (purpose, context), not one per value", async () => {
      const before = (await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`)).length;
      const many = Array.from({ length: 40 }, (_, i) =>
        Object.assign(alice(), { tenantId: "t5", email: `u${i}@example.com` }),
      );
      await users.save(many);
      const after = (await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`)).length;
      // {tenantId} randomized, {tenantId} stable (deterministic + blind index), {} randomized.
      expect(after - before).toBeLessThanOrEqual(3);
      expect(many.every((u, i) => u.email === `u${i}@example.com`)).toBe(true);
      expect(await users.countBy({ tenantId: "t5" })).toBe(40);
    });

    test("saves in successive transactions reuse the committed data keys; a rolled-back one's are not reused", async () => {
      const keyRows = async () =>
        (await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_data_keys")}`)).length;
      const batch = (from: number) =>
        Array.from({ length: 5 }, (_, i) =>
          Object.assign(alice(), { tenantId: "t6", email: `v${from + i}@example.com` }),
        );
      await users.save(batch(0)); // save() runs in its own transaction
      const afterFirst = await keyRows();
      await users.save(batch(5));
      await ds.transaction((manager) => manager.save(batch(10)));
      expect(await keyRows()).toBe(afterFirst);

      // A rolled-back transaction's new key (another tenant) is gone, and never reused.
      await expect(
        ds.transaction(async (manager) => {
          await manager.save(Object.assign(alice(), { tenantId: "t7" }));
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      const saved = await users.save(Object.assign(alice(), { tenantId: "t7" }));
      const fresh = await connect();
      const reread = fresh.ds.getRepository(User);
      expect((await reread.findOneByOrFail({ id: saved.id })).email).toBe("alice@example.com");
      expect((await reread.findBy({ tenantId: "t6" })).map((u) => u.email).sort()).toHaveLength(15);
    });

    test("a value read with listeners off is refused when saved back, text or bytes: never encrypted twice", async () => {
      const saved = await users.save(alice());
      const raw = await users
        .createQueryBuilder("u")
        .callListeners(false)
        .where("u.id = :id", { id: saved.id })
        .getOneOrFail();
      expect(String(raw.email)).toMatch(/^kms1:/);
      // FORMAT §6.1: a bytes column holds the ciphertext itself, header first.
      expect(raw.avatar?.[0]).toBe(0xc1);
      for (const [property, write] of [
        ["email", () => users.save({ id: saved.id, tenantId: "t1", email: raw.email })],
        ["avatar", () => users.save({ id: saved.id, avatar: raw.avatar })],
      ] as const) {
        const error = await failure(write);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toBe(
          `User.${property} already holds ciphertext: refusing to encrypt it twice`,
        );
      }
      const read = async () => (await users.findOneByOrFail({ id: saved.id })).avatar;
      expect(Buffer.from((await read()) as Uint8Array).toString()).toBe("AVATAR-BYTES");
      // Bytes that only look like a header, under no data key of the store, are data.
      const lookalike = Uint8Array.from([0xc1, ...randomBytes(60)]);
      await users.save({ id: saved.id, avatar: lookalike });
      expect(Buffer.from((await read()) as Uint8Array)).toEqual(Buffer.from(lookalike));
    });

    test("the migration job encrypts legacy plaintext and moves values off an old KMS key", async () => {
      const t = db.q("kms_notes");
      await db.raw(`INSERT INTO ${t} (${db.q("title")}, ${db.q("code")}) VALUES (?, ?), (?, ?)`, [
        "legacy one",
        "C-1",
        "legacy two",
        null,
      ]);
      const notes = ds.getRepository(Note);
      await expect(notes.find()).rejects.toBeInstanceOf(InvalidCiphertextError);
      const legacy = await connect({ legacyPlaintext: true });
      const first = await reencryptEntities(legacy.ds, Note, { batchSize: 1 });
      expect(first).toMatchObject({ scanned: 2, reencrypted: 2, conflicts: 0 });
      const raw = await db.raw(`SELECT * FROM ${t} ORDER BY ${db.q("id")}`);
      expect(raw.map((r) => String(r.title).startsWith(PREFIX))).toEqual([true, true]);
      expect(raw[1]?.code).toBeNull();
      expect((await notes.find({ order: { id: "ASC" } })).map((n) => n.title)).toEqual([
        "legacy one",
        "legacy two",
      ]);
      // Rotate to a new KMS key: the job rewrites every value under it.
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = await connect({ keyId: newKey, previousKeyIds: [keyId] });
      const second = await reencryptEntities(rotated.ds, Note);
      expect(second.reencrypted).toBe(2);
      for (const r of await db.raw(`SELECT * FROM ${t}`)) {
        const info = await rotated.encryption.inspect(rotated.ds, String(r.title));
        expect(info.legacy ? "" : info.kmsKeyId).toContain(newKey);
      }
      expect(await reencryptEntities(rotated.ds, Note)).toMatchObject({ reencrypted: 0 });
      const byCode = await rotated.ds
        .getRepository(Note)
        .findOneBy(await encryptedWhere(rotated.ds.getRepository(Note), { code: "C-1" }));
      expect(byCode?.title).toBe("legacy one");
    });
  });
}
