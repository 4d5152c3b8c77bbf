/** encryptFile / decryptFile: progress, atomic output, no plaintext left behind on failure. */
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  decryptFile,
  decryptMessage,
  encryptFile,
  type FileProgress,
  InvalidCiphertextError,
  ValidationError,
} from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

let dir: string;
const keyring = aesKeyring();
const data = randomBytes(300_000);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-message-"));
  await writeFile(join(dir, "plain.bin"), data);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("encryptFile / decryptFile", () => {
  it("round-trips a file and reports progress up to the total", async () => {
    const progress: FileProgress[] = [];
    const encrypted = await encryptFile({
      in: join(dir, "plain.bin"),
      out: join(dir, "plain.bin.kms"),
      keyring,
      context: { file: "plain.bin" },
      frameLength: 4096,
      onProgress: (p) => progress.push(p),
    });
    expect(encrypted.bytesRead).toBe(data.length);
    expect(progress.at(-1)).toEqual({ bytesRead: data.length, totalBytes: data.length });
    const message = await readFile(join(dir, "plain.bin.kms"));
    expect((await decryptMessage(message, { keyring })).encryptionContext).toEqual({
      file: "plain.bin",
    });

    const decrypted = await decryptFile({
      in: join(dir, "plain.bin.kms"),
      out: join(dir, "plain.out"),
      keyring,
      context: { file: "plain.bin" },
    });
    expect(decrypted.info.frameLength).toBe(4096);
    expect((await readFile(join(dir, "plain.out"))).equals(data)).toBe(true);
  });

  it("reads from and writes to streams (stdin/stdout), leaving the output stream open", async () => {
    const progress: FileProgress[] = [];
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on("data", (c: Buffer) => chunks.push(c));
    const encrypted = await encryptFile({
      in: Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]),
      out: sink,
      keyring,
      onProgress: (p) => progress.push(p),
    });
    expect(encrypted.bytesRead).toBe(data.length);
    expect(progress.at(-1)).toEqual({ bytesRead: data.length, totalBytes: undefined });
    expect(sink.writableEnded).toBe(false);
    const message = Buffer.concat(chunks);
    expect((await decryptMessage(message, { keyring })).plaintext.length).toBe(data.length);

    const out = new PassThrough();
    const plain: Buffer[] = [];
    out.on("data", (c: Buffer) => plain.push(c));
    const decrypted = await decryptFile({ in: Readable.from([message]), out, keyring });
    expect(decrypted.bytesRead).toBe(message.length);
    expect(Buffer.concat(plain).equals(data)).toBe(true);
    await expect(
      decryptFile({ in: Readable.from([message]), out: 42 as never, keyring }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it("leaves no output (not even partial plaintext) when decryption fails late", async () => {
    await encryptFile({
      in: join(dir, "plain.bin"),
      out: join(dir, "t.kms"),
      keyring,
      frameLength: 4096,
    });
    const message = await readFile(join(dir, "t.kms"));
    message[message.length - 1]! ^= 1; // last frame's tag: every earlier frame verifies
    await writeFile(join(dir, "t.kms"), message);
    await expect(
      decryptFile({ in: join(dir, "t.kms"), out: join(dir, "t.out"), keyring }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const names = await readdir(dir);
    expect(names.filter((n) => n.startsWith("t.out"))).toEqual([]);
  });

  it("rejects bad paths and a wrong context", async () => {
    await expect(encryptFile({ in: "", out: "x", keyring })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(
      decryptFile({
        in: join(dir, "plain.bin.kms"),
        out: join(dir, "w.out"),
        keyring,
        context: { file: "other" },
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});
