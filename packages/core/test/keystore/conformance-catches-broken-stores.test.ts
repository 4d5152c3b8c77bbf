/**
 * The key-store conformance suite must fail every store in broken-key-stores.ts, each on the
 * case written for the promise it breaks; a broken store that passes is a promise the suite
 * does not check, and every store built on the suite would then be free to break it.
 *
 * Runs broken-key-stores.suite.ts in a child vitest (its cases are meant to fail) and reads
 * the JSON report.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokenKeyStores } from "./broken-key-stores.ts";

interface Report {
  readonly testResults: readonly {
    readonly assertionResults: readonly {
      readonly ancestorTitles: readonly string[];
      readonly title: string;
      readonly status: string;
    }[];
  }[];
}

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const vitestBin = join(
  dirname(createRequire(import.meta.url).resolve("vitest/package.json")),
  "vitest.mjs",
);

let outDir: string;
/** Failed case titles per broken store. */
const failed = new Map<string, string[]>();

beforeAll(async () => {
  outDir = await mkdtemp(join(tmpdir(), "kms-broken-stores-"));
  const outputFile = join(outDir, "report.json");
  await new Promise<void>((resolve) => {
    execFile(
      process.execPath,
      [
        vitestBin,
        "run",
        "--config",
        "test/keystore/broken-key-stores.vitest.config.ts",
        "--reporter=json",
        `--outputFile=${outputFile}`,
      ],
      { cwd: packageDir, timeout: 120_000 },
      // The child fails by design; the report says how.
      () => resolve(),
    );
  });
  const report = JSON.parse(await readFile(outputFile, "utf8")) as Report;
  for (const file of report.testResults) {
    for (const test of file.assertionResults) {
      const suite = test.ancestorTitles.find((t) => t.startsWith("KeyStore conformance: "));
      if (suite === undefined) continue;
      const store = suite.slice("KeyStore conformance: ".length);
      const list = failed.get(store) ?? [];
      if (test.status === "failed") list.push(test.title);
      failed.set(store, list);
    }
  }
}, 150_000);

afterAll(async () => {
  await rm(outDir, { recursive: true, force: true });
});

describe("the key-store conformance suite fails every broken store", () => {
  it.each(brokenKeyStores)("$name (breaks: $breaks)", ({ name, caughtBy }) => {
    expect(failed.has(name), `${name} was not run`).toBe(true);
    expect(failed.get(name)).toContain(caughtBy);
  });
});
