// @kms/prisma and @kms/typeorm write the same ciphertexts for the same configuration (model =
// entity name, field = property, same context keys; docs/FORMAT.md §6). Here each adapter reads,
// and looks up, what the other wrote in one database, each with its own engine and cache: only
// the KMS and the data key table are shared.
import { createKms, InvalidCiphertextError, type Kms, runWithEncryptionContext } from "@kms/core";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { databaseTarget } from "@kms/tooling/databases";
import {
  EncryptedColumn,
  encryptedParameter,
  encryptedWhere,
  type TypeormFieldEncryption,
  fieldEncryption as typeormEncryption,
} from "@kms/typeorm";
import { Column, DataSource, Entity, PrimaryGeneratedColumn } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { fieldEncryption, PrismaDataKeyStore } from "../src/index.ts";
import { openPostgres, openSqlite, schemaText, type TestDatabase } from "./backends.ts";
import { Prisma } from "./generated/client.ts";

// The Prisma models of test/prisma/schema.prisma as TypeORM entities: the same names, columns,
// modes, blind index (bytes, normalization) and context. Decorators applied as calls: this
// package compiles without TypeScript's legacy decorators.

type Decorator = (target: object, property: string) => void;

function entity(cls: new () => object, columns: Record<string, Decorator>): void {
  Entity(cls.name)(cls);
  PrimaryGeneratedColumn()(cls.prototype, "id");
  for (const [property, decorate] of Object.entries(columns)) decorate(cls.prototype, property);
}

const byTenant = { fromRow: ["tenantId"] };

class User {
  declare id: number;
  declare tenantId: string;
  declare email: string;
  declare name: string | null;
  declare phone: string | null;
  declare phoneIndex: string | null;
  declare profile: unknown;
  declare score: number | null;
  declare avatar: Uint8Array | null;
}
entity(User, {
  tenantId: Column({ type: String }),
  email: EncryptedColumn({ deterministic: true, context: byTenant }),
  name: EncryptedColumn({ nullable: true, context: byTenant }),
  phone: EncryptedColumn({
    nullable: true,
    blindIndex: { column: "phoneIndex", normalize: ["trim", "lowercase"], bytes: 12 },
    context: byTenant,
  }),
  profile: EncryptedColumn({ type: "json", nullable: true, context: byTenant }),
  score: EncryptedColumn({ type: "number", nullable: true, context: byTenant }),
  avatar: EncryptedColumn({ storage: "bytes", nullable: true, context: byTenant }),
});

/** `@kms.encrypted @kms.context(recordId)` on a field is `rowIdentity` in TypeORM. */
class Chart {
  declare id: number;
  declare tenantId: string;
  declare recordId: string;
  declare ssn: string;
  declare note: string | null;
  declare vitals: unknown;
}
entity(Chart, {
  tenantId: Column({ type: String }),
  recordId: Column({ type: String }),
  ssn: EncryptedColumn({ deterministic: true, context: byTenant }),
  note: EncryptedColumn({
    nullable: true,
    context: { fromRow: ["tenantId"], rowIdentity: ["recordId"] },
  }),
  vitals: EncryptedColumn({
    type: "json",
    nullable: true,
    context: { fromRow: ["tenantId"], rowIdentity: ["recordId"] },
  }),
});

/** `@kms.context(scope: tenantId)` is `fromScope`. */
class Comment {
  declare id: number;
  declare postId: number;
  declare text: string;
}
entity(Comment, {
  postId: Column({ type: "int" }),
  text: EncryptedColumn({ context: { fromScope: ["tenantId"] } }),
});

class Ledger {
  declare id: number;
  declare tenantId: string;
  declare active: boolean | null;
  declare verified: boolean | null;
  declare balance: string | null;
}
entity(Ledger, {
  tenantId: Column({ type: String }),
  active: EncryptedColumn({ type: "boolean", nullable: true, context: byTenant }),
  verified: EncryptedColumn({
    type: "boolean",
    deterministic: true,
    nullable: true,
    context: byTenant,
  }),
  balance: EncryptedColumn({ type: "decimal", nullable: true, context: byTenant }),
});

/** Blind indexes of typed fields: each adapter passes its field's type to the engine. */
class Payment {
  declare id: number;
  declare tenantId: string;
  declare amount: string | number | null;
  declare paidAt: Date | null;
  declare ref: bigint | null;
}
entity(Payment, {
  tenantId: Column({ type: String }),
  amount: EncryptedColumn({
    type: "decimal",
    nullable: true,
    blindIndex: { column: "amountIndex" },
    context: byTenant,
  }),
  paidAt: EncryptedColumn({
    type: "date",
    nullable: true,
    blindIndex: { column: "paidAtIndex" },
    context: byTenant,
  }),
  ref: EncryptedColumn({
    type: "bigint",
    nullable: true,
    blindIndex: { column: "refIndex" },
    context: byTenant,
  }),
});

const postgres = databaseTarget("postgres");
describeInterop("SQLite", openSqlite);
describeInterop("PostgreSQL", () => openPostgres(postgres.url as string), postgres.skipReason);

function describeInterop(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(
    `@kms/prisma and @kms/typeorm on one ${name} database`,
    () => {
      let db: TestDatabase;
      let kms: Kms;
      let keyId: string;
      const sources: DataSource[] = [];

      beforeEach(async () => {
        db = await open();
        kms = await createKms();
        keyId = (await kms.createKey()).keyMetadata.keyId;
      });
      afterEach(async () => {
        for (const ds of sources.splice(0)) await ds.destroy();
        await db.close();
      });

      /** The Prisma side: a fresh extension (engine and cache) over the test's base client. */
      const prismaSide = () =>
        db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));

      /**
       * The TypeORM side: a fresh encryption on its own connection, reading the data keys the Prisma
       * side writes (the two default data key tables differ: see the README).
       */
      const typeormSide = async (): Promise<{
        ds: DataSource;
        encryption: TypeormFieldEncryption;
      }> => {
        const encryption = typeormEncryption({
          kms,
          keyId,
          dataKeyStore: new PrismaDataKeyStore(db.prisma.kmsDataKey),
        });
        const common = {
          entities: [User, Chart, Comment, Ledger, Payment],
          subscribers: [encryption.subscriber],
          synchronize: false,
        };
        const location = db.location;
        const ds =
          location.kind === "sqlite"
            ? new DataSource({ type: "better-sqlite3", database: location.file, ...common })
            : new DataSource({
                type: "postgres",
                url: location.url,
                schema: location.schema,
                ...common,
              });
        await ds.initialize();
        if (location.kind === "sqlite") retainSqliteHandle(ds);
        sources.push(ds);
        encryption.check(ds);
        return { ds, encryption };
      };

      const avatar = Uint8Array.from(Buffer.from("AVATAR-BYTES"));

      test("rows written with @kms/prisma read, and are looked up, through @kms/typeorm", async () => {
        const prisma = prismaSide();
        const alice = await prisma.user.create({
          data: {
            tenantId: "t1",
            email: "alice@example.com",
            name: "Alice Liddell",
            phone: "+1 555 0100",
            profile: { likes: ["tea"], age: 7 } as never,
            score: 41.5 as never,
            avatar,
          },
        });
        const chart = await prisma.chart.create({
          data: {
            tenantId: "t1",
            recordId: "r-1",
            ssn: "123-45-6789",
            note: "bound to r-1",
            vitals: { bp: "120/80" } as never,
          },
        });
        await prisma.chart.create({
          data: { tenantId: "t1", recordId: "r-2", ssn: "987-65-4321", note: "bound to r-2" },
        });
        const post = await prisma.post.create({
          data: { tenantId: "t1", title: "t", body: "b", authorId: alice.id },
        });
        // Prisma queries are lazy: awaited inside the scope, or they run outside it.
        const comment = await runWithEncryptionContext(
          { tenantId: "t1" },
          async () => await prisma.comment.create({ data: { text: "first!", postId: post.id } }),
        );
        const ledger = await prisma.ledger.create({
          data: {
            tenantId: "t1",
            active: true as never,
            verified: false as never,
            balance: new Prisma.Decimal("1.50") as never,
          },
        });

        const { ds } = await typeormSide();
        const users = ds.getRepository(User);
        const read = await users.findOneByOrFail({ id: alice.id });
        expect(read).toMatchObject({
          tenantId: "t1",
          email: "alice@example.com",
          name: "Alice Liddell",
          phone: "+1 555 0100",
          profile: { likes: ["tea"], age: 7 },
          score: 41.5,
        });
        expect(Buffer.from(read.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
        // A deterministic lookup seals the operand as Prisma sealed the stored value: byte for byte.
        const stored = await db.raw("User", alice.id);
        expect(
          await encryptedParameter(users, "email", "alice@example.com", {
            context: { tenantId: "t1" },
          }),
        ).toBe(stored.email);
        expect(
          await users.findBy(
            await encryptedWhere(users, { tenantId: "t1", email: "alice@example.com" }),
          ),
        ).toMatchObject([{ id: alice.id }]);
        // The blind index: same key, bytes and normalization ("trim,lowercase").
        expect(
          await users.findBy(
            await encryptedWhere(users, { tenantId: "t1", phone: "  +1 555 0100 " }),
          ),
        ).toMatchObject([{ id: alice.id }]);
        expect(
          await users.findBy(await encryptedWhere(users, { tenantId: "t2", phone: "+1 555 0100" })),
        ).toEqual([]);

        const charts = ds.getRepository(Chart);
        expect(await charts.findOneByOrFail({ id: chart.id })).toMatchObject({
          ssn: "123-45-6789",
          note: "bound to r-1",
          vitals: { bp: "120/80" },
        });
        expect(
          await charts.findBy(await encryptedWhere(charts, { tenantId: "t1", ssn: "123-45-6789" })),
        ).toMatchObject([{ id: chart.id, recordId: "r-1" }]);

        expect(
          await runWithEncryptionContext({ tenantId: "t1" }, () =>
            ds.getRepository(Comment).findOneByOrFail({ id: comment.id }),
          ),
        ).toMatchObject({ text: "first!" });
        const ledgers = ds.getRepository(Ledger);
        // TypeORM returns decimals as their string form, Prisma as Prisma.Decimal.
        expect(await ledgers.findOneByOrFail({ id: ledger.id })).toMatchObject({
          active: true,
          verified: false,
          balance: "1.5",
        });
        expect(
          await ledgers.findBy(await encryptedWhere(ledgers, { tenantId: "t1", verified: false })),
        ).toMatchObject([{ id: ledger.id }]);

        // Bound as Prisma bound it: another tenant, or (for the row-bound note) another row, fails.
        await db.rawSet("User", alice.id, "tenantId", "t2");
        await expect(users.findOneBy({ id: alice.id })).rejects.toBeInstanceOf(
          InvalidCiphertextError,
        );
        const other = await prisma.chart.findFirstOrThrow({ where: { recordId: "r-2" } });
        await db.rawSet("Chart", other.id, "note", (await db.raw("Chart", chart.id)).note);
        await expect(charts.findOneBy({ id: other.id })).rejects.toBeInstanceOf(
          InvalidCiphertextError,
        );
      });

      test("typed blind indexes agree: a value written in one form by one adapter is found in another by the other", async () => {
        const prisma = prismaSide();
        const paidAt = new Date("2026-03-01T12:00:00.000Z");
        const fromPrisma = await prisma.payment.create({
          data: {
            tenantId: "t1",
            amount: new Prisma.Decimal("1.50") as never,
            paidAt: paidAt as never,
            ref: (2n ** 70n) as never,
          },
        });
        const { ds } = await typeormSide();
        const payments = ds.getRepository(Payment);
        const fromTypeorm = await payments.save(
          Object.assign(new Payment(), { tenantId: "t1", amount: 2.5, paidAt: null, ref: null }),
        );
        const typeormIds = async (where: Record<string, unknown>) =>
          (await payments.findBy(await encryptedWhere(payments, { tenantId: "t1", ...where }))).map(
            (p) => p.id,
          );
        expect(await typeormIds({ amount: "1.5" })).toEqual([fromPrisma.id]);
        expect(await typeormIds({ amount: 1.5 })).toEqual([fromPrisma.id]);
        expect(await typeormIds({ paidAt: new Date(paidAt.getTime()) })).toEqual([fromPrisma.id]);
        expect(await typeormIds({ ref: 2n ** 70n })).toEqual([fromPrisma.id]);
        const prismaIds = async (where: Record<string, unknown>) =>
          (await prisma.payment.findMany({ where: { tenantId: "t1", ...where } as never })).map(
            (p) => p.id,
          );
        expect(await prismaIds({ amount: new Prisma.Decimal("2.5") })).toEqual([fromTypeorm.id]);
        expect(await prismaIds({ amount: "2.5" })).toEqual([fromTypeorm.id]);
      });

      test("rows written with @kms/typeorm read, and are looked up, through @kms/prisma", async () => {
        const { ds } = await typeormSide();
        const users = ds.getRepository(User);
        const bob = await users.save(
          Object.assign(new User(), {
            tenantId: "t2",
            email: "bob@example.com",
            name: "Bob",
            phone: "+1 555 0199",
            profile: { likes: ["coffee"], age: 9 },
            score: -3,
            avatar,
          }),
        );
        const chart = await ds.getRepository(Chart).save(
          Object.assign(new Chart(), {
            tenantId: "t2",
            recordId: "r-9",
            ssn: "111-22-3333",
            note: "bound to r-9",
            vitals: { pulse: 60 },
          }),
        );
        const ledger = await ds.getRepository(Ledger).save(
          Object.assign(new Ledger(), {
            tenantId: "t2",
            active: false,
            verified: true,
            balance: "-0.25",
          }),
        );
        const prisma = prismaSide();
        const post = await prisma.post.create({
          data: { tenantId: "t2", title: "t", body: "b", authorId: bob.id },
        });
        const comment = await runWithEncryptionContext({ tenantId: "t2" }, () =>
          ds
            .getRepository(Comment)
            .save(Object.assign(new Comment(), { postId: post.id, text: "hi" })),
        );

        const read = await prisma.user.findUniqueOrThrow({ where: { id: bob.id } });
        expect(read).toMatchObject({
          tenantId: "t2",
          email: "bob@example.com",
          name: "Bob",
          phone: "+1 555 0199",
          profile: { likes: ["coffee"], age: 9 },
          score: -3,
        });
        expect(Buffer.from(read.avatar as Uint8Array).toString()).toBe("AVATAR-BYTES");
        // Deterministic (a compound unique) and blind index lookups on TypeORM's ciphertexts.
        expect(
          await prisma.user.findUnique({
            where: { tenantId_email: { tenantId: "t2", email: "bob@example.com" } },
          }),
        ).toMatchObject({ id: bob.id });
        expect(
          await prisma.user.findMany({ where: { tenantId: "t2", phone: " +1 555 0199" } }),
        ).toMatchObject([{ id: bob.id }]);
        expect(await prisma.user.count({ where: { tenantId: "t1", phone: "+1 555 0199" } })).toBe(
          0,
        );

        expect(
          await prisma.chart.findFirst({ where: { tenantId: "t2", ssn: "111-22-3333" } }),
        ).toMatchObject({ id: chart.id, note: "bound to r-9", vitals: { pulse: 60 } });
        expect(
          await runWithEncryptionContext(
            { tenantId: "t2" },
            async () => await prisma.comment.findUniqueOrThrow({ where: { id: comment.id } }),
          ),
        ).toMatchObject({ text: "hi" });
        const entry = await prisma.ledger.findFirstOrThrow({
          where: { tenantId: "t2", verified: true as never },
        });
        expect(entry).toMatchObject({ id: ledger.id, active: false, verified: true });
        expect(entry.balance as unknown).toBeInstanceOf(Prisma.Decimal);
        expect(String(entry.balance)).toBe("-0.25");
      });
    },
  );
}
