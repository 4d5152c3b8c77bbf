/**
 * Streaming 1 GiB through encrypt → decrypt keeps memory bounded (docs/FORMAT.md §5.6): the
 * peak RSS growth, sampled while the data flows, stays far below the payload size.
 */
import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import {
  createDecryptStream,
  createEncryptStream,
  decryptTransformStream,
  encryptTransformStream,
} from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const GIB = 1024 ** 3;
const CHUNK = 1024 * 1024;
const keyring = aesKeyring();

function* source(total: number, block: Buffer): Generator<Buffer> {
  for (let sent = 0; sent < total; sent += block.length) {
    // A fresh view each time: the block's bytes are constant, so reuse is safe for the reader.
    yield block.subarray(0, Math.min(block.length, total - sent));
  }
}

function sampleRss(): { peak: () => number; stop: () => void } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  return {
    peak: () => Math.max(peak, process.memoryUsage().rss),
    stop: () => clearInterval(timer),
  };
}

describe("bounded memory", () => {
  it("streams 1 GiB through Node encrypt + decrypt with < 200 MB RSS growth", async () => {
    const block = randomBytes(CHUNK);
    const expected = createHash("sha256");
    for (const b of source(GIB, block)) expected.update(b);
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    const rss = sampleRss();
    const actual = createHash("sha256");
    let bytes = 0;
    try {
      await pipeline(
        Readable.from(source(GIB, block), { objectMode: false, highWaterMark: CHUNK }),
        createEncryptStream({ keyring }),
        createDecryptStream({ keyring }),
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            actual.update(chunk);
            bytes += chunk.length;
            callback();
          },
        }),
      );
    } finally {
      rss.stop();
    }
    expect(bytes).toBe(GIB);
    expect(actual.digest("hex")).toBe(expected.digest("hex"));
    const growth = rss.peak() - before;
    expect(growth).toBeLessThan(200 * 1024 * 1024);
  }, 120_000);

  it("streams 256 MiB through web encrypt + decrypt with < 200 MB RSS growth", async () => {
    const total = 256 * 1024 * 1024;
    const block = randomBytes(CHUNK);
    let sent = 0;
    const readable = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= total) return controller.close();
        controller.enqueue(block.subarray(0, Math.min(CHUNK, total - sent)));
        sent += CHUNK;
      },
    });
    const before = process.memoryUsage().rss;
    const rss = sampleRss();
    let bytes = 0;
    try {
      await readable
        .pipeThrough(encryptTransformStream({ keyring }))
        .pipeThrough(decryptTransformStream({ keyring }))
        .pipeTo(
          new WritableStream({
            write(chunk) {
              bytes += chunk.length;
            },
          }),
        );
    } finally {
      rss.stop();
    }
    expect(bytes).toBe(total);
    expect(rss.peak() - before).toBeLessThan(200 * 1024 * 1024);
  }, 120_000);
});
