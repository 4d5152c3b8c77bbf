import { type Cipheriv, createCipheriv } from "node:crypto";
import {
  type AesKey,
  GCM_IV_LENGTH,
  GCM_TAG_LENGTH,
  gcmOpenFrom,
  gcmSealWithFreshIv,
} from "./aes-gcm.ts";
import { fillRandom } from "./random.ts";

/**
 * AES-256-GCM (NIST SP 800-38D, 96-bit IVs) for short values, built from one AES-ECB context per
 * key and GHASH tables, with the same output as node:crypto's `aes-256-gcm`.
 *
 * Why: node:crypto makes a cipher object and an OpenSSL context per value, ~3–4 µs, while the
 * AES and GHASH work on a 32-byte field value is tens of nanoseconds. Here the AES blocks of a
 * value (the tag mask E(K, J0) and the keystream) come from one ECB call on its counter blocks,
 * and from one call for a whole batch of values (`GcmOpenBatch`). AES itself stays in OpenSSL
 * (AES-NI, constant time).
 *
 * GHASH runs here, on 4-bit tables of the powers of H (8-bit ones for keys in heavy use, within
 * a budget: WIDEN_AFTER). It is written so that no table index and no branch depends on a
 * secret: a value's hash is Σ Cⱼ·Hⁿ⁻ʲ⁺¹ ⊕ c(AAD, length), each ciphertext block multiplied by
 * its own power of H through that power's table, indexed by the ciphertext's nibbles or bytes,
 * which are public. The per-(AAD, length) constant and the powers are
 * computed once, by a bitwise multiplication that masks instead of branching. (Horner's rule,
 * X ← (X ⊕ Cⱼ)·H, would index the table by X, which depends on H: a cache-timing leak.) The tag
 * is compared without an early exit, and no plaintext is produced before it verifies.
 *
 * Values longer than SHORT_GCM_MAX_BYTES go through node:crypto, where the per-byte work
 * dominates and OpenSSL's is faster.
 */
export const SHORT_GCM_MAX_BYTES = 128;
const MAX_BLOCKS = SHORT_GCM_MAX_BYTES / 16;
/** GCM's reduction constant: x¹²⁸ + x⁷ + x² + x + 1, bit-reflected, in the top word. */
const R = 0xe1000000 | 0;
/** A 4-bit table: 32 nibble positions × 16 values × 4 words (8 KiB). */
const TABLE_WORDS = 32 * 16 * 4;
/** An 8-bit table: 16 byte positions × 256 values × 4 words (64 KiB). */
const WIDE_TABLE_WORDS = 16 * 256 * 4;
const WIDE_TABLE_BYTES = WIDE_TABLE_WORDS * 4;
/**
 * 8-bit tables halve GHASH's table reads (one a byte instead of two) at 8 times the memory, so
 * a power's table widens only once its key has hashed WIDEN_AFTER blocks with it (a key that
 * reads a result set, not one that served a request or two), and only while every key's wide
 * tables together stay within WIDE_TABLES_BUDGET: 2 MiB, 32 tables (some ten keys reading
 * 32-byte strings). Past that, keys keep their 4-bit tables.
 */
export const WIDEN_AFTER = 4096;
const WIDE_TABLES_BUDGET = 2 * 1024 * 1024;
/** Wide tables all keys together may hold: 32. */
export const WIDE_TABLES_MAX = WIDE_TABLES_BUDGET / WIDE_TABLE_BYTES;
let wideTablesBytes = 0;

/**
 * What a GcmKey derives from H. One object, so that the finalizer of a key collected without
 * being released can wipe it (and give back its wide tables' budget) without holding the key.
 */
interface Derived {
  /** H, H², … Hᴹᴬˣ⁺¹ (index k holds Hᵏ); index 0 unused. */
  powers: Int32Array[];
  /** The 4-bit table of Hᵏ at index k, built on first use. */
  tables: (Int32Array | undefined)[];
  /** The 8-bit table of Hᵏ at index k, once widened (its 4-bit table is then dropped). */
  wideTables: (Int32Array | undefined)[];
  /** The AAD hashes (X_A) and per-(AAD, length) constants the key's AAD map holds. */
  constants: Int32Array[];
}

function emptyDerived(): Derived {
  return { powers: [], tables: [], wideTables: [], constants: [] };
}

/** Zeroes every array of `derived`, empties it and gives back its wide tables' budget. */
function wipeDerived(derived: Derived): void {
  for (const table of derived.tables) table?.fill(0);
  for (const table of derived.wideTables) {
    if (table === undefined) continue;
    table.fill(0);
    wideTablesBytes -= WIDE_TABLE_BYTES;
  }
  for (const power of derived.powers) power.fill(0);
  for (const constant of derived.constants) constant.fill(0);
  derived.powers = [];
  derived.tables = [];
  derived.wideTables = [];
  derived.constants = [];
}

const derivedOfCollected = new FinalizationRegistry<Derived>(wipeDerived);

/** The GHASH state of one AAD under one key: its hash alone, and the constant per length. */
interface AadHash {
  /** GHASH over the AAD blocks alone (X_A), 4 words. */
  readonly alone: Int32Array;
  /** By ciphertext length: X_A·Hⁿ⁺¹ ⊕ L·H, 4 words each. */
  readonly byLength: (Int32Array | undefined)[];
}

/** A 128-bit field element as four big-endian words, from `bytes` at `at` (zero-padded). */
function readBlock(bytes: Uint8Array, at: number, length: number, out: Int32Array): void {
  for (let w = 0; w < 4; w++) {
    let word = 0;
    for (let b = 0; b < 4; b++) {
      const i = w * 4 + b;
      word = (word << 8) | (i < length ? (bytes[at + i] as number) : 0);
    }
    out[w] = word;
  }
}

/**
 * a·b in GF(2¹²⁸), GCM's bit order, with no branch or index on either operand: used for the
 * powers of H and the per-(AAD, length) constants, never per value.
 */
function multiply(a: Int32Array, b: Int32Array, out: Int32Array): void {
  let z0 = 0;
  let z1 = 0;
  let z2 = 0;
  let z3 = 0;
  const v = Int32Array.from(b);
  for (let i = 0; i < 128; i++) {
    const m = -(((a[i >>> 5] as number) >>> (31 - (i & 31))) & 1);
    z0 ^= (v[0] as number) & m;
    z1 ^= (v[1] as number) & m;
    z2 ^= (v[2] as number) & m;
    z3 ^= (v[3] as number) & m;
    timesX(v);
  }
  v.fill(0);
  out[0] = z0;
  out[1] = z1;
  out[2] = z2;
  out[3] = z3;
}

/** v ← v·x in place: GCM's right shift, reduced with a mask rather than a branch. */
function timesX(v: Int32Array): void {
  const v0 = v[0] as number;
  const v1 = v[1] as number;
  const v2 = v[2] as number;
  const v3 = v[3] as number;
  const carry = -(v3 & 1);
  v[3] = (v3 >>> 1) | (v2 << 31);
  v[2] = (v2 >>> 1) | (v1 << 31);
  v[1] = (v1 >>> 1) | (v0 << 31);
  v[0] = (v0 >>> 1) ^ (R & carry);
}

/** The 4-bit table of M: entry (q, v) is M times the nibble v at nibble position q. */
function tableOf(m: Int32Array): Int32Array {
  const table = new Int32Array(TABLE_WORDS);
  const v = Int32Array.from(m);
  // M·xⁱ for i = 4q + k is the entry of the single bit (8 >> k) at position q.
  for (let i = 0; i < 128; i++) {
    table.set(v, ((i >>> 2) * 16 + (8 >>> (i & 3))) * 4);
    timesX(v);
  }
  v.fill(0);
  for (let q = 0; q < 32; q++) {
    for (let v = 1; v < 16; v++) {
      const low = v & -v;
      if (low === v) continue;
      const to = (q * 16 + v) * 4;
      const x = (q * 16 + low) * 4;
      const y = (q * 16 + (v ^ low)) * 4;
      for (let w = 0; w < 4; w++)
        table[to + w] = (table[x + w] as number) ^ (table[y + w] as number);
    }
  }
  return table;
}

/** Counter blocks for one value of n blocks: (n + 1) × 16 bytes, one Buffer per n. */
const counterScratch: Buffer[] = Array.from({ length: MAX_BLOCKS + 1 }, (_, n) =>
  Buffer.alloc((n + 1) * 16),
);
/** `counterScratch` as words, for writeCounters. */
const counterScratchWords = counterScratch.map(wordsOf);
const wipe = Uint8Array.prototype.fill;

/**
 * The 8-bit table of the same M from its 4-bit table: entry (p, b) is the sum of the entries of
 * b's two nibbles at nibble positions 2p and 2p + 1.
 */
function wideTableOf(table: Int32Array): Int32Array {
  const wide = new Int32Array(WIDE_TABLE_WORDS);
  for (let p = 0; p < 16; p++) {
    for (let b = 0; b < 256; b++) {
      const to = ((p << 8) | b) << 2;
      const high = (p * 32 + (b >>> 4)) * 4;
      const low = (p * 32 + 16 + (b & 15)) * 4;
      for (let w = 0; w < 4; w++) {
        wide[to + w] = (table[high + w] as number) ^ (table[low + w] as number);
      }
    }
  }
  return wide;
}

/** A Buffer's bytes (byteOffset a multiple of 4) as 32-bit words in the platform's order. */
function wordsOf(buffer: Buffer): Int32Array {
  return new Int32Array(buffer.buffer, buffer.byteOffset, buffer.length >>> 2);
}

/** Whether typed arrays hold words little-endian (x86, ARM), as writeCounters writes them. */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/** The 4 bytes of `bytes` at `at` as one word in the platform's order. */
function platformWordAt(bytes: Uint8Array, at: number): number {
  return LITTLE_ENDIAN
    ? (bytes[at] as number) |
        ((bytes[at + 1] as number) << 8) |
        ((bytes[at + 2] as number) << 16) |
        ((bytes[at + 3] as number) << 24)
    : wordAt(bytes, at);
}

/**
 * Writes the counter blocks of a value, J0 = IV ‖ 1 then IV ‖ 2 … IV ‖ n+1, into `out` at byte
 * `to` (a multiple of 16), reading the IV from `iv` at `ivAt`. Word by word: a quarter of the
 * stores of a byte loop, on every value a batch opens.
 */
function writeCounters(iv: Uint8Array, ivAt: number, blocks: number, out: Int32Array, to: number) {
  const w0 = platformWordAt(iv, ivAt);
  const w1 = platformWordAt(iv, ivAt + 4);
  const w2 = platformWordAt(iv, ivAt + 8);
  let o = to >>> 2;
  for (let b = 1; b <= blocks + 1; b++) {
    out[o] = w0;
    out[o + 1] = w1;
    out[o + 2] = w2;
    // The 32-bit counter b, big-endian in the block.
    out[o + 3] = LITTLE_ENDIAN ? b << 24 : b;
    o += 4;
  }
}

/**
 * An AES-256-GCM key; seals and opens values of any length (short ones as described above).
 * An AAD is recognised by identity: its GHASH is cached per array, so an AAD array must not
 * change once used (the field engine builds each one once, per data key and binding).
 *
 * The tables, powers of H and per-AAD constants are derived from the key: they are wiped when
 * the last holder lets go (`hold`/`release`, one per cache entry using the key). A call that
 * still uses the key after that (a batch or a load already under way) works, and wipes what it
 * rebuilt before it returns.
 * A key collected without being released has them wiped by a finalizer.
 */
export class GcmKey {
  readonly key: AesKey;
  #ecb: Cipheriv | undefined;
  #derived = emptyDerived();
  /** Blocks hashed with each power's 4-bit table, towards WIDEN_AFTER. */
  #narrowBlocks: number[] = [];
  #aads = new WeakMap<Uint8Array, AadHash>();
  #holders = 0;
  #released = false;

  constructor(key: AesKey) {
    this.key = key;
    derivedOfCollected.register(this, this.#derived);
  }

  /** One more cache entry uses the key. */
  hold(): void {
    this.#holders++;
    this.#released = false;
  }

  /**
   * A holder lets go; with the last one, every array derived from H is wiped and the ECB
   * context dropped. Also for a key nobody held (it served the calls waiting for it).
   */
  release(): void {
    if (this.#holders > 0) this.#holders--;
    if (this.#holders > 0) return;
    this.#released = true;
    this.#wipe();
  }

  get released(): boolean {
    return this.#released;
  }

  /** Tables built and not wiped: for tests of the wipe. */
  get tablesHeld(): number {
    return this.#derived.tables.filter(Boolean).length + this.wideTablesHeld;
  }

  /** 8-bit tables built and not wiped: for tests. */
  get wideTablesHeld(): number {
    return this.#derived.wideTables.filter(Boolean).length;
  }

  #wipe(): void {
    wipeDerived(this.#derived);
    this.#narrowBlocks = [];
    this.#aads = new WeakMap();
    this.#ecb = undefined;
  }

  /** After a use: a released key wipes what the use rebuilt. */
  afterUse(): void {
    if (this.#released) this.#wipe();
  }

  /** AES-256 of `blocks` (a multiple of 16 bytes) under the key: a fresh Buffer. */
  encryptBlocks(blocks: Uint8Array): Buffer {
    let ecb = this.#ecb;
    if (ecb === undefined) {
      ecb = createCipheriv("aes-256-ecb", this.key, null);
      ecb.setAutoPadding(false);
      this.#ecb = ecb;
    }
    return ecb.update(blocks);
  }

  #power(k: number): Int32Array {
    const powers = this.#derived.powers;
    if (powers.length === 0) {
      const h = this.encryptBlocks(new Uint8Array(16));
      const one = new Int32Array(4);
      readBlock(h, 0, 16, one);
      wipe.call(h, 0);
      powers.push(new Int32Array(4), one);
    }
    while (powers.length <= k) {
      const next = new Int32Array(4);
      multiply(powers[powers.length - 1] as Int32Array, powers[1] as Int32Array, next);
      powers.push(next);
    }
    return powers[k] as Int32Array;
  }

  /**
   * The table of Hᵏ (k ≥ 2: a ciphertext block's power) for hashing one more block: 8-bit
   * (WIDE_TABLE_WORDS long) once widened, else 4-bit.
   */
  table(k: number): Int32Array {
    const derived = this.#derived;
    const wide = derived.wideTables[k];
    if (wide !== undefined) return wide;
    let table = derived.tables[k];
    if (table === undefined) {
      table = tableOf(this.#power(k));
      derived.tables[k] = table;
      this.#narrowBlocks[k] = 0;
    }
    const hashed = (this.#narrowBlocks[k] as number) + 1;
    this.#narrowBlocks[k] = hashed;
    if (hashed < WIDEN_AFTER || wideTablesBytes + WIDE_TABLE_BYTES > WIDE_TABLES_BUDGET) {
      return table;
    }
    const widened = wideTableOf(table);
    table.fill(0);
    derived.tables[k] = undefined;
    derived.wideTables[k] = widened;
    wideTablesBytes += WIDE_TABLE_BYTES;
    return widened;
  }

  /** X_A·Hⁿ⁺¹ ⊕ L·H for `aad` and a ciphertext of `length` bytes (≤ SHORT_GCM_MAX_BYTES). */
  constantOf(aad: Uint8Array, length: number): Int32Array {
    let hash = this.#aads.get(aad);
    if (hash === undefined) {
      const alone = new Int32Array(4);
      const block = new Int32Array(4);
      const h = this.#power(1);
      for (let at = 0; at < aad.length; at += 16) {
        readBlock(aad, at, Math.min(16, aad.length - at), block);
        for (let w = 0; w < 4; w++) block[w] = (block[w] as number) ^ (alone[w] as number);
        multiply(block, h, alone);
      }
      block.fill(0);
      this.#derived.constants.push(alone);
      hash = { alone, byLength: [] };
      this.#aads.set(aad, hash);
    }
    let constant = hash.byLength[length];
    if (constant === undefined) {
      const blocks = (length + 15) >>> 4;
      constant = new Int32Array(4);
      multiply(hash.alone, this.#power(blocks + 1), constant);
      // L = bit lengths of the AAD and the ciphertext, 64 bits each (both < 2³² here).
      const lengths = Int32Array.of(0, aad.length * 8, 0, length * 8);
      const lh = new Int32Array(4);
      multiply(lengths, this.#power(1), lh);
      for (let w = 0; w < 4; w++) constant[w] = (constant[w] as number) ^ (lh[w] as number);
      lh.fill(0);
      this.#derived.constants.push(constant);
      hash.byLength[length] = constant;
    }
    return constant;
  }

  /**
   * Encrypts `plaintext` under a fresh IV from the CSPRNG pool, writing `IV ‖ ciphertext ‖ tag`
   * into `out` at `at` (room for 12 + plaintext.length + 16 bytes), as gcmSealWithFreshIv.
   */
  sealWithFreshIv(aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): void {
    const length = plaintext.length;
    if (length > SHORT_GCM_MAX_BYTES) {
      gcmSealWithFreshIv(this.key, aad, plaintext, out, at);
      return;
    }
    const blocks = (length + 15) >>> 4;
    fillRandom(out, at, GCM_IV_LENGTH);
    const counters = counterScratch[blocks] as Buffer;
    writeCounters(out, at, blocks, counterScratchWords[blocks] as Int32Array, 0);
    const stream = this.encryptBlocks(counters);
    const bodyAt = at + GCM_IV_LENGTH;
    for (let i = 0; i < length; i++) {
      out[bodyAt + i] = (plaintext[i] as number) ^ (stream[16 + i] as number);
    }
    const tag = ghash(this, aad, out, bodyAt, length, blocks);
    writeTag(tag, stream, out, bodyAt + length);
    wipeHash(tag);
    wipe.call(stream, 0);
    this.afterUse();
  }

  /**
   * Opens `IV ‖ ciphertext ‖ tag` held in `sealed` from `at` to its end: the plaintext (a fresh
   * Buffer the caller wipes), or undefined when the tag does not verify, as gcmOpenFrom.
   */
  openFrom(aad: Uint8Array, sealed: Uint8Array, at: number): Buffer | undefined {
    const tagAt = sealed.length - GCM_TAG_LENGTH;
    const bodyAt = at + GCM_IV_LENGTH;
    const length = tagAt - bodyAt;
    if (length < 0) return undefined;
    if (length > SHORT_GCM_MAX_BYTES) return gcmOpenFrom(this.key, aad, sealed, at);
    const blocks = (length + 15) >>> 4;
    const counters = counterScratch[blocks] as Buffer;
    writeCounters(sealed, at, blocks, counterScratchWords[blocks] as Int32Array, 0);
    const stream = this.encryptBlocks(counters);
    const tag = ghash(this, aad, sealed, bodyAt, length, blocks);
    const verified = tagMatches(tag, stream, 0, sealed, tagAt);
    wipeHash(tag);
    this.afterUse();
    if (!verified) {
      wipe.call(stream, 0);
      return undefined;
    }
    // The keystream's own memory takes the plaintext: one allocation, nothing left to wipe.
    for (let i = 0; i < length; i++) {
      stream[i] = (sealed[bodyAt + i] as number) ^ (stream[16 + i] as number);
    }
    wipe.call(stream, 0, length);
    return stream.subarray(0, length);
  }
}

/** The GHASH of a value before the tag mask: 4 words in a shared scratch. */
const sum = new Int32Array(4);

/** Whether the GHASH scratch holds no hash: for tests of the wipe. */
export function ghashScratchWiped(): boolean {
  return sum.every((word) => word === 0);
}

/** Zeroes a GHASH result: four stores, where `fill` was a builtin call per value. */
function wipeHash(hash: Int32Array): void {
  hash[0] = 0;
  hash[1] = 0;
  hash[2] = 0;
  hash[3] = 0;
}

function ghash(
  key: GcmKey,
  aad: Uint8Array,
  body: Uint8Array,
  bodyAt: number,
  length: number,
  blocks: number,
): Int32Array {
  const constant = key.constantOf(aad, length);
  let s0 = constant[0] as number;
  let s1 = constant[1] as number;
  let s2 = constant[2] as number;
  let s3 = constant[3] as number;
  for (let j = 0; j < blocks; j++) {
    const table = key.table(blocks - j + 1);
    const from = bodyAt + j * 16;
    // A short last block is zero-padded: entry 0 (the zero byte or nibble) is 0.
    const end = Math.min(16, length - j * 16);
    if (table.length === WIDE_TABLE_WORDS) {
      for (let p = 0; p < end; p++) {
        const e = ((p << 8) | (body[from + p] as number)) << 2;
        s0 ^= table[e] as number;
        s1 ^= table[e + 1] as number;
        s2 ^= table[e + 2] as number;
        s3 ^= table[e + 3] as number;
      }
      continue;
    }
    // Nibble positions 2p and 2p+1 of byte p.
    for (let p = 0; p < end; p++) {
      const byte = body[from + p] as number;
      let e = (p * 32 + (byte >>> 4)) * 4;
      s0 ^= table[e] as number;
      s1 ^= table[e + 1] as number;
      s2 ^= table[e + 2] as number;
      s3 ^= table[e + 3] as number;
      e = (p * 32 + 16 + (byte & 15)) * 4;
      s0 ^= table[e] as number;
      s1 ^= table[e + 1] as number;
      s2 ^= table[e + 2] as number;
      s3 ^= table[e + 3] as number;
    }
  }
  sum[0] = s0;
  sum[1] = s1;
  sum[2] = s2;
  sum[3] = s3;
  return sum;
}

function wordAt(bytes: Uint8Array, at: number): number {
  return (
    ((bytes[at] as number) << 24) |
    ((bytes[at + 1] as number) << 16) |
    ((bytes[at + 2] as number) << 8) |
    (bytes[at + 3] as number)
  );
}

/** tag = GHASH ⊕ E(K, J0), written big-endian into `out` at `at`. */
function writeTag(hash: Int32Array, stream: Uint8Array, out: Uint8Array, at: number): void {
  for (let w = 0; w < 4; w++) {
    const word = (hash[w] as number) ^ wordAt(stream, w * 4);
    out[at + w * 4] = word >>> 24;
    out[at + w * 4 + 1] = (word >>> 16) & 255;
    out[at + w * 4 + 2] = (word >>> 8) & 255;
    out[at + w * 4 + 3] = word & 255;
  }
}

/** Whether GHASH ⊕ E(K, J0) equals the stored tag, with no exit before every word is read. */
function tagMatches(
  hash: Int32Array,
  stream: Uint8Array,
  maskAt: number,
  sealed: Uint8Array,
  tagAt: number,
): boolean {
  let diff = 0;
  for (let w = 0; w < 4; w++) {
    diff |= (hash[w] as number) ^ wordAt(stream, maskAt + w * 4) ^ wordAt(sealed, tagAt + w * 4);
  }
  return diff === 0;
}

/**
 * Opens many short values under one key with one ECB call: `add` copies each value's counter
 * blocks and `ciphertext ‖ tag` into the batch; `open` verifies them all and writes every
 * verified plaintext into `plaintext` at the offset `add` returned. The caller wipes
 * `plaintext` when done (`clear`). Not re-entrant: one batch is filled and opened at a time.
 */
export class GcmOpenBatch {
  key: GcmKey | undefined;
  #count = 0;
  #counters: Buffer = Buffer.alloc(16 * 1024);
  #counterWords = wordsOf(this.#counters);
  #countersUsed = 0;
  /** Per value, `ciphertext ‖ tag` from a multiple of 4 bytes: `open` XORs word by word. */
  #body: Buffer = Buffer.alloc(16 * 1024);
  #bodyWords = wordsOf(this.#body);
  #bodyUsed = 0;
  #plaintext: Buffer = Buffer.alloc(16 * 1024);
  #plaintextWords = wordsOf(this.#plaintext);
  /** Bytes of `#plaintext` that may hold plaintext: what `clear` wipes. */
  #plaintextUsed = 0;
  /**
   * Per value: its AAD. Written by index and never truncated, like `#slots`: a batch is refilled
   * hundreds of times per result set, and truncating let go of the arrays' backing stores, which
   * each refill then grew again (garbage per value).
   */
  #aads: Uint8Array[] = [];
  /** Per value: body offset, ciphertext length, counter offset. */
  #slots = new Int32Array(3 * 256);

  get size(): number {
    return this.#count;
  }

  /** The plaintext of every verified value, at its `add` offset, until `clear`. */
  get plaintext(): Buffer {
    return this.#plaintext;
  }

  /**
   * Adds `IV ‖ ciphertext ‖ tag` from `sealed` at `at` (ciphertext of at most
   * SHORT_GCM_MAX_BYTES, under `key`, which must be the batch's key if it holds any value);
   * returns the offset of its plaintext in `plaintext`, or -1 when the value is malformed.
   */
  add(key: GcmKey, aad: Uint8Array, sealed: Uint8Array, at: number): number {
    if (this.#count > 0 && key !== this.key) {
      throw new Error("GcmOpenBatch: open the values under one key before adding another's");
    }
    const tagAt = sealed.length - GCM_TAG_LENGTH;
    const bodyAt = at + GCM_IV_LENGTH;
    const length = tagAt - bodyAt;
    if (length < 0 || length > SHORT_GCM_MAX_BYTES) return -1;
    this.key = key;
    const blocks = (length + 15) >>> 4;
    const counterBytes = (blocks + 1) * 16;
    if (this.#countersUsed + counterBytes > this.#counters.length) {
      this.#counters = grown(this.#counters, this.#countersUsed + counterBytes);
      this.#counterWords = wordsOf(this.#counters);
    }
    const bodyBytes = length + GCM_TAG_LENGTH;
    const bodyRoom = (bodyBytes + 3) & ~3;
    if (this.#bodyUsed + bodyRoom > this.#body.length) {
      this.#body = grown(this.#body, this.#bodyUsed + bodyRoom);
      this.#bodyWords = wordsOf(this.#body);
    }
    writeCounters(sealed, at, blocks, this.#counterWords, this.#countersUsed);
    const body = this.#body;
    const to = this.#bodyUsed;
    for (let i = 0; i < bodyBytes; i++) body[to + i] = sealed[bodyAt + i] as number;
    const v = this.#count;
    this.#aads[v] = aad;
    if (this.#slots.length < (v + 1) * 3) {
      const slots = new Int32Array(this.#slots.length * 2);
      slots.set(this.#slots);
      this.#slots = slots;
    }
    this.#slots[v * 3] = to;
    this.#slots[v * 3 + 1] = length;
    this.#slots[v * 3 + 2] = this.#countersUsed;
    this.#countersUsed += counterBytes;
    this.#bodyUsed += bodyRoom;
    this.#count++;
    return to;
  }

  /**
   * Verifies every value added and writes the plaintext of each into `plaintext`; returns the
   * index (in order of `add`) of the first value whose tag does not verify, or -1. Values are
   * emptied from the batch either way; `plaintext` holds them until `clear`.
   */
  open(): number {
    const key = this.key as GcmKey;
    if (this.#plaintext.length < this.#bodyUsed) {
      wipe.call(this.#plaintext, 0, 0, this.#plaintextUsed);
      this.#plaintext = Buffer.alloc(this.#body.length);
      this.#plaintextWords = wordsOf(this.#plaintext);
      this.#plaintextUsed = 0;
    }
    // A larger batch opened before without `clear` still has plaintext past this one's end.
    this.#plaintextUsed = Math.max(this.#plaintextUsed, this.#bodyUsed);
    const stream = key.encryptBlocks(this.#counters.subarray(0, this.#countersUsed));
    const body = this.#body;
    const bodyWords = this.#bodyWords;
    const plaintextWords = this.#plaintextWords;
    // node:crypto's output has an ArrayBuffer of its own (offset 0): words line up with bytes.
    const streamWords = wordsOf(stream);
    const slots = this.#slots;
    let failed = -1;
    for (let v = 0; v < this.#count; v++) {
      const bodyAt = slots[v * 3] as number;
      const length = slots[v * 3 + 1] as number;
      const streamAt = slots[v * 3 + 2] as number;
      const blocks = (length + 15) >>> 4;
      const hash = ghash(key, this.#aads[v] as Uint8Array, body, bodyAt, length, blocks);
      const verified = tagMatches(hash, stream, streamAt, body, bodyAt + length);
      wipeHash(hash);
      if (!verified) {
        failed = v;
        break;
      }
      // Whole words: up to 3 bytes past the plaintext, from the tag and the unused keystream,
      // land in the value's own padding and are wiped with the rest.
      const words = (length + 3) >>> 2;
      const from = bodyAt >>> 2;
      const keystream = (streamAt + 16) >>> 2;
      for (let i = 0; i < words; i++) {
        plaintextWords[from + i] =
          (bodyWords[from + i] as number) ^ (streamWords[keystream + i] as number);
      }
    }
    wipe.call(stream, 0);
    key.afterUse();
    this.#reset();
    return failed;
  }

  /** Wipes the plaintext written by `open` and empties the batch. */
  clear(): void {
    wipe.call(this.#plaintext, 0, 0, this.#plaintextUsed);
    this.#plaintextUsed = 0;
    this.#reset();
  }

  #reset(): void {
    this.#count = 0;
    this.#countersUsed = 0;
    this.#bodyUsed = 0;
    this.key = undefined;
  }
}

function grown(buffer: Buffer, needed: number): Buffer {
  const next = Buffer.alloc(Math.max(needed, buffer.length * 2));
  next.set(buffer);
  return next;
}
