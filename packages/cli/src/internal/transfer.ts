import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, stat, unlink } from "node:fs/promises";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { CliIo } from "../cli-io.ts";

/**
 * The `-` half of encrypt/decrypt (core's encryptFile/decryptFile take paths only): streams
 * `input` (a path or stdin) through `transform` to `output` (a path or stdout). A file output
 * is written beside its target and renamed on success, as core's file functions do, so a
 * failed decryption leaves nothing at `output`. Stdout gets each verified frame as it comes.
 */
export async function streamThrough(
  io: CliIo,
  input: string,
  output: string,
  transform: Transform,
  onProgress: (bytesRead: number, totalBytes?: number) => void,
): Promise<number> {
  const totalBytes = input === "-" ? undefined : (await stat(input)).size;
  const source = input === "-" ? io.stdin : createReadStream(input);
  let bytesRead = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytesRead += chunk.length;
      onProgress(bytesRead, totalBytes);
      callback(null, chunk);
    },
  });
  if (output === "-") {
    // Never end the process's stdout: other output may follow, and Node would throw on it.
    await pipeline(source, counter, transform, io.stdout, { end: false });
    return bytesRead;
  }
  const temporary = `${output}.${randomBytes(6).toString("hex")}.partial`;
  try {
    await pipeline(source, counter, transform, createWriteStream(temporary, { mode: 0o600 }));
    await rename(temporary, output);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  return bytesRead;
}
