import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import {
  createProgressBar,
  type ProgressBarOptions,
  type ProgressOutput,
  runCli,
} from "../src/index.ts";
import { Collector, initStore, plaintext, run, workspace } from "./helpers.ts";

/**
 * A bar on a fake output (a 120-column terminal unless told) with a manual clock at 0.
 * `text` is everything written; `frames` splits a terminal's redraws at `\r`.
 */
function setup(
  options: Partial<ProgressBarOptions> & { readonly tty?: boolean; readonly columns?: number } = {},
) {
  const { tty = true, columns = 120, ...barOptions } = options;
  const writes: string[] = [];
  let t = 0;
  const output: ProgressOutput = { isTTY: tty, columns, write: (s: string) => writes.push(s) };
  const bar = createProgressBar({ label: "x", unit: "bytes", output, now: () => t, ...barOptions });
  const text = (): string => writes.join("");
  return {
    bar,
    text,
    frames: () =>
      text()
        .split("\r")
        .filter((f) => f !== ""),
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe("createProgressBar", () => {
  it("redraws one line on a terminal: bar, percent, bytes, rate, ETA", () => {
    const { bar, text, frames, advance } = setup({ label: "encrypt", total: 4 * 1024 * 1024 });
    advance(1000);
    bar.update(1024 * 1024);
    expect(text()).toBe(
      "\rencrypt [######------------------] 25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 3s\x1b[K",
    );
    advance(1000);
    bar.update(2 * 1024 * 1024);
    bar.finish();
    expect(frames()).toHaveLength(3);
    expect(frames()[1]).toContain("50%");
    expect(frames()[2]).toBe("encrypt: done, 2.0 MiB in 2s\x1b[K\n");
  });

  it("redraws at most ten times a second on a terminal", () => {
    const { bar, frames, advance } = setup({ total: 1000 });
    for (let i = 1; i <= 100; i += 1) {
      advance(10);
      bar.update(i * 10);
    }
    // 100 updates over one second: the first, then one per 100 ms.
    expect(frames()).toHaveLength(10);
  });

  it("drops the graphic when the line would not fit the terminal", () => {
    const { bar, text, advance } = setup({ label: "decrypt", total: 100, columns: 50 });
    advance(500);
    bar.update(50);
    expect(text()).toBe("\rdecrypt  50%  50 B / 100 B  100 B/s  ETA 1s\x1b[K");
    const narrow = setup({ label: "decrypt", total: 100, columns: 20 });
    narrow.bar.update(50);
    expect(narrow.text()).toBe("\rdecrypt  50%  50 B \x1b[K");
  });

  it("prints nothing off a terminal by default", () => {
    const { bar, text } = setup({ tty: false, total: 10 });
    bar.update(5);
    bar.finish();
    expect(text()).toBe("");
  });

  it('off a terminal with show "always": at most one line per second plus a final line', () => {
    const { bar, text, advance } = setup({
      tty: false,
      label: "encrypt",
      total: 3000,
      show: "always",
    });
    for (let i = 1; i <= 25; i += 1) {
      advance(100);
      bar.update(i * 100);
    }
    bar.finish();
    const lines = text()
      .split("\n")
      .filter((l) => l !== "");
    expect(text()).not.toContain("\r");
    expect(lines).toEqual([
      "encrypt: 33%  1000 B / 2.9 KiB  1000 B/s  ETA 2s",
      "encrypt: 66%  2.0 KiB / 2.9 KiB  1000 B/s  ETA 1s",
      "encrypt: done, 2.4 KiB in 3s",
    ]);
  });

  it('show "never" is silent even on a terminal', () => {
    const { bar, text } = setup({ show: "never" });
    bar.update(5);
    bar.finish();
    expect(text()).toBe("");
  });

  it("without a total: amount and rate, no percent or ETA", () => {
    const { bar, text, advance } = setup({ label: "stdin" });
    advance(2000);
    bar.update(4096);
    expect(text()).toBe("\rstdin  4.0 KiB  2.0 KiB/s\x1b[K");
  });

  it("takes re-encryption checkpoints as rows", async () => {
    const { bar, text, advance } = setup({
      tty: false,
      label: "reencrypt patient",
      total: 300,
      unit: "rows",
      show: "always",
    });
    const onProgress = bar.checkpoint; // passed unbound, as an onProgress option would be
    advance(1000);
    onProgress({ cursor: 100, scanned: 100, reencrypted: 90, conflicts: 1 });
    advance(1000);
    onProgress({ cursor: 200, scanned: 200, reencrypted: 180, conflicts: 1 });
    bar.finish();
    bar.finish();
    expect(text()).toBe(
      [
        "reencrypt patient: 33%  100 rows / 300 rows  100 rows/s  ETA 2s  re-encrypted 90, conflicts 1",
        "reencrypt patient: 66%  200 rows / 300 rows  100 rows/s  ETA 1s  re-encrypted 180, conflicts 1",
        "reencrypt patient: done, 200 rows in 2s, re-encrypted 180, conflicts 1",
        "",
      ].join("\n"),
    );
  });

  it("a failure ends the line with what was done", () => {
    const { bar, text } = setup({ label: "decrypt", total: 100 });
    bar.file({ bytesRead: 40, totalBytes: 100 });
    bar.finish("failed");
    expect(text().endsWith("\rdecrypt: failed after 40 B\x1b[K\n")).toBe(true);
  });

  it("refuses a bad label or unit", () => {
    expect(() => createProgressBar({ label: "", unit: "bytes" })).toThrow(TypeError);
    expect(() => createProgressBar({ label: "x", unit: "lines" as unknown as "rows" })).toThrow(
      /"unit" expected/,
    );
  });
});

describe("the CLI's progress bar", () => {
  const ws = workspace();
  const opts = { cwd: ws.dir, env: ws.env };
  let keyId: string;
  beforeAll(async () => {
    await initStore(ws);
    keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
    writeFileSync(join(ws.dir, "big"), plaintext(1024 * 1024));
  });
  afterAll(() => ws.dispose());

  it("redraws on a terminal stderr and ends with a done line", async () => {
    const result = await run(["encrypt", "--key", keyId, "--in", "big", "--out", "big.kms"], {
      ...opts,
      ttyStderr: true,
    });
    expect(result.code).toBe(0);
    expect(result.err).toMatch(/^\rencrypt \[[#-]{24}\] \d+%/);
    const final = result.err.slice(result.err.lastIndexOf("\r"));
    expect(final).toMatch(/^\rencrypt: done, 1\.0 MiB in \d+s/);
    expect(final.endsWith("\x1b[K\n")).toBe(true);
  });

  it("prints nothing when stderr is not a terminal", async () => {
    const result = await run(["decrypt", "--in", "big.kms", "--out", "big.out"], opts);
    expect(result.code).toBe(0);
    expect(result.err).toBe("");
  });

  it("prints plain lines with --progress when stderr is not a terminal", async () => {
    const result = await run(
      ["decrypt", "--in", "big.kms", "--out", "big.out", "--force", "--progress"],
      opts,
    );
    expect(result.code).toBe(0);
    expect(result.err).not.toContain("\r");
    expect(result.err).toMatch(/(^|\n)decrypt: done, 1\.0 MiB in \d+s\n$/);
  });

  it("--no-progress silences it on a terminal", async () => {
    const result = await run(
      ["encrypt", "--key", keyId, "--in", "big", "--out", "big.kms", "--force", "--no-progress"],
      { ...opts, ttyStderr: true },
    );
    expect(result.code).toBe(0);
    expect(result.err).toBe("");
  });

  it("ends the bar with a failed line before the error", async () => {
    const result = await run(
      ["decrypt", "--in", "big.kms", "--out", "big.out", "--force", "--context", "a=b"],
      { ...opts, ttyStderr: true },
    );
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/decrypt: failed after .*\n(.|\n)*InvalidCiphertextException: /);
  });

  // Regression: `kms decrypt --in notes.kms --out -` in a terminal drew the bar on the same screen
  // as the plaintext; each `\r…\x1b[K` redraw, and the final line, erased the line of text it
  // landed on.
  it("stays off when --out - is a terminal too, unless --progress asks for it", async () => {
    const text = Buffer.from("line one\nline two, no newline at the end");
    writeFileSync(join(ws.dir, "notes"), text);
    const sealed = await run(
      ["encrypt", "--key", keyId, "--in", "notes", "--out", "notes.kms"],
      opts,
    );
    expect(sealed.code).toBe(0);
    for (const [extra, bar] of [
      [[], false],
      [["--progress"], true],
    ] as const) {
      const stdout = new Collector(true);
      const stderr = new Collector(true);
      const code = await runCli(["decrypt", "--in", "notes.kms", "--out", "-", ...extra], {
        stdout: stdout as CliOutput,
        stderr: stderr as CliOutput,
        stdin: Readable.from([]),
        env: ws.env,
        cwd: ws.dir,
      });
      expect(code).toBe(0);
      expect(stdout.bytes().equals(text)).toBe(true);
      expect(stderr.text().includes("decrypt: done"), extra.join(" ")).toBe(bar);
    }
    // Not a terminal: the data goes elsewhere, and the bar shows as before.
    const piped = await run(["decrypt", "--in", "notes.kms", "--out", "-"], {
      ...opts,
      ttyStderr: true,
    });
    expect(piped.err).toContain("decrypt: done");
  });
});
