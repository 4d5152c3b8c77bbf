import { databaseTarget } from "@kms/tooling/databases";
import { openPostgres } from "./backends.ts";
import { describeFieldContext } from "./field-context.behaviour.ts";
import { describeFieldEncryption } from "./field-encryption.behaviour.ts";

const { url, skipReason } = databaseTarget("postgres");

describeFieldEncryption("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
describeFieldContext("PostgreSQL (pg)", () => openPostgres(url as string), skipReason);
