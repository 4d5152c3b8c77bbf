import { openSqlite } from "./backends.ts";
import { describeContextColumns } from "./context-columns.behaviour.ts";
import { describeDataSourceSetup } from "./data-source-setup.behaviour.ts";
import { describeEmbeddedColumns } from "./embedded-columns.behaviour.ts";
import { describeEncryptedColumns } from "./encrypted-columns.behaviour.ts";
import { describePartialSelect } from "./partial-select.behaviour.ts";
import { describeQueryPaths } from "./query-paths.behaviour.ts";
import { describeRowIdentity } from "./row-identity.behaviour.ts";

describeEncryptedColumns("SQLite (better-sqlite3)", openSqlite);
describeQueryPaths("SQLite (better-sqlite3)", openSqlite);
describeRowIdentity("SQLite (better-sqlite3)", openSqlite);
describeContextColumns("SQLite (better-sqlite3)", openSqlite);
describePartialSelect("SQLite (better-sqlite3)", openSqlite);
describeEmbeddedColumns("SQLite (better-sqlite3)", openSqlite);
describeDataSourceSetup("SQLite (better-sqlite3)", openSqlite);
