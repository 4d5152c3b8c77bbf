/**
 * A FIFO of byte chunks that hands out contiguous views: a run inside one chunk is returned
 * without copying; only a run that spans chunks is assembled into a new buffer.
 */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  #head = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Reads a uint32 BE at `offset` without consuming (caller checks length first). */
  peekUint32(offset: number): number {
    let value = 0;
    for (let i = 0; i < 4; i++) value = value * 256 + this.#byteAt(offset + i);
    return value;
  }

  /** Removes and returns the first `n` bytes (caller checks length first). */
  take(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
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
    while (this.#chunks.length > 0 && this.#head >= this.#chunks[0]!.length) {
      this.#head -= this.#chunks[0]!.length;
      this.#chunks.shift();
    }
  }

  #byteAt(offset: number): number {
    let at = this.#head + offset;
    for (const chunk of this.#chunks) {
      if (at < chunk.length) return chunk[at]!;
      at -= chunk.length;
    }
    return 0;
  }
}
