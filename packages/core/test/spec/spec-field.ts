/**
 * docs/FORMAT.md §6 (field values), written from the spec alone: parse a stored value, rebuild
 * its binding, derive the keys, open it, decode its typed payload, and recompute a blind index.
 * It imports nothing from packages/core/src.
 */
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync } from "node:crypto";
import { sivOpen, sivSeal } from "./spec-aes-siv.ts";
import {
  concat,
  fromUtf8,
  type SpecContext,
  SpecFormatError,
  specEncodeContext,
  u16,
  utf8,
} from "./spec-context.ts";

export const SPEC_TEXT_PREFIX = "kms1:";

export interface SpecFieldValue {
  readonly mode: "randomized" | "deterministic";
  /** Bytes 0–16: format and data key id (§6.2.1). */
  readonly header: Uint8Array;
  /** Lowercase hex, the data-key table's row id (§6.1.2). */
  readonly dataKeyId: string;
  /** Randomized: IV, ciphertext and tag; deterministic: SIV (16) || ciphertext. */
  readonly iv?: Uint8Array;
  readonly sealed: Uint8Array;
  readonly tag?: Uint8Array;
}

/** §6.1.5: only the canonical base64url spelling. */
export function specFromFieldText(text: string): Uint8Array {
  if (!text.startsWith(SPEC_TEXT_PREFIX)) throw new SpecFormatError("no kms1: prefix");
  const body = text.slice(SPEC_TEXT_PREFIX.length);
  if (!/^[A-Za-z0-9_-]*$/.test(body) || body.length % 4 === 1) {
    throw new SpecFormatError("not base64url");
  }
  const bytes = new Uint8Array(Buffer.from(body, "base64url"));
  if (Buffer.from(bytes).toString("base64url") !== body) {
    throw new SpecFormatError("non-canonical base64url");
  }
  return bytes;
}

export function specToFieldText(bytes: Uint8Array): string {
  return SPEC_TEXT_PREFIX + Buffer.from(bytes).toString("base64url");
}

/** §6.1 layout. */
export function specParseFieldValue(bytes: Uint8Array): SpecFieldValue {
  const header = bytes.subarray(0, 17);
  const dataKeyId = Buffer.from(bytes.subarray(1, 17)).toString("hex");
  if (bytes[0] === 0xc1) {
    if (bytes.length < 46) throw new SpecFormatError("randomized value too short");
    return {
      mode: "randomized",
      header,
      dataKeyId,
      iv: bytes.subarray(17, 29),
      sealed: bytes.subarray(29, bytes.length - 16),
      tag: bytes.subarray(bytes.length - 16),
    };
  }
  if (bytes[0] === 0xc2) {
    if (bytes.length < 34) throw new SpecFormatError("deterministic value too short");
    return { mode: "deterministic", header, dataKeyId, sealed: bytes.subarray(17) };
  }
  throw new SpecFormatError("not a field value");
}

/** §6.2 binding. */
export function specBinding(model: string, field: string, context: SpecContext): Uint8Array {
  const m = utf8(model);
  const f = utf8(field);
  if (m.length < 1 || m.length > 255 || f.length < 1 || f.length > 255) {
    throw new SpecFormatError("model or field name length");
  }
  return concat(
    new Uint8Array([m.length]),
    m,
    new Uint8Array([f.length]),
    f,
    specEncodeContext(context),
  );
}

/** §6.1.3 stable data key id of `generation` (§6.4.5; 0: the first), lowercase hex. */
export function specStableDataKeyId(
  keyId: string,
  keyContext: SpecContext,
  generation = 0,
): string {
  const id = utf8(keyId);
  const hash = createHash("sha256")
    .update(utf8("kms1 stable data key"))
    .update(u16(id.length))
    .update(id)
    .update(specEncodeContext(keyContext));
  if (generation !== 0) {
    const u32 = Buffer.alloc(4);
    u32.writeUInt32BE(generation);
    hash.update(u32);
  }
  return hash.digest().subarray(0, 16).toString("hex");
}

function hkdf(ikm: Uint8Array, salt: string, info: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, utf8(salt), info, length));
}

/** §6.4.3 */
export function specDeterministicKey(stableKey: Uint8Array, binding: Uint8Array): Uint8Array {
  return hkdf(stableKey, "kms1 deterministic", binding, 64);
}

/** §6.4.4; `indexBinding` is the binding with field = the index column. */
export function specBlindIndexKey(stableKey: Uint8Array, indexBinding: Uint8Array): Uint8Array {
  return hkdf(stableKey, "kms1 blind index", indexBinding, 32);
}

/** §6.2: returns the plaintext, type tag first (§6.3). */
export function specOpenFieldValue(
  value: SpecFieldValue,
  dataKey: Uint8Array,
  binding: Uint8Array,
): Uint8Array {
  if (dataKey.length !== 32) throw new SpecFormatError("data key is not 32 bytes");
  if (value.mode === "deterministic") {
    return sivOpen(specDeterministicKey(dataKey, binding), [value.header, binding], value.sealed);
  }
  const decipher = createDecipheriv("aes-256-gcm", dataKey, value.iv ?? new Uint8Array(0), {
    authTagLength: 16,
  });
  decipher.setAAD(concat(value.header, binding));
  decipher.setAuthTag(value.tag ?? new Uint8Array(0));
  try {
    return new Uint8Array(Buffer.concat([decipher.update(value.sealed), decipher.final()]));
  } catch {
    throw new SpecFormatError("GCM tag does not verify");
  }
}

/** §6.1/§6.2 writer: `iv` only for randomized values. */
export function specSealFieldValue(
  mode: "randomized" | "deterministic",
  dataKeyId: string,
  dataKey: Uint8Array,
  binding: Uint8Array,
  plaintext: Uint8Array,
  iv: Uint8Array,
): Uint8Array {
  const header = concat(
    new Uint8Array([mode === "randomized" ? 0xc1 : 0xc2]),
    Buffer.from(dataKeyId, "hex"),
  );
  if (mode === "deterministic") {
    return concat(
      header,
      sivSeal(specDeterministicKey(dataKey, binding), [header, binding], plaintext),
    );
  }
  const cipher = createCipheriv("aes-256-gcm", dataKey, iv, { authTagLength: 16 });
  cipher.setAAD(concat(header, binding));
  return concat(header, iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag());
}

export type SpecTypedValue =
  | { type: "string"; value: string }
  | { type: "bytes"; value: Uint8Array }
  | { type: "number"; value: number }
  | { type: "boolean"; value: boolean }
  | { type: "date"; value: Date }
  | { type: "bigint"; value: bigint }
  | { type: "decimal"; value: string }
  | { type: "json"; value: unknown };

const DECIMAL = /^-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** §6.3 */
export function specDecodePayload(plaintext: Uint8Array): SpecTypedValue {
  const tag = plaintext[0];
  const payload = plaintext.subarray(1);
  const float = () => {
    if (payload.length !== 8) throw new SpecFormatError("binary64 length");
    return new DataView(payload.buffer, payload.byteOffset, 8).getFloat64(0, false);
  };
  switch (tag) {
    case 0x01:
      return { type: "string", value: fromUtf8(payload) };
    case 0x02:
      return { type: "bytes", value: new Uint8Array(payload) };
    case 0x03:
      return { type: "number", value: float() };
    case 0x04:
      if (payload.length !== 1 || payload[0]! > 1) throw new SpecFormatError("boolean");
      return { type: "boolean", value: payload[0] === 1 };
    case 0x05:
      return { type: "date", value: new Date(float()) };
    case 0x06: {
      const text = fromUtf8(payload);
      if (!/^-?\d+$/.test(text)) throw new SpecFormatError("bigint");
      return { type: "bigint", value: BigInt(text) };
    }
    case 0x07: {
      const text = fromUtf8(payload);
      if (!DECIMAL.test(text)) throw new SpecFormatError("decimal");
      return { type: "decimal", value: text };
    }
    case 0x08:
      return { type: "json", value: JSON.parse(fromUtf8(payload)) as unknown };
    default:
      throw new SpecFormatError("type tag");
  }
}

/** §6.3 writer for the tests' reverse direction. */
export function specEncodePayload(typed: SpecTypedValue): Uint8Array {
  const float = (value: number) => {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setFloat64(0, Number.isNaN(value) ? Number.NaN : value, false);
    return out;
  };
  const tagged = (tag: number, payload: Uint8Array) => concat(new Uint8Array([tag]), payload);
  switch (typed.type) {
    case "string":
      return tagged(0x01, utf8(typed.value));
    case "bytes":
      return tagged(0x02, typed.value);
    case "number":
      return tagged(0x03, float(typed.value));
    case "boolean":
      return tagged(0x04, new Uint8Array([typed.value ? 1 : 0]));
    case "date":
      return tagged(0x05, float(typed.value.getTime()));
    case "bigint":
      return tagged(0x06, utf8(typed.value.toString(10)));
    case "decimal":
      return tagged(0x07, utf8(typed.value));
    case "json":
      return tagged(0x08, utf8(JSON.stringify(typed.value)));
  }
}

export type SpecNormalization = "trim" | "lowercase" | "nfkc";

const NORMALIZE: Record<SpecNormalization, (value: string) => string> = {
  trim: (value) => value.trim(),
  lowercase: (value) => value.toLowerCase(),
  nfkc: (value) => value.normalize("NFKC"),
};

/** §6.5 */
export function specBlindIndex(
  indexKey: Uint8Array,
  value: unknown,
  normalize: readonly SpecNormalization[],
  bytes = 16,
): string {
  let input: Uint8Array;
  if (typeof value === "string") {
    const normalized = normalize.reduce((text, step) => NORMALIZE[step](text), value);
    input = concat(new Uint8Array([0x01]), utf8(normalized));
  } else {
    input = concat(new Uint8Array([0x08]), utf8(JSON.stringify(value)));
  }
  const mac = createHmac("sha256", indexKey).update(input).digest();
  return mac.subarray(0, bytes).toString("base64url");
}
