/**
 * Found in adversarial review: a single-writer Auditor that read its head while its first batch
 * was being written kept the older head, and chained the next batch from it again.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, createKms, JsonlAuditSink, MemoryKeyStore } from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-head-race-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * A JSONL sink whose first `last()` answers late, with what the file held when it was asked: a
 * slow disk, or a thread pool busy with other reads.
 */
class SlowFirstLastSink extends JsonlAuditSink {
  #slow = true;
  override async last(): Promise<AuditEvent | undefined> {
    const found = await super.last();
    if (this.#slow) {
      this.#slow = false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return found;
  }
}

/** Also writes its first batch, then fails it as a failed fdatasync would: the lines stay. */
class FirstWriteFailsSink extends SlowFirstLastSink {
  #failed = false;
  override async write(events: readonly AuditEvent[]): Promise<void> {
    await super.write(events);
    if (!this.#failed) {
      this.#failed = true;
      throw new Error("EIO: fdatasync failed");
    }
  }
}

function sequencesIn(text: string): number[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => (JSON.parse(line) as AuditEvent).sequence);
}

describe("kms.audit.head() while the first batch is written", () => {
  test("does not roll the chain head back: the next event follows the one written meanwhile", async () => {
    const path = join(dir, "audit.jsonl");
    const kms = await createKms({
      store: new MemoryKeyStore(),
      rootKey: new Uint8Array(32).fill(7),
      audit: new SlowFirstLastSink(path),
    });
    // Asked before any call: its read of the (empty) file answers after CreateKey is written.
    const head = kms.audit.head();
    const { keyMetadata } = await kms.createKey();
    await head;
    await kms.describeKey({ keyId: keyMetadata.keyId });

    expect(sequencesIn(await readFile(path, "utf8"))).toEqual([0, 1]);
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
    await kms.close();
  });

  test("nor back past a failed batch's lines: after the failure the head is read again", async () => {
    const path = join(dir, "audit.jsonl");
    const kms = await createKms({
      store: new MemoryKeyStore(),
      rootKey: new Uint8Array(32).fill(7),
      audit: new FirstWriteFailsSink(path),
    });
    const head = kms.audit.head();
    await expect(kms.createKey()).rejects.toMatchObject({ code: "KMSInternalException" });
    await head;
    await kms.listKeys();

    expect(sequencesIn(await readFile(path, "utf8"))).toEqual([0, 1]);
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
    await kms.close();
  });
});
