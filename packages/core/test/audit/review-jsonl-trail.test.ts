/**
 * JSONL trail, found in adversarial review: a trail too large to read as one string, lines that
 * parse to an event the chain covers while other readers of the file see something else, and
 * lines that are not events where the Kms looks for its head or its keys' last use.
 */
import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AuditEvent,
  createKms,
  JsonlAuditSink,
  KmsInternalError,
  MemoryKeyStore,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x33 + i);
const plaintext = new TextEncoder().encode("audited");

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-review-jsonl-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A JSONL trail of three events (CreateKey, Encrypt, DescribeKey) by a Kms that stopped. */
async function writtenTrail() {
  const path = join(dir, "audit.jsonl");
  const store = new MemoryKeyStore();
  const kms = await createKms({
    store,
    rootKey: Uint8Array.from(ROOT),
    audit: new JsonlAuditSink(path),
  });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  await kms.encrypt({ keyId, plaintext });
  await kms.describeKey({ keyId });
  await kms.close();
  const text = await readFile(path, "utf8");
  return { path, store, keyId, text, lines: text.slice(0, -1).split("\n") };
}

function restart(path: string, store: MemoryKeyStore) {
  return createKms({ store, rootKey: Uint8Array.from(ROOT), audit: new JsonlAuditSink(path) });
}

/** The last `n` lines of a file, read from its end only. */
async function tailLines(path: string, n: number): Promise<string[]> {
  const file = await open(path, "r");
  try {
    const { size } = await file.stat();
    const length = Math.min(size, 64 * 1024);
    const bytes = Buffer.alloc(length);
    await file.read(bytes, 0, length, size - length);
    return bytes.toString("utf8").slice(0, -1).split("\n").slice(-n);
  } finally {
    await file.close();
  }
}

describe("a trail larger than one string can hold", () => {
  test("a restarted Kms finds its head at the end of a 2 GiB trail and continues the chain", async () => {
    const t = await writtenTrail();
    // 2 GiB of earlier trail, as a sparse hole: readFile refuses a file this size, and no
    // string could hold it; the head is in the last line.
    const big = join(dir, "big.jsonl");
    const hole = 2 ** 31;
    const file = await open(big, "w");
    await file.truncate(hole);
    await file.write(`\n${t.text}`, hole);
    await file.close();

    const kms = await restart(big, t.store);
    await kms.encrypt({ keyId: t.keyId, plaintext });
    const sink = kms.audit.sink;
    const [before, added] = (await tailLines(big, 2)).map((l) => JSON.parse(l) as AuditEvent);
    expect(added).toMatchObject({
      eventName: "Encrypt",
      sequence: before!.sequence + 1,
      prevHash: before!.hash,
    });
    expect(await sink.last()).toStrictEqual(added);
    await kms.close();
  });
});

describe("a line that parses to a chained event but is not the text the sink wrote", () => {
  test("a member given twice (JSON.parse keeps the last one) is refused, naming the line", async () => {
    const t = await writtenTrail();
    // Readers that keep the first of two members would see a Decrypt here.
    const forged = t.lines[1]!.replace('"eventName":', '"eventName":"Decrypt","eventName":');
    expect(JSON.parse(forged)).toStrictEqual(JSON.parse(t.lines[1]!));
    await writeFile(t.path, `${[t.lines[0], forged, t.lines[2]].join("\n")}\n`);
    const kms = await restart(t.path, t.store);
    const failure = await kms.audit.verify().catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(KmsInternalError);
    expect((failure as Error).message).toMatch(/line 2 is not the text this sink writes/);
    await kms.close();
  });

  test("re-spelled escapes are refused; whitespace around a line (a CRLF copy) is not", async () => {
    const t = await writtenTrail();
    const escaped = t.lines[1]!.replace('"Encrypt"', '"\\u0045ncrypt"');
    await writeFile(t.path, `${[t.lines[0], escaped, t.lines[2]].join("\n")}\n`);
    const kms = await restart(t.path, t.store);
    await expect(kms.audit.verify()).rejects.toThrow(/line 2 is not the text/);
    await writeFile(t.path, `${t.lines.join("\r\n")}\r\n`);
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 3 });
    await kms.close();
  });
});

describe("lines that are not events", () => {
  test("an object without a sequence inserted in the middle is reported, not skipped", async () => {
    const t = await writtenTrail();
    const note = JSON.stringify({ note: "approved by security" });
    await writeFile(t.path, `${[t.lines[0], note, ...t.lines.slice(1)].join("\n")}\n`);
    const kms = await restart(t.path, t.store);
    expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 1 });
    // Reads from a position still only return events after it.
    expect((await kms.audit.events({ after: 0 })).map((e) => e.sequence)).toStrictEqual([1, 2]);
    await kms.close();
  });

  test("a last line that is not an event: the Kms writes nothing rather than start a second chain", async () => {
    const t = await writtenTrail();
    await writeFile(t.path, `${t.text}{}\n`);
    const kms = await restart(t.path, t.store);
    const failure = await kms.encrypt({ keyId: t.keyId, plaintext }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(KmsInternalError);
    expect(String((failure as Error).cause)).toMatch(
      /the last complete line is not an audit event/,
    );
    expect(await readFile(t.path, "utf8")).toBe(`${t.text}{}\n`);
    await kms.close();
  });

  test("getKeyLastUsage reads past a line that names a usage but is not an event", async () => {
    const t = await writtenTrail();
    const junk = JSON.stringify({
      eventName: "Encrypt",
      eventTime: "2026-01-01T00:00:00.000Z",
      sequence: 1,
    });
    await writeFile(t.path, `${[t.lines[0], junk, ...t.lines.slice(1)].join("\n")}\n`);
    const kms = await restart(t.path, t.store);
    const { keyLastUsage } = await kms.getKeyLastUsage({ keyId: t.keyId });
    expect(keyLastUsage?.operation).toBe("Encrypt");
    await kms.close();
  });
});

describe("the file", () => {
  test("a new trail file is readable and writable by its owner only", async () => {
    const t = await writtenTrail();
    expect(((await stat(t.path)).mode & 0o777).toString(8)).toBe("600");
  });
});

describe("reads", () => {
  test("after and limit select by sequence; limit 0 reads nothing; a missing file is empty", async () => {
    const t = await writtenTrail();
    const sink = new JsonlAuditSink(t.path);
    expect((await sink.read({ after: 0, limit: 1 })).map((e) => e.sequence)).toStrictEqual([1]);
    expect((await sink.read({ after: 1 })).map((e) => e.sequence)).toStrictEqual([2]);
    expect(await sink.read({ limit: 0 })).toStrictEqual([]);
    expect((await sink.read()).map((e) => e.sequence)).toStrictEqual([0, 1, 2]);
    expect((await sink.last())?.sequence).toBe(2);
    const missing = new JsonlAuditSink(join(dir, "none.jsonl"));
    expect(await missing.read()).toStrictEqual([]);
    expect(await missing.last()).toBeUndefined();
  });

  test("lines longer than the read chunk, and multi-byte characters across chunks, read back", async () => {
    const path = join(dir, "wide.jsonl");
    const store = new MemoryKeyStore();
    const kms = await createKms({
      store,
      rootKey: Uint8Array.from(ROOT),
      audit: new JsonlAuditSink(path),
    });
    // A refused call is recorded with its request: a description of 150 KB in 3-byte
    // characters, more than two read chunks, so that characters straddle chunk boundaries.
    const description = "€".repeat(50_000);
    await expect(kms.createKey({ description })).rejects.toMatchObject({
      code: "ValidationException",
    });
    await kms.createKey({ description: "short" });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
    await kms.close();
    const restarted = await restart(path, store);
    expect(
      (await restarted.audit.events()).map((e) => e.requestParameters?.description),
    ).toStrictEqual([description, "short"]);
    expect((await restarted.audit.sink.last())?.requestParameters?.description).toBe("short");
    await restarted.close();
  });
});
