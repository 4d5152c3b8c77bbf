import { databaseTarget } from "@kms/tooling/databases";
import { openMariadb } from "./backends.ts";
import { describeEncryptedColumns } from "./encrypted-columns.behaviour.ts";

const { url, skipReason } = databaseTarget("mariadb");

describeEncryptedColumns("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
