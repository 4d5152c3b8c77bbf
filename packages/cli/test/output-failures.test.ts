import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import { EXIT_FAILED, EXIT_USAGE, runCli } from "../src/index.ts";
import { Collector, initializedWorkspace, plaintext, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
let keyId: string;
beforeAll(async () => {
  const created = await run(["create-key"], opts);
  expect(created.code).toBe(0);
  keyId = JSON.parse(created.out).keyId;
  writeFileSync(join(ws.dir, "small"), plaintext(10_000));
  const sealed = await run(
    ["encrypt", "--key", keyId, "--in", "small", "--out", "small.kms"],
    opts,
  );
  expect(sealed.code).toBe(0);
});
afterAll(() => ws.dispose());

/** A stdout whose every write fails as a closed pipe or a full disk does. */
class FailingOutput extends Writable {
  writes = 0;
  readonly code: "EPIPE" | "ENOSPC";

  constructor(code: "EPIPE" | "ENOSPC") {
    super();
    this.code = code;
  }

  override _write(_chunk: Buffer, _encoding: BufferEncoding, callback: (e: Error) => void): void {
    this.writes += 1;
    const message =
      this.code === "EPIPE" ? "write EPIPE" : "ENOSPC: no space left on device, write";
    callback(Object.assign(new Error(message), { code: this.code }));
  }
}

/** A stdout that takes each write and fails it a little later, as a pipe whose reader went away. */
class LateFailingOutput extends Writable {
  override _write(_chunk: Buffer, _encoding: BufferEncoding, callback: (e: Error) => void): void {
    const error = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    setTimeout(() => callback(error), 50);
  }
}

describe("a stdout that cannot be written", () => {
  it.each(
    [
      ["list-keys"],
      ["audit", "list"],
      ["audit", "verify"],
      ["help"],
      ["create-key", "--description", "lost output"],
    ].map((argv) => ({ name: argv.join(" "), argv })),
  )("kms $name: exit 1 with one error line, not a crash or exit 0", async ({ argv }) => {
    for (const code of ["EPIPE", "ENOSPC"] as const) {
      const stdout = new FailingOutput(code);
      const stderr = new Collector();
      const exit = await Promise.race([
        runCli(argv, {
          stdout: stdout as CliOutput,
          stderr: stderr as CliOutput,
          stdin: Readable.from([]),
          env: ws.env,
          cwd: ws.dir,
        }),
        // Regression: `audit list` waited for a `drain` that never comes.
        new Promise((resolve) => setTimeout(() => resolve("still running"), 5_000)),
      ]);
      expect(exit, `${argv.join(" ")}, ${code}`).toBe(EXIT_FAILED);
      expect(stderr.text()).toMatch(new RegExp(`^Error: (write )?${code}\\b[^\\n]*\\n$`));
      // It stops at the first failed write instead of writing on into the void.
      expect(stdout.writes).toBe(1);
    }
  });

  it.each([
    ["decrypt", () => ["decrypt", "--in", "small.kms", "--out", "-"]],
    ["encrypt", () => ["encrypt", "--key", keyId, "--in", "small", "--out", "-"]],
  ] as const)(
    "%s --out -: a write that fails after the input ended fails the command (regression: exit 0, the output's end lost)",
    async (_, argv) => {
      const stderr = new Collector();
      const exit = await runCli(argv(), {
        stdout: new LateFailingOutput() as CliOutput,
        stderr: stderr as CliOutput,
        stdin: Readable.from([]),
        env: ws.env,
        cwd: ws.dir,
      });
      expect(exit).toBe(EXIT_FAILED);
      expect(stderr.text()).toBe("Error: write EPIPE\n");
    },
  );

  it("the bin: a reader that goes away ends it with exit 1 and one line, no stack trace", async () => {
    const child = spawn(process.execPath, [binPath(), "list-keys"], {
      cwd: ws.dir,
      env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // `kms list-keys | head -c 0`: the pipe is closed before the command writes.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const status = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect(stderr).toBe("Error: write EPIPE\n");
    expect(status).toBe(EXIT_FAILED);
  }, 60_000);

  // The bin refuses an argument that is not UTF-8 before runCli, which listens for write
  // errors, runs: with stderr's reader gone, the failed write ended the process with an
  // unhandled `error` event (exit 1) instead of the usage status.
  it("the bin: a usage error whose stderr reader is gone still exits 2", async () => {
    const child = spawn(
      "/bin/sh",
      [
        "-c",
        `exec "$0" "$1" encrypt --context "k=$(printf 'caf\\351')"`,
        process.execPath,
        binPath(),
      ],
      { cwd: ws.dir, env: { PATH: process.env.PATH ?? "" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stderr.destroy();
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    const status = await new Promise<number | null>((resolve) => child.once("close", resolve));
    expect(stdout).toBe("");
    expect(status).toBe(EXIT_USAGE);
  }, 60_000);
});

function binPath(): string {
  const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
  const pkg = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as {
    bin: { kms: string };
  };
  return join(packageDir, pkg.bin.kms);
}
