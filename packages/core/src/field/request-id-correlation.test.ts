import { describe, expect, test } from "vitest";
import type { AuditEvent } from "../audit/audit-sink.ts";
import { MemoryAuditSink } from "../audit/memory-audit-sink.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { runWithRequestId } from "../request-id-scope.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { CallOptions } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * The KMS calls the field engine makes on a request's behalf carry that request's id
 * (runWithRequestId), so their audit events can be tied to it.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RANDOM: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };
const at: FieldBinding = { model: "Patient", field: "ssn", context: { tenant: "t1" } };

/** The KMS as a remote one would be seen: every call's options recorded. */
function recording(kms: Kms): { kms: KmsLike; options: (CallOptions | undefined)[] } {
  const options: (CallOptions | undefined)[] = [];
  const wrapped: KmsLike = {
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: (r, o) => {
      options.push(o);
      return kms.decrypt(r, o);
    },
    generateDataKey: (r, o) => {
      options.push(o);
      return kms.generateDataKey(r, o);
    },
    generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
    sign: (r, o) => kms.sign(r, o),
    verify: (r, o) => kms.verify(r, o),
    generateMac: (r, o) => kms.generateMac(r, o),
    verifyMac: (r, o) => kms.verifyMac(r, o),
    getPublicKey: (r, o) => kms.getPublicKey(r, o),
  };
  return { kms: wrapped, options };
}

async function setup() {
  const sink = new MemoryAuditSink();
  const kms = await createKms({ clock: new ManualClock(), audit: sink });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const remote = recording(kms);
  const engine = new FieldEncryptionEngine({
    kms: remote.kms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId,
  });
  /** The data-key events (GenerateDataKey, Decrypt) recorded since the last call. */
  let seen = sink.events.length;
  const newEvents = (): Pick<AuditEvent, "eventName" | "requestID">[] => {
    const events = sink.events.slice(seen).map(({ eventName, requestID }) => ({
      eventName,
      requestID,
    }));
    seen = sink.events.length;
    return events;
  };
  return { engine, newEvents, options: remote.options };
}

describe("field engine KMS calls carry the ambient request id", () => {
  test("a new randomized data key, and its unwrap after clearCache()", async () => {
    const { engine, newEvents } = await setup();
    const stored = await runWithRequestId("req-123", () => engine.encrypt(at, RANDOM, "secret"));
    expect(newEvents()).toEqual([{ eventName: "GenerateDataKey", requestID: "req-123" }]);
    engine.clearCache();
    const value = await runWithRequestId("req-123", () => engine.decrypt(at, RANDOM, stored));
    expect(value).toBe("secret");
    expect(newEvents()).toEqual([{ eventName: "Decrypt", requestID: "req-123" }]);
  });

  test("a stable data key (deterministic values, blind indexes), and its unwrap after clearCache()", async () => {
    const { engine, newEvents, options } = await setup();
    const stored = await runWithRequestId("req-det", () => engine.encrypt(at, DET, "123"));
    expect(newEvents()).toEqual([{ eventName: "GenerateDataKey", requestID: "req-det" }]);
    engine.clearCache();
    await runWithRequestId("req-idx", () =>
      engine.blindIndex({ ...at, field: "ssnIndex" }, { bytes: 16 }, "123"),
    );
    expect(newEvents()).toEqual([{ eventName: "Decrypt", requestID: "req-idx" }]);
    engine.clearCache();
    expect(await runWithRequestId("req-read", () => engine.decrypt(at, DET, stored))).toBe("123");
    expect(newEvents()).toEqual([{ eventName: "Decrypt", requestID: "req-read" }]);
    expect(options).toEqual([
      { requestId: "req-det" },
      { requestId: "req-idx" },
      { requestId: "req-read" },
    ]);
  });

  test("a remote KmsLike receives the request id and no principal", async () => {
    const { engine, options } = await setup();
    const stored = await runWithRequestId("req-123", () => engine.encrypt(at, RANDOM, "secret"));
    engine.clearCache();
    await runWithRequestId("req-456", () => engine.decrypt(at, RANDOM, stored));
    expect(options).toEqual([{ requestId: "req-123" }, { requestId: "req-456" }]);
  });

  test("outside a scope: no options, and a random id per call", async () => {
    const { engine, newEvents, options } = await setup();
    const stored = await engine.encrypt(at, RANDOM, "secret");
    engine.clearCache();
    await engine.decrypt(at, RANDOM, stored);
    const events = newEvents();
    expect(events.map((e) => e.eventName)).toEqual(["GenerateDataKey", "Decrypt"]);
    for (const event of events) expect(event.requestID).toMatch(UUID);
    expect(events[0]?.requestID).not.toBe(events[1]?.requestID);
    expect(options).toEqual([undefined, undefined]);
  });

  test("a data key loaded once for concurrent requests carries the first loader's id", async () => {
    const { engine, newEvents, options } = await setup();
    await Promise.all([
      runWithRequestId("req-first", () => engine.encrypt(at, RANDOM, "a")),
      runWithRequestId("req-second", () => engine.encrypt(at, RANDOM, "b")),
    ]);
    expect(newEvents()).toEqual([{ eventName: "GenerateDataKey", requestID: "req-first" }]);
    expect(options).toEqual([{ requestId: "req-first" }]);
    // Cached: a later request makes no KMS call at all, so no event carries its id.
    await runWithRequestId("req-third", () => engine.encrypt(at, RANDOM, "c"));
    expect(newEvents()).toEqual([]);
  });
});
