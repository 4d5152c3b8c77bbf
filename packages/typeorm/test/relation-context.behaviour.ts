import { createKms, type Kms, ValidationError } from "@kms/core";
import {
  Column,
  type DataSource,
  Entity,
  JoinColumn,
  ManyToOne,
  OneToMany,
  PrimaryColumn,
  type Relation,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, fieldEncryption } from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";

@Entity("kms_rc_tenants")
class RcTenant {
  @PrimaryColumn()
  id: number;
}

/** A context column that is also the join column of a relation declared beside it. */
@Entity("kms_rc_docs")
class RcDoc {
  @PrimaryColumn()
  id: number;

  @Column({ type: "int", nullable: true })
  tenantId: number | null;

  @ManyToOne(() => RcTenant)
  @JoinColumn({ name: "tenantId" })
  tenant: Relation<RcTenant> | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  note: string | null;
}

@Entity("kms_rc_folders")
class RcFolder {
  @PrimaryColumn()
  id: number;

  @OneToMany(
    () => RcItem,
    (item) => item.folder,
    { cascade: true },
  )
  items: Relation<RcItem>[];
}

/** The same, written from the other side of the relation by TypeORM's cascades. */
@Entity("kms_rc_items")
class RcItem {
  @PrimaryColumn()
  id: number;

  @Column({ type: "int", nullable: true })
  folderId: number | null;

  @ManyToOne(
    () => RcFolder,
    (folder) => folder.items,
  )
  @JoinColumn({ name: "folderId" })
  folder: Relation<RcFolder> | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["folderId"] } })
  note: string | null;
}

const ENTITIES = [RcTenant, RcDoc, RcFolder, RcItem];

/**
 * A context column that is a relation's join column (README: declare it as a @Column beside the
 * relation) changes through the relation too: an update of the relation, a relation reassigned
 * on a loaded entity, a cascade from the other side moving a row or orphaning it. Each of them is
 * refused, with what happened, while its row's values would stop decrypting. Run once per backend.
 */
export function describeRelationContext(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(
    `context columns joined to a relation on ${name}`,
    () => {
      let db: TestDatabase;
      let kms: Kms;
      let keyId: string;
      let ds: DataSource;

      beforeEach(async () => {
        db = await open();
        kms = await createKms();
        keyId = (await kms.createKey()).keyMetadata.keyId;
        ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: ENTITIES });
        await ds.getRepository(RcTenant).save([{ id: 1 }, { id: 2 }]);
        await ds.getRepository(RcFolder).save([{ id: 1 }, { id: 2 }]);
      });
      afterEach(async () => {
        await db.close();
      });

      /** What a fresh process reads, with nothing cached. */
      const fresh = async <T extends object>(entity: new () => T) => {
        const other = await db.connect(fieldEncryption({ kms, keyId }), { entities: ENTITIES });
        return other.getRepository(entity).find({ order: { id: "ASC" } as never });
      };

      const stranded = (model: string, key: string, relation: string) =>
        new RegExp(
          `^${model}\\.${key} is part of the encryption context of ${model}\\.note: an update that changes it \\(here through the relation ${model}\\.${relation}, whose join column it is`,
        );

      test("an update of the relation alone is refused, through the repository and a QueryBuilder", async () => {
        const docs = ds.getRepository(RcDoc);
        await docs.save({ id: 1, tenantId: 1, note: "secret" });
        const refused = stranded("RcDoc", "tenantId", "tenant");
        for (const tenant of [{ id: 2 }, null]) {
          const updated = await failure(() => docs.update(1, { tenant }));
          expect(updated).toBeInstanceOf(ValidationError);
          expect((updated as Error).message).toMatch(refused);
          const built = await failure(() =>
            docs
              .createQueryBuilder()
              .update()
              .set({ tenant })
              .where("id = :id", { id: 1 })
              .execute(),
          );
          expect((built as Error).message).toMatch(refused);
        }
        expect(await fresh(RcDoc)).toEqual([
          expect.objectContaining({ id: 1, tenantId: 1, note: "secret" }),
        ]);
        // A row holding no value bound to it moves freely.
        await docs.save({ id: 2, tenantId: 1, note: null });
        await docs.update(2, { tenant: { id: 2 } });
        expect((await docs.findOneByOrFail({ id: 2 })).tenantId).toBe(2);
      });

      test("a relation reassigned on a loaded entity, or given beside another tenantId, is refused and says so", async () => {
        const docs = ds.getRepository(RcDoc);
        await docs.save({ id: 1, tenantId: 1, note: "secret" });
        const loaded = await docs.findOneByOrFail({ id: 1 });
        loaded.tenant = Object.assign(new RcTenant(), { id: 2 });
        const saved = await failure(() => docs.save(loaded));
        const moved =
          /^RcDoc\.note was encrypted under RcDoc\.tenantId as the entity holds it, while this (update|insert) stores in tenantId the key of the row the relation RcDoc\.tenant names \(tenantId is its join column\), or null: the relation was reassigned without tenantId/;
        expect(saved).toBeInstanceOf(ValidationError);
        expect((saved as Error).message).toMatch(moved);
        expect(loaded.note).toBe("secret");
        const inserted = await failure(() =>
          docs.save(
            Object.assign(new RcDoc(), {
              id: 2,
              tenantId: 1,
              tenant: Object.assign(new RcTenant(), { id: 2 }),
              note: "other",
            }),
          ),
        );
        expect((inserted as Error).message).toMatch(moved);
        expect(await fresh(RcDoc)).toEqual([
          expect.objectContaining({ id: 1, tenantId: 1, note: "secret" }),
        ]);
        // Moved with tenantId itself: the values are sealed under the new one.
        loaded.tenantId = 2;
        await docs.save(loaded);
        expect(await fresh(RcDoc)).toEqual([
          expect.objectContaining({ id: 1, tenantId: 2, note: "secret" }),
        ]);
      });

      test("a cascade moving a row to another parent, or orphaning it, is refused", async () => {
        const folders = ds.getRepository(RcFolder);
        await ds.getRepository(RcItem).save({ id: 10, folderId: 1, note: "secret" });
        const refused = stranded("RcItem", "folderId", "folder");

        const second = await folders.findOneOrFail({
          where: { id: 2 },
          relations: { items: true },
        });
        second.items.push(Object.assign(new RcItem(), { id: 10 }));
        const moved = await failure(() => folders.save(second));
        expect(moved).toBeInstanceOf(ValidationError);
        expect((moved as Error).message).toMatch(refused);

        const first = await folders.findOneOrFail({ where: { id: 1 }, relations: { items: true } });
        first.items = [];
        const orphaned = await failure(() => folders.save(first));
        expect(orphaned).toBeInstanceOf(ValidationError);
        expect((orphaned as Error).message).toMatch(refused);

        expect(await fresh(RcItem)).toEqual([
          expect.objectContaining({ id: 10, folderId: 1, note: "secret" }),
        ]);
      });
    },
  );
}
