/**
 * close() while calls are in flight (found in review): it closed the audit sink and the key
 * store under them, so a call's work could be done (a deletion scheduled, a data key returned)
 * while its event then failed on the closed sink, and a fail-closed caller got an error for a
 * change that had happened. close() now refuses new calls at once, waits for the admitted ones
 * and their events, and only then closes the sink, the store and the HSM. A store that holds a
 * call at a gate stands for a slow (or hung) database.
 */
import { describe, expect, it } from "vitest";
import {
  type AuditEvent,
  createKms,
  type Kms,
  KmsInternalError,
  MemoryAuditSink,
  MemoryKeyStore,
  type StoredKey,
} from "../../src/index.ts";

/** What happened, in order: the gated store operation's end, and each close. */
type Log = string[];

/** A memory store whose next `operation` waits at a gate until `release()`. */
class GatedStore extends MemoryKeyStore {
  readonly log: Log;
  #armed: "getKey" | "updateKey" | undefined;
  #reached: (() => void) | undefined;
  #open: Promise<void> | undefined;
  #release: (() => void) | undefined;

  constructor(log: Log) {
    super();
    this.log = log;
  }

  /** Arms the gate; resolves once a call is held at it. */
  arm(operation: "getKey" | "updateKey"): Promise<void> {
    this.#armed = operation;
    this.#open = new Promise((resolve) => {
      this.#release = resolve;
    });
    return new Promise((resolve) => {
      this.#reached = resolve;
    });
  }

  release(): void {
    this.#release?.();
  }

  async #gate(operation: "getKey" | "updateKey"): Promise<void> {
    if (this.#armed !== operation) return;
    this.#armed = undefined;
    this.#reached?.();
    await this.#open;
    this.log.push(`${operation} done`);
  }

  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    await this.#gate("getKey");
    return super.getKey(keyId);
  }

  override async updateKey(key: StoredKey): Promise<void> {
    await this.#gate("updateKey");
    return super.updateKey(key);
  }

  override async close(): Promise<void> {
    this.log.push("store closed");
    return super.close();
  }
}

/** A fail-closed trail that refuses writes once closed, as a file or database sink does. */
class ClosingSink extends MemoryAuditSink {
  readonly log: Log;
  #closed = false;

  constructor(log: Log) {
    super();
    this.log = log;
  }

  override async write(events: readonly AuditEvent[]): Promise<void> {
    if (this.#closed) throw new Error("sink is closed");
    return super.write(events);
  }

  override async close(): Promise<void> {
    this.#closed = true;
    this.log.push("sink closed");
  }
}

async function open() {
  const log: Log = [];
  const store = new GatedStore(log);
  const sink = new ClosingSink(log);
  const kms = await createKms({ store, audit: sink });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  return { log, store, sink, kms, keyId };
}

/** Whether `promise` settled within a few turns of the event loop. */
async function settles(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

const refusal = (kms: Kms, keyId: string) =>
  kms.describeKey({ keyId }).then(
    () => undefined,
    (error: unknown) => error,
  );

describe("close() with calls in flight", () => {
  it("lets a scheduled deletion finish and record its event before closing the sink and store", async () => {
    const { log, store, sink, kms, keyId } = await open();
    const held = store.arm("updateKey");
    const scheduling = kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    await held;

    const closing = kms.close();
    // New calls are refused at once, as after close, and not audited.
    const refused = await refusal(kms, keyId);
    expect(refused).toBeInstanceOf(KmsInternalError);
    expect((refused as Error).message).toBe("describeKey failed: this Kms is closed");
    // close() waits for the call held by the store: the sink and the store stay open.
    expect(await settles(closing)).toBe(false);
    expect(log).toEqual([]);
    expect(kms.close()).toBe(closing);

    store.release();
    const response = await scheduling;
    expect(response.keyState).toBe("PendingDeletion");
    await closing;
    expect(log).toEqual(["updateKey done", "sink closed", "store closed"]);
    const recorded = sink.events.filter((e) => e.eventName === "ScheduleKeyDeletion");
    expect(recorded).toHaveLength(1);
    expect(recorded[0]!.errorCode).toBeUndefined();
    expect(sink.events.some((e) => e.eventName === "DescribeKey")).toBe(false);
  });

  it("returns the data key of a call admitted before close, with its event in the trail", async () => {
    const { log, store, sink, kms, keyId } = await open();
    const held = store.arm("getKey");
    const generating = kms.generateDataKey({ keyId, keySpec: "AES_256" });
    await held;
    const closing = kms.close();
    expect(await settles(closing)).toBe(false);

    store.release();
    const { plaintext, ciphertextBlob } = await generating;
    expect(plaintext).toHaveLength(32);
    expect(ciphertextBlob.length).toBeGreaterThan(32);
    await closing;
    expect(log).toEqual(["getKey done", "sink closed", "store closed"]);
    const event = sink.events.find((e) => e.eventName === "GenerateDataKey");
    expect(event?.errorCode).toBeUndefined();
  });

  it("records a call in flight that fails, and answers its own error, not the closed sink's", async () => {
    const { log, store, sink, kms } = await open();
    const held = store.arm("getKey");
    const missing = "00000000-0000-0000-0000-000000000000";
    const describing = kms.describeKey({ keyId: missing }).then(
      () => undefined,
      (error: unknown) => error,
    );
    await held;
    const closing = kms.close();
    store.release();
    expect((await describing) as Error).toMatchObject({ code: "NotFoundException" });
    await closing;
    expect(log).toEqual(["getKey done", "sink closed", "store closed"]);
    expect(sink.events.at(-1)).toMatchObject({
      eventName: "DescribeKey",
      errorCode: "NotFoundException",
    });
  });

  it("closes at once when nothing is in flight", async () => {
    const { log, kms } = await open();
    await kms.close();
    expect(log).toEqual(["sink closed", "store closed"]);
  });
});
