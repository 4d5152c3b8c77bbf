import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type DecipherGCM,
  type KeyObject,
} from "node:crypto";
import { ValidationError } from "../errors.ts";
import { fillRandom } from "./random.ts";

/**
 * AES-256-GCM on node:crypto (OpenSSL), the fastest implementation on this platform by a wide
 * margin. Keys are KeyObjects so raw key bytes do not linger in JS-visible buffers.
 */
export const AES_KEY_LENGTH = 32;
export const GCM_IV_LENGTH = 12;
export const GCM_TAG_LENGTH = 16;

export type AesKey = KeyObject;

/** Imports raw key bytes and wipes the caller's copy. */
export function importAesKey(raw: Uint8Array): AesKey {
  if (raw.length !== AES_KEY_LENGTH) {
    throw new ValidationError(`"key" expected ${AES_KEY_LENGTH} bytes, got ${raw.length}`);
  }
  const key = createSecretKey(raw);
  raw.fill(0);
  return key;
}

/**
 * Encrypts `plaintext` into `out` at `at`, writing ciphertext then tag (out must have room for
 * plaintext.length + 16 bytes). Writing in place lets callers build a blob with one allocation.
 * The additional data is `aad || moreAad`: GCM accepts AAD in several updates, which spares
 * callers concatenating a header and an encoded context on every call.
 */
export function gcmSealInto(
  key: AesKey,
  iv: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  at: number,
  moreAad?: Uint8Array,
): void {
  if (iv.length !== GCM_IV_LENGTH) {
    throw new ValidationError(`"iv" expected ${GCM_IV_LENGTH} bytes, got ${iv.length}`);
  }
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: GCM_TAG_LENGTH });
  if (aad.length > 0) cipher.setAAD(aad);
  if (moreAad !== undefined && moreAad.length > 0) cipher.setAAD(moreAad);
  const body = cipher.update(plaintext);
  out.set(body, at);
  const tail = cipher.final();
  if (tail.length > 0) out.set(tail, at + body.length);
  out.set(cipher.getAuthTag(), at + plaintext.length);
}

/** The IV and tag of the call in progress (node:crypto copies both into the cipher at once). */
const ivScratch = new Uint8Array(GCM_IV_LENGTH);
const tagScratch = new Uint8Array(GCM_TAG_LENGTH);

/**
 * Encrypts `plaintext` under a fresh IV drawn from the CSPRNG pool (random.ts), writing
 * `IV || ciphertext || tag` into `out` at `at` (room for 12 + plaintext.length + 16 bytes).
 * The caller never holds the IV before it is used, so it cannot pass one twice; the IV goes to
 * the cipher from a scratch buffer and is copied out byte by byte, which spares the two views
 * (pool slice, IV slot of `out`) a small value would otherwise cost.
 */
export function gcmSealWithFreshIv(
  key: AesKey,
  aad: Uint8Array,
  plaintext: Uint8Array,
  out: Uint8Array,
  at: number,
): void {
  const iv = ivScratch;
  fillRandom(iv, 0, GCM_IV_LENGTH);
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: GCM_TAG_LENGTH });
  for (let i = 0; i < GCM_IV_LENGTH; i++) out[at + i] = iv[i] as number;
  if (aad.length > 0) cipher.setAAD(aad);
  const bodyAt = at + GCM_IV_LENGTH;
  const body = cipher.update(plaintext);
  out.set(body, bodyAt);
  const tail = cipher.final();
  if (tail.length > 0) out.set(tail, bodyAt + body.length);
  out.set(cipher.getAuthTag(), bodyAt + plaintext.length);
}

export function gcmSeal(
  key: AesKey,
  iv: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(plaintext.length + GCM_TAG_LENGTH);
  gcmSealInto(key, iv, aad, plaintext, out, 0);
  return out;
}

/**
 * Decrypts and verifies; returns undefined when authentication fails so that callers raise
 * their own generic error (OpenSSL's message must not leak to users as an oracle). The
 * additional data is `aad || moreAad`, as in gcmSealInto.
 */
export function gcmOpen(
  key: AesKey,
  iv: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
  moreAad?: Uint8Array,
): Uint8Array | undefined {
  if (iv.length !== GCM_IV_LENGTH || tag.length !== GCM_TAG_LENGTH) return undefined;
  const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: GCM_TAG_LENGTH });
  decipher.setAuthTag(tag);
  if (aad.length > 0) decipher.setAAD(aad);
  if (moreAad !== undefined && moreAad.length > 0) decipher.setAAD(moreAad);
  const opened = finishOpen(decipher, decipher.update(ciphertext));
  return opened && new Uint8Array(opened.buffer, opened.byteOffset, opened.byteLength);
}

/**
 * The plaintext once the tag verifies (`body` itself when final() adds nothing, the usual
 * case); undefined, with `body` wiped, when it does not.
 */
function finishOpen(decipher: DecipherGCM, body: Buffer): Buffer | undefined {
  try {
    const tail = decipher.final();
    if (tail.length === 0) return body;
    const out = Buffer.alloc(body.length + tail.length);
    out.set(body);
    out.set(tail, body.length);
    body.fill(0);
    return out;
  } catch {
    body.fill(0);
    return undefined;
  }
}

/**
 * `gcmOpen` of `IV || ciphertext || tag` held in `sealed` from `at` to its end, without views of
 * the IV and tag (copied byte by byte into scratch that the cipher copies at once). Returns
 * node:crypto's own output Buffer, not a view of it: the caller decodes it (Buffer#toString
 * reads a range without a view) and must wipe it; undefined when authentication fails.
 */
export function gcmOpenFrom(
  key: AesKey,
  aad: Uint8Array,
  sealed: Uint8Array,
  at: number,
): Buffer | undefined {
  const tagAt = sealed.length - GCM_TAG_LENGTH;
  const bodyAt = at + GCM_IV_LENGTH;
  if (bodyAt > tagAt) return undefined;
  const iv = ivScratch;
  const tag = tagScratch;
  for (let i = 0; i < GCM_IV_LENGTH; i++) iv[i] = sealed[at + i] as number;
  for (let i = 0; i < GCM_TAG_LENGTH; i++) tag[i] = sealed[tagAt + i] as number;
  const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: GCM_TAG_LENGTH });
  decipher.setAuthTag(tag);
  if (aad.length > 0) decipher.setAAD(aad);
  return finishOpen(decipher, decipher.update(sealed.subarray(bodyAt, tagAt)));
}
