/**
 * Audit trail, found in review: a JSONL trail whose last write was cut short (crash, power cut,
 * full disk) must not stop every later call, and an encryption-context key "__proto__" must be
 * recorded like any other.
 */
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createKms,
  JsonlAuditSink,
  KmsInternalError,
  MemoryAuditSink,
  MemoryKeyStore,
  verifyAuditLog,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x20 + i);
const plaintext = new TextEncoder().encode("audited");

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-review-audit-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A JSONL trail with three events written by a Kms that has since stopped. */
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

async function restart(path: string, store: MemoryKeyStore) {
  return createKms({ store, rootKey: Uint8Array.from(ROOT), audit: new JsonlAuditSink(path) });
}

describe("JSONL: a last line the previous writer did not finish", () => {
  const torn: readonly [string, (line: string) => string | Buffer][] = [
    ["the start of an event (crash or full disk mid-write)", (l) => l.slice(0, 40)],
    ["one byte of an event", () => "{"],
    ["zeros where a power cut lost the data", () => Buffer.alloc(300)],
    [
      "an event cut inside a multi-byte character",
      () => Buffer.from('{"eventVersion":"1.08","x":"\u00e9').subarray(0, -1),
    ],
  ];

  for (const [name, fragmentOf] of torn) {
    test(`${name}: holds no event, and the restarted Kms goes on auditing and verifying`, async () => {
      const t = await writtenTrail();
      await appendFile(t.path, fragmentOf(t.lines[1]!));
      expect(await new JsonlAuditSink(t.path).read()).toHaveLength(3);

      const kms = await restart(t.path, t.store);
      await kms.describeKey({ keyId: t.keyId });
      await kms.encrypt({ keyId: t.keyId, plaintext });
      expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 5 });
      await kms.close();
      // The fragment is gone; every line is a whole event again.
      const after = await readFile(t.path, "utf8");
      expect(after.startsWith(t.text)).toBe(true);
      const lines = after.slice(0, -1).split("\n");
      expect(lines).toHaveLength(5);
      expect(verifyAuditLog(lines.map((l) => JSON.parse(l)))).toMatchObject({ ok: true });
    });
  }

  test("a whole event without its newline is kept, and the next one starts on a line of its own", async () => {
    const t = await writtenTrail();
    await writeFile(t.path, t.text.slice(0, -1));
    const kms = await restart(t.path, t.store);
    await kms.describeKey({ keyId: t.keyId });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 4 });
    await kms.close();
    const lines = (await readFile(t.path, "utf8")).slice(0, -1).split("\n");
    expect(lines.slice(0, 3)).toStrictEqual(t.lines);
    expect(lines).toHaveLength(4);
  });

  test("a file that does not end in this sink's lines is refused and left as it was", async () => {
    const path = join(dir, "not-an-audit-trail.txt");
    await writeFile(path, "some other file, no newline");
    const kms = await createKms({ audit: new JsonlAuditSink(path) });
    await expect(kms.createKey()).rejects.toBeInstanceOf(KmsInternalError);
    expect(await readFile(path, "utf8")).toBe("some other file, no newline");
  });

  test("a torn line in the middle of the file is still reported as not JSON", async () => {
    const t = await writtenTrail();
    await writeFile(t.path, `${t.lines[0]}\n${t.lines[1]!.slice(0, 40)}\n${t.lines[2]}\n`);
    const error = await new JsonlAuditSink(t.path).read().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toContain("line 2 is not JSON");
  });
});

describe('an encryption-context key "__proto__"', () => {
  const context = (): Record<string, string> =>
    JSON.parse('{"__proto__":"tenant-b","tenant":"a"}') as Record<string, string>;

  test("is recorded in the event like any other key, and the chain verifies", async () => {
    const sink = new MemoryAuditSink();
    const kms = await createKms({ audit: sink });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext,
      encryptionContext: context(),
    });
    // The context is what the ciphertext is bound to: the event must show all of it.
    await kms.decrypt({ ciphertextBlob, encryptionContext: context() });
    const [encrypt, decrypt] = sink.events.slice(-2);
    for (const event of [encrypt!, decrypt!]) {
      const recorded = event.requestParameters!.encryptionContext as Record<string, string>;
      expect(Object.keys(recorded).sort()).toStrictEqual(["__proto__", "tenant"]);
      expect(Object.getOwnPropertyDescriptor(recorded, "__proto__")?.value).toBe("tenant-b");
      expect(Object.getPrototypeOf(recorded)).toBe(Object.prototype);
    }
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
  });

  test("survives a JSONL round trip with the same hash", async () => {
    const path = join(dir, "audit.jsonl");
    const kms = await createKms({ audit: new JsonlAuditSink(path) });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await kms.encrypt({ keyId, plaintext, encryptionContext: context() });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
    const last = JSON.parse((await readFile(path, "utf8")).trim().split("\n")[1]!);
    expect(Object.keys(last.requestParameters.encryptionContext).sort()).toStrictEqual([
      "__proto__",
      "tenant",
    ]);
    await kms.close();
  });
});
