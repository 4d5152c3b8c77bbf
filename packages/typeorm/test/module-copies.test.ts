import { inspect } from "node:util";
import { createKms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import * as typeorm from "typeorm";
import { afterEach, beforeAll, beforeEach, describe, expect, test, vi } from "vitest";
import * as first from "../src/index.ts";
import { typeBinaryColumnPerDriver } from "../src/internal/binary-column-type.ts";
import { failure, openMariadb, openPostgres, openSqlite, type TestDatabase } from "./backends.ts";
import { User } from "./entities.ts";

// Two copies of @kms/typeorm can run against one TypeORM: two versions installed side by side,
// dev-server hot reload, vitest's per-file module isolation. TypeORM's EntityMetadata and query
// builders are wrapped once, by whichever copy comes first; the columns declared through every
// later copy must still get the driver's binary type, and still be guarded.

const postgres = databaseTarget("postgres");
const mariadb = databaseTarget("mariadb");

/** What `load` imports, evaluated afresh: our sources run again, TypeORM (external) stays shared. */
async function secondCopy<T>(load: () => Promise<T>): Promise<T> {
  vi.resetModules();
  return load();
}

describe("a second copy of @kms/typeorm", () => {
  test("registers its bytes columns with the wrapper the first copy installed", async () => {
    const fromFirst = {};
    typeBinaryColumnPerDriver(fromFirst);
    const installed = typeorm.EntityMetadata.prototype.createPropertiesMap;
    const copy = await secondCopy(() => import("../src/internal/binary-column-type.ts"));
    expect(copy.typeBinaryColumnPerDriver).not.toBe(typeBinaryColumnPerDriver);
    const fromSecond = {};
    copy.typeBinaryColumnPerDriver(fromSecond);
    expect(typeorm.EntityMetadata.prototype.createPropertiesMap).toBe(installed);

    const column = (property: string, transformer: object) => ({
      propertyPath: property,
      transformer,
      type: "blob",
      createValueMap: () => ({ [property]: property }),
    });
    const columns = [column("a", fromFirst), column("b", fromSecond), column("c", {})];
    const metadata = {
      dataSource: { driver: { supportedDataTypes: ["text", "bytea"] } },
      columns,
      relations: [],
    };
    const map = installed.call(metadata as unknown as typeorm.EntityMetadata);
    expect(map).toEqual({ a: "a", b: "b", c: "c" });
    expect(columns.map((c) => c.type)).toEqual(["bytea", "bytea", "blob"]);
  });

  describe.skipIf(postgres.skipReason !== undefined)("on PostgreSQL", () => {
    let db: TestDatabase | undefined;
    afterEach(async () => {
      await db?.close();
      db = undefined;
    });

    test("an entity declared through it initializes with a bytea column and round-trips", async () => {
      // The first copy wraps EntityMetadata (User has a bytes column), as an app's own import would.
      expect(first.EncryptedColumn).toBeTypeOf("function");
      expect(User).toBeTypeOf("function");
      const copy = await secondCopy(() => import("../src/index.ts"));
      expect(copy.EncryptedColumn).not.toBe(first.EncryptedColumn);

      @typeorm.Entity("kms_copy_files")
      class CopyFile {
        @typeorm.PrimaryGeneratedColumn()
        id: number;

        @copy.EncryptedColumn({ storage: "bytes" })
        content: Uint8Array;
      }

      const kms = await createKms();
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      const encryption = copy.fieldEncryption({ kms, keyId });
      db = await openPostgres(postgres.url as string);
      const ds = await db.connect(encryption, { entities: [CopyFile] });
      const [type] = await db.raw(
        `SELECT data_type AS t FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?`,
        ["kms_copy_files", "content"],
      );
      expect(type?.t).toBe("bytea");

      const files = ds.getRepository(CopyFile);
      const content = Uint8Array.from(Buffer.from("FILE-CONTENT"));
      const saved = await files.save(Object.assign(new CopyFile(), { content }));
      const [raw] = await db.raw(`SELECT "content" FROM "kms_copy_files" WHERE "id" = ?`, [
        saved.id,
      ]);
      expect(raw?.content).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(raw?.content as Uint8Array).includes("FILE-CONTENT")).toBe(false);
      const loaded = await files.findOneByOrFail({ id: saved.id });
      expect(Buffer.from(loaded.content)).toEqual(Buffer.from(content));
    });
  });
});

/** A statement as TypeORM's logger saw it: before any subscriber's beforeQuery hook. */
interface Logged {
  readonly sql: string;
  readonly parameters: unknown;
}

class RecordingLogger implements typeorm.Logger {
  readonly lines: Logged[] = [];
  logQuery(sql: string, parameters?: unknown[]): void {
    this.lines.push({ sql, parameters });
  }
  logQueryError(_error: string | Error, sql: string, parameters?: unknown[]): void {
    this.lines.push({ sql, parameters });
  }
  logQuerySlow(_time: number, sql: string, parameters?: unknown[]): void {
    this.lines.push({ sql, parameters });
  }
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

/** An entity declared through a second copy, guarded by the query guards of the first. */
async function declareThroughSecondCopy() {
  // The first copy installs the guards (User has encrypted columns), as an app's own import would.
  expect(User).toBeTypeOf("function");
  const guards = [
    typeorm.FindOperator.prototype.transformValue,
    typeorm.InsertQueryBuilder.prototype.orUpdate,
    typeorm.UpdateQueryBuilder.prototype.execute,
  ];
  const copy = await secondCopy(() => import("../src/index.ts"));
  expect(copy.EncryptedColumn).not.toBe(first.EncryptedColumn);

  @typeorm.Entity("kms_copy_accounts")
  class CopyAccount {
    @typeorm.PrimaryGeneratedColumn()
    id: number;

    @typeorm.Column({ type: String, length: 64 })
    tenantId: string;

    @copy.EncryptedColumn({ deterministic: true, unique: true, context: { fromRow: ["tenantId"] } })
    handle: string;

    @copy.EncryptedColumn({
      nullable: true,
      blindIndex: { column: "phoneIndex" },
      context: { fromRow: ["tenantId"] },
    })
    phone: string | null;

    phoneIndex?: string | null;
  }

  expect([
    typeorm.FindOperator.prototype.transformValue,
    typeorm.InsertQueryBuilder.prototype.orUpdate,
    typeorm.UpdateQueryBuilder.prototype.execute,
  ]).toEqual(guards);
  return { copy, CopyAccount };
}

const backends = [
  { name: "SQLite", open: openSqlite, skipReason: undefined },
  { name: "PostgreSQL", open: () => openPostgres(postgres.url as string), ...postgres },
  { name: "MariaDB", open: () => openMariadb(mariadb.url as string), ...mariadb },
];

describe.each(backends)("query guards for entities of a second copy, on $name", (backend) => {
  // "§" is outside base64url: it never turns up inside a ciphertext or an index by chance.
  const SECRET = "§4111 1111 1111 1111§";
  let declared: Awaited<ReturnType<typeof declareThroughSecondCopy>>;
  type CopyAccount = InstanceType<typeof declared.CopyAccount>;
  let db: TestDatabase;
  let logger: RecordingLogger;
  let accounts: typeorm.Repository<CopyAccount>;

  beforeAll(async () => {
    if (backend.skipReason === undefined) declared = await declareThroughSecondCopy();
  });
  beforeEach(async (context) => {
    if (backend.skipReason !== undefined) context.skip(backend.skipReason);
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const encryption = declared.copy.fieldEncryption({ kms, keyId });
    db = await backend.open();
    logger = new RecordingLogger();
    const ds = await db.connect(encryption, { entities: [declared.CopyAccount], logger });
    accounts = ds.getRepository(declared.CopyAccount);
  });
  afterEach(async () => {
    await db?.close();
  });

  const account = (tenantId: string, handle: string, phone: string | null) =>
    Object.assign(new declared.CopyAccount(), { tenantId, handle, phone });
  const byPhone = async (tenantId: string, phone: string) =>
    (await accounts.findBy(await declared.copy.encryptedWhere(accounts, { tenantId, phone }))).map(
      (a) => a.id,
    );

  /** Each attempt must be refused with a ValidationException matching `message`, unlogged. */
  async function expectRefusedBeforeAnyLogLine(
    attempts: Readonly<Record<string, () => Promise<unknown>>>,
    message: RegExp,
  ): Promise<void> {
    const outcomes: Record<string, string> = {};
    for (const [label, run] of Object.entries(attempts)) {
      const before = logger.lines.length;
      const error = await failure(run);
      const lines = logger.lines.slice(before);
      const refused =
        error instanceof Error &&
        (error as { code?: unknown }).code === "ValidationException" &&
        message.test(error.message);
      outcomes[label] = !refused
        ? error === undefined
          ? "answered"
          : inspect(error).slice(0, 200)
        : lines.length === 0
          ? "refused"
          : `refused after ${lines.length} log line(s): ${lines[0]?.sql.slice(0, 80)}`;
      if (error instanceof Error) expect(error.message).not.toContain(SECRET);
      const leaked = lines.filter(
        (l) => l.sql.includes(SECRET) || inspect(l.parameters, { depth: 6 }).includes(SECRET),
      );
      expect(leaked, label).toEqual([]);
    }
    expect(outcomes).toEqual(
      Object.fromEntries(Object.keys(attempts).map((label) => [label, "refused"])),
    );
  }

  test("Raw on an encrypted column or its blind index is refused", async () => {
    await accounts.save(account("t1", "ada", "+1 555 0100"));
    await expectRefusedBeforeAnyLogLine(
      {
        "findBy Raw(fn)": () =>
          accounts.findBy({ handle: typeorm.Raw((a) => `${a} = :v`, { v: SECRET }) }),
        "findBy Raw(sql)": () => accounts.findBy({ phone: typeorm.Raw(`'${SECRET}'`) }),
        "findBy index Raw(sql)": () => accounts.findBy({ phoneIndex: typeorm.Raw(`'${SECRET}'`) }),
        "delete Raw(fn)": () =>
          accounts.delete({ phone: typeorm.Raw((a) => `${a} = :v`, { v: SECRET }) }),
      },
      /^CopyAccount\.(handle|phone) is encrypted: Raw\(\) would send|^CopyAccount\.phoneIndex is the blind index of CopyAccount\.phone: Raw\(\) would send/,
    );
    expect(await accounts.count()).toBe(1);
  });

  test("a plaintext operand is refused while the statement is built, before TypeORM logs it", async () => {
    const a = await accounts.save(account("t1", "ada", "+1 555 0100"));
    await expectRefusedBeforeAnyLogLine(
      {
        "findBy value": () => accounts.findBy({ handle: SECRET }),
        "findBy Like": () => accounts.findBy({ phone: typeorm.Like(`%${SECRET}%`) }),
        "findBy In": () => accounts.findBy({ handle: typeorm.In([SECRET]) }),
        "findBy index value": () => accounts.findBy({ phoneIndex: SECRET }),
        countBy: () => accounts.countBy({ phone: SECRET }),
        "update criteria": () => accounts.update({ handle: SECRET }, { tenantId: "t1" }),
        "delete criteria": () => accounts.delete({ phone: SECRET }),
        "QueryBuilder where(object)": () =>
          accounts.createQueryBuilder("a").where({ handle: SECRET }).getMany(),
        "listener-less insert": () =>
          accounts
            .createQueryBuilder()
            .insert()
            .values({ tenantId: "t1", handle: SECRET })
            .callListeners(false)
            .execute(),
        "listener-less update set": () =>
          accounts
            .createQueryBuilder()
            .update()
            .set({ phone: SECRET })
            .where({ id: a.id })
            .callListeners(false)
            .execute(),
      },
      /^CopyAccount\.(handle|phone) is encrypted: a plaintext value reached a query|^CopyAccount\.phoneIndex is the blind index of CopyAccount\.phone: a value given for it/,
    );
    expect(await accounts.findOneByOrFail({ id: a.id })).toMatchObject({
      handle: "ada",
      phone: "+1 555 0100",
    });
    expect(await accounts.count()).toBe(1);
  });

  test("the first copy's subscriber refuses a stand-in of the second that reaches a query", async () => {
    // A raw query() passes no builder: the subscriber's beforeQuery is the last line.
    const encryption = first.fieldEncryption({ kms: await createKms(), keyId: "unused" });
    const ds = await db.connect(encryption, { entities: [declared.CopyAccount], logger });
    const { UnsealedValue } = await secondCopy(() => import("../src/encrypted-column.ts"));
    const error = await failure(() =>
      ds.query("SELECT 1 AS one", [new UnsealedValue("CopyAccount", "handle")]),
    );
    expect(error).toMatchObject({
      code: "ValidationException",
      message: expect.stringMatching(
        /^CopyAccount\.handle is encrypted: a plaintext value reached a query/,
      ),
    });
  });

  test("upsert overwrites the blind index with its column and refuses to strand values", async () => {
    const a = await accounts.save(account("t1", "ada", "+1 555 0100"));
    await accounts.upsert(account("t1", "ada", "+1 555 0222"), ["handle"]);
    expect((await accounts.findOneByOrFail({ id: a.id })).phone).toBe("+1 555 0222");
    expect(await byPhone("t1", "+1 555 0222")).toEqual([a.id]);
    expect(await byPhone("t1", "+1 555 0100")).toEqual([]);
    await expect(
      accounts.upsert({ id: a.id, tenantId: "t2", handle: "ada" }, ["id"]),
    ).rejects.toThrow(
      /^CopyAccount\.tenantId is part of the encryption context of CopyAccount\.phone: an upsert that changes it/,
    );
    expect(await accounts.count()).toBe(1);
    expect(await accounts.findOneByOrFail({ id: a.id })).toMatchObject({
      tenantId: "t1",
      handle: "ada",
      phone: "+1 555 0222",
    });
  });

  test("an UPDATE that would strand values or run SQL on them is refused", async () => {
    const a = await accounts.save(account("t1", "ada", "+1 555 0100"));
    await expect(accounts.update(a.id, { tenantId: "t2" })).rejects.toThrow(
      /^CopyAccount\.tenantId is part of the encryption context of CopyAccount\.handle, CopyAccount\.phone: an update that changes it must write them too/,
    );
    // Without listeners the subscriber never sees these: the guard alone refuses them.
    const update = () =>
      accounts.createQueryBuilder().update().where({ id: a.id }).callListeners(false);
    expect(
      await failure(() =>
        update()
          .set({ phone: () => "'x'" })
          .execute(),
      ),
    ).toMatchObject({
      message: expect.stringMatching(
        /^CopyAccount\.phone is encrypted: a SQL expression cannot run on ciphertext/,
      ),
    });
    expect(
      await failure(() =>
        update()
          .set({ phoneIndex: () => "'x'" })
          .execute(),
      ),
    ).toMatchObject({
      message: expect.stringMatching(
        /^CopyAccount\.phoneIndex is a blind index: it is computed, not written/,
      ),
    });
    expect(await accounts.findOneByOrFail({ id: a.id })).toMatchObject({
      tenantId: "t1",
      handle: "ada",
      phone: "+1 555 0100",
    });
    expect(await byPhone("t1", "+1 555 0100")).toEqual([a.id]);
  });
});
