/**
 * What a decryptor returns about the header (MessageInfo) is its own memory, not views into the
 * caller's message: a caller that reuses or zeroes its buffer afterwards must not see the message
 * id it was given change (it is the message's identity, e.g. for replay detection, §5.8).
 */
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import {
  createDecryptStream,
  decryptMessage,
  encryptMessage,
  type MessageInfo,
} from "../../src/index.ts";
import { parseHeader } from "../../src/message/format.ts";
import { aesKeyring } from "./helpers.ts";

const keyring = aesKeyring();

describe("MessageInfo holds no view of the input", () => {
  it("decryptMessage: the message id outlives a reuse of the message buffer", async () => {
    const message = await encryptMessage(new TextEncoder().encode("secret"), {
      keyring,
      encryptionContext: { tenant: "a" },
    });
    const id = Buffer.from(message.subarray(3, 35));
    const info = await decryptMessage(message, { keyring });
    expect(info.messageId.buffer).not.toBe(message.buffer);
    message.fill(0);
    expect(Buffer.from(info.messageId).equals(id)).toBe(true);
    // The rest is strings: nothing else could alias the buffer.
    expect(info.encryptionContext).toEqual({ tenant: "a" });
    expect(info.encryptedDataKeys).toEqual([
      { providerId: "test", providerInfo: expect.any(String) },
    ]);
  });

  it("a stream: the id given to onHeader outlives a reuse of the chunk", async () => {
    const message = await encryptMessage(new Uint8Array(10), { keyring });
    const id = Buffer.from(message.subarray(3, 35));
    const chunk = Buffer.from(message);
    let seen: MessageInfo | undefined;
    await pipeline(
      Readable.from([chunk]),
      createDecryptStream({ keyring, onHeader: (info) => (seen = info) }),
      new Writable({ write: (_c, _e, done) => done() }),
    );
    chunk.fill(0);
    expect(Buffer.from(seen!.messageId).equals(id)).toBe(true);
  });

  it("parseHeader returns a message id of its own", async () => {
    const message = await encryptMessage(new Uint8Array(1), { keyring });
    const parsed = parseHeader(message, 16);
    expect(parsed.header!.messageId.buffer).not.toBe(message.buffer);
    expect(parsed.header!.messageId).toEqual(message.subarray(3, 35));
  });
});
