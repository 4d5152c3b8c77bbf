/**
 * Audit events as JSON Lines in an append-only file. The only module of core that touches the
 * file system.
 */
import {
  closeSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { KmsInternalError } from "../errors.ts";
import type { AuditEvent, AuditReadOptions, AuditSink } from "./audit-sink.ts";

export interface JsonlAuditSinkOptions {
  /**
   * fsync after every batch: survives power loss, at the cost of one disk flush per batch.
   * Default false: a written batch survives a process crash (it is in the OS), not a power cut.
   */
  readonly sync?: boolean;
}

/**
 * Whether the text after a file's last newline is what a write cut short leaves: the start of
 * one of this sink's lines (a JSON object that does not parse yet), or the zeros a power cut can
 * leave where data never reached the disk. Such a line was never complete, so no call was
 * acknowledged for it. Anything else is not this sink's, and is left alone.
 */
function isTornLine(text: string): boolean {
  if (text.length > 0 && text.replaceAll("\u0000", "") === "") return true;
  return text.startsWith("{") && !isJson(text);
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const SCAN_CHUNK = 64 * 1024;

/** Offset just past the last newline of the open file `fd` of `size` bytes (0 if none). */
function endOfLastLine(fd: number, size: number): number {
  const chunk = Buffer.alloc(Math.min(SCAN_CHUNK, size));
  for (let end = size; end > 0; ) {
    const start = Math.max(0, end - chunk.length);
    const read = readSync(fd, chunk, 0, end - start, start);
    const at = chunk.subarray(0, read).lastIndexOf(0x0a);
    if (at >= 0) return start + at + 1;
    end = start;
  }
  return 0;
}

/**
 * Makes the file end with a complete line before this sink appends to it, so that a new event
 * never lands on the end of an unfinished one (which would make both unreadable, and with them
 * the whole trail). A line that is complete but for its newline gets the newline; a torn line
 * (see isTornLine) is cut off.
 * @throws Error when the last line is neither: the file holds something else.
 */
function completeLastLine(fd: number): void {
  const size = fstatSync(fd).size;
  if (size === 0) return;
  const last = Buffer.alloc(1);
  readSync(fd, last, 0, 1, size - 1);
  if (last[0] === 0x0a) return;
  const cut = endOfLastLine(fd, size);
  const fragment = Buffer.alloc(size - cut);
  let offset = 0;
  while (offset < fragment.length) {
    const read = readSync(fd, fragment, offset, fragment.length - offset, cut + offset);
    if (read === 0) break;
    offset += read;
  }
  const text = fragment.toString("utf8", 0, offset);
  if (isTornLine(text)) {
    ftruncateSync(fd, cut);
  } else if (text.trim() === "" || isJson(text)) {
    writeSync(fd, "\n");
  } else {
    throw new Error("the file does not end with a line of JSON");
  }
}

/**
 * Appends with a synchronous write(2) per batch: an append to the page cache takes a few
 * microseconds, far less than a round trip through libuv's thread pool, and the KMS must wait
 * for the write anyway before it acknowledges the calls of the batch (fail-closed).
 */
export class JsonlAuditSink implements AuditSink {
  readonly description: string;
  readonly #path: string;
  readonly #sync: boolean;
  #fd: number | undefined;

  constructor(path: string, options: JsonlAuditSinkOptions = {}) {
    this.#path = path;
    this.#sync = options.sync ?? false;
    this.description = `jsonl:${path}`;
  }

  /** @throws KMSInternalException when the file cannot be written. */
  async write(events: readonly AuditEvent[]): Promise<void> {
    if (events.length === 0) return;
    let text = "";
    for (const e of events) text += `${JSON.stringify(e)}\n`;
    try {
      this.#fd ??= this.#open();
      const bytes = Buffer.from(text, "utf8");
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(this.#fd, bytes, offset);
      if (this.#sync) fdatasyncSync(this.#fd);
    } catch (error) {
      this.#closeFd();
      throw new KmsInternalError(`audit sink ${this.description} could not write`, {
        cause: error,
      });
    }
  }

  /** Opens for appending (and reading the tail), after a torn last line is dealt with. */
  #open(): number {
    const fd = openSync(this.#path, "a+", 0o600);
    try {
      completeLastLine(fd);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    return fd;
  }

  #closeFd(): void {
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already unusable
      }
    }
  }

  async #all(): Promise<AuditEvent[]> {
    let text: string;
    try {
      text = await readFile(this.#path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new KmsInternalError(`audit sink ${this.description} could not read`, {
        cause: error,
      });
    }
    const events: AuditEvent[] = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.trim() === "") continue;
      // After the last newline: a write cut short by a crash or a full disk holds no event
      // (its call was never acknowledged); the next write cuts it off.
      if (i === lines.length - 1 && isTornLine(line)) continue;
      try {
        events.push(JSON.parse(line) as AuditEvent);
      } catch (error) {
        throw new KmsInternalError(`audit sink ${this.description}: line ${i + 1} is not JSON`, {
          cause: error,
        });
      }
    }
    return events;
  }

  /** @throws KMSInternalException when the file cannot be read or holds a non-JSON line. */
  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    const after = options.after ?? -1;
    const found = (await this.#all()).filter((e) => e.sequence > after);
    return options.limit === undefined ? found : found.slice(0, options.limit);
  }

  async last(): Promise<AuditEvent | undefined> {
    const all = await this.#all();
    return all[all.length - 1];
  }

  async close(): Promise<void> {
    this.#closeFd();
  }
}
