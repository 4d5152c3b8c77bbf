/**
 * Audit events as JSON Lines in an append-only file, and beside it the index getKeyLastUsage
 * answers from (`<path>.usage-index.json`). The only module of core that touches the file
 * system.
 */
import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { type FileHandle, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { KmsInternalError } from "../errors.ts";
import type { AuditHead } from "./audit-chain.ts";
import type { AuditEvent, AuditReadOptions, AuditSink } from "./audit-sink.ts";
import { type ResumedUsageIndex, USAGE_INDEX, type UsageIndexStore } from "./usage-index.ts";

export interface JsonlAuditSinkOptions {
  /**
   * fsync after every batch, and the directory once after the sink creates the file (so that
   * the file's name survives too; skipped on Windows and on file systems that cannot sync a
   * directory): survives power loss, at the cost of one disk flush per batch. Default false: a
   * written batch survives a process crash (it is in the OS), not a power cut.
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

/** Reads exactly `bytes.length` bytes at `position` (fewer only at the end of the file). */
async function readFully(file: FileHandle, bytes: Buffer, position: number): Promise<number> {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesRead } = await file.read(bytes, offset, bytes.length - offset, position + offset);
    if (bytesRead === 0) break;
    offset += bytesRead;
  }
  return offset;
}

/** The index file's format (see JsonlAuditSink's usage index). */
const INDEX_VERSION = 1;

/** Longest index file read back: far more than one entry per key of any key store. */
const MAX_INDEX_BYTES = 512 * 1024 * 1024;

interface StoredIndex {
  readonly version: typeof INDEX_VERSION;
  /** The event the index was built up to. */
  readonly sequence: number;
  readonly hash: string;
  /** Byte offset just past that event's line (its newline included). */
  readonly offset: number;
  readonly data: unknown;
}

function isStoredIndex(value: unknown): value is StoredIndex {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    v.version === INDEX_VERSION &&
    Number.isSafeInteger(v.sequence) &&
    (v.sequence as number) >= 0 &&
    typeof v.hash === "string" &&
    /^[0-9a-f]{64}$/.test(v.hash) &&
    Number.isSafeInteger(v.offset) &&
    (v.offset as number) > 0
  );
}

/** Offset just past the last newline before `end` in `file` (0 if none). */
async function lineStart(file: FileHandle, end: number): Promise<number> {
  const chunk = Buffer.alloc(Math.min(SCAN_CHUNK, end));
  for (let stop = end; stop > 0; ) {
    const from = Math.max(0, stop - chunk.length);
    const read = await readFully(file, chunk.subarray(0, stop - from), from);
    const at = chunk.subarray(0, read).lastIndexOf(0x0a);
    if (at >= 0) return from + at + 1;
    stop = from;
  }
  return 0;
}

/** One line of the file, without its newline. */
interface Line {
  readonly text: string;
  /** How messages name it: "line 7", "the last line". */
  readonly where: string;
  /** False for text after the file's last newline. */
  readonly terminated: boolean;
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
 * Codes of a directory that cannot be synced, where the sink works without it: Windows cannot
 * open a directory (EISDIR) nor sync one (EPERM); some file systems refuse the fsync (EINVAL,
 * ENOTSUP); a directory one may write to but not read (EACCES) cannot be opened.
 */
const NO_DIRECTORY_SYNC: ReadonlySet<string> = new Set([
  "EACCES",
  "EINVAL",
  "EISDIR",
  "ENOTSUP",
  "EPERM",
]);

/** fsyncs the directory at `path`, where the platform and file system allow it. */
function syncDirectory(path: string): void {
  if (process.platform === "win32") return;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    if (NO_DIRECTORY_SYNC.has((error as NodeJS.ErrnoException).code ?? "")) return;
    throw error;
  }
  try {
    fsyncSync(fd);
  } catch (error) {
    if (!NO_DIRECTORY_SYNC.has((error as NodeJS.ErrnoException).code ?? "")) throw error;
  } finally {
    closeSync(fd);
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
  readonly #indexPath: string;
  readonly #sync: boolean;
  #fd: number | undefined;
  /** This sink created the file and its directory was not synced since (a failed sync retries). */
  #createdUnsynced = false;

  /**
   * Keeps getKeyLastUsage's index beside the trail, in `<path>.usage-index.json`, anchored to
   * the event it was built up to: a restarted Kms reads the index and the events after that
   * event, not the whole trail. Internal (see usage-index.ts).
   */
  readonly [USAGE_INDEX]: UsageIndexStore = {
    save: (head, data) => this.#saveIndex(head, data),
    resume: (pageSize) => this.#resumeIndex(pageSize),
  };

  constructor(path: string, options: JsonlAuditSinkOptions = {}) {
    this.#path = path;
    this.#indexPath = `${path}.usage-index.json`;
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

  /**
   * Opens for appending (and reading the tail), after a torn last line is dealt with. With
   * `sync`, a file this creates has its directory synced too: the file's name is an entry in the
   * directory, which a power cut can lose with every event fsynced into the file.
   */
  #open(): number {
    let fd: number;
    try {
      fd = openSync(this.#path, constants.O_RDWR | constants.O_APPEND);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      // Exclusive, so that only the file this sink made counts as created; one another writer
      // made meanwhile (EEXIST) is its creator's to sync.
      try {
        fd = openSync(this.#path, "ax+", 0o600);
        this.#createdUnsynced = true;
      } catch (again) {
        if ((again as NodeJS.ErrnoException).code !== "EEXIST") throw again;
        fd = openSync(this.#path, "a+", 0o600);
      }
    }
    try {
      completeLastLine(fd);
      if (this.#sync && this.#createdUnsynced) {
        syncDirectory(dirname(this.#path));
        this.#createdUnsynced = false;
      }
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

  /**
   * The file's lines in order, read in chunks: the trail is never one string (V8 caps strings
   * at 2^29 characters, and `readFile` refuses files over 2 GiB, so a trail past that size
   * could not be read at all, and a restarted Kms could not find its head).
   */
  async *#lines(from = 0): AsyncGenerator<Line> {
    let file: FileHandle;
    try {
      file = await open(this.#path, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw this.#readFailure(error);
    }
    try {
      const chunk = Buffer.alloc(SCAN_CHUNK);
      const decoder = new StringDecoder("utf8");
      const where = (n: number) => (from === 0 ? `line ${n}` : `line ${n} after byte ${from}`);
      let position = from;
      let pending = "";
      let number = 0;
      for (;;) {
        let read: number;
        try {
          ({ bytesRead: read } = await file.read(chunk, 0, chunk.length, position));
        } catch (error) {
          throw this.#readFailure(error);
        }
        if (read === 0) break;
        position += read;
        // Only the new text can hold a newline: pending has none left.
        let end = pending.length;
        pending += decoder.write(chunk.subarray(0, read));
        let start = 0;
        for (;;) {
          end = pending.indexOf("\n", end);
          if (end === -1) break;
          number++;
          yield { text: pending.slice(start, end), where: where(number), terminated: true };
          start = ++end;
        }
        pending = pending.slice(start);
      }
      pending += decoder.end();
      if (pending !== "") {
        yield { text: pending, where: where(number + 1), terminated: false };
      }
    } finally {
      await file.close().catch(() => {});
    }
  }

  /**
   * The event a line holds, or undefined for a line that holds none: a blank line, or text after
   * the last newline that a write cut short (its call was never acknowledged; the next write
   * cuts it off).
   * @throws KMSInternalException for a line that is not JSON, not an object, or not the text
   * this sink writes for the event it parses to.
   */
  #event(line: Line): AuditEvent | undefined {
    if (line.text.trim() === "") return undefined;
    if (!line.terminated && isTornLine(line.text)) return undefined;
    let event: unknown;
    try {
      event = JSON.parse(line.text);
    } catch (error) {
      throw new KmsInternalError(`audit sink ${this.description}: ${line.where} is not JSON`, {
        cause: error,
      });
    }
    // A SyntaxError as the cause, like a line that is not JSON: readers that tell a tampered
    // line from a failed read go by it.
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new KmsInternalError(
        `audit sink ${this.description}: ${line.where} is not an audit event`,
        { cause: new SyntaxError("not a JSON object") },
      );
    }
    // The chain hashes the parsed event, so text that parses to the same event is no edit to
    // the verifier: a member given twice (JSON.parse keeps the last, other readers of the file
    // the first), other escapes, other spacing. Only the text this sink writes for the event is
    // accepted (whitespace around it aside: a CR of a CRLF copy), so that every reader of the
    // file sees what the chain covers.
    if (JSON.stringify(event) !== line.text.trim()) {
      throw new KmsInternalError(
        `audit sink ${this.description}: ${line.where} is not the text this sink writes for the event it holds (a member given twice, or changed spacing or escapes)`,
        { cause: new SyntaxError("not the JSON text this sink writes for the event") },
      );
    }
    return event as AuditEvent;
  }

  #readFailure(error: unknown): KmsInternalError {
    return new KmsInternalError(`audit sink ${this.description} could not read`, {
      cause: error,
    });
  }

  /**
   * Every line's event in file order, with no `after`; otherwise those with `sequence > after`.
   * A line without a numeric sequence is returned only in the first case, so that
   * verification reports it rather than never seeing it.
   * @throws KMSInternalException when the file cannot be read or a line is refused (#event).
   */
  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    const { after, limit } = options;
    const found: AuditEvent[] = [];
    if (limit !== undefined && limit <= 0) return found;
    for await (const line of this.#lines()) {
      const event = this.#event(line);
      if (event === undefined) continue;
      if (after !== undefined && !(typeof event.sequence === "number" && event.sequence > after)) {
        continue;
      }
      found.push(event);
      if (limit !== undefined && found.length >= limit) break;
    }
    return found;
  }

  /**
   * The events `read()` returns, `pageSize` at a time, reading the file once: `read({ after })`
   * would read it from the start for every page, and leaves out lines without a sequence.
   * @throws KMSInternalException when the file cannot be read or a line is refused (#event),
   *   after a page of the events before that line.
   */
  readPages(pageSize: number): AsyncGenerator<readonly AuditEvent[]> {
    return this.#pages(0, pageSize);
  }

  /** readPages from byte `from` (the start of a line) on. */
  async *#pages(from: number, pageSize: number): AsyncGenerator<readonly AuditEvent[]> {
    let page: AuditEvent[] = [];
    for await (const line of this.#lines(from)) {
      let event: AuditEvent | undefined;
      try {
        event = this.#event(line);
      } catch (error) {
        if (page.length > 0) yield page;
        throw error;
      }
      if (event === undefined) continue;
      page.push(event);
      if (page.length >= pageSize) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }

  /**
   * The last event, read from the end of the file: a restarted Kms reads this to continue the
   * chain, and it costs one line however long the trail is.
   * @throws KMSInternalException when the file cannot be read or its last line is refused.
   */
  async last(): Promise<AuditEvent | undefined> {
    let file: FileHandle;
    try {
      file = await open(this.#path, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw this.#readFailure(error);
    }
    try {
      let end = (await file.stat()).size;
      let terminated = false;
      while (end > 0) {
        const start = await lineStart(file, end);
        const bytes = Buffer.alloc(end - start);
        const read = await readFully(file, bytes, start);
        const text = bytes.toString("utf8", 0, read);
        const where = terminated ? "the last complete line" : "the last line";
        const event = this.#event({ text, where, terminated });
        if (event !== undefined) {
          // The Kms continues the chain from it: from anything but an event it would start a
          // second chain at sequence 0 in the middle of the file.
          if (typeof event.sequence !== "number" || typeof event.hash !== "string") {
            throw new KmsInternalError(
              `audit sink ${this.description}: ${where} is not an audit event`,
            );
          }
          return event;
        }
        // On to the line before, without the newline that ends it.
        end = Math.max(0, start - 1);
        terminated = true;
      }
      return undefined;
    } catch (error) {
      if (error instanceof KmsInternalError) throw error;
      throw this.#readFailure(error);
    } finally {
      await file.close().catch(() => {});
    }
  }

  /**
   * The event on the line that ends (with its newline) at byte `end` of `file`, or undefined
   * when there is no such line or it holds no event.
   */
  async #eventEndingAt(file: FileHandle, end: number): Promise<AuditEvent | undefined> {
    const newline = Buffer.alloc(1);
    if ((await readFully(file, newline, end - 1)) !== 1 || newline[0] !== 0x0a) return undefined;
    const start = await lineStart(file, end - 1);
    const bytes = Buffer.alloc(end - 1 - start);
    const read = await readFully(file, bytes, start);
    const text = bytes.toString("utf8", 0, read);
    return this.#event({ text, where: `the line ending at byte ${end}`, terminated: true });
  }

  async #saveIndex(head: AuditHead, data: unknown): Promise<void> {
    let file: FileHandle;
    try {
      file = await open(this.#path, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      throw error;
    }
    let offset: number;
    try {
      offset = (await file.stat()).size;
      if (offset === 0) return;
      // Anchored to the byte offset of the head's line, checked here: the Auditor saves between
      // its writes, so the file ends with the head's event, else this is not the Auditor's file.
      const last = await this.#eventEndingAt(file, offset);
      if (last?.sequence !== head.sequence || last.hash !== head.hash) return;
    } finally {
      await file.close().catch(() => {});
    }
    const stored: StoredIndex = {
      version: INDEX_VERSION,
      sequence: head.sequence,
      hash: head.hash,
      offset,
      data,
    };
    // Written aside and renamed over the old one: a reader sees a whole index or the old one.
    const temporary = `${this.#indexPath}.${globalThis.crypto.randomUUID()}.tmp`;
    try {
      await writeFile(temporary, JSON.stringify(stored), { mode: 0o600 });
      await rename(temporary, this.#indexPath);
    } catch (error) {
      await rm(temporary, { force: true }).catch(() => {});
      throw error;
    }
  }

  async #resumeIndex(pageSize: number): Promise<ResumedUsageIndex | undefined> {
    let stored: unknown;
    try {
      const index = await open(this.#indexPath, "r");
      try {
        if ((await index.stat()).size > MAX_INDEX_BYTES) return undefined;
        stored = JSON.parse(await readFile(index, "utf8"));
      } finally {
        await index.close().catch(() => {});
      }
    } catch {
      // None, or not one this sink wrote: the whole trail is read instead.
      return undefined;
    }
    if (!isStoredIndex(stored)) return undefined;
    let file: FileHandle;
    try {
      file = await open(this.#path, "r");
    } catch {
      return undefined;
    }
    try {
      if ((await file.stat()).size < stored.offset) return undefined;
      const anchor = await this.#eventEndingAt(file, stored.offset);
      if (anchor?.sequence !== stored.sequence || anchor.hash !== stored.hash) return undefined;
    } catch {
      // An anchor line that is not an event: the index is not this trail's.
      return undefined;
    } finally {
      await file.close().catch(() => {});
    }
    return {
      head: { sequence: stored.sequence, hash: stored.hash },
      data: stored.data,
      events: this.#pages(stored.offset, pageSize),
    };
  }

  async close(): Promise<void> {
    this.#closeFd();
  }
}
