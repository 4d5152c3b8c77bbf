/**
 * Memory for bytes that are public by design (ciphertext, message headers, frame prefixes,
 * signatures). Small outputs are carved from slabs that hold nothing else: Node's shared Buffer
 * pool (`Buffer.allocUnsafe`) also holds whatever `Buffer.from(string)` put there — a caller's
 * plaintext, for one — and a caller who stores or sends `output.buffer` would ship it.
 */

const SLAB_SIZE = 8 * 1024;
/** Larger outputs get an ArrayBuffer of their own, as Node's pool does above half its size. */
const MAX_POOLED = SLAB_SIZE >>> 1;

let slab = new ArrayBuffer(0);
let used = 0;

/**
 * `size` bytes in memory shared only with other public bytes: zero-filled up to MAX_POOLED, not
 * above it (an ArrayBuffer of its own, which the caller overwrites whole).
 */
export function publicBuffer(size: number): Buffer {
  if (size > MAX_POOLED) return Buffer.allocUnsafeSlow(size);
  if (used + size > slab.byteLength) {
    slab = new ArrayBuffer(SLAB_SIZE);
    used = 0;
  }
  const out = Buffer.from(slab, used, size);
  // 8-byte alignment, as Node's pool keeps, so typed-array views over the output stay cheap.
  used = (used + size + 7) & ~7;
  return out;
}
