/**
 * A decrypt stream torn down while its reader is behind leaves no readable plaintext in its
 * buffer (README, "Plaintext left in a stream's buffer"); what the reader took is its own.
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createDecryptStream,
  decryptTransformStream,
  encryptMessage,
  InvalidCiphertextError,
} from "../../src/index.ts";
import { aesKeyring, concat } from "./helpers.ts";

const FRAME = 16;
const keyring = aesKeyring();
const plaintext = randomBytes(7 * FRAME - 3);
const message = await encryptMessage(plaintext, { keyring, frameLength: FRAME });

const settle = () => new Promise((resolve) => setImmediate(resolve));
const isZero = (bytes: Uint8Array): boolean => bytes.every((byte) => byte === 0);

afterEach(() => {
  vi.restoreAllMocks();
});

describe("node: createDecryptStream destroyed with frames unread", () => {
  /** A stream holding the whole message's frames, unread, and every chunk it pushed. */
  async function filled(): Promise<{
    stream: ReturnType<typeof createDecryptStream>;
    pushed: Buffer[];
  }> {
    const stream = createDecryptStream({ keyring });
    stream.on("error", () => {});
    const pushed: Buffer[] = [];
    const push = stream.push.bind(stream);
    vi.spyOn(stream, "push").mockImplementation((chunk: unknown) => {
      if (Buffer.isBuffer(chunk)) pushed.push(chunk);
      return push(chunk);
    });
    stream.write(message);
    await settle();
    expect(pushed).toHaveLength(7);
    expect(stream.readableLength).toBe(plaintext.length);
    return { stream, pushed };
  }

  it("zeroes every unread byte, the unread rest of a partly read chunk included", async () => {
    const { stream, pushed } = await filled();
    const whole = stream.read(FRAME) as Buffer;
    const part = stream.read(5) as Buffer;
    stream.destroy();
    await settle();
    // What the reader took is intact (a view of the first chunk, and of the second's start).
    expect(whole).toEqual(plaintext.subarray(0, FRAME));
    expect(part).toEqual(plaintext.subarray(FRAME, FRAME + 5));
    expect(pushed[0]).toEqual(plaintext.subarray(0, FRAME));
    expect(pushed[1]!.subarray(0, 5)).toEqual(plaintext.subarray(FRAME, FRAME + 5));
    // Everything else is zero.
    expect(isZero(pushed[1]!.subarray(5))).toBe(true);
    for (const chunk of pushed.slice(2)) expect(isZero(chunk)).toBe(true);
    // And nothing is readable any more (it would read as zeros).
    expect(stream.read()).toBeNull();
  });

  it("leaves alone chunks received as 'data' events", async () => {
    const stream = createDecryptStream({ keyring });
    const received: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => received.push(chunk));
    const ended = new Promise((resolve) => stream.on("end", resolve));
    stream.end(message);
    await ended;
    stream.destroy();
    await settle();
    expect(concat(received)).toEqual(new Uint8Array(plaintext));
  });

  it("zeroes frames that verified before a later frame failed", async () => {
    const { stream, pushed } = await filled();
    const failed = new Promise<unknown>((resolve) => stream.on("error", resolve));
    stream.write(Buffer.from([0])); // a byte after the message's end
    expect(await failed).toBeInstanceOf(InvalidCiphertextError);
    for (const chunk of pushed) expect(isZero(chunk)).toBe(true);
  });
});

describe("web: decryptTransformStream cancelled with frames unread", () => {
  it("enqueues only what a waiting read takes, so a cancel leaves no plaintext queued", async () => {
    const enqueued: Uint8Array[] = [];
    const enqueue = TransformStreamDefaultController.prototype.enqueue;
    vi.spyOn(TransformStreamDefaultController.prototype, "enqueue").mockImplementation(function (
      this: TransformStreamDefaultController<unknown>,
      chunk: unknown,
    ) {
      if (chunk instanceof Uint8Array) enqueued.push(chunk);
      return enqueue.call(this, chunk);
    });
    const stream = decryptTransformStream({ keyring });
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    void writer.write(message).catch(() => {});
    const first = await reader.read();
    await settle();
    await reader.cancel();
    await settle();
    const taken = first.value!;
    expect(taken).toEqual(new Uint8Array(plaintext));
    // Every chunk the stream enqueued and the reader did not take is zero.
    for (const chunk of enqueued) {
      if (chunk !== taken) expect(isZero(chunk)).toBe(true);
    }
  });
});
