import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, isKmsError } from "@kms/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, test } from "vitest";
import { retainSqliteHandle, SqliteKeyStore } from "../src/index.ts";

const dir = mkdtempSync(join(tmpdir(), "kms-sqlite-json-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The same damaged values as keystore-postgres's tamper property: the two stores share core's
// parseStoredTags / parseStoredGrants.
const JUNK: Readonly<Record<"tags" | "grants", readonly string[]>> = {
  tags: ["{", "", "null", '"x"', "[1]", "[null]", '[{"tagKey":1,"tagValue":"v"}]', "{}"],
  grants: [
    "{",
    "null",
    '"x"',
    "[1]",
    "{}",
    '[{"grantId":7}]',
    '[{"grantId":"g","granteePrincipal":"p","issuingPrincipal":"p","operations":"Decrypt","createdAt":0}]',
  ],
};

describe("SqliteKeyStore: damaged JSON columns", () => {
  for (const column of ["tags", "grants"] as const) {
    for (const value of JUNK[column]) {
      test(`${column} = ${JSON.stringify(value)} is a KMS error naming the key`, async () => {
        const path = join(dir, `${column}-${randomBytes(6).toString("hex")}.db`);
        const root = randomBytes(32);
        const kms = await createKms({
          store: SqliteKeyStore.open({ path }),
          rootKey: root,
          audit: false,
        });
        const { keyId } = (await kms.createKey()).keyMetadata;
        await kms.close();
        const db = retainSqliteHandle(new Database(path));
        db.prepare(`UPDATE kms_keys SET ${column} = ? WHERE key_id = ?`).run(value, keyId);
        db.close();
        const store = SqliteKeyStore.open({ path });
        try {
          const outcome = await Promise.resolve()
            .then(() => store.getKey(keyId))
            .catch((error: unknown) => error);
          expect(outcome).toBeInstanceOf(Error);
          expect(isKmsError(outcome)).toBe(true);
          expect((outcome as Error).message).toContain(keyId);
        } finally {
          await store.close();
        }
      });
    }
  }
});
