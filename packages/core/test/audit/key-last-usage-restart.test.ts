/**
 * getKeyLastUsage on a JSONL trail across restarts. A Kms answers it from an index of each
 * key's last use, built once from the trail and kept as events are written; it used to rebuild
 * that index at every start by reading the whole trail into memory (about 2 s and 200 MB of
 * heap for 100 000 events). JsonlAuditSink now keeps the index beside the trail, anchored to the
 * event it was built up to, so a restarted Kms reads the index and the events after that event
 * only. The answers must stay what a read of the whole trail gives: each is compared here with
 * an oracle that reads the file on its own, before and after restarts, clean or not, with the
 * index missing, stale, corrupt, or belonging to another trail.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AuditEvent,
  createKms,
  type GetKeyLastUsageResponse,
  JsonlAuditSink,
  type Kms,
  KmsInternalError,
  MemoryKeyStore,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

const ROOT_KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x51 + i);
const plaintext = new TextEncoder().encode("used");
const ARN = (keyId: string) => `arn:aws:kms:local:000000000000:key/${keyId}`;

/** AWS's tracked operations: what counts as a use. */
const USES = new Set([
  "Decrypt",
  "DeriveSharedSecret",
  "Encrypt",
  "GenerateDataKey",
  "GenerateDataKeyPair",
  "GenerateDataKeyPairWithoutPlaintext",
  "GenerateDataKeyWithoutPlaintext",
  "GenerateMac",
  "ReEncrypt",
  "Sign",
  "Verify",
  "VerifyMac",
]);

let dir: string;
let path: string;
let store: MemoryKeyStore;
let clock: ManualClock;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-last-usage-"));
  path = join(dir, "audit.jsonl");
  store = new MemoryKeyStore();
  clock = new ManualClock();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const indexPath = () => `${path}.usage-index.json`;

function open(sink: JsonlAuditSink = new JsonlAuditSink(path)): Promise<Kms> {
  return createKms({ store, clock, rootKey: Uint8Array.from(ROOT_KEY), audit: sink });
}

/** The trail's events, read from the file by the test itself. */
async function eventsInFile(file = path): Promise<AuditEvent[]> {
  const text = await readFile(file, "utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as AuditEvent);
}

/** What getKeyLastUsage must answer for `keyId`, from the whole file. */
async function oracle(keyId: string, file = path): Promise<GetKeyLastUsageResponse> {
  const events = await eventsInFile(file);
  const created = (await store.getKey(keyId))!.createdAt;
  const oldest = Math.min(...events.map((e) => Date.parse(e.eventTime)));
  const last = events.findLast(
    (e) =>
      e.errorCode === undefined &&
      USES.has(e.eventName) &&
      e.resources.some((r) => r.ARN === ARN(keyId)),
  );
  return {
    keyId: ARN(keyId),
    ...(last !== undefined
      ? {
          keyLastUsage: {
            operation: last.eventName as "Encrypt",
            timestamp: new Date(last.eventTime),
            cloudTrailEventId: last.eventID,
            kmsRequestId: last.requestID,
            eventId: last.eventID,
          },
        }
      : {}),
    trackingStartDate: new Date(Math.max(oldest, created)),
    keyCreationDate: new Date(created),
  };
}

/**
 * Each key's answer next to the oracle's. The oracle reads the file after the calls: the
 * getKeyLastUsage calls add events, which are not uses, and no key's answer depends on them.
 */
async function expectOracleAnswers(kms: Kms, keyIds: readonly string[]): Promise<void> {
  const answers = [];
  for (const keyId of keyIds) answers.push(await kms.getKeyLastUsage({ keyId }));
  const expected = [];
  for (const keyId of keyIds) expected.push(await oracle(keyId));
  expect(answers).toStrictEqual(expected);
}

interface Keys {
  /** Encrypted, decrypted, then a data key. */
  readonly busy: string;
  /** Only the destination of a ReEncrypt. */
  readonly destination: string;
  /** Only failed and refused calls. */
  readonly failedOnly: string;
  /** Never used. */
  readonly unused: string;
}

async function createKeys(kms: Kms): Promise<Keys> {
  const id = async () => (await kms.createKey()).keyMetadata.keyId;
  return { busy: await id(), destination: await id(), failedOnly: await id(), unused: await id() };
}

/** Calls of every kind, clock moving between them: uses, a ReEncrypt, failures, a refusal. */
async function useKeys(kms: Kms, keys: Keys, label: string): Promise<void> {
  clock.advance(60_000);
  const { ciphertextBlob } = await kms.encrypt(
    { keyId: keys.busy, plaintext },
    { requestId: `${label}-encrypt` },
  );
  clock.advance(60_000);
  await kms.decrypt({ ciphertextBlob });
  clock.advance(60_000);
  await kms.reEncrypt({ ciphertextBlob, destinationKeyId: keys.destination });
  clock.advance(60_000);
  await kms.generateDataKey({ keyId: keys.busy, keySpec: "AES_256" });
  clock.advance(60_000);
  await expect(
    kms.decrypt({ ciphertextBlob, encryptionContext: { wrong: "context" } }),
  ).rejects.toBeDefined();
  await expect(
    kms.encrypt(
      { keyId: keys.failedOnly, plaintext },
      { principal: "arn:aws:iam::999999999999:user/mallory" },
    ),
  ).rejects.toBeDefined();
  await expect(
    kms.decrypt({ ciphertextBlob: new Uint8Array(80), keyId: keys.failedOnly }),
  ).rejects.toBeDefined();
}

const all = (keys: Keys) => [keys.busy, keys.destination, keys.failedOnly, keys.unused];

async function savedIndex(): Promise<{ sequence: number; hash: string; offset: number }> {
  return JSON.parse(await readFile(indexPath(), "utf8"));
}

describe("getKeyLastUsage answers as the whole trail does, across restarts", () => {
  test("before and after clean restarts, after a crash, and with the index removed", async () => {
    const first = await open();
    const keys = await createKeys(first);
    await useKeys(first, keys, "one");
    await expectOracleAnswers(first, all(keys));
    await useKeys(first, keys, "two");
    await expectOracleAnswers(first, all(keys));
    await first.close();
    // Saved on close, at the trail's last event.
    const trail = await eventsInFile();
    expect(await savedIndex()).toMatchObject({
      sequence: trail.at(-1)!.sequence,
      hash: trail.at(-1)!.hash,
    });

    const second = await open();
    await expectOracleAnswers(second, all(keys));
    clock.advance(3_600_000);
    await useKeys(second, keys, "three");
    await expectOracleAnswers(second, all(keys));
    // A crash: never closed, so the index stays at the first Kms's last event.

    const third = await open();
    await expectOracleAnswers(third, all(keys));
    await third.close();

    await rm(indexPath());
    const fourth = await open();
    await expectOracleAnswers(fourth, all(keys));
    await fourth.close();
    await second.close();
  });

  test("a restart reads the trail from the index's event on, and verify() still reads it all", async () => {
    const first = await open();
    const keys = await createKeys(first);
    await useKeys(first, keys, "one");
    await first.getKeyLastUsage({ keyId: keys.busy });
    await first.close();
    expect(await savedIndex()).toMatchObject({ sequence: expect.any(Number) });

    // An unreadable line before the index's event, of the same length: not read on restart…
    const text = await readFile(path, "utf8");
    const second = text.indexOf("\n") + 1;
    await writeFile(path, `${text.slice(0, second)}X${text.slice(second + 1)}`);
    const restarted = await open();
    await useKeys(restarted, keys, "two");
    const answers = [];
    for (const keyId of all(keys)) answers.push(await restarted.getKeyLastUsage({ keyId }));
    expect(answers.map((a) => a.keyLastUsage?.kmsRequestId)).toEqual([
      expect.any(String),
      expect.any(String),
      undefined,
      undefined,
    ]);
    expect(answers[0]!.keyLastUsage?.operation).toBe("GenerateDataKey");
    // …while verification reads every line, and so does a Kms without the index.
    await expect(restarted.audit.verify()).rejects.toBeInstanceOf(KmsInternalError);
    await restarted.close();
    await rm(indexPath());
    const unindexed = await open();
    await expect(unindexed.getKeyLastUsage({ keyId: keys.busy })).rejects.toBeInstanceOf(
      KmsInternalError,
    );
    await unindexed.close();
  });

  test("the index is saved every 10 000 events, so a crash leaves little to read", async () => {
    const first = await open();
    const keys = await createKeys(first);
    await first.getKeyLastUsage({ keyId: keys.busy });
    for (let done = 0; done < 10_200; done += 200) {
      await Promise.all(
        Array.from({ length: 200 }, () => first.encrypt({ keyId: keys.busy, plaintext })),
      );
    }
    await useKeys(first, keys, "last");
    // Never closed: what was saved on the way is all there is.
    expect((await savedIndex()).sequence).toBeGreaterThanOrEqual(10_000);
    const restarted = await open();
    await expectOracleAnswers(restarted, all(keys));
    await restarted.close();
    await first.close();
  }, 60_000);
});

describe("an index that does not match the trail is not used", () => {
  /** A trail with an index saved at its end, and the keys it used. */
  async function indexedTrail(): Promise<Keys> {
    const kms = await open();
    const keys = await createKeys(kms);
    await useKeys(kms, keys, "indexed");
    await kms.getKeyLastUsage({ keyId: keys.busy });
    await kms.close();
    return keys;
  }

  test("the trail cut short before the index's event (an older copy restored)", async () => {
    const kms = await open();
    const keys = await createKeys(kms);
    await useKeys(kms, keys, "before");
    await kms.close();
    await copyFile(path, join(dir, "older.jsonl"));
    const again = await open();
    await useKeys(again, keys, "after");
    await again.getKeyLastUsage({ keyId: keys.busy });
    await again.close();
    await copyFile(join(dir, "older.jsonl"), path);
    const restored = await open();
    await expectOracleAnswers(restored, all(keys));
    await restored.close();
  });

  test("another trail in the file, longer than the index's offset", async () => {
    const keys = await indexedTrail();
    // Another trail (started afresh: a new file at the same path), longer than the first one
    // and never asked for last usage, so the first trail's index is still beside it.
    const before = await readFile(indexPath(), "utf8");
    await rm(path);
    const other = await open();
    for (let i = 0; i < 3; i++) await useKeys(other, keys, `other-${i}`);
    await other.close();
    expect(await readFile(indexPath(), "utf8")).toBe(before);
    const reopened = await open();
    await expectOracleAnswers(reopened, all(keys));
    await reopened.close();
  });

  test.each([
    ["not JSON", () => "{"],
    ["another version", (s: string) => s.replace('"version":1', '"version":2')],
    [
      "an entry of another shape",
      (s: string) => s.replace(/"(Encrypt|Decrypt|ReEncrypt|GenerateDataKey)"/, '"CreateKey"'),
    ],
    [
      "the hash of another event",
      (s: string) => s.replace(/"hash":"(.)/, (_m, c) => `"hash":"${c === "0" ? "1" : "0"}`),
    ],
    ["an offset inside a line", (s: string) => s.replace(/"offset":\d+/, '"offset":5')],
  ])("an index file with %s", async (_, edit) => {
    const keys = await indexedTrail();
    await writeFile(indexPath(), edit(await readFile(indexPath(), "utf8")));
    const reopened = await open();
    await useKeys(reopened, keys, "after");
    await expectOracleAnswers(reopened, all(keys));
    await reopened.close();
  });

  test("a batch that failed to write: no index is saved from what the Kms then knows", async () => {
    /** Writes the batch, then reports a failure: the events are in the file, the calls failed. */
    class FailingOnce extends JsonlAuditSink {
      fail = false;
      override async write(events: readonly AuditEvent[]): Promise<void> {
        await super.write(events);
        if (this.fail) {
          this.fail = false;
          throw new Error("disk full, after all");
        }
      }
    }
    const sink = new FailingOnce(path);
    const kms = await open(sink);
    const keys = await createKeys(kms);
    await kms.getKeyLastUsage({ keyId: keys.busy });
    sink.fail = true;
    await expect(kms.encrypt({ keyId: keys.unused, plaintext })).rejects.toBeInstanceOf(
      KmsInternalError,
    );
    await kms.close();
    // The Encrypt event is in the trail (the oracle counts it), the Kms never noted it.
    const restarted = await open();
    await expectOracleAnswers(restarted, all(keys));
    expect((await restarted.getKeyLastUsage({ keyId: keys.unused })).keyLastUsage).toBeDefined();
    await restarted.close();
  });
});
