/** encryptFile / decryptFile: progress, atomic output, no plaintext left behind on failure. */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstat, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable, Writable } from "node:stream";
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

const posix = process.platform !== "win32";

/** A FIFO at `dir/name`. */
function fifo(name: string): string {
  const path = join(dir, name);
  execFileSync("mkfifo", [path]);
  return path;
}

/** Names in the test folder starting with `prefix`: the output and any temporary file. */
const leftovers = async (prefix: string): Promise<string[]> =>
  (await readdir(dir)).filter((n) => n.startsWith(prefix));

describe.runIf(posix)("a path that is not a regular file", () => {
  it("encrypts from a FIFO without declaring its stat size (0) as the plaintext length", async () => {
    const input = fifo("in.fifo");
    const progress: FileProgress[] = [];
    const [encrypted] = await Promise.all([
      encryptFile({
        in: input,
        out: join(dir, "fifo.kms"),
        keyring,
        onProgress: (p) => progress.push(p),
      }),
      writeFile(input, data), // blocks until encryptFile opens the FIFO for reading
    ]);
    expect(encrypted.bytesRead).toBe(data.length);
    expect(progress.at(-1)).toEqual({ bytesRead: data.length, totalBytes: undefined });
    const message = await readFile(join(dir, "fifo.kms"));
    expect(Buffer.from((await decryptMessage(message, { keyring })).plaintext).equals(data)).toBe(
      true,
    );
  });

  it("refuses a FIFO at `out` instead of renaming a file over it", async () => {
    const output = fifo("out.fifo");
    const error = await encryptFile({ in: join(dir, "plain.bin"), out: output, keyring }).catch(
      (e) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toContain("a FIFO");
    expect((await lstat(output)).isFIFO()).toBe(true);
    expect(await leftovers("out.fifo.")).toEqual([]);
    await expect(
      decryptFile({ in: join(dir, "plain.bin.kms"), out: output, keyring }),
    ).rejects.toBeInstanceOf(ValidationError);
    expect((await lstat(output)).isFIFO()).toBe(true);
  });
});

describe("abort", () => {
  /** A stream that gives `first` and then nothing, never ending: a transfer in progress. */
  const stalled = (first: Uint8Array): Readable => {
    const stream = new Readable({ read() {} });
    stream.push(first);
    return stream;
  };

  it("an aborted encrypt to a path rejects with the reason and leaves no file", async () => {
    const controller = new AbortController();
    const reason = new Error("stopped by the caller");
    const error = await encryptFile({
      in: stalled(data.subarray(0, 10_000)),
      out: join(dir, "abort.kms"),
      keyring,
      frameLength: 4096,
      signal: controller.signal,
      onProgress: () => controller.abort(reason),
    }).catch((e) => e);
    expect(error).toBe(reason);
    expect(await leftovers("abort.kms")).toEqual([]);
  });

  it("an aborted decrypt to a path leaves no plaintext, not even frames that verified", async () => {
    const message = await readFile(join(dir, "plain.bin.kms")); // 4 KiB frames
    const controller = new AbortController();
    const error = await decryptFile({
      in: stalled(message.subarray(0, 100_000)),
      out: join(dir, "abort.out"),
      keyring,
      signal: controller.signal,
      onProgress: () => setTimeout(() => controller.abort(), 10),
    }).catch((e) => e);
    expect(error).toBe(controller.signal.reason);
    expect(error.name).toBe("AbortError");
    expect(await leftovers("abort.out")).toEqual([]);
  });

  it("an aborted transfer to a stream rejects with the reason and leaves the stream open", async () => {
    const controller = new AbortController();
    const sink = new PassThrough();
    const received: Buffer[] = [];
    sink.on("data", (c: Buffer) => received.push(c));
    const error = await encryptFile({
      in: stalled(data.subarray(0, 10_000)),
      out: sink,
      keyring,
      frameLength: 4096,
      signal: controller.signal,
      onProgress: () => setTimeout(() => controller.abort(), 10),
    }).catch((e) => e);
    expect(error).toBe(controller.signal.reason);
    expect(received.length).toBeGreaterThan(0); // the header and two frames went out
    expect(sink.destroyed).toBe(false);
    expect(sink.writableEnded).toBe(false);
  });

  it("an already aborted signal rejects before anything is read or written", async () => {
    const controller = new AbortController();
    controller.abort();
    const input = stalled(data.subarray(0, 10));
    await expect(
      encryptFile({ in: input, out: join(dir, "early.kms"), keyring, signal: controller.signal }),
    ).rejects.toBe(controller.signal.reason);
    expect(input.readableLength).toBe(10);
    expect(await leftovers("early.kms")).toEqual([]);
    await expect(
      decryptFile({ in: input, out: join(dir, "early.out"), keyring, signal: {} as never }),
    ).rejects.toThrow(/"signal" expected an AbortSignal/);
  });

  it.runIf(posix)("does not wait for a FIFO input that never delivers", async () => {
    const input = fifo("never.fifo");
    const controller = new AbortController();
    const reason = new Error("gave up waiting");
    setTimeout(() => controller.abort(reason), 20);
    await expect(
      encryptFile({ in: input, out: join(dir, "never.kms"), keyring, signal: controller.signal }),
    ).rejects.toBe(reason);
    expect(await leftovers("never.kms")).toEqual([]);
    await writeFile(input, ""); // releases the open still waiting for a writer
  });
});

describe("output file mode", () => {
  it.runIf(posix)("is 0600 for the decrypted plaintext (and the ciphertext)", async () => {
    expect((await stat(join(dir, "plain.bin.kms"))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "plain.out"))).mode & 0o777).toBe(0o600);
  });
});

describe("a stream output", () => {
  const keyring = aesKeyring("relay");
  const payload = new Uint8Array(50_000).fill(1);

  it("fails the call when the stream fails a write, even after the input ended", async () => {
    let writes = 0;
    const out = new Writable({
      write(_chunk, _encoding, callback) {
        writes += 1;
        // The reader goes away while the last frames are still on their way.
        setTimeout(
          () =>
            callback(
              writes > 2 ? Object.assign(new Error("write EPIPE"), { code: "EPIPE" }) : null,
            ),
          5,
        );
      },
    });
    out.on("error", () => {});
    const error = await encryptFile({
      in: Readable.from([payload]),
      out,
      keyring,
      frameLength: 4096,
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "EPIPE" });
  });

  it("returns once the stream took every byte, and leaves no listener on it", async () => {
    const taken: Buffer[] = [];
    const out = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, callback) {
        setTimeout(() => {
          taken.push(chunk);
          callback();
        }, 1);
      },
    });
    const before = out.eventNames().map((name) => [name, out.listenerCount(name)]);
    for (let i = 0; i < 3; i++) {
      taken.length = 0;
      await encryptFile({ in: Readable.from([payload]), out, keyring, frameLength: 4096 });
      const message = Buffer.concat(taken);
      expect((await decryptMessage(message, { keyring })).plaintext).toEqual(payload);
    }
    expect(out.eventNames().map((name) => [name, out.listenerCount(name)])).toEqual(before);
    expect(out.writableEnded).toBe(false);
  });
});
