/**
 * The terminal guards of `--out -` (encrypt refuses to write binary ciphertext to a terminal;
 * the progress bar stays off unless `--progress`) apply to any `--out` whose opened descriptor
 * is a terminal, whatever names it: `/dev/stdout` or `/proc/self/fd/1` on a terminal, `/dev/tty`,
 * `/dev/pts/N`. Before, naming stdout by path skipped both. In-process, `/dev/ptmx` (the master
 * side of a new pseudo-terminal, itself a terminal) stands for one; through the bin, `script`
 * gives the command a real terminal as stdout.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, plaintext, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
// Small: nothing reads the pseudo-terminal, which takes some 50 KB before a write blocks.
const text = Buffer.from("line one\nline two\n".repeat(100));
let keyId: string;

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  writeFileSync(join(ws.dir, "notes"), text);
  writeFileSync(join(ws.dir, "big"), plaintext(2 * 1024 * 1024));
  const sealed = await run(
    ["encrypt", "--key", keyId, "--in", "notes", "--out", "notes.kms"],
    opts,
  );
  expect(sealed.code).toBe(0);
  const big = await run(["encrypt", "--key", keyId, "--in", "big", "--out", "big.kms"], opts);
  expect(big.code).toBe(0);
});
afterAll(() => ws.dispose());

describe.skipIf(!existsSync("/dev/ptmx"))("an --out device that is a terminal", () => {
  it("encrypt refuses it before writing, exit 2 (regression: ciphertext went to the terminal)", async () => {
    const result = await run(
      ["encrypt", "--key", keyId, "--in", "notes", "--out", "/dev/ptmx"],
      opts,
    );
    expect(result.code).toBe(2);
    expect(result.err).toMatch(
      /^kms: encrypt: refusing to write binary ciphertext to a terminal\n/,
    );
  });

  it("decrypt writes to it without the progress bar, unless --progress asks for it (regression: the bar was drawn over the plaintext)", async () => {
    for (const [extra, bar] of [
      [[], false],
      [["--progress"], true],
    ] as const) {
      const result = await run(["decrypt", "--in", "notes.kms", "--out", "/dev/ptmx", ...extra], {
        ...opts,
        ttyStderr: true,
      });
      expect(result.code).toBe(0);
      expect(result.err.includes("decrypt: done"), extra.join(" ")).toBe(bar);
    }
  });

  it("a device that is not a terminal keeps the bar, and takes ciphertext", async () => {
    const dec = await run(["decrypt", "--in", "notes.kms", "--out", "/dev/null"], {
      ...opts,
      ttyStderr: true,
    });
    expect(dec.code).toBe(0);
    expect(dec.err).toContain("decrypt: done");
    const enc = await run(["encrypt", "--key", keyId, "--in", "notes", "--out", "/dev/null"], opts);
    expect(enc).toMatchObject({ code: 0, err: "" });
  });
});

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(
  packageDir,
  (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { bin: { kms: string } })
    .bin.kms,
);

const hasScript = ((): boolean => {
  if (process.platform !== "linux") return false;
  try {
    execFileSync("script", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

const quote = (arg: string): string => `'${arg.replaceAll("'", `'\\''`)}'`;

/** Runs the bin under `script`, stdout and stderr on a new terminal; resolves to what it showed. */
function onTerminal(argv: readonly string[]): Promise<{ code: number | null; screen: string }> {
  const command = [process.execPath, BIN, ...argv].map(quote).join(" ");
  const child = spawn("script", ["-qec", command, "/dev/null"], {
    cwd: ws.dir,
    env: {
      PATH: process.env.PATH ?? "",
      KMS_ROOT_KEY: ws.rootKey.toString("hex"),
      TERM: "dumb",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const chunks: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) =>
    child.once("close", (code) =>
      resolve({ code, screen: Buffer.concat(chunks).toString("latin1") }),
    ),
  );
}

describe.skipIf(!hasScript)("the bin with stdout on a terminal, named by path", () => {
  for (const out of ["/dev/stdout", "/proc/self/fd/1"]) {
    it(`encrypt --out ${out}: refused as --out - is, nothing written`, async () => {
      const { code, screen } = await onTerminal([
        "encrypt",
        "--key",
        keyId,
        "--in",
        "big",
        "--out",
        out,
        "--no-progress",
      ]);
      expect(code).toBe(2);
      expect(screen).toMatch(
        /^kms: encrypt: refusing to write binary ciphertext to a terminal\r?\n/,
      );
      expect(screen.length).toBeLessThan(2000);
    }, 30_000);

    it(`decrypt --out ${out}: the plaintext, with no progress bar drawn over it`, async () => {
      const { code, screen } = await onTerminal(["decrypt", "--in", "big.kms", "--out", out]);
      expect(code).toBe(0);
      expect(screen).toContain("PLAINTEXT-MARKER-");
      expect(screen).not.toMatch(/decrypt \[|decrypt: done/);
    }, 30_000);
  }
});
