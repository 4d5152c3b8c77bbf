/**
 * File entry points for a command line (`kms encrypt --in a --out a.kms`): stream a file (or
 * stdin) through the message engine to a file (or stdout) with a progress callback. A file
 * output is written to a temporary file beside `out` and renamed only when the whole message
 * verified, so a failed decryption (including a bad trailing signature) never leaves plaintext
 * at `out`; a stream output receives each frame once its tag verified.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, stat, unlink } from "node:fs/promises";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ValidationError } from "../errors.ts";
import { createDecryptStream, createEncryptStream } from "./node-stream.ts";
import type { DecryptStreamOptions, EncryptStreamOptions, MessageInfo } from "./options.ts";

export interface FileProgress {
  /** Input bytes read so far. */
  readonly bytesRead: number;
  /** Size of the input file; undefined when `in` is a stream. */
  readonly totalBytes: number | undefined;
}

interface FileOptions {
  /** Input path, or a readable stream (e.g. stdin). */
  readonly in: string | NodeJS.ReadableStream;
  /**
   * Output path, replaced atomically on success; or a writable stream (e.g. stdout), which is
   * written to but not ended — the caller owns it.
   */
  readonly out: string | NodeJS.WritableStream;
  /** Called after each input chunk (at most once per 64 KiB read). */
  readonly onProgress?: (progress: FileProgress) => void;
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
 * @throws ValidationException for bad paths or options; file-system errors as thrown.
 */
export async function encryptFile(options: EncryptFileOptions): Promise<{ bytesRead: number }> {
  const { in: input, out, onProgress, context, ...rest } = options;
  const totalBytes = await inputSize(input, out);
  const encrypt = createEncryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
    // A known size lets data-key caching (byte limits) apply.
    ...(totalBytes === undefined ? {} : { plaintextLength: totalBytes }),
  });
  const bytesRead = await run(input, out, totalBytes, encrypt, onProgress);
  return { bytesRead };
}

/**
 * Decrypts the message at `in` into `out`. `out` appears only if the whole message verified.
 * @throws InvalidCiphertextException, AccessDeniedException as `decryptMessage`; file-system
 *   errors as thrown.
 */
export async function decryptFile(
  options: DecryptFileOptions,
): Promise<{ bytesRead: number; info: MessageInfo }> {
  const { in: input, out, onProgress, context, ...rest } = options;
  const totalBytes = await inputSize(input, out);
  let info: MessageInfo | undefined;
  const decrypt = createDecryptStream({
    ...rest,
    ...(context === undefined ? {} : { encryptionContext: context }),
    onHeader: (header) => {
      info = header;
      rest.onHeader?.(header);
    },
  });
  const bytesRead = await run(input, out, totalBytes, decrypt, onProgress);
  return { bytesRead, info: info! };
}

const isStream = (value: unknown): boolean =>
  typeof value === "object" && value !== null && typeof (value as Readable).pipe === "function";

/** The input's size (undefined for a stream), after checking both ends. */
async function inputSize(input: unknown, out: unknown): Promise<number | undefined> {
  if (!isStream(out) && (typeof out !== "string" || out.length === 0)) {
    throw new ValidationError('"out" expected a file path or a writable stream');
  }
  if (isStream(input)) return undefined;
  if (typeof input !== "string" || input.length === 0) {
    throw new ValidationError('"in" expected a file path or a readable stream');
  }
  return (await stat(input)).size;
}

async function run(
  input: string | NodeJS.ReadableStream,
  out: string | NodeJS.WritableStream,
  totalBytes: number | undefined,
  transform: Transform,
  onProgress: ((progress: FileProgress) => void) | undefined,
): Promise<number> {
  let bytesRead = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytesRead += chunk.length;
      onProgress?.({ bytesRead, totalBytes });
      callback(null, chunk);
    },
  });
  const source = typeof input === "string" ? createReadStream(input) : input;
  if (typeof out !== "string") {
    await pipeline(source, counter, transform, out, { end: false });
    return bytesRead;
  }
  const temporary = `${out}.${randomBytes(6).toString("hex")}.partial`;
  try {
    await pipeline(source, counter, transform, createWriteStream(temporary, { mode: 0o600 }));
    await rename(temporary, out);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  return bytesRead;
}
