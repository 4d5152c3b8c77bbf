import { randomBytes } from "node:crypto";
import { Readable, type Transform } from "node:stream";
import { RawAesKeyring } from "../../src/index.ts";

export function aesKeyring(name = "k1", key: Uint8Array = randomBytes(32)): RawAesKeyring {
  return new RawAesKeyring({ keyNamespace: "test", keyName: name, wrappingKey: key });
}

/** Splits `bytes` at the given cut points (sorted, deduplicated, clamped). */
export function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => Math.min(Math.max(c, 0), bytes.length)))].sort(
    (a, b) => a - b,
  );
  const out: Uint8Array[] = [];
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p > at) out.push(bytes.slice(at, p));
    at = p;
  }
  return out;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Pushes chunks through a Node Transform and collects the output. */
export async function throughNode(
  transform: Transform,
  chunks: readonly Uint8Array[],
): Promise<Uint8Array> {
  const out: Buffer[] = [];
  const source = Readable.from(
    chunks.map((c) => Buffer.from(c)),
    { objectMode: false },
  );
  await new Promise<void>((resolve, reject) => {
    transform.on("data", (d: Buffer) => out.push(d));
    transform.on("end", resolve);
    transform.on("error", reject);
    source.on("error", reject);
    source.pipe(transform);
  });
  return concat(out);
}

/** Pushes chunks through a web TransformStream and collects the output. */
export async function throughWeb(
  stream: TransformStream<Uint8Array, Uint8Array>,
  chunks: readonly Uint8Array[],
): Promise<Uint8Array> {
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(c.slice());
      controller.close();
    },
  });
  const out: Uint8Array[] = [];
  const reader = source.pipeThrough(stream).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.push(value);
  }
  return concat(out);
}
