import {
  createKms,
  FieldEncryptionEngine,
  type FieldSpec,
  InvalidCiphertextError,
  type Kms,
  type KmsLike,
  reencryptFields,
  ValidationError,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  defineModels,
  type EncryptedFieldDescriptor,
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
    foreignKeys: { owner: ["ownerId"] },
    links: { owner: "ChartToUser" },
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

/** Counts the calls a KMS gets, so that tests can see how many data keys are made and unwrapped. */
function counting(kms: Kms): KmsLike & { readonly calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const count = (name: string) => {
    calls[name] = (calls[name] ?? 0) + 1;
  };
  return {
    calls,
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: (r, o) => {
      count("decrypt");
      return kms.decrypt(r, o);
    },
    generateDataKey: (r, o) => {
      count("generateDataKey");
      return kms.generateDataKey(r, o);
    },
    generateDataKeyWithoutPlaintext: (r, o) => {
      count("generateDataKeyWithoutPlaintext");
      return kms.generateDataKeyWithoutPlaintext(r, o);
    },
    sign: (r, o) => kms.sign(r, o),
    verify: (r, o) => kms.verify(r, o),
    generateMac: (r, o) => kms.generateMac(r, o),
    verifyMac: (r, o) => kms.verifyMac(r, o),
    getPublicKey: (r, o) => kms.getPublicKey(r, o),
  };
}

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

    const extend = (schema: string | SchemaDescriptor, client: KmsLike = kms) =>
      db.prisma.$extends(fieldEncryption({ kms: client, keyId, schema }));
    /** The rows of the data key table: the context each data key is wrapped under, and its use. */
    const dataKeys = async () =>
      (await db.prisma.kmsDataKey.findMany())
        .map((k) => ({ context: JSON.parse(k.encryptionContext) as unknown, purpose: k.purpose }))
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    /** The context of the data key a stored value is under, read back through the data key table. */
    const dataKeyContextOf = async (stored: unknown) => {
      const store = new PrismaDataKeyStore(db.prisma.kmsDataKey);
      const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
      const info = await engine.inspect(stored as string);
      if (info.legacy) throw new Error("expected ciphertext");
      return (await store.get(info.dataKeyId))?.encryptionContext;
    };

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
        // Read back to decrypt `note`, and hidden again: not among the row's keys.
        expect(Object.keys(omitted ?? {})).not.toContain("recordId");
        expect(JSON.stringify(omitted)).not.toContain('"recordId"');
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

    describe("data keys: a field's own pairs are bound into its values, not into its data key", () => {
      const row = (tenantId: string, recordId: string) => ({
        tenantId,
        recordId,
        ssn: recordId,
        name: `name of ${recordId}`,
        note: `note of ${recordId}`,
        vitals,
      });

      test("the rows of a tenant share one data key; a cold reader unwraps it once", async () => {
        const writer = counting(kms);
        const prisma = extend(schemaText, writer);
        for (const id of ["k-1", "k-2", "k-3"]) await prisma.chart.create({ data: row("t1", id) });
        await prisma.chart.createMany({ data: [row("t1", "k-4"), row("t1", "k-5")] });
        // One randomized data key (name, note and vitals) and one stable (ssn) for the tenant,
        // however many rows; neither is wrapped under a recordId.
        expect(await dataKeys()).toEqual([
          { context: { tenantId: "t1" }, purpose: "randomized" },
          { context: { tenantId: "t1" }, purpose: "stable" },
        ]);
        expect(
          (writer.calls.generateDataKey ?? 0) + (writer.calls.generateDataKeyWithoutPlaintext ?? 0),
        ).toBe(2);

        const reader = counting(kms);
        const cold = extend(schemaText, reader);
        const read = await cold.chart.findMany({
          select: { note: true, vitals: true, name: true },
          orderBy: { id: "asc" },
        });
        expect(read.map((r) => r.note)).toEqual(
          ["k-1", "k-2", "k-3", "k-4", "k-5"].map((id) => `note of ${id}`),
        );
        expect(read.every((r) => JSON.stringify(r.vitals) === JSON.stringify(vitals))).toBe(true);
        expect(reader.calls.decrypt).toBe(1);
      });

      test("a value copied to another row of its tenant, or to another tenant, does not decrypt", async () => {
        const prisma = extend(schemaText);
        const a = await prisma.chart.create({ data: row("t1", "c-a") });
        const b = await prisma.chart.create({ data: row("t1", "c-b") });
        const c = await prisma.chart.create({ data: row("t2", "c-c") });
        const [rawA, rawB] = [await db.raw("Chart", a.id), await db.raw("Chart", b.id)];
        // The same data key under both rows: the row binding alone refuses the copy.
        expect(await dataKeyContextOf(rawA.note)).toEqual({ tenantId: "t1" });
        expect(await dataKeyContextOf(rawB.note)).toEqual({ tenantId: "t1" });
        const cold = () => extend(schemaText);
        for (const field of ["note", "vitals"] as const) {
          for (const target of [b, c]) {
            const before = (await db.raw("Chart", target.id))[field];
            await db.rawSet("Chart", target.id, field, rawA[field]);
            await expect(
              cold().chart.findUnique({ where: { id: target.id }, select: { [field]: true } }),
            ).rejects.toBeInstanceOf(InvalidCiphertextError);
            await db.rawSet("Chart", target.id, field, before);
          }
        }
        // The row itself moved to another tenant, its recordId kept: refused too.
        await db.rawSet("Chart", a.id, "tenantId", "t2");
        await expect(
          cold().chart.findUnique({ where: { id: a.id }, select: { note: true } }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
        expect(
          (await cold().chart.findUnique({ where: { id: b.id }, select: { note: true } }))?.note,
        ).toBe("note of c-b");
      });

      test("values written with the row in their data key's context still read", async () => {
        const prisma = extend(schemaText);
        const old = await prisma.chart.create({
          data: { ...row("t1", "o-1"), note: "placeholder" },
        });
        const other = await prisma.chart.create({ data: row("t1", "o-2") });
        // What the extension wrote before fields had a separate key context: the whole binding,
        // recordId included, chose the data key.
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const model = parsed.Chart as ModelDescriptor;
        const context = { tenantId: "t1", recordId: "o-1" };
        for (const [field, value] of [
          ["note", "written before"],
          ["vitals", vitals],
        ] as const) {
          const stored = await engine.encryptText(
            { model: "Chart", field, context },
            model.encrypted[field] as FieldSpec,
            value,
          );
          await db.rawSet("Chart", old.id, field, stored);
        }
        const stored = (await db.raw("Chart", old.id)).note;
        expect(await dataKeyContextOf(stored)).toEqual(context);

        const cold = extend(schemaText);
        expect(
          await cold.chart.findUnique({
            where: { id: old.id },
            select: { note: true, vitals: true },
          }),
        ).toEqual({ note: "written before", vitals });
        // Still bound to its row.
        await db.rawSet("Chart", other.id, "note", stored);
        await expect(
          cold.chart.findUnique({ where: { id: other.id }, select: { note: true } }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
        // Rewritten through the extension, it moves to the tenant's data key.
        await cold.chart.update({ where: { id: old.id }, data: { note: "rewritten" } });
        expect(await dataKeyContextOf((await db.raw("Chart", old.id)).note)).toEqual({
          tenantId: "t1",
        });
        expect((await cold.chart.findUnique({ where: { id: old.id } }))?.note).toBe("rewritten");
      });

      test("a row-bound deterministic value written before is found again once re-encrypted", async () => {
        const rowBound = defineModels({
          Chart: {
            encrypted: { ssn: { mode: "deterministic", context: { fromRow: ["recordId"] } } },
            context: { fromRow: ["tenantId"] },
          },
        });
        const model = rowBound.Chart as ModelDescriptor;
        const schema = { ...parsed, Chart: model };
        const prisma = extend(schema);
        const chart = await prisma.chart.create({
          data: { tenantId: "t1", recordId: "w-1", ssn: "placeholder" },
        });
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const before = await engine.encryptText(
          { model: "Chart", field: "ssn", context: { tenantId: "t1", recordId: "w-1" } },
          model.encrypted.ssn as FieldSpec,
          "123",
        );
        await db.rawSet("Chart", chart.id, "ssn", before);
        const where = { tenantId: "t1", recordId: "w-1", ssn: "123" };
        // It reads, but an equality lookup seals "123" under the tenant's stable key now.
        expect((await prisma.chart.findUnique({ where: { id: chart.id } }))?.ssn).toBe("123");
        expect(await prisma.chart.count({ where })).toBe(0);
        const done = await reencryptFields({
          engine,
          source: prismaReencryptSource({
            delegate: db.prisma.chart as never,
            model,
            engine,
            fields: ["ssn"],
          }),
          model: "Chart",
          fields: { ssn: model.encrypted.ssn as EncryptedFieldDescriptor },
        });
        expect(done).toMatchObject({ scanned: 1, reencrypted: 1 });
        expect(await prisma.chart.count({ where })).toBe(1);
      });

      test("lookups on row-bound deterministic fields and blind indexes use the tenant's stable key", async () => {
        const rowBound = defineModels({
          Chart: {
            encrypted: { ssn: { mode: "deterministic", context: { fromRow: ["recordId"] } } },
            context: { fromRow: ["tenantId"] },
          },
          User: {
            encrypted: {
              email: { mode: "deterministic" },
              phone: { context: { fromRow: ["plain"] } },
            },
            blindIndexes: { phoneIndex: { of: "phone" } },
            context: { fromRow: ["tenantId"] },
          },
        });
        const prisma = extend({
          ...parsed,
          Chart: rowBound.Chart as ModelDescriptor,
          User: rowBound.User as ModelDescriptor,
        });
        for (const id of ["1", "2"]) {
          await prisma.chart.create({ data: { tenantId: "t1", recordId: `l-${id}`, ssn: "same" } });
          await prisma.user.create({
            data: { tenantId: "t1", email: `u${id}@x`, plain: `p-${id}`, phone: "555" },
          });
        }
        expect(await dataKeys()).toEqual([
          { context: { tenantId: "t1" }, purpose: "randomized" },
          { context: { tenantId: "t1" }, purpose: "stable" },
        ]);
        const cold = extend({
          ...parsed,
          Chart: rowBound.Chart as ModelDescriptor,
          User: rowBound.User as ModelDescriptor,
        });
        expect(
          await cold.chart.count({ where: { tenantId: "t1", recordId: "l-2", ssn: "same" } }),
        ).toBe(1);
        const found = await cold.user.findMany({
          where: { tenantId: "t1", plain: "p-2", phone: "555" },
          select: { email: true },
        });
        expect(found).toEqual([{ email: "u2@x" }]);
        // The lookups made no stable key of a row's own.
        expect(await dataKeys()).toHaveLength(2);
        // Equal values of two rows still differ: the row is in what they are derived from.
        const users = await db.prisma.user.findMany({ orderBy: { id: "asc" } });
        expect(users[0]?.phoneIndex).not.toBe(users[1]?.phoneIndex);
        const charts = await db.prisma.chart.findMany({ orderBy: { id: "asc" } });
        expect(charts[0]?.ssn).not.toBe(charts[1]?.ssn);
      });
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
      const delegate = db.prisma.chart as never;
      // The old KMS key unlisted, its data keys are not unwrapped: the job stops on the first
      // row, which keeps its value.
      const forgetful = new FieldEncryptionEngine({
        kms,
        keyId: newKey,
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
      const firstId = (await db.prisma.chart.findFirst({ orderBy: { id: "asc" } }))?.id as number;
      const unmoved = (await db.raw("Chart", firstId)).ssn;
      await expect(
        reencryptFields({
          engine: forgetful,
          source: prismaReencryptSource({
            delegate,
            model,
            engine: forgetful,
            fields: ["ssn", "name"],
          }),
          model: "Chart",
          fields: { ssn: model.encrypted.ssn, name: model.encrypted.name } as never,
        }),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
      expect((await db.raw("Chart", firstId)).ssn).toBe(unmoved);
      const engine = new FieldEncryptionEngine({
        kms,
        keyId: newKey,
        previousKeyIds: [keyId],
        dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
      });
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
      const note = (await db.raw("Chart", rows[1]?.id as number)).note as string;
      const info = await engine.inspect(note);
      expect(info).toMatchObject({ kmsKeyId: expect.stringContaining(newKey) });
      // The job re-encrypts row-bound fields under the tenant's data key, not one of the row's.
      expect(await dataKeyContextOf(note)).toEqual({ tenantId: "t2" });
    });
  });
}
