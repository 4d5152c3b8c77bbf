import { databaseTarget } from "@kms/tooling/databases";
import { describe } from "vitest";
import { describeAdversarial } from "./adversarial.behaviour.ts";
import { postgresBackend } from "./backends.ts";
import { describeDemo } from "./demo.behaviour.ts";

const { url, skipReason } = databaseTarget("postgres");

describe.skipIf(skipReason !== undefined)("PostgreSQL", () => {
  describeDemo("demo-nest-typeorm on PostgreSQL", () => postgresBackend(url as string));
  describeAdversarial("demo-nest-typeorm under attack on PostgreSQL", () =>
    postgresBackend(url as string),
  );
});
