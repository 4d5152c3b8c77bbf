/**
 * The framework-neutral view of an HTTP message that signing and verification work on. Each
 * framework layer (Express, Nest, fetch) builds one of these; nothing here knows about them.
 */
import { RecentCache } from "./internal/recent-cache.ts";
import {
  type Dictionary,
  type DictionaryParseOptions,
  parseSharedDictionary,
} from "./structured-fields.ts";

/**
 * Header fields in any of the usual shapes: a WHATWG `Headers`, Node's `headersDistinct`
 * (one array entry per field line), or a plain object whose values are strings or arrays.
 */
export type HeaderSource =
  | Headers
  | Readonly<Record<string, string | readonly string[] | number | undefined>>;

export interface RequestMessage {
  readonly method: string;
  /** Absolute target URI, e.g. `https://example.com/foo?bar=1`. */
  readonly url: string | URL;
  readonly headers: HeaderSource;
  /** The raw body bytes exactly as sent, when Content-Digest is computed or checked. */
  readonly body?: Uint8Array | undefined;
}

export interface ResponseMessage {
  readonly status: number;
  readonly headers: HeaderSource;
  readonly body?: Uint8Array | undefined;
}

export type HttpMessage = RequestMessage | ResponseMessage;

export function isRequestMessage(message: HttpMessage): message is RequestMessage {
  return "method" in message;
}

/** Field lines by lower-cased name, each line kept apart (needed for `;bs`). */
export type FieldLines = ReadonlyMap<string, readonly string[]>;

/**
 * A message's fields as one signing or verification read them. The operation holds this object
 * to its end, so every check in it sees the same fields, whatever happens to the headers object
 * (or to the cache) meanwhile.
 * @internal
 */
export interface ReadFields {
  readonly lines: FieldLines;
  /** Dictionary fields parsed so far (Signature-Input, Signature), by name. */
  dictionaries: Map<string, Dictionary> | undefined;
}

// Recent header objects only (see RecentCache for why not a WeakMap): enough for one request's
// verification and its response's signing, also with a few requests interleaved. Keyed by
// identity, so it cannot see a header set on the object since: each signing and verification
// reads the headers it is given afresh (`readFields`) and keeps what it read, and a later
// operation may start from here (`cachedFields`).
const fieldCache = new RecentCache<object, ReadFields>(16);

const isString = (value: unknown): value is string => typeof value === "string";

/** Normalizes any header shape to field lines keyed by lower-case name, as they are now. */
export function fieldLines(headers: HeaderSource): FieldLines {
  return readFields(headers).lines;
}

/**
 * The fields of `headers` as they are now, at the start of an operation: a caller may have set
 * fields on the same object since (a second signature added to a message, a client reusing
 * one headers object for the next request), and those must be seen.
 * @internal
 */
export function readFields(headers: HeaderSource): ReadFields {
  fieldCache.delete(headers);
  // Forgotten just now, so not looked up again.
  return cacheFields(headers);
}

/**
 * The fields of `headers` as an earlier operation read them, if they are still cached; as they
 * are now otherwise. For the request a server's response answers: read as it was verified.
 * @internal
 */
export function cachedFields(headers: HeaderSource): ReadFields {
  return fieldCache.get(headers) ?? cacheFields(headers);
}

/** The fields of `headers` as they are now, cached for them. */
function cacheFields(headers: HeaderSource): ReadFields {
  const fields: ReadFields = { lines: fieldLinesOf(headers), dictionaries: undefined };
  fieldCache.set(headers, fields);
  return fields;
}

/** Adds one field line under `key`, a lower-case name. */
function addLine(out: Map<string, readonly string[]>, key: string, value: string): void {
  const list = out.get(key);
  out.set(key, list === undefined ? [value] : [...list, value]);
}

/** The field lines of `headers` as they are now, by lower-case name. */
function fieldLinesOf(headers: HeaderSource): Map<string, readonly string[]> {
  const out = new Map<string, readonly string[]>();
  // Lines of a field seen once are kept as given (Node's headersDistinct arrays are not copied);
  // a field met under a second spelling of its name gets a fresh merged array.
  if (typeof Headers !== "undefined" && headers instanceof Headers) {
    // Headers joins repeated lines with ", " already; set-cookie is the one it keeps apart.
    for (const [name, value] of headers) {
      if (name === "set-cookie") continue;
      addLine(out, name, value);
    }
    for (const cookie of headers.getSetCookie()) addLine(out, "set-cookie", cookie);
    return out;
  }
  const record = headers as Readonly<Record<string, unknown>>;
  for (const name of Object.keys(record)) {
    const value = record[name];
    if (value === undefined) continue;
    const key = name.toLowerCase();
    if (!Array.isArray(value)) {
      addLine(out, key, typeof value === "string" ? value : String(value));
      continue;
    }
    const lines = value.every(isString) ? (value as string[]) : value.map(String);
    const list = out.get(key);
    out.set(key, list === undefined ? lines : [...list, ...lines]);
  }
  return out;
}

const SIGNATURE_FIELD: DictionaryParseOptions = {
  rejectDuplicateKeys: true,
  rejectDuplicateParameters: true,
};
const DIGEST_FIELD: DictionaryParseOptions = { rejectDuplicateKeys: true };
const LENIENT: DictionaryParseOptions = {};

/**
 * Fields parsed stricter than RFC 8941, which lets the last of repeated keys win, in
 * dictionaries and in parameter lists alike. In these fields a repeat is ambiguous: an
 * intermediary that takes the first occurrence and a verifier that takes the last read
 * different things from one message, and no honest sender emits one.
 * - Signature-Input and Signature: a repeated label means two signatures (RFC 9421 §3.2, §7);
 *   a repeated parameter means two `keyid`s, `created`s or `alg`s for one signature, or two
 *   `key`s on one component identifier. Signature's member parameters are covered when a later
 *   signer signs `"signature";key=…` (RFC 9421 §4.3), so they get the same rule.
 * - Content-Digest and Repr-Digest: one algorithm with two digests, only one of which a
 *   `;key="sha-256"` component would cover (RFC 9530 §2, §3).
 */
const STRICT_FIELDS: ReadonlyMap<string, DictionaryParseOptions> = new Map([
  ["signature-input", SIGNATURE_FIELD],
  ["signature", SIGNATURE_FIELD],
  ["content-digest", DIGEST_FIELD],
  ["repr-digest", DIGEST_FIELD],
]);

/** How to parse the dictionary field `name` (lower case): see STRICT_FIELDS. */
export function dictionaryParseOptions(name: string): DictionaryParseOptions {
  return STRICT_FIELDS.get(name) ?? LENIENT;
}

/**
 * The field's lines parsed as one dictionary, kept with the fields read (so verifying a request
 * and signing its response parse its Signature field once). Callers must not mutate the result;
 * copy it first.
 * @throws ValidationException when the field is not a valid dictionary, or repeats what
 * `dictionaryParseOptions(name)` refuses (a label or parameter of Signature-Input or Signature,
 * an algorithm of Content-Digest or Repr-Digest).
 * @internal
 */
export function fieldDictionary(fields: ReadFields, name: string): Dictionary | undefined {
  const lines = fields.lines.get(name);
  if (lines === undefined) return undefined;
  let dict = fields.dictionaries?.get(name);
  if (dict === undefined) {
    dict = parseSharedDictionary(
      lines.length === 1 ? (lines[0] as string) : lines.join(", "),
      dictionaryParseOptions(name),
    );
    fields.dictionaries ??= new Map();
    fields.dictionaries.set(name, dict);
  }
  return dict;
}
