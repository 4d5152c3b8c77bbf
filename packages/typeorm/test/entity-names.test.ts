import "reflect-metadata";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { Column, Entity, PrimaryColumn } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, fieldEncryption } from "../src/index.ts";
import { failure, openSqlite, type TestDatabase } from "./backends.ts";

/** Two modules' `Account` classes, each on a table of its own. */
const Billing = (() => {
  @Entity("kms_billing_accounts")
  class Account {
    @PrimaryColumn() id: number;
    @Column({ type: String }) tenantId: string;
    @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
    secret: string | null;
  }
  return Account;
})();

const Crm = (() => {
  @Entity("kms_crm_accounts")
  class Account {
    @PrimaryColumn() id: number;
    @Column({ type: String }) tenantId: string;
    @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
    secret: string | null;
  }
  return Account;
})();

/** A third `Account` with no encrypted column: nothing of it can decrypt. */
const Plain = (() => {
  @Entity("kms_plain_accounts")
  class Account {
    @PrimaryColumn() id: number;
    @Column({ type: String, nullable: true }) secret: string | null;
  }
  return Account;
})();

/**
 * Values are bound to the entity name (the class name), not to the table: two entities of one
 * DataSource named alike would share their bindings, and a value copied from one's table to the
 * other's would decrypt there.
 */
describe("entities sharing a name", () => {
  let db: TestDatabase;
  let kms: Kms;
  let keyId: string;
  beforeEach(async () => {
    db = await openSqlite();
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
  });
  afterEach(async () => {
    await db.close();
  });

  test("are refused by check() and at first use, before any statement, when both are encrypted", async () => {
    const encryption = fieldEncryption({ kms, keyId });
    const ds = await db.connect(encryption, { entities: [Billing, Crm] });
    const named =
      /^Account names two entities with encrypted columns \(tables kms_(billing|crm)_accounts and kms_(crm|billing)_accounts\): values are bound to the entity name, not the table/;
    const checked = await failure(async () => encryption.check(ds));
    expect(checked).toBeInstanceOf(ValidationError);
    expect((checked as Error).message).toMatch(named);
    const saved = await failure(() =>
      ds.getRepository(Crm).save({ id: 1, tenantId: "t1", secret: "crm secret" }),
    );
    expect((saved as Error).message).toMatch(named);
    expect(await db.raw(`SELECT * FROM "kms_crm_accounts"`)).toEqual([]);
  });

  test("a value copied between their tables would otherwise decrypt: the binding names no table", async () => {
    // One of them alone on its DataSource: what a second one would share with it.
    const first = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Billing] });
    await first.getRepository(Billing).save({ id: 1, tenantId: "t1", secret: "billing secret" });
    const [stored] = await db.raw(`SELECT "secret" FROM "kms_billing_accounts" WHERE "id" = 1`);
    const other = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Crm] });
    await db.raw(
      `INSERT INTO "kms_crm_accounts" ("id", "tenantId", "secret") VALUES (1, 't1', ?)`,
      [stored?.secret],
    );
    expect((await other.getRepository(Crm).findOneByOrFail({ id: 1 })).secret).toBe(
      "billing secret",
    );
  });

  test("one of them without encrypted columns is allowed", async () => {
    const encryption = fieldEncryption({ kms, keyId });
    const ds = await db.connect(encryption, { entities: [Billing, Plain] });
    encryption.check(ds);
    await ds.getRepository(Billing).save({ id: 1, tenantId: "t1", secret: "s" });
    expect((await ds.getRepository(Billing).findOneByOrFail({ id: 1 })).secret).toBe("s");
  });
});
