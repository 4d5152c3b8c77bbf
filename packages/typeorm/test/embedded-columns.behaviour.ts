import "reflect-metadata";
import { createKms, InvalidCiphertextError, type Kms, ValidationError } from "@kms/core";
import {
  Column,
  type DataSource,
  Entity,
  type FindOptionsWhere,
  In,
  Not,
  PrimaryGeneratedColumn,
  type Repository,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  encryptedParameter,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import { failure, holdFirstDataKey, type TestDatabase } from "./backends.ts";
import { Address, Geo, Person, Visit } from "./entities.ts";

const PREFIX = "kms1:";
const INDEX = /^[A-Za-z0-9_-]{22}$/;

const address = (street: string | null, zip: string | null, city: string | null = "Springfield") =>
  Object.assign(new Address(), {
    street,
    zip,
    city,
    geo: Object.assign(new Geo(), { point: { lat: 1.5, lng: -2 }, floor: 3 }),
  });

const person = (handle = "ada", tenantId = "t1") =>
  Object.assign(new Person(), {
    tenantId,
    handle,
    home: address("1 Main St", "12345"),
    work: address("9 Dock Rd", "67890", "Shelbyville"),
    visits: 0,
  });

/** The context of an embedded class's encrypted column names a column of the embedded. */
class Place {
  @Column({ type: String, length: 64, nullable: true })
  country: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["country"] } })
  street: string | null;
}

@Entity("kms_misplaced")
class Misplaced {
  @PrimaryGeneratedColumn()
  id: number;

  @Column(() => Place)
  place: Place;
}

/**
 * Encrypted columns declared in embedded classes (`@Column(() => Address)`), nested ones
 * included: sealed, opened, looked up, guarded and migrated as the entity's own columns, each
 * bound to its database column (`homeStreet`, `officeStreet`).
 */
export function describeEmbeddedColumns(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`embedded encrypted columns on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    let encryption: TypeormFieldEncryption;
    let ds: DataSource;
    let people: Repository<Person>;

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
      encryption = fieldEncryption({ kms, keyId });
      ds = await db.connect(encryption, { entities: [Person, Visit] });
      people = ds.getRepository(Person);
    });
    afterEach(async () => {
      await db.close();
    });

    const COLUMNS = [
      "tenantId",
      "visits",
      "homeStreet",
      "homeZip",
      "homeZipindex",
      "homeCity",
      "homeGeoPoint",
      "homeGeoFloor",
      "officeStreet",
      "officeZip",
      "officeZipindex",
      "officeGeoPoint",
    ];
    const stored = async (id: number) =>
      (
        await db.raw(
          `SELECT ${COLUMNS.map((c) => db.q(c)).join(", ")} FROM ${db.q("kms_people")} WHERE ${db.q("id")} = ?`,
          [id],
        )
      )[0] as Record<string, unknown>;

    const lookup = async (where: FindOptionsWhere<Person>) =>
      (await people.find({ where: await encryptedWhere(people, where), order: { id: "ASC" } })).map(
        (p) => p.id,
      );

    test("save stores ciphertext in the embedded columns, leaves plaintext on the caller's objects, find decrypts", async () => {
      const p = person();
      const home = p.home;
      await people.save(p);
      const raw = await stored(p.id);
      for (const column of ["homeStreet", "homeZip", "homeGeoPoint", "officeStreet", "officeZip"]) {
        expect(String(raw[column]).startsWith(PREFIX), column).toBe(true);
      }
      expect(raw.homeZipindex).toMatch(INDEX);
      expect(raw.officeZipindex).toMatch(INDEX);
      expect(raw.homeZipindex).not.toBe(raw.officeZipindex);
      expect([raw.homeCity, Number(raw.homeGeoFloor)]).toEqual(["Springfield", 3]);
      expect(JSON.stringify(raw)).not.toMatch(/Main|Dock|12345|67890|1\.5/);
      // The caller's objects, embedded ones included, hold the plaintext again.
      expect(p.home).toBe(home);
      expect(p.home).toMatchObject({
        street: "1 Main St",
        zip: "12345",
        zipIndex: raw.homeZipindex,
      });
      expect(p.home.geo.point).toEqual({ lat: 1.5, lng: -2 });
      expect(p.work).toMatchObject({ street: "9 Dock Rd", zip: "67890" });

      const expected = {
        id: p.id,
        tenantId: "t1",
        home: { street: "1 Main St", zip: "12345", city: "Springfield" },
        work: { street: "9 Dock Rd", zip: "67890", city: "Shelbyville" },
      };
      const found = await people.findOneByOrFail({ id: p.id });
      expect(found).toMatchObject(expected);
      expect(found.home.geo).toEqual({ point: { lat: 1.5, lng: -2 }, floor: 3 });
      expect(found.work.geo.point).toEqual({ lat: 1.5, lng: -2 });
      const built = await people
        .createQueryBuilder("p")
        .where("p.id = :id", { id: p.id })
        .getOneOrFail();
      expect(built).toMatchObject(expected);
    });

    test("each value is bound to its database column: the embedding's, not the embedded class's property", async () => {
      const p = await people.save(person());
      const raw = await stored(p.id);
      const open = (field: string) =>
        encryption.run(ds, undefined, () =>
          encryption.engine.decryptText(
            { model: "Person", field, context: { tenantId: "t1" } },
            { type: "string", mode: "deterministic" },
            String(raw.homeStreet),
          ),
        );
      expect(await open("homeStreet")).toBe("1 Main St");
      for (const field of ["street", "home.street", "officeStreet"]) {
        await expect(open(field), field).rejects.toBeInstanceOf(InvalidCiphertextError);
      }
      // The same class embedded twice: a value copied to the other embedding does not open.
      await db.raw(
        `UPDATE ${db.q("kms_people")} SET ${db.q("officeStreet")} = ? WHERE ${db.q("id")} = ?`,
        [raw.homeStreet, p.id],
      );
      await expect(people.findOneBy({ id: p.id })).rejects.toBeInstanceOf(InvalidCiphertextError);
    });

    test("insert, update and save of a loaded entity seal embedded values; a failed insert leaves plaintext", async () => {
      const p = person();
      await people.insert(p);
      expect(p.home.street).toBe("1 Main St");
      expect(String((await stored(p.id)).homeStreet).startsWith(PREFIX)).toBe(true);

      const values = { tenantId: "t1", home: { street: "2 Side St", zip: null } };
      await people.update(p.id, values);
      expect(values.home).toMatchObject({ street: "2 Side St", zip: null });
      const raw = await stored(p.id);
      expect([raw.homeZip, raw.homeZipindex]).toEqual([null, null]);
      expect(String(raw.homeStreet).startsWith(PREFIX)).toBe(true);
      expect(String(raw.officeStreet).startsWith(PREFIX)).toBe(true);

      const loaded = await people.findOneByOrFail({ id: p.id });
      expect(loaded.home).toMatchObject({ street: "2 Side St", zip: null, city: "Springfield" });
      loaded.work.zip = " 55555 ";
      loaded.home.geo.point = { lat: 0, lng: 0 };
      await people.save(loaded);
      expect(loaded.work.zip).toBe(" 55555 ");
      expect(await lookup({ tenantId: "t1", work: { zip: "55555" } })).toEqual([p.id]);
      expect((await people.findOneByOrFail({ id: p.id })).home.geo.point).toEqual({
        lat: 0,
        lng: 0,
      });

      // The unique handle fails the insert after the values were sealed.
      const dup = person();
      await expect(people.insert(dup)).rejects.toThrow();
      expect(dup.home).toMatchObject({ street: "1 Main St", zip: "12345" });
      expect(dup.work.geo.point).toEqual({ lat: 1.5, lng: -2 });
    });

    test("lookups through encryptedWhere and encryptedParameter on deterministic and blind-indexed embedded columns", async () => {
      const a = await people.save(person("ada"));
      const b = await people.save(
        Object.assign(person("bob"), { home: address("7 Elm St", "12345") }),
      );
      const other = await people.save(person("eve", "t2"));
      expect(await lookup({ tenantId: "t1", home: { street: "1 Main St" } })).toEqual([a.id]);
      expect(await lookup({ tenantId: "t2", home: { street: "1 Main St" } })).toEqual([other.id]);
      expect(await lookup({ tenantId: "t1", home: { zip: " 12345" } })).toEqual([a.id, b.id]);
      expect(
        await lookup({ tenantId: "t1", home: { zip: "12345", street: Not("1 Main St") } }),
      ).toEqual([b.id]);
      expect(await lookup({ tenantId: "t1", work: { zip: In(["67890", "0"]) } })).toEqual([
        a.id,
        b.id,
      ]);
      // The index of one embedding is not the other's.
      expect(await lookup({ tenantId: "t1", work: { zip: "12345" } })).toEqual([]);
      const either = await people.findBy(
        await encryptedWhere(people, [
          { tenantId: "t1", home: { street: "7 Elm St" } },
          { tenantId: "t2", work: { street: "9 Dock Rd" } },
        ]),
      );
      expect(either.map((p) => p.id).sort()).toEqual([b.id, other.id].sort());

      const street = await encryptedParameter(people, "home.street", "1 Main St", {
        context: { tenantId: "t1" },
      });
      const zip = await encryptedParameter(people, "work.zip", "67890", {
        context: { tenantId: "t1" },
      });
      const built = await people
        .createQueryBuilder("p")
        .where("p.home.street = :street AND p.work.zipIndex = :zip", { street, zip })
        .getMany();
      expect(built.map((p) => p.id)).toEqual([a.id]);

      for (const [where, message] of [
        [
          { tenantId: "t1", home: { geo: { point: { lat: 1.5, lng: -2 } } } },
          /^Person\.home\.geo\.point is randomized/,
        ],
        [
          { tenantId: "t1", home: { zipIndex: "x" } },
          /^Person\.home\.zipIndex is a blind index: look up home\.zip instead/,
        ],
        [{ home: { street: "1 Main St" } }, /^Person\.home\.street is bound to Person\.tenantId/],
        [{ tenantId: "t1", home: { street: undefined } }, /^Person\.home\.street is undefined/],
      ] as const) {
        const error = await failure(() => encryptedWhere(people, where as never));
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(message);
      }
      // Without encryptedWhere the plaintext is refused, never compared with ciphertext.
      await expect(people.findBy({ home: { street: "1 Main St" } })).rejects.toThrow(
        /^Address\.street is encrypted: a plaintext value reached a query/,
      );
      await expect(people.findBy({ work: { zipIndex: "x" } })).rejects.toThrow(
        /^Address\.zipIndex is the blind index of Address\.zip/,
      );
    });

    test("saving a partially selected person leaves the embedded values it did not select as stored", async () => {
      const p = await people.save(person());
      const before = await stored(p.id);
      // No embedded column selected: TypeORM creates the embedded objects with nulls after the
      // first save; a second save would write those nulls.
      const partial = await people.findOneOrFail({
        select: { id: true, visits: true },
        where: { id: p.id },
      });
      expect(partial.home).toBeUndefined();
      for (const visits of [1, 2]) {
        partial.visits = visits;
        await people.save(partial);
        expect([partial.home?.street, partial.home?.zip, partial.home?.zipIndex]).toEqual([
          undefined,
          undefined,
          undefined,
        ]);
        expect(partial.home?.geo?.point).toBeUndefined();
      }
      const afterBare = await stored(p.id);
      expect(afterBare).toEqual({
        ...before,
        visits: 2,
        // TypeORM's own handling of plain nullable columns (typeorm#4910), left as it is.
        homeCity: afterBare.homeCity,
        homeGeoFloor: afterBare.homeGeoFloor,
      });

      // An embedded blind index selected without its value is left as loaded; a value selected
      // with its context column is resealed.
      const some = await people.findOneOrFail({
        select: {
          id: true,
          tenantId: true,
          visits: true,
          home: { zipIndex: true },
          work: { street: true },
        },
        where: { id: p.id },
      });
      expect(some.home.zipIndex).toBe(before.homeZipindex);
      expect(some.work.street).toBe("9 Dock Rd");
      for (const visits of [3, 4]) {
        some.visits = visits;
        some.work.street = `${visits} Quay`;
        await people.save(some);
        expect(some.home.zipIndex).toBe(before.homeZipindex);
        expect(some.home.zip).toBeUndefined();
      }
      const after = await stored(p.id);
      for (const column of [
        "homeStreet",
        "homeZip",
        "homeZipindex",
        "homeGeoPoint",
        "officeZip",
        "officeZipindex",
        "officeGeoPoint",
      ]) {
        expect(after[column], column).toEqual(before[column]);
      }
      expect(await people.findOneByOrFail({ id: p.id })).toMatchObject({
        visits: 4,
        home: { street: "1 Main St", zip: "12345" },
        work: { street: "4 Quay", zip: "67890" },
      });
      expect(await lookup({ tenantId: "t1", home: { zip: "12345" } })).toEqual([p.id]);

      // A changed index without its value is refused, as on the entity's own columns.
      some.home.zipIndex = String(before.officeZipindex);
      await expect(people.save(some)).rejects.toThrow(
        /^Person\.home\.zipIndex is the blind index of Person\.home\.zip: it is computed from home\.zip, not written/,
      );
    });

    test("a partially loaded related entity saved by cascade keeps its unselected encrypted columns", async () => {
      const p = await people.save(person());
      const visit = await ds
        .getRepository(Visit)
        .save(Object.assign(new Visit(), { minutes: 5, person: p }));
      const before = await stored(p.id);
      const loaded = await ds.getRepository(Visit).findOneOrFail({
        select: { id: true, minutes: true, person: { id: true, visits: true } },
        relations: { person: true },
        where: { id: visit.id },
      });
      for (const visits of [7, 8]) {
        loaded.minutes += 1;
        loaded.person.visits = visits;
        await ds.getRepository(Visit).save(loaded);
        expect(loaded.person.home?.street).toBeUndefined();
      }
      const after = await stored(p.id);
      expect(after.visits).toBe(8);
      for (const column of [
        "homeStreet",
        "homeZip",
        "homeZipindex",
        "homeGeoPoint",
        "officeStreet",
        "officeZip",
        "officeZipindex",
      ]) {
        expect(after[column], column).toEqual(before[column]);
      }
      expect((await people.findOneByOrFail({ id: p.id })).home.street).toBe("1 Main St");
    });

    test("one embedded object in two rows, or in two embeddeds of a row, is refused and nothing is written", async () => {
      const a = person("ada");
      const b = Object.assign(person("bob", "t2"), { home: a.home });
      const error = await failure(() => people.save([a, b]));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(
        /^Person\.home is also the embedded object of another entity being written, and holds encrypted values/,
      );
      const c = person("cat");
      c.work = c.home;
      await expect(people.save(c)).rejects.toThrow(
        /^Person\.work and Person\.home are one object holding encrypted values/,
      );
      expect(await people.count()).toBe(0);
      expect(a.home).toMatchObject({ street: "1 Main St", zip: "12345" });
      expect(c.home.geo.point).toEqual({ lat: 1.5, lng: -2 });
      // One after the other, the same object is fine: each save reseals it.
      await people.save(a);
      await people.save(b);
      expect((await people.findOneByOrFail({ id: b.id })).home.street).toBe("1 Main St");
    });

    test("an insert refused for a shared embedded object leaves plaintext on the entity sealed before it; inserted one by one, each row opens", async () => {
      // No transaction to roll back: the first entity is still being sealed when the second
      // one's hook refuses the shared object.
      const hold = holdFirstDataKey();
      const e = fieldEncryption({ kms, keyId, dataKeyStore: hold.store });
      const slow = (await db.connect(e, { entities: [Person, Visit] })).getRepository(Person);
      const a = person("ada");
      const b = Object.assign(person("bob", "t2"), { home: a.home });
      await expect(slow.insert([a, b])).rejects.toThrow(
        /^Person\.home is also the embedded object of another entity being written/,
      );
      await hold.release();
      expect(a.home).toMatchObject({ street: "1 Main St", zip: "12345" });
      expect(a.home.geo.point).toEqual({ lat: 1.5, lng: -2 });
      expect(a.work).toMatchObject({ street: "9 Dock Rd", zip: "67890" });
      expect(await slow.count()).toBe(0);
      await slow.insert(a);
      await slow.insert(b);
      for (const [p, tenantId] of [
        [a, "t1"],
        [b, "t2"],
      ] as const) {
        expect(await slow.findOneByOrFail({ id: p.id })).toMatchObject({
          tenantId,
          home: { street: "1 Main St", zip: "12345", geo: { point: { lat: 1.5, lng: -2 } } },
        });
      }
    });

    test("a tenant move without the embedded values, and SQL expressions on them, are refused", async () => {
      const p = await people.save(person());
      const before = await stored(p.id);
      await expect(people.update(p.id, { tenantId: "t2" })).rejects.toThrow(
        /^Person\.tenantId is part of the encryption context of Person\.home\.street, Person\.home\.zip, Person\.home\.geo\.point, Person\.work\.street/,
      );
      await expect(
        people.upsert({ tenantId: "t2", handle: "ada", home: { street: "1 Main St" } } as Person, [
          "handle",
        ]),
      ).rejects.toThrow(/^Person\.tenantId is part of the encryption context of Person\.home\.zip/);
      for (const run of [
        () => people.increment({ id: p.id }, "home.street", 1),
        () =>
          people
            .createQueryBuilder()
            .update(Person)
            .set({ work: { geo: { point: () => "NULL" } } } as never)
            .where({ id: p.id })
            .callListeners(false)
            .execute(),
      ]) {
        const error = await failure(run);
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as Error).message).toMatch(
          /^Person\.(home\.street|work\.geo\.point) is encrypted: a SQL expression cannot run on ciphertext/,
        );
      }
      const index = await failure(() =>
        people
          .createQueryBuilder()
          .update(Person)
          .set({ home: { zipIndex: () => "NULL" } } as never)
          .where({ id: p.id })
          .callListeners(false)
          .execute(),
      );
      expect((index as Error).message).toMatch(/^Person\.home\.zipIndex is a blind index/);
      expect(await stored(p.id)).toEqual(before);
      // With the values, the move is the documented one: load and save.
      const loaded = await people.findOneByOrFail({ id: p.id });
      loaded.tenantId = "t2";
      await people.save(loaded);
      expect(await lookup({ tenantId: "t2", home: { zip: "12345" } })).toEqual([p.id]);
    });

    test("an upsert with the context column as a conflict path leaves every stored row readable", async () => {
      const p = await people.save(person("ada", "T1"));
      const before = await stored(p.id);
      // The conflict target (tenantId, handle) is no unique key of kms_people: PostgreSQL and
      // SQLite refuse the statement. MariaDB's ON DUPLICATE KEY UPDATE takes the row of the
      // `handle` key, whatever its tenant, and its collation takes "t1" for "T1": the tenant
      // would be overwritten under the values the upsert does not write.
      for (const tenantId of ["t1", "t2"]) {
        const upsert = () =>
          people.upsert({ tenantId, handle: "ada", home: { street: "2 Side St" } } as Person, [
            "tenantId",
            "handle",
          ]);
        const error = await failure(upsert);
        expect(error, tenantId).toBeInstanceOf(Error);
        if (db.kind === "mariadb") {
          expect((error as Error).message).toMatch(
            /^Person\.tenantId is part of the encryption context of Person\.home\.zip, .*: an upsert that changes it/,
          );
        }
        expect(await stored(p.id)).toEqual(before);
      }
      expect(await people.findOneByOrFail({ id: p.id })).toMatchObject({
        tenantId: "T1",
        home: { street: "1 Main St", zip: "12345" },
        work: { street: "9 Dock Rd" },
      });
    });

    test("upsert recomputes an embedded blind index, on conflict and on insert", async () => {
      const p = await people.save(person());
      await people.upsert(Object.assign(person(), { home: address("1 Main St", "11111") }), [
        "handle",
      ]);
      expect(await lookup({ tenantId: "t1", home: { zip: "11111" } })).toEqual([p.id]);
      expect(await lookup({ tenantId: "t1", home: { zip: "12345" } })).toEqual([]);
      await people.upsert(person("bob"), ["handle"]);
      expect((await lookup({ tenantId: "t1", home: { zip: "12345" } })).length).toBe(1);
      expect(await people.count()).toBe(2);
    });

    test("the migration job moves embedded values to a new KMS key, blind indexes included", async () => {
      const a = await people.save(person("ada"));
      const b = await people.save(person("bob", "t2"));
      const newKey = (await kms.createKey()).keyMetadata.keyId;
      const rotated = fieldEncryption({ kms, keyId: newKey, previousKeyIds: [keyId] });
      const rds = await db.connect(rotated, { entities: [Person, Visit] });
      const result = await reencryptEntities(rds, Person, { batchSize: 1 });
      expect(result).toMatchObject({ scanned: 2, reencrypted: 2, conflicts: 0 });
      for (const id of [a.id, b.id]) {
        const raw = await stored(id);
        for (const column of ["homeStreet", "homeZip", "homeGeoPoint", "officeStreet"]) {
          const info = await rotated.inspect(rds, String(raw[column]));
          expect(info.legacy ? "" : info.kmsKeyId, column).toContain(newKey);
        }
      }
      const repo = rds.getRepository(Person);
      expect(await repo.findOneByOrFail({ id: b.id })).toMatchObject({
        home: { street: "1 Main St", zip: "12345", geo: { point: { lat: 1.5, lng: -2 } } },
        work: { street: "9 Dock Rd" },
      });
      const found = await repo.findBy(
        await encryptedWhere(repo, { tenantId: "t2", work: { zip: "67890" } }),
      );
      expect(found.map((p) => p.id)).toEqual([b.id]);
    });

    test("a context name of an embedded column that is not a column of the entity is refused at check()", async () => {
      const e = fieldEncryption({ kms, keyId });
      const other = await db.connect(e, { entities: [Misplaced] });
      const error = await failure(async () => e.check(other));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toBe(
        `Misplaced.place.street: context.fromRow names "country", which is not a column of Misplaced (the context of a column in an embedded class is read from the entity's own columns, not from the embedded object); name a property declared with @Column (or @PrimaryColumn) on Misplaced, not encrypted and not a blind index`,
      );
    });
  });
}
