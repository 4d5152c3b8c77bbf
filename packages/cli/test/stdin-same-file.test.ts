/**
 * `--in -` with stdin redirected from the file that `--out` names, by any spelling: `-` with
 * stdout redirected onto it, `/dev/stdout`, or the file's own path. Compared by device and inode
 * (stdin's fstat); before, `kms encrypt --in - --out - < f >> f` read its own output without end
 * and `kms decrypt --in - --out - < x.kms >> x.kms` exited 0 with the plaintext appended to the
 * message. Run through the bin, whose stdin and stdout are real descriptors.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, plaintext, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
const data = plaintext(100_000);
let keyId: string;

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(
  packageDir,
  (JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { bin: { kms: string } })
    .bin.kms,
);

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  writeFileSync(join(ws.dir, "data"), data);
  const sealed = await run(["encrypt", "--key", keyId, "--in", "data", "--out", "data.kms"], opts);
  expect(sealed.code).toBe(0);
});
afterAll(() => ws.dispose());

/**
 * Runs `kms <argv>` from a shell with stdin from `file` and stdout appended to `stdout`;
 * resolves to its exit status and stderr, or "still running" after 20 s (then it is killed).
 */
function shell(
  file: string,
  stdout: string,
  argv: readonly string[],
): Promise<{ code: number | null; stderr: string } | "still running"> {
  // A cap on the file size (20 MB): a command that reads its own output fails with EFBIG
  // rather than fill the disk.
  const script = 'ulimit -f 40000; in=$1; out=$2; shift 2; exec "$@" < "$in" >> "$out"';
  const child = spawn("sh", ["-c", script, "sh", file, stdout, process.execPath, BIN, ...argv], {
    cwd: ws.dir,
    env: { PATH: process.env.PATH ?? "", KMS_ROOT_KEY: ws.rootKey.toString("hex") },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.once("close", (code) => resolve({ code, stderr })),
  );
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"still running">((resolve) => {
    timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve("still running");
    }, 20_000);
  });
  return Promise.race([exited, late]).finally(() => clearTimeout(timer));
}

describe.skipIf(process.platform === "win32")("--in - reading the file --out names", () => {
  it.each([
    ["encrypt --out - (regression: read its own output without end)", "data", "-"],
    ["encrypt --out /dev/stdout", "data", "/dev/stdout"],
    [
      "decrypt --out - (regression: exit 0, the plaintext appended to the message)",
      "data.kms",
      "-",
    ],
    ["decrypt --out /dev/stdout (regression: the same)", "data.kms", "/dev/stdout"],
  ])(
    "%s, stdout appended to stdin's file: exit 2, the file untouched",
    async (_, source, out) => {
      const file = `self-${source}-${out === "-" ? "dash" : "dev"}`;
      writeFileSync(join(ws.dir, file), readFileSync(join(ws.dir, source)));
      const before = readFileSync(join(ws.dir, file));
      const command = source === "data" ? ["encrypt", "--key", keyId] : ["decrypt"];
      const result = await shell(file, file, [...command, "--in", "-", "--out", out]);
      expect(result).toMatchObject({ code: 2 });
      expect(result !== "still running" && result.stderr).toMatch(
        new RegExp(`^kms: ${command[0]}: --in and --out name the same file\n`),
      );
      expect(readFileSync(join(ws.dir, file)).equals(before)).toBe(true);
    },
    30_000,
  );

  it("--in - from the file --out names, with --force: exit 2, the file untouched", async () => {
    writeFileSync(join(ws.dir, "forced"), data);
    const result = await shell("forced", "/dev/null", [
      "encrypt",
      "--key",
      keyId,
      "--in",
      "-",
      "--out",
      "forced",
      "--force",
    ]);
    expect(result).toMatchObject({ code: 2 });
    expect(result !== "still running" && result.stderr).toMatch(
      /^kms: encrypt: --in and --out name the same file\n/,
    );
    expect(readFileSync(join(ws.dir, "forced")).equals(data)).toBe(true);
  }, 30_000);

  it("--in - from one file, --out - onto another: works as before", async () => {
    writeFileSync(join(ws.dir, "other.kms"), "");
    const result = await shell("data", "other.kms", [
      "encrypt",
      "--key",
      keyId,
      "--in",
      "-",
      "--out",
      "-",
    ]);
    expect(result).toEqual({ code: 0, stderr: "" });
    const back = await run(["decrypt", "--in", "other.kms", "--out", "-"], opts);
    expect(back.code).toBe(0);
    expect(back.stdout.equals(data)).toBe(true);
  }, 30_000);
});
