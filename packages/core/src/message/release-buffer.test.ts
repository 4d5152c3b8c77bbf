/**
 * `releaseBuffer` frees node:crypto's output buffers the moment their bytes were copied, and
 * never touches memory it does not own; the one-shot encryptor and decryptor use it for every
 * frame, so a multi-frame message costs its own size in ArrayBuffer memory, not twice that.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { RawAesKeyring } from "../keyring/raw-aes-keyring.ts";
import { decryptMessage, encryptMessage } from "./message.ts";
import { releaseBuffer } from "./release-buffer.ts";

describe("releaseBuffer", () => {
  it("detaches a buffer that owns its whole ArrayBuffer", () => {
    const bytes = Buffer.allocUnsafeSlow(4096).fill(7);
    const arrayBuffer = bytes.buffer;
    releaseBuffer(bytes);
    // Detached: an ArrayBuffer whose memory is gone reads as empty.
    expect(arrayBuffer.byteLength).toBe(0);
    expect(bytes.length).toBe(0);
  });

  it("leaves a slice of Node's shared Buffer pool alone", () => {
    const pooled = Buffer.from("a short string lands in the pool");
    const neighbour = Buffer.from("and so does its neighbour");
    expect(pooled.buffer).toBe(neighbour.buffer);
    const poolSize = pooled.buffer.byteLength;
    releaseBuffer(pooled);
    expect(pooled.buffer.byteLength).toBe(poolSize);
    expect(pooled.toString()).toBe("a short string lands in the pool");
    expect(neighbour.toString()).toBe("and so does its neighbour");
    expect(Buffer.from("the pool still serves").toString()).toBe("the pool still serves");
  });

  it("leaves views of part of an ArrayBuffer alone, at any offset", () => {
    const whole = new Uint8Array(64).fill(1);
    for (const view of [whole.subarray(0, 32), whole.subarray(32), whole.subarray(1, 63)]) {
      releaseBuffer(view);
      expect(whole.buffer.byteLength).toBe(64);
      expect(view.every((b) => b === 1)).toBe(true);
    }
  });

  it("leaves shared memory alone", () => {
    const shared = new Uint8Array(new SharedArrayBuffer(16)).fill(3);
    releaseBuffer(shared);
    expect(shared.length).toBe(16);
    expect(shared[15]).toBe(3);
  });
});

describe("one-shot messages free each frame's node:crypto output at once", () => {
  const MIB = 1024 * 1024;
  const keyring = new RawAesKeyring({
    keyNamespace: "test",
    keyName: "k1",
    wrappingKey: randomBytes(32),
  });
  // Four 1 MiB frames. Left to the garbage collector, each frame's cipher output stays
  // allocated until the next collection: 8 MiB of ArrayBuffers for a 4 MiB result.
  const plaintext = randomBytes(4 * MIB);
  const slack = MIB / 2;
  const arrayBuffers = () => process.memoryUsage().arrayBuffers;

  it("encryptMessage holds about the message's size, not twice it", async () => {
    const before = arrayBuffers();
    const message = await encryptMessage(plaintext, { keyring, frameLength: MIB });
    const grown = arrayBuffers() - before;
    expect(message.length).toBeGreaterThan(plaintext.length);
    expect(grown).toBeLessThan(message.length + slack);
  });

  it("decryptMessage holds about the plaintext's size, not twice it", async () => {
    const message = await encryptMessage(plaintext, { keyring, frameLength: MIB });
    const before = arrayBuffers();
    const opened = await decryptMessage(message, { keyring });
    const grown = arrayBuffers() - before;
    expect(Buffer.from(opened.plaintext).equals(plaintext)).toBe(true);
    expect(grown).toBeLessThan(plaintext.length + slack);
  });
});
