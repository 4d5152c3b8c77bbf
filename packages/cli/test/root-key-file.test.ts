import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, run } from "./helpers.ts";

const ws = await initializedWorkspace();
afterAll(() => ws.dispose());

beforeAll(async () => {
  // The store, made under the workspace's key; every run below gives that key as a file.
  expect((await run(["create-key"], { cwd: ws.dir, env: ws.env })).code).toBe(0);
});

/** `kms list-keys --root-key-file <path>`, with no other root key source. */
function listKeys(path: string) {
  return run(["list-keys", "--root-key-file", path], { cwd: ws.dir, env: {} });
}

function keyFile(name: string, mode: number): string {
  const path = join(ws.dir, name);
  writeFileSync(path, `${ws.rootKey.toString("hex")}\n`, { mode });
  // writeFileSync's mode is masked by the umask: set it exactly.
  chmodSync(path, mode);
  return path;
}

describe.skipIf(process.platform === "win32")("--root-key-file open to other users", () => {
  it.each([0o644, 0o640, 0o604, 0o660, 0o602, 0o610].map((mode) => [mode.toString(8), mode]))(
    "mode %s: one warning line on stderr, and the key is still used",
    async (_name, mode) => {
      const path = keyFile(`open-${mode.toString(8)}.key`, mode);
      const listed = await listKeys(path);
      expect(listed.code).toBe(0);
      expect(JSON.parse(listed.out).keys).toHaveLength(1);
      expect(listed.err).toBe(
        `kms: warning: root key file ${path} is open to group or other users (mode ${mode.toString(8)}): chmod 600 it\n`,
      );
    },
  );

  it.each([0o600, 0o400].map((mode) => [mode.toString(8), mode]))(
    "mode %s: no warning",
    async (_name, mode) => {
      const listed = await listKeys(keyFile(`private-${mode.toString(8)}.key`, mode));
      expect(listed.code).toBe(0);
      expect(listed.err).toBe("");
    },
  );

  it("a file that holds no key is refused without the warning (the failure is the one line)", async () => {
    const path = join(ws.dir, "not-a-key");
    writeFileSync(path, "hello\n", { mode: 0o644 });
    chmodSync(path, 0o644);
    const listed = await listKeys(path);
    expect(listed.code).toBe(1);
    expect(listed.err).toBe(
      `RootKeyError: root key from file ${path} must be 32 bytes as 64 hex digits or base64\n`,
    );
  });

  it("a path with a control character is shown escaped in the warning", async () => {
    const path = keyFile("esc\u001b[2J.key", 0o644);
    const listed = await listKeys(path);
    expect(listed.code).toBe(0);
    expect(listed.err).toBe(
      `kms: warning: root key file ${join(ws.dir, "esc\\u001b[2J.key")} is open to group or other users (mode 644): chmod 600 it\n`,
    );
  });
});

describe.skipIf(process.platform === "win32")("--root-key-file that is not a regular file", () => {
  it("a directory is refused by what it is (RootKeyError, exit 1)", async () => {
    const dir = join(ws.dir, "a-dir");
    mkdirSync(dir);
    const listed = await listKeys(dir);
    expect(listed.code).toBe(1);
    expect(listed.out).toBe("");
    expect(listed.err).toBe(
      `RootKeyError: root key file ${dir} is a directory, not a regular file or FIFO: put the key in a file (mode 0600)\n`,
    );
  });

  it("a device is refused without reading it (/dev/zero, /dev/null)", async () => {
    for (const device of ["/dev/zero", "/dev/null"]) {
      const listed = await listKeys(device);
      expect(listed.code, device).toBe(1);
      expect(listed.err, device).toBe(
        `RootKeyError: root key file ${device} is a character device, not a regular file or FIFO: put the key in a file (mode 0600)\n`,
      );
    }
  });

  it("a FIFO is read to its end, as a process substitution `<(…)` is", async () => {
    const fifo = join(ws.dir, "key.fifo");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    // The writer opens the FIFO only after the command is waiting on it, as bash's `<(…)` may.
    const writer = new Promise<void>((resolve, reject) => {
      setTimeout(() => {
        writeFile(fifo, `${ws.rootKey.toString("hex")}\n`).then(resolve, reject);
      }, 200);
    });
    const listed = await listKeys(fifo);
    await writer;
    expect(listed.err).toBe("");
    expect(listed.code).toBe(0);
  });
});
