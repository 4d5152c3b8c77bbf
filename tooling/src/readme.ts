import { readFileSync } from "node:fs";

export interface ReadmeLinesOptions {
  /** The package README. */
  readonly readme: URL;
  /** The readme-example test itself (`import.meta.url`). */
  readonly test: URL;
  /** The package name, which the test imports as "../src/index.ts". */
  readonly pkg: string;
  /** How many of the README's ```ts blocks the test runs, from the first. */
  readonly blocks: number;
  /**
   * README lines (trimmed, as written) that the test runs in another form: a free port, fixture
   * files. Each must still be in the README, so that the list cannot go stale either.
   */
  readonly adapted?: readonly string[];
}

/**
 * What keeps a readme-example test honest: the lines of the README's examples that the test
 * does not hold, and the `adapted` lines the README no longer has. Empty when the two agree, so
 * an example edited on either side alone (an option renamed in the README, or in the test
 * after an API change) fails the test. Lines are compared without whitespace, comments and a
 * trailing `,` or `;`; an import counts when the test imports each of its names from the same
 * module.
 */
export function readmeDrift(options: ReadmeLinesOptions): string[] {
  const readme = readFileSync(options.readme, "utf8");
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1] as string);
  if (blocks.length < options.blocks) return [`the README has ${blocks.length} ts block(s)`];
  const source = readFileSync(options.test, "utf8").replaceAll(
    '"../src/index.ts"',
    `"${options.pkg}"`,
  );
  const test = squash(source);
  const imported = new Map<string, Set<string>>();
  for (const [, names = "", from = ""] of source.matchAll(
    /import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g,
  )) {
    const set = imported.get(from) ?? new Set();
    for (const name of namesOf(names)) set.add(name);
    imported.set(from, set);
  }
  const adapted = new Set(options.adapted ?? []);
  const problems: string[] = [];
  for (const line of adapted) {
    if (!readme.includes(line)) problems.push(`adapted but not in the README: ${line}`);
  }
  for (const block of blocks.slice(0, options.blocks)) {
    for (const raw of block.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("//") || adapted.has(line)) continue;
      const single = /^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";?$/.exec(line);
      if (single !== null) {
        const have = imported.get(single[2] as string);
        const missing = namesOf(single[1] as string).filter((name) => !have?.has(name));
        if (missing.length > 0) problems.push(`not imported by the test: ${line}`);
        continue;
      }
      const code = squash(line.replace(/\s\/\/\s.*$/, "")).replace(/[,;]$/, "");
      if (!test.includes(code)) problems.push(`not in the test: ${line}`);
    }
  }
  return problems;
}

/** Without whitespace, and without the trailing comma the formatter adds before a bracket. */
function squash(text: string): string {
  return text.replace(/\s+/g, "").replace(/,(?=[)\]}])/g, "");
}

function namesOf(list: string): string[] {
  return list
    .split(",")
    .map((name) => name.trim().replace(/^type\s+/, ""))
    .filter((name) => name !== "");
}
