import { constants, type Stats } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import { ROOT_KEY_LENGTH, RootKeyError, type RootKeySource } from "@kms/core";
import type { CliIo } from "../cli-io.ts";
import { oneLine } from "./one-line.ts";

/**
 * Never waits on the open (a FIFO with no writer would hold the command until one came) and never
 * makes a terminal the process's controlling one. Windows has neither flag, nor FIFOs to open.
 */
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0) | (constants.O_NOCTTY ?? 0);

const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/**
 * Core's limit: 64 hex digits (the longest encoding) with room for surrounding whitespace. One
 * byte more is read, so that a longer file is refused without being read whole.
 */
const MAX_ROOT_KEY_FILE_BYTES = 1024;

/**
 * `--root-key-file <path>`: core's `RootKeySource.fromFile`, with two rules of the CLI's own.
 * Only a regular file is read: a directory, FIFO, socket or device is refused before anything is
 * read from it (a FIFO with no writer would wait forever, `/dev/zero` never ends, `/dev/tty` reads
 * the keyboard). And a key file open to group or other users (mode & 0077) gets ssh's warning for
 * such a private key, once, on stderr, but is still used (ssh ignores the key): refusing would
 * stop every command of a deployment whose secret is mounted 0640 the day it upgrades. The
 * warning comes once the key was read, so a file that holds no key fails with its one line.
 * The text is parsed as core parses it (64 hex digits, else base64 of 32 bytes, surrounding
 * whitespace ignored): core does not export its parser.
 */
export function rootKeyFromFile(io: CliIo, path: string): RootKeySource {
  let warned = false;
  return {
    description: `file ${path}`,
    async load() {
      const { key, mode } = await readRootKeyFile(path);
      if (!warned && process.platform !== "win32" && (mode & 0o077) !== 0) {
        warned = true;
        io.stderr.write(
          `kms: warning: root key file ${oneLine(path)} is open to group or other users (mode ${(mode & 0o777).toString(8)}): chmod 600 it\n`,
        );
      }
      return key;
    },
  };
}

/**
 * The key in `path` and the file's mode. The type is checked twice: on the path, so that a device
 * is not even opened (opening some has effects of its own), and on the opened handle, which is
 * what is read and whose mode is reported, so that a file swapped in between is refused too.
 */
async function readRootKeyFile(path: string): Promise<{ key: Uint8Array; mode: number }> {
  const buffer = Buffer.alloc(MAX_ROOT_KEY_FILE_BYTES + 1);
  try {
    let handle: FileHandle | undefined;
    let length = 0;
    let mode = 0;
    try {
      refuseUnlessRegular(path, await stat(path));
      handle = await open(path, OPEN_FLAGS);
      const info = await handle.stat();
      refuseUnlessRegular(path, info);
      mode = info.mode;
      // A file that grows while it is read is still read only this far.
      while (length < buffer.length) {
        const { bytesRead } = await handle.read(buffer, length, buffer.length - length);
        if (bytesRead === 0) break;
        length += bytesRead;
      }
    } catch (cause) {
      if (cause instanceof RootKeyError) throw cause;
      throw new RootKeyError(`cannot read root key file ${path}`, { cause });
    } finally {
      await handle?.close().catch(() => undefined);
    }
    if (length > MAX_ROOT_KEY_FILE_BYTES) {
      throw new RootKeyError(
        `root key file ${path} holds more than ${MAX_ROOT_KEY_FILE_BYTES} bytes: it must hold only 64 hex digits or base64 of ${ROOT_KEY_LENGTH} bytes`,
      );
    }
    return { key: parseKey(buffer.toString("utf8", 0, length), path), mode };
  } finally {
    buffer.fill(0);
  }
}

function refuseUnlessRegular(path: string, info: Stats): void {
  if (info.isFile()) return;
  throw new RootKeyError(
    `root key file ${path} is ${kindOf(info)}, not a regular file: put the key in a file (mode 0600)`,
  );
}

function kindOf(info: Stats): string {
  if (info.isDirectory()) return "a directory";
  if (info.isFIFO()) return "a FIFO";
  if (info.isSocket()) return "a socket";
  if (info.isCharacterDevice()) return "a character device";
  if (info.isBlockDevice()) return "a block device";
  return "an unknown kind of file";
}

/**
 * As core's RootKeySource.fromFile reads a key. The decoded bytes are copied out and wiped:
 * Buffer.from(string) carves small results out of Node's shared pool, which later
 * Buffer.allocUnsafe calls hand out again.
 */
function parseKey(text: string, path: string): Uint8Array {
  const trimmed = text.trim();
  const bytes = HEX_KEY.test(trimmed)
    ? Buffer.from(trimmed, "hex")
    : Buffer.from(trimmed, "base64");
  try {
    if (bytes.length !== ROOT_KEY_LENGTH) {
      throw new RootKeyError(
        `root key from file ${path} must be ${ROOT_KEY_LENGTH} bytes as 64 hex digits or base64`,
      );
    }
    return new Uint8Array(bytes);
  } finally {
    bytes.fill(0);
  }
}
