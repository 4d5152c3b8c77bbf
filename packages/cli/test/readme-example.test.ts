// The README's Example, its command lines read from the README and run through runCli (in a
// temporary directory, with the key id the first command printed, and stdin/stdout standing in
// for the pg_dump/psql pipe), so the documentation cannot rot.
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { EXIT_OK } from "../src/index.ts";
import { run, workspace } from "./helpers.ts";

const ws = workspace();
const opts = { cwd: ws.dir, env: ws.env };
afterAll(() => ws.dispose());

/** One `kms` command of the README's Example, split as the shell splits it. */
interface ReadmeCommand {
  readonly argv: string[];
  /** `producer | kms …`: stdin is the producer's output. */
  readonly piped: boolean;
  /** `kms … > file`: stdout goes to that file. */
  readonly redirect: string | undefined;
}

/**
 * The `kms` lines of the README's Example, read from the README itself, so that the test runs
 * what the README says and fails when the two drift apart: a renamed flag, a command dropped.
 */
function readmeCommands(): ReadmeCommand[] {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const block = /^## Example\n\n```sh\n([\s\S]*?)^```$/m.exec(readme)?.[1];
  if (block === undefined) throw new Error("the README has no ## Example sh block");
  const commands: ReadmeCommand[] = [];
  for (const line of block.split("\n")) {
    const code = line.replace(/\s+#\s.*$/, "").trim();
    if (code === "" || code.startsWith("export ")) continue;
    const stages = code.split("|").map((stage) => stage.trim());
    const at = stages.findIndex((stage) => stage.startsWith("kms "));
    if (at < 0) throw new Error(`not a kms command: ${line}`);
    const [command = "", redirect] = (stages[at] as string).split(/\s*>\s*/);
    const argv = [...command.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => (m[1] ?? m[2]) as string);
    commands.push({ argv: argv.slice(1), piped: at > 0, redirect });
  }
  return commands;
}

it("runs the README's Example as written: a key and alias, a file and a pipe under a context", async () => {
  const commands = readmeCommands();
  expect(commands.map((c) => c.argv[0])).toEqual([
    "init",
    "create-key",
    "create-alias",
    "encrypt",
    "decrypt",
    "encrypt",
    "decrypt",
  ]);
  const [init, createKey, createAlias, encrypt, decrypt, encryptPipe, decryptPipe] = commands as [
    ReadmeCommand,
    ReadmeCommand,
    ReadmeCommand,
    ReadmeCommand,
    ReadmeCommand,
    ReadmeCommand,
    ReadmeCommand,
  ];

  // Every command but init refuses a data dir without a key store: init comes first.
  const initialized = await run(init.argv, opts);
  expect(initialized.code, initialized.err).toBe(EXIT_OK);
  const created = await run(createKey.argv, opts);
  expect(created.code, created.err).toBe(EXIT_OK);
  const key = JSON.parse(created.out) as { keyId: string; description: string };
  expect(key.description).toBe("backups");

  // The README's key id is a placeholder ("1234abcd-…"): the one just printed stands in for it.
  const alias = createAlias.argv.map((arg) => (arg.endsWith("-…") ? key.keyId : arg));
  expect(alias).toContain(key.keyId);
  expect((await run(alias, opts)).code).toBe(EXIT_OK);

  const dump = randomBytes(200_000);
  writeFileSync(join(ws.dir, "db.dump"), dump);
  const encrypted = await run(encrypt.argv, opts);
  expect(encrypted.code, encrypted.err).toBe(EXIT_OK);
  expect(JSON.parse(encrypted.out)).toMatchObject({ plaintextBytes: dump.length });
  rmSync(join(ws.dir, "db.dump"));

  const decrypted = await run(decrypt.argv, opts);
  expect(decrypted.code, decrypted.err).toBe(EXIT_OK);
  expect(JSON.parse(decrypted.out)).toMatchObject({ encryptionContext: { purpose: "backup" } });
  expect(readFileSync(join(ws.dir, "db.dump")).equals(dump)).toBe(true);

  // stdin and stdout stand in for pg_dump and psql.
  expect([encryptPipe.piped, encryptPipe.redirect, decryptPipe.redirect]).toEqual([
    true,
    "app.sql.kms",
    undefined,
  ]);
  const sql = new TextEncoder().encode("CREATE TABLE t (id int);\n");
  const sealed = await run(encryptPipe.argv, { ...opts, stdin: sql });
  expect(sealed.code, sealed.err).toBe(EXIT_OK);
  writeFileSync(join(ws.dir, encryptPipe.redirect as string), sealed.stdout);
  const opened = await run(decryptPipe.argv, opts);
  expect(opened.code, opened.err).toBe(EXIT_OK);
  expect(opened.out).toBe("CREATE TABLE t (id int);\n");
});

it("refuses to decrypt under another context", async () => {
  const wrong = await run(
    "decrypt --in db.dump.kms --out other --context purpose=restore".split(" "),
    opts,
  );
  expect(wrong.code).toBe(1);
  expect(wrong.err).toMatch(/^InvalidCiphertextException: /);
});
