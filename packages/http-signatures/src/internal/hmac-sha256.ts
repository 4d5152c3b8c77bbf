/**
 * HMAC-SHA256 (RFC 2104) from two one-shot `crypto.hash` calls over buffers kept per key.
 *
 * Why not `createHmac`: each call makes an `Hmac` object backed by a native object with a weak
 * handle, and its `digest()` a Buffer with a backing store of its own. A server that signs or
 * verifies on every request then leaves the young-generation collector two native objects to
 * finalize and two backing stores to free per message (the scavenger's weak-handle and
 * array-buffer phases), which cost more than the hashing itself: measured in an Express hello
 * world, about a third of the whole verify + sign overhead. `crypto.hash` answers a string and
 * leaves neither. (`"binary"` is Node's name for latin1: one character per byte.)
 *
 * The pads are the key in another form, held in memory of their own (not Buffer's shared pool)
 * for as long as the signer or verifier lives, as the caller's secret is; scratch space that
 * held a pad is zeroed before it is given up.
 */
import { createHash, hash, timingSafeEqual } from "node:crypto";

const BLOCK = 64;
const DIGEST = 32;
/** Messages up to this size (signature bases are a few hundred bytes) reuse one buffer. */
const SCRATCH = 2048;

/** A message as bytes, or as text to be MACed as its UTF-8 bytes (a signature base). */
export type MacInput = Uint8Array | string;

export interface HmacSha256 {
  /** The MAC of `message`, in bytes the caller owns. */
  mac(message: MacInput): Uint8Array;
  /** Whether `tag` is the MAC of `message`, compared in constant time. */
  matches(message: MacInput, tag: Uint8Array): boolean;
}

// The `mac` and `matches` functions made here, which the signing and verifying code hands the
// signature base as text: encoded straight into the scratch buffer, it needs no Buffer of its own.
const textInputs = new WeakSet<object>();

/**
 * Whether `fn` (a signer's `signSync`, a verifier's `verifySync`) is one made here, which takes
 * the message as text too (`MacInput`).
 */
export function takesText(fn: object): boolean {
  return textInputs.has(fn);
}

/** HMAC-SHA256 with `secret`, whose bytes are read once, here. */
export function hmacSha256(secret: Uint8Array): HmacSha256 {
  // RFC 2104 §2: a key longer than the block is replaced by its hash, a shorter one zero-padded.
  // Hashed through a Hash object, whose digest has memory of its own that is wiped below: the
  // one-shot `hash` would leave the key-equivalent H(K) in an unwipeable string.
  const key = secret.length > BLOCK ? createHash("sha256").update(secret).digest() : secret;
  // inner: ipad || message; outer: opad || inner digest. Buffer.alloc never takes pool memory.
  const inner = Buffer.alloc(SCRATCH, 0x36);
  const outer = Buffer.alloc(BLOCK + DIGEST, 0x5c);
  for (let i = 0; i < key.length; i++) {
    inner[i] = (inner[i] as number) ^ (key[i] as number);
    outer[i] = (outer[i] as number) ^ (key[i] as number);
  }
  if (key !== secret) key.fill(0);
  const expected = Buffer.alloc(DIGEST);

  /** The MAC of `message` as a latin1 string (one character per byte). */
  const digest = (message: MacInput): string => {
    let input = inner;
    let length: number;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit: within that bound `write` cannot cut.
    if (typeof message === "string" && BLOCK + 3 * message.length <= SCRATCH) {
      length = BLOCK + inner.write(message, BLOCK, "utf8");
    } else {
      const bytes = typeof message === "string" ? Buffer.from(message, "utf8") : bytesOf(message);
      length = BLOCK + bytes.length;
      if (length > SCRATCH) {
        input = Buffer.allocUnsafeSlow(length);
        inner.copy(input, 0, 0, BLOCK);
      }
      input.set(bytes, BLOCK);
    }
    const innerDigest = hash("sha256", input.subarray(0, length), "binary");
    if (input !== inner) input.fill(0, 0, BLOCK);
    outer.write(innerDigest, BLOCK, "latin1");
    return hash("sha256", outer, "binary");
  };

  const mac = (message: MacInput): Uint8Array => {
    // Copied out of the string, not through Buffer's shared pool: a view into the pool would
    // show all of it through `.buffer`.
    const text = digest(message);
    const bytes = new Uint8Array(DIGEST);
    for (let i = 0; i < DIGEST; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  };
  const matches = (message: MacInput, tag: Uint8Array): boolean => {
    if (tag.length !== DIGEST) return false;
    expected.write(digest(message), 0, "latin1");
    return timingSafeEqual(expected, tag);
  };
  textInputs.add(mac);
  textInputs.add(matches);
  return { mac, matches };
}

/**
 * The bytes of `message`, checked rather than trusted to its type: from JavaScript a DataView
 * has no `length` and would MAC as nothing, one tag for every message. Other views are their
 * bytes, as `createHmac(…).update` takes them; anything else is refused as it refuses it.
 */
function bytesOf(message: unknown): Uint8Array {
  if (message instanceof Uint8Array) return message;
  if (ArrayBuffer.isView(message)) {
    return new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
  }
  throw new TypeError(
    "the message to MAC must be a string, a Uint8Array or another ArrayBuffer view",
  );
}
