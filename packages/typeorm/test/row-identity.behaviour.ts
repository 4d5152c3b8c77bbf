import {
  createKms,
  InvalidCiphertextError,
  type Kms,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import { Column, type DataSource, Entity, PrimaryGeneratedColumn, type Repository } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  type EncryptedColumnContext,
  encryptedParameter,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import type { TestDatabase } from "./backends.ts";

/**
 * One entity declared with a given context. Both declarations below are the same entity to the
 * binding (class name, table, columns), so values written under one are read under the other.
 */
function declareChart(context: EncryptedColumnContext) {
  @Entity("kms_charts")
  class Chart {
    @PrimaryGeneratedColumn()
    id: number;

    @Column({ type: String, length: 64 })
    tenantId: string;

    /** Chosen by the client before the insert, never changed: the row's identity. */
    @Column({ type: String, length: 36, unique: true })
    recordId: string;

    @EncryptedColumn({ nullable: true, context })
    note: string | null;

    @EncryptedColumn({ type: "json", nullable: true, context })
    vitals: Record<string, unknown> | null;

    @EncryptedColumn({ deterministic: true, nullable: true, context })
    code: string | null;
  }
  return Chart;
}

const Chart = declareChart({ fromScope: ["tenant"], rowIdentity: ["recordId"] });
type Chart = InstanceType<typeof Chart>;
/** The same entity as declared before `rowIdentity`: the row id inside the data key's context. */
const ChartBefore = declareChart({ fromRow: ["recordId"], fromScope: ["tenant"] });

const PREFIX = "kms1:";

/** A Kms whose generateDataKey and decrypt calls are counted. */
function counting(kms: Kms): { kms: Kms; calls: { generateDataKey: number; decrypt: number } } {
  const calls = { generateDataKey: 0, decrypt: 0 };
  const counted = new Proxy(kms, {
    get(target, property) {
      const value = Reflect.get(target, property) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (property === "generateDataKey" || property === "decrypt") calls[property] += 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { kms: counted, calls };
}

/**
 * `context.rowIdentity`: row columns bound into each value (a value copied to another row fails)
 * but not into its data key (one data key per tenant, not per row); run once per backend.
 */
export function describeRowIdentity(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`rowIdentity on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let charts: Repository<Chart>;

    const connect = async (
      entity: typeof Chart | typeof ChartBefore = Chart,
      options: { kms?: Kms; keyId?: string; previousKeyIds?: string[] } = {},
    ) => {
      const e = fieldEncryption({
        kms: options.kms ?? kms,
        keyId: options.keyId ?? keyId,
        ...(options.previousKeyIds === undefined ? {} : { previousKeyIds: options.previousKeyIds }),
      });
      const source = await db.connect(e, { entities: [entity] });
      return { encryption: e, ds: source, charts: source.getRepository<Chart>(entity) };
    };

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      ({ encryption, ds, charts } = await connect());
    });
    afterEach(async () => {
      await db.close();
    });

    const chart = (tenantId: string, recordId: string, note: string | null = `note ${recordId}`) =>
      Object.assign(new Chart(), {
        tenantId,
        recordId,
        note,
        vitals: note === null ? null : { bpm: 72, recordId },
        code: null,
      });
    const inTenant = <T>(tenant: string, fn: () => Promise<T>) =>
      runWithEncryptionContext({ tenant }, fn);
    const rawChart = async (recordId: string) =>
      (
        await db.raw(`SELECT * FROM ${db.q("kms_charts")} WHERE ${db.q("recordId")} = ?`, [
          recordId,
        ])
      )[0] as Record<string, unknown>;
    const copyNote = (from: Record<string, unknown>, toRecordId: string) =>
      db.raw(`UPDATE ${db.q("kms_charts")} SET ${db.q("note")} = ? WHERE ${db.q("recordId")} = ?`, [
        from.note,
        toRecordId,
      ]);
    const dataKeyRows = () =>
      db.raw(
        `SELECT ${db.q("id")}, ${db.q("encryptionContext")} FROM ${db.q("kms_data_keys")} ORDER BY ${db.q("id")}`,
      );

    test("the rows of a tenant share one data key, wrapped under the tenant alone; a cold reader opens them with one KMS decrypt", async () => {
      const writer = counting(kms);
      const w = await connect(Chart, { kms: writer.kms });
      const N = 12;
      const ids = (tenant: string) => Array.from({ length: N }, (_, i) => `${tenant}-${i}`);
      await inTenant("a", () => w.charts.save(ids("a").map((id) => chart("a", id))));
      await inTenant("b", () => w.charts.save(ids("b").map((id) => chart("b", id))));

      // One randomized data key per tenant: two KMS calls and two rows for 2 × 12 rows × 2 values.
      expect(writer.calls.generateDataKey).toBe(2);
      const keys = await dataKeyRows();
      expect(keys).toHaveLength(2);
      // The KMS (its key policies and grant constraints) sees the tenant, never the row id.
      expect(
        keys
          .map((k) => JSON.parse(String(k.encryptionContext)))
          .sort((x, y) => String(x.tenant).localeCompare(String(y.tenant))),
      ).toEqual([{ tenant: "a" }, { tenant: "b" }]);
      const stored = await rawChart("a-0");
      expect(String(stored.note).startsWith(PREFIX)).toBe(true);
      expect(String(stored.note)).not.toContain("note a-0");

      const reader = counting(kms);
      const cold = await connect(Chart, { kms: reader.kms });
      const found = await inTenant("a", () =>
        cold.charts.find({ where: { tenantId: "a" }, order: { id: "ASC" } }),
      );
      expect(found.map((c) => [c.recordId, c.note, c.vitals])).toEqual(
        ids("a").map((id) => [id, `note ${id}`, { bpm: 72, recordId: id }]),
      );
      expect(reader.calls.decrypt).toBe(1);
      expect(reader.calls.generateDataKey).toBe(0);
    });

    test("a value copied to another row of its tenant, or to another tenant's row, fails to decrypt", async () => {
      await inTenant("a", () => charts.save([chart("a", "r1"), chart("a", "r2")]));
      await inTenant("b", () => charts.save(chart("b", "r3")));
      const r1 = await rawChart("r1");
      // One data key for both rows: only the binding stops the copy.
      const infos = await Promise.all(
        [r1, await rawChart("r2")].map((r) => encryption.inspect(ds, String(r.note))),
      );
      expect(new Set(infos.map((i) => (i.legacy ? "legacy" : i.dataKeyId))).size).toBe(1);

      await copyNote(r1, "r2");
      const read = (tenant: string, recordId: string) =>
        inTenant(tenant, () => charts.findOneBy({ recordId }));
      // Warm cache (synchronous path), then cold (batched path).
      await expect(read("a", "r2")).rejects.toBeInstanceOf(InvalidCiphertextError);
      encryption.engine.clearCache();
      await expect(read("a", "r2")).rejects.toBeInstanceOf(InvalidCiphertextError);
      expect((await read("a", "r1"))?.note).toBe("note r1");

      await copyNote(r1, "r3");
      await expect(read("b", "r3")).rejects.toBeInstanceOf(InvalidCiphertextError);
      // Nor does the copy read in its own tenant's scope: the row binds it too.
      await expect(read("a", "r3")).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("changing a rowIdentity column without the values bound to it is refused, as a fromRow change", async () => {
      const saved = await inTenant("a", () => charts.save(chart("a", "r1")));
      const bound =
        /^Chart\.recordId is part of the encryption context of Chart\.note, Chart\.vitals\b/;
      await expect(charts.update(saved.id, { recordId: "moved" })).rejects.toThrow(bound);
      await expect(
        charts.upsert({ id: saved.id, tenantId: "a", recordId: "moved" }, ["id"]),
      ).rejects.toThrow(/^Chart\.recordId is part of the encryption context of .*: an upsert/);
      await expect(
        charts
          .createQueryBuilder()
          .update()
          .set({ recordId: "moved" })
          .where("id = :id", { id: saved.id })
          .execute(),
      ).rejects.toBeInstanceOf(ValidationError);
      await expect(charts.save({ id: saved.id, recordId: "moved" })).rejects.toBeInstanceOf(
        ValidationError,
      );
      expect((await rawChart("r1")).id).toBe(saved.id);
      expect(await rawChart("moved")).toBeUndefined();

      // A loaded entity carries every bound value: save() reseals them under the new identity.
      const loaded = await inTenant("a", () => charts.findOneByOrFail({ id: saved.id }));
      loaded.recordId = "moved";
      await inTenant("a", () => charts.save(loaded));
      expect(
        await inTenant("a", () => charts.findOneByOrFail({ recordId: "moved" })),
      ).toMatchObject({ note: "note r1", vitals: { bpm: 72, recordId: "r1" } });
      // A row that holds no bound value has nothing to strand.
      const empty = await inTenant("a", () => charts.save(chart("a", "r2", null)));
      await charts.update(empty.id, { recordId: "r2-renamed" });
      expect((await rawChart("r2-renamed")).id).toBe(empty.id);
    });

    test("deterministic lookups on a rowIdentity-bound column name the row", async () => {
      await inTenant("a", () =>
        charts.save([
          Object.assign(chart("a", "r1"), { code: "C-1" }),
          Object.assign(chart("a", "r2"), { code: "C-1" }),
        ]),
      );
      const [c1, c2] = [await rawChart("r1"), await rawChart("r2")];
      // Equal values of two rows differ: the row is part of what the SIV authenticates.
      expect(c1.code).not.toBe(c2.code);
      await inTenant("a", async () => {
        const found = await charts.findBy(
          await encryptedWhere(charts, { recordId: "r2", code: "C-1" }),
        );
        expect(found.map((c) => c.recordId)).toEqual(["r2"]);
        await expect(encryptedWhere(charts, { code: "C-1" })).rejects.toThrow(
          /^Chart\.code is bound to Chart\.recordId/,
        );
        expect(
          await encryptedParameter(charts, "code", "C-1", { context: { recordId: "r1" } }),
        ).toBe(c1.code);
      });
    });

    test("values written with the row in the data key's context still decrypt after the switch, and the migration job moves them to one key per tenant", async () => {
      const before = await connect(ChartBefore);
      await inTenant("a", () => before.charts.save(["r1", "r2", "r3"].map((id) => chart("a", id))));
      // The old declaration: one data key per row.
      const oldKeys = await dataKeyRows();
      expect(oldKeys).toHaveLength(3);
      expect(JSON.parse(String(oldKeys[0]?.encryptionContext))).toHaveProperty("recordId");

      const reader = await connect(Chart);
      const read = () => inTenant("a", () => reader.charts.find({ order: { recordId: "ASC" } }));
      expect((await read()).map((c) => [c.recordId, c.note, c.vitals])).toEqual(
        ["r1", "r2", "r3"].map((id) => [id, `note ${id}`, { bpm: 72, recordId: id }]),
      );
      // Still bound to their rows.
      await copyNote(await rawChart("r1"), "r2");
      await expect(read()).rejects.toBeInstanceOf(InvalidCiphertextError);
      await inTenant("a", () =>
        reader.charts.update({ recordId: "r2" }, { recordId: "r2", note: "note r2" }),
      );

      // Rotation to a new KMS key rewrites every value under one data key for the tenant.
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = await connect(Chart, { keyId: newKey, previousKeyIds: [keyId] });
      const checkpoint = await reencryptEntities(rotated.ds, Chart, {
        context: { tenant: "a" },
        where: { tenantId: "a" },
      });
      expect(checkpoint).toMatchObject({ scanned: 3, reencrypted: 3, conflicts: 0 });
      const infos = await Promise.all(
        ["r1", "r2", "r3"].map(async (id) =>
          rotated.encryption.inspect(rotated.ds, String((await rawChart(id)).note)),
        ),
      );
      const dataKeys = new Set(infos.map((i) => (i.legacy ? "legacy" : i.dataKeyId)));
      expect(dataKeys.size).toBe(1);
      expect(infos.every((i) => !i.legacy && i.kmsKeyId.includes(newKey))).toBe(true);
      const newRows = (await dataKeyRows()).filter((k) => dataKeys.has(String(k.id)));
      expect(newRows.map((k) => JSON.parse(String(k.encryptionContext)))).toEqual([
        { tenant: "a" },
      ]);
      // Read as the application does once it runs with the new key.
      const readRotated = () =>
        inTenant("a", () => rotated.charts.find({ order: { recordId: "ASC" } }));
      expect((await readRotated()).map((c) => c.note)).toEqual(["note r1", "note r2", "note r3"]);
      await copyNote(await rawChart("r1"), "r3");
      await expect(readRotated()).rejects.toBeInstanceOf(InvalidCiphertextError);
    });
  });
}
