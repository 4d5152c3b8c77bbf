/**
 * A temporary file that cannot be removed (an append-only directory: `chattr +a`; a file system
 * gone read-only) is never passed over in silence: after a failure the error names it, since it
 * may hold verified plaintext of a message that never finished; after a success (`out` linked
 * into place, then the temporary name not removable) the call resolves with `leftover`. The
 * failing `unlink` is injected through a wrapped node:fs/promises.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { decryptFile, encryptFile, InvalidCiphertextError } from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const injected = vi.hoisted(() => ({
  /** The code an `unlink` of a `.partial` file fails with, if any. */
  unlink: undefined as string | undefined,
}));

vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs/promises")>();
  const unlink = (async (path: string) => {
    if (injected.unlink !== undefined && String(path).endsWith(".partial")) {
      throw Object.assign(new Error(`${injected.unlink}: injected, unlink '${path}'`), {
        code: injected.unlink,
      });
    }
    return real.unlink(path);
  }) as typeof real.unlink;
  const mocked = { ...real, unlink };
  return { ...mocked, default: mocked };
});

let dir: string;
const keyring = aesKeyring();
const secret = "LEFTOVER-SECRET-MARKER\n";
const plaintext = Buffer.from(secret.repeat(20_000));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-file-leftover-"));
  await writeFile(join(dir, "plain.txt"), plaintext);
  await encryptFile({ in: join(dir, "plain.txt"), out: join(dir, "plain.kms"), keyring });
  const message = await readFile(join(dir, "plain.kms"));
  message[message.length - 1]! ^= 1; // the last frame's tag: every earlier frame verifies
  await writeFile(join(dir, "bad.kms"), message);
});
beforeEach(() => {
  injected.unlink = undefined;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const partialsOf = async (name: string): Promise<string[]> =>
  (await readdir(dir)).filter(
    (entry) => entry.startsWith(`${name}.`) && entry.endsWith(".partial"),
  );

describe("a temporary file that cannot be removed", () => {
  it("after a failed decryption: the error names it, keeps its type and carries no plaintext (regression: the failure to remove it was swallowed)", async () => {
    injected.unlink = "EPERM";
    const out = join(dir, "failed.txt");
    const error = await decryptFile({ in: join(dir, "bad.kms"), out, keyring }).catch(
      (e: unknown) => e,
    );
    const [left] = await partialsOf("failed.txt");
    expect(left).toBeDefined();
    expect(error).toBeInstanceOf(InvalidCiphertextError);
    expect((error as Error).message).toContain(
      `; the temporary file ${join(dir, left!)} could not be removed (EPERM): it may hold part of the output (plaintext, for a decryption); remove it`,
    );
    expect((error as Error).message).not.toContain("LEFTOVER-SECRET");
    expect((error as { leftover?: unknown }).leftover).toBe(join(dir, left!));
    expect(Object.keys(error as object)).not.toContain("leftover");
    // What the note is about: verified plaintext of the frames before the bad one.
    expect((await readFile(join(dir, left!), "utf8")).startsWith(secret)).toBe(true);
  });

  it("after an abort: the abort reason names it (a DOMException too, whose message is a getter)", async () => {
    injected.unlink = "EROFS";
    const out = join(dir, "aborted.txt");
    const controller = new AbortController();
    const call = decryptFile({
      in: join(dir, "plain.kms"),
      out,
      keyring,
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    const error = await call.catch((e: unknown) => e);
    const [left] = await partialsOf("aborted.txt");
    expect(error).toBe(controller.signal.reason);
    expect((error as Error).name).toBe("AbortError");
    expect((error as Error).message).toMatch(
      /; the temporary file .*aborted\.txt\.[0-9a-f]{12}\.partial could not be removed \(EROFS\)/,
    );
    expect(join(dir, left!)).toBe(
      /temporary file (.*\.partial) could not/.exec((error as Error).message)?.[1],
    );
  });

  it("after an abort whose reason is not an Error: a process warning names it", async () => {
    injected.unlink = "EPERM";
    const warnings: Error[] = [];
    const listen = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on("warning", listen);
    try {
      const controller = new AbortController();
      const call = decryptFile({
        in: join(dir, "plain.kms"),
        out: join(dir, "reason.txt"),
        keyring,
        signal: controller.signal,
        onProgress: () => controller.abort("stop"),
      });
      await expect(call).rejects.toBe("stop");
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("warning", listen);
    }
    const [left] = await partialsOf("reason.txt");
    expect(warnings.map((w) => [(w as { code?: string }).code, w.message])).toEqual([
      [
        "KMS_PARTIAL_OUTPUT_LEFT",
        `The temporary file ${join(dir, left!)} could not be removed (EPERM): it may hold part of the output (plaintext, for a decryption); remove it`,
      ],
    ]);
  });

  it("once the output is linked into place (overwrite: false): the call succeeds and returns its path (regression: it failed, `out` written all the same)", async () => {
    injected.unlink = "EPERM";
    const out = join(dir, "linked.txt");
    const result = await decryptFile({
      in: join(dir, "plain.kms"),
      out,
      keyring,
      overwrite: false,
    });
    const [left] = await partialsOf("linked.txt");
    expect(result.leftover).toBe(join(dir, left!));
    expect(result.bytesRead).toBeGreaterThan(0);
    expect((await readFile(out)).equals(plaintext)).toBe(true);
    const encrypted = await encryptFile({
      in: join(dir, "plain.txt"),
      out: join(dir, "linked.kms"),
      keyring,
      overwrite: false,
    });
    expect(encrypted.leftover).toMatch(/linked\.kms\.[0-9a-f]{12}\.partial$/);
  });

  it("removed as before when it can be: no note, no leftover", async () => {
    const error = await decryptFile({
      in: join(dir, "bad.kms"),
      out: join(dir, "clean.txt"),
      keyring,
    }).catch((e: unknown) => e);
    expect((error as Error).message).not.toContain("could not be removed");
    const result = await decryptFile({
      in: join(dir, "plain.kms"),
      out: join(dir, "clean2.txt"),
      keyring,
      overwrite: false,
    });
    expect(result).not.toHaveProperty("leftover");
    expect(await partialsOf("clean.txt")).toEqual([]);
    expect(await partialsOf("clean2.txt")).toEqual([]);
  });
});
