import { createKms, type Kms, ValidationError } from "@kms/core";
import type { DataSource, Repository } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { encryptedWhere, fieldEncryption, type TypeormFieldEncryption } from "../src/index.ts";
import type { TestDatabase } from "./backends.ts";
import { failure } from "./backends.ts";
import { Card } from "./entities.ts";

/**
 * save() of an entity loaded with a partial `select`: what was changed is written, an
 * encrypted column or blind index that was not selected is left as stored, and nothing is
 * written that could disagree with the value it indexes or is bound to.
 */
export function describePartialSelect(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`partial select on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let cards: Repository<Card>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      encryption = fieldEncryption({ kms, keyId });
      ds = await db.connect(encryption, { entities: [Card] });
      cards = ds.getRepository(Card);
    });
    afterEach(async () => {
      await db.close();
    });

    const stored = async (id: number) =>
      (
        await db.raw(
          `SELECT ${db.q("holder")}, ${db.q("pan")}, ${db.q("panIndex")}, ${db.q("uses")}, ${db.q("tenantId")} FROM ${db.q("kms_cards")} WHERE ${db.q("id")} = ?`,
          [id],
        )
      )[0] as Record<string, unknown>;

    const card = (pan: string | null = "4111 1111", holder = "Ada") =>
      cards.save(Object.assign(new Card(), { tenantId: "t1", holder, pan, uses: 0 }));

    const byPan = async (pan: string) =>
      (await cards.findBy(await encryptedWhere(cards, { tenantId: "t1", pan }))).map((c) => c.id);

    test("a blind index selected without its source: the changed column is written, the index kept as stored", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      expect(partial.pan).toBeUndefined();
      const loadedIndex = partial.panIndex;
      expect(loadedIndex).toBe(before.panIndex);
      partial.uses = 5;
      await cards.save(partial);
      // The caller's object still holds the index as loaded.
      expect(partial.panIndex).toBe(loadedIndex);
      expect([partial.holder, partial.pan]).toEqual([undefined, undefined]);
      expect(await stored(c.id)).toEqual({ ...before, uses: 5 });
      expect(await byPan("4111 1111")).toEqual([c.id]);
    });

    test("a blind index selected without its source, with the context column: same", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, tenantId: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      partial.uses = 2;
      await cards.save(partial);
      expect(await stored(c.id)).toEqual({ ...before, uses: 2 });
    });

    test("a null blind index selected without its source saves back", async () => {
      const c = await card(null);
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      expect(partial.panIndex).toBeNull();
      partial.uses = 1;
      await cards.save(partial);
      expect(partial.panIndex).toBeNull();
      expect(await stored(c.id)).toMatchObject({ pan: null, panIndex: null, uses: 1 });
    });

    test("an index selected without its source and saved with nothing else changed is left as loaded", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true },
        where: { id: c.id },
      });
      await cards.save(partial);
      expect(partial.panIndex).toBe(before.panIndex);
      await cards.save(partial, { transaction: false });
      expect(partial.panIndex).toBe(before.panIndex);
      await ds.transaction(async (manager) => {
        await manager.save(partial);
        expect(partial.panIndex).toBe(before.panIndex);
      });
      expect(partial.panIndex).toBe(before.panIndex);
      expect(await stored(c.id)).toEqual(before);
    });

    test("a changed blind index without its source is refused, naming the property to set; nothing is written", async () => {
      const c = await card();
      const other = await card("5500 0000", "Grace");
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      // An index copied from another row would make lookups of that pan find this row.
      partial.panIndex = (await stored(other.id)).panIndex as string;
      partial.uses = 9;
      const error = await failure(() => cards.save(partial));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toBe(
        "Card.panIndex is the blind index of Card.pan: it is computed from pan, not written, and the value given differs from the one loaded; set pan instead (select it, or assign it) and the index follows",
      );
      expect(await stored(c.id)).toEqual(before);
      // Clearing it would not clear pan, only make pan unfindable.
      partial.panIndex = null;
      await expect(cards.save(partial)).rejects.toThrow(/^Card\.panIndex is the blind index/);
      expect(partial.panIndex).toBeNull();
      expect(await stored(c.id)).toEqual(before);
    });

    test("a row changed by another writer after the partial load: its newer index is not overwritten", async () => {
      const c = await card();
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      const untouched = await cards.findOneOrFail({
        select: { id: true, panIndex: true },
        where: { id: c.id },
      });
      const loadedIndex = partial.panIndex;
      const full = await cards.findOneByOrFail({ id: c.id });
      full.pan = "6011 0000";
      await cards.save(full);
      const after = await stored(c.id);
      partial.uses = 4;
      await cards.save(partial);
      expect(partial.panIndex).toBe(loadedIndex);
      expect(await stored(c.id)).toEqual({ ...after, uses: 4 });
      await cards.save(untouched);
      expect(untouched.panIndex).toBe(loadedIndex);
      expect(await stored(c.id)).toEqual({ ...after, uses: 4 });
      expect(await byPan("6011 0000")).toEqual([c.id]);
      expect(await byPan("4111 1111")).toEqual([]);
    });

    test("a source set on an entity loaded without it gets its index computed", async () => {
      const c = await card();
      const partial = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      partial.pan = "3700 0000";
      await cards.save(partial);
      expect(partial.pan).toBe("3700 0000");
      expect(partial.panIndex).toBe((await stored(c.id)).panIndex);
      expect(await byPan("3700 0000")).toEqual([c.id]);
      expect(await byPan("4111 1111")).toEqual([]);
      expect((await cards.findOneByOrFail({ id: c.id })).holder).toBe("Ada");
    });

    test("a source selected without its index: the index is recomputed for the same value", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, tenantId: true, pan: true, uses: true },
        where: { id: c.id },
      });
      expect(partial.pan).toBe("4111 1111");
      expect(partial.panIndex).toBeUndefined();
      partial.uses = 7;
      await cards.save(partial);
      const after = await stored(c.id);
      expect(after).toMatchObject({ holder: before.holder, panIndex: before.panIndex, uses: 7 });
      expect(partial.pan).toBe("4111 1111");
      expect((await cards.findOneByOrFail({ id: c.id })).pan).toBe("4111 1111");
    });

    test("encrypted columns not selected are left as stored, not wiped", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, uses: true },
        where: { id: c.id },
      });
      partial.uses = 3;
      await cards.save(partial);
      expect(await stored(c.id)).toEqual({ ...before, uses: 3 });
      const full = await cards.findOneByOrFail({ id: c.id });
      expect([full.holder, full.pan]).toEqual(["Ada", "4111 1111"]);
    });

    test("saving a partially selected object twice leaves the unselected columns as stored", async () => {
      // TypeORM sets the nullable properties a save left undefined to null on the object; for
      // encrypted columns and blind indexes the next save would write those nulls.
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, uses: true },
        where: { id: c.id },
      });
      const indexed = await cards.findOneOrFail({
        select: { id: true, panIndex: true, uses: true },
        where: { id: c.id },
      });
      for (const uses of [1, 2]) {
        partial.uses = uses;
        await cards.save(partial);
        expect([partial.holder, partial.pan, partial.panIndex]).toEqual([
          undefined,
          undefined,
          undefined,
        ]);
        indexed.uses = uses + 10;
        await cards.save(indexed);
        expect([indexed.holder, indexed.pan, indexed.panIndex]).toEqual([
          undefined,
          undefined,
          before.panIndex,
        ]);
      }
      expect(await stored(c.id)).toEqual({ ...before, uses: 12 });
      const full = await cards.findOneByOrFail({ id: c.id });
      expect([full.holder, full.pan]).toEqual(["Ada", "4111 1111"]);
    });

    test("soft remove and recover of a partially selected entity, then save, leave the unselected columns as stored", async () => {
      // softRemove and recover set the nullable properties they left undefined to null on the
      // object too; the next save would write those nulls over the encrypted values.
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, uses: true },
        where: { id: c.id },
      });
      await cards.softRemove(partial);
      expect([partial.holder, partial.pan, partial.panIndex]).toEqual([
        undefined,
        undefined,
        undefined,
      ]);
      await cards.recover(partial);
      expect([partial.holder, partial.pan, partial.panIndex]).toEqual([
        undefined,
        undefined,
        undefined,
      ]);
      partial.uses = 4;
      await cards.save(partial);
      expect(await stored(c.id)).toEqual({ ...before, uses: 4 });
      const full = await cards.findOneByOrFail({ id: c.id });
      expect([full.holder, full.pan]).toEqual(["Ada", "4111 1111"]);
      expect(await byPan("4111 1111")).toEqual([c.id]);
      // A loaded entity keeps its values through both.
      await cards.softRemove(full);
      await cards.recover(full);
      expect([full.holder, full.pan]).toEqual(["Ada", "4111 1111"]);
    });

    test("an encrypted column selected without its context column is refused at load, naming the column to select", async () => {
      const c = await card();
      const error = await failure(() =>
        cards.findOneOrFail({ select: { id: true, pan: true }, where: { id: c.id } }),
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toBe(
        "Card.pan is bound to Card.tenantId, which the loaded row lacks: a find that selects pan must select tenantId too",
      );
    });

    test("a context column selected and changed without the columns bound to it is refused", async () => {
      const c = await card();
      const before = await stored(c.id);
      const partial = await cards.findOneOrFail({
        select: { id: true, tenantId: true, uses: true },
        where: { id: c.id },
      });
      partial.tenantId = "t2";
      await expect(cards.save(partial)).rejects.toThrow(ValidationError);
      expect(await stored(c.id)).toEqual(before);
    });
  });
}
