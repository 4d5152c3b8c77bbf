import { databaseTarget } from "@kms/tooling/databases";
import { openMariadb } from "./backends.ts";
import { describeContextColumns } from "./context-columns.behaviour.ts";
import { describeContextValues } from "./context-values.behaviour.ts";
import { describeContextWrites } from "./context-writes.behaviour.ts";
import { describeDataKeyConnections } from "./data-key-connections.behaviour.ts";
import { describeDataSourceSetup } from "./data-source-setup.behaviour.ts";
import { describeEmbeddedColumns } from "./embedded-columns.behaviour.ts";
import { describeEncryptedColumns } from "./encrypted-columns.behaviour.ts";
import { describePartialSelect } from "./partial-select.behaviour.ts";
import { describeQueryPaths } from "./query-paths.behaviour.ts";
import { describeReencryptEntities } from "./reencrypt-entities.behaviour.ts";
import { describeRelationContext } from "./relation-context.behaviour.ts";
import { describeRowIdentity } from "./row-identity.behaviour.ts";

const { url, skipReason } = databaseTarget("mariadb");

describeEncryptedColumns("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeQueryPaths("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeRowIdentity("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeContextColumns("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describePartialSelect("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeEmbeddedColumns("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeDataSourceSetup("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeContextValues("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeReencryptEntities("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeDataKeyConnections("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeContextWrites("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
describeRelationContext("MariaDB (mysql2)", () => openMariadb(url as string), skipReason);
