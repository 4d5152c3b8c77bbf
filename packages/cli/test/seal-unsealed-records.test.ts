import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { initializedWorkspace, type RunResult, run, type workspace } from "./helpers.ts";

let ws: ReturnType<typeof workspace>;
beforeEach(async () => {
  ws = await initializedWorkspace();
});
afterEach(() => ws.dispose());

function kms(argv: readonly string[]): Promise<RunResult> {
  return run(argv, { cwd: ws.dir, env: ws.env });
}

function database(): DatabaseSync {
  return new DatabaseSync(join(ws.dir, ".kms", "kms.db"));
}

/**
 * Turns the data dir into what a release without record seals left behind: its key store at
 * schema version 2, whose tables have no seal columns. Opening it again migrates the schema and
 * finds every record unsealed.
 */
function makeDataDirOld(): void {
  const db = database();
  try {
    const triggers = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'kms_%'")
      .all() as { name: string }[];
    for (const { name } of triggers) db.exec(`DROP TRIGGER ${name}`);
    db.exec(`
      DROP TABLE kms_store_changes;
      ALTER TABLE kms_keys DROP COLUMN seal;
      ALTER TABLE kms_aliases DROP COLUMN seal;
      PRAGMA user_version = 2;
    `);
  } finally {
    db.close();
  }
}

/** A key with an alias and a file encrypted under it, as a user of the old release had. */
async function populate(): Promise<{ keyId: string }> {
  const created = await kms(["create-key", "--description", "orders"]);
  expect(created.code).toBe(0);
  const { keyId } = JSON.parse(created.out) as { keyId: string };
  expect((await kms(["create-alias", "alias/orders", keyId])).code).toBe(0);
  writeFileSync(join(ws.dir, "plain.txt"), "order 42");
  const encrypted = await kms([
    "encrypt",
    "--key",
    "alias/orders",
    "--in",
    "plain.txt",
    "--out",
    "cipher.bin",
  ]);
  expect(encrypted.code).toBe(0);
  return { keyId };
}

describe("kms seal-unsealed-records: upgrading a data dir from a release without record seals", () => {
  it("refuses every command on an old data dir, naming the command to run, and works after it", async () => {
    const { keyId } = await populate();
    makeDataDirOld();
    const dataDir = join(ws.dir, ".kms");

    for (const argv of [
      ["list-keys"],
      ["describe-key", "alias/orders"],
      ["decrypt", "--in", "cipher.bin", "--out", "refused.txt"],
    ]) {
      const refused = await kms(argv);
      expect(refused.code, argv[0]).toBe(1);
      expect(refused.out).toBe("");
      expect(refused.err).toMatch(/^RootKeyError: .*without a record seal/);
      expect(refused.err).toContain(
        `run "kms seal-unsealed-records --data-dir ${dataDir}" once with the same root key`,
      );
      expect(refused.err).toContain("must not be sealed");
      // One line for the failure, one for the hint: scripts read stderr line by line.
      expect(refused.err.trimEnd().split("\n")).toHaveLength(2);
    }

    const sealed = await kms(["seal-unsealed-records"]);
    expect(sealed.err).toBe("");
    expect(sealed.code).toBe(0);
    expect(JSON.parse(sealed.out)).toStrictEqual({
      dataDir,
      database: join(dataDir, "kms.db"),
      verified: { keys: 1, aliases: 1 },
    });

    const db = database();
    try {
      const unsealed = db
        .prepare(
          `SELECT (SELECT count(*) FROM kms_keys WHERE seal IS NULL) +
                  (SELECT count(*) FROM kms_aliases WHERE seal IS NULL) AS n`,
        )
        .get() as { n: number };
      expect(unsealed.n).toBe(0);
      // Each sealing is audited: it is the moment the store's records were taken on trust.
      const events = db.prepare("SELECT event FROM kms_audit_events ORDER BY sequence").all() as {
        event: string;
      }[];
      const sealings = events
        .map((e) => JSON.parse(e.event) as { eventName: string; requestParameters: unknown })
        .filter((e) => e.eventName === "SealRecord")
        .map((e) => e.requestParameters);
      expect(sealings).toStrictEqual([
        { keyId },
        { aliasName: "alias/orders", targetKeyId: keyId },
      ]);
    } finally {
      db.close();
    }

    const listed = await kms(["list-keys"]);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.out).keys).toMatchObject([{ keyId, aliases: ["alias/orders"] }]);
    const decrypted = await kms(["decrypt", "--in", "cipher.bin", "--out", "back.txt"]);
    expect(decrypted.code).toBe(0);
    expect(readFileSync(join(ws.dir, "back.txt"), "utf8")).toBe("order 42");

    // Running it again changes nothing and still verifies every record.
    const again = await kms(["seal-unsealed-records"]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.out).verified).toStrictEqual({ keys: 1, aliases: 1 });
  });

  it("does not bless a sealed record that was edited: it fails, without the upgrade hint", async () => {
    const { keyId } = await populate();
    const db = database();
    try {
      db.prepare("UPDATE kms_keys SET description = 'edited' WHERE key_id = ?").run(keyId);
    } finally {
      db.close();
    }
    for (const argv of [["seal-unsealed-records"], ["list-keys"]]) {
      const refused = await kms(argv);
      expect(refused.code, argv[0]).toBe(1);
      expect(refused.out).toBe("");
      expect(refused.err).toMatch(/^RootKeyError: .*does not match its record seal/);
      expect(refused.err).not.toContain("seal-unsealed-records");
    }
  });

  it("quotes a data dir that is not one shell word in the hint", async () => {
    const dataDir = join(ws.dir, "it's data");
    expect((await kms(["--data-dir", dataDir, "init"])).code).toBe(0);
    expect((await kms(["--data-dir", dataDir, "create-key"])).code).toBe(0);
    const db = new DatabaseSync(join(dataDir, "kms.db"));
    try {
      db.exec("UPDATE kms_keys SET seal = NULL");
    } finally {
      db.close();
    }
    const refused = await kms(["--data-dir", dataDir, "list-keys"]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(
      `--data-dir '${dataDir.replace("'", "'\\''")}'" once with the same root key`,
    );
    const sealed = await kms(["--data-dir", dataDir, "seal-unsealed-records"]);
    expect(sealed.code).toBe(0);
    expect(JSON.parse(sealed.out).verified).toStrictEqual({ keys: 1, aliases: 0 });
  });

  it("takes no arguments and no options of its own (exit 2)", async () => {
    for (const argv of [
      ["seal-unsealed-records", "everything"],
      ["seal-unsealed-records", "--force"],
      ["--seal-unsealed-records", "list-keys"],
    ]) {
      const result = await kms(argv);
      expect(result.code, argv.join(" ")).toBe(2);
      expect(result.err).toMatch(/^kms: .+\n\nUsage: kms /);
    }
    const help = await kms(["seal-unsealed-records", "--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^Usage: kms seal-unsealed-records\n/);
  });
});
