/**
 * Command lines that name something that is not there are usage errors (exit 2, nothing done):
 * an `--out` with a trailing slash, which names a directory (resolving the path dropped the slash
 * and wrote a file of that name), and `kms help <unknown>` (exit 0 with the global usage before).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
let keyId: string;

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  writeFileSync(join(ws.dir, "p"), "secret\n");
  const sealed = await run(["encrypt", "--key", keyId, "--in", "p", "--out", "p.kms"], opts);
  expect(sealed.code).toBe(0);
});
afterAll(() => ws.dispose());

describe("--out with a trailing slash", () => {
  it("naming nothing: exit 2, no file made (regression: `--out backups/` wrote a file `backups`)", async () => {
    const result = await run(["encrypt", "--key", keyId, "--in", "p", "--out", "backups/"], opts);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(
      /^kms: encrypt: --out backups\/ ends in a slash, which names a directory: --out names the file to write\n\nUsage: kms encrypt /,
    );
    expect(existsSync(join(ws.dir, "backups"))).toBe(false);
  });

  it("naming a file, even with --force: exit 2, the file untouched (regression: replaced)", async () => {
    writeFileSync(join(ws.dir, "notes"), "old\n");
    const result = await run(["decrypt", "--in", "p.kms", "--out", "notes/", "--force"], opts);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(/^kms: decrypt: --out notes\/ ends in a slash, /);
    expect(readFileSync(join(ws.dir, "notes"), "utf8")).toBe("old\n");
  });

  it("naming a directory: exit 2, an output must be a file", async () => {
    mkdirSync(join(ws.dir, "dir"));
    const result = await run(["decrypt", "--in", "p.kms", "--out", "dir/"], opts);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(
      /^kms: decrypt: --out dir\/ is a directory: --out names the file to write\n/,
    );
    expect(readdirSync(join(ws.dir, "dir"))).toEqual([]);
  });

  it("without it, a path through a directory works as before", async () => {
    const result = await run(["decrypt", "--in", "p.kms", "--out", "dir/p"], opts);
    expect(result.code).toBe(0);
    expect(readFileSync(join(ws.dir, "dir", "p"), "utf8")).toBe("secret\n");
  });
});

describe("kms help <topic>", () => {
  it.each([
    [["help", "bogus"], 'kms: help: unknown command "bogus"\n\nUsage: kms <command> [options]'],
    [["help", "toString"], 'kms: help: unknown command "toString"\n\nUsage: kms <command>'],
    [["help", "audit", "bogus"], 'kms: audit: unknown subcommand "bogus"\n\nUsage: kms audit'],
  ])(
    "%j: exit 2, as an unknown command is everywhere else (regression: exit 0)",
    async (argv, err) => {
      const result = await run(argv, { cwd: ws.dir });
      expect(result.code).toBe(2);
      expect(result.out).toBe("");
      expect(result.err.startsWith(err)).toBe(true);
    },
  );

  it.each([
    [["help"]],
    [["help", "decrypt"]],
    [["help", "audit"]],
    [["help", "audit", "list"]],
    [["help", "help"]],
    [["help", "--help"]],
    [["--help"]],
  ])("%j: the usage on stdout, exit 0", async (argv) => {
    const result = await run(argv, { cwd: ws.dir });
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/^Usage: kms /);
    expect(result.err).toBe("");
  });

  it("an own-property name of Object.prototype is an unknown command, exit 2 (regression: a TypeError, exit 1)", async () => {
    for (const name of ["toString", "constructor", "__proto__"]) {
      const result = await run([name], { cwd: ws.dir });
      expect(result.code, name).toBe(2);
      expect(result.err.startsWith(`kms: unknown command "${name}"\n`), name).toBe(true);
    }
  });
});
