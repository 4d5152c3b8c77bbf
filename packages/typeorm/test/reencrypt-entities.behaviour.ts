import {
  createKms,
  InvalidCiphertextError,
  type Kms,
  type ReencryptCheckpoint,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import {
  type BeforeQueryEvent,
  Column,
  type DataSource,
  Entity,
  type EntitySubscriberInterface,
  type FindOptionsWhere,
  PrimaryGeneratedColumn,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  type FieldEncryptionOptions,
  fieldEncryption,
  type ReencryptEntitiesCheckpoint,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";
import { Account, Card, Note, SavingsAccount } from "./entities.ts";

/** A column bound to the request's tenant (`fromScope`), beside the tenant column of the row. */
@Entity("kms_mig_memos")
class ScopedMemo {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromScope: ["tenant"] } })
  body: string | null;
}

/** Two context configurations: `a` bound to the row's tenant, `b` to nothing. */
@Entity("kms_mig_ledgers")
class Ledger {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64, nullable: true })
  tenantId: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  a: string | null;

  @EncryptedColumn({ nullable: true })
  b: string | null;
}

const ENTITIES = [Account, SavingsAccount, ScopedMemo, Ledger, Card];

const PREFIX = "kms1:";

/**
 * `reencryptEntities`: one pass over the rows, each rewritten as the entity it is stored as,
 * filtered to one scope where columns are bound to it, resumable, never overwriting a
 * concurrent write. Run once per backend.
 */
export function describeReencryptEntities(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`reencryptEntities on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;

    const connect = async (
      extra: Partial<FieldEncryptionOptions> = {},
    ): Promise<{ encryption: TypeormFieldEncryption; ds: DataSource }> => {
      const encryption = fieldEncryption({ kms, keyId, ...extra });
      return { encryption, ds: await db.connect(encryption, { entities: ENTITIES }) };
    };

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      await db.close();
    });

    /** Inserts a row with the raw driver: legacy plaintext, as before the columns were encrypted. */
    const insert = (table: string, row: Record<string, string | null>) => {
      const columns = Object.keys(row);
      return db.raw(
        `INSERT INTO ${db.q(table)} (${columns.map((c) => db.q(c)).join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
        Object.values(row),
      );
    };
    const rows = (table: string) => db.raw(`SELECT * FROM ${db.q(table)} ORDER BY ${db.q("id")}`);
    /** The ids of rows holding a value of `columns` that is not ciphertext. */
    const plaintextIds = async (table: string, columns: readonly string[]) =>
      (await rows(table))
        .filter((r) => columns.some((c) => r[c] !== null && !String(r[c]).startsWith(PREFIX)))
        .map((r) => Number(r.id));

    test("through a single-table-inheritance parent, each row is rewritten as the entity it is stored as", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      await insert("kms_accounts", { tenantId: "t1", kind: "Account", holder: "legacy parent" });
      await insert("kms_accounts", {
        tenantId: "t1",
        kind: "savings",
        holder: "legacy child",
        iban: "DE00 1",
      });
      // Sealed by the subscriber as a SavingsAccount: the job must open it as one.
      await legacy.ds.getRepository(SavingsAccount).save(
        Object.assign(new SavingsAccount(), {
          tenantId: "t1",
          holder: "sealed child",
          iban: "DE00 2",
        }),
      );
      expect(await reencryptEntities(legacy.ds, Account)).toMatchObject({
        scanned: 3,
        reencrypted: 2,
        conflicts: 0,
      });
      expect(await plaintextIds("kms_accounts", ["holder", "iban"])).toEqual([]);

      const read = async (ds: DataSource) =>
        (await ds.getRepository(Account).find({ order: { id: "ASC" } })).map((a) =>
          a instanceof SavingsAccount ? ["savings", a.holder, a.iban] : ["account", a.holder],
        );
      const expected = [
        ["account", "legacy parent"],
        ["savings", "legacy child", "DE00 1"],
        ["savings", "sealed child", "DE00 2"],
      ];
      expect(await read((await connect()).ds)).toEqual(expected);
      expect(
        (await (await connect()).ds.getRepository(SavingsAccount).find()).map((s) => s.iban),
      ).toEqual(["DE00 1", "DE00 2"]);

      // Rotation through the parent opens and seals the child rows as SavingsAccount too.
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = await connect({ keyId: newKey, previousKeyIds: [keyId] });
      expect(await reencryptEntities(rotated.ds, Account)).toMatchObject({
        scanned: 3,
        reencrypted: 3,
      });
      for (const r of await rows("kms_accounts")) {
        const info = await rotated.encryption.inspect(rotated.ds, String(r.holder));
        expect(info.legacy ? "" : info.kmsKeyId).toContain(newKey);
      }
      expect(await read((await connect({ keyId: newKey })).ds)).toEqual(expected);
    });

    test("a column bound to the scope is migrated one run per scope, each reading only its own rows", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      const memos = legacy.ds.getRepository(ScopedMemo);
      for (const tenant of ["t1", "t2"]) {
        await runWithEncryptionContext({ tenant }, () =>
          memos.save(
            Object.assign(new ScopedMemo(), { tenantId: tenant, body: `sealed ${tenant}` }),
          ),
        );
      }
      for (const tenant of ["t1", "t2"]) {
        await insert("kms_mig_memos", { tenantId: tenant, body: `legacy ${tenant}` });
      }

      // Without a row filter a run would seal every tenant's plaintext under its own tenant, and
      // stop at the first ciphertext of another.
      const unfiltered = await failure(() =>
        reencryptEntities(legacy.ds, ScopedMemo, { context: { tenant: "t1" } }),
      );
      expect(unfiltered).toBeInstanceOf(ValidationError);
      expect((unfiltered as Error).message).toMatch(
        /^ScopedMemo\.body is bound to the ambient context key "tenant": every row the run reads is sealed under one tenant, so give "where"/,
      );
      const unscoped = await failure(() =>
        reencryptEntities(legacy.ds, ScopedMemo, { where: { tenantId: "t1" } }),
      );
      expect((unscoped as Error).message).toMatch(
        /^ScopedMemo\.body is bound to the ambient context key "tenant": give its value in "context"/,
      );
      // `context` would override every row's own tenant.
      const rowKey = await failure(() =>
        reencryptEntities(legacy.ds, Ledger, { context: { tenantId: "t1" } }),
      );
      expect(rowKey).toBeInstanceOf(ValidationError);
      expect((rowKey as Error).message).toMatch(
        /^"context" gives tenantId, which Ledger\.a reads from each row \(Ledger\.tenantId\)/,
      );
      expect(await plaintextIds("kms_mig_memos", ["body"])).toEqual([3, 4]);

      // The README's procedure: one run per tenant, its scope in `context`, its rows in `where`.
      for (const tenant of ["t1", "t2"]) {
        const where: FindOptionsWhere<ScopedMemo> = { tenantId: tenant };
        expect(
          await reencryptEntities(legacy.ds, ScopedMemo, { context: { tenant }, where }),
        ).toMatchObject({ scanned: 2, reencrypted: 1, conflicts: 0 });
      }
      expect(await plaintextIds("kms_mig_memos", ["body"])).toEqual([]);

      const strict = (await connect()).ds.getRepository(ScopedMemo);
      const read = (tenant: string, tenantId: string) =>
        runWithEncryptionContext({ tenant }, () =>
          strict.find({ where: { tenantId }, order: { id: "ASC" } }),
        );
      expect((await read("t1", "t1")).map((m) => m.body)).toEqual(["sealed t1", "legacy t1"]);
      expect((await read("t2", "t2")).map((m) => m.body)).toEqual(["sealed t2", "legacy t2"]);
      // Each tenant's values are bound to it.
      await expect(read("t1", "t2")).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("soft-deleted rows are migrated and rotated too, and stay soft-deleted", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      await insert("kms_cards", { tenantId: "t1", holder: "legacy alive", pan: "4111 1" });
      await insert("kms_cards", { tenantId: "t1", holder: "legacy deleted", pan: "4111 2" });
      const cards = legacy.ds.getRepository(Card);
      await cards.save(
        Object.assign(new Card(), { tenantId: "t1", holder: "old key", pan: "4111 3" }),
      );
      await cards.softDelete({ id: 2 });
      await cards.softDelete({ id: 3 });

      // Legacy plaintext and the old key's values, moved to a new key in one run: a soft-deleted
      // row left out would keep its plaintext (or its old key) until restore() brought it back.
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = await connect({
        keyId: newKey,
        previousKeyIds: [keyId],
        legacyPlaintext: true,
      });
      expect(await reencryptEntities(rotated.ds, Card)).toMatchObject({
        scanned: 3,
        reencrypted: 3,
        conflicts: 0,
      });
      const stored = await rows("kms_cards");
      expect(stored.map((r) => [Number(r.id), r.deletedAt !== null])).toEqual([
        [1, false],
        [2, true],
        [3, true],
      ]);
      for (const r of stored) {
        for (const column of ["holder", "pan"]) {
          const info = await rotated.encryption.inspect(rotated.ds, String(r[column]));
          expect([r.id, column, info.legacy ? "plaintext" : info.kmsKeyId]).toEqual([
            r.id,
            column,
            expect.stringContaining(newKey),
          ]);
        }
        expect(r.panIndex).not.toBeNull();
      }
      const strict = (await connect({ keyId: newKey })).ds.getRepository(Card);
      expect(
        (await strict.find({ withDeleted: true, order: { id: "ASC" } })).map((c) => [
          c.holder,
          c.pan,
        ]),
      ).toEqual([
        ["legacy alive", "4111 1"],
        ["legacy deleted", "4111 2"],
        ["old key", "4111 3"],
      ]);
    });

    test("a run resumed from its checkpoint rewrites every column group of the rows after it", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      for (let i = 1; i <= 6; i++) {
        await insert("kms_mig_ledgers", { tenantId: "t1", a: `a${i}`, b: `b${i}` });
      }
      const abort = new AbortController();
      let saved: ReencryptCheckpoint | undefined;
      const interrupted = reencryptEntities(legacy.ds, Ledger, {
        batchSize: 2,
        signal: abort.signal,
        onProgress: (checkpoint) => {
          saved = checkpoint;
          abort.abort();
        },
      });
      await expect(interrupted).rejects.toThrow();
      expect(saved).toEqual({
        cursor: 2,
        scanned: 2,
        reencrypted: 2,
        conflicts: 0,
        allColumns: true,
      });
      expect(await plaintextIds("kms_mig_ledgers", ["a"])).toEqual([3, 4, 5, 6]);
      expect(await plaintextIds("kms_mig_ledgers", ["b"])).toEqual([3, 4, 5, 6]);

      // Persisted as JSON between the two runs.
      const resumeFrom = JSON.parse(JSON.stringify(saved)) as ReencryptCheckpoint;
      expect(await reencryptEntities(legacy.ds, Ledger, { batchSize: 2, resumeFrom })).toEqual({
        cursor: 6,
        scanned: 6,
        reencrypted: 6,
        conflicts: 0,
        allColumns: true,
      });
      expect(await plaintextIds("kms_mig_ledgers", ["a", "b"])).toEqual([]);
      const strict = (await connect()).ds.getRepository(Ledger);
      expect((await strict.find({ order: { id: "ASC" } })).map((l) => [l.a, l.b])).toEqual(
        [1, 2, 3, 4, 5, 6].map((i) => [`a${i}`, `b${i}`]),
      );
    });

    test("a checkpoint of an earlier version starts over where it ran one pass per column group, and resumes where it ran one", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      for (let i = 1; i <= 4; i++) {
        await insert("kms_mig_ledgers", { tenantId: "t1", a: `a${i}`, b: `b${i}` });
      }
      // Taken in the first of two passes: rows 1–3 may hold plaintext in the second group.
      const earlier = { cursor: 3, scanned: 3, reencrypted: 3, conflicts: 0 };
      expect(await reencryptEntities(legacy.ds, Ledger, { resumeFrom: earlier })).toEqual({
        cursor: 4,
        scanned: 4,
        reencrypted: 4,
        conflicts: 0,
        allColumns: true,
      });
      expect(await plaintextIds("kms_mig_ledgers", ["a", "b"])).toEqual([]);

      // Note has one group: its only pass covered every column up to the cursor.
      const notes = db.q("kms_notes");
      for (const title of ["n1", "n2", "n3"]) {
        await db.raw(`INSERT INTO ${notes} (${db.q("title")}) VALUES (?)`, [title]);
      }
      const [, second] = await rows("kms_notes");
      const single = { cursor: Number(second?.id), scanned: 2, reencrypted: 2, conflicts: 0 };
      expect(await reencryptEntities(legacy.ds, Note, { resumeFrom: single })).toMatchObject({
        scanned: 3,
        reencrypted: 3,
      });
      expect((await rows("kms_notes")).map((r) => String(r.title).startsWith(PREFIX))).toEqual([
        false,
        false,
        true,
      ]);
    });

    test("a concurrent write that differs only in case wins over the compare-and-set", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      await insert("kms_mig_ledgers", { tenantId: "t1", a: null, b: "Alice" });
      let fired = false;
      const concurrent: EntitySubscriberInterface = {
        beforeQuery: async (event: BeforeQueryEvent) => {
          if (fired || !/^UPDATE\b/i.test(event.query) || !event.query.includes("kms_mig_ledgers"))
            return;
          fired = true;
          await db.raw(`UPDATE ${db.q("kms_mig_ledgers")} SET ${db.q("b")} = ?`, ["ALICE"]);
        },
      };
      (legacy.ds.subscribers as EntitySubscriberInterface[]).push(concurrent);
      expect(await reencryptEntities(legacy.ds, Ledger)).toMatchObject({
        scanned: 1,
        reencrypted: 0,
        conflicts: 1,
      });
      expect(fired).toBe(true);
      expect((await rows("kms_mig_ledgers"))[0]?.b).toBe("ALICE");
      // The next run picks the row up.
      expect(await reencryptEntities(legacy.ds, Ledger)).toMatchObject({
        reencrypted: 1,
        conflicts: 0,
      });
      const [ledger] = await (await connect()).ds.getRepository(Ledger).find();
      expect(ledger?.b).toBe("ALICE");
    });

    test("a row without values needs no context; a value under a null context column is refused, naming the column", async () => {
      const legacy = await connect({ legacyPlaintext: true });
      await insert("kms_mig_ledgers", { tenantId: null, a: null, b: null });
      await insert("kms_mig_ledgers", { tenantId: null, a: null, b: "b only" });
      await insert("kms_mig_ledgers", { tenantId: "t1", a: "a3", b: null });
      const done: ReencryptEntitiesCheckpoint = await reencryptEntities(legacy.ds, Ledger);
      expect(done).toMatchObject({ scanned: 3, reencrypted: 2, conflicts: 0 });
      expect(await plaintextIds("kms_mig_ledgers", ["a", "b"])).toEqual([]);

      await insert("kms_mig_ledgers", { tenantId: null, a: "stranded secret", b: null });
      const error = await failure(() => reencryptEntities(legacy.ds, Ledger));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^Ledger\.a is bound to Ledger\.tenantId, which is null in the row 4 while it holds a value/,
      );
      expect((error as Error).message).not.toContain("stranded");
    });
  });
}
