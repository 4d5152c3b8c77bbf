/**
 * docs/FORMAT.md §5 (envelope messages), written from the spec alone: a reader that parses,
 * authenticates and decrypts a message, and a writer for the raw AES keyring. It imports
 * nothing from packages/core/src.
 */
import { Buffer } from "node:buffer";
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  privateDecrypt,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
} from "node:crypto";
import { p256, p384 } from "@noble/curves/nist.js";
import {
  concat,
  contextFromMap,
  fromUtf8,
  type SpecContext,
  SpecFormatError,
  SpecReader,
  specDecodeContext,
  specEncodeContext,
  u16,
  u32,
  utf8,
} from "./spec-context.ts";

interface SpecSignature {
  readonly curve: "P-384" | "P-256";
  readonly hash: "sha384" | "sha256";
  /** Curve order n, for §5.8's low-S rule. */
  readonly order: bigint;
  readonly point: typeof p384.Point | typeof p256.Point;
}

/** §5.1 */
export const SPEC_SUITES: Readonly<Record<number, SpecSignature | null>> = {
  1: null,
  2: {
    curve: "P-384",
    hash: "sha384",
    order:
      0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    point: p384.Point,
  },
  3: {
    curve: "P-256",
    hash: "sha256",
    order: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    point: p256.Point,
  },
};

export const SPEC_SUITE_NAMES: Readonly<Record<number, string>> = {
  1: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
  2: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
  3: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
};

const MAX_FRAME_LENGTH = 16 * 1024 * 1024;
const FINAL_MARKER = 0xffffffff;
const PUBLIC_KEY = "kms-message:public-key";
const RESERVED_PREFIX = "kms-message:";

export interface SpecEdk {
  readonly providerId: string;
  readonly providerInfo: string;
  readonly ciphertext: Uint8Array;
}

/** A named byte range of a message, for tamper tests: [start, end). */
export interface SpecRegion {
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

export interface SpecHeader {
  readonly suiteId: number;
  readonly messageId: Uint8Array;
  readonly contextBytes: Uint8Array;
  readonly context: SpecContext;
  readonly edks: readonly SpecEdk[];
  readonly frameLength: number;
  readonly commitment: Uint8Array;
  readonly headerTag: Uint8Array;
  /** Every header byte before the tag (§5.2: the header tag's AAD). */
  readonly authenticated: Uint8Array;
  /** Offset of the first body byte. */
  readonly end: number;
  readonly regions: readonly SpecRegion[];
}

/** §5.2 header, §5.8 reserved-key rules. */
export function specParseHeader(message: Uint8Array): SpecHeader {
  const reader = new SpecReader(message);
  const regions: SpecRegion[] = [];
  const field = <T>(name: string, read: () => T): T => {
    const start = reader.offset;
    const value = read();
    regions.push({ name, start, end: reader.offset });
    return value;
  };
  const version = field("version", () => reader.u8());
  if (version !== 0x01) throw new SpecFormatError("format version");
  const suiteId = field("suite id", () => reader.u16());
  const suite = SPEC_SUITES[suiteId];
  if (suite === undefined) throw new SpecFormatError("suite id");
  const messageId = field("message id", () => reader.bytes(32));
  const contextLength = field("context length", () => reader.u16());
  const contextBytes = field("context", () => reader.bytes(contextLength));
  const context = contextFromMap(specDecodeContext(contextBytes));
  for (const key of Object.keys(context)) {
    if (key.startsWith(RESERVED_PREFIX) && (key !== PUBLIC_KEY || suite === null)) {
      throw new SpecFormatError(`reserved context key ${key}`);
    }
  }
  if (suite !== null && context[PUBLIC_KEY] === undefined) {
    throw new SpecFormatError("signing suite without a public key");
  }
  const count = field("edk count", () => reader.u16());
  if (count === 0) throw new SpecFormatError("no encrypted data key");
  const edks: SpecEdk[] = [];
  for (let i = 0; i < count; i++) {
    const providerId = fromUtf8(field(`edk ${i} provider id`, () => reader.bytes(reader.u16())));
    const providerInfo = fromUtf8(
      field(`edk ${i} provider info`, () => reader.bytes(reader.u16())),
    );
    const ciphertext = field(`edk ${i} ciphertext`, () => reader.bytes(reader.u16()));
    edks.push({ providerId, providerInfo, ciphertext });
  }
  const frameLength = field("frame length", () => reader.u32());
  if (frameLength < 1 || frameLength > MAX_FRAME_LENGTH) throw new SpecFormatError("frame length");
  const commitment = field("key commitment", () => reader.bytes(32));
  const authenticated = message.subarray(0, reader.offset);
  const headerTag = field("header tag", () => reader.bytes(16));
  return {
    suiteId,
    messageId,
    contextBytes,
    context,
    edks,
    frameLength,
    commitment,
    headerTag,
    authenticated,
    end: reader.offset,
    regions,
  };
}

/** §5.4 */
export function specDeriveKeys(
  dataKey: Uint8Array,
  messageId: Uint8Array,
  suiteId: number,
): { messageKey: Uint8Array; commitment: Uint8Array } {
  const info = concat(utf8("KMSMSG1 KEYS"), u16(suiteId));
  const okm = new Uint8Array(hkdfSync("sha512", dataKey, messageId, info, 64));
  return { messageKey: okm.subarray(0, 32), commitment: okm.subarray(32, 64) };
}

/** §5.5 */
function frameIv(seq: number): Uint8Array {
  return concat(new Uint8Array(8), u32(seq));
}

/** §5.5 */
function frameAad(messageId: Uint8Array, final: boolean, seq: number, length: number): Uint8Array {
  const length64 = new Uint8Array(8);
  new DataView(length64.buffer).setBigUint64(0, BigInt(length));
  return concat(messageId, new Uint8Array([final ? 0x01 : 0x00]), u32(seq), length64);
}

function gcmSeal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array) {
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: 16 });
  cipher.setAAD(aad);
  const ciphertext = new Uint8Array(Buffer.concat([cipher.update(plaintext), cipher.final()]));
  return { ciphertext, tag: new Uint8Array(cipher.getAuthTag()) };
}

function gcmOpen(
  key: Uint8Array,
  iv: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
): Uint8Array {
  const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  try {
    return new Uint8Array(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
  } catch {
    throw new SpecFormatError("GCM tag does not verify");
  }
}

/** §5.4: commitment in constant time, then the header tag. Returns the message key. */
export function specVerifyHeader(header: SpecHeader, dataKey: Uint8Array): Uint8Array {
  if (dataKey.length !== 32) throw new SpecFormatError("data key is not 32 bytes");
  const { messageKey, commitment } = specDeriveKeys(dataKey, header.messageId, header.suiteId);
  if (!timingSafeEqual(commitment, header.commitment)) {
    throw new SpecFormatError("key commitment");
  }
  gcmOpen(
    messageKey,
    new Uint8Array(12),
    header.authenticated,
    new Uint8Array(0),
    header.headerTag,
  );
  return messageKey;
}

export interface SpecBody {
  readonly plaintext: Uint8Array;
  /** Offset after the final frame: the signature starts here (§5.2). */
  readonly end: number;
  readonly frames: readonly { seq: number; final: boolean; length: number }[];
  readonly regions: readonly SpecRegion[];
}

/** §5.2 framing and §5.5 frame authentication. */
export function specDecryptBody(
  message: Uint8Array,
  header: SpecHeader,
  messageKey: Uint8Array,
): SpecBody {
  const reader = new SpecReader(message, header.end);
  const f = header.frameLength;
  const parts: Uint8Array[] = [];
  const frames: { seq: number; final: boolean; length: number }[] = [];
  const regions: SpecRegion[] = [];
  const region = (name: string, start: number) => regions.push({ name, start, end: reader.offset });
  for (let expected = 1; ; expected++) {
    if (expected > 0xfffffffe) throw new SpecFormatError("too many frames");
    let start = reader.offset;
    const first = reader.u32();
    if (first !== FINAL_MARKER) {
      region("frame seq", start);
      if (first !== expected) throw new SpecFormatError("sequence number");
      start = reader.offset;
      const ciphertext = reader.bytes(f);
      region("frame ciphertext", start);
      start = reader.offset;
      const tag = reader.bytes(16);
      region("frame tag", start);
      parts.push(
        gcmOpen(
          messageKey,
          frameIv(expected),
          frameAad(header.messageId, false, expected, f),
          ciphertext,
          tag,
        ),
      );
      frames.push({ seq: expected, final: false, length: f });
      continue;
    }
    region("final marker", start);
    start = reader.offset;
    const seq = reader.u32();
    region("final seq", start);
    if (seq !== expected) throw new SpecFormatError("final sequence number");
    start = reader.offset;
    const length = reader.u32();
    region("final length", start);
    if (length > f) throw new SpecFormatError("final frame longer than F");
    // §5.2: only the empty payload has a final frame with L = 0.
    if (length === 0 && seq !== 1) throw new SpecFormatError("empty final frame after others");
    start = reader.offset;
    const ciphertext = reader.bytes(length);
    if (length > 0) region("final ciphertext", start);
    start = reader.offset;
    const tag = reader.bytes(16);
    region("final tag", start);
    parts.push(
      gcmOpen(
        messageKey,
        frameIv(seq),
        frameAad(header.messageId, true, seq, length),
        ciphertext,
        tag,
      ),
    );
    frames.push({ seq, final: true, length });
    return { plaintext: concat(...parts), end: reader.offset, frames, regions };
  }
}

/** §5.8's compressed point, as a node:crypto key. */
function publicKeyFromContext(suite: SpecSignature, context: SpecContext): KeyObject {
  const text = context[PUBLIC_KEY] ?? "";
  const compressed = new Uint8Array(Buffer.from(text, "base64"));
  if (Buffer.from(compressed).toString("base64") !== text) {
    throw new SpecFormatError("public key is not canonical base64");
  }
  const size = suite.curve === "P-384" ? 48 : 32;
  if (compressed.length !== size + 1 || (compressed[0] !== 2 && compressed[0] !== 3)) {
    throw new SpecFormatError("public key is not a compressed point");
  }
  const uncompressed = suite.point.fromBytes(compressed).toBytes(false);
  return createPublicKey({
    key: {
      kty: "EC",
      crv: suite.curve,
      x: Buffer.from(uncompressed.subarray(1, 1 + size)).toString("base64url"),
      y: Buffer.from(uncompressed.subarray(1 + size)).toString("base64url"),
    },
    format: "jwk",
  });
}

/** §5.8, and §5.6.6: nothing after the message end. */
export function specVerifyTrailer(
  message: Uint8Array,
  header: SpecHeader,
  bodyEnd: number,
): SpecRegion[] {
  const suite = SPEC_SUITES[header.suiteId] ?? null;
  if (suite === null) {
    if (bodyEnd !== message.length) throw new SpecFormatError("bytes after the message");
    return [];
  }
  const reader = new SpecReader(message, bodyEnd);
  const length = reader.u16();
  const signature = reader.bytes(length);
  if (!reader.atEnd()) throw new SpecFormatError("bytes after the signature");
  const ok = verify(
    suite.hash,
    message.subarray(0, bodyEnd),
    { key: publicKeyFromContext(suite, header.context), dsaEncoding: "der" },
    signature,
  );
  if (!ok) throw new SpecFormatError("signature");
  return [
    { name: "signature length", start: bodyEnd, end: bodyEnd + 2 },
    { name: "signature", start: bodyEnd + 2, end: message.length },
  ];
}

/** §5.3 raw AES: the wrapped key's AAD. */
function rawAesAad(namespace: string, name: string, contextBytes: Uint8Array): Uint8Array {
  const ns = utf8(namespace);
  const nm = utf8(name);
  return concat(u16(ns.length), ns, u16(nm.length), nm, contextBytes);
}

export interface SpecRawAesKey {
  readonly keyNamespace: string;
  readonly keyName: string;
  readonly wrappingKey: Uint8Array;
}

/** §5.3 raw AES unwrap. */
export function specUnwrapRawAes(edk: SpecEdk, key: SpecRawAesKey, header: SpecHeader): Uint8Array {
  if (edk.providerId !== key.keyNamespace || edk.providerInfo !== key.keyName) {
    throw new SpecFormatError("not this key's copy");
  }
  if (edk.ciphertext.length !== 12 + 32 + 16) throw new SpecFormatError("raw AES copy length");
  return gcmOpen(
    key.wrappingKey,
    edk.ciphertext.subarray(0, 12),
    rawAesAad(key.keyNamespace, key.keyName, header.contextBytes),
    edk.ciphertext.subarray(12, 44),
    edk.ciphertext.subarray(44),
  );
}

/** §5.3 raw RSA unwrap: RSAES-OAEP with SHA-256 and MGF1-SHA-256, empty label. */
export function specUnwrapRawRsa(edk: SpecEdk, privateKeyPem: string): Uint8Array {
  return new Uint8Array(
    privateDecrypt(
      { key: privateKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      edk.ciphertext,
    ),
  );
}

export interface SpecDecrypted {
  readonly header: SpecHeader;
  readonly body: SpecBody;
  readonly plaintext: Uint8Array;
  /** Every field of the message in order, header to signature. */
  readonly regions: readonly SpecRegion[];
}

/** §5.6: `unwrap` returns the data key from the first copy it can open. */
export function specDecryptMessage(
  message: Uint8Array,
  unwrap: (header: SpecHeader) => Uint8Array,
): SpecDecrypted {
  const header = specParseHeader(message);
  const messageKey = specVerifyHeader(header, unwrap(header));
  const body = specDecryptBody(message, header, messageKey);
  const trailer = specVerifyTrailer(message, header, body.end);
  return {
    header,
    body,
    plaintext: body.plaintext,
    regions: [...header.regions, ...body.regions, ...trailer],
  };
}

export interface SpecEncryptOptions {
  readonly key: SpecRawAesKey;
  readonly context?: SpecContext;
  readonly suiteId?: number;
  readonly frameLength: number;
  /** Deviations a conforming encryptor never makes, to test that a reader refuses (or accepts) them. */
  readonly deviation?: "empty-final-frame-after-full" | "high-s";
  /** Spells the signer's public key otherwise than §5.8 says: for refusal tests. */
  readonly publicKeyText?: (point: { compressed: Uint8Array; uncompressed: Uint8Array }) => string;
  /** Written instead of the context's encoding (the raw AES AAD uses it too): for refusal tests. */
  readonly contextBytes?: Uint8Array;
  /** Copies written after the real one, as raw field bytes: for refusal tests. */
  readonly extraCopies?: readonly (readonly [Uint8Array, Uint8Array, Uint8Array])[];
}

/** DER (SEQUENCE of two INTEGERs) ↔ (r, s). */
function derToRs(der: Uint8Array): [bigint, bigint] {
  const reader = new SpecReader(der);
  if (reader.u8() !== 0x30) throw new SpecFormatError("DER sequence");
  reader.u8();
  const int = (): bigint => {
    if (reader.u8() !== 0x02) throw new SpecFormatError("DER integer");
    return BigInt(`0x${Buffer.from(reader.bytes(reader.u8())).toString("hex")}`);
  };
  return [int(), int()];
}

function rsToDer(r: bigint, s: bigint): Uint8Array {
  const int = (value: bigint): Uint8Array => {
    let hex = value.toString(16);
    if (hex.length % 2 === 1) hex = `0${hex}`;
    if (Number.parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
    const bytes = Buffer.from(hex, "hex");
    return concat(new Uint8Array([0x02, bytes.length]), bytes);
  };
  const body = concat(int(r), int(s));
  return concat(new Uint8Array([0x30, body.length]), body);
}

/** §5.2–§5.5 and §5.8, raw AES keyring only. */
export function specEncryptMessage(plaintext: Uint8Array, options: SpecEncryptOptions): Uint8Array {
  const suiteId = options.suiteId ?? 0x0001;
  const suite = SPEC_SUITES[suiteId];
  if (suite === undefined) throw new SpecFormatError("suite id");
  const context: SpecContext = { ...(options.context ?? {}) };
  let signingKey: KeyObject | undefined;
  if (suite !== null) {
    const pair = generateKeyPairSync("ec", { namedCurve: suite.curve });
    signingKey = pair.privateKey;
    const jwk = pair.publicKey.export({ format: "jwk" });
    const x = Buffer.from(jwk.x ?? "", "base64url");
    const y = Buffer.from(jwk.y ?? "", "base64url");
    const prefix = (y[y.length - 1]! & 1) === 1 ? 0x03 : 0x02;
    const compressed = concat(new Uint8Array([prefix]), x);
    context[PUBLIC_KEY] =
      options.publicKeyText?.({ compressed, uncompressed: concat(new Uint8Array([4]), x, y) }) ??
      Buffer.from(compressed).toString("base64");
  }
  const contextBytes = options.contextBytes ?? specEncodeContext(context);
  const messageId = new Uint8Array(randomBytes(32));
  const dataKey = new Uint8Array(randomBytes(32));
  const iv = new Uint8Array(randomBytes(12));
  const { key } = options;
  const wrapped = gcmSeal(
    key.wrappingKey,
    iv,
    rawAesAad(key.keyNamespace, key.keyName, contextBytes),
    dataKey,
  );
  const field = (bytes: Uint8Array) => concat(u16(bytes.length), bytes);
  const f = options.frameLength;
  const { messageKey, commitment } = specDeriveKeys(dataKey, messageId, suiteId);
  const authenticated = concat(
    new Uint8Array([0x01]),
    u16(suiteId),
    messageId,
    u16(contextBytes.length),
    contextBytes,
    u16(1 + (options.extraCopies?.length ?? 0)),
    field(utf8(key.keyNamespace)),
    field(utf8(key.keyName)),
    field(concat(iv, wrapped.ciphertext, wrapped.tag)),
    ...(options.extraCopies ?? []).flatMap((copy) => copy.map(field)),
    u32(f),
    commitment,
  );
  const headerTag = gcmSeal(messageKey, new Uint8Array(12), authenticated, new Uint8Array(0)).tag;
  const parts: Uint8Array[] = [authenticated, headerTag];
  let regular = 0;
  if (f > 0) {
    regular =
      options.deviation === "empty-final-frame-after-full"
        ? Math.floor(plaintext.length / f)
        : Math.max(0, Math.ceil(plaintext.length / f) - 1);
  }
  for (let seq = 1; seq <= regular; seq++) {
    const chunk = plaintext.subarray((seq - 1) * f, seq * f);
    const sealed = gcmSeal(messageKey, frameIv(seq), frameAad(messageId, false, seq, f), chunk);
    parts.push(u32(seq), sealed.ciphertext, sealed.tag);
  }
  const seq = regular + 1;
  const rest = plaintext.subarray(regular * f);
  const sealed = gcmSeal(
    messageKey,
    frameIv(seq),
    frameAad(messageId, true, seq, rest.length),
    rest,
  );
  parts.push(u32(FINAL_MARKER), u32(seq), u32(rest.length), sealed.ciphertext, sealed.tag);
  const signed = concat(...parts);
  if (suite === null || signingKey === undefined) return signed;
  const [r, s] = derToRs(
    new Uint8Array(sign(suite.hash, signed, { key: signingKey, dsaEncoding: "der" })),
  );
  const low = s > suite.order / 2n ? suite.order - s : s;
  const signature = rsToDer(r, options.deviation === "high-s" ? suite.order - low : low);
  return concat(signed, u16(signature.length), signature);
}
