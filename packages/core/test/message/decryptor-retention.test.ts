/**
 * A stream decryptor keeps nothing of its first chunk once the frames in it were read: the
 * parsed header (views into that chunk) is dropped after it authenticated, so a long-lived
 * stream does not pin the buffer its caller wrote first. The garbage collector is asked
 * directly (no timing): a WeakRef to the chunk's memory must be cleared.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { encryptMessage } from "../../src/index.ts";
import { MessageDecryptor } from "../../src/message/decryptor.ts";
import { aesKeyring } from "./helpers.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

describe("MessageDecryptor", () => {
  it("does not keep the first chunk after its frames were read", async () => {
    const keyring = aesKeyring();
    const message = await encryptMessage(new Uint8Array(100), { keyring });
    const decryptor = new MessageDecryptor({ keyring });
    // Header and all frames in one chunk with memory of its own.
    let chunk: Uint8Array | undefined = new Uint8Array(message);
    const memory = new WeakRef(chunk.buffer);
    const frames = await decryptor.update(chunk);
    decryptor.final();
    expect(frames.reduce((n, f) => n + f.length, 0)).toBe(100);
    expect(decryptor.info?.frameLength).toBeGreaterThan(0);
    chunk = undefined;
    for (let i = 0; i < 3 && memory.deref() !== undefined; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    expect(memory.deref()).toBeUndefined();
    // Still answering about the header.
    expect(decryptor.info?.messageId).toHaveLength(32);
  });
});
