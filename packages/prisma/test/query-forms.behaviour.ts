import { createKms, type Kms, ValidationError } from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { defineModels, fieldEncryption, parseSchema } from "../src/index.ts";
import { schemaText, type TestDatabase } from "./backends.ts";

const PREFIX = "kms1:";

/** A JSON column as the driver returns it: text on SQLite, parsed on PostgreSQL. */
const jsonOf = (stored: unknown): unknown =>
  typeof stored === "string" ? JSON.parse(stored) : stored;

/**
 * Query forms whose reading is not given by their keys alone: a to-one nested `update`, which
 * is Prisma's `{ where, data }` form or the row's data; Prisma's write envelopes on a model with
 * columns named like their keys; rows whose context column is null under a parent that has one;
 * `distinct` on a value bound to its row; and field references to encrypted columns.
 */
export function describeQueryForms(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`query forms on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    const extend = (keyId: string) =>
      db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    let prisma: ReturnType<typeof extend>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      prisma = extend(keyId);
    });
    afterEach(async () => {
      await db.close();
    });

    test("a to-one nested update with keys besides where and data is the row's data, even beside a JSON column named data", async () => {
      const user = await prisma.user.create({
        data: {
          tenantId: "t1",
          email: "a@x",
          preference: { create: { tenantId: "t1", secret: "initial" } },
        },
        include: { preference: true },
      });
      const id = user.preference?.id as number;
      const before = await db.raw("Preference", id);
      const update = (preference: object) =>
        prisma.user.update({
          where: { id: user.id },
          data: { preference: preference as never },
          include: { preference: true },
        });
      // Prisma writes `secret` and `hint` of the row and the JSON object into `data`: they need
      // the row's tenant like any nested update, and are refused without it.
      await expect(
        update({ update: { data: { theme: "dark" }, secret: "PLAIN-SECRET", hint: "PLAIN-HINT" } }),
      ).rejects.toThrow(/^Preference binds encrypted fields to tenantId/);
      expect(await db.raw("Preference", id)).toEqual(before);

      const written = await update({
        update: { tenantId: "t1", data: { theme: "dark" }, secret: "S1", hint: "H1" },
      });
      expect(written.preference).toMatchObject({
        secret: "S1",
        hint: "H1",
        data: { theme: "dark" },
      });
      const raw = await db.raw("Preference", id);
      expect(String(raw.secret).startsWith(PREFIX)).toBe(true);
      expect(String(raw.hint).startsWith(PREFIX)).toBe(true);
      expect(raw.hintIdx).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(jsonOf(raw.data)).toEqual({ theme: "dark" });
      const found = await prisma.preference.findFirst({ where: { tenantId: "t1", hint: "H1" } });
      expect(found?.id).toBe(id);

      // The { where, data } form, told apart by its where (Preference has no field named where).
      await update({
        update: { where: { tenantId: "t1" }, data: { secret: "S2", data: { theme: "light" } } },
      });
      expect(String((await db.raw("Preference", id)).secret).startsWith(PREFIX)).toBe(true);
      expect(await prisma.preference.findUnique({ where: { id } })).toMatchObject({
        secret: "S2",
        data: { theme: "light" },
      });

      // An upsert's update is always the data.
      await update({
        upsert: {
          create: { tenantId: "t1" },
          update: { tenantId: "t1", data: { x: 1 }, secret: "S3", hint: "H3" },
        },
      });
      const upserted = await db.raw("Preference", id);
      expect(String(upserted.secret).startsWith(PREFIX)).toBe(true);
      expect(jsonOf(upserted.data)).toEqual({ x: 1 });
      expect((await prisma.preference.findUnique({ where: { id } }))?.secret).toBe("S3");

      // A configuration that lists none of Preference's relations: the JSON object's keys are no
      // relations of it to refuse, and the fields beside it are encrypted.
      const partial = db.prisma.$extends(
        fieldEncryption({
          kms,
          keyId,
          schema: {
            ...parseSchema(schemaText),
            ...defineModels({
              Preference: {
                encrypted: { secret: {}, hint: {} },
                blindIndexes: { hintIdx: { of: "hint" } },
                context: { fromRow: ["tenantId"] },
              },
            }),
          },
        }),
      );
      await partial.user.update({
        where: { id: user.id },
        data: {
          preference: {
            update: { tenantId: "t1", data: { theme: { mode: "dim" } }, secret: "S4", hint: "H4" },
          },
        },
      });
      expect(await partial.preference.findUnique({ where: { id } })).toMatchObject({
        secret: "S4",
        hint: "H4",
        data: { theme: { mode: "dim" } },
      });
      expect(String((await db.raw("Preference", id)).secret).startsWith(PREFIX)).toBe(true);
    });

    test("a to-one nested update that Prisma reads as either form by its values' types is refused", async () => {
      const user = await prisma.user.create({
        data: {
          tenantId: "t1",
          email: "a@x",
          preference: { create: { tenantId: "t1", secret: "initial", data: { keep: true } } },
        },
        include: { preference: true },
      });
      const id = user.preference?.id as number;
      const before = await db.raw("Preference", id);
      const update = (item: object) =>
        prisma.user.update({
          where: { id: user.id },
          data: { preference: { update: item as never } },
        });
      const ambiguous =
        /^Preference: a nested update \{ data \} reads both as Prisma's \{ where, data \} form and as Preference's own data/;
      // Every key of `data` is a field: Prisma writes `secret` (the form), or the JSON column if
      // a value does not fit its field (`secret: 5`). A key holding undefined is no key to Prisma.
      for (const item of [
        { data: { secret: "S" } },
        { data: { secret: "S" }, hint: undefined },
        { data: { tenantId: "t2" } },
      ]) {
        await expect(update(item), JSON.stringify(item)).rejects.toThrow(ambiguous);
        await expect(update(item)).rejects.toBeInstanceOf(ValidationError);
      }
      await expect(update({ data: { secret: "S" } })).rejects.toThrow(
        /write the fields as the update itself .* or give the \{ where, data \} form a where, which Preference has no field for \(update: \{ where: \{\}, data: \{ … \} \}\)$/,
      );
      expect(await db.raw("Preference", id)).toEqual(before);
      // Neither reading writes an encrypted field, a context column or a relation: let through.
      await update({ data: {} });
      expect(await db.raw("Preference", id)).toEqual(before);
    });

    test("write envelopes keep their shape on a model with columns named where, data, create, update and skipDuplicates", async () => {
      const plain = (tag: string) => ({
        where: `w-${tag}`,
        data: `d-${tag}`,
        create: `c-${tag}`,
        update: `u-${tag}`,
        skipDuplicates: true,
      });
      // SQLite takes no skipDuplicates option.
      const skipDuplicates = db.location.kind === "sqlite" ? {} : { skipDuplicates: true };
      const user = await prisma.user.create({
        data: {
          tenantId: "t1",
          email: "o@x",
          parcels: {
            create: { tenantId: "t1", code: "p1", body: "B1", ...plain("1") },
            createMany: {
              data: [{ tenantId: "t1", code: "p2", body: "B2", ...plain("2") }],
              ...skipDuplicates,
            },
          },
        },
      });
      const top = await prisma.parcel.create({
        data: { tenantId: "t1", code: "p3", body: "B3", ownerId: user.id, ...plain("3") },
      });
      await prisma.parcel.createMany({
        data: [{ tenantId: "t1", code: "p4", body: "B4", ownerId: user.id, ...plain("4") }],
        ...skipDuplicates,
      });
      const ids = async () =>
        Object.fromEntries(
          (await db.prisma.parcel.findMany({ select: { id: true, code: true } })).map((p) => [
            p.code,
            p.id,
          ]),
        );
      const byCode = await ids();
      await prisma.user.update({
        where: { id: user.id },
        data: {
          parcels: {
            update: [
              {
                where: { id: byCode.p1 as number, tenantId: "t1" },
                data: { body: "B1b", where: "w-1b", data: "d-1b" },
              },
            ],
            updateMany: {
              where: { tenantId: "t1", code: "p2" },
              data: { body: "B2b", update: "u-2b", skipDuplicates: false },
            },
            upsert: {
              where: { id: top.id, tenantId: "t1" },
              create: { tenantId: "t1", code: "never", body: "never" },
              update: { body: "B3b", create: "c-3b", update: "u-3b" },
            },
            connectOrCreate: {
              where: { id: 999_999 },
              create: { tenantId: "t1", code: "p5", body: "B5", ...plain("5") },
            },
          },
        },
      });
      await prisma.parcel.update({
        where: { id: byCode.p4 as number, tenantId: "t1" },
        data: { body: "B4b", data: "d-4b", where: "w-4b" },
      });
      await prisma.parcel.upsert({
        where: { tenantId_code: { tenantId: "t1", code: "p6" } },
        create: { tenantId: "t1", code: "p6", body: "B6", ownerId: user.id, ...plain("6") },
        update: { body: "never" },
      });
      await prisma.parcel.updateMany({
        where: { tenantId: "t1", code: "p6" },
        data: { body: "B6b", update: "u-6b" },
      });
      const expected: Record<string, [string, Record<string, unknown>]> = {
        p1: ["B1b", { ...plain("1"), where: "w-1b", data: "d-1b" }],
        p2: ["B2b", { ...plain("2"), update: "u-2b", skipDuplicates: false }],
        p3: ["B3b", { ...plain("3"), create: "c-3b", update: "u-3b" }],
        p4: ["B4b", { ...plain("4"), data: "d-4b", where: "w-4b" }],
        p5: ["B5", plain("5")],
        p6: ["B6b", { ...plain("6"), update: "u-6b" }],
      };
      const all = await ids();
      expect(Object.keys(all).sort()).toEqual(Object.keys(expected));
      for (const [code, [body, columns]] of Object.entries(expected)) {
        const raw = await db.raw("Parcel", all[code] as number);
        expect(String(raw.body).startsWith(PREFIX), code).toBe(true);
        expect({ ...raw, skipDuplicates: Boolean(raw.skipDuplicates) }, code).toMatchObject(
          columns,
        );
        const read = await prisma.parcel.findUnique({ where: { id: all[code] as number } });
        expect(read?.body, code).toBe(body);
      }
      // A to-many update given as one object has a where, and on a model with fields named where
      // and data its reading is the values' to decide, as in a to-one: given as a list it is not.
      await expect(
        prisma.user.update({
          where: { id: user.id },
          data: {
            parcels: {
              update: {
                where: { id: all.p1 as number, tenantId: "t1" },
                data: { body: "B1c" },
              },
            },
          },
        }),
      ).rejects.toThrow(
        /^Parcel: a nested update \{ where, data \} reads both .* in a to-many relation give the update as a list \(update: \[\{ where, data \}\]\)/,
      );
      expect((await prisma.parcel.findUnique({ where: { id: all.p1 as number } }))?.body).toBe(
        "B1b",
      );
    });

    test("an included row whose context column is null does not decrypt under its parent's", async () => {
      const user = await prisma.user.create({
        data: {
          tenantId: "t1",
          email: "a@x",
          drafts: { create: { tenantId: "t1", body: "t1 secret" } },
        },
        include: { drafts: true },
      });
      const original = user.drafts[0]?.id as number;
      // A row of no tenant, read along with its author: it holds no value, and reads.
      const planted = await db.prisma.draft.create({ data: { authorId: user.id } });
      const withDrafts = () =>
        prisma.user.findUnique({ where: { id: user.id }, include: { drafts: true } });
      expect((await withDrafts())?.drafts.map((d) => d.body)).toEqual(["t1 secret", null]);
      // Someone who can write the database copies the tenant's ciphertext into it.
      await db.rawSet("Draft", planted.id, "body", (await db.raw("Draft", original)).body);
      const refused = new ValidationError(
        "Draft.body: cannot decrypt without tenantId in the result",
      );
      await expect(prisma.draft.findUnique({ where: { id: planted.id } })).rejects.toThrow(refused);
      await expect(withDrafts()).rejects.toThrow(refused);
      await expect(
        prisma.user.findMany({
          where: { tenantId: "t1" },
          select: { id: true, drafts: { select: { body: true } } },
        }),
      ).rejects.toThrow(refused);
      await expect(prisma.user.findUnique({ where: { id: user.id } }).drafts()).rejects.toThrow(
        refused,
      );
    });

    test("distinct on a deterministic field bound to its row needs the row's column pinned", async () => {
      const owner = await prisma.user.create({ data: { tenantId: "t1", email: "o@x" } });
      for (const code of ["r1", "r2", "r3"]) {
        await prisma.parcel.create({
          data: { tenantId: "t1", code, label: "SAME", ownerId: owner.id },
        });
      }
      // Equal labels, sealed under each row's code, are stored unequal.
      const stored = await db.prisma.parcel.findMany({ select: { label: true } });
      expect(new Set(stored.map((p) => p.label)).size).toBe(3);
      const refused =
        /^Parcel\.label is bound to its row's code: each row seals an equal value differently, so distinct cannot compare them unless the where pins code to one value/;
      await expect(
        prisma.parcel.findMany({ where: { tenantId: "t1" }, distinct: ["label"] }),
      ).rejects.toThrow(refused);
      await expect(
        prisma.parcel.findMany({
          where: { tenantId: "t1", code: { in: ["r1", "r2"] } },
          distinct: "label",
        }),
      ).rejects.toThrow(refused);
      // The model's tenantId binds label as its own code does, and an included relation's
      // where must pin both: the parent's where does not tell which tenant its rows are of.
      const refusedBoth =
        /^Parcel\.label is bound to its row's tenantId, code: each row seals an equal value differently, so distinct cannot compare them unless the where pins tenantId, code to one value/;
      await expect(
        prisma.user.findMany({ select: { parcels: { distinct: ["label"] } } }),
      ).rejects.toThrow(refusedBoth);
      await expect(
        prisma.user.findUnique({ where: { id: owner.id } }).parcels({ distinct: ["label"] }),
      ).rejects.toThrow(refusedBoth);
      await expect(
        prisma.user.findMany({
          where: { tenantId: "t1" },
          select: { parcels: { where: { code: "r2" }, distinct: ["label"] } },
        }),
      ).rejects.toThrow(/^Parcel\.label is bound to its row's tenantId: /);
      await expect(
        prisma.parcel.findMany({ where: { code: "r1" }, distinct: ["label"] }),
      ).rejects.toThrow(/^Parcel\.label is bound to its row's tenantId: /);
      await expect(
        prisma.parcel.groupBy({ by: ["label"], where: { tenantId: "t1", code: "r1" } }),
      ).rejects.toThrow(/Parcel\.label is encrypted: groupBy cannot compute over ciphertext/);
      // One code: one row's context, where equal values compare equal.
      const one = await prisma.parcel.findMany({
        where: { tenantId: "t1", code: "r1" },
        distinct: ["label"],
        select: { label: true },
      });
      expect(one).toEqual([{ label: "SAME" }]);
      const nested = await prisma.user.findMany({
        select: {
          parcels: { where: { tenantId: "t1", code: { equals: "r2" } }, distinct: ["label"] },
        },
      });
      expect(nested[0]?.parcels.map((p) => p.label)).toEqual(["SAME"]);
    });

    test("distinct on a deterministic field bound to the model's tenant needs the tenant pinned", async () => {
      for (const [tenantId, recordId] of [
        ["t1", "c1"],
        ["t2", "c2"],
      ] as const) {
        await prisma.chart.create({ data: { tenantId, recordId, ssn: "123-45-6789" } });
      }
      // One SSN under two tenants is stored as two ciphertexts: distinct would keep both rows.
      const stored = await db.prisma.chart.findMany({ select: { ssn: true } });
      expect(new Set(stored.map((c) => c.ssn)).size).toBe(2);
      const refused =
        /^Chart\.ssn is bound to its row's tenantId: each row seals an equal value differently, so distinct cannot compare them unless the where pins tenantId to one value/;
      await expect(prisma.chart.findMany({ distinct: ["ssn"] })).rejects.toThrow(refused);
      await expect(
        prisma.chart.findMany({ where: { tenantId: { in: ["t1", "t2"] } }, distinct: "ssn" }),
      ).rejects.toThrow(refused);
      const pinned = await prisma.chart.findMany({
        where: { tenantId: { equals: "t2" } },
        distinct: ["ssn"],
        select: { recordId: true, ssn: true },
      });
      expect(pinned).toEqual([{ recordId: "c2", ssn: "123-45-6789" }]);
    });

    test("a field reference to an encrypted column, on either side of a filter, is refused", async () => {
      const user = await prisma.user.create({
        data: { tenantId: "t1", email: "a@x", plain: "a@x", phone: "1" },
      });
      const fields = db.prisma.user.fields;
      const refusal = (column: string, kind = "encrypted") =>
        new RegExp(
          `field reference User\\.${column}, and User\\.${column} is ${kind}: the database compares the two columns as stored`,
        );
      const where = (filter: object) =>
        prisma.user.findMany({ where: { tenantId: "t1", ...filter } as never });
      // Equal values, yet the plain column is compared with the ciphertext: `equals` found
      // nothing and `not` every row.
      await expect(where({ plain: { equals: fields.email } })).rejects.toThrow(refusal("email"));
      await expect(where({ plain: { not: fields.email } })).rejects.toThrow(refusal("email"));
      // Bare, it is the operand too, not a clause of User's fields (its `name` is one).
      await expect(where({ plain: fields.email })).rejects.toThrow(refusal("email"));
      await expect(where({ plain: { gte: fields.name } })).rejects.toThrow(refusal("name"));
      await expect(where({ plain: { equals: fields.phoneIndex } })).rejects.toThrow(
        refusal("phoneIndex", "a blind index"),
      );
      await expect(where({ NOT: { plain: { equals: fields.email } } })).rejects.toThrow(
        refusal("email"),
      );
      await expect(
        prisma.post.findMany({
          where: { author: { is: { plain: { equals: fields.email } } } },
        }),
      ).rejects.toThrow(refusal("email"));
      await expect(where({ email: { equals: fields.plain } })).rejects.toThrow(
        /^User\.email is compared with the field reference User\.plain, and User\.email is encrypted/,
      );
      await expect(
        prisma.user.count({ where: { phone: { not: fields.plain as never } } }),
      ).rejects.toThrow(
        /^User\.phone is compared with the field reference User\.plain, and User\.phone is encrypted/,
      );
      await expect(where({ plain: { equals: fields.email } })).rejects.toBeInstanceOf(
        ValidationError,
      );
      // Plain columns compare as they do without the extension.
      expect((await where({ plain: { equals: fields.plain } })).map((u) => u.id)).toEqual([
        user.id,
      ]);
      expect(await where({ plain: { equals: fields.tenantId } })).toEqual([]);
    });
  });
}
