import {
  createKms,
  FieldEncryptionEngine,
  InvalidCiphertextError,
  type Kms,
  reencryptFields,
  ValidationError,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  defineModels,
  fieldEncryption,
  type ModelDescriptor,
  PrismaDataKeyStore,
  parseSchema,
  prismaReencryptSource,
  type SchemaDescriptor,
} from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";
import { kmsSchema } from "./generated/kms/kms-schema.ts";

const PREFIX = "kms1:";

/** The Chart model of the test schema as typed configuration (the other models as parsed). */
export const typed = defineModels({
  Chart: {
    encrypted: {
      ssn: { mode: "deterministic" },
      name: {},
      note: { context: { fromRow: ["recordId"] } },
      vitals: { type: "json", context: { fromRow: ["recordId"] } },
    },
    relations: { owner: "User" },
    context: { fromRow: ["tenantId"] },
  },
});
export const parsed = parseSchema(schemaText);
const typedSchema: SchemaDescriptor = { ...parsed, Chart: typed.Chart as ModelDescriptor };

/** The same descriptor, three ways in: schema text, `defineModels`, the generator's module. */
const schemas: [string, string | SchemaDescriptor][] = [
  ["annotations", schemaText],
  ["defineModels", typedSchema],
  ["kms-prisma-types output", kmsSchema],
];

const vitals = { bp: "120/80", pulse: 64 } as unknown as string;

/** Per-field context (`@kms.context(recordId)` on a field); run once per backend. */
export function describeFieldContext(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`per-field context on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      await db.close();
    });

    const extend = (schema: string | SchemaDescriptor) =>
      db.prisma.$extends(fieldEncryption({ kms, keyId, schema }));

    describe.each(schemas)("described by %s", (_label, schema) => {
      let prisma: ReturnType<typeof extend>;
      beforeEach(() => {
        prisma = extend(schema);
      });

      const chart = (recordId: string, ssn: string) => ({
        tenantId: "t1",
        recordId,
        ssn,
        name: `name of ${recordId}`,
        note: `note of ${recordId}`,
        vitals,
      });

      test("round trip: stored as ciphertext, read back, recordId not leaked into a select", async () => {
        const created = await prisma.chart.create({ data: chart("r-1", "111") });
        expect(created).toMatchObject({ note: "note of r-1", vitals: { bp: "120/80", pulse: 64 } });
        const raw = await db.raw("Chart", created.id);
        for (const field of ["ssn", "name", "note", "vitals"]) {
          expect(String(raw[field]).startsWith(PREFIX), field).toBe(true);
        }
        expect(raw.recordId).toBe("r-1");
        const selected = await prisma.chart.findUnique({
          where: { id: created.id },
          select: { note: true, vitals: true },
        });
        expect(selected).toEqual({ note: "note of r-1", vitals });
        const omitted = await prisma.chart.findUnique({
          where: { id: created.id },
          omit: { recordId: true, tenantId: true },
        });
        expect(omitted).not.toHaveProperty("recordId");
        expect(omitted?.note).toBe("note of r-1");
      });

      test("a bound value copied to another row of the same tenant does not decrypt; the SSN lookup still works", async () => {
        const a = await prisma.chart.create({ data: chart("r-a", "111") });
        const b = await prisma.chart.create({ data: chart("r-b", "222") });
        for (const field of ["note", "vitals"]) {
          const before = (await db.raw("Chart", b.id))[field];
          await db.rawSet("Chart", b.id, field, (await db.raw("Chart", a.id))[field]);
          await expect(prisma.chart.findUnique({ where: { id: b.id } })).rejects.toBeInstanceOf(
            InvalidCiphertextError,
          );
          await db.rawSet("Chart", b.id, field, before);
        }
        // The model-level field binds the tenant only: the same copy reads (the contrast).
        await db.rawSet("Chart", b.id, "name", (await db.raw("Chart", a.id)).name);
        expect((await prisma.chart.findUnique({ where: { id: b.id } }))?.name).toBe("name of r-a");
        // The deterministic SSN is not bound to the row: equality lookups need no recordId.
        const found = await prisma.chart.findMany({ where: { tenantId: "t1", ssn: "222" } });
        expect(found.map((c) => [c.id, c.note])).toEqual([[b.id, "note of r-b"]]);
        const unique = await prisma.chart.findUnique({
          where: { tenantId_ssn: { tenantId: "t1", ssn: "111" } },
        });
        expect(unique?.note).toBe("note of r-a");
      });

      test("an update of only a bound field reads its row's recordId first; updateMany needs it in where", async () => {
        const a = await prisma.chart.create({ data: chart("r-a", "111") });
        const updated = await prisma.chart.update({
          where: { id: a.id },
          data: { note: { set: "edited" } },
        });
        expect(updated.note).toBe("edited");
        await expect(
          prisma.chart.updateMany({ where: { tenantId: "t1" }, data: { note: "all" } }),
        ).rejects.toThrow(/Chart\.note binds its values to recordId: include recordId/);
        await expect(
          prisma.chart.updateMany({
            where: { tenantId: "t1", recordId: { contains: "r-" } },
            data: { note: "all" },
          }),
        ).rejects.toThrow(/filter on Chart\.recordId is not an exact equality/);
        expect(
          await prisma.chart.updateMany({
            where: { tenantId: "t1", recordId: "r-a" },
            data: { note: "pinned", name: "N" },
          }),
        ).toEqual({ count: 1 });
        // A batch cannot read the row first, so there recordId must be in the where.
        await expect(
          prisma.$transaction([prisma.chart.update({ where: { id: a.id }, data: { note: "x" } })]),
        ).rejects.toThrow(/Chart binds encrypted fields to tenantId, recordId: inside a batch/);
        const [viaBatch] = await prisma.$transaction([
          prisma.chart.update({
            where: { id: a.id, tenantId: "t1", recordId: "r-a" },
            data: { vitals: { set: { bp: "90/60" } as unknown as string } },
          }),
        ]);
        expect(viaBatch?.vitals).toEqual({ bp: "90/60" });
        const read = await prisma.chart.findUniqueOrThrow({ where: { id: a.id } });
        expect([read.note, read.name, read.vitals]).toEqual(["pinned", "N", { bp: "90/60" }]);
      });

      test("changing recordId without rewriting the fields bound to it is refused; with them it works", async () => {
        const a = await prisma.chart.create({ data: chart("r-a", "111") });
        await expect(
          prisma.chart.update({ where: { id: a.id }, data: { recordId: "r-z" } }),
        ).rejects.toThrow(/changing recordId would orphan the values of note, vitals/);
        await expect(
          prisma.chart.update({ where: { id: a.id }, data: { recordId: "r-z", note: "n" } }),
        ).rejects.toThrow(/orphan the values of vitals/);
        const moved = await prisma.chart.update({
          where: { id: a.id },
          data: { recordId: "r-z", note: "moved", vitals: null },
        });
        expect([moved.recordId, moved.note, moved.vitals, moved.name]).toEqual([
          "r-z",
          "moved",
          null,
          "name of r-a",
        ]);
        expect((await extend(schema).chart.findUnique({ where: { id: a.id } }))?.note).toBe(
          "moved",
        );
      });

      test("createMany, createManyAndReturn and upsert bind each row to its own recordId", async () => {
        await prisma.chart.createMany({ data: [chart("m-1", "1"), chart("m-2", "2")] });
        const [third] = await prisma.chart.createManyAndReturn({ data: [chart("m-3", "3")] });
        expect(third?.note).toBe("note of m-3");
        const rows = await prisma.chart.findMany({ orderBy: { id: "asc" } });
        expect(rows.map((r) => r.note)).toEqual(["note of m-1", "note of m-2", "note of m-3"]);
        const [first, second] = rows;
        await db.rawSet(
          "Chart",
          second?.id as number,
          "note",
          (await db.raw("Chart", first?.id as number)).note,
        );
        await expect(
          prisma.chart.findUnique({ where: { id: second?.id as number } }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);

        await expect(
          prisma.chart.upsert({
            where: { tenantId_ssn: { tenantId: "t1", ssn: "1" } },
            create: chart("m-1", "1"),
            update: { note: "upserted" },
          }),
        ).rejects.toThrow(/Chart\.note binds its values to recordId/);
        const upserted = await prisma.chart.upsert({
          where: { recordId: "m-1", tenantId: "t1" },
          create: chart("m-1", "1"),
          update: { note: "upserted" },
        });
        expect(upserted.note).toBe("upserted");
        const fresh = await prisma.chart.upsert({
          where: { recordId: "m-9", tenantId: "t1" },
          create: chart("m-9", "9"),
          update: { note: "never" },
        });
        expect(fresh.note).toBe("note of m-9");
      });

      test("nested writes take recordId from their own data or where", async () => {
        const user = await prisma.user.create({
          data: {
            tenantId: "t1",
            email: "owner@x",
            charts: {
              create: [
                { tenantId: "t1", recordId: "n-1", ssn: "1", note: "nested one" },
                { tenantId: "t1", recordId: "n-2", ssn: "2", note: "nested two", vitals },
              ],
            },
          },
          include: { charts: { orderBy: { id: "asc" } } },
        });
        await expect(
          prisma.user.update({
            where: { id: user.id },
            data: {
              charts: { create: { tenantId: "t1", ssn: "3", note: "n" } as never },
            },
          }),
        ).rejects.toThrow(/Chart\.note binds its values to recordId: include recordId/);
        expect(user.charts.map((c) => [c.tenantId, c.note])).toEqual([
          ["t1", "nested one"],
          ["t1", "nested two"],
        ]);
        const [one, two] = user.charts;
        await db.rawSet(
          "Chart",
          two?.id as number,
          "note",
          (await db.raw("Chart", one?.id as number)).note,
        );
        await expect(
          prisma.user.findUnique({ where: { id: user.id }, include: { charts: true } }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
        await expect(
          prisma.user.update({
            where: { id: user.id },
            data: {
              charts: {
                update: { where: { id: two?.id as number, tenantId: "t1" }, data: { note: "x" } },
              },
            },
          }),
        ).rejects.toThrow(/Chart\.note binds its values to recordId/);
        await prisma.user.update({
          where: { id: user.id },
          data: {
            charts: {
              update: {
                where: { id: two?.id as number, tenantId: "t1", recordId: "n-2" },
                data: { note: "repaired" },
              },
            },
          },
        });
        const charts = await prisma.chart.findMany({
          where: { ownerId: user.id },
          select: { note: true },
          orderBy: { id: "asc" },
        });
        expect(charts).toEqual([{ note: "nested one" }, { note: "repaired" }]);
      });
    });

    test("a deterministic field bound to the row is looked up with its recordId pinned", async () => {
      const rowBound = defineModels({
        Chart: {
          encrypted: { ssn: { mode: "deterministic", context: { fromRow: ["recordId"] } } },
          context: { fromRow: ["tenantId"] },
        },
      });
      const prisma = extend({ ...parsed, Chart: rowBound.Chart as ModelDescriptor });
      await prisma.chart.create({ data: { tenantId: "t1", recordId: "d-1", ssn: "1" } });
      expect(
        await prisma.chart.count({ where: { tenantId: "t1", recordId: "d-1", ssn: "1" } }),
      ).toBe(1);
      expect(
        await prisma.chart.count({
          where: {
            tenantId: "t1",
            OR: [
              { recordId: "d-1", ssn: "1" },
              { recordId: "d-2", ssn: "1" },
            ],
          },
        }),
      ).toBe(1);
      await expect(prisma.chart.count({ where: { tenantId: "t1", ssn: "1" } })).rejects.toThrow(
        /Chart\.ssn binds its values to recordId/,
      );
    });

    test("re-encryption runs one job per context group", async () => {
      const prisma = extend(schemaText);
      await prisma.chart.createMany({
        data: [
          { tenantId: "t1", recordId: "j-1", ssn: "1", name: "a", note: "one" },
          { tenantId: "t2", recordId: "j-2", ssn: "2", name: "b", note: "two", vitals },
        ],
      });
      const model = parsed.Chart as ModelDescriptor;
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const engine = new FieldEncryptionEngine({
        kms,
        keyId: newKey,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const delegate = db.prisma.chart as never;
      expect(() => prismaReencryptSource({ delegate, model, engine })).toThrow(
        /one job per group with "fields": \[ssn, name\], \[note, vitals\]/,
      );
      expect(() =>
        prismaReencryptSource({ delegate, model, engine, fields: ["tenantId"] }),
      ).toThrow(ValidationError);
      for (const group of [
        ["ssn", "name"],
        ["note", "vitals"],
      ]) {
        const fields = Object.fromEntries(group.map((f) => [f, model.encrypted[f]]));
        const done = await reencryptFields({
          engine,
          source: prismaReencryptSource({ delegate, model, engine, fields: group }),
          model: "Chart",
          fields: fields as never,
        });
        expect(done).toMatchObject({ scanned: 2, reencrypted: 2, conflicts: 0 });
      }
      const after = db.prisma.$extends(fieldEncryption({ kms, keyId: newKey, schema: schemaText }));
      const rows = await after.chart.findMany({ orderBy: { id: "asc" } });
      expect(rows.map((r) => [r.ssn, r.name, r.note, r.vitals])).toEqual([
        ["1", "a", "one", null],
        ["2", "b", "two", vitals],
      ]);
      const info = await engine.inspect(
        (await db.raw("Chart", rows[1]?.id as number)).note as string,
      );
      expect(info).toMatchObject({ kmsKeyId: expect.stringContaining(newKey) });
    });
  });
}
