import { openSqlite } from "./backends.ts";
import { describeEncryptedColumns } from "./encrypted-columns.behaviour.ts";

describeEncryptedColumns("SQLite (better-sqlite3)", openSqlite);
