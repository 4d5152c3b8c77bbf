/**
 * The temporary file beside a file output: created exclusively, so whatever already holds its
 * name (a symbolic link planted by someone who can write to the folder, a stray file) is
 * neither followed, written, exposed nor removed. The name is random; here it is made known.
 */
import { lstat, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { decryptFile, encryptFile } from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const fixed = vi.hoisted(() => ({ on: false }));
vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const randomBytes = ((size: number, ...rest: unknown[]) =>
    fixed.on && size === 6
      ? Buffer.alloc(6, 0xab)
      : (real.randomBytes as (...args: unknown[]) => unknown)(
          size,
          ...rest,
        )) as typeof real.randomBytes;
  return { ...real, default: { ...real, randomBytes }, randomBytes };
});

let dir: string;
const keyring = aesKeyring();
const plaintext = Buffer.from("the plaintext nobody else may read\n".repeat(100));
const temporaryOf = (out: string): string => `${out}.${"ab".repeat(6)}.partial`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-file-temporary-"));
  await writeFile(join(dir, "plain.txt"), plaintext);
  await encryptFile({ in: join(dir, "plain.txt"), out: join(dir, "plain.kms"), keyring });
  fixed.on = true;
});
afterAll(async () => {
  fixed.on = false;
  await rm(dir, { recursive: true, force: true });
});

describe.runIf(process.platform !== "win32")("the temporary file beside `out`", () => {
  it("a symbolic link at its name is not followed: no plaintext reaches its target", async () => {
    const out = join(dir, "secret.txt");
    const target = join(dir, "stolen.txt");
    await symlink(target, temporaryOf(out));
    const error = await decryptFile({ in: join(dir, "plain.kms"), out, keyring }).catch((e) => e);
    expect(error.code).toBe("EEXIST");
    await expect(lstat(target)).rejects.toMatchObject({ code: "ENOENT" });
    await expect(lstat(out)).rejects.toMatchObject({ code: "ENOENT" });
    // Not ours: left where it was.
    expect((await lstat(temporaryOf(out))).isSymbolicLink()).toBe(true);
  });

  it("a file at its name is neither written nor removed", async () => {
    const out = join(dir, "other.txt");
    await writeFile(temporaryOf(out), "someone else's");
    await expect(decryptFile({ in: join(dir, "plain.kms"), out, keyring })).rejects.toMatchObject({
      code: "EEXIST",
    });
    expect(await readFile(temporaryOf(out), "utf8")).toBe("someone else's");
    expect((await readdir(dir)).filter((n) => n.startsWith("other.txt"))).toEqual([
      `other.txt.${"ab".repeat(6)}.partial`,
    ]);
  });
});
