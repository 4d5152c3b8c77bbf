import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** What the `kms-prisma-types` generator's output depends on besides the schema. */
export const GENERATOR_SOURCES = [
  "src/generator.ts",
  "src/internal/schema-module.ts",
  "src/schema-descriptor.ts",
];

/**
 * Generates the test client into test/generated (gitignored) with Prisma's own CLI, offline:
 * a stub stands in for the schema engine binary that `prisma generate` does not actually use.
 */
export function generateTestClient(
  schema = join(here, "prisma", "schema.prisma"),
  out = join(here, "generated"),
): void {
  // Regenerate when the schema, or the package's own generator, changed since the last run
  // (the output is not committed).
  const hash = createHash("sha256").update(readFileSync(schema));
  for (const source of GENERATOR_SOURCES) hash.update(readFileSync(join(here, "..", source)));
  const stamp = hash.digest("hex");
  const stampFile = join(out, ".schema-sha256");
  if (
    existsSync(join(out, "client.ts")) &&
    existsSync(stampFile) &&
    readFileSync(stampFile, "utf8") === stamp
  ) {
    return;
  }
  runPrismaGenerate(schema);
  writeFileSync(stampFile, stamp);
}

/**
 * `prisma generate` on `schema` (its folder holds a prisma.config.ts), with Prisma's own CLI,
 * offline: a stub stands in for the schema engine binary that `generate` does not actually use.
 */
export function runPrismaGenerate(schema: string): void {
  const cli = join(here, "..", "node_modules", "prisma", "build", "index.js");
  execFileSync(process.execPath, [cli, "generate", "--schema", schema], {
    cwd: dirname(schema),
    env: {
      ...process.env,
      PRISMA_SCHEMA_ENGINE_BINARY: join(here, "prisma", "schema-engine-stub.sh"),
      CHECKPOINT_DISABLE: "1",
      PRISMA_HIDE_UPDATE_MESSAGE: "1",
    },
    stdio: "pipe",
  });
}

/** The same schema for PostgreSQL, generated into test/generated-pg. */
export function generatePostgresTestClient(): void {
  const dir = join(here, "generated-pg-schema");
  mkdirSync(dir, { recursive: true });
  const text = readFileSync(join(here, "prisma", "schema.prisma"), "utf8")
    .replace('provider = "sqlite"', 'provider = "postgresql"')
    .replace('output              = "../generated"', 'output              = "../generated-pg"');
  writeFileSync(join(dir, "schema.prisma"), text);
  copyFileSync(join(here, "prisma", "prisma.config.ts"), join(dir, "prisma.config.ts"));
  generateTestClient(join(dir, "schema.prisma"), join(here, "generated-pg"));
}

/** The benchmark's client (bench/generated). */
export function generateBenchClient(): void {
  const bench = join(here, "..", "bench");
  generateTestClient(join(bench, "prisma", "schema.prisma"), join(bench, "generated"));
}

export default function setup(): void {
  generateTestClient();
  generatePostgresTestClient();
}

// `node test/generate-client.ts` (the typecheck script) generates every client the package's
// TypeScript imports.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  setup();
  generateBenchClient();
}
