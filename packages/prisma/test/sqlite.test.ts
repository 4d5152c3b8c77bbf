import { openSqlite } from "./backends.ts";
import { describeFieldEncryption } from "./field-encryption.behaviour.ts";

describeFieldEncryption("SQLite (better-sqlite3)", openSqlite);
