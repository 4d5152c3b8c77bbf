/**
 * A user-supplied `clock` whose now() answers something that is not a time (found in review):
 * NaN made building the call's audit event throw a raw RangeError (`toISOString` of an invalid
 * date) out of the call. Such a reading is now refused with KmsInternalError naming the clock,
 * before the call does anything (no event: it would have no time).
 */
import { beforeEach, describe, expect, it } from "vitest";
import {
  type Clock,
  createKms,
  type Kms,
  KmsInternalError,
  MemoryAuditSink,
  ValidationError,
} from "../../src/index.ts";

/** A clock that answers whatever `reading` holds: a good time until a test sets another. */
class SettableClock implements Clock {
  reading: () => unknown = () => Date.now();
  now(): number {
    return this.reading() as number;
  }
}

const plaintext = new TextEncoder().encode("what time is it");

let clock: SettableClock;
let sink: MemoryAuditSink;
let kms: Kms;
let keyId: string;

beforeEach(async () => {
  clock = new SettableClock();
  sink = new MemoryAuditSink();
  kms = await createKms({ clock, audit: sink });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

const BAD_READINGS: readonly [string, unknown][] = [
  ["NaN", Number.NaN],
  ["Infinity", Number.POSITIVE_INFINITY],
  ["-Infinity", Number.NEGATIVE_INFINITY],
  ["a time past what a Date holds", 8.64e15 + 1],
  ["1e300", 1e300],
  ["a numeric string", String(Date.now())],
  ["undefined", undefined],
  ["null", null],
  ["a Date", new Date()],
  ["a bigint", 1n],
];

const OPERATIONS: readonly [string, () => Promise<unknown>][] = [
  ["createKey", () => kms.createKey()],
  ["encrypt", () => kms.encrypt({ keyId, plaintext })],
  ["generateDataKey", () => kms.generateDataKey({ keyId, keySpec: "AES_256" })],
  ["scheduleKeyDeletion", () => kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 })],
  ["listKeys", () => kms.listKeys()],
  ["explain", () => kms.explain({ operation: "encrypt", request: { keyId } })],
  ["runMaintenance", () => kms.runMaintenance()],
];

async function failure(call: () => Promise<unknown>): Promise<unknown> {
  return call().then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe("a clock reading that is not a time", () => {
  describe.each(BAD_READINGS)("%s", (_name, reading) => {
    it.each(OPERATIONS)(
      "%s fails with KmsInternalError naming the clock, doing nothing",
      async (_operation, call) => {
        const events = sink.events.length;
        clock.reading = () => reading;
        const error = await failure(call);
        clock.reading = () => Date.now();

        expect(error).toBeInstanceOf(KmsInternalError);
        expect((error as Error).message).toMatch(/^the Kms clock \(KmsOptions\.clock\) returned /);
        // Nothing done, nothing recorded.
        expect(sink.events).toHaveLength(events);
        expect((await kms.listKeys()).keys).toHaveLength(1);
        expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("Enabled");
      },
    );
  });

  it("names the reading it refused", async () => {
    clock.reading = () => Number.NaN;
    await expect(kms.encrypt({ keyId, plaintext })).rejects.toThrow(
      "the Kms clock (KmsOptions.clock) returned NaN from now()",
    );
    clock.reading = () => "soon";
    await expect(kms.encrypt({ keyId, plaintext })).rejects.toThrow(
      "returned a value of type string from now()",
    );
  });

  it("a clock that throws fails the call with KmsInternalError, its error as the cause", async () => {
    const broken = new Error("clock source unreachable");
    clock.reading = () => {
      throw broken;
    };
    const error = await failure(() => kms.encrypt({ keyId, plaintext }));
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toBe(
      "the Kms clock (KmsOptions.clock) failed to tell the time",
    );
    expect((error as Error).cause).toBe(broken);
  });

  it("a reading gone bad later in a call fails that call, audited, and stores no bad date", async () => {
    let readings = 0;
    // The call's first reading is good; createKey's own (its creation date) is not.
    clock.reading = () => (++readings === 1 ? Date.now() : Number.NaN);
    const error = await failure(() => kms.createKey());
    clock.reading = () => Date.now();
    expect(error).toBeInstanceOf(KmsInternalError);
    expect(sink.events.at(-1)).toMatchObject({
      eventName: "CreateKey",
      errorCode: "KMSInternalException",
    });
    expect((await kms.listKeys()).keys).toHaveLength(1);
  });

  it("createKms refuses a clock without now()", async () => {
    for (const bad of [{}, { now: 5 }, null, "Date.now"]) {
      await expect(createKms({ clock: bad as unknown as Clock })).rejects.toThrow(ValidationError);
    }
  });
});
