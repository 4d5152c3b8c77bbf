/**
 * RFC 8941 Structured Field Values: a strict parser and serializer for the field types HTTP
 * Message Signatures needs (dictionaries, lists, inner lists, items, parameters). Strict means
 * any input the RFC says to fail on throws `ValidationError`; the parser never throws anything
 * else, whatever the bytes (a property test holds it to that).
 */
import { ValidationError } from "@kms/core";

/** An RFC 8941 token (unquoted identifier such as `sha-256` or `*foo`). */
export class Token {
  readonly value: string;
  constructor(value: string) {
    this.value = value;
  }
}

/** An RFC 8941 decimal, kept apart from integers so that `1.0` serializes back as `1.0`. */
export class Decimal {
  readonly value: number;
  constructor(value: number) {
    this.value = value;
  }
}

/** integer (number) | decimal | string | token | byte sequence | boolean. */
export type BareItem = number | Decimal | string | Token | Uint8Array | boolean;
export type Parameters = Map<string, BareItem>;
export interface Item {
  readonly value: BareItem;
  readonly params: Parameters;
}
export interface InnerList {
  readonly items: readonly Item[];
  readonly params: Parameters;
}
export type Member = Item | InnerList;
export type Dictionary = Map<string, Member>;
export type List = Member[];
export type StructuredFieldType = "dictionary" | "list" | "item";

const MAX_INTEGER = 999_999_999_999_999;

export function isInnerList(member: Member): member is InnerList {
  return "items" in member;
}

/** Builds an item; `params` may be a plain object for convenience. */
export function item(value: BareItem, params: Record<string, BareItem> | Parameters = {}): Item {
  return { value, params: params instanceof Map ? params : new Map(Object.entries(params)) };
}

function fail(what: string, input: string, pos: number): never {
  throw new ValidationError(
    `structured field: ${what} at offset ${pos} of a ${input.length}-char value`,
  );
}

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= "0" && c <= "9";
const isLcAlpha = (c: string | undefined): boolean => c !== undefined && c >= "a" && c <= "z";
const isAlpha = (c: string | undefined): boolean =>
  c !== undefined && ((c >= "a" && c <= "z") || (c >= "A" && c <= "Z"));
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

// Character classes as code-unit tables: these run per character of every signature field.
function charTable(chars: string): Uint8Array {
  const table = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1;
  return table;
}
const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_CHARS = charTable("abcdefghijklmnopqrstuvwxyz0123456789_-.*");
/** tchar plus ":" and "/", which RFC 8941 §3.3.4 allows after a token's first character. */
const TOKEN_CHARS = charTable(`!#$%&'*+-.^_\`|~:/${ALNUM}`);
const isKeyChar = (code: number): boolean => code < 128 && KEY_CHARS[code] === 1;

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_VALUES = new Uint8Array(128);
for (let i = 0; i < 64; i++) BASE64_VALUES[BASE64_ALPHABET.charCodeAt(i)] = i;

/**
 * V8 keeps a typed array of at most this many bytes inside its object; reading `.buffer` of
 * such an array moves its bytes to a backing store of their own (freed by the collector).
 */
const IN_OBJECT_BYTES = 64;

/**
 * Bytes of base64 `text` (the alphabet and padding checked already), as Buffer decodes them.
 * Signatures and digests (32 to 64 bytes) are decoded here into an array that owns its bytes;
 * longer ones through Buffer, copied out of its shared pool, because a view into the pool
 * would show all of it through `.buffer`.
 */
function decodeBase64(text: string): Uint8Array {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0x3d /* = */) end--;
  const length = Math.floor((end * 3) / 4);
  if (length > IN_OBJECT_BYTES) return new Uint8Array(Buffer.from(text, "base64"));
  const bytes = new Uint8Array(length);
  let bits = 0;
  let acc = 0;
  let j = 0;
  for (let i = 0; i < end; i++) {
    acc = ((acc << 6) | (BASE64_VALUES[text.charCodeAt(i)] as number)) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[j++] = (acc >> bits) & 0xff;
    }
  }
  return bytes;
}

/** `bytes` in base64, without moving a small array's bytes out of its object (see above). */
function encodeBase64(bytes: Uint8Array): string {
  const buffer =
    bytes.byteLength <= IN_OBJECT_BYTES
      ? Buffer.from(bytes)
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return buffer.toString("base64");
}

/**
 * The parameters of every item without any in a read-only parse (`parseSharedDictionary`): one
 * map, which refuses changes, instead of an empty map per item.
 */
const NO_PARAMETERS: Parameters = new Map();
const readOnly = (): never => {
  throw new TypeError("the parameters of a shared parse are read-only");
};
Object.defineProperties(NO_PARAMETERS, {
  set: { value: readOnly },
  delete: { value: readOnly },
  clear: { value: readOnly },
});
Object.freeze(NO_PARAMETERS);

class Parser {
  readonly input: string;
  pos = 0;
  /** Fail on a key repeated within one parameter list (see DictionaryParseOptions). */
  rejectDuplicateParameters = false;
  /** Empty parameter lists are NO_PARAMETERS (see parseSharedDictionary). */
  shareEmptyParameters = false;
  constructor(input: string) {
    // RFC 8941 §4.2: fields are ASCII; anything else fails the whole parse.
    for (let i = 0; i < input.length; i++) {
      const code = input.charCodeAt(i);
      if (code > 0x7e || (code < 0x20 && code !== 0x09))
        fail("non-ASCII or control character", input, i);
    }
    this.input = input;
  }

  peek(): string | undefined {
    return this.input[this.pos];
  }
  skipSp(): void {
    while (this.input[this.pos] === " ") this.pos++;
  }
  skipOws(): void {
    while (this.input[this.pos] === " " || this.input[this.pos] === "\t") this.pos++;
  }
  done(): boolean {
    return this.pos >= this.input.length;
  }

  /** RFC 8941 §4.2: what follows the top-level value may only be spaces. */
  end(): void {
    this.skipSp();
    if (!this.done()) fail("trailing characters", this.input, this.pos);
  }

  parseDictionary(rejectDuplicateKeys: boolean): Dictionary {
    const dict: Dictionary = new Map();
    while (!this.done()) {
      const keyAt = this.pos;
      const key = this.parseKey();
      if (rejectDuplicateKeys && dict.has(key)) fail("repeated dictionary key", this.input, keyAt);
      let member: Member;
      if (this.peek() === "=") {
        this.pos++;
        member = this.parseItemOrInnerList();
      } else {
        member = { value: true, params: this.parseParameters() };
      }
      // RFC 8941 §4.2.2: a repeated key overwrites the earlier value but keeps its position.
      dict.set(key, member);
      if (!this.afterMember()) break;
    }
    return dict;
  }

  parseList(): List {
    const list: List = [];
    while (!this.done()) {
      list.push(this.parseItemOrInnerList());
      if (!this.afterMember()) break;
    }
    return list;
  }

  /** Consumes `OWS "," OWS` between members; false at the end of input. */
  afterMember(): boolean {
    this.skipOws();
    if (this.done()) return false;
    if (this.peek() !== ",") fail('expected ","', this.input, this.pos);
    this.pos++;
    this.skipOws();
    if (this.done()) fail("trailing comma", this.input, this.pos);
    return true;
  }

  parseItemOrInnerList(): Member {
    return this.peek() === "(" ? this.parseInnerList() : this.parseItem();
  }

  parseInnerList(): InnerList {
    this.pos++;
    const items: Item[] = [];
    while (!this.done()) {
      this.skipSp();
      if (this.peek() === ")") {
        this.pos++;
        return { items, params: this.parseParameters() };
      }
      items.push(this.parseItem());
      const c = this.peek();
      if (c !== " " && c !== ")") fail('expected " " or ")" in inner list', this.input, this.pos);
    }
    return fail("unterminated inner list", this.input, this.pos);
  }

  parseItem(): Item {
    const value = this.parseBareItem();
    return { value, params: this.parseParameters() };
  }

  parseParameters(): Parameters {
    if (this.shareEmptyParameters && this.peek() !== ";") return NO_PARAMETERS;
    const params: Parameters = new Map();
    while (this.peek() === ";") {
      this.pos++;
      this.skipSp();
      const keyAt = this.pos;
      const key = this.parseKey();
      if (this.rejectDuplicateParameters && params.has(key))
        fail("repeated parameter key", this.input, keyAt);
      let value: BareItem = true;
      if (this.peek() === "=") {
        this.pos++;
        value = this.parseBareItem();
      }
      params.set(key, value);
    }
    return params;
  }

  parseKey(): string {
    const first = this.peek();
    if (!isLcAlpha(first) && first !== "*")
      fail("key must start with a-z or *", this.input, this.pos);
    const start = this.pos;
    const input = this.input;
    while (this.pos < input.length && isKeyChar(input.charCodeAt(this.pos))) this.pos++;
    return input.slice(start, this.pos);
  }

  parseBareItem(): BareItem {
    const c = this.peek();
    if (c === "-" || isDigit(c)) return this.parseNumber();
    if (c === '"') return this.parseString();
    if (c === "*" || isAlpha(c)) return this.parseToken();
    if (c === ":") return this.parseByteSequence();
    if (c === "?") return this.parseBoolean();
    return fail("expected an item", this.input, this.pos);
  }

  parseNumber(): number | Decimal {
    const start = this.pos;
    let sign = 1;
    if (this.peek() === "-") {
      sign = -1;
      this.pos++;
    }
    if (!isDigit(this.peek())) fail("expected a digit", this.input, this.pos);
    // Scanned by code unit and sliced once (integers such as `created` are on every request).
    const input = this.input;
    const first = this.pos;
    let isDecimal = false;
    while (this.pos < input.length) {
      const code = input.charCodeAt(this.pos);
      const length = this.pos - first;
      if (code < 0x30 || code > 0x39) {
        if (code !== 0x2e /* . */ || isDecimal) break;
        if (length > 12) fail("decimal has more than 12 integer digits", input, start);
        isDecimal = true;
      }
      this.pos++;
      if (!isDecimal && length + 1 > 15) fail("integer has more than 15 digits", input, start);
      if (isDecimal && length + 1 > 16) fail("decimal is too long", input, start);
    }
    const digits = input.slice(first, this.pos);
    if (!isDecimal) return sign * Number.parseInt(digits, 10);
    if (digits.endsWith(".")) fail("decimal ends with a dot", this.input, start);
    if (digits.length - digits.indexOf(".") - 1 > 3) {
      fail("decimal has more than 3 fractional digits", this.input, start);
    }
    return new Decimal(sign * Number.parseFloat(digits));
  }

  parseString(): string {
    this.pos++;
    // Fast path: no escape before the closing quote (the constructor already refused controls
    // and non-ASCII, so only a tab can still be wrong).
    const close = this.input.indexOf('"', this.pos);
    if (close >= 0) {
      const slice = this.input.slice(this.pos, close);
      if (!slice.includes("\\") && !slice.includes("\t")) {
        this.pos = close + 1;
        return slice;
      }
    }
    let out = "";
    while (!this.done()) {
      const ch = this.input[this.pos++] as string;
      if (ch === "\\") {
        const next = this.input[this.pos++];
        if (next !== '"' && next !== "\\") fail("bad escape in string", this.input, this.pos - 1);
        out += next;
      } else if (ch === '"') {
        return out;
      } else if (ch === "\t") {
        fail("tab in string", this.input, this.pos - 1);
      } else {
        out += ch;
      }
    }
    return fail("unterminated string", this.input, this.pos);
  }

  parseToken(): Token {
    const start = this.pos++;
    const input = this.input;
    while (this.pos < input.length) {
      const code = input.charCodeAt(this.pos);
      if (code >= 128 || TOKEN_CHARS[code] !== 1) break;
      this.pos++;
    }
    return new Token(input.slice(start, this.pos));
  }

  parseByteSequence(): Uint8Array {
    const start = ++this.pos;
    const end = this.input.indexOf(":", start);
    if (end < 0) fail("unterminated byte sequence", this.input, start);
    const b64 = this.input.slice(start, end);
    if (!BASE64.test(b64) || b64.length % 4 === 1)
      fail("invalid base64 in byte sequence", this.input, start);
    this.pos = end + 1;
    return decodeBase64(b64);
  }

  parseBoolean(): boolean {
    this.pos++;
    const ch = this.input[this.pos++];
    if (ch === "1") return true;
    if (ch === "0") return false;
    return fail('boolean must be "?0" or "?1"', this.input, this.pos - 1);
  }
}

export interface DictionaryParseOptions {
  /**
   * Fail on a repeated key instead of letting the last member win (RFC 8941 §4.2.2). For fields
   * where a repeat is ambiguous between parsers, such as Signature-Input and Signature.
   */
  readonly rejectDuplicateKeys?: boolean;
  /**
   * Fail on a key repeated within one parameter list (a member's, an inner list's, or an item's
   * inside an inner list) instead of letting the last value win (RFC 8941 §4.2.3.2). Parameters
   * of different items may share keys. For fields whose parameters decide what a signature
   * means, such as Signature-Input's `keyid` or a component identifier's `key`.
   */
  readonly rejectDuplicateParameters?: boolean;
}

/**
 * Parses a Dictionary field value (e.g. Signature-Input, Signature, Content-Digest).
 * @throws ValidationException when the value is not a valid RFC 8941 dictionary, or repeats a
 * key and `options.rejectDuplicateKeys` is set, or repeats a key within one parameter list and
 * `options.rejectDuplicateParameters` is set.
 */
export function parseDictionary(value: string, options: DictionaryParseOptions = {}): Dictionary {
  return dictionaryOf(value, options, false);
}

/**
 * `parseDictionary` for a result that nobody changes (the signature fields a verification and
 * its response's signing read): parameter lists that are empty share one map, which throws on
 * `set`, `delete` and `clear`. Signature-Input's components and Signature's members have none,
 * so a request's two fields would otherwise allocate a map for each.
 * @throws ValidationException as `parseDictionary` does.
 * @internal
 */
export function parseSharedDictionary(
  value: string,
  options: DictionaryParseOptions = {},
): Dictionary {
  return dictionaryOf(value, options, true);
}

function dictionaryOf(
  value: string,
  options: DictionaryParseOptions,
  shareEmptyParameters: boolean,
): Dictionary {
  const p = new Parser(value);
  p.rejectDuplicateParameters = options.rejectDuplicateParameters === true;
  p.shareEmptyParameters = shareEmptyParameters;
  // Called directly rather than through a callback: signature fields are parsed per request.
  p.skipSp();
  const dict = p.parseDictionary(options.rejectDuplicateKeys === true);
  p.end();
  return dict;
}

/**
 * Parses a List field value.
 * @throws ValidationException when the value is not a valid RFC 8941 list.
 */
export function parseList(value: string): List {
  const p = new Parser(value);
  p.skipSp();
  const list = p.parseList();
  p.end();
  return list;
}

/**
 * Parses an Item field value.
 * @throws ValidationException when the value is not a valid RFC 8941 item.
 */
export function parseItem(value: string): Item {
  const p = new Parser(value);
  p.skipSp();
  const parsed = p.parseItem();
  p.end();
  return parsed;
}

/**
 * Parses a value of the given structured type.
 * @throws ValidationException when the value does not parse as that type.
 */
export function parseStructuredField(
  value: string,
  type: StructuredFieldType,
): Dictionary | List | Item {
  if (type === "dictionary") return parseDictionary(value);
  if (type === "list") return parseList(value);
  return parseItem(value);
}

// --- serialization (RFC 8941 §4.1) -------------------------------------------------------

function serializeKey(key: string): string {
  let valid = key.length > 0 && (isLcAlpha(key[0]) || key[0] === "*");
  for (let i = 1; valid && i < key.length; i++) valid = isKeyChar(key.charCodeAt(i));
  if (!valid) {
    throw new ValidationError(`structured field key "${key}" must match [a-z*][a-z0-9_.*-]*`);
  }
  return key;
}

/**
 * RFC 8941 §4.1.5: three decimal places, "rounding the final digit to the nearest value, or to
 * the even value if it is equidistant". `Math.round` rounds a tie up (0.0625 to 0.063). A double
 * is exactly halfway between thousandths only when it is an odd multiple of 1/16 (x.0625,
 * x.1875, …), where scaling by 1000 is exact; any other value is nearer one side.
 */
function roundToThousandths(value: number): number {
  const scaled = value * 1000;
  const sixteenths = value * 16;
  if (Number.isInteger(sixteenths) && sixteenths % 2 !== 0) {
    const below = Math.floor(scaled);
    return (below % 2 === 0 ? below : below + 1) / 1000;
  }
  return Math.round(scaled) / 1000;
}

/**
 * Serializes a bare item.
 * @throws ValidationException when the value is outside what RFC 8941 can represent.
 */
export function serializeBareItem(value: BareItem): string {
  if (typeof value === "boolean") return value ? "?1" : "?0";
  if (typeof value === "number") {
    if (!Number.isInteger(value) || Math.abs(value) > MAX_INTEGER) {
      throw new ValidationError(
        `structured field integer must be an integer within ±${MAX_INTEGER}`,
      );
    }
    return String(value);
  }
  if (value instanceof Decimal) {
    const rounded = roundToThousandths(value.value);
    if (!Number.isFinite(rounded) || Math.abs(Math.trunc(rounded)) > 999_999_999_999) {
      throw new ValidationError("structured field decimal must have at most 12 integer digits");
    }
    const text = String(rounded);
    return text.includes(".") ? text : `${text}.0`;
  }
  if (typeof value === "string") {
    let escapes = false;
    for (let i = 0; i < value.length; i++) {
      const code = value.charCodeAt(i);
      if (code < 0x20 || code > 0x7e) {
        throw new ValidationError("structured field string must be printable ASCII");
      }
      if (code === 0x22 || code === 0x5c) escapes = true;
    }
    return escapes ? `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"` : `"${value}"`;
  }
  if (value instanceof Token) {
    const v = value.value;
    if (!/^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/.test(v)) {
      throw new ValidationError(`structured field token "${v}" is not a valid token`);
    }
    return v;
  }
  return `:${encodeBase64(value)}:`;
}

export function serializeParameters(params: Parameters): string {
  // Most component identifiers have none: no iterator then.
  if (params.size === 0) return "";
  let out = "";
  for (const [key, value] of params) {
    out += `;${serializeKey(key)}`;
    if (value !== true) out += `=${serializeBareItem(value)}`;
  }
  return out;
}

/** @throws ValidationException when the item cannot be represented. */
export function serializeItem(value: Item): string {
  return serializeBareItem(value.value) + serializeParameters(value.params);
}

/** @throws ValidationException when an item cannot be represented. */
export function serializeInnerList(list: InnerList): string {
  return `(${list.items.map(serializeItem).join(" ")})${serializeParameters(list.params)}`;
}

function serializeMember(member: Member): string {
  return isInnerList(member) ? serializeInnerList(member) : serializeItem(member);
}

/** @throws ValidationException when a member cannot be represented. */
export function serializeList(list: List): string {
  return list.map(serializeMember).join(", ");
}

/** @throws ValidationException when a key or member cannot be represented. */
export function serializeDictionary(dict: Dictionary): string {
  const parts: string[] = [];
  for (const [key, member] of dict) {
    if (!isInnerList(member) && member.value === true) {
      parts.push(serializeKey(key) + serializeParameters(member.params));
    } else {
      parts.push(`${serializeKey(key)}=${serializeMember(member)}`);
    }
  }
  return parts.join(", ");
}

/** Serializes a parsed value of any structured type. */
export function serializeStructuredField(value: Dictionary | List | Item): string {
  if (value instanceof Map) return serializeDictionary(value);
  if (Array.isArray(value)) return serializeList(value);
  return serializeItem(value as Item);
}
