/**
 * Found in adversarial review: the request snapshot keeps class instances by reference, so the
 * audit event read their getters and Proxy traps after the call had run. One that threw left the
 * call without an event (a key scheduled for deletion, unaudited) and the caller with a raw Error.
 */
import { createKms, MemoryAuditSink, MemoryKeyStore } from "@kms/core";
import { describe, expect, test } from "vitest";

class Note {}

/** A class instance (kept by reference in the snapshot) whose own enumerable getter throws. */
function throwingGetter(): Note {
  const note = new Note();
  Object.defineProperty(note, "why", {
    enumerable: true,
    get() {
      throw new Error("getter threw");
    },
  });
  return note;
}

/** A Proxy of a class instance whose key listing throws. */
function throwingProxy(): Note {
  return new Proxy(new Note(), {
    ownKeys() {
      throw new Error("trap threw");
    },
  });
}

async function setup() {
  const sink = new MemoryAuditSink();
  const kms = await createKms({
    store: new MemoryKeyStore(),
    rootKey: new Uint8Array(32).fill(9),
    audit: sink,
  });
  const { keyId } = (await kms.createKey()).keyMetadata;
  return { sink, kms, keyId, before: sink.events.length };
}

describe("a request member whose getter or Proxy trap throws when the event reads it", () => {
  test.each([
    ["a getter", throwingGetter],
    ["a Proxy trap", throwingProxy],
  ])("%s: the call that ran is recorded, the member as unreadable", async (_, make) => {
    const { sink, kms, keyId, before } = await setup();
    const request = { keyId, pendingWindowInDays: 7, note: make() };

    await expect(kms.scheduleKeyDeletion(request)).resolves.toMatchObject({
      keyState: "PendingDeletion",
    });

    expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("PendingDeletion");
    const [event] = sink.events.slice(before);
    expect(event).toMatchObject({
      eventName: "ScheduleKeyDeletion",
      requestParameters: { keyId, pendingWindowInDays: 7, note: "(unreadable)" },
    });
    expect(event).not.toHaveProperty("errorCode");
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
  });

  test("a refused call with one is recorded with its error, and the caller gets the KmsError", async () => {
    const { sink, kms, keyId, before } = await setup();
    const request = {
      keyId,
      plaintext: new Uint8Array(3),
      encryptionContext: throwingGetter() as Record<string, string>,
    };

    const error = await kms.encrypt(request).catch((e: unknown) => e);

    expect(error).toMatchObject({ code: "ValidationException" });
    expect(sink.events.slice(before)).toMatchObject([
      {
        eventName: "Encrypt",
        errorCode: "ValidationException",
        requestParameters: { keyId, encryptionContext: "(unreadable)" },
      },
    ]);
  });

  test("a Date whose own toISOString answers something else is recorded by Date's own method", async () => {
    const { sink, kms, keyId, before } = await setup();
    const when = new Date(Date.UTC(2024, 0, 2));
    Object.defineProperty(when, "toISOString", { value: () => ({ not: "a string" }) });

    await kms.describeKey({ keyId, when } as never);

    expect(sink.events.slice(before)[0]?.requestParameters).toEqual({
      keyId,
      when: "2024-01-02T00:00:00.000Z",
    });
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
  });
});
