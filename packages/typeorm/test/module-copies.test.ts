import { createKms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import * as typeorm from "typeorm";
import { afterEach, describe, expect, test, vi } from "vitest";
import * as first from "../src/index.ts";
import { typeBinaryColumnPerDriver } from "../src/internal/binary-column-type.ts";
import { openPostgres, type TestDatabase } from "./backends.ts";
import { User } from "./entities.ts";

// Two copies of @kms/typeorm can run against one TypeORM: two versions installed side by side,
// dev-server hot reload, vitest's per-file module isolation. TypeORM's EntityMetadata is wrapped
// once, by whichever copy comes first; the columns declared through every later copy must still
// get the driver's binary type.

const { url, skipReason } = databaseTarget("postgres");

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

  describe.skipIf(skipReason !== undefined)("on PostgreSQL", () => {
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
      db = await openPostgres(url as string);
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
