import { openSqlite } from "./backends.ts";
import { describeContextTypes } from "./context-types.behaviour.ts";
import { describeFieldContext } from "./field-context.behaviour.ts";
import { describeFieldEncryption } from "./field-encryption.behaviour.ts";
import { describeQueryForms } from "./query-forms.behaviour.ts";
import { describeReencryptReach } from "./reencrypt-reach.behaviour.ts";
import { describeScopeExclusions } from "./scope-exclusions.behaviour.ts";

describeFieldEncryption("SQLite (better-sqlite3)", openSqlite);
describeFieldContext("SQLite (better-sqlite3)", openSqlite);
describeReencryptReach("SQLite (better-sqlite3)", openSqlite);
describeScopeExclusions("SQLite (better-sqlite3)", openSqlite);
describeContextTypes("SQLite (better-sqlite3)", openSqlite);
describeQueryForms("SQLite (better-sqlite3)", openSqlite);
