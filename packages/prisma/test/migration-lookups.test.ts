import {
  ConflictError,
  createKms,
  FieldEncryptionEngine,
  type Kms,
  reencryptFields,
  ValidationError,
} from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { describe, expect, test } from "vitest";
import {
  fieldEncryption,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { openPostgres, openSqlite, schemaText, type TestDatabase } from "./backends.ts";

// While the re-encryption job moves values to a new KMS key, or legacy plaintext to ciphertext,
// the rows it has not reached yet hold their old form (FORMAT §6.7): equality lookups must still
// find them, unique lookups try each form, and an upsert, which would create a duplicate beside
// such a row, is refused.

const models = parseSchema(schemaText);
const User = models.User as NonNullable<typeof models.User>;
const { url, skipReason } = databaseTarget("postgres");
const backends: [string, () => Promise<TestDatabase>, string | undefined][] = [
  ["SQLite", openSqlite, undefined],
  ["PostgreSQL", () => openPostgres(url as string), skipReason],
];

/** Six users written under key A, then the application and the job switched to key B. */
async function rotation(db: TestDatabase) {
  const kms: Kms = await createKms();
  const keyA = (await kms.createKey()).keyMetadata.keyId;
  const keyB = (await kms.createKey()).keyMetadata.keyId;
  let current = keyA;
  let previous: string[] = [];
  const engine = new FieldEncryptionEngine({
    kms,
    keyId: () => current,
    previousKeyIds: () => previous,
    dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
  });
  // The arguments of every query as they reach the database: an extension added after the
  // encryption extension runs after it.
  const seen: { operation: string; args: unknown }[] = [];
  /** Runs before each query reaches the database (after the encryption extension). */
  const hooks: { beforeQuery?: (operation: string) => Promise<void> } = {};
  const prisma = db.prisma
    .$extends(fieldEncryption({ kms, keyId: keyA, schema: models, engine }))
    .$extends({
      query: {
        $allModels: {
          async $allOperations({ operation, args, query }) {
            seen.push({ operation, args: JSON.parse(JSON.stringify(args ?? {})) });
            await hooks.beforeQuery?.(operation);
            return query(args);
          },
        },
      },
    });
  for (let i = 0; i < 6; i++) {
    await prisma.user.create({
      data: { tenantId: "t1", email: `u${i}@x`, name: `n${i}`, phone: `P${i}` },
    });
  }
  current = keyB;
  previous = [keyA];
  const source = prismaReencryptSource({ delegate: db.prisma.user as never, model: User, engine });
  const job = (signal?: AbortSignal, onProgress?: () => void) =>
    reencryptFields({
      engine,
      source,
      model: "User",
      fields: User.encrypted,
      batchSize: 2,
      ...(signal === undefined ? {} : { signal }),
      ...(onProgress === undefined ? {} : { onProgress }),
    });
  /** The job, stopped after its first batch: rows 1–2 moved, 3–6 still under key A. */
  const halfway = async () => {
    const stop = new AbortController();
    await expect(job(stop.signal, () => stop.abort())).rejects.toMatchObject({
      name: "AbortError",
    });
    const keys = [];
    for (let id = 1; id <= 6; id++) {
      const raw = await db.raw("User", id);
      keys.push((await engine.inspect(raw.email as string)) as { kmsKeyId: string });
    }
    expect(keys.map((k) => k.kmsKeyId.endsWith(keyB))).toEqual([
      true,
      true,
      false,
      false,
      false,
      false,
    ]);
  };
  const after = () => {
    previous = [];
  };
  return { kms, keyA, keyB, engine, prisma, seen, hooks, job, halfway, after };
}

describe.each(backends)("lookups during a migration on %s", (_name, open, skip) => {
  test.skipIf(skip !== undefined)(
    "rows the job has not reached are found by every kind of lookup",
    async () => {
      const db = await open();
      try {
        const { prisma, halfway } = await rotation(db);
        await halfway();
        const byEmail = (email: string) =>
          prisma.user.findUnique({ where: { tenantId_email: { tenantId: "t1", email } } });
        // Row 5 (not moved) and row 1 (moved).
        expect((await byEmail("u4@x"))?.id).toBe(5);
        expect((await byEmail("u0@x"))?.id).toBe(1);
        expect(await byEmail("nobody@x")).toBeNull();
        expect(
          (
            await prisma.user.findUniqueOrThrow({
              where: { tenantId_email: { tenantId: "t1", email: "u3@x" } },
            })
          ).name,
        ).toBe("n3");
        await expect(
          prisma.user.findUniqueOrThrow({
            where: { tenantId_email: { tenantId: "t1", email: "nobody@x" } },
          }),
        ).rejects.toMatchObject({ code: "P2025" });
        const count = (where: object) =>
          prisma.user.count({ where: { tenantId: "t1", ...where } as never });
        expect(await count({ email: "u4@x" })).toBe(1);
        expect(await count({ email: { equals: "u4@x" } })).toBe(1);
        expect(await count({ email: { in: ["u0@x", "u4@x", "u5@x"] } })).toBe(3);
        expect(await count({ email: { notIn: ["u0@x", "u4@x"] } })).toBe(4);
        expect(await count({ email: { not: "u4@x" } })).toBe(5);
        expect(await count({ email: { not: { equals: "u4@x" } } })).toBe(5);
        expect(await count({ email: { in: ["u0@x", "u4@x"], notIn: ["u0@x"] } })).toBe(1);
        expect(await count({ email: { equals: "u4@x", in: ["u0@x", "u4@x"] } })).toBe(1);
        // Blind index (normalized: trim, lowercase), under key A and under key B.
        expect(await count({ phone: "p4" })).toBe(1);
        expect(await count({ phone: " P0 " })).toBe(1);
        expect(await count({ phone: { in: ["p0", "p4", "p5"] } })).toBe(3);
        expect(await count({ phone: { not: "p4" } })).toBe(5);
        expect(await count({ phone: { notIn: ["p0", "p4"] } })).toBe(4);
        const found = await prisma.user.findMany({
          where: { tenantId: "t1", OR: [{ email: "u5@x" }, { phone: "p2" }] },
          orderBy: { id: "asc" },
        });
        expect(found.map((u) => u.id)).toEqual([3, 6]);
        // Writes by the unique key reach the old row, and create nothing.
        const updated = await prisma.user.update({
          where: { tenantId_email: { tenantId: "t1", email: "u4@x" } },
          data: { plain: "seen" },
        });
        expect(updated.id).toBe(5);
        const deleted = await prisma.user.delete({
          where: { tenantId_email: { tenantId: "t1", email: "u5@x" } },
        });
        expect(deleted.id).toBe(6);
        await expect(
          prisma.user.delete({ where: { tenantId_email: { tenantId: "t1", email: "u5@x" } } }),
        ).rejects.toMatchObject({ code: "P2025" });
        await expect(
          prisma.user.update({
            where: { tenantId_email: { tenantId: "t1", email: "nobody@x" } },
            data: { plain: "x" },
          }),
        ).rejects.toMatchObject({ code: "P2025" });
        expect(await count({})).toBe(5);
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "an upsert, a nested unique input, a cursor and a batch transaction refuse a value with several forms",
    async () => {
      const db = await open();
      try {
        const { prisma, halfway } = await rotation(db);
        await halfway();
        const existing = { tenantId_email: { tenantId: "t1", email: "u3@x" } };
        const upsert = prisma.user.upsert({
          where: existing,
          create: { tenantId: "t1", email: "u3@x", name: "duplicate" },
          update: { plain: "seen" },
        });
        await expect(upsert).rejects.toThrow(ValidationError);
        await expect(
          prisma.user.upsert({
            where: existing,
            create: { tenantId: "t1", email: "u3@x" },
            update: {},
          }),
        ).rejects.toThrow(/User\.email: an upsert on a unique key.*migration/);
        expect(await prisma.user.count({ where: { tenantId: "t1" } })).toBe(6);
        await expect(
          prisma.post.create({
            data: { tenantId: "t1", title: "t", body: "b", author: { connect: existing } },
          }),
        ).rejects.toThrow(/User\.email is looked up by one exact value in a nested write/);
        await expect(
          prisma.user.findMany({ where: { tenantId: "t1" }, cursor: existing }),
        ).rejects.toThrow(/in a cursor/);
        await expect(
          prisma.$transaction([prisma.user.findUnique({ where: existing })]),
        ).rejects.toThrow(/batch \$transaction/);
        // A tenant that never wrote under key A has one form: all of these work.
        const fresh = { tenantId_email: { tenantId: "t2", email: "new@x" } };
        const created = await prisma.user.upsert({
          where: fresh,
          create: { tenantId: "t2", email: "new@x" },
          update: {},
        });
        const again = await prisma.user.upsert({
          where: fresh,
          create: { tenantId: "t2", email: "new@x" },
          update: { plain: "again" },
        });
        expect(again.id).toBe(created.id);
        const post = await prisma.post.create({
          data: { tenantId: "t2", title: "t", body: "b", author: { connect: fresh } },
        });
        expect(post.authorId).toBe(created.id);
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "inside an interactive transaction the forms are tried and the transaction goes on",
    async () => {
      const db = await open();
      try {
        const { prisma, halfway } = await rotation(db);
        await halfway();
        const ids = await prisma.$transaction(async (tx) => {
          const missing = await tx.user.findUnique({
            where: { tenantId_email: { tenantId: "t1", email: "nobody@x" } },
          });
          const row = await tx.user.update({
            where: { tenantId_email: { tenantId: "t1", email: "u4@x" } },
            data: { name: "renamed" },
          });
          const gone = await tx.user.delete({
            where: { tenantId_email: { tenantId: "t1", email: "u3@x" } },
          });
          const made = await tx.user.create({ data: { tenantId: "t1", email: "u9@x" } });
          return [missing, row.id, gone.id, made.id];
        });
        expect(ids).toEqual([null, 5, 4, 7]);
        const renamed = await prisma.user.findUnique({
          where: { tenantId_email: { tenantId: "t1", email: "u4@x" } },
        });
        expect(renamed?.name).toBe("renamed");
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "a row the job moves between two tries of a unique lookup is still found",
    async () => {
      const db = await open();
      try {
        const { prisma, hooks, job, halfway } = await rotation(db);
        await halfway();
        const where = { tenantId_email: { tenantId: "t1", email: "u4@x" } };
        // Tries: the current form (the row is not there yet), then the job moves the row before
        // the previous form is tried (not there any more), then the current form again.
        let tries = 0;
        hooks.beforeQuery = async (operation) => {
          if (operation === "findUnique" && ++tries === 2) await job();
        };
        expect((await prisma.user.findUnique({ where }))?.id).toBe(5);
        expect(tries).toBe(3);
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "an update whose row the job moves between its read and its write is still made, once",
    async () => {
      const db = await open();
      try {
        const { prisma, hooks, job, halfway, seen } = await rotation(db);
        await halfway();
        let moved = false;
        hooks.beforeQuery = async (operation) => {
          // The read is an update with empty data; the write is the first update with data.
          const last = seen.at(-1)?.args as { data?: object };
          if (operation === "update" && !moved && Object.keys(last.data ?? {}).length > 0) {
            moved = true;
            await job();
          }
        };
        seen.length = 0;
        const row = await prisma.user.update({
          where: { tenantId_email: { tenantId: "t1", email: "u4@x" } },
          data: { plain: "moved" },
        });
        expect(row.id).toBe(5);
        expect(row.plain).toBe("moved");
        expect(moved).toBe(true);
        const writes = seen.filter(
          (s) => Object.keys((s.args as { data?: object }).data ?? {}).length > 0,
        );
        expect(writes).toHaveLength(2); // the one the move made miss, and the one that hit
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "once the job has finished and previousKeyIds is removed, a lookup sends one form",
    async () => {
      const db = await open();
      try {
        const { prisma, halfway, job, after, seen } = await rotation(db);
        await halfway();
        seen.length = 0;
        await prisma.user.count({ where: { tenantId: "t1", email: "u4@x" } });
        const during = seen.at(-1)?.args as { where: { email: unknown } };
        expect((during.where.email as { in: string[] }).in).toHaveLength(2);
        expect((await job()).conflicts).toBe(0);
        after();
        seen.length = 0;
        for (let i = 0; i < 6; i++) {
          const row = await prisma.user.findUnique({
            where: { tenantId_email: { tenantId: "t1", email: `u${i}@x` } },
          });
          expect(row?.id).toBe(i + 1);
        }
        expect(await prisma.user.count({ where: { tenantId: "t1", phone: "p4" } })).toBe(1);
        // One query per lookup, each with one value.
        expect(seen.map((s) => s.operation)).toEqual([...Array(6).fill("findUnique"), "count"]);
        const unique = seen[0]?.args as { where: { tenantId_email: { email: unknown } } };
        expect(typeof unique.where.tenantId_email.email).toBe("string");
        const counted = seen.at(-1)?.args as { where: Record<string, unknown> };
        expect(typeof counted.where.phoneIndex).toBe("string");
        const upserted = await prisma.user.upsert({
          where: { tenantId_email: { tenantId: "t1", email: "u4@x" } },
          create: { tenantId: "t1", email: "u4@x" },
          update: { plain: "after" },
        });
        expect(upserted.id).toBe(5);
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "legacy plaintext rows are found, by deterministic value and by blind-indexed value",
    async () => {
      const db = await open();
      try {
        const kms = await createKms();
        const keyId = (await kms.createKey()).keyMetadata.keyId;
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          legacyPlaintext: true,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: models, engine }));
        // Rows of the table before it was encrypted: plaintext, no blind index yet.
        await db.prisma.user.createMany({
          data: [
            { tenantId: "t1", email: "old@x", name: "Old", phone: "555-1" },
            { tenantId: "t1", email: "old2@x", name: "Old2", phone: "555-2" },
            { tenantId: "t1", email: "nophone@x" },
          ],
        });
        const fresh = await prisma.user.create({
          data: { tenantId: "t1", email: "new@x", phone: "555-3" },
        });
        const old = await prisma.user.findUnique({
          where: { tenantId_email: { tenantId: "t1", email: "old@x" } },
        });
        expect(old?.name).toBe("Old");
        const count = (where: object) =>
          prisma.user.count({ where: { tenantId: "t1", ...where } as never });
        expect(await count({ email: "old@x" })).toBe(1);
        expect(await count({ email: { in: ["old2@x", "new@x"] } })).toBe(2);
        expect(await count({ email: { notIn: ["old@x", "new@x"] } })).toBe(2);
        expect(await count({ phone: "555-1" })).toBe(1);
        expect(await count({ phone: "555-3" })).toBe(1);
        expect(await count({ phone: { in: ["555-2", "555-3"] } })).toBe(2);
        // Not null: the row without a phone matches no value filter, as in Prisma.
        expect(await count({ phone: { not: "555-1" } })).toBe(2);
        expect(await count({ phone: { notIn: ["555-2", "nope"] } })).toBe(2);
        expect(await count({ phone: null })).toBe(1);
        const byPhone = await prisma.user.findMany({
          where: { tenantId: "t1", phone: { in: ["555-1", "555-3"] } },
          orderBy: { id: "asc" },
        });
        expect(byPhone.map((u) => u.email)).toEqual(["old@x", "new@x"]);
        const updated = await prisma.user.update({
          where: { tenantId_email: { tenantId: "t1", email: "old2@x" } },
          data: { name: "Older" },
        });
        expect(updated.id).toBe(2);
        await expect(
          prisma.user.upsert({
            where: { tenantId_email: { tenantId: "t1", email: "old@x" } },
            create: { tenantId: "t1", email: "old@x", name: "Dup" },
            update: {},
          }),
        ).rejects.toThrow(/upsert on a unique key/);
        expect(await count({})).toBe(4);
        // The job migrates the legacy rows; every lookup still finds them.
        await reencryptFields({
          engine,
          source: prismaReencryptSource({ delegate: db.prisma.user as never, model: User, engine }),
          model: "User",
          fields: User.encrypted,
        });
        expect(String((await db.raw("User", 1)).email)).toMatch(/^kms1:/);
        expect(await count({ email: "old@x" })).toBe(1);
        expect(await count({ phone: "555-1" })).toBe(1);
        expect(
          (
            await prisma.user.findUnique({
              where: { tenantId_email: { tenantId: "t1", email: "old2@x" } },
            })
          )?.name,
        ).toBe("Older");
        expect(fresh.id).toBe(4);
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "fieldEncryption's own previousKeyIds option reaches the engine it builds",
    async () => {
      const db = await open();
      try {
        const kms = await createKms();
        const keyA = (await kms.createKey()).keyMetadata.keyId;
        const keyB = (await kms.createKey()).keyMetadata.keyId;
        const before = db.prisma.$extends(fieldEncryption({ kms, keyId: keyA, schema: models }));
        await before.user.create({ data: { tenantId: "t1", email: "a@x", phone: "p" } });
        const plain = db.prisma.$extends(fieldEncryption({ kms, keyId: keyB, schema: models }));
        expect(
          await plain.user.findUnique({
            where: { tenantId_email: { tenantId: "t1", email: "a@x" } },
          }),
        ).toBeNull();
        const during = db.prisma.$extends(
          fieldEncryption({ kms, keyId: keyB, previousKeyIds: [keyA], schema: models }),
        );
        expect(
          (
            await during.user.findUnique({
              where: { tenantId_email: { tenantId: "t1", email: "a@x" } },
            })
          )?.id,
        ).toBe(1);
        expect(await during.user.count({ where: { tenantId: "t1", phone: "p" } })).toBe(1);
      } finally {
        await db.close();
      }
    },
  );
  test.skipIf(skip !== undefined)(
    "a row created during the migration beside an unmigrated one holding the same value makes unique lookups refuse, not pick one",
    async () => {
      const db = await open();
      try {
        const kms = await createKms();
        const keyId = (await kms.createKey()).keyMetadata.keyId;
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          legacyPlaintext: true,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: models, engine }));
        // The legacy row, not migrated yet; the unique constraint compares stored forms, so a
        // signup of the same address under its current form goes through.
        await db.prisma.user.create({ data: { tenantId: "t1", email: "admin@x", name: "Real" } });
        await prisma.user.create({ data: { tenantId: "t1", email: "admin@x", name: "Other" } });
        const where = { tenantId_email: { tenantId: "t1", email: "admin@x" } };
        const attempts = [
          () => prisma.user.findUnique({ where }),
          () => prisma.user.findUniqueOrThrow({ where }),
          () => prisma.user.update({ where, data: { plain: "reset" } }),
          () => prisma.user.delete({ where }),
          () => prisma.$transaction((tx) => tx.user.delete({ where })),
        ];
        for (const attempt of attempts) {
          const error = await attempt().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(error).toBeInstanceOf(ConflictError);
          expect((error as Error).message).toMatch(/^User: .*User\.email/);
          expect((error as Error).message).not.toContain("admin@x");
        }
        // Nothing was written: both rows are as they were.
        const rows = await db.prisma.user.findMany({ orderBy: { id: "asc" } });
        expect(rows.map((r) => [r.id, r.plain])).toEqual([
          [1, null],
          [2, null],
        ]);
        // One row per value: every lookup works.
        await prisma.user.create({ data: { tenantId: "t1", email: "solo@x", name: "Solo" } });
        const solo = { tenantId_email: { tenantId: "t1", email: "solo@x" } };
        expect((await prisma.user.findUnique({ where: solo }))?.name).toBe("Solo");
        expect((await prisma.user.update({ where: solo, data: { plain: "p" } })).plain).toBe("p");
        expect((await prisma.user.delete({ where: solo })).name).toBe("Solo");
        await expect(prisma.user.delete({ where: solo })).rejects.toMatchObject({ code: "P2025" });
      } finally {
        await db.close();
      }
    },
  );

  test.skipIf(skip !== undefined)(
    "a value spelling the kms1: prefix in another case or width is refused, never sent as legacy plaintext",
    async () => {
      const db = await open();
      try {
        const kms = await createKms();
        const keyId = (await kms.createKey()).keyMetadata.keyId;
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          legacyPlaintext: true,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: models, engine }));
        await prisma.user.create({ data: { tenantId: "t1", email: "victim@x" } });
        const stored = String((await db.raw("User", 1)).email);
        const rest = stored.slice("kms1:".length);
        for (const probe of [`KMS1:${rest}`, `kMS1:${rest}`, `\uff4bms1:${rest}`]) {
          await expect(
            prisma.user.findUnique({ where: { tenantId_email: { tenantId: "t1", email: probe } } }),
          ).rejects.toThrow(ValidationError);
          await expect(
            prisma.user.count({ where: { tenantId: "t1", email: { in: [probe] } } }),
          ).rejects.toThrow(ValidationError);
          await expect(
            prisma.user.create({ data: { tenantId: "t1", email: probe } }),
          ).rejects.toThrow(ValidationError);
        }
      } finally {
        await db.close();
      }
    },
  );
});
