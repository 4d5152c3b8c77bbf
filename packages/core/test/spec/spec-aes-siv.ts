/**
 * AES-SIV (RFC 5297) on node:crypto's raw AES, for the spec-only reader of §6.2 deterministic
 * values. Written from the RFC, not from packages/core/src; checked against the RFC's vector
 * and against @noble/ciphers in spec-field.test.ts.
 */
import { Buffer } from "node:buffer";
import { createCipheriv, timingSafeEqual } from "node:crypto";
import { SpecFormatError } from "./spec-context.ts";

const BLOCK = 16;

function aesName(key: Uint8Array, mode: "ecb" | "ctr"): string {
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
    throw new SpecFormatError(`AES key of ${key.length} bytes`);
  }
  return `aes-${key.length * 8}-${mode}`;
}

function encryptBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  const cipher = createCipheriv(aesName(key, "ecb"), key, null).setAutoPadding(false);
  return new Uint8Array(Buffer.concat([cipher.update(block), cipher.final()]));
}

/** Doubling in GF(2^128) (RFC 5297 §2.3). */
function dbl(block: Uint8Array): Uint8Array {
  const out = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i++) {
    out[i] = ((block[i]! << 1) | ((block[i + 1] ?? 0) >>> 7)) & 0xff;
  }
  if ((block[0]! & 0x80) !== 0) out[BLOCK - 1] = out[BLOCK - 1]! ^ 0x87;
  return out;
}

function xor(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function pad(block: Uint8Array): Uint8Array {
  const out = new Uint8Array(BLOCK);
  out.set(block);
  out[block.length] = 0x80;
  return out;
}

/** AES-CMAC (RFC 4493). */
function cmac(key: Uint8Array, message: Uint8Array): Uint8Array {
  const k1 = dbl(encryptBlock(key, new Uint8Array(BLOCK)));
  const k2 = dbl(k1);
  const blocks = Math.max(1, Math.ceil(message.length / BLOCK));
  const complete = message.length > 0 && message.length % BLOCK === 0;
  const lastStart = (blocks - 1) * BLOCK;
  const last = complete
    ? xor(message.subarray(lastStart), k1)
    : xor(pad(message.subarray(lastStart)), k2);
  let x: Uint8Array = new Uint8Array(BLOCK);
  for (let i = 0; i < blocks - 1; i++) {
    x = encryptBlock(key, xor(x, message.subarray(i * BLOCK, (i + 1) * BLOCK)));
  }
  return encryptBlock(key, xor(x, last));
}

/** S2V (RFC 5297 §2.4): `strings` = associated data components, then the plaintext. */
function s2v(key: Uint8Array, strings: readonly Uint8Array[]): Uint8Array {
  let d = cmac(key, new Uint8Array(BLOCK));
  for (const s of strings.slice(0, -1)) d = xor(dbl(d), cmac(key, s));
  const sn = strings[strings.length - 1]!;
  let t: Uint8Array;
  if (sn.length >= BLOCK) {
    t = new Uint8Array(sn);
    const tail = xor(sn.subarray(sn.length - BLOCK), d);
    t.set(tail, sn.length - BLOCK);
  } else {
    t = xor(dbl(d), pad(sn));
  }
  return cmac(key, t);
}

function ctr(key: Uint8Array, v: Uint8Array, data: Uint8Array): Uint8Array {
  const q = new Uint8Array(v);
  // RFC 5297 §2.5: clear the 31st and 63rd bits (from the right) of V.
  q[8] = q[8]! & 0x7f;
  q[12] = q[12]! & 0x7f;
  const cipher = createCipheriv(aesName(key, "ctr"), key, q);
  return new Uint8Array(Buffer.concat([cipher.update(data), cipher.final()]));
}

function halves(key: Uint8Array): [Uint8Array, Uint8Array] {
  if (key.length !== 32 && key.length !== 48 && key.length !== 64) {
    throw new SpecFormatError(`AES-SIV key of ${key.length} bytes`);
  }
  return [key.subarray(0, key.length / 2), key.subarray(key.length / 2)];
}

/** Returns `V (16) || C`. */
export function sivSeal(
  key: Uint8Array,
  associatedData: readonly Uint8Array[],
  plaintext: Uint8Array,
): Uint8Array {
  const [macKey, ctrKey] = halves(key);
  const v = s2v(macKey, [...associatedData, plaintext]);
  return new Uint8Array(Buffer.concat([v, ctr(ctrKey, v, plaintext)]));
}

/** Opens `V (16) || C`; throws SpecFormatError when V does not match. */
export function sivOpen(
  key: Uint8Array,
  associatedData: readonly Uint8Array[],
  sealed: Uint8Array,
): Uint8Array {
  if (sealed.length < BLOCK) throw new SpecFormatError("SIV value shorter than its IV");
  const [macKey, ctrKey] = halves(key);
  const v = sealed.subarray(0, BLOCK);
  const plaintext = ctr(ctrKey, v, sealed.subarray(BLOCK));
  const expected = s2v(macKey, [...associatedData, plaintext]);
  if (!timingSafeEqual(expected, v)) throw new SpecFormatError("SIV does not verify");
  return plaintext;
}
