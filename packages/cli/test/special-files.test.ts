import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, plaintext, run } from "./helpers.ts";

const ws = await initializedWorkspace();
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

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(
  packageDir,
  (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { bin: { kms: string } })
    .bin.kms,
);
const BIN_ENV = () => ({ PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") });

/** How the `kms` bin exits; its stderr is gathered into `stderr.text`. */
function exitOf(child: ChildProcess, stderr: { text: string }): Promise<unknown> {
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr.text += chunk.toString("utf8");
  });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

/** What `exited` settles to, or "still running" after 10 s. */
function within(exited: Promise<unknown>): Promise<unknown> {
  return Promise.race([
    exited,
    new Promise((resolve) => setTimeout(() => resolve("still running"), 10_000)),
  ]);
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

  it.skipIf(process.platform !== "linux")(
    "--out /dev/stdout with stdout a file writes at the shell's offset (regression: appended, so the shell's next write overwrote the plaintext's start)",
    async () => {
      // `exec > log` in a script, or a group: one descriptor, shared by every command in it.
      const script =
        '{ printf HEAD; "$0" "$1" decrypt --in data.kms --out /dev/stdout; printf TAIL; } > grouped.out';
      const shell = spawn("sh", ["-c", script, process.execPath, BIN], {
        cwd: ws.dir,
        env: BIN_ENV(),
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      shell.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
      });
      const status = await new Promise((resolve) => shell.once("close", resolve));
      expect(stderr).toBe("");
      expect(status).toBe(0);
      const written = readFileSync(join(ws.dir, "grouped.out"));
      expect(written.equals(Buffer.concat([Buffer.from("HEAD"), data, Buffer.from("TAIL")]))).toBe(
        true,
      );
    },
    60_000,
  );

  it.skipIf(process.platform !== "linux")(
    "a relative link in a linked directory is read from where it really is (regression: `..` taken from the name given, the descriptor missed and the link replaced)",
    async () => {
      // linked/out -> ../fd, where linked -> real/sub: ../fd is real/fd -> /dev/fd/<n>.
      const target = join(ws.dir, "through-relative-link");
      const fd = openSync(target, "w", 0o600);
      try {
        mkdirSync(join(ws.dir, "real", "sub"), { recursive: true });
        symlinkSync(`/dev/fd/${fd}`, join(ws.dir, "real", "fd"));
        symlinkSync("../fd", join(ws.dir, "real", "sub", "out"));
        symlinkSync(join(ws.dir, "real", "sub"), join(ws.dir, "linked"));
        const dec = await run(["decrypt", "--in", "data.kms", "--out", "linked/out"], opts);
        expect(dec.err).toBe("");
        expect(dec.code).toBe(0);
        expect(dec.out).toBe("");
      } finally {
        closeSync(fd);
      }
      expect(lstatSync(join(ws.dir, "real", "sub", "out")).isSymbolicLink()).toBe(true);
      expect(readFileSync(target).equals(data)).toBe(true);
    },
  );

  it("a FIFO at --out that is gone by the time it is opened is not created as a file (regression: plaintext landed in a new 0644 file, frame by frame)", async () => {
    const fifo = mkfifo("vanishing.fifo");
    // KMS_ROOT_KEY is read when the KMS opens: after --out was found to be a FIFO, before it is
    // opened. Removing it there is the reader's cleanup (or anyone's) winning that race.
    const env = {
      get KMS_ROOT_KEY(): string {
        rmSync(fifo, { force: true });
        return ws.rootKey.toString("hex");
      },
    };
    const dec = await run(["decrypt", "--in", "data.kms", "--out", fifo], { ...opts, env });
    expect(dec.code).toBe(1);
    expect(dec.err).toBe(`Error: ENOENT: no such file or directory, open '${fifo}'\n`);
    expect(existsSync(fifo)).toBe(false);
    expect(readdirSync(ws.dir).filter((name) => name.endsWith(".partial"))).toEqual([]);
  });

  it("a FIFO at --out replaced by a symbolic link before it is opened is not written through the link (regression: plaintext was appended to the link's target)", async () => {
    const fifo = mkfifo("swapped.fifo");
    const victim = join(ws.dir, "victim.txt");
    writeFileSync(victim, "theirs\n");
    // As in the test above, between the look at --out and its open: the FIFO's directory is
    // writable by someone else, who puts a link to another file in its place.
    const env = {
      get KMS_ROOT_KEY(): string {
        rmSync(fifo, { force: true });
        symlinkSync(victim, fifo);
        return ws.rootKey.toString("hex");
      },
    };
    const dec = await run(["decrypt", "--in", "data.kms", "--out", fifo], { ...opts, env });
    expect(dec.code).toBe(1);
    expect(dec.err).toBe(
      `Error: decrypt: --out ${fifo} was replaced while the command ran (it is no longer the file found at the start): nothing was written to it\n`,
    );
    expect(readFileSync(victim, "utf8")).toBe("theirs\n");
    expect(readdirSync(ws.dir).filter((name) => name.endsWith(".partial"))).toEqual([]);
  });

  it("the bin: --out - with stdout redirected onto --in is refused (regression: `>> x.kms` appended the plaintext to the message being read)", async () => {
    writeFileSync(join(ws.dir, "self.kms"), readFileSync(join(ws.dir, "data.kms")));
    writeFileSync(join(ws.dir, "self.data"), data);
    for (const [file, argv] of [
      ["self.kms", ["decrypt", "--in", "self.kms", "--out", "-"]],
      ["self.data", ["encrypt", "--key", keyId, "--in", "self.data", "--out", "-"]],
    ] as const) {
      const before = readFileSync(join(ws.dir, file));
      const script = 'file=$1; shift; "$@" >> "$file"';
      const shell = spawn("sh", ["-c", script, "sh", file, process.execPath, BIN, ...argv], {
        cwd: ws.dir,
        env: BIN_ENV(),
        stdio: ["ignore", "ignore", "pipe"],
      });
      const stderr = { text: "" };
      expect(await within(exitOf(shell, stderr))).toEqual({ code: 2, signal: null });
      expect(stderr.text).toMatch(
        new RegExp(`^kms: ${argv[0]}: --in and --out name the same file\n`),
      );
      expect(readFileSync(join(ws.dir, file)).equals(before)).toBe(true);
    }
  });

  it("a socket at --out is refused by the system (ENXIO), neither replaced nor written", async () => {
    const path = join(ws.dir, "out.sock");
    const server = createServer().listen(path);
    await new Promise((resolve) => server.once("listening", resolve));
    try {
      const dec = await run(["decrypt", "--in", "data.kms", "--out", path], opts);
      expect(dec.err).toBe(`Error: ENXIO: no such device or address, open '${path}'\n`);
      expect(dec.code).toBe(1);
      expect(lstatSync(path).isSocket()).toBe(true);
    } finally {
      server.close();
    }
  });

  it("the bin: a missing --in fails at once, before a FIFO --out waits for its reader", async () => {
    const fifo = mkfifo("unread-1.fifo");
    const child = spawn(process.execPath, [BIN, "decrypt", "--in", "missing.kms", "--out", fifo], {
      cwd: ws.dir,
      env: BIN_ENV(),
      stdio: ["ignore", "ignore", "pipe"],
    });
    const stderr = { text: "" };
    try {
      expect(await within(exitOf(child, stderr))).toEqual({ code: 1, signal: null });
      expect(stderr.text).toMatch(
        /^Error: ENOENT: no such file or directory, stat .*missing\.kms'\n$/,
      );
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);

  it("the bin: a signal once the command has failed ends the process (regression: swallowed while a FIFO --out waited for its reader)", async () => {
    writeFileSync(join(ws.dir, "garbage.kms"), "not a message");
    const fifo = mkfifo("unread-2.fifo");
    const child = spawn(process.execPath, [BIN, "decrypt", "--in", "garbage.kms", "--out", fifo], {
      cwd: ws.dir,
      env: BIN_ENV(),
      stdio: ["ignore", "ignore", "pipe"],
    });
    const stderr = { text: "" };
    try {
      const exited = exitOf(child, stderr);
      // The command has ended; the open of the FIFO, waiting for a reader, holds the process.
      for (let waited = 0; !stderr.text.includes("\n") && waited < 20_000; waited += 20) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(stderr.text).toMatch(/^InvalidCiphertextException: /);
      child.kill("SIGINT");
      expect(await within(exited)).toEqual({ code: null, signal: "SIGINT" });
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
