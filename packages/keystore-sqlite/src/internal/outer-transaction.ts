import { KmsInternalError } from "@kms/core";
import type Database from "better-sqlite3";

/**
 * Refuses to write on a shared connection inside a transaction its owner began. better-sqlite3
 * would run the write in a savepoint instead: no write lock up front, and a write that is
 * acknowledged, then vanishes when that transaction rolls back.
 * @throws KmsInternalError naming `label` and `owner` ("key store", "audit sink").
 */
export function refuseOuterTransaction(db: Database.Database, label: string, owner: string): void {
  if (db.inTransaction) {
    throw new KmsInternalError(
      `${label}: the database connection is inside a transaction the ${owner} did not start; a write there would commit or roll back with it, so the ${owner} does not write`,
    );
  }
}
