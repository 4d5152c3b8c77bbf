import { vitestPreset } from "@kms/tooling/vitest-preset";
import { defineConfig } from "vitest/config";

// Forks, not threads: better-sqlite3 12's native handles must stay in one process per file
// (see retainSqliteStatements in @kms/keystore-sqlite).
export default defineConfig(vitestPreset("demo-nest-typeorm", { pool: "forks" }));
