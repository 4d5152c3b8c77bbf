import { databaseTarget } from "@kms/tooling/databases";
import { openPostgres } from "./backends.ts";
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

const { url, skipReason } = databaseTarget("postgres");

describeEncryptedColumns("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeQueryPaths("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeRowIdentity("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeContextColumns("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describePartialSelect("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeEmbeddedColumns("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeDataSourceSetup("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeContextValues("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeReencryptEntities("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeDataKeyConnections("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeContextWrites("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeRelationContext("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
