// The README's examples, run as written (the database in a temporary directory instead of
// ./app.db), so the documentation cannot rot.
import "reflect-metadata";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, runWithEncryptionContext } from "@kms/core";
import { retainSqliteHandle, retainSqliteStatements } from "@kms/keystore-sqlite";
import { readmeDrift } from "@kms/tooling/readme";
import { Column, DataSource, Entity, In, PrimaryGeneratedColumn } from "typeorm";
import { afterAll, expect, it } from "vitest";
import {
  EncryptedColumn,
  encryptedParameter,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
} from "../src/index.ts";

// better-sqlite3 12 on Node >= 24.19 (Caveats): TypeORM's driver leaves statements to the GC.
retainSqliteStatements();

const dir = mkdtempSync(join(tmpdir(), "kms-typeorm-readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

@Entity()
class User {
  @PrimaryGeneratedColumn() id: number;
  @Column() tenantId: string;
  @EncryptedColumn({ deterministic: true, unique: true, context: { fromRow: ["tenantId"] } })
  email: string;
  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "phoneIndex", normalize: ["trim"] },
    context: { fromRow: ["tenantId"] },
  })
  phone: string | null;
  @EncryptedColumn({ type: "json", context: { fromScope: ["tenant"] } })
  profile: { age: number };
}

/** "Binding values to their row": `note` is bound to `recordId`, its data key to the tenant. */
@Entity()
class Memo {
  @PrimaryGeneratedColumn() id: number;
  @Column() recordId: string;
  @EncryptedColumn({ context: { fromScope: ["tenant"], rowIdentity: ["recordId"] } })
  note: string;
}

class Address {
  @EncryptedColumn({ deterministic: true, context: { fromRow: ["tenantId"] } })
  street: string;
  @EncryptedColumn({ blindIndex: { column: "zipIndex" }, context: { fromRow: ["tenantId"] } })
  zip: string;
}

@Entity()
class Person {
  @PrimaryGeneratedColumn() id: number;
  @Column() tenantId: string;
  @Column(() => Address) home: Address; // columns homeStreet, homeZip, homeZipindex
  @Column(() => Address, { prefix: "office" }) work: Address; // officeStreet, …
}

it("runs the Example: ciphertext stored, plaintext found through encryptedWhere", async () => {
  const kms = await createKms();
  const { keyId } = (await kms.createKey()).keyMetadata;
  const encryption = fieldEncryption({ kms, keyId });
  const dataSource = new DataSource({
    type: "better-sqlite3",
    database: join(dir, "app.db"),
    synchronize: true,
    entities: [User, Memo, Person, ...encryption.entities], // + the data key table
    subscribers: [encryption.subscriber],
  });
  await dataSource.initialize();
  retainSqliteHandle(dataSource);
  encryption.check(dataSource); // context columns of every entity, at startup
  const users = dataSource.getRepository(User);

  await runWithEncryptionContext({ tenant: "t1" }, async () => {
    await users.save(
      Object.assign(new User(), {
        tenantId: "t1",
        email: "a@example.com",
        phone: "+1 555 0100",
        profile: { age: 7 },
      }),
    );
    const a = await users.findOneBy(
      await encryptedWhere(users, { tenantId: "t1", email: "a@example.com" }),
    );
    const some = await users.findBy(
      await encryptedWhere(users, { tenantId: "t1", phone: In(["+1 555 0100"]) }),
    );
    expect(a).toMatchObject({ tenantId: "t1", email: "a@example.com", profile: { age: 7 } });
    expect(some.map((u) => u.phone)).toEqual(["+1 555 0100"]);
  });
  const [stored] = await dataSource.query(`SELECT "email", "phone", "profile" FROM "user"`);
  for (const column of ["email", "phone", "profile"]) {
    expect(String(stored[column]), column).toMatch(/^kms1:/);
  }

  const memos = dataSource.getRepository(Memo);
  const memo = await runWithEncryptionContext({ tenant: "t1" }, () =>
    memos.save(Object.assign(new Memo(), { recordId: "r-1", note: "bound to r-1" })),
  );
  expect(
    await runWithEncryptionContext({ tenant: "t1" }, () => memos.findOneBy({ id: memo.id })),
  ).toMatchObject({ note: "bound to r-1" });

  const people = dataSource.getRepository(Person);
  await people.save(
    Object.assign(new Person(), {
      tenantId: "t1",
      home: Object.assign(new Address(), { street: "1 Main St", zip: "12345" }),
      work: Object.assign(new Address(), { street: "2 Side St", zip: "67890" }),
    }),
  );
  const found = await people.findBy(
    await encryptedWhere(people, { tenantId: "t1", home: { street: "1 Main St" } }),
  );
  expect(found.map((p) => p.work.street)).toEqual(["2 Side St"]);
  const zip = await encryptedParameter(people, "work.zip", "67890", {
    context: { tenantId: "t1" },
  });
  const byZip = await people
    .createQueryBuilder("p")
    .where("p.work.zipIndex = :zip", { zip })
    .getMany();
  expect(byZip.map((p) => p.home.zip)).toEqual(["12345"]);
  await dataSource.destroy();
});

it("runs the migration of a column bound to the scope: one run per tenant, each over its rows", async () => {
  const kms = await createKms();
  const oldKey = (await kms.createKey()).keyMetadata.keyId;
  const newKey = (await kms.createKey()).keyMetadata.keyId;
  const open = async (keyId: string, previousKeyIds: string[] = []) => {
    const encryption = fieldEncryption({ kms, keyId, previousKeyIds });
    const source = new DataSource({
      type: "better-sqlite3",
      database: join(dir, "migration.db"),
      synchronize: true,
      entities: [User, ...encryption.entities],
      subscribers: [encryption.subscriber],
    });
    await source.initialize();
    retainSqliteHandle(source);
    return { encryption, source };
  };
  const before = await open(oldKey);
  for (const tenant of ["t1", "t2"]) {
    await runWithEncryptionContext({ tenant }, () =>
      before.source.getRepository(User).save(
        Object.assign(new User(), {
          tenantId: tenant,
          email: `a@${tenant}.example`,
          phone: null,
          profile: { age: 7 },
        }),
      ),
    );
  }
  // Rotation to a new KMS key, as the README runs it.
  const { encryption, source: dataSource } = await open(newKey, [oldKey]);
  for (const tenant of ["t1", "t2"]) {
    await reencryptEntities(dataSource, User, { context: { tenant }, where: { tenantId: tenant } });
  }
  const rows: Record<string, string>[] = await dataSource.query(
    `SELECT "email", "profile" FROM "user"`,
  );
  expect(rows).toHaveLength(2);
  for (const row of rows) {
    for (const column of ["email", "profile"]) {
      expect(await encryption.inspect(dataSource, String(row[column]))).toMatchObject({
        legacy: false,
        kmsKeyId: expect.stringContaining(newKey),
      });
    }
  }
  for (const tenant of ["t1", "t2"]) {
    const users = await runWithEncryptionContext({ tenant }, () =>
      dataSource.getRepository(User).findBy({ tenantId: tenant }),
    );
    expect(users.map((u) => [u.email, u.profile])).toEqual([[`a@${tenant}.example`, { age: 7 }]]);
  }
  await before.source.destroy();
  await dataSource.destroy();
});

it("is the README's examples: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/typeorm",
    blocks: 4,
    adapted: [
      // A temporary directory; the test's own entities listed too.
      'database: "app.db",',
      "entities: [User, ...encryption.entities], // + the data key table",
    ],
  });
  expect(drift).toEqual([]);
});
