/**
 * Chunks below this size are copied into a segment the queue owns instead of being kept as
 * views. Whoever sends a message chooses how it is chunked (a peer can dribble a 16 MiB frame
 * one byte per read), and the decryptor buffers a whole frame before its tag can be checked:
 * one view per byte costs ~200 bytes of heap per byte and one array slot to shift per chunk.
 * Coalesced, a frame costs at most about two segments per 4 KiB whatever the chunking.
 */
const SMALL_CHUNK = 4096;
const EMPTY = new Uint8Array(0);

/**
 * A FIFO of byte chunks that hands out contiguous views: a run inside one chunk is returned
 * without copying; only a run that spans chunks is assembled into a new buffer. Large chunks are
 * kept as views (callers must not reuse their buffers while queued); small ones are copied.
 */
export class ByteQueue {
  /** Live chunks are `#chunks[#first…]`: consuming moves `#first` instead of shifting the array. */
  #chunks: Uint8Array[] = [];
  #first = 0;
  #head = 0;
  #length = 0;
  /** The owned segment behind the last chunk while small chunks are appended to it. */
  #tail: Uint8Array | undefined;
  #tailFill = 0;

  get length(): number {
    return this.#length;
  }

  /** Chunks held (views and owned segments), for tests of the per-chunk overhead. */
  get segments(): number {
    return this.#chunks.length - this.#first;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#length += chunk.length;
    if (chunk.length >= SMALL_CHUNK) {
      this.#chunks.push(chunk);
      this.#tail = undefined;
      return;
    }
    let at = 0;
    while (at < chunk.length) {
      if (this.#tail === undefined || this.#tailFill === this.#tail.length) {
        this.#tail = new Uint8Array(SMALL_CHUNK);
        this.#tailFill = 0;
        this.#chunks.push(EMPTY);
      }
      const n = Math.min(chunk.length - at, this.#tail.length - this.#tailFill);
      this.#tail.set(chunk.subarray(at, at + n), this.#tailFill);
      this.#tailFill += n;
      at += n;
      // Bytes already handed out lie before `#tailFill`, so appending never changes them.
      this.#chunks[this.#chunks.length - 1] = this.#tail.subarray(0, this.#tailFill);
    }
  }

  /** Reads a uint32 BE at `offset` without consuming (caller checks length first). */
  peekUint32(offset: number): number {
    let value = 0;
    for (let i = 0; i < 4; i++) value = value * 256 + this.#byteAt(offset + i);
    return value;
  }

  /** Removes and returns the first `n` bytes (caller checks length first). */
  take(n: number): Uint8Array {
    const first = this.#chunks[this.#first]!;
    if (first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[this.#first]!;
      const count = Math.min(chunk.length - this.#head, n - filled);
      out.set(chunk.subarray(this.#head, this.#head + count), filled);
      filled += count;
      this.#advance(count);
    }
    return out;
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    const chunks = this.#chunks;
    while (this.#first < chunks.length && this.#head >= chunks[this.#first]!.length) {
      this.#head -= chunks[this.#first]!.length;
      chunks[this.#first] = EMPTY; // not kept alive by the array until it is compacted
      this.#first += 1;
    }
    if (this.#first === chunks.length) {
      this.#chunks = [];
      this.#first = 0;
      this.#tail = undefined;
    } else if (this.#first >= 1024 && 2 * this.#first >= chunks.length) {
      this.#chunks = chunks.slice(this.#first);
      this.#first = 0;
    }
  }

  #byteAt(offset: number): number {
    let at = this.#head + offset;
    for (let i = this.#first; i < this.#chunks.length; i++) {
      const chunk = this.#chunks[i]!;
      if (at < chunk.length) return chunk[at]!;
      at -= chunk.length;
    }
    return 0;
  }
}
