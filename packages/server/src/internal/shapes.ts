/**
 * Wire shapes of the AWS KMS JSON protocol and their translation to and from @kms/core's
 * request and response objects. Every member is declared with its wire name and its core name;
 * nothing is derived by changing the case of keys found in the data, so the keys of user maps
 * (encryption contexts, grant constraints) pass through exactly as sent.
 */
import { ProtocolError } from "./protocol-error.ts";

export type Shape =
  | { readonly type: "string" }
  | { readonly type: "integer" }
  | { readonly type: "boolean" }
  | { readonly type: "blob" }
  | { readonly type: "timestamp" }
  /** String → string map of user data: keys are kept byte for byte. */
  | { readonly type: "stringMap" }
  | { readonly type: "list"; readonly member: Shape }
  | StructureShape;

export interface StructureShape {
  readonly type: "structure";
  readonly name: string;
  readonly members: readonly Member[];
}

export interface Member {
  /** PascalCase name on the wire. */
  readonly wire: string;
  /** @kms/core's camelCase name. */
  readonly field: string;
  readonly shape: Shape;
  /**
   * AWS defines the member but this server does not implement it. A request that sets it is
   * refused rather than served without it: ignoring Recipient would return the plaintext that
   * the caller asked to be encrypted for an enclave, ignoring CustomKeyStoreId would create the
   * key somewhere else than asked.
   */
  readonly unsupported?: string;
  /** Accepted only with this value, which is the behaviour anyway; not passed to core. */
  readonly onlyValue?: string;
}

export const string: Shape = { type: "string" };
export const integer: Shape = { type: "integer" };
export const boolean: Shape = { type: "boolean" };
export const blob: Shape = { type: "blob" };
export const timestamp: Shape = { type: "timestamp" };
export const stringMap: Shape = { type: "stringMap" };
export const stringList: Shape = { type: "list", member: string };
export const list = (member: Shape): Shape => ({ type: "list", member });

/** A member whose core name is the wire name with a lowercase first letter. */
export function m(wire: string, shape: Shape, extra: Partial<Member> = {}): Member {
  return { wire, field: wire.charAt(0).toLowerCase() + wire.slice(1), shape, ...extra };
}

export function structure(name: string, members: readonly Member[]): StructureShape {
  return { type: "structure", name, members };
}

function serialization(message: string): ProtocolError {
  return new ProtocolError("SerializationException", message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Member names come from the client: quoted, and cut short so a message stays a message. */
function quote(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

/**
 * Canonical base64 (RFC 4648 §4, with padding): the character before `==` may carry only 2 data
 * bits and the one before `=` only 4, so their unused low bits must be zero (RFC 4648 §3.5).
 * Node's decoder drops those bits, and "AB==" would read as the same byte as "AA==": each byte
 * string would have several spellings that a signature, a log or a cache tells apart.
 */
const BASE64 =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$/;

/**
 * JSON admits `\ud800`, a lone surrogate, which is no Unicode text: every UTF-8 encoder (a
 * key store's driver, a log pipeline, core's context encoding) writes it as U+FFFD, so
 * `"\ud800"` and `"\udbff"` would name one tag, alias or context key once stored or signed.
 */
function wellFormed(value: string, path: string): string {
  if (!(value as unknown as { isWellFormed(): boolean }).isWellFormed()) {
    throw serialization(`${path} must be well-formed Unicode (no lone surrogates)`);
  }
  return value;
}

/**
 * JSON → the core request object.
 * @throws ProtocolError SerializationException (wrong JSON type, bad base64, a member the shape
 *   does not have), UnsupportedOperationException (a member AWS has and this server does not).
 */
export function decode(
  shape: StructureShape,
  json: unknown,
  path = shape.name,
): Record<string, unknown> {
  if (!isPlainObject(json)) throw serialization(`${path} expected a JSON object`);
  const entries: [string, unknown][] = [];
  try {
    for (const [key, value] of Object.entries(json)) {
      const member = shape.members.find((mb) => mb.wire === key);
      if (member === undefined) {
        throw serialization(`${quote(key)} is not a member of ${shape.name}`);
      }
      // null is how some clients write an absent member.
      if (value === null) continue;
      if (member.unsupported !== undefined) {
        throw new ProtocolError(
          "UnsupportedOperationException",
          `${shape.name}.${key} is not supported by this server: ${member.unsupported}`,
        );
      }
      const decoded = decodeValue(member.shape, value, `${path}.${key}`);
      if (member.onlyValue !== undefined) {
        if (decoded !== member.onlyValue) {
          throw new ProtocolError(
            "UnsupportedOperationException",
            `${shape.name}.${key}: only ${member.onlyValue} is supported by this server`,
          );
        }
        continue;
      }
      entries.push([member.field, decoded]);
    }
  } catch (error) {
    // The handler zeroes the blobs of a request it ran; those of one refused here (a Plaintext
    // decoded before a later member failed) never reach it, and are zeroed now.
    for (const [, decoded] of entries) if (decoded instanceof Uint8Array) decoded.fill(0);
    throw error;
  }
  // fromEntries defines own properties: a "__proto__" key stays data, never a prototype.
  return Object.fromEntries(entries);
}

function decodeValue(shape: Shape, value: unknown, path: string): unknown {
  switch (shape.type) {
    case "string":
      if (typeof value !== "string") throw serialization(`${path} expected a string`);
      return wellFormed(value, path);
    case "integer":
      if (typeof value !== "number" || !Number.isSafeInteger(value)) {
        throw serialization(`${path} expected an integer`);
      }
      return value;
    case "boolean":
      if (typeof value !== "boolean") throw serialization(`${path} expected a boolean`);
      return value;
    case "blob": {
      if (typeof value !== "string" || !BASE64.test(value)) {
        throw serialization(`${path} expected a base64-encoded string`);
      }
      const pooled = Buffer.from(value, "base64");
      // A copy of its own, so core never sees (and a wipe never touches) a shared pool buffer.
      const bytes = new Uint8Array(pooled);
      pooled.fill(0);
      return bytes;
    }
    case "timestamp":
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw serialization(`${path} expected epoch seconds`);
      }
      return new Date(value * 1000);
    case "stringMap": {
      if (!isPlainObject(value)) throw serialization(`${path} expected a JSON object`);
      const entries = Object.entries(value);
      for (const [k, v] of entries) {
        if (typeof v !== "string") throw serialization(`${path} values must be strings`);
        wellFormed(k, `${path} keys`);
        wellFormed(v, `${path} values`);
      }
      return Object.fromEntries(entries);
    }
    case "list":
      if (!Array.isArray(value)) throw serialization(`${path} expected a JSON array`);
      return value.map((item, i) => decodeValue(shape.member, item, `${path}[${i}]`));
    case "structure":
      return decode(shape, value, path);
  }
}

/** A core response object → JSON-ready value with the wire's member names. */
export function encode(shape: StructureShape, value: unknown): Record<string, unknown> {
  if (!isPlainObject(value)) throw new TypeError(`${shape.name}: expected an object from core`);
  const entries: [string, unknown][] = [];
  for (const member of shape.members) {
    const v = value[member.field];
    if (v === undefined || v === null) continue;
    entries.push([member.wire, encodeValue(member.shape, v, `${shape.name}.${member.wire}`)]);
  }
  return Object.fromEntries(entries);
}

function encodeValue(shape: Shape, value: unknown, path: string): unknown {
  switch (shape.type) {
    case "string":
      if (typeof value !== "string") throw new TypeError(`${path}: expected a string from core`);
      return value;
    case "integer":
      if (typeof value !== "number") throw new TypeError(`${path}: expected a number from core`);
      return value;
    case "boolean":
      if (typeof value !== "boolean") throw new TypeError(`${path}: expected a boolean from core`);
      return value;
    case "blob":
      if (!(value instanceof Uint8Array)) {
        throw new TypeError(`${path}: expected bytes from core`);
      }
      return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64");
    case "timestamp":
      if (!(value instanceof Date)) throw new TypeError(`${path}: expected a Date from core`);
      // Epoch seconds, as the AWS JSON protocols write timestamps.
      return value.getTime() / 1000;
    case "stringMap":
      if (!isPlainObject(value)) throw new TypeError(`${path}: expected a map from core`);
      return Object.fromEntries(Object.entries(value));
    case "list":
      if (!Array.isArray(value)) throw new TypeError(`${path}: expected an array from core`);
      return value.map((item, i) => encodeValue(shape.member, item, `${path}[${i}]`));
    case "structure":
      return encode(shape, value);
  }
}
