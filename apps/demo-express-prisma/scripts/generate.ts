import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Generates the Prisma client for SQLite and for PostgreSQL (same models, one provider each)
 * with Prisma's own CLI, offline: `prisma generate` wants a schema engine binary it does not
 * use for generating, so a stub stands in for the one it would download.
 */
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cli = join(
  dirname(createRequire(import.meta.url).resolve("prisma/package.json")),
  "build",
  "index.js",
);

function generate(provider: "sqlite" | "postgresql", name: string): void {
  const out = join(root, "src", "generated", name);
  const source = readFileSync(join(root, "prisma", "schema.prisma"), "utf8");
  // Regenerate when the schema changed since the last run (the output is not committed).
  const stamp = createHash("sha256").update(source).digest("hex");
  const stampFile = join(out, ".schema-sha256");
  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) return;
  const dir = join(root, "prisma", `generated-${name}`);
  mkdirSync(dir, { recursive: true });
  const schema = source
    .replace('provider = "sqlite"', `provider = "${provider}"`)
    .replace('"../src/generated/sqlite"', `"../../src/generated/${name}"`);
  writeFileSync(join(dir, "schema.prisma"), schema);
  copyFileSync(join(root, "prisma", "prisma.config.ts"), join(dir, "prisma.config.ts"));
  execFileSync(process.execPath, [cli, "generate", "--schema", join(dir, "schema.prisma")], {
    cwd: dir,
    env: {
      ...process.env,
      PRISMA_SCHEMA_ENGINE_BINARY: join(root, "prisma", "schema-engine-stub.sh"),
      CHECKPOINT_DISABLE: "1",
      PRISMA_HIDE_UPDATE_MESSAGE: "1",
    },
    stdio: "pipe",
  });
  writeFileSync(stampFile, stamp);
}

export default function setup(): void {
  generate("sqlite", "sqlite");
  generate("postgresql", "postgres");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) setup();
