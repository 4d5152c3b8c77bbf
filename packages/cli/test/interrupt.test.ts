import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { PassThrough, Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import { EXIT_FAILED, runCli } from "../src/index.ts";
import { Collector, initializedWorkspace, plaintext, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
let keyId: string;
let sealed: Buffer;

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  const enc = await run(["encrypt", "--key", keyId, "--in", "-", "--out", "-"], {
    ...opts,
    stdin: plaintext(400_000),
  });
  expect(enc.code).toBe(0);
  sealed = enc.stdout;
});
afterAll(() => ws.dispose());

function partials(): string[] {
  return readdirSync(ws.dir).filter((name) => name.endsWith(".partial"));
}

async function until(probe: () => boolean, what: string): Promise<void> {
  for (let waited = 0; waited < 20_000; waited += 20) {
    if (probe()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A `.partial` file holding some output: the transfer is under way. */
const writing = (): boolean => partials().some((name) => statSync(join(ws.dir, name)).size > 0);

describe("an encrypt or decrypt stopped part-way", () => {
  it.each([
    ["decrypt", () => ["decrypt", "--in", "-", "--out", "stopped.out"], () => sealed],
    [
      "encrypt",
      () => ["encrypt", "--key", keyId, "--in", "-", "--out", "stopped.kms"],
      () => plaintext(400_000),
    ],
  ] as const)(
    "%s: io.signal removes the partial output and fails the command",
    async (_, argv, input) => {
      const args = argv();
      const stdin = new PassThrough();
      const stderr = new Collector();
      const stop = new AbortController();
      const exit = runCli(args, {
        stdout: new Collector() as CliOutput,
        stderr: stderr as CliOutput,
        stdin,
        env: ws.env,
        cwd: ws.dir,
        signal: stop.signal,
      });
      // Half the input, and no end: as a slow pipe, or a terminal, gives it.
      const bytes = input();
      stdin.write(bytes.subarray(0, bytes.length / 2));
      await until(writing, "output to be written");
      stop.abort();
      const code = await Promise.race([
        exit,
        new Promise((resolve) => setTimeout(() => resolve("still running"), 5_000)),
      ]);
      stdin.end();
      await exit;
      expect(code).toBe(EXIT_FAILED);
      // As CliIo.signal documents: the input stream is torn down with the transfer.
      expect(stdin.destroyed).toBe(true);
      expect(stderr.text()).toMatch(
        /^Interrupted: (en|de)crypt: stopped before the end of the input; --out was left as it was\n$/m,
      );
      expect(partials()).toEqual([]);
      expect(existsSync(join(ws.dir, args[args.length - 1] as string))).toBe(false);
    },
  );

  it("io.signal stops a transfer whose input was all read while stdout takes nothing (regression: it waited for the reader)", async () => {
    const small = await run(["encrypt", "--key", keyId, "--in", "-", "--out", "-"], {
      ...opts,
      stdin: plaintext(10_000),
    });
    const stderr = new Collector();
    const stop = new AbortController();
    // A reader that never reads: the first write is never taken.
    const stalled = new Writable({ highWaterMark: 1, write: () => undefined });
    const exit = runCli(["decrypt", "--in", "-", "--out", "-"], {
      stdout: stalled as CliOutput,
      stderr: stderr as CliOutput,
      stdin: Readable.from([small.stdout]),
      env: ws.env,
      cwd: ws.dir,
      signal: stop.signal,
    });
    await until(() => stalled.writableLength > 0, "output to be written");
    stop.abort();
    const code = await Promise.race([
      exit,
      new Promise((resolve) => setTimeout(() => resolve("still running"), 5_000)),
    ]);
    expect(code).toBe(EXIT_FAILED);
    expect(stderr.text()).toBe("Interrupted: decrypt: stopped before the end of the input\n");
  });

  // SIGHUP: the terminal or SSH session closed mid-decrypt (regression: it killed the process and
  // left the verified plaintext of an unfinished message in `<out>.<random>.partial`).
  it.each(["SIGINT", "SIGTERM", "SIGHUP"] as const)(
    "the bin: %s leaves no plaintext file behind and still ends the process by the signal",
    async (signal) => {
      const out = `bin-stopped-${signal}.out`;
      const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
      const pkg = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as {
        bin: { kms: string };
      };
      const child = spawn(
        process.execPath,
        [join(packageDir, pkg.bin.kms), "decrypt", "--in", "-", "--out", out],
        {
          cwd: ws.dir,
          env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
          stdio: ["pipe", "ignore", "pipe"],
        },
      );
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
      });
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal })),
      );
      try {
        child.stdin.write(sealed.subarray(0, sealed.length / 2));
        await until(writing, "the bin to write plaintext");
        child.kill(signal);
        expect(await exited).toEqual({ code: null, signal });
      } finally {
        child.kill("SIGKILL");
      }
      expect(stderr).toMatch(/^Interrupted: decrypt: stopped before the end of the input/m);
      expect(partials()).toEqual([]);
      expect(existsSync(join(ws.dir, out))).toBe(false);
    },
    60_000,
  );
});
