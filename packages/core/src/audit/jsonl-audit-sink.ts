/**
 * Audit events as JSON Lines in an append-only file. The only module of core that touches the
 * file system.
 */
import { closeSync, fdatasyncSync, openSync, writeSync } from "node:fs";
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
      this.#fd ??= openSync(this.#path, "a", 0o600);
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
