import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";
import { retain } from "../src/internal/retain.ts";
import { makeKey, next } from "./fixtures/keys.ts";

/**
 * Someone who can write the file, without the root key, edits the triggers that count the
 * key-store writes (kms_store_changes). Every case must leave a process that has a key cached
 * seeing another process disable it on its next read, as with the triggers intact.
 */
const TAMPERS: readonly (readonly [string, string])[] = [
  [
    "the counting triggers dropped",
    ["kms_keys", "kms_key_versions", "kms_aliases"]
      .flatMap((t) => ["insert", "update", "delete"].map((e) => `DROP TRIGGER ${t}_${e}_counted;`))
      .join(" "),
  ],
  [
    "a trigger of the same name that counts nothing",
    `DROP TRIGGER kms_keys_update_counted;
     CREATE TRIGGER kms_keys_update_counted AFTER UPDATE ON kms_keys BEGIN SELECT 1; END;`,
  ],
  [
    "another trigger that sets the counter back",
    `CREATE TRIGGER undo AFTER UPDATE ON KMS_STORE_CHANGES
     BEGIN UPDATE kms_store_changes SET counter = OLD.counter; END;`,
  ],
];

describe("SqliteKeyStore cache when the change counter's triggers were tampered with", () => {
  let dir: string;
  let path: string;
  const toClose: { close(): unknown }[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-triggers-"));
    path = join(dir, "keys.db");
  });
  afterEach(async () => {
    for (const c of toClose.splice(0).reverse()) await c.close();
    await rm(dir, { recursive: true, force: true });
  });

  function open(): SqliteKeyStore {
    const store = SqliteKeyStore.open({ path });
    toClose.push(store);
    return store;
  }

  function tamper(sql: string): void {
    // Retained for the reason in retain.ts.
    const attacker = retain(new Database(path));
    attacker.exec(sql);
    attacker.close();
  }

  describe.each(TAMPERS)("%s", (_, sql) => {
    it("after the reader opened: another process's disable is seen on the next read", async () => {
      const reader = open();
      const writer = open();
      await writer.createKey(makeKey("k-1"));
      expect((await reader.getKey("k-1"))?.keyState).toBe("Enabled"); // now cached
      tamper(sql);
      await writer.updateKey(next((await writer.getKey("k-1"))!, { keyState: "Disabled" }));
      expect((await reader.getKey("k-1"))?.keyState).toBe("Disabled");
    });

    it("before the reader opened: likewise", async () => {
      await open().createKey(makeKey("k-1"));
      tamper(sql);
      const reader = open();
      const writer = open();
      expect((await reader.getKey("k-1"))?.keyState).toBe("Enabled"); // now cached
      await writer.updateKey(next((await writer.getKey("k-1"))!, { keyState: "Disabled" }));
      expect((await reader.getKey("k-1"))?.keyState).toBe("Disabled");
    });
  });

  it("keeps its cache across other commits while the triggers are intact, also after an unrelated schema change", async () => {
    const reader = open();
    const writer = open();
    await writer.createKey(makeKey("k-1"));
    const cached = await reader.getKey("k-1");
    const app = retain(new Database(path));
    toClose.push(app);
    app.exec("CREATE TABLE app_orders (id INTEGER PRIMARY KEY)");
    app.exec("CREATE TRIGGER app_orders_audit AFTER INSERT ON app_orders BEGIN SELECT NEW.id; END");
    for (let i = 0; i < 3; i++) {
      app.exec("INSERT INTO app_orders DEFAULT VALUES");
      expect(await reader.getKey("k-1")).toBe(cached);
    }
  });
});
