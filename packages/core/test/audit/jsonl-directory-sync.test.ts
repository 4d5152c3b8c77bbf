/**
 * `JsonlAuditSink` with `{ sync: true }` that creates its file (found in review): it fsynced
 * the file after every batch but never the directory, so a power cut could lose the new file's
 * directory entry, and with it every event synced into the file. A power cut cannot be
 * simulated: which descriptors are fsynced is checked through a wrapped node:fs.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createKms, JsonlAuditSink, KmsInternalError } from "../../src/index.ts";

const fs = vi.hoisted(() => ({
  /** Paths whose descriptor was fsynced (fsyncSync), in order. */
  synced: [] as string[],
  /** The code an fsync of `path` fails with, if any. */
  failSync: (_path: string): string | undefined => undefined,
}));

vi.mock("node:fs", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs")>();
  const paths = new Map<number, string>();
  const openSync = ((path: string, ...rest: unknown[]) => {
    const fd = (real.openSync as (...args: unknown[]) => number)(path, ...rest);
    paths.set(fd, String(path));
    return fd;
  }) as typeof real.openSync;
  const fsyncSync = ((fd: number) => {
    const path = paths.get(fd) ?? "?";
    fs.synced.push(path);
    const fail = fs.failSync(path);
    if (fail !== undefined) throw Object.assign(new Error(`${fail}: injected`), { code: fail });
    return real.fsyncSync(fd);
  }) as typeof real.fsyncSync;
  const mocked = { ...real, openSync, fsyncSync };
  return { ...mocked, default: mocked };
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-jsonl-dir-sync-"));
  fs.synced.length = 0;
  fs.failSync = () => undefined;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeThree(sink: JsonlAuditSink): Promise<void> {
  const kms = await createKms({ audit: sink });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  await kms.describeKey({ keyId });
  await kms.listKeys();
  await kms.close();
}

describe.skipIf(process.platform === "win32")(
  "JsonlAuditSink syncs the directory of a file it creates",
  () => {
    it("with sync, once, after creating the file", async () => {
      await writeThree(new JsonlAuditSink(join(dir, "audit.jsonl"), { sync: true }));
      expect(fs.synced).toEqual([dir]);
    });

    it("not for a file that already exists", async () => {
      const path = join(dir, "audit.jsonl");
      await writeFile(path, "");
      await writeThree(new JsonlAuditSink(path, { sync: true }));
      expect(fs.synced).toEqual([]);
    });

    it("not without sync", async () => {
      await writeThree(new JsonlAuditSink(join(dir, "audit.jsonl")));
      expect(fs.synced).toEqual([]);
    });

    it("a file system that cannot sync a directory (EINVAL) does not fail the write", async () => {
      fs.failSync = (path) => (path === dir ? "EINVAL" : undefined);
      await writeThree(new JsonlAuditSink(join(dir, "audit.jsonl"), { sync: true }));
      expect(fs.synced).toEqual([dir]);
    });

    it("a failed sync (EIO) fails the write, and the next write syncs the directory again", async () => {
      const path = join(dir, "audit.jsonl");
      const sink = new JsonlAuditSink(path, { sync: true });
      fs.failSync = (p) => (p === dir ? "EIO" : undefined);
      const kms = await createKms({ audit: sink });
      await expect(kms.listKeys()).rejects.toBeInstanceOf(KmsInternalError);
      fs.failSync = () => undefined;
      await kms.listKeys();
      await kms.close();
      expect(fs.synced).toEqual([dir, dir]);
    });
  },
);
