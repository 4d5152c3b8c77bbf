/**
 * Checks every publishable package as it would be published: `pnpm pack` (which applies
 * publishConfig, so exports point at dist/), then publint and arethetypeswrong (ESM-only
 * profile: the packages are ESM) on the tarball. Run after `pnpm build`.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);
const out = mkdtempSync(join(tmpdir(), "kms-packs-"));
let failed = 0;
try {
  for (const dir of readdirSync(join(root, "packages"))) {
    const cwd = join(root, "packages", dir);
    const manifest = JSON.parse(readFileSync(join(cwd, "package.json"), "utf8"));
    if (manifest.private === true) continue;
    const before = new Set(readdirSync(out));
    execFileSync("pnpm", ["pack", "--pack-destination", out], { cwd, stdio: "ignore" });
    const tarball = readdirSync(out).find((f) => !before.has(f));
    if (tarball === undefined) throw new Error(`${manifest.name}: pnpm pack wrote nothing`);
    for (const [tool, args] of [
      ["publint", [join(out, tarball), "--strict"]],
      ["attw", [join(out, tarball), "--profile", "esm-only", "--format", "ascii"]],
    ] as const) {
      try {
        execFileSync(bin(tool), [...args], { cwd, stdio: "pipe" });
        console.log(`ok   ${tool.padEnd(7)} ${manifest.name}`);
      } catch (error) {
        failed += 1;
        const { stdout, stderr } = error as { stdout?: Buffer; stderr?: Buffer };
        console.log(`FAIL ${tool.padEnd(7)} ${manifest.name}\n${stdout ?? ""}${stderr ?? ""}`);
      }
    }
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
if (failed > 0) {
  console.log(`${failed} package check(s) failed`);
  process.exit(1);
}
