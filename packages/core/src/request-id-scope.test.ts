import { describe, expect, test } from "vitest";
import { MemoryAuditSink } from "./audit/memory-audit-sink.ts";
import { ValidationError } from "./errors.ts";
import { currentEncryptionContext, runWithEncryptionContext } from "./field/context-scope.ts";
import { createKms } from "./kms.ts";
import { currentRequestId, runWithRequestId } from "./request-id-scope.ts";
import { ManualClock } from "./testing/manual-clock.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const plaintext = new TextEncoder().encode("value");

describe("ambient request id", () => {
  test("is undefined outside a scope and follows async work inside one", async () => {
    expect(currentRequestId()).toBeUndefined();
    const seen = await runWithRequestId("req-1", async () => {
      await new Promise((r) => setTimeout(r, 1));
      return currentRequestId();
    });
    expect(seen).toBe("req-1");
    expect(currentRequestId()).toBeUndefined();
  });

  test("an inner scope replaces the id, and concurrent scopes stay apart", async () => {
    expect(runWithRequestId("outer", () => runWithRequestId("inner", currentRequestId))).toBe(
      "inner",
    );
    const seen = await Promise.all(
      ["x", "y"].map((id) =>
        runWithRequestId(id, async () => {
          await new Promise((r) => setTimeout(r, id === "x" ? 5 : 1));
          return currentRequestId();
        }),
      ),
    );
    expect(seen).toEqual(["x", "y"]);
  });

  test("is no part of the encryption context", () => {
    const context = runWithEncryptionContext({ tenant: "t1" }, () =>
      runWithRequestId("req-1", currentEncryptionContext),
    );
    expect(context).toEqual({ tenant: "t1" });
    expect(runWithRequestId("req-1", currentEncryptionContext)).toBeUndefined();
  });

  test.each([undefined, null, 7, {}, ["req"], Symbol("req")])(
    "refuses %s as an id before running anything",
    (id) => {
      let ran = false;
      expect(() =>
        runWithRequestId(id as never, () => {
          ran = true;
        }),
      ).toThrow(ValidationError);
      expect(() => runWithRequestId(id as never, () => 0)).toThrow(/"requestId" must be a string/);
      expect(ran).toBe(false);
    },
  );
});

describe("the in-process Kms and the ambient request id", () => {
  async function trail() {
    const sink = new MemoryAuditSink();
    const kms = await createKms({ clock: new ManualClock(), audit: sink });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const lastEvent = () => sink.events.at(-1);
    return { kms, keyId, lastEvent };
  }

  test("records the ambient id for a call that passes none", async () => {
    const { kms, keyId, lastEvent } = await trail();
    await runWithRequestId("req-123", () => kms.encrypt({ keyId, plaintext }));
    expect(lastEvent()).toMatchObject({ eventName: "Encrypt", requestID: "req-123" });
    // Also with options that name no request id (a principal only).
    await runWithRequestId("req-124", () =>
      kms.encrypt({ keyId, plaintext }, { principal: "arn:aws:iam::000000000000:root" }),
    );
    expect(lastEvent()).toMatchObject({ eventName: "Encrypt", requestID: "req-124" });
  });

  test("an explicit CallOptions.requestId wins over the ambient one", async () => {
    const { kms, keyId, lastEvent } = await trail();
    await runWithRequestId("req-ambient", () =>
      kms.encrypt({ keyId, plaintext }, { requestId: "req-explicit" }),
    );
    expect(lastEvent()).toMatchObject({ eventName: "Encrypt", requestID: "req-explicit" });
  });

  test("outside a scope each call gets its own random id", async () => {
    const { kms, keyId, lastEvent } = await trail();
    await kms.encrypt({ keyId, plaintext });
    const first = lastEvent()?.requestID;
    await kms.encrypt({ keyId, plaintext });
    const second = lastEvent()?.requestID;
    expect(first).toMatch(UUID);
    expect(second).toMatch(UUID);
    expect(second).not.toBe(first);
  });

  test("an invalid explicit id is still refused inside a scope, not replaced", async () => {
    const { kms, keyId, lastEvent } = await trail();
    await expect(
      runWithRequestId("req-1", () =>
        kms.encrypt({ keyId, plaintext }, { requestId: 42 as unknown as string }),
      ),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(lastEvent()).toMatchObject({
      eventName: "Encrypt",
      requestID: "(invalid requestId)",
      errorCode: "ValidationException",
    });
  });
});
