import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AccessDeniedError,
  type AuditEvent,
  type AuditSink,
  createKms,
  GENESIS_HASH,
  hashAuditEvent,
  JsonlAuditSink,
  KmsInternalError,
  MemoryAuditSink,
  MemoryKeyStore,
  verifyAuditLog,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

const ALICE = "arn:aws:iam::111122223333:user/alice";
const plaintext = new TextEncoder().encode("the secret plaintext value 0123456789");

async function trail() {
  const sink = new MemoryAuditSink();
  const kms = await createKms({ clock: new ManualClock(), audit: sink });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  return { sink, kms, keyId };
}

describe("every call produces an event", () => {
  test("allowed, denied and failed calls are all recorded, CloudTrail-shaped", async () => {
    const { sink, kms, keyId } = await trail();
    await kms.encrypt(
      { keyId, plaintext, encryptionContext: { tenant: "t1" } },
      { requestId: "req-1", sourceIp: "10.0.0.9" },
    );
    await expect(kms.encrypt({ keyId, plaintext }, { principal: ALICE })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.decrypt({ ciphertextBlob: new Uint8Array(64) })).rejects.toBeDefined();
    const events = sink.events;
    expect(events.map((e) => e.eventName)).toEqual(["CreateKey", "Encrypt", "Encrypt", "Decrypt"]);
    const [, ok, denied, failed] = events as [AuditEvent, AuditEvent, AuditEvent, AuditEvent];
    expect(ok).toMatchObject({
      eventSource: "kms.amazonaws.com",
      requestID: "req-1",
      sourceIPAddress: "10.0.0.9",
      userIdentity: { type: "Root", accountId: "000000000000" },
      requestParameters: { keyId, encryptionContext: { tenant: "t1" } },
      resources: [{ type: "AWS::KMS::Key", ARN: expect.stringContaining(keyId) }],
      additionalEventData: { keyVersion: 1 },
    });
    expect(ok.errorCode).toBeUndefined();
    expect(denied).toMatchObject({
      errorCode: "AccessDeniedException",
      userIdentity: { arn: ALICE, type: "IAMUser", accountId: "111122223333" },
      additionalEventData: {
        authorization: [{ action: "kms:Encrypt", decision: "implicit-deny" }],
      },
    });
    expect(denied.errorMessage).toContain("not authorized");
    expect(failed.errorCode).toBe("InvalidCiphertextException");
    expect(verifyAuditLog(events)).toMatchObject({ ok: true, count: 4 });
  });
});

describe("getKeyLastUsage", () => {
  const DAY = 86_400_000;

  test("an unused key: no keyLastUsage, tracked since its creation", async () => {
    const { kms, keyId } = await trail();
    const created = (await kms.describeKey({ keyId })).keyMetadata.creationDate;
    const response = await kms.getKeyLastUsage({ keyId });
    expect(response).toEqual({
      keyId: expect.stringMatching(new RegExp(`:key/${keyId}$`)),
      keyCreationDate: created,
      trackingStartDate: created,
    });
  });

  test("the last successful use, in AWS's shape, from its audit event", async () => {
    const clock = new ManualClock();
    const sink = new MemoryAuditSink();
    const kms = await createKms({ clock, audit: sink });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    clock.advance(60_000);
    await kms.encrypt({ keyId, plaintext }, { requestId: "req-encrypt" });
    const event = sink.events.find((e) => e.eventName === "Encrypt")!;
    const { keyLastUsage } = await kms.getKeyLastUsage({ keyId });
    expect(keyLastUsage).toEqual({
      operation: "Encrypt",
      timestamp: new Date(clock.now()),
      cloudTrailEventId: event.eventID,
      kmsRequestId: "req-encrypt",
      eventId: event.eventID,
    });
    // Without a requestId of the caller's, the one core chose and recorded.
    await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    const generated = sink.events.find((e) => e.eventName === "GenerateDataKey")!;
    expect((await kms.getKeyLastUsage({ keyId })).keyLastUsage).toMatchObject({
      operation: "GenerateDataKey",
      cloudTrailEventId: generated.eventID,
      kmsRequestId: generated.requestID,
    });
    expect(generated.requestID).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("denied and failed calls are not uses", async () => {
    const { kms, keyId } = await trail();
    await kms.encrypt({ keyId, plaintext });
    const usage = (await kms.getKeyLastUsage({ keyId })).keyLastUsage;
    expect(usage).toMatchObject({ operation: "Encrypt" });
    await expect(kms.encrypt({ keyId, plaintext }, { principal: ALICE })).rejects.toBeDefined();
    await expect(kms.decrypt({ ciphertextBlob: new Uint8Array(64), keyId })).rejects.toBeDefined();
    expect((await kms.getKeyLastUsage({ keyId })).keyLastUsage).toEqual(usage);
  });

  test("ReEncrypt is a use of both keys, with one event id", async () => {
    const { kms, keyId } = await trail();
    const other = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    await kms.reEncrypt({ ciphertextBlob, destinationKeyId: other });
    const from = (await kms.getKeyLastUsage({ keyId })).keyLastUsage;
    const to = (await kms.getKeyLastUsage({ keyId: other })).keyLastUsage;
    expect(from?.operation).toBe("ReEncrypt");
    expect(to).toEqual(from);
  });

  test("a returned timestamp is the caller's own copy", async () => {
    const { kms, keyId } = await trail();
    await kms.encrypt({ keyId, plaintext });
    const first = (await kms.getKeyLastUsage({ keyId })).keyLastUsage!;
    const at = first.timestamp.getTime();
    first.timestamp.setTime(0);
    expect((await kms.getKeyLastUsage({ keyId })).keyLastUsage?.timestamp.getTime()).toBe(at);
  });

  test("a key older than the trail is tracked from the trail's oldest event", async () => {
    const clock = new ManualClock();
    const store = new MemoryKeyStore();
    const rootKey = new Uint8Array(32).fill(3);
    const before = await createKms({ store, rootKey, clock });
    const keyId = (await before.createKey()).keyMetadata.keyId;
    const created = new Date(clock.now());
    clock.advance(DAY);
    // A new trail: its first event is this call's own, so tracking starts now.
    const fresh = await createKms({ store, rootKey, clock, audit: new MemoryAuditSink() });
    expect(await fresh.getKeyLastUsage({ keyId })).toMatchObject({
      keyCreationDate: created,
      trackingStartDate: new Date(clock.now()),
    });
    const trackedFrom = clock.now();
    clock.advance(DAY);
    const again = await fresh.getKeyLastUsage({ keyId });
    expect(again.keyLastUsage).toBeUndefined();
    expect(again.trackingStartDate).toEqual(new Date(trackedFrom));
    expect(again.keyCreationDate).toEqual(created);
  });

  test("a restarted KMS reads usage and tracking start back from a JSONL trail", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kms-usage-"));
    try {
      const path = join(dir, "audit.jsonl");
      const clock = new ManualClock();
      const store = new MemoryKeyStore();
      const rootKey = new Uint8Array(32).fill(4);
      const a = await createKms({ store, rootKey, clock, audit: new JsonlAuditSink(path) });
      const started = new Date(clock.now());
      await a.generateRandom({ numberOfBytes: 8 });
      clock.advance(DAY);
      const keyId = (await a.createKey()).keyMetadata.keyId;
      clock.advance(DAY);
      await a.sign({
        keyId: (await a.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
          .keyMetadata.keyId,
        message: plaintext,
        signingAlgorithm: "ECDSA_SHA_256",
      });
      await a.encrypt({ keyId, plaintext }, { requestId: "req-before-restart" });
      const used = await a.getKeyLastUsage({ keyId });
      await a.close();
      clock.advance(DAY);
      const b = await createKms({ store, rootKey, clock, audit: new JsonlAuditSink(path) });
      const read = await b.getKeyLastUsage({ keyId });
      expect(read.keyLastUsage).toEqual(used.keyLastUsage);
      expect(read.keyLastUsage?.kmsRequestId).toBe("req-before-restart");
      // The key is younger than the trail: tracked from its creation.
      expect(read.trackingStartDate).toEqual(read.keyCreationDate);
      expect(read.trackingStartDate!.getTime()).toBeGreaterThan(started.getTime());
      await b.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a capped trail: usage outlives its event, but uses dropped unread restart tracking", async () => {
    const clock = new ManualClock();
    const kms = await createKms({ clock, audit: new MemoryAuditSink({ maxEvents: 2 }) });
    const created = new Date(clock.now());
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    clock.advance(1000);
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    const encrypted = (await kms.getKeyLastUsage({ keyId })).keyLastUsage;
    expect(encrypted?.operation).toBe("Encrypt");
    // The Encrypt event leaves the window after it was read: still known, tracking unchanged.
    await kms.generateRandom({ numberOfBytes: 8 });
    expect(await kms.getKeyLastUsage({ keyId })).toMatchObject({
      keyLastUsage: encrypted,
      trackingStartDate: created,
    });
    // A Decrypt whose event is dropped before any read: the Encrypt is no longer the last use,
    // so nothing is claimed before the oldest event held.
    clock.advance(1000);
    await kms.decrypt({ ciphertextBlob });
    clock.advance(1000);
    const oldestHeld = new Date(clock.now());
    await kms.generateRandom({ numberOfBytes: 8 });
    await kms.generateRandom({ numberOfBytes: 8 });
    const after = await kms.getKeyLastUsage({ keyId });
    expect(after.keyLastUsage).toBeUndefined();
    expect(after.trackingStartDate).toEqual(oldestHeld);
  });

  test("audit: false tracks nothing: no usage and no trackingStartDate", async () => {
    const kms = await createKms({ audit: false });
    const { keyMetadata } = await kms.createKey();
    await kms.encrypt({ keyId: keyMetadata.keyId, plaintext });
    expect(await kms.getKeyLastUsage({ keyId: keyMetadata.keyId })).toEqual({
      keyId: keyMetadata.arn,
      keyCreationDate: keyMetadata.creationDate,
    });
  });

  test("needs kms:GetKeyLastUsage on the key, not kms:DescribeKey", async () => {
    const admin = "arn:aws:iam::111122223333:user/admin";
    // No account-root statement, which would allow every principal of the account.
    const kms = await createKms({ account: "111122223333", principal: admin });
    const policy = (action: string) =>
      JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: admin }, Action: "kms:*", Resource: "*" },
          { Effect: "Allow", Principal: { AWS: ALICE }, Action: action, Resource: "*" },
        ],
      });
    const describeOnly = (await kms.createKey({ policy: policy("kms:DescribeKey") })).keyMetadata;
    const usageOnly = (await kms.createKey({ policy: policy("kms:GetKeyLastUsage") })).keyMetadata;
    await expect(
      kms.getKeyLastUsage({ keyId: describeOnly.keyId }, { principal: ALICE }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      kms.getKeyLastUsage({ keyId: usageOnly.keyId }, { principal: ALICE }),
    ).resolves.toMatchObject({ keyId: usageOnly.arn });
  });

  describe("a single-writer trail read while calls land", () => {
    /** A sink without appendAndChain whose reads can be held open after taking their snapshot. */
    class HeldReadSink implements AuditSink {
      readonly description = "held-read";
      readonly events: AuditEvent[] = [];
      #gate: Promise<void> | undefined;
      #open: (() => void) | undefined;
      #started: (() => void) | undefined;
      failNextRead = false;

      /** Holds the next reads until `release`; resolves once one of them has started. */
      hold(): Promise<void> {
        this.#gate = new Promise((resolve) => {
          this.#open = resolve;
        });
        return new Promise((resolve) => {
          this.#started = resolve;
        });
      }

      release(): void {
        this.#open?.();
        this.#gate = undefined;
      }

      async write(events: readonly AuditEvent[]): Promise<void> {
        this.events.push(...structuredClone(events));
      }

      async read(): Promise<readonly AuditEvent[]> {
        if (this.failNextRead) {
          this.failNextRead = false;
          throw new Error("trail unavailable");
        }
        const snapshot = structuredClone(this.events);
        this.#started?.();
        await this.#gate;
        return snapshot;
      }

      async last(): Promise<AuditEvent | undefined> {
        return structuredClone(this.events.at(-1));
      }

      async close(): Promise<void> {}
    }

    async function heldTrail() {
      const sink = new HeldReadSink();
      const kms = await createKms({ clock: new ManualClock(), audit: sink });
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      return { sink, kms, keyId };
    }

    test("a use written during the first read is not replaced by the older one it returns", async () => {
      const { sink, kms, keyId } = await heldTrail();
      await kms.encrypt({ keyId, plaintext }, { requestId: "older" });
      const started = sink.hold();
      const asked = kms.getKeyLastUsage({ keyId });
      await started;
      await kms.encrypt({ keyId, plaintext }, { requestId: "newer" });
      sink.release();
      expect((await asked).keyLastUsage?.kmsRequestId).toBe("newer");
      expect((await kms.getKeyLastUsage({ keyId })).keyLastUsage?.kmsRequestId).toBe("newer");
    });

    test("a second call during the first read waits for it instead of answering unused", async () => {
      const { sink, kms, keyId } = await heldTrail();
      await kms.encrypt({ keyId, plaintext }, { requestId: "the-use" });
      const started = sink.hold();
      const first = kms.getKeyLastUsage({ keyId });
      await started;
      let secondSettled = false;
      const second = kms.getKeyLastUsage({ keyId }).finally(() => {
        secondSettled = true;
      });
      // Give the second call every chance to answer early from the half-filled map.
      for (let i = 0; i < 50 && !secondSettled; i++) await new Promise((r) => setImmediate(r));
      sink.release();
      expect((await second).keyLastUsage?.kmsRequestId).toBe("the-use");
      expect((await first).keyLastUsage?.kmsRequestId).toBe("the-use");
    });

    test("a failed first read is retried by the next call", async () => {
      const { sink, kms, keyId } = await heldTrail();
      await kms.encrypt({ keyId, plaintext }, { requestId: "the-use" });
      sink.failNextRead = true;
      await expect(kms.getKeyLastUsage({ keyId })).rejects.toBeInstanceOf(KmsInternalError);
      expect((await kms.getKeyLastUsage({ keyId })).keyLastUsage?.kmsRequestId).toBe("the-use");
    });

    test("verify() holds when an event is appended while it reads the trail", async () => {
      const { sink, kms, keyId } = await heldTrail();
      const started = sink.hold();
      const verdict = kms.audit.verify();
      await started;
      await kms.encrypt({ keyId, plaintext });
      sink.release();
      expect(await verdict).toMatchObject({ ok: true });
      expect(await kms.audit.verify()).toMatchObject({ ok: true });
    });
  });

  test("an unknown key is NotFoundException", async () => {
    const { kms } = await trail();
    await expect(
      kms.getKeyLastUsage({ keyId: "1234abcd-12ab-34cd-56ef-1234567890ab" }),
    ).rejects.toMatchObject({ code: "NotFoundException" });
  });
});

describe("no secrets in events", () => {
  test("plaintext, ciphertext, data keys, grant tokens and key material never appear", async () => {
    const { sink, kms, keyId } = await trail();
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    const decrypted = await kms.decrypt({ ciphertextBlob });
    const dataKey = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    const random = await kms.generateRandom({ numberOfBytes: 32 });
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    const reEncrypted = await kms.reEncrypt({ ciphertextBlob, destinationKeyId: keyId });
    await kms.encrypt({ keyId, plaintext, dryRun: true }).catch(() => undefined);
    const text = JSON.stringify(sink.events);
    const secrets: Uint8Array[] = [
      plaintext,
      decrypted.plaintext,
      dataKey.plaintext,
      dataKey.ciphertextBlob,
      ciphertextBlob,
      random.plaintext,
      reEncrypted.ciphertextBlob,
    ];
    for (const secret of secrets) {
      const b = Buffer.from(secret);
      for (const form of [
        b.toString("base64"),
        b.toString("hex"),
        b.toString("base64url"),
        JSON.stringify(Array.from(b)).slice(1, 60),
      ]) {
        expect(text).not.toContain(form);
      }
    }
    expect(text).not.toContain(new TextDecoder().decode(plaintext));
    expect(text).not.toContain(grantToken);
    expect(text).not.toMatch(/"plaintext"|"ciphertextBlob"|wrappedMaterial|grantToken/);
  });
});

describe("hash chain", () => {
  let events: AuditEvent[];
  beforeEach(async () => {
    const { sink, kms, keyId } = await trail();
    await kms.encrypt({ keyId, plaintext, encryptionContext: { a: "b" } });
    await kms.describeKey({ keyId });
    await kms.encrypt({ keyId, plaintext }, { principal: ALICE }).catch(() => undefined);
    events = [...sink.events];
  });

  test("the first event starts at the genesis hash and each links to the previous", () => {
    expect(events[0]!.prevHash).toBe(GENESIS_HASH);
    for (let i = 1; i < events.length; i++) expect(events[i]!.prevHash).toBe(events[i - 1]!.hash);
    for (const e of events) expect(hashAuditEvent(e)).toBe(e.hash);
  });

  /** Every leaf path of an event, to tamper with each field in turn. */
  function leaves(value: unknown, path: string[] = []): string[][] {
    if (value === null || typeof value !== "object") return [path];
    return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) =>
      leaves(v, [...path, k]),
    );
  }

  test("tampering with any field of any record is detected at that record", () => {
    let checked = 0;
    events.forEach((event, index) => {
      for (const path of leaves(event)) {
        const copy = structuredClone(events);
        let target = copy[index] as unknown as Record<string, unknown>;
        for (const k of path.slice(0, -1)) target = target[k] as Record<string, unknown>;
        const last = path[path.length - 1]!;
        const old = target[last];
        target[last] =
          typeof old === "number"
            ? old + 1
            : typeof old === "boolean"
              ? !old
              : old === null
                ? "x"
                : `${String(old)}x`;
        const result = verifyAuditLog(copy);
        expect(result.ok, `${index}:${path.join(".")}`).toBe(false);
        if (!result.ok) expect(result.index).toBe(index);
        checked++;
      }
    });
    expect(checked).toBeGreaterThan(50);
  });

  test("an added field is detected", () => {
    const copy = structuredClone(events) as unknown as Record<string, unknown>[];
    copy[1]!.extra = "x";
    expect(verifyAuditLog(copy)).toMatchObject({ ok: false, index: 1, problem: "edited" });
  });

  test("deleted, reordered and inserted records are detected with their index", () => {
    expect(verifyAuditLog([events[0], events[2], events[3]])).toMatchObject({
      ok: false,
      index: 1,
      problem: "deleted-or-reordered",
    });
    expect(verifyAuditLog([events[0], events[2], events[1], events[3]])).toMatchObject({
      ok: false,
      index: 1,
    });
    expect(verifyAuditLog([events[1], events[2]])).toMatchObject({ ok: false, index: 0 });
    expect(verifyAuditLog([events[0], events[0], events[1]])).toMatchObject({
      ok: false,
      index: 1,
    });
  });

  test("truncation is detected against the recorded head", () => {
    const last = events[events.length - 1]!;
    const head = { sequence: last.sequence, hash: last.hash };
    expect(verifyAuditLog(events, { expectedHead: head })).toMatchObject({ ok: true });
    expect(verifyAuditLog(events.slice(0, -1), { expectedHead: head })).toMatchObject({
      ok: false,
      problem: "truncated",
      index: events.length - 1,
    });
    expect(verifyAuditLog([], { expectedHead: head })).toMatchObject({ ok: false, index: 0 });
  });

  test("a chain that goes on past the head must still hold the head's event", () => {
    const middle = events[1]!;
    const head = { sequence: middle.sequence, hash: middle.hash };
    expect(verifyAuditLog(events, { expectedHead: head })).toMatchObject({ ok: true });
    // A tail rewritten from the head's position on is a valid chain by itself.
    expect(
      verifyAuditLog(events, { expectedHead: { sequence: middle.sequence, hash: "0".repeat(64) } }),
    ).toMatchObject({ ok: false, problem: "edited", index: 1 });
    const windowed = verifyAuditLog(events.slice(1), {
      from: { sequence: middle.sequence, prevHash: middle.prevHash },
      expectedHead: { sequence: middle.sequence, hash: "0".repeat(64) },
    });
    expect(windowed).toMatchObject({ ok: false, problem: "edited", index: 0 });
  });

  test("garbage is reported, never thrown", () => {
    expect(verifyAuditLog([null, 5] as unknown[])).toMatchObject({
      ok: false,
      index: 0,
      problem: "malformed",
    });
  });
});

describe("sinks", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-audit-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("JSONL: a line that is not JSON is KMSInternalException caused by the parser's error", async () => {
    const path = join(dir, "audit.jsonl");
    await writeFile(path, "{not json\n");
    const error = await new JsonlAuditSink(path).read().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toContain("line 1 is not JSON");
    expect((error as Error).cause).toBeInstanceOf(SyntaxError);
  });

  test("JSONL: events land in the file, and a restarted KMS continues the chain", async () => {
    const path = join(dir, "audit.jsonl");
    const store = new (await import("@kms/core")).MemoryKeyStore();
    const rootKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const a = await createKms({ store, rootKey, audit: new JsonlAuditSink(path) });
    const keyId = (await a.createKey()).keyMetadata.keyId;
    await a.encrypt({ keyId, plaintext });
    await a.close();
    const b = await createKms({ store, rootKey, audit: new JsonlAuditSink(path) });
    await b.describeKey({ keyId });
    expect(await b.audit.verify()).toMatchObject({ ok: true, count: 3 });
    const lines = (await readFile(path, "utf8")).trim().split("\n");
    expect(lines.map((l) => JSON.parse(l).eventName)).toEqual([
      "CreateKey",
      "Encrypt",
      "DescribeKey",
    ]);
    // Editing the file is detected.
    await writeFile(path, `${lines[0]}\n${lines[1]!.replace("Encrypt", "Decrypt")}\n${lines[2]}\n`);
    expect(await b.audit.verify()).toMatchObject({ ok: false, index: 1, problem: "edited" });
    await b.close();
  });

  test("JSONL: a file that cannot be written fails the operation (fail closed)", async () => {
    const kms = await createKms({
      audit: new JsonlAuditSink(join(dir, "missing-dir", "audit.jsonl")),
    });
    const error = await kms.createKey().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toContain("could not record");
  });

  class BrokenSink extends MemoryAuditSink {
    failing = true;
    override async write(events: readonly AuditEvent[]): Promise<void> {
      if (this.failing) throw new Error("disk full");
      return super.write(events);
    }
  }

  test("fail-closed: no result is returned when the event is not written", async () => {
    const sink = new BrokenSink();
    const kms = await createKms({ audit: sink });
    await expect(kms.generateRandom({ numberOfBytes: 8 })).rejects.toBeInstanceOf(KmsInternalError);
    sink.failing = false;
    await expect(kms.generateRandom({ numberOfBytes: 8 })).resolves.toBeDefined();
    // The chain continues from the last written event.
    expect(verifyAuditLog(sink.events)).toMatchObject({ ok: true, count: 1 });
  });

  test("fail-open: the operation succeeds and the failure goes to onError", async () => {
    const sink = new BrokenSink();
    const errors: unknown[] = [];
    const kms = await createKms({
      audit: { sink, failClosed: false, onError: (e) => errors.push(e) },
    });
    await expect(kms.generateRandom({ numberOfBytes: 8 })).resolves.toBeDefined();
    await new Promise((r) => setTimeout(r, 10));
    expect(errors).toHaveLength(1);
  });

  test("concurrent calls are batched into fewer writes and stay chained in order", async () => {
    const sink = new MemoryAuditSink();
    let writes = 0;
    const counting: AuditSink = {
      description: "counting",
      write: (events) => {
        writes++;
        return sink.write(events);
      },
      read: (o) => sink.read(o),
      last: () => sink.last(),
      close: () => sink.close(),
    };
    const kms = await createKms({ audit: counting });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await Promise.all(Array.from({ length: 50 }, () => kms.encrypt({ keyId, plaintext })));
    expect(sink.events).toHaveLength(51);
    expect(writes).toBeLessThan(51);
    expect(verifyAuditLog(sink.events)).toMatchObject({ ok: true, count: 51 });
  });
});

describe("audit: false", () => {
  test("keeps no trail but still authorizes every call", async () => {
    const kms = await createKms({
      audit: false,
      principal: "arn:aws:iam::000000000000:user/alice",
    });
    const { keyMetadata } = await kms.createKey({
      policy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          {
            Effect: "Allow",
            Principal: { AWS: "arn:aws:iam::000000000000:root" },
            Action: "kms:*",
            Resource: "*",
          },
          {
            Effect: "Deny",
            Principal: { AWS: "arn:aws:iam::000000000000:user/mallory" },
            Action: "kms:Encrypt",
            Resource: "*",
          },
        ],
      }),
    });
    const plaintext = new Uint8Array([1, 2, 3]);
    await expect(kms.encrypt({ keyId: keyMetadata.keyId, plaintext })).resolves.toBeDefined();
    await expect(
      kms.encrypt(
        { keyId: keyMetadata.keyId, plaintext },
        { principal: "arn:aws:iam::000000000000:user/mallory" },
      ),
    ).rejects.toMatchObject({ code: "AccessDeniedException" });
    expect(await kms.audit.events()).toEqual([]);
  });
});
