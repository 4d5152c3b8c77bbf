import { randomFillSync } from "node:crypto";

/**
 * Random bytes drawn from a pooled CSPRNG buffer. A fresh `randomBytes(12)` per IV costs about
 * 2 µs here — more than AES-GCM on a small value — while slicing a 16 KiB pool refilled by one
 * `randomFillSync` costs a copy. The pool is OpenSSL's CSPRNG output all the same, and every byte
 * is handed out once.
 */
const POOL_SIZE = 16 * 1024;
let pool = new Uint8Array(POOL_SIZE);
let offset = POOL_SIZE;

export function randomBytes(length: number): Uint8Array {
  if (length > POOL_SIZE / 4) return randomFillSync(new Uint8Array(length));
  if (offset + length > POOL_SIZE) {
    pool = randomFillSync(new Uint8Array(POOL_SIZE));
    offset = 0;
  }
  const out = pool.slice(offset, offset + length);
  // Zero what was handed out so a later heap inspection of the pool cannot recover it.
  pool.fill(0, offset, offset + length);
  offset += length;
  return out;
}

/** Up to this many bytes, `fillRandom` copies byte by byte: cheaper than two views and two calls. */
const SMALL_COPY = 32;

/**
 * Copies random bytes into `target` at `at` without allocating (hot path: an IV per value).
 * Like `randomBytes`, every pool byte is handed out once and zeroed as it goes.
 */
export function fillRandom(target: Uint8Array, at: number, length: number): void {
  if (length > POOL_SIZE / 4) {
    randomFillSync(target, at, length);
    return;
  }
  if (offset + length > POOL_SIZE) {
    // In place: nothing else holds the pool (randomBytes hands out copies), and every byte of
    // it was zeroed as it went, so a fresh 16 KiB zero-filled array per refill buys nothing.
    randomFillSync(pool);
    offset = 0;
  }
  const from = offset;
  offset += length;
  if (length <= SMALL_COPY) {
    for (let i = 0; i < length; i++) {
      target[at + i] = pool[from + i] as number;
      pool[from + i] = 0;
    }
    return;
  }
  target.set(pool.subarray(from, from + length), at);
  pool.fill(0, from, from + length);
}
