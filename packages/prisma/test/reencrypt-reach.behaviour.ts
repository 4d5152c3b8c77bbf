import {
  createKms,
  FieldEncryptionEngine,
  type Kms,
  type ReencryptCheckpoint,
  reencryptFields,
  ValidationError,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  type PrismaReencryptSourceOptions,
  parseSchema,
  prismaReencryptSource,
} from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";

/**
 * The re-encryption job moves only the rows its delegate returns: a delegate whose client
 * filters its reads (a soft-delete query extension, applied to the client the application's
 * is extended from) must fail the job, not let it report success over rows it never saw.
 */
export function describeReencryptReach(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`the re-encryption job's reach on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let engine: FieldEncryptionEngine;
    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      engine = new FieldEncryptionEngine({
        kms,
        keyId,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        legacyPlaintext: true,
      });
    });
    afterEach(async () => {
      await db.close();
    });

    const memo = parseSchema(schemaText).Memo as ModelDescriptor;

    /** The usual soft delete: the application never reads, counts or updates a deleted row. */
    const softDeleted = () =>
      db.prisma.$extends({
        query: {
          memo: {
            findMany({ args, query }) {
              return query({ ...args, where: { ...args.where, deletedAt: null } });
            },
            count({ args, query }) {
              return query({ ...args, where: { ...args.where, deletedAt: null } });
            },
            updateMany({ args, query }) {
              return query({ ...args, where: { ...args.where, deletedAt: null } });
            },
          },
        },
      });

    /** Rows 1–4 in plaintext (written before encryption was adopted); 2 and 4 soft-deleted. */
    const legacyRows = async () => {
      for (const [i, deleted] of [false, true, false, true].entries()) {
        await db.prisma.memo.create({
          data: {
            tenantId: "t1",
            body: `memo ${i + 1}`,
            deletedAt: deleted ? new Date() : null,
          },
        });
      }
    };
    const stored = async (id: number) => String((await db.raw("Memo", id)).body);

    const job = (
      delegate: unknown,
      options: {
        batchSize?: number;
        resumeFrom?: ReencryptCheckpoint;
        onProgress?: (c: ReencryptCheckpoint) => void;
        countRows?: PrismaReencryptSourceOptions["countRows"];
      } = {},
    ) => {
      const { countRows, ...run } = options;
      return reencryptFields({
        engine,
        source: prismaReencryptSource({
          delegate: delegate as PrismaReencryptSourceOptions["delegate"],
          model: memo,
          engine,
          ...(countRows === undefined ? {} : { countRows }),
        }),
        model: "Memo",
        fields: memo.encrypted,
        ...run,
      });
    };

    test("a delegate that hides rows fails the job, naming how many; an unfiltered one moves them all", async () => {
      await legacyRows();
      const app = softDeleted();
      const checkpoints: ReencryptCheckpoint[] = [];
      // Batch by batch: the second batch reads row 3 after row 1, and the table holds row 2.
      const paged = job(app.memo, { batchSize: 1, onProgress: (c) => checkpoints.push(c) });
      await expect(paged).rejects.toBeInstanceOf(ValidationError);
      await expect(paged).rejects.toThrow(
        /^Memo: the table holds 1 row with id after 1 and up to 3 that the delegate does not return \(a query extension on its client filters its reads, as a soft delete does\)/,
      );
      expect(checkpoints).toEqual([{ cursor: 1, scanned: 1, reencrypted: 1, conflicts: 0 }]);
      expect(await stored(1)).toMatch(/^kms1:/);
      for (const id of [2, 3, 4]) expect(await stored(id)).toBe(`memo ${id}`);
      // One batch to the end of the table: the hidden rows are the last ones too.
      await expect(job(app.memo)).rejects.toThrow(
        /^Memo: the table holds 2 rows with id anywhere that the delegate does not return/,
      );
      // Resumed with a client that has no query extension, every row moves.
      expect(
        await job(db.prisma.memo, { resumeFrom: checkpoints[0] as ReencryptCheckpoint }),
      ).toEqual({
        cursor: 4,
        scanned: 4,
        reencrypted: 4,
        conflicts: 0,
      });
      for (const id of [1, 2, 3, 4]) expect(await stored(id)).toMatch(/^kms1:/);
      const prisma = db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
      expect((await prisma.memo.findMany({ orderBy: { id: "asc" } })).map((m) => m.body)).toEqual([
        "memo 1",
        "memo 2",
        "memo 3",
        "memo 4",
      ]);
    });

    test("rows written while the job runs are not taken for rows it cannot see", async () => {
      await legacyRows();
      await db.prisma.memo.updateMany({ data: { deletedAt: null } });
      const prisma = db.prisma.$extends(
        fieldEncryption({ kms, keyId, schema: schemaText, engine }),
      );
      // The application writes a row between the job's read of a batch and its count of it.
      let writes = 0;
      const delegate = {
        $parent: db.prisma,
        async findMany(args: Record<string, unknown>) {
          const rows = await db.prisma.memo.findMany(args as never);
          if (writes++ === 0) {
            await prisma.memo.create({ data: { tenantId: "t1", body: "written meanwhile" } });
          }
          return rows;
        },
        updateMany: (args: Record<string, unknown>) => db.prisma.memo.updateMany(args as never),
      };
      expect(await job(delegate)).toEqual({ cursor: 4, scanned: 4, reencrypted: 4, conflicts: 0 });
      expect(await stored(5)).toMatch(/^kms1:/);
    });

    test("rows inserted between the count and the second read do not hide rows the delegate does not return", async () => {
      await legacyRows();
      const app = softDeleted();
      let inserted = false;
      const counted = job(app.memo, {
        countRows: async (range) => {
          const n = await db.prisma.memo.count({ where: { id: { gt: range.after as number } } });
          // As many rows as the soft delete hides, visible, land before the range is read again.
          if (!inserted) {
            inserted = true;
            for (const body of ["meanwhile 1", "meanwhile 2"]) {
              await db.prisma.memo.create({ data: { tenantId: "t1", body } });
            }
          }
          return n;
        },
      });
      await expect(counted).rejects.toThrow(
        /^Memo: the table holds 2 rows with id anywhere that the delegate does not return/,
      );
    });

    test("a row deleted between the count and the second read does not fail a delegate that returns every row", async () => {
      await legacyRows();
      await db.prisma.memo.updateMany({ data: { deletedAt: null } });
      // A row lands after the batch is read, so the count exceeds it, and is deleted again
      // before the range is read a second time.
      let writes = 0;
      const delegate = {
        async findMany(args: Record<string, unknown>) {
          const rows = await db.prisma.memo.findMany(args as never);
          if (writes++ === 0) {
            await db.prisma.memo.create({ data: { tenantId: "t1", body: "written meanwhile" } });
          }
          return rows;
        },
        updateMany: (args: Record<string, unknown>) => db.prisma.memo.updateMany(args as never),
      };
      let counts = 0;
      const result = await job(delegate, {
        countRows: async (range) => {
          const n = await db.prisma.memo.count({ where: { id: { gt: range.after as number } } });
          if (counts++ === 0) await db.prisma.memo.deleteMany({ where: { id: 5 } });
          return n;
        },
      });
      expect(result).toEqual({ cursor: 4, scanned: 4, reencrypted: 4, conflicts: 0 });
      expect(counts).toBe(3);
    });

    test("countRows replaces the raw count; false goes without; without either, a delegate with no client to count through is refused", async () => {
      await legacyRows();
      const app = softDeleted();
      const ranges: unknown[] = [];
      const counted = job(app.memo, {
        batchSize: 3,
        countRows: async (range) => {
          ranges.push(range);
          const { after, upTo } = range;
          return db.prisma.memo.count({
            where: { id: { gt: after as number, lte: upTo as number } },
          });
        },
      });
      await expect(counted).rejects.toThrow(/^Memo: the table holds 2 rows with id anywhere/);
      // Counted once after the batch, then again after the range's second read.
      expect(ranges).toEqual([{}, {}]);
      const bare = {
        findMany: (args: Record<string, unknown>) => db.prisma.memo.findMany(args as never),
        updateMany: (args: Record<string, unknown>) => db.prisma.memo.updateMany(args as never),
      };
      expect(() => prismaReencryptSource({ delegate: bare, model: memo, engine })).toThrow(
        /^Memo: the source cannot count the table's rows with a raw query through the delegate's client/,
      );
      // Without the check the job is as blind as the delegate: the caller vouches for it.
      expect(await job(bare, { countRows: false })).toMatchObject({ scanned: 4, reencrypted: 4 });
    });
  });
}
