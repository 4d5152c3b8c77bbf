/**
 * The usage text against the README's command table: a flag the README documents for a command
 * is in that command's usage line (regression: `kms help put-key-policy` left out
 * `--bypass-policy-lockout-safety-check`), which a usage error prints as well.
 */
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { run, workspace } from "./helpers.ts";

const ws = workspace();
afterAll(() => ws.dispose());

const FLAG = /--[a-z][a-z0-9-]*/g;

/** `audit list` of `kms audit list [--key …]`: the words before the first argument or option. */
function commandName(synopsis: string): string {
  const name: string[] = [];
  for (const word of synopsis.split(" ").slice(1)) {
    if (!/^[a-z]/.test(word)) break;
    name.push(word);
  }
  return name.join(" ");
}

/** Each command the README's table documents (`kms <name> …` in a row's first cell), with its flags. */
function documentedCommands(): Map<string, Set<string>> {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const commands = new Map<string, Set<string>>();
  for (const row of readme.split("\n").filter((line) => line.startsWith("| `kms "))) {
    // Cells are split at a `|` the README does not escape: `<file\|->` is inside one.
    const firstCell = row.split(/(?<!\\)\|/)[1] ?? "";
    for (const [, span] of firstCell.matchAll(/`(kms [^`]*)`/g)) {
      const synopsis = (span as string).replaceAll("\\|", "|");
      const name = commandName(synopsis);
      const flags = commands.get(name) ?? new Set<string>();
      for (const [flag] of synopsis.matchAll(FLAG)) flags.add(flag);
      commands.set(name, flags);
    }
  }
  return commands;
}

async function usageLine(command: string): Promise<string> {
  const help = await run(["help", ...command.split(" ")], { cwd: ws.dir, env: ws.env });
  expect(help.code, command).toBe(0);
  const line = help.out.split("\n")[0] as string;
  expect(line.startsWith(`Usage: kms ${command}`), line).toBe(true);
  return line;
}

describe("the usage text and the README's command table", () => {
  const documented = documentedCommands();

  it("the table is read: every command the usage text lists is in it", async () => {
    const listed = (await run(["--help"], { cwd: ws.dir, env: ws.env })).out
      .split("\n")
      .filter((line) => line.startsWith("  kms "))
      .map((line) => commandName(line.trim()));
    expect(listed.length).toBeGreaterThan(20);
    for (const name of listed) expect(documented.has(name), name).toBe(true);
    expect(documented.get("put-key-policy")).toContain("--bypass-policy-lockout-safety-check");
  });

  it.each([...documented.keys()].filter((name) => name !== "help"))(
    "kms help %s shows every flag the README documents for it",
    async (name) => {
      const shown = new Set((await usageLine(name)).match(FLAG));
      for (const flag of documented.get(name) ?? [])
        expect(shown, `${name} ${flag}`).toContain(flag);
    },
  );

  it("a usage error shows the flag too", async () => {
    const result = await run(["put-key-policy"], { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(2);
    expect(result.err).toContain(
      "\n\nUsage: kms put-key-policy <keyId> --policy <file|-> [--bypass-policy-lockout-safety-check]\n",
    );
  });
});
