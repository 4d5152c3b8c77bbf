import {
  FieldEncryptionEngine,
  type Kms,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import { SeededRandom as Rng } from "@kms/tooling/random";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PrismaDataKeyStore, parseSchema } from "../src/index.ts";
import { schemaText } from "./backends.ts";
import {
  attempt,
  BACKENDS,
  describeError,
  type Extended,
  leaks,
  openRecordingClient,
  type RecordingDatabase,
  secretText,
  show,
} from "./recording.ts";

// Property tests of writes through relations and transactions, against a reference model of the
// rows in plaintext, on every backend: random nested creates, connectOrCreate, nested
// update/updateMany/upsert, `{ set }` updates, deletes, reads with included relations of mixed
// tenants, filtered relation counts, fluent reads, and interactive and batch transactions, some
// of them rolled back. A failure message's seed and operation index reproduce it:
//   WRITE_PROPERTIES_SEED=<seed> npx vitest run test/write-properties.test.ts

const SEED = Number(process.env.WRITE_PROPERTIES_SEED ?? 20_260_602);
const OPERATIONS = 300;
/** A post id that no row has: Prisma's ids count up from 1. */
const MISSING_ID = 1_000_000;

const descriptor = parseSchema(schemaText);
const USER = descriptor.User as NonNullable<(typeof descriptor)["User"]>;
const POST = descriptor.Post as NonNullable<(typeof descriptor)["Post"]>;

type Json = Record<string, unknown>;

interface UserRow {
  id: number;
  tenantId: string;
  email: string;
  name: string | null;
  phone: string | null;
}

interface PostRow {
  id: number;
  tenantId: string;
  title: string;
  body: string;
  authorId: number;
}

/** The plaintext rows as they must be after every operation. */
class Reference {
  users = new Map<number, UserRow>();
  posts = new Map<number, PostRow>();

  copy(): Reference {
    const out = new Reference();
    for (const [id, u] of this.users) out.users.set(id, { ...u });
    for (const [id, p] of this.posts) out.posts.set(id, { ...p });
    return out;
  }

  postsOf(userId: number): PostRow[] {
    return [...this.posts.values()].filter((p) => p.authorId === userId).sort(byId);
  }

  usersOf(tenantId: string): UserRow[] {
    return [...this.users.values()].filter((u) => u.tenantId === tenantId).sort(byId);
  }
}

const byId = (a: { id: number }, b: { id: number }): number => a.id - b.id;

const userView = (u: Json): Json => ({
  id: u.id,
  tenantId: u.tenantId,
  email: u.email,
  name: u.name,
  phone: u.phone,
});
const postView = (p: Json): Json => ({
  id: p.id,
  tenantId: p.tenantId,
  title: p.title,
  body: p.body,
  authorId: p.authorId,
});

/** What a call must do: give this value, or fail with this kind of error and change nothing. */
type Expected =
  | {
      readonly kind: "ok";
      readonly value: (result: unknown) => unknown;
      readonly view: (r: unknown) => unknown;
    }
  | { readonly kind: "validation"; readonly names: RegExp }
  | { readonly kind: "prisma"; readonly code: string };

/**
 * Compares a result with the reference, or (inside a transaction, whose later statements change
 * what an earlier one returned) does nothing.
 */
type Check = (actual: unknown, expected: unknown) => void;

/** One drawn operation: what it runs, and how the reference changes when it succeeds. */
interface Operation {
  readonly label: string;
  run(client: Extended): Promise<unknown>;
  /** Decides the expected outcome on `model`, and applies the write to it (before the run). */
  expect(model: Reference): Expected;
  /** Ids the database chose: matched to the reference's placeholders after a success. */
  adopt?(model: Reference, result: unknown, check: Check): void;
}

const ok = (value: unknown, view: (r: unknown) => unknown): Expected => ({
  kind: "ok",
  value: () => value,
  view,
});
const refused = (names: RegExp): Expected => ({ kind: "validation", names });
const prismaError = (code: string): Expected => ({ kind: "prisma", code });

const asUser = (r: unknown): unknown => (r === null ? null : userView(r as Json));
const asPosts = (r: unknown): unknown => (r === null ? null : (r as Json[]).map(postView));

for (const backend of BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `writes through relations and transactions (${backend.name}): the reference result or a ValidationError`,
    () => {
      let rec: RecordingDatabase;
      let prisma: Extended;
      let kms: Kms;
      let keyId: string;

      beforeAll(async () => {
        ({ rec, prisma, kms, keyId } = await openRecordingClient(backend));
      });
      afterAll(async () => {
        await rec?.close();
      });

      /**
       * Every stored row equals the reference, and every encrypted value opens under its own
       * row's tenant with an engine that has never seen a data key (so a value sealed under a
       * key whose row rolled back fails here), its blind index included.
       */
      async function expectStored(model: Reference, label: string): Promise<void> {
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          dataKeyStore: new PrismaDataKeyStore(rec.base.kmsDataKey),
        });
        const open = async (table: "User" | "Post", row: Json, field: string): Promise<unknown> => {
          const stored = row[field];
          if (stored === null) return null;
          const spec = (table === "User" ? USER : POST).encrypted[field];
          const binding = { model: table, field, context: { tenantId: String(row.tenantId) } };
          const info = await attempt(() => engine.inspect(stored as string));
          expect(
            info.ok ? "known data key" : describeError(info.error),
            `${table} ${String(row.id)}.${field}: its data key has no row: ${label}`,
          ).toBe("known data key");
          const read = await attempt(() =>
            engine.decryptMany([{ binding, spec: spec as never, stored: stored as string }]),
          );
          expect(
            read.ok ? "opens" : describeError(read.error),
            `${table} ${String(row.id)}.${field} does not open under its own tenant: ${label}`,
          ).toBe("opens");
          return read.ok ? (read.value as unknown[])[0] : undefined;
        };
        const users: Json[] = [];
        for (const row of await rec.rawRows("User")) {
          const phone = await open("User", row, "phone");
          users.push({
            id: Number(row.id),
            tenantId: row.tenantId,
            email: await open("User", row, "email"),
            name: await open("User", row, "name"),
            phone,
          });
          const index = USER.blindIndexes.phoneIndex as NonNullable<
            (typeof USER.blindIndexes)["phoneIndex"]
          >;
          const expectedIndex =
            phone === null
              ? null
              : await engine.blindIndex(
                  {
                    model: "User",
                    field: "phoneIndex",
                    context: { tenantId: String(row.tenantId) },
                  },
                  index,
                  phone as string,
                );
          expect(row.phoneIndex, `User ${String(row.id)}.phoneIndex: ${label}`).toBe(expectedIndex);
        }
        const posts: Json[] = [];
        for (const row of await rec.rawRows("Post")) {
          posts.push({
            id: Number(row.id),
            tenantId: row.tenantId,
            title: row.title,
            body: await open("Post", row, "body"),
            authorId: Number(row.authorId),
          });
        }
        // Rows a call created whose ids its result did not tell (createMany): matched by secret.
        adoptIds(
          model,
          users.filter((u) => !model.users.has(u.id as number)),
          posts.filter((p) => !model.posts.has(p.id as number)),
        );
        expect(users, `stored users: ${label}`).toEqual([...model.users.values()].sort(byId));
        expect(posts, `stored posts: ${label}`).toEqual([...model.posts.values()].sort(byId));
      }

      test(`${OPERATIONS} random writes, nested writes, reads and transactions`, async () => {
        let model = new Reference();
        const secrets: string[] = [];
        const tenants = ["t1", "t2"];
        /** Tenants first written inside a transaction that then rolled back. */
        const rolledBack: string[] = [];
        let serial = 0;
        const tally = { ok: 0, refused: 0, prisma: 0, rollbacks: 0, mixed: 0 };

        for (let i = 0; i < OPERATIONS; i++) {
          const rng = new Rng(SEED, backend.name === "SQLite" ? 1 : 2, i);
          const text = (): string => {
            const s = secretText(rng, serial++);
            secrets.push(s);
            return s;
          };
          const title = (): string => `title ${serial++}`;
          /** A tenant: often a fresh one, whose first data key is made by this operation. */
          const tenant = (): string => {
            if (rolledBack.length > 0 && rng.chance(0.3)) return rng.pick(rolledBack.slice(-3));
            if (rng.chance(0.1)) {
              const fresh = `t${tenants.length + 1}-${i}`;
              tenants.push(fresh);
              return fresh;
            }
            return rng.pick(tenants.slice(0, 2));
          };
          const kind = rng.pick(["single", "single", "single", "single", "itx", "batch"] as const);
          const rollback = kind !== "single" && rng.chance(0.5);
          const draw = (inTransaction: boolean): Operation =>
            drawOperation(rng, model, {
              text,
              title,
              tenant,
              inTransaction,
              batch: kind === "batch",
            });
          const driverBefore = rec.driver.length;
          const eventsBefore = rec.events.length;
          let label: string;
          if (kind === "single") {
            const op = draw(false);
            label = `${backend.name} seed ${SEED} operation ${i}: ${op.label}`;
            const next = model.copy();
            const expected = op.expect(next);
            const outcome = await attempt(() =>
              runWithEncryptionContext({ tenantId: "t1" }, () => op.run(prisma)),
            );
            if (expected.kind === "ok" && outcome.ok)
              op.adopt?.(next, outcome.value, (a, e) => expect(a, `result: ${label}`).toEqual(e));
            judge(expected, outcome, label, tally);
            if (expected.kind === "ok" && outcome.ok) {
              expect(expected.view(outcome.value), `result: ${label}`).toEqual(
                expected.value(outcome.value),
              );
              model = next;
            }
          } else {
            // Sub-operations that succeed alone; the transaction commits or rolls back as a whole.
            const ops: Operation[] = [];
            const next = model.copy();
            /** A statement of the batch is refused: the whole batch fails before it runs. */
            let refusedInBatch = false;
            const fresh = kind === "itx" && rng.chance(0.5) ? `rb-${i}` : undefined;
            for (let n = 1 + rng.int(3); n > 0; n--) {
              const op =
                fresh !== undefined && ops.length === 0
                  ? createUserOperation(rng, next, fresh, {
                      text,
                      title,
                      tenant,
                      inTransaction: true,
                      batch: false,
                    })
                  : draw(true);
              const alone = op.expect(next.copy());
              if (alone.kind === "validation") refusedInBatch = true;
              else if (alone.kind !== "ok") continue;
              op.expect(next);
              ops.push(op);
            }
            if (ops.length === 0) continue;
            label = `${backend.name} seed ${SEED} operation ${i}: ${kind} ${
              rollback ? "rolled back" : "committed"
            } [${ops.map((o) => o.label).join("; ")}]`;
            let outcome: Awaited<ReturnType<typeof attempt>>;
            if (kind === "itx") {
              outcome = await attempt(() =>
                prisma.$transaction(async (tx) => {
                  const results: unknown[] = [];
                  for (const op of ops) results.push(await op.run(tx as unknown as Extended));
                  if (rollback) throw new RollBack();
                  return results;
                }),
              );
            } else {
              // A batch rolls back when one of its statements fails: a duplicate (tenant, email).
              const clash = rollback ? [...model.users.values()][0] : undefined;
              const batch = ops.map((op) => op.run(prisma));
              if (clash !== undefined) {
                batch.push(
                  prisma.user.create({
                    data: { tenantId: clash.tenantId, email: clash.email, name: text() },
                  }),
                );
              }
              outcome = await attempt(() =>
                runWithEncryptionContext({ tenantId: "t1" }, () =>
                  prisma.$transaction(batch as never),
                ),
              );
              if (clash === undefined && rollback && !refusedInBatch) {
                // Nothing to clash with yet: the batch commits.
                expect(
                  outcome.ok,
                  `${label}: ${outcome.ok ? "" : describeError(outcome.error)}`,
                ).toBe(true);
              }
            }
            if (refusedInBatch) {
              judge(refused(BATCH_REFUSAL), outcome, label, tally);
            } else if (outcome.ok) {
              expect(rollback && kind === "itx", `committed a rollback: ${label}`).toBe(false);
              const results = outcome.value as unknown[];
              ops.forEach((op, n) => {
                op.adopt?.(next, results[n], () => {});
              });
              model = next;
              tally.ok++;
            } else {
              tally.rollbacks++;
              const error = outcome.error;
              expect(
                error instanceof RollBack || (error as { code?: unknown })?.code === "P2002",
                `${label}: ${describeError(error)}`,
              ).toBe(true);
              if (fresh !== undefined && !tenants.includes(fresh)) rolledBack.push(fresh);
            }
          }
          expect(leaks(rec.driver.slice(driverBefore), secrets), `driver: ${label}`).toEqual([]);
          expect(leaks(rec.events.slice(eventsBefore), secrets), `query log: ${label}`).toEqual([]);
          await expectStored(model, label);
          const authorTenant = (p: PostRow) => model.users.get(p.authorId)?.tenantId;
          if ([...model.posts.values()].some((p) => p.tenantId !== authorTenant(p))) tally.mixed++;
        }
        // Every side of the property must have been exercised.
        expect(tally.ok).toBeGreaterThan(OPERATIONS / 3);
        expect(tally.refused).toBeGreaterThan(OPERATIONS / 20);
        expect(tally.rollbacks).toBeGreaterThan(OPERATIONS / 40);
        expect(tally.mixed).toBeGreaterThan(OPERATIONS / 2);
        expect(model.posts.size).toBeGreaterThan(5);
      }, 180_000);
    },
  );
}

class RollBack extends Error {}

function judge(
  expected: Expected,
  outcome: Awaited<ReturnType<typeof attempt>>,
  label: string,
  tally: { ok: number; refused: number; prisma: number },
): void {
  const got = outcome.ok ? "ok" : describeError(outcome.error);
  switch (expected.kind) {
    case "ok":
      tally.ok++;
      expect(got, `expected success: ${label}`).toBe("ok");
      break;
    case "validation":
      tally.refused++;
      expect(
        outcome.ok ? undefined : outcome.error,
        `expected a ValidationError, got ${got}: ${label}`,
      ).toBeInstanceOf(ValidationError);
      expect(got, label).toMatch(expected.names);
      break;
    case "prisma":
      tally.prisma++;
      expect(
        outcome.ok ? "ok" : (outcome.error as { code?: unknown }).code,
        `expected Prisma's ${expected.code}, got ${got}: ${label}`,
      ).toBe(expected.code);
      break;
  }
}

interface Draw {
  text(): string;
  title(): string;
  tenant(): string;
  readonly inTransaction: boolean;
  /** In a batch `$transaction`, where an update cannot first read its row's tenant. */
  readonly batch: boolean;
}

const BATCH_REFUSAL = /inside a batch \$transaction/;

/** Placeholder ids of rows a call creates, negative until the database's ids are adopted. */
let placeholder = -1;

/** Swaps the placeholder ids of created rows for the ids in the result (matched by a secret). */
function adoptIds(model: Reference, users: Json[], posts: Json[]): void {
  for (const u of users) {
    const mine = [...model.users.values()].find((m) => m.id < 0 && m.email === u.email);
    if (mine === undefined) continue;
    model.users.delete(mine.id);
    for (const p of model.posts.values()) if (p.authorId === mine.id) p.authorId = u.id as number;
    mine.id = u.id as number;
    model.users.set(mine.id, mine);
  }
  for (const p of posts) {
    const mine = [...model.posts.values()].find((m) => m.id < 0 && m.body === p.body);
    if (mine === undefined) continue;
    model.posts.delete(mine.id);
    mine.id = p.id as number;
    model.posts.set(mine.id, mine);
  }
}

/** The user with its posts as the reference has them, once ids are adopted. */
function withPosts(model: Reference, userId: () => number) {
  return () => ({
    ...userView(model.users.get(userId()) as unknown as Json),
    posts: model.postsOf(userId()).map((p) => postView(p as unknown as Json)),
  });
}

function createUserOperation(rng: Rng, model: Reference, tenantId: string, d: Draw): Operation {
  const data: Json = { tenantId, email: d.text() };
  if (rng.chance(0.6)) data.name = rng.chance(0.15) ? null : d.text();
  if (rng.chance(0.5)) data.phone = rng.chance(0.15) ? null : `  ${d.text()} `;
  const nested: Json = {};
  const postTenants = Array.from({ length: rng.int(3) }, () =>
    rng.chance(0.5) ? tenantId : d.tenant(),
  );
  const creates = postTenants.map((t) => ({ tenantId: t, title: d.title(), body: d.text() }));
  if (creates.length > 0) nested.create = creates;
  const existing = [...model.posts.values()].filter((p) => p.id > 0);
  const connectOrCreate =
    rng.chance(0.3) && !d.inTransaction
      ? [
          {
            where: {
              id: existing.length > 0 && rng.chance(0.5) ? rng.pick(existing).id : MISSING_ID,
            },
            create: { tenantId: d.tenant(), title: d.title(), body: d.text() },
          },
        ]
      : [];
  if (connectOrCreate.length > 0) nested.connectOrCreate = connectOrCreate;
  if (Object.keys(nested).length > 0) data.posts = nested;
  const args = {
    data,
    include: { posts: { orderBy: { id: "asc" } } },
  };
  let id = 0;
  return {
    label: `user.create ${show(args)}`,
    run: (client) => client.user.create(args as never),
    expect(m) {
      const user: UserRow = {
        id: placeholder--,
        tenantId,
        email: data.email as string,
        name: (data.name as string | null | undefined) ?? null,
        phone: (data.phone as string | null | undefined) ?? null,
      };
      id = user.id;
      m.users.set(user.id, user);
      for (const c of creates) {
        m.posts.set(placeholder, { id: placeholder--, ...c, authorId: user.id });
      }
      for (const c of connectOrCreate) {
        const found = m.posts.get(c.where.id);
        if (found !== undefined) found.authorId = user.id;
        else m.posts.set(placeholder, { id: placeholder--, ...c.create, authorId: user.id });
      }
      return ok(undefined, () => undefined);
    },
    adopt(m, result, check) {
      const r = result as Json;
      adoptIds(m, [r], r.posts as Json[]);
      id = r.id as number;
      const expected = withPosts(m, () => id)();
      check({ ...userView(r), posts: (r.posts as Json[]).map(postView) }, expected);
    },
  };
}

/** One random operation whose outcome the reference decides. */
function drawOperation(rng: Rng, model: Reference, d: Draw): Operation {
  const users = [...model.users.values()].filter((u) => u.id > 0);
  const posts = [...model.posts.values()].filter((p) => p.id > 0);
  const user = users.length > 0 ? rng.pick(users) : undefined;
  const kinds = d.inTransaction
    ? (["create", "update", "updatePosts", "upsert"] as const)
    : ([
        "create",
        "create",
        "createMany",
        "update",
        "update",
        "updatePosts",
        "updatePosts",
        "updatePosts",
        "updateMany",
        "upsert",
        "delete",
        "read",
        "read",
        "read",
      ] as const);
  const kind = user === undefined ? "create" : rng.pick(kinds);
  switch (kind) {
    case "create":
      return createUserOperation(rng, model, d.tenant(), d);
    case "createMany": {
      const tenantId = d.tenant();
      const data = Array.from({ length: 1 + rng.int(3) }, () => ({
        tenantId,
        email: d.text(),
        name: rng.chance(0.5) ? d.text() : null,
      }));
      // A duplicate (tenant, email) fails the whole call.
      const clash = rng.chance(0.15) && user !== undefined;
      if (clash) data.push({ tenantId: user.tenantId, email: user.email, name: null });
      const andReturn = rng.chance(0.5);
      const operation = andReturn ? "createManyAndReturn" : "createMany";
      return {
        label: `user.${operation} ${show({ data })}`,
        run: (client) => (client.user[operation] as (a: unknown) => Promise<unknown>)({ data }),
        expect(m) {
          if (clash) return prismaError("P2002");
          for (const row of data) {
            m.users.set(placeholder, {
              id: placeholder--,
              tenantId,
              email: row.email,
              name: row.name,
              phone: null,
            });
          }
          return ok(
            andReturn ? undefined : { count: data.length },
            andReturn ? () => undefined : (r) => r,
          );
        },
        adopt(m, result, check) {
          if (!andReturn) {
            // Ids from the stored rows: the new emails are secrets no other row has.
            return;
          }
          const rows = result as Json[];
          adoptIds(m, rows, []);
          check(
            rows.map(userView),
            rows.map((r) => userView(m.users.get(r.id as number) as unknown as Json)),
          );
        },
      };
    }
    case "update": {
      const u = user as UserRow;
      const set = <T>(v: T): T | { set: T } => (rng.chance(0.4) ? { set: v } : v);
      const data: Json = {};
      // Not inside a transaction: a later statement of it may look the user up by email.
      const email = !d.inTransaction && rng.chance(0.25) ? d.text() : undefined;
      if (email !== undefined) data.email = set(email);
      const name = rng.chance(0.7) ? (rng.chance(0.1) ? null : d.text()) : undefined;
      if (name !== undefined) data.name = set(name);
      const phone = rng.chance(0.4) ? d.text() : undefined;
      if (phone !== undefined) data.phone = set(phone);
      if (Object.keys(data).length === 0) data.name = set(d.text());
      const wrongTenant = rng.chance(0.1);
      const tenantId = wrongTenant ? `${u.tenantId}x` : u.tenantId;
      const where = rng.pick([
        { id: u.id },
        { id: u.id, tenantId },
        { tenantId_email: { tenantId, email: u.email } },
      ]);
      const args = { where, data };
      return {
        label: `user.update ${show(args)}`,
        run: (client) => client.user.update(args as never),
        expect(m) {
          if (d.batch && !("tenantId" in where) && !("tenantId_email" in where)) {
            return refused(BATCH_REFUSAL);
          }
          if (wrongTenant && "tenantId" in where) return prismaError("P2025");
          if (wrongTenant && "tenantId_email" in where) return prismaError("P2025");
          const row = m.users.get(u.id) as UserRow;
          const unwrap = (v: unknown) => (isSet(v) ? v.set : v) as string | null;
          if ("email" in data) row.email = unwrap(data.email) as string;
          if ("name" in data) row.name = unwrap(data.name);
          if ("phone" in data) row.phone = unwrap(data.phone);
          return ok(userView(row as unknown as Json), asUser);
        },
      };
    }
    case "updatePosts":
      return nestedPostWrites(rng, model, user as UserRow, posts, d);
    case "updateMany": {
      const tenantId = rng.chance(0.85) ? (user as UserRow).tenantId : undefined;
      const emails = users.filter(() => rng.chance(0.4)).map((u) => u.email);
      const where: Json = tenantId === undefined ? {} : { tenantId };
      if (emails.length > 0 || rng.chance(0.5)) where.email = { in: [...emails, d.text()] };
      const name = d.text();
      const args = { where, data: { name } };
      return {
        label: `user.updateMany ${show(args)}`,
        run: (client) => client.user.updateMany(args as never),
        expect(m) {
          // The new name is sealed under the where's tenant, which it must pin.
          if (tenantId === undefined) return refused(/tenantId/);
          const hit = m
            .usersOf(tenantId)
            .filter((r) => where.email === undefined || emails.includes(r.email));
          for (const r of hit) r.name = name;
          return ok({ count: hit.length }, (r) => r);
        },
      };
    }
    case "upsert": {
      const existing = rng.chance(0.6) ? (user as UserRow) : undefined;
      const tenantId = existing?.tenantId ?? d.tenant();
      const email = existing?.email ?? d.text();
      const create = { tenantId, email, name: d.text() };
      const update = { name: d.text(), phone: d.text() };
      const args = {
        where: { tenantId_email: { tenantId, email } },
        create,
        update,
      };
      let id = 0;
      return {
        label: `user.upsert ${show(args)}`,
        run: (client) => client.user.upsert(args as never),
        expect(m) {
          const row = [...m.users.values()].find(
            (r) => r.tenantId === tenantId && r.email === email,
          );
          if (row !== undefined) {
            row.name = update.name;
            row.phone = update.phone;
            id = row.id;
          } else {
            id = placeholder--;
            m.users.set(id, { id, tenantId, email, name: create.name, phone: null });
          }
          return ok(undefined, () => undefined);
        },
        adopt(m, result, check) {
          adoptIds(m, [result as Json], []);
          check(
            userView(result as Json),
            userView(m.users.get((result as Json).id as number) as unknown as Json),
          );
        },
      };
    }
    case "delete": {
      const post = posts.length > 0 && rng.chance(0.6) ? rng.pick(posts) : undefined;
      if (post !== undefined) {
        const args = rng.chance(0.5)
          ? { where: { id: post.id } }
          : { where: { tenantId: post.tenantId, authorId: post.authorId } };
        const many = !("id" in args.where);
        return {
          label: `post.${many ? "deleteMany" : "delete"} ${show(args)}`,
          run: (client) =>
            many ? client.post.deleteMany(args as never) : client.post.delete(args as never),
          expect(m) {
            const gone = many
              ? [...m.posts.values()].filter(
                  (p) => p.tenantId === post.tenantId && p.authorId === post.authorId,
                )
              : [m.posts.get(post.id) as PostRow];
            for (const p of gone) m.posts.delete(p.id);
            return many
              ? ok({ count: gone.length }, (r) => r)
              : ok(postView(post as unknown as Json), (r) => postView(r as Json));
          },
        };
      }
      const victim = users.find((u) => model.postsOf(u.id).length === 0);
      if (victim === undefined) return createUserOperation(rng, model, d.tenant(), d);
      const args = {
        where: { tenantId_email: { tenantId: victim.tenantId, email: victim.email } },
      };
      return {
        label: `user.delete ${show(args)}`,
        run: (client) => client.user.delete(args as never),
        expect(m) {
          m.users.delete(victim.id);
          return ok(userView(victim as unknown as Json), asUser);
        },
      };
    }
    case "read":
      return readOperation(rng, user as UserRow, posts, d);
  }
}

function isSet(v: unknown): v is { set: unknown } {
  return typeof v === "object" && v !== null && "set" in v;
}

/**
 * `user.update` with nested writes of its posts, whose tenants may differ from the user's: a
 * post's values are sealed under the post's own tenant, which the nested where or data must
 * pin (the parent's is not the post's), or the call is refused.
 */
function nestedPostWrites(
  rng: Rng,
  model: Reference,
  user: UserRow,
  posts: PostRow[],
  d: Draw,
): Operation {
  const mine = model.postsOf(user.id).filter((p) => p.id > 0);
  const pin = rng.chance(d.inTransaction ? 1 : 0.7);
  const pinned = (t: string): Json => (pin ? { tenantId: t } : {});
  const someTenant = (): string =>
    mine.length > 0 && rng.chance(0.7) ? rng.pick(mine).tenantId : d.tenant();
  const body = d.text();
  const which = rng.pick(
    d.inTransaction
      ? (["create", "updateMany", "update"] as const)
      : (["create", "updateMany", "updateMany", "update", "update", "upsert"] as const),
  );
  let nested: Json;
  let apply: (m: Reference) => Expected | undefined;
  switch (which) {
    case "create": {
      const tenantId = someTenant();
      const title = d.title();
      nested = { create: { tenantId, title, body } };
      apply = (m) => {
        m.posts.set(placeholder, { id: placeholder--, tenantId, title, body, authorId: user.id });
        return undefined;
      };
      break;
    }
    case "updateMany": {
      const tenantId = someTenant();
      const title = mine.length > 0 && rng.chance(0.3) ? rng.pick(mine).title : undefined;
      const where: Json = { ...pinned(tenantId), ...(title === undefined ? {} : { title }) };
      nested = { updateMany: { where, data: { body } } };
      apply = (m) => {
        if (!pin) return refused(/Post binds encrypted fields to tenantId/);
        for (const p of m.postsOf(user.id)) {
          if (p.tenantId === tenantId && (title === undefined || p.title === title)) p.body = body;
        }
        return undefined;
      };
      break;
    }
    case "update": {
      // The user's own post mostly; another user's post or a wrong tenant is not found.
      const target =
        mine.length > 0 && rng.chance(0.8)
          ? rng.pick(mine)
          : posts.length > 0
            ? rng.pick(posts)
            : undefined;
      const id = target?.id ?? MISSING_ID;
      const tenantId = target !== undefined && rng.chance(0.85) ? target.tenantId : someTenant();
      nested = { update: { where: { id, ...pinned(tenantId) }, data: { body } } };
      apply = (m) => {
        if (!pin) return refused(/Post binds encrypted fields to tenantId/);
        const p = m.posts.get(id);
        if (p === undefined || p.authorId !== user.id || p.tenantId !== tenantId) {
          return prismaError("P2025");
        }
        p.body = body;
        return undefined;
      };
      break;
    }
    case "upsert": {
      const target = mine.length > 0 && rng.chance(0.7) ? rng.pick(mine) : undefined;
      const id = target?.id ?? MISSING_ID;
      const tenantId = target?.tenantId ?? someTenant();
      const create = { tenantId: someTenant(), title: d.title(), body: d.text() };
      nested = { upsert: { where: { id, ...pinned(tenantId) }, create, update: { body } } };
      apply = (m) => {
        if (!pin) return refused(/Post binds encrypted fields to tenantId/);
        const p = m.posts.get(id);
        if (p !== undefined && p.authorId === user.id && p.tenantId === tenantId) p.body = body;
        else m.posts.set(placeholder, { id: placeholder--, ...create, authorId: user.id });
        return undefined;
      };
      break;
    }
  }
  const name = rng.chance(0.4) ? d.text() : undefined;
  const data: Json = { posts: nested, ...(name === undefined ? {} : { name: { set: name } }) };
  const where = rng.chance(0.5) ? { id: user.id } : { id: user.id, tenantId: user.tenantId };
  const args = { where, data, include: { posts: { orderBy: { id: "asc" } } } };
  return {
    label: `user.update ${show(args)}`,
    run: (client) => client.user.update(args as never),
    expect(m) {
      if (d.batch && !("tenantId" in where)) return refused(BATCH_REFUSAL);
      const failure = apply(m);
      if (failure !== undefined) return failure;
      if (name !== undefined) (m.users.get(user.id) as UserRow).name = name;
      return ok(undefined, () => undefined);
    },
    adopt(m, result, check) {
      const r = result as Json;
      adoptIds(m, [], r.posts as Json[]);
      check(
        { ...userView(r), posts: (r.posts as Json[]).map(postView) },
        withPosts(m, () => user.id)(),
      );
    },
  };
}

/** Reads across relations: included posts of mixed tenants, filtered counts, the fluent API. */
function readOperation(rng: Rng, user: UserRow, posts: PostRow[], d: Draw): Operation {
  const postTenant = rng.chance(0.5)
    ? rng.pick([...new Set(posts.map((p) => p.tenantId)), "t1"])
    : undefined;
  const which = rng.pick([
    "include",
    "select",
    "fluentPosts",
    "fluentAuthor",
    "authorFilter",
  ] as const);
  const viewWithPosts = (r: unknown): unknown =>
    (r as Json[]).map((u) => ({ ...userView(u), posts: (u.posts as Json[]).map(postView) }));
  const expectedPosts = (m: Reference, userId: number) =>
    m
      .postsOf(userId)
      .filter((p) => postTenant === undefined || p.tenantId === postTenant)
      .map((p) => postView(p as unknown as Json));
  switch (which) {
    case "include": {
      const args = {
        where: { tenantId: user.tenantId },
        include: {
          posts: {
            where: postTenant === undefined ? {} : { tenantId: postTenant },
            orderBy: { id: "asc" },
          },
        },
        orderBy: { id: "asc" },
      };
      return {
        label: `user.findMany ${show(args)}`,
        run: (client) => client.user.findMany(args as never),
        expect: (m) =>
          ok(
            m.usersOf(user.tenantId).map((u) => ({
              ...userView(u as unknown as Json),
              posts: expectedPosts(m, u.id),
            })),
            viewWithPosts,
          ),
      };
    }
    case "select": {
      const countTenant = rng.pick(["t1", "t2", user.tenantId]);
      const args = {
        where: { tenantId: user.tenantId },
        select: {
          id: true,
          email: true,
          posts: { select: { id: true, body: true }, orderBy: { id: "asc" } },
          _count: { select: { posts: { where: { tenantId: countTenant } } } },
        },
        orderBy: { id: "asc" },
      };
      return {
        label: `user.findMany ${show(args)}`,
        run: (client) => client.user.findMany(args as never),
        expect: (m) =>
          ok(
            m.usersOf(user.tenantId).map((u) => ({
              id: u.id,
              email: u.email,
              posts: m.postsOf(u.id).map((p) => ({ id: p.id, body: p.body })),
              _count: { posts: m.postsOf(u.id).filter((p) => p.tenantId === countTenant).length },
            })),
            (r) => r,
          ),
      };
    }
    case "fluentPosts": {
      const id = rng.chance(0.9) ? user.id : MISSING_ID;
      const inner = postTenant === undefined ? {} : { where: { tenantId: postTenant } };
      return {
        label: `user.findUnique({ where: { id: ${id} } }).posts(${show(inner)})`,
        run: (client) =>
          client.user
            .findUnique({ where: { id } })
            .posts({ ...inner, orderBy: { id: "asc" } } as never),
        expect: (m) => ok(m.users.has(id) ? expectedPosts(m, id) : null, asPosts),
      };
    }
    case "fluentAuthor": {
      const post = posts.length > 0 ? rng.pick(posts) : undefined;
      const id = post?.id ?? MISSING_ID;
      return {
        label: `post.findUnique({ where: { id: ${id} } }).author()`,
        run: (client) => client.post.findUnique({ where: { id } }).author(),
        expect: (m) => {
          const p = m.posts.get(id);
          return ok(
            p === undefined ? null : userView(m.users.get(p.authorId) as unknown as Json),
            asUser,
          );
        },
      };
    }
    case "authorFilter": {
      // A lookup on the author's deterministic email, under the author's tenant or none: the
      // post's tenant is not the author's.
      const pinAuthor = rng.chance(0.6);
      const email = rng.chance(0.8) ? user.email : d.text();
      const tenantId = rng.pick(["t1", "t2", user.tenantId]);
      const author = pinAuthor ? { tenantId: user.tenantId, email } : { email };
      const args = { where: { tenantId, author: { is: author } }, orderBy: { id: "asc" } };
      return {
        label: `post.findMany ${show(args)}`,
        run: (client) => client.post.findMany(args as never),
        expect: (m) =>
          pinAuthor
            ? ok(
                [...m.posts.values()]
                  .filter((p) => {
                    const a = m.users.get(p.authorId) as UserRow;
                    return (
                      p.tenantId === tenantId && a.tenantId === user.tenantId && a.email === email
                    );
                  })
                  .sort(byId)
                  .map((p) => postView(p as unknown as Json)),
                asPosts,
              )
            : refused(/User binds encrypted fields to tenantId/),
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Minimal counterexamples found by the property above, kept as regressions.
// ---------------------------------------------------------------------------------------------

for (const backend of BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `regressions: counterexamples to the write properties (${backend.name})`,
    () => {
      let rec: RecordingDatabase;
      let prisma: Extended;
      let author: { id: number };
      let post: { id: number };

      beforeAll(async () => {
        ({ rec, prisma } = await openRecordingClient(backend));
      });
      afterAll(async () => {
        await rec?.close();
      });

      async function authorOfT1WithPostOfT2(email: string): Promise<void> {
        author = await prisma.user.create({ data: { tenantId: "t1", email } });
        post = await prisma.post.create({
          data: { tenantId: "t2", title: "t", body: "old", authorId: author.id },
        });
      }

      // Nested writes took the parent's tenant as the context of the rows they update: the
      // post of t2 was sealed under t1 and no longer opened.
      test("a nested update of a post whose tenant is not its author's is refused unless the nested where pins it", async () => {
        await authorOfT1WithPostOfT2("§nested@t1§");
        for (const posts of [
          { updateMany: { where: {}, data: { body: "new" } } },
          { update: { where: { id: post.id }, data: { body: "new" } } },
          {
            upsert: {
              where: { id: post.id },
              create: { tenantId: "t2", title: "t", body: "new" },
              update: { body: "new" },
            },
          },
        ]) {
          const outcome = await attempt(() =>
            prisma.user.update({ where: { id: author.id }, data: { posts } as never }),
          );
          expect(outcome.ok ? outcome.value : outcome.error, show(posts)).toBeInstanceOf(
            ValidationError,
          );
          expect(describeError(outcome.ok ? "" : outcome.error)).toMatch(
            /Post binds encrypted fields to tenantId/,
          );
        }
        await prisma.user.update({
          where: { id: author.id },
          data: { posts: { updateMany: { where: { tenantId: "t2" }, data: { body: "new" } } } },
        });
        const read = await attempt(() => prisma.post.findMany({ where: { id: post.id } }));
        expect(read.ok ? read.value : describeError(read.error)).toMatchObject([{ body: "new" }]);
      });

      // A relation filter's lookup was sealed under the filtering row's tenant: the author of t1
      // was looked up under t2, and the post silently went missing from the answer.
      test("a lookup in a relation filter needs the related rows' own tenant", async () => {
        await authorOfT1WithPostOfT2("§ann@t1§");
        const loose = await attempt(() =>
          prisma.post.findMany({ where: { tenantId: "t2", author: { email: "§ann@t1§" } } }),
        );
        expect(loose.ok ? loose.value : loose.error).toBeInstanceOf(ValidationError);
        const found = await prisma.post.findMany({
          where: { tenantId: "t2", author: { is: { tenantId: "t1", email: "§ann@t1§" } } },
        });
        expect(found.map((p) => p.id)).toContain(post.id);
      });

      // An update that reads its row's tenant first sent that read as the batch's statement and
      // left the update itself to run with a later call, outside this batch's transaction: on
      // SQLite it was applied by the next, failing, batch.
      test("an update in a batch transaction that would read its row first is refused, and nothing runs later", async () => {
        const user = await prisma.user.create({
          data: { tenantId: "t1", email: "§batch@t1§", name: "before" },
        });
        const clash = () => prisma.user.create({ data: { tenantId: "t1", email: "§batch@t1§" } });
        const first = await attempt(() =>
          prisma.$transaction([
            prisma.user.update({ where: { id: user.id }, data: { name: "§changed§" } }),
            clash(),
          ]),
        );
        expect(first.ok ? first.value : first.error).toBeInstanceOf(ValidationError);
        expect(describeError(first.ok ? "" : first.error)).toMatch(BATCH_REFUSAL);
        const second = await attempt(() =>
          prisma.$transaction([
            prisma.user.update({ where: { id: user.id, tenantId: "t1" }, data: { plain: "p" } }),
            clash(),
          ]),
        );
        expect(second.ok ? "committed" : (second.error as { code?: unknown }).code).toBe("P2002");
        const after = await prisma.user.findUniqueOrThrow({ where: { id: user.id } });
        expect([after.name, after.plain]).toEqual(["before", null]);
      });

      // Only SQLite rolls the data key row back with the transaction (regression: core served
      // the rolled-back key cached under the stable key's id).
      test.runIf(backend.name === "SQLite")(
        "a tenant's stable data key made again after a rolled-back transaction opens what it sealed",
        async () => {
          const rolled = await attempt(() =>
            prisma.$transaction(async (tx) => {
              await tx.user.create({ data: { tenantId: "fresh", email: "§a@fresh§" } });
              throw new RollBack();
            }),
          );
          expect(rolled.ok ? "committed" : rolled.error).toBeInstanceOf(RollBack);
          const created = await prisma.$transaction(async (tx) =>
            tx.user.create({ data: { tenantId: "fresh", email: "§b@fresh§" } }),
          );
          expect(created.email).toBe("§b@fresh§");
        },
      );
    },
  );
}
