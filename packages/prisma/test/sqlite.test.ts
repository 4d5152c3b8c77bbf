import { openSqlite } from "./backends.ts";
import { describeFieldContext } from "./field-context.behaviour.ts";
import { describeFieldEncryption } from "./field-encryption.behaviour.ts";

describeFieldEncryption("SQLite (better-sqlite3)", openSqlite);
describeFieldContext("SQLite (better-sqlite3)", openSqlite);
