/**
 * How a file `out` is put in place: synced before it is named (and its directory after), and,
 * with `overwrite: false`, never replacing what appeared at `out` while the transfer ran. A
 * power cut cannot be simulated: the order of the calls is what is checked, through a wrapped
 * node:fs/promises and the FileHandle prototype.
 */
import { writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { AlreadyExistsError, decryptFile, encryptFile, ValidationError } from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const calls = vi.hoisted(() => ({
  /** What the file functions did, in order: `sync <path>`, `rename <to>`, `link <to>`. */
  log: [] as string[],
  /** The code a `link` fails with, if any. */
  failLink: undefined as string | undefined,
  /** The code the sync of a handle opened on `path` fails with, if any. */
  failSync: (_path: string): string | undefined => undefined,
}));

vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs/promises")>();
  const paths = new WeakMap<object, string>();
  const open = (async (path: string, ...rest: unknown[]) => {
    const handle = await (real.open as (...args: unknown[]) => Promise<object>)(path, ...rest);
    paths.set(handle, path);
    return handle;
  }) as typeof real.open;
  // Patched on the prototype: the write stream's `flush` calls it on the handle it was given.
  const probe = await real.open(process.execPath, "r");
  const prototype = Object.getPrototypeOf(probe) as { sync: () => Promise<void> };
  await probe.close();
  const sync = prototype.sync;
  prototype.sync = async function (this: object) {
    const path = paths.get(this) ?? "?";
    calls.log.push(`sync ${path}`);
    const fail = calls.failSync(path);
    if (fail !== undefined) throw Object.assign(new Error(`${fail}: injected`), { code: fail });
    return sync.call(this);
  };
  const rename = (async (from: string, to: string) => {
    calls.log.push(`rename ${to}`);
    return real.rename(from, to);
  }) as typeof real.rename;
  const link = (async (from: string, to: string) => {
    calls.log.push(`link ${to}`);
    if (calls.failLink !== undefined) {
      throw Object.assign(new Error(`${calls.failLink}: injected`), { code: calls.failLink });
    }
    return real.link(from, to);
  }) as typeof real.link;
  const mocked = { ...real, open, rename, link };
  return { ...mocked, default: mocked };
});

let dir: string;
const keyring = aesKeyring();
const plaintext = Buffer.from("durable plaintext\n".repeat(10_000));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-file-durability-"));
  await writeFile(join(dir, "plain.txt"), plaintext);
  await encryptFile({ in: join(dir, "plain.txt"), out: join(dir, "plain.kms"), keyring });
});
beforeEach(() => {
  calls.log.length = 0;
  calls.failLink = undefined;
  calls.failSync = () => undefined;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const partials = async (): Promise<string[]> =>
  (await readdir(dir, { recursive: true })).filter((name) => name.endsWith(".partial"));
const isPartial = (entry: string | undefined): boolean => entry?.endsWith(".partial") === true;

describe("a file `out` reaches the disk before it is reported written", () => {
  it.each([
    [
      "encryptFile",
      () => encryptFile({ in: join(dir, "plain.txt"), out: join(dir, "a.kms"), keyring }),
    ],
    [
      "decryptFile",
      () => decryptFile({ in: join(dir, "plain.kms"), out: join(dir, "a.txt"), keyring }),
    ],
  ] as const)(
    "%s syncs the temporary file, renames it, then syncs the directory",
    async (_, call) => {
      await call();
      const syncs = calls.log.filter((entry) => entry.startsWith("sync"));
      const renamed = calls.log.findIndex((entry) => entry.startsWith("rename"));
      expect(renamed).toBeGreaterThan(0);
      // The data first: a rename that reaches the disk before it leaves an empty `out`.
      expect(isPartial(calls.log[renamed - 1])).toBe(true);
      expect(calls.log[renamed - 1]).toMatch(/^sync /);
      // Then the new name, which lives in the directory.
      expect(calls.log.slice(renamed + 1)).toEqual([`sync ${dir}`]);
      expect(syncs).toHaveLength(2);
    },
  );

  it("with overwrite: false, the link and the removal of the temporary name are synced too", async () => {
    const out = join(dir, "b.kms");
    await encryptFile({ in: join(dir, "plain.txt"), out, keyring, overwrite: false });
    expect(calls.log.map((entry) => entry.replace(/ .*\.partial$/, " <partial>"))).toEqual([
      "sync <partial>",
      `link ${out}`,
      `sync ${dir}`,
    ]);
  });

  it("a directory that cannot be synced (EINVAL, EISDIR, EPERM, …) does not fail the call", async () => {
    for (const code of ["EINVAL", "EISDIR", "EPERM", "ENOTSUP", "EACCES"]) {
      calls.failSync = (path) => (path === dir ? code : undefined);
      const out = join(dir, `c-${code}.txt`);
      await decryptFile({ in: join(dir, "plain.kms"), out, keyring });
      expect((await readFile(out)).equals(plaintext), code).toBe(true);
    }
  });

  it("a directory sync that fails otherwise (EIO) rejects, with the file in place", async () => {
    calls.failSync = (path) => (path === dir ? "EIO" : undefined);
    const out = join(dir, "d.txt");
    await expect(decryptFile({ in: join(dir, "plain.kms"), out, keyring })).rejects.toMatchObject({
      code: "EIO",
    });
    expect((await readFile(out)).equals(plaintext)).toBe(true);
    expect(await partials()).toEqual([]);
  });

  it("a failed sync of the file (EIO, ENOSPC) rejects, leaves nothing at `out` and removes the temporary", async () => {
    for (const code of ["EIO", "ENOSPC"]) {
      const out = join(dir, `e-${code}.txt`);
      calls.failSync = (path) => (isPartial(path) ? code : undefined);
      await expect(decryptFile({ in: join(dir, "plain.kms"), out, keyring })).rejects.toMatchObject(
        { code },
      );
      await expect(readFile(out)).rejects.toMatchObject({ code: "ENOENT" });
      expect(await partials()).toEqual([]);
      expect(calls.log.some((entry) => entry.startsWith("rename"))).toBe(false);
    }
  });
});

describe("overwrite: false", () => {
  const inputs = {
    encryptFile: (out: string, onProgress?: () => void) =>
      encryptFile({
        in: join(dir, "plain.txt"),
        out,
        keyring,
        overwrite: false,
        frameLength: 4096,
        ...(onProgress === undefined ? {} : { onProgress }),
      }),
    decryptFile: (out: string, onProgress?: () => void) =>
      decryptFile({
        in: join(dir, "plain.kms"),
        out,
        keyring,
        overwrite: false,
        ...(onProgress === undefined ? {} : { onProgress }),
      }),
  };

  it.each(Object.entries(inputs))(
    "%s: a file created at `out` during the transfer is left intact, and no temporary is left",
    async (name, call) => {
      const out = join(dir, `race-${name}`);
      let created = false;
      const error = await call(out, () => {
        if (created) return;
        created = true;
        // Someone else's file, appearing after the check at the start.
        writeFileSync(out, "theirs", { flag: "wx" });
      }).catch((e: unknown) => e);
      expect(created).toBe(true);
      expect(error).toBeInstanceOf(AlreadyExistsError);
      expect((error as Error).message).toBe(
        `"out" expected a new path (overwrite: false), got an existing file at ${out}`,
      );
      expect((error as Error).cause).toMatchObject({ code: "EEXIST" });
      expect(await readFile(out, "utf8")).toBe("theirs");
      expect(await partials()).toEqual([]);
    },
  );

  it.each(Object.entries(inputs))(
    "%s: an existing file or symbolic link (dangling or not) is refused before any work",
    async (name, call) => {
      const file = join(dir, `exists-${name}`);
      await writeFile(file, "old");
      const dangling = join(dir, `dangling-${name}`);
      await symlink(join(dir, "nowhere"), dangling);
      for (const out of [file, dangling]) {
        let progressed = false;
        await expect(call(out, () => (progressed = true))).rejects.toBeInstanceOf(
          AlreadyExistsError,
        );
        expect(progressed).toBe(false);
      }
      expect(await readFile(file, "utf8")).toBe("old");
      await expect(readFile(join(dir, "nowhere"))).rejects.toMatchObject({ code: "ENOENT" });
      expect(await partials()).toEqual([]);
    },
  );

  it("a new path is written as with overwrite: true", async () => {
    const out = join(dir, "fresh.txt");
    await inputs.decryptFile(out);
    expect((await readFile(out)).equals(plaintext)).toBe(true);
    expect(await partials()).toEqual([]);
  });

  it("a directory at `out` fails with EISDIR, as the rename does without the option", async () => {
    const out = join(dir, "a-dir");
    await mkdir(out);
    for (const overwrite of [true, false]) {
      await expect(
        decryptFile({ in: join(dir, "plain.kms"), out, keyring, overwrite }),
      ).rejects.toMatchObject({ code: "EISDIR" });
    }
    expect(await readdir(out)).toEqual([]);
    expect(await partials()).toEqual([]);
  });

  it("without the option, a file created at `out` during the transfer is replaced (the default)", async () => {
    const out = join(dir, "replaced.txt");
    await decryptFile({
      in: join(dir, "plain.kms"),
      out,
      keyring,
      onProgress: () => writeFileSync(out, "theirs"),
    });
    expect((await readFile(out)).equals(plaintext)).toBe(true);
  });

  it('"overwrite" must be a boolean', async () => {
    for (const overwrite of ["false", 0, null, {}]) {
      await expect(
        decryptFile({
          in: join(dir, "plain.kms"),
          out: join(dir, "junk.txt"),
          keyring,
          overwrite: overwrite as unknown as boolean,
        }),
      ).rejects.toBeInstanceOf(ValidationError);
    }
  });

  describe("where hard links are not supported", () => {
    it.each(["EPERM", "ENOTSUP", "ENOSYS"])(
      "%s from link: copied into a new file created exclusively, synced, mode 0600",
      async (code) => {
        calls.failLink = code;
        const out = join(dir, `copied-${code}.txt`);
        await inputs.decryptFile(out);
        expect((await readFile(out)).equals(plaintext)).toBe(true);
        const { mode } = await stat(out);
        expect(mode & 0o777).toBe(0o600);
        expect(await partials()).toEqual([]);
        const copied = calls.log.lastIndexOf(`sync ${out}`);
        expect(copied).toBeGreaterThan(calls.log.indexOf(`link ${out}`));
        expect(calls.log.at(-1)).toBe(`sync ${dirname(out)}`);
      },
    );

    it("a file created at `out` during the transfer is still left intact", async () => {
      calls.failLink = "EPERM";
      const out = join(dir, "copied-race.txt");
      let created = false;
      await expect(
        inputs.decryptFile(out, () => {
          if (created) return;
          created = true;
          writeFileSync(out, "theirs", { flag: "wx" });
        }),
      ).rejects.toBeInstanceOf(AlreadyExistsError);
      expect(await readFile(out, "utf8")).toBe("theirs");
      expect(await partials()).toEqual([]);
    });

    it("any other link error (ENOSPC) fails the call and leaves nothing", async () => {
      calls.failLink = "ENOSPC";
      const out = join(dir, "nolink.txt");
      await expect(inputs.decryptFile(out)).rejects.toMatchObject({ code: "ENOSPC" });
      await expect(readFile(out)).rejects.toMatchObject({ code: "ENOENT" });
      expect(await partials()).toEqual([]);
    });
  });
});
