/**
 * File entry points for a command line (`kms encrypt --in a --out a.kms`): stream a file (or
 * stdin) through the message engine to a file (or stdout) with a progress callback. A file
 * output is written to a temporary file beside `out` (created exclusively, mode 0600) and
 * renamed only when the whole message verified, so a failed or aborted decryption (including a
 * bad trailing signature) never leaves plaintext at `out`; a stream output receives each frame
 * once its tag verified.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, type Stats } from "node:fs";
import { open, rename, stat, unlink } from "node:fs/promises";
import { type Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ValidationError } from "../errors.ts";
import { createDecryptStream, createEncryptStream } from "./node-stream.ts";
import type { DecryptStreamOptions, EncryptStreamOptions, MessageInfo } from "./options.ts";

export interface FileProgress {
  /** Input bytes read so far. */
  readonly bytesRead: number;
  /**
   * Size of the input file; undefined when `in` is a stream or a path to anything but a regular
   * file (a FIFO, `/dev/stdin`, `<(…)`), whose size is not known in advance.
   */
  readonly totalBytes: number | undefined;
}

interface FileOptions {
  /** Input path, or a readable stream (e.g. stdin). */
  readonly in: string | NodeJS.ReadableStream;
  /**
   * Output path, replaced atomically on success by a file of mode 0600 (whatever the umask or
   * the mode of the file it replaces); or a writable stream (e.g. stdout), which is written to
   * but not ended — the caller owns it. A FIFO, device or socket at the path is refused, since
   * the rename would replace it: pass a stream opened on it to write through it.
   */
  readonly out: string | NodeJS.WritableStream;
  /** Called after each input chunk (at most once per 64 KiB read). */
  readonly onProgress?: (progress: FileProgress) => void;
  /**
   * Stops the transfer: the streams are torn down (an output stream is left open, as on any
   * error), the temporary file is removed, and the call rejects with `signal.reason`.
   */
  readonly signal?: AbortSignal;
}

export interface EncryptFileOptions
  extends FileOptions,
    Omit<EncryptStreamOptions, "encryptionContext" | "plaintextLength"> {
  /** The encryption context (`encryptionContext` in the other APIs). */
  readonly context?: EncryptStreamOptions["encryptionContext"];
}

export interface DecryptFileOptions
  extends FileOptions,
    Omit<DecryptStreamOptions, "encryptionContext"> {
  /** Expected encryption context (exact match, as `encryptionContext` elsewhere). */
  readonly context?: DecryptStreamOptions["encryptionContext"];
}

/**
 * Encrypts the file at `in` into a message at `out`.
 * @throws ValidationException for bad paths or options (including an `out` that is not a
 *   regular file); `signal.reason` when aborted; file-system errors as thrown.
 */
export async function encryptFile(options: EncryptFileOptions): Promise<{ bytesRead: number }> {
  const { in: input, out, onProgress, signal, context, ...rest } = options;
  const totalBytes = await checkEnds(input, out, signal);
  const encrypt = createEncryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
    // A known size lets data-key caching (byte limits) apply.
    ...(totalBytes === undefined ? {} : { plaintextLength: totalBytes }),
  });
  const bytesRead = await run(input, out, totalBytes, encrypt, onProgress, signal);
  return { bytesRead };
}

/**
 * Decrypts the message at `in` into `out`. `out` appears only if the whole message verified.
 * @throws InvalidCiphertextException, AccessDeniedException as `decryptMessage`;
 *   ValidationException as `encryptFile`; `signal.reason` when aborted; file-system errors as
 *   thrown.
 */
export async function decryptFile(
  options: DecryptFileOptions,
): Promise<{ bytesRead: number; info: MessageInfo }> {
  const { in: input, out, onProgress, signal, context, ...rest } = options;
  const totalBytes = await checkEnds(input, out, signal);
  let info: MessageInfo | undefined;
  const decrypt = createDecryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
    onHeader: (header) => {
      info = header;
      rest.onHeader?.(header);
    },
  });
  const bytesRead = await run(input, out, totalBytes, decrypt, onProgress, signal);
  return { bytesRead, info: info! };
}

const isStream = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as Readable).pipe === "function";

/**
 * Checks both ends and the signal, and returns the input's size: known only for a regular file.
 * A FIFO, `/dev/stdin` or `<(…)` stats as 0 bytes, which declared as `plaintextLength` would
 * refuse the first byte read.
 */
async function checkEnds(
  input: unknown,
  out: unknown,
  signal: AbortSignal | undefined,
): Promise<number | undefined> {
  if (!isStream(out) && (typeof out !== "string" || out.length === 0)) {
    throw new ValidationError('"out" expected a file path or a writable stream');
  }
  if (!isStream(input) && (typeof input !== "string" || input.length === 0)) {
    throw new ValidationError('"in" expected a file path or a readable stream');
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new ValidationError('"signal" expected an AbortSignal');
  }
  signal?.throwIfAborted();
  if (typeof out === "string") {
    // A directory is left to the rename to refuse (EISDIR), as before.
    const existing = await stat(out).catch(() => undefined);
    if (existing !== undefined && !existing.isFile() && !existing.isDirectory()) {
      throw new ValidationError(
        `"out" expected a regular file or a new path, got ${kind(existing)} at ${out}: pass a writable stream to write through it`,
      );
    }
  }
  if (typeof input !== "string") return undefined;
  const info = await stat(input);
  return info.isFile() ? info.size : undefined;
}

const kind = (info: Stats): string =>
  info.isFIFO() ? "a FIFO" : info.isSocket() ? "a socket" : "a device";

/**
 * Settles as `work` does, or rejects with `signal.reason` as soon as the signal aborts: a read
 * blocked on a FIFO or device that never delivers would otherwise hold the pipeline (and the
 * caller) until it does.
 */
function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  work.catch(() => undefined); // when the abort wins, the pipeline's own rejection is not news
  return new Promise<T>((resolve, reject) => {
    const stop = (): void => reject(signal.reason);
    if (signal.aborted) return stop();
    signal.addEventListener("abort", stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", stop));
  });
}

/**
 * A writable that passes each chunk to the caller's `out` and takes the next only once `out`
 * accepted it, so a transfer ends when `out` has taken everything and a write that fails late
 * (a reader that went away: EPIPE) fails the call. Piping into `out` itself would leave the
 * pipeline's listeners on a long-lived stream such as stdout after every call, and finish
 * before `out` reported how its last writes went. `out` is never ended or destroyed here.
 */
function relayInto(out: NodeJS.WritableStream): { stream: Writable; release(): void } {
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.write(chunk, (error?: Error | null) => callback(error ?? undefined));
    },
  });
  // Until released, an error event of `out` (whose write callback also gets it) must not be
  // left without a listener, which would make it an uncaught exception.
  const failed = (error: Error): void => {
    stream.destroy(error);
  };
  out.on("error", failed);
  return { stream, release: () => out.off("error", failed) };
}

async function run(
  input: string | NodeJS.ReadableStream,
  out: string | NodeJS.WritableStream,
  totalBytes: number | undefined,
  transform: Transform,
  onProgress: ((progress: FileProgress) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<number> {
  let bytesRead = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytesRead += chunk.length;
      onProgress?.({ bytesRead, totalBytes });
      callback(null, chunk);
    },
  });
  const aborts = signal === undefined ? {} : { signal };
  if (typeof out !== "string") {
    const source = typeof input === "string" ? createReadStream(input) : input;
    const relay = relayInto(out);
    try {
      await abortable(pipeline(source, counter, transform, relay.stream, aborts), signal);
    } finally {
      relay.release();
    }
    return bytesRead;
  }
  const temporary = `${out}.${randomBytes(6).toString("hex")}.partial`;
  // Exclusive (O_EXCL): a file or symbolic link already at this name is neither followed nor
  // written, nor removed below: the call fails with EEXIST. Mode 0600: decrypt output is
  // plaintext, readable by nobody else while it is written.
  const handle = await open(temporary, "wx", 0o600);
  try {
    // Made after the awaits above, so an error of its own (a missing file) has a listener.
    const source = typeof input === "string" ? createReadStream(input) : input;
    await abortable(
      pipeline(source, counter, transform, handle.createWriteStream(), aborts),
      signal,
    );
    signal?.throwIfAborted();
    await rename(temporary, out);
  } catch (error) {
    // Closed before the unlink (which a Windows file system refuses for an open file); the
    // write stream may be closing it too, and then this waits for that.
    await handle.close().catch(() => undefined);
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  return bytesRead;
}
