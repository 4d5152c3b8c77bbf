import { databaseTarget } from "@kms/tooling/databases";
import { openMariadb } from "./backends.ts";
import { describeEncryptedColumns } from "./encrypted-columns.behaviour.ts";
import { describeQueryPaths } from "./query-paths.behaviour.ts";

const { url, skipReason } = databaseTarget("mariadb");

describeEncryptedColumns("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeQueryPaths("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
