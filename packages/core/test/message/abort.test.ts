/** A stream that ends before its message does leaves no plaintext behind in its frame buffer. */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createEncryptStream, encryptTransformStream, ValidationError } from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const FRAME = 4096;
const keyring = aesKeyring();
const options = { keyring, encryptionContext: { tenant: "acme" }, frameLength: FRAME };

/** The frame-sized buffers allocated while `run` goes on: the encryptor's held-back frame. */
async function frameBuffers(run: () => Promise<void>): Promise<Buffer[]> {
  const real = Buffer.allocUnsafeSlow.bind(Buffer);
  const seen: Buffer[] = [];
  vi.spyOn(Buffer, "allocUnsafeSlow").mockImplementation((size: number) => {
    const buffer = real(size);
    if (size === FRAME) seen.push(buffer);
    return buffer;
  });
  await run();
  return seen;
}

const secret = (): Buffer => Buffer.alloc(1000, 0x5a);

afterEach(() => {
  vi.restoreAllMocks();
});

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("an encrypt stream that never finishes", () => {
  it("node: destroyed mid-message, the held-back plaintext is zeroed", async () => {
    const buffers = await frameBuffers(async () => {
      const stream = createEncryptStream(options);
      stream.on("data", () => {});
      stream.on("error", () => {});
      await new Promise<void>((resolve) => stream.write(secret(), () => resolve()));
      stream.destroy(new Error("client went away"));
      await settle();
    });
    expect(buffers).toHaveLength(1);
    expect(buffers[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it("node: failing on a write beyond plaintextLength, the held-back plaintext is zeroed", async () => {
    const buffers = await frameBuffers(async () => {
      const stream = createEncryptStream({ ...options, plaintextLength: 1500 });
      stream.on("data", () => {});
      const failed = new Promise<unknown>((resolve) => stream.on("error", resolve));
      stream.write(secret());
      stream.write(secret());
      expect(await failed).toBeInstanceOf(ValidationError);
      await settle();
    });
    expect(buffers).toHaveLength(1);
    expect(buffers[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it("web: the writable side aborted, the held-back plaintext is zeroed", async () => {
    const buffers = await frameBuffers(async () => {
      const stream = encryptTransformStream(options);
      const reading = stream.readable.pipeTo(new WritableStream()).catch(() => {});
      const writer = stream.writable.getWriter();
      await writer.write(secret());
      await writer.abort(new Error("upload cancelled"));
      await reading;
      await settle();
    });
    expect(buffers).toHaveLength(1);
    expect(buffers[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it("web: the readable side cancelled, the held-back plaintext is zeroed", async () => {
    const buffers = await frameBuffers(async () => {
      const stream = encryptTransformStream(options);
      const writer = stream.writable.getWriter();
      const reader = stream.readable.getReader();
      const written = writer.write(secret());
      expect((await reader.read()).done).toBe(false);
      await written;
      await reader.cancel("consumer gone");
      await writer.closed.catch(() => {});
      await settle();
    });
    expect(buffers).toHaveLength(1);
    expect(buffers[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it("a finished stream still produces the whole message (the guard buffers are real)", async () => {
    const plaintext = randomBytes(FRAME + 10);
    const buffers = await frameBuffers(async () => {
      const stream = createEncryptStream(options);
      const out: Buffer[] = [];
      stream.on("data", (d: Buffer) => out.push(d));
      const done = new Promise((resolve) => stream.on("end", resolve));
      stream.end(plaintext);
      await done;
      expect(Buffer.concat(out).length).toBeGreaterThan(plaintext.length);
    });
    expect(buffers).toHaveLength(1);
  });
});
