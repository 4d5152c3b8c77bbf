import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";
import { initializedWorkspace, plaintext } from "./helpers.ts";

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(
  packageDir,
  (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { bin: { kms: string } })
    .bin.kms,
);
const ws = await initializedWorkspace();
afterAll(() => ws.dispose());

function kms(
  args: string[],
  input?: Buffer,
): { status: number | null; stdout: Buffer; stderr: string } {
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: ws.dir,
    env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
    ...(input === undefined ? {} : { input }),
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString("utf8") };
}

it("the bin creates a key, encrypts and decrypts a file and a pipe", () => {
  const created = kms(["create-key", "--description", "from the bin"]);
  expect(created.stderr).toBe("");
  expect(created.status).toBe(0);
  const { keyId } = JSON.parse(created.stdout.toString("utf8")) as { keyId: string };

  const data = plaintext(200_000);
  writeFileSync(join(ws.dir, "data"), data);
  const enc = kms([
    "encrypt",
    "--key",
    keyId,
    "--in",
    "data",
    "--out",
    "data.kms",
    "--context",
    "app=bin",
  ]);
  expect(enc.status).toBe(0);
  const dec = kms(["decrypt", "--in", "data.kms", "--out", "data.out", "--context", "app=bin"]);
  expect(dec.status).toBe(0);
  expect(readFileSync(join(ws.dir, "data.out")).equals(data)).toBe(true);

  const piped = kms(["decrypt", "--in", "-", "--out", "-"], readFileSync(join(ws.dir, "data.kms")));
  expect(piped.status).toBe(0);
  expect(piped.stdout.equals(data)).toBe(true);

  const wrong = kms([
    "decrypt",
    "--in",
    "data.kms",
    "--out",
    "wrong.out",
    "--context",
    "app=other",
  ]);
  expect(wrong.status).toBe(1);
  expect(wrong.stderr).toMatch(/^InvalidCiphertextException: /);

  const usage = kms(["encrypt", "--bogus"]);
  expect(usage.status).toBe(2);
  expect(usage.stderr).toContain("Usage: kms encrypt");
}, 120_000); // five spawns of a cold node process: slow on a loaded machine
