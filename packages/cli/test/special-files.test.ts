import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { plaintext, run, workspace } from "./helpers.ts";

const ws = workspace();
const opts = { cwd: ws.dir, env: ws.env };
const data = plaintext(200_000);
let keyId: string;

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  writeFileSync(join(ws.dir, "data"), data);
  const sealed = await run(["encrypt", "--key", keyId, "--in", "data", "--out", "data.kms"], opts);
  expect(sealed.code).toBe(0);
});
afterAll(() => ws.dispose());

function mkfifo(name: string): string {
  const path = join(ws.dir, name);
  execFileSync("mkfifo", [path]);
  return path;
}

/** Resolves when the child exits; the child is killed (by its pid) if the test ends first. */
function collect(child: ChildProcess): Promise<Buffer> {
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => child.once("close", () => resolve(Buffer.concat(chunks))));
}

describe.skipIf(process.platform === "win32")("--in and --out naming special files", () => {
  it("encrypt reads a FIFO whole (regression: its stat size 0 was taken for the plaintext length)", async () => {
    const fifo = mkfifo("in.fifo");
    const writer = spawn("sh", ["-c", 'cat "$0" > "$1"', join(ws.dir, "data"), fifo]);
    const written = collect(writer);
    try {
      const enc = await run(["encrypt", "--key", keyId, "--in", fifo, "--out", "fifo.kms"], opts);
      expect(enc.err).toBe("");
      expect(enc.code).toBe(0);
      expect(JSON.parse(enc.out)).toMatchObject({ plaintextBytes: data.length });
      const back = await run(["decrypt", "--in", "fifo.kms", "--out", "-"], opts);
      expect(back.stdout.equals(data)).toBe(true);
    } finally {
      writer.kill();
      await written;
    }
  });

  it("decrypt writes into a FIFO at --out instead of replacing it with a file", async () => {
    const fifo = mkfifo("out.fifo");
    const reader = spawn("cat", [fifo], { stdio: ["ignore", "pipe", "ignore"] });
    const read = collect(reader);
    try {
      const dec = await run(["decrypt", "--in", "data.kms", "--out", fifo], opts);
      expect(dec.err).toBe("");
      expect(dec.code).toBe(0);
      // Written through like `-`: no summary, which could be mixed into the same stream.
      expect(dec.out).toBe("");
      expect(lstatSync(fifo).isFIFO()).toBe(true);
      expect((await read).equals(data)).toBe(true);
    } finally {
      reader.kill();
      await read;
    }
  });

  it.skipIf(process.platform !== "linux")(
    "--out /dev/fd/<n> writes to the open file (regression: the rename tried to replace the link)",
    async () => {
      // As `kms decrypt --out /dev/stdout > file` does with descriptor 1: as root, the rename
      // replaced /dev/stdout itself with a file.
      const target = join(ws.dir, "through-fd");
      const fd = openSync(target, "w", 0o600);
      try {
        const dec = await run(["decrypt", "--in", "data.kms", "--out", `/dev/fd/${fd}`], opts);
        expect(dec.err).toBe("");
        expect(dec.code).toBe(0);
        expect(dec.out).toBe("");
      } finally {
        closeSync(fd);
      }
      expect(readFileSync(target).equals(data)).toBe(true);
      expect(readdirSync(ws.dir).filter((name) => name.endsWith(".partial"))).toEqual([]);
    },
  );
});
