/**
 * The framework-neutral view of an HTTP message that signing and verification work on. Each
 * framework layer (Express, Nest, fetch) builds one of these; nothing here knows about them.
 */

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

const fieldCache = new WeakMap<object, FieldLines>();

/** Normalizes any header shape to field lines keyed by lower-case name. */
export function fieldLines(headers: HeaderSource): FieldLines {
  const cached = fieldCache.get(headers);
  if (cached !== undefined) return cached;
  const out = new Map<string, string[]>();
  const add = (name: string, value: string): void => {
    const key = name.toLowerCase();
    const list = out.get(key);
    if (list === undefined) out.set(key, [value]);
    else list.push(value);
  };
  if (typeof Headers !== "undefined" && headers instanceof Headers) {
    // Headers joins repeated lines with ", " already; set-cookie is the one it keeps apart.
    for (const [name, value] of headers) {
      if (name === "set-cookie") continue;
      add(name, value);
    }
    for (const cookie of headers.getSetCookie()) add("set-cookie", cookie);
  } else {
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) add(name, String(v));
      else add(name, String(value));
    }
  }
  fieldCache.set(headers, out);
  return out;
}
