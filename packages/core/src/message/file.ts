/**
 * File entry points for a command line (`kms encrypt --in a --out a.kms`): stream a file (or
 * stdin) through the message engine to a file (or stdout) with a progress callback. A file
 * output is written to a temporary file beside `out` (created exclusively, mode 0600), flushed
 * to disk, and moved into place only when the whole message verified, so a failed or aborted
 * decryption (including a bad trailing signature) never leaves plaintext at `out`, and an `out`
 * reported as written survives a power cut; a stream output receives each frame once its tag
 * verified.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, type Stats } from "node:fs";
import {
  type FileHandle,
  link,
  lstat,
  open,
  readdir,
  rename,
  stat,
  unlink,
} from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { type Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AlreadyExistsError, ValidationError } from "../errors.ts";
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
   * the mode of the file it replaces), synced to disk with its directory entry before the call
   * resolves; or a writable stream (e.g. stdout), which is written to but not ended — the caller
   * owns it. A FIFO, device or socket at the path is refused, since the rename would replace it:
   * pass a stream opened on it to write through it.
   */
  readonly out: string | NodeJS.WritableStream;
  /**
   * Whether a path `out` that exists is replaced (default `true`). With `false`, anything at
   * `out` (a file, or a symbolic link, dangling or not) is refused with `AlreadyExistsError`,
   * before the transfer and again as the finished file is moved into place, where no file that
   * appeared meanwhile is replaced: the file is hard-linked at `out`, which fails if the name is
   * taken, and the temporary name removed. Where the file system has no hard links, the finished
   * file is copied into a new file created exclusively at `out` instead: still never replacing
   * one, but a reader may see `out` while it is being filled. Ignored for a stream `out`.
   */
  readonly overwrite?: boolean;
  /** Called after each input chunk (at most once per 64 KiB read). */
  readonly onProgress?: (progress: FileProgress) => void;
  /**
   * Stops the transfer: the streams are torn down (an output stream is left open, as on any
   * error), the temporary file is removed, and the call rejects with `signal.reason`.
   */
  readonly signal?: AbortSignal;
}

/** What `encryptFile` and `decryptFile` resolve to (`decryptFile` adds the message's `info`). */
export interface FileResult {
  /** Input bytes read. */
  readonly bytesRead: number;
  /**
   * Set when `out` is in place but the temporary file could not be removed afterwards (with
   * `overwrite: false`, whose finished file is linked at `out` and then unlinked: an append-only
   * directory, say): its path, a second name for the output (plaintext, for `decryptFile`) that
   * the caller should remove or report. Never set for a stream `out`. A call that fails and
   * cannot remove its temporary file says so in its error instead: the path at the end of the
   * message and in the error's (non-enumerable) `leftover` property.
   */
  readonly leftover?: string;
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
 *   regular file); AlreadyExistsException for an existing `out` with `overwrite: false`;
 *   `signal.reason` when aborted; file-system errors as thrown.
 */
export async function encryptFile(options: EncryptFileOptions): Promise<FileResult> {
  const { in: input, out, onProgress, signal, overwrite, context, ...rest } = options;
  const totalBytes = await checkEnds(input, out, signal, overwrite);
  const encrypt = createEncryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
    // A known size lets data-key caching (byte limits) apply.
    ...(totalBytes === undefined ? {} : { plaintextLength: totalBytes }),
  });
  return run(input, out, totalBytes, encrypt, onProgress, signal, overwrite);
}

/**
 * Decrypts the message at `in` into `out`. `out` appears only if the whole message verified.
 * @throws InvalidCiphertextException, AccessDeniedException as `decryptMessage`;
 *   ValidationException and AlreadyExistsException as `encryptFile`; `signal.reason` when
 *   aborted; file-system errors as thrown.
 */
export async function decryptFile(
  options: DecryptFileOptions,
): Promise<FileResult & { info: MessageInfo }> {
  const { in: input, out, onProgress, signal, overwrite, context, ...rest } = options;
  const totalBytes = await checkEnds(input, out, signal, overwrite);
  let info: MessageInfo | undefined;
  // The caller's onHeader goes in unwrapped, so that the decryptor checks its type.
  const decrypt = createDecryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
  });
  decrypt.on("header", (header: MessageInfo) => {
    info = header;
  });
  const result = await run(input, out, totalBytes, decrypt, onProgress, signal, overwrite);
  return { ...result, info: info! };
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
  overwrite: unknown,
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
  if (overwrite !== undefined && typeof overwrite !== "boolean") {
    throw new ValidationError('"overwrite" expected a boolean');
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
    // Refused now rather than after the whole transfer; checked again as the file is moved in.
    if (overwrite === false && (await lstat(out).catch(() => undefined))?.isDirectory() === false) {
      throw taken(out);
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
  overwrite: boolean | undefined,
): Promise<FileResult> {
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
    return { bytesRead };
  }
  const temporary = temporaryPath(out);
  // Exclusive (O_EXCL): a file or symbolic link already at this name is neither followed nor
  // written, nor removed below: the call fails with EEXIST. Mode 0600: decrypt output is
  // plaintext, readable by nobody else while it is written.
  const handle = await open(temporary, "wx", 0o600);
  let leftover: string | undefined;
  try {
    // Made after the awaits above, so an error of its own (a missing file) has a listener.
    const source = typeof input === "string" ? createReadStream(input) : input;
    // `flush`: fsync before the close. Without it a rename can reach the disk before the data
    // does, and after a power cut `out` is empty or truncated (the plaintext maybe deleted by then).
    await abortable(
      pipeline(source, counter, transform, handle.createWriteStream({ flush: true }), aborts),
      signal,
    );
    signal?.throwIfAborted();
    leftover = await moveIntoPlace(temporary, out, overwrite !== false);
  } catch (error) {
    // Closed before the unlink (which a Windows file system refuses for an open file); the
    // write stream may be closing it too, and then this waits for that.
    await handle.close().catch(() => undefined);
    throw await discard(temporary, error);
  }
  // The new name is an entry in the directory, itself written back to disk only when it is synced.
  await syncDirectory(dirname(out));
  return leftover === undefined ? { bytesRead } : { bytesRead, leftover };
}

/**
 * Removes the temporary file of a call that failed, and returns the error to throw. A removal
 * that fails (an append-only directory, a file system gone read-only) is not swallowed: the
 * file may hold verified plaintext of a message that never finished, so the error names it
 * (its path, never its contents) at the end of its message, and in a non-enumerable `leftover`
 * property as `FileResult.leftover` does on success. A value thrown that is no Error object (an
 * abort reason) cannot carry the path: a process warning names it instead.
 */
async function discard(temporary: string, error: unknown): Promise<unknown> {
  const failure = await removalFailure(temporary);
  if (failure === undefined) return error;
  const why = codeOf(failure) || String(failure);
  const note = `the temporary file ${temporary} could not be removed (${why}): it may hold part of the output (plaintext, for a decryption); remove it`;
  if (error instanceof Error) {
    try {
      // Own properties: a DOMException (an abort reason) has only a getter for its message.
      Object.defineProperties(error, {
        message: { value: `${error.message}; ${note}`, configurable: true, writable: true },
        leftover: { value: temporary, configurable: true },
      });
      return error;
    } catch {
      // A frozen error: the warning below says it.
    }
  }
  process.emitWarning(`${note[0]?.toUpperCase()}${note.slice(1)}`, {
    code: "KMS_PARTIAL_OUTPUT_LEFT",
  });
  return error;
}

/**
 * Longest file name, in bytes, of the usual file systems (ext4, XFS, Btrfs, APFS; NTFS counts
 * 255 UTF-16 units, never more than the name's UTF-8 bytes).
 */
const MAX_NAME_BYTES = 255;

/**
 * `<out>.<12 hex>.partial`, in the directory of `out` (a rename across file systems would fail,
 * and a link too), its name cut short at a character boundary so the whole fits
 * {@link MAX_NAME_BYTES}: otherwise any `out` whose name is within 21 bytes of the limit, valid
 * itself, could never be written.
 */
function temporaryPath(out: string): string {
  const suffix = `.${randomBytes(6).toString("hex")}.partial`;
  const name = basename(out);
  const room = MAX_NAME_BYTES - suffix.length;
  if (Buffer.byteLength(name) <= room) return `${out}${suffix}`;
  let kept = 0;
  let bytes = 0;
  for (const char of name) {
    bytes += Buffer.byteLength(char);
    if (bytes > room) break;
    kept += char.length;
  }
  return join(dirname(out), `${name.slice(0, kept)}${suffix}`);
}

/** The name core gives a temporary file: `<name>.<12 hex>.partial` (see {@link temporaryPath}). */
const PARTIAL = /^(.*)\.[0-9a-f]{12}\.partial$/s;
const SUFFIX_BYTES = ".0123456789ab.partial".length;

/**
 * The temporary files that earlier `encryptFile`/`decryptFile` calls to `out` left beside it,
 * sorted. A process killed by SIGKILL (or the OOM killer, or a power cut) cannot remove its own,
 * and on decrypt it holds verified plaintext of a message that never finished; nothing else
 * would ever name it. For a name too long to take the suffix, the temporary name starts with a
 * prefix of it (cut at a character, so at most 3 bytes short of the limit). An unreadable
 * directory (a drop box one may only write to) gives none.
 */
export async function partialOutputsOf(out: string): Promise<string[]> {
  const name = basename(out);
  const entries = await readdir(dirname(out)).catch(() => [] as string[]);
  const cut = Buffer.byteLength(name) + SUFFIX_BYTES > MAX_NAME_BYTES;
  return entries
    .filter((entry) => {
      const prefix = PARTIAL.exec(entry)?.[1];
      if (prefix === undefined || prefix.length === 0) return false;
      if (prefix === name) return true;
      return cut && name.startsWith(prefix) && Buffer.byteLength(entry) > MAX_NAME_BYTES - 4;
    })
    .sort()
    .map((entry) => join(dirname(out), entry));
}

/** Codes of a `link` on a file system without hard links (FAT, exFAT, some network mounts). */
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

/**
 * Gives the finished file at `temporary` the name `out`. Replacing: one rename. Otherwise a
 * hard link, which the kernel refuses (EEXIST) if anything holds the name by then, whatever
 * appeared there since the check at the start; a rename would replace it. Resolves to the
 * temporary path when `out` is in place but that name could not be removed afterwards: the
 * call has done its work then, and failing it would tell the caller `out` was not written.
 */
async function moveIntoPlace(
  temporary: string,
  out: string,
  replace: boolean,
): Promise<string | undefined> {
  if (replace) {
    await rename(temporary, out);
    return undefined;
  }
  try {
    await link(temporary, out);
  } catch (error) {
    if (!NO_HARD_LINKS.has(codeOf(error))) throw await refusal(error, temporary, out);
    await copyExclusive(temporary, out).catch(async (failure: unknown) => {
      throw await refusal(failure, temporary, out);
    });
  }
  return (await removalFailure(temporary)) === undefined ? undefined : temporary;
}

/** Unlinks `path`; resolves to why it is still there, or undefined (removed, or already gone). */
async function removalFailure(path: string): Promise<unknown> {
  const failure = await unlink(path).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  return codeOf(failure) === "ENOENT" ? undefined : failure;
}

/**
 * Copies `from` into a new file at `to`, created exclusively, and syncs it: no-clobber where
 * hard links are not supported, at the cost of a window in which `to` is visible but not full.
 * A copy that fails is removed.
 */
async function copyExclusive(from: string, to: string): Promise<void> {
  const target = await open(to, "wx", 0o600);
  try {
    await target.writeFile(createReadStream(from));
    await target.sync();
  } catch (error) {
    await target.close().catch(() => undefined);
    await unlink(to).catch(() => undefined);
    throw error;
  }
  await target.close();
}

/**
 * An EEXIST from moving the file in as the `AlreadyExistsError` the start would have thrown, or
 * for a directory the EISDIR that `rename` gives when replacing; any other error as it is.
 */
async function refusal(error: unknown, temporary: string, out: string): Promise<unknown> {
  if (codeOf(error) !== "EEXIST") return error;
  if ((await lstat(out).catch(() => undefined))?.isDirectory() !== true) return taken(out, error);
  return Object.assign(
    new Error(`EISDIR: illegal operation on a directory, link '${temporary}' -> '${out}'`),
    { code: "EISDIR", syscall: "link", path: temporary, dest: out },
  );
}

const taken = (out: string, cause?: unknown): AlreadyExistsError =>
  new AlreadyExistsError(
    `"out" expected a new path (overwrite: false), got an existing file at ${out}`,
    cause === undefined ? undefined : { cause },
  );

/**
 * Codes of a directory that cannot be synced, where the call succeeds without it: Windows cannot
 * open a directory (EISDIR) nor sync one (EPERM); some file systems refuse the fsync (EINVAL,
 * ENOTSUP); a directory one may write to but not read (EACCES, as a drop box) cannot be opened.
 */
const NO_DIRECTORY_SYNC = new Set(["EACCES", "EINVAL", "EISDIR", "ENOTSUP", "EPERM"]);

async function syncDirectory(path: string): Promise<void> {
  let directory: FileHandle;
  try {
    directory = await open(path, "r");
  } catch (error) {
    if (NO_DIRECTORY_SYNC.has(codeOf(error))) return;
    throw error;
  }
  try {
    await directory.sync();
  } catch (error) {
    if (!NO_DIRECTORY_SYNC.has(codeOf(error))) throw error;
  } finally {
    await directory.close();
  }
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}
