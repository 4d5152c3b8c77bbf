/**
 * Prints the patients table as the database driver sees it, around TypeORM and the KMS: what an
 * attacker with a copy of the database (or a backup) would read. Run after a few requests:
 * `pnpm --filter @kms/demo-nest-typeorm stored`.
 */
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";

const SQL =
  'SELECT "recordId", "tenantId", ssn, "nameIndex", name, note, vitals, identity FROM patients ORDER BY id';

async function rows(): Promise<Record<string, unknown>[]> {
  const url = process.env.DATABASE_URL;
  if (url) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query(SQL)).rows;
    } finally {
      await client.end();
    }
  }
  const file = join(resolve(process.env.DEMO_DATA_DIR ?? ".data"), "records.db");
  const db = new Database(file, { readonly: true, fileMustExist: true });
  const result = db.prepare(SQL).all() as Record<string, unknown>[];
  db.close();
  return result;
}

for (const row of await rows()) {
  // recordId: the patient's id in the API.
  console.log(`patient ${row.recordId} (${row.tenantId})`);
  for (const column of ["ssn", "nameIndex", "name", "note", "vitals", "identity"]) {
    console.log(`  ${column.padEnd(9)} ${String(row[column])}`);
  }
}
