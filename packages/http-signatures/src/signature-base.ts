/**
 * RFC 9421 §2: component identifiers, component values and the signature base.
 */
import { ValidationError } from "@kms/core";
import { isListedAuthority } from "./internal/authorities.ts";
import { BoundedCache } from "./internal/bounded-cache.ts";
import { QS_CONFLICTS, type QsNames, qsProblem, readQsNames } from "./internal/qs-names.ts";
import { RecentCache } from "./internal/recent-cache.ts";
import type { TargetParts } from "./internal/request-target.ts";
import {
  dictionaryParseOptions,
  fieldDictionary,
  type HttpMessage,
  isRequestMessage,
  type ReadFields,
  type RequestMessage,
  readFields,
} from "./message.ts";
import {
  type BareItem,
  type InnerList,
  type Item,
  isInnerList,
  item,
  type Parameters,
  parseDictionary,
  parseStructuredField,
  type StructuredFieldType,
  serializeBareItem,
  serializeInnerList,
  serializeItem,
  serializeStructuredField,
} from "./structured-fields.ts";

/**
 * A covered component: a plain name (`"@method"`, `"content-digest"`) or a name with
 * RFC 9421 parameters (`{ component: "@query-param", name: "Pet" }`,
 * `{ component: "signature", key: "sig1", req: true }`).
 */
export type ComponentSpec =
  | string
  | {
      readonly component: string;
      /** Re-serialize the field as a structured field (`;sf`). */
      readonly sf?: boolean;
      /** Take one member of a dictionary field (`;key="…"`). */
      readonly key?: string;
      /** Wrap each field line as a byte sequence (`;bs`). */
      readonly bs?: boolean;
      /** Take the component from the request a response answers (`;req`). */
      readonly req?: boolean;
      /**
       * The query parameter name for `@query-param`, percent-encoded as RFC 9421 §2.2.8 encodes
       * names and values (`a%20b` for `a b` or `a+b`; letters, digits and `*-._` stay as they are).
       */
      readonly name?: string;
    };

export const DERIVED_COMPONENTS = [
  "@method",
  "@target-uri",
  "@authority",
  "@scheme",
  "@request-target",
  "@path",
  "@query",
  "@query-param",
  "@status",
] as const;

/**
 * Structured types of fields we know, so `;sf` and `;key` can re-serialize them. Callers add
 * their own through `structuredFields`.
 */
export const KNOWN_STRUCTURED_FIELDS: Readonly<Record<string, StructuredFieldType>> = {
  "accept-ch": "list",
  "cache-status": "list",
  "cdn-cache-control": "dictionary",
  "content-digest": "dictionary",
  "repr-digest": "dictionary",
  "want-content-digest": "dictionary",
  "want-repr-digest": "dictionary",
  priority: "dictionary",
  "proxy-status": "list",
  signature: "dictionary",
  "signature-input": "dictionary",
  "accept-signature": "dictionary",
  "example-dict": "dictionary",
};

/** A spec turned into its identifier item and that item's serialization. */
export interface ResolvedComponent {
  readonly item: Item;
  /** `"@query-param";name="Pet"`, as written in the signature base and Signature-Input. */
  readonly identifier: string;
}

const resolvedNames = new BoundedCache<string, ResolvedComponent>(256);

/** The fields of a spec object that its identifier is made of, as they were read. */
interface SpecFields {
  readonly component: string;
  readonly sf: boolean | undefined;
  readonly key: string | undefined;
  readonly bs: boolean | undefined;
  readonly req: boolean | undefined;
  readonly name: string | undefined;
}

interface ResolvedSpec {
  readonly from: SpecFields;
  readonly resolved: ResolvedComponent;
}

const resolvedSpecs = new WeakMap<Exclude<ComponentSpec, string>, ResolvedSpec>();

/**
 * `componentIdentifier` and its serialization, memoized per spec (specs come from middleware
 * options and are reused for every message): the result is shared, so it must not be mutated.
 * @internal
 */
export function resolveComponent(spec: ComponentSpec): ResolvedComponent {
  if (typeof spec === "string") {
    let resolved = resolvedNames.get(spec);
    if (resolved === undefined) {
      resolved = resolvedOf(item(normalizeName(spec)));
      // Bounded and evicting: specs come from configuration, but a caller could pass
      // per-request strings, which must not keep the configured ones out of the cache for good.
      resolvedNames.set(spec, resolved);
    }
    return resolved;
  }
  // A spec object is readonly only to TypeScript: a policy tightened in place (`spec.name =
  // "b"`) must be enforced as it is now, not as it was first resolved.
  const memo = resolvedSpecs.get(spec);
  if (memo !== undefined && sameFields(memo.from, spec)) return memo.resolved;
  const from = specFields(spec);
  const resolved = resolvedOf(fieldsIdentifier(from));
  resolvedSpecs.set(spec, { from, resolved });
  return resolved;
}

function resolvedOf(id: Item): ResolvedComponent {
  return { item: id, identifier: serializeItem(id) };
}

function specFields(spec: Exclude<ComponentSpec, string>): SpecFields {
  const { component, sf, key, bs, req, name } = spec;
  return { component, sf, key, bs, req, name };
}

function sameFields(from: SpecFields, spec: Exclude<ComponentSpec, string>): boolean {
  return (
    from.component === spec.component &&
    from.sf === spec.sf &&
    from.key === spec.key &&
    from.bs === spec.bs &&
    from.req === spec.req &&
    from.name === spec.name
  );
}

/** Turns a spec into the component identifier item it denotes. */
export function componentIdentifier(spec: ComponentSpec): Item {
  if (typeof spec === "string") return item(normalizeName(spec));
  return fieldsIdentifier(specFields(spec));
}

function fieldsIdentifier(spec: SpecFields): Item {
  const params: Record<string, BareItem> = {};
  // Parameter order is part of the identifier; this is the order RFC 9421's examples use.
  if (spec.name !== undefined) params.name = spec.name;
  if (spec.key !== undefined) params.key = spec.key;
  if (spec.sf === true) params.sf = true;
  if (spec.bs === true) params.bs = true;
  if (spec.req === true) params.req = true;
  return item(normalizeName(spec.component), params);
}

function normalizeName(name: string): string {
  if (name.length === 0) throw new ValidationError('"component" must be a non-empty name');
  return name.startsWith("@") ? name : name.toLowerCase();
}

/** `"@query-param";name="Pet"` — the identifier as it appears in the base and the input. */
export function serializeComponentIdentifier(id: Item): string {
  return serializeItem(id);
}

export interface SignatureBaseOptions {
  /** Extra structured field types for `;sf` / `;key`, by lower-case field name. */
  readonly structuredFields?: Readonly<Record<string, StructuredFieldType>>;
  /**
   * How many `&`-separated pieces of a query, empty ones included, the application's query
   * parser reads: a covered `@query-param` in a piece past them is refused (signing throws,
   * verification fails as `components`), since the application never sees it and reads its
   * default instead. Default 1000, the limit of `qs` (`parameterLimit`) and node's
   * `querystring` (`maxKeys`), Express's and Nest's query parsers. Set it to the limit your
   * parser is given, or to `Infinity` for one without (`URLSearchParams`). A positive integer or
   * `Infinity`.
   */
  readonly queryParameterLimit?: number;
}

/** `qs`'s default `parameterLimit` and node's `querystring` default `maxKeys`. */
const DEFAULT_QUERY_PARAMETER_LIMIT = 1000;

/**
 * Refuses a `queryParameterLimit` that is not a positive integer or `Infinity`: a NaN or a
 * negative one would refuse no piece (or every one), and 0 means "no limit" to `querystring`
 * but "read nothing" to `qs`.
 * @throws ValidationException naming the option.
 * @internal
 */
export function assertQueryParameterLimit(limit: unknown): void {
  if (limit === undefined || limit === Number.POSITIVE_INFINITY) return;
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1) {
    const got = typeof limit === "number" ? String(limit) : typeof limit;
    throw new ValidationError(
      `"queryParameterLimit" must be a positive integer or Infinity, got ${got}`,
    );
  }
}

/**
 * What verification adds to deriving components: the authorities the server answers to
 * (`VerificationPolicy.authorities`, checked by `assertAuthorities` before use).
 * @internal
 */
export interface DerivationOptions extends SignatureBaseOptions {
  readonly authorities?: readonly string[] | undefined;
}

/**
 * What a component value is taken from: the message being signed, and for a response, the
 * request it answers (for `;req` components).
 */
export interface ComponentSource {
  readonly message: HttpMessage;
  readonly request?: RequestMessage | undefined;
}

/**
 * The fields of a `ComponentSource`'s messages as one operation read them (`request` when the
 * source has a request).
 * @internal
 */
export interface SourceFields {
  readonly message: ReadFields;
  readonly request: ReadFields | undefined;
}

/** RFC 9110 `method = token`: one or more tchar. */
const METHOD_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function componentError(id: Item, rule: string): ValidationError {
  return new ValidationError(`component ${serializeItem(id)}: ${rule}`);
}

/** A request's target URI parts, with the `url` they belong to. */
interface KnownTarget {
  readonly url: string;
  readonly parts: TargetParts;
}

// One parse per message: verifying a request and signing its response both derive from it.
// Keyed by the message object, which a caller may reuse with another `url` (a client signing
// each request it sends from one object): the parts count only for the `url` they came from.
const parsedUrls = new RecentCache<RequestMessage, KnownTarget>(16);

// Messages whose target cannot be matched to what the server routes on (see nodeRequestMessage):
// only bad requests get an entry, so the map stays empty in normal traffic.
const unverifiableTargets = new WeakMap<RequestMessage, string>();

// Requests whose path is known but whose authority is not (no Host field): only the components
// that name the authority fail, so a signature over `@method` and `@path` still verifies.
const unknownAuthorities = new WeakMap<RequestMessage, string>();

// Request targets received in absolute form: RFC 9421 §2.2.5 makes `@request-target` the
// absolute URI then, not path and query.
const absoluteFormTargets = new WeakMap<RequestMessage, string>();

/**
 * Records a request message's target URI (a `URL`, or its parts cut out without one), or why its
 * target must not be verified: every derived component of the message then fails with that
 * reason. `absoluteForm` is the request-target as received when it was in absolute form;
 * `authorityProblem` is why its authority is unknown, which fails `@authority` and
 * `@target-uri` only.
 */
export function recordTarget(
  message: RequestMessage,
  target: TargetParts | string,
  absoluteForm?: string,
  authorityProblem?: string,
): void {
  if (typeof target === "string") unverifiableTargets.set(message, target);
  else parsedUrls.set(message, { url: String(message.url), parts: target });
  if (absoluteForm !== undefined) absoluteFormTargets.set(message, absoluteForm);
  if (authorityProblem !== undefined) unknownAuthorities.set(message, authorityProblem);
}

function knownAuthority(id: Item, message: RequestMessage): void {
  const problem = unknownAuthorities.get(message);
  if (problem !== undefined) throw componentError(id, problem);
}

/**
 * Whether the request was received without an authority (no Host field, HTTP/1.0): its
 * `@authority` and `@target-uri` cannot be derived, while `@method`, `@path` and `@query` can.
 * @internal
 */
export function hasUnknownAuthority(message: RequestMessage): boolean {
  return unknownAuthorities.has(message);
}

const UNLISTED_AUTHORITY =
  "the request's authority is not one this server answers to (policy.authorities)";

/** Refuses an authority the verifying server does not answer to, when it lists them. */
function listedAuthority(
  id: Item,
  url: TargetParts,
  authorities: readonly string[] | undefined,
): void {
  if (authorities !== undefined && !isListedAuthority(url, authorities)) {
    throw componentError(id, UNLISTED_AUTHORITY);
  }
}

function targetUrl(id: Item, message: RequestMessage): TargetParts {
  const problem = unverifiableTargets.get(message);
  if (problem !== undefined) throw componentError(id, problem);
  const href = message.url;
  if (href instanceof URL) return href;
  const known = parsedUrls.get(message);
  if (known?.url === href) return known.parts;
  let parts: TargetParts;
  try {
    parts = new URL(href);
  } catch {
    throw componentError(id, "the request URL must be absolute");
  }
  // The entry of an earlier `url` goes: the cache answers the first entry of a key it finds.
  parsedUrls.delete(message);
  parsedUrls.set(message, { url: href, parts });
  return parts;
}

/**
 * The target URI of a request to `url` (RFC 9110 §7.1): what is sent, so without a fragment
 * (`new Request(url).url` keeps one, fetch does not send it) and without userinfo, which a
 * sender must not put in a target URI (RFC 9110 §4.2.4) and which would put a password in the
 * signature base.
 */
function targetUri(url: TargetParts): string {
  if (url.hash === "" && url.username === "" && url.password === "" && !url.href.endsWith("#")) {
    return url.href;
  }
  const sent = new URL(url.href);
  sent.hash = "";
  sent.username = "";
  sent.password = "";
  return sent.href;
}

/**
 * The request-target in origin form (RFC 9421 §2.2.5: as in the request line): path and query.
 * An empty query keeps its `?` (`/p?`), as `href` and the request line do: `search` is "" for it
 * as for none, and a signer that keeps the `?` would not match one that drops it.
 */
function originFormTarget(url: TargetParts): string {
  if (url.search !== "") return `${url.pathname}${url.search}`;
  // Any `#` in an href starts the fragment: the parser escapes one elsewhere.
  const href = url.href;
  const fragment = href.indexOf("#");
  const end = fragment === -1 ? href.length : fragment;
  return href.charCodeAt(end - 1) === 0x3f /* ? */ ? `${url.pathname}?` : url.pathname;
}

/**
 * RFC 9421 §2.2.8's encoding of a parsed name or value: WHATWG URL §5.2's
 * application/x-www-form-urlencoded serializing, which keeps ASCII letters, digits and `*-._`
 * and escapes the rest (`~` as `%7E`), with a space as `%20` (the RFC's examples) rather than
 * `+`. `encodeURIComponent` keeps `!'()*~`: `*` is right, the other five are escaped here.
 */
function encodeQueryPart(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()~]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** A parameter name of the query, as RFC 9421 §2.2.8 reads it. */
interface QueryParam {
  /** The re-encoded values of its occurrences, in order. */
  readonly values: string[];
  /** The name decoded, as the WHATWG parser gives it. */
  readonly decoded: string;
  /** Where it first occurs: the index of its `&`-separated piece of the query, empty ones counted. */
  readonly piece: number;
}

interface QueryParams {
  /** The `search` they were parsed from: a caller's URL object can be changed in place. */
  readonly search: string;
  /** By re-encoded name. */
  readonly params: ReadonlyMap<string, QueryParam>;
  /** The encoded names that have a `[` (encoded `%5B`), sorted; see `hasBracketedForm`. */
  readonly bracketed: readonly string[];
  /** The query split at every `&`, empty pieces kept, as qs and node's `querystring` split it. */
  readonly pieces: readonly string[];
  /**
   * Whether qs reads every name as the WHATWG parser does, as a single key: then a name qs
   * reads twice is a repeat seen already, and `qs` is never needed. See `parsedQuery`.
   */
  readonly qsAsWhatwg: boolean;
  /** How `qs` reads the names, worked out when a covered name first needs it. */
  qs: QsNames | undefined;
}

/**
 * A decoded name that qs may read otherwise than the WHATWG parser: with a bracket (a path) or
 * a dot (a path with `allowDots`), or with `%` or U+FFFD, which are all that remain of an escape
 * the WHATWG parser could not decode and qs keeps undecoded.
 */
const QS_SPECIAL_NAME = /[[\].%\uFFFD]/;

// One parse per URL: a signature covering many `@query-param`s would otherwise re-parse the
// whole query for each, quadratic in the size of a hostile request.
const parsedQueries = new RecentCache<TargetParts, QueryParams>(16);

/**
 * The parsed query of `url`: the re-encoded values of each re-encoded name, in order.
 * RFC 9421 §2.2.8 puts the name in the identifier in the same encoded form as the values
 * (`"@query-param";name="fa%C3%A7ade%22%3A%20"`). Matched against the decoded names instead, a
 * signature over `a%20b` would cover the parameter sent as `a%2520b`, and leave `a b` free.
 */
function parsedQuery(url: TargetParts): QueryParams {
  const search = url.search;
  let parsed = parsedQueries.get(url);
  if (parsed?.search !== search) {
    const params = new Map<string, QueryParam>();
    const bracketed: string[] = [];
    // The WHATWG parser splits at `&` and skips empty pieces, so its n-th pair is the n-th
    // non-empty piece: qs reads the same pieces with other rules, and counts the empty ones.
    const pairs = new URLSearchParams(search)[Symbol.iterator]();
    const pieces = search.length > 1 ? search.slice(1).split("&") : [];
    // Without a name that qs may read otherwise (`QS_SPECIAL_NAME`) or a `]` in a value (qs ends
    // a name at `]=`: `a=x]=y` is its name `a=x]`), qs reads each piece under the WHATWG name,
    // as one key: most queries, which then need no model of qs.
    let qsAsWhatwg = true;
    for (let piece = 0; piece < pieces.length; piece++) {
      if (pieces[piece] === "") continue;
      const [decoded, value] = pairs.next().value as [string, string];
      if (qsAsWhatwg && (QS_SPECIAL_NAME.test(decoded) || value.includes("]"))) qsAsWhatwg = false;
      const key = encodeQueryPart(decoded);
      const param = params.get(key);
      if (param === undefined) {
        params.set(key, { values: [encodeQueryPart(value)], decoded, piece });
        if (decoded.includes("[")) bracketed.push(key);
      } else {
        param.values.push(encodeQueryPart(value));
      }
    }
    // Sorted once, so each covered name is looked up in log time: a hostile query may have
    // thousands of names, and a signature cover many parameters.
    bracketed.sort();
    parsed = { search, params, bracketed, pieces, qsAsWhatwg, qs: undefined };
    parsedQueries.set(url, parsed);
  }
  return parsed;
}

/** How qs reads the names of `query`, worked out on first use. */
function qsNamesOf(query: QueryParams): QsNames {
  if (query.qs === undefined) query.qs = readQsNames(query.pieces);
  return query.qs;
}

/**
 * Whether the query has a parameter named `name` followed by `[` (`amount[]`, `amount[0]`,
 * `amount[x]`, however escaped): the `qs` parser (Express 4's default, Express 5's and Nest's
 * `"extended"` query parser) reads `?amount=10&amount[]=1000000` as `amount` = `["10",
 * "1000000"]`, so for such an application the name occurs twice. `name` and the names searched
 * are encoded (`encodeQueryPart`), which escapes `[` as `%5B` and keeps prefixes: a name starts
 * with `amount[` exactly when its encoding starts with `amount%5B`.
 */
function hasBracketedForm(query: QueryParams, name: string): boolean {
  const prefix = `${name}%5B`;
  const names = query.bracketed;
  let low = 0;
  let high = names.length;
  // The first name not below the prefix: names that start with it sort right there.
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((names[middle] as string) < prefix) low = middle + 1;
    else high = middle;
  }
  return low < names.length && (names[low] as string).startsWith(prefix);
}

/**
 * Whether the query also has a name that `name` (encoded) extends with a `[`: the reverse of
 * `hasBracketedForm`. `qs` reads `?a=1&a[]=2` as `a` = `["1", "2"]` and `?a[b]=1&a[b][c]=2` as
 * `a.b` = `["1", { c: "2" }]`, so a signature over `a[]` (or `a[b][c]`) alone would vouch for
 * a parameter that an appended `a=1` (or `a[b]=1`) changes.
 */
function hasPlainPrefix(query: QueryParams, name: string): boolean {
  for (let cut = name.indexOf("%5B"); cut !== -1; cut = name.indexOf("%5B", cut + 3)) {
    if (cut > 0 && query.params.has(name.slice(0, cut))) return true;
  }
  return false;
}

/**
 * An encoded name: RFC 3986 unreserved characters, `*` (which the encoding keeps) and escapes,
 * hex digits in either case. `~` is the escape `%7E` (RFC 3986 §6.2.2.2), which is how the
 * encoding spells it.
 */
const ENCODED_NAME = /^(?:[A-Za-z0-9\-._~*]|%[0-9A-Fa-f]{2})*$/;

/** Characters of an encoded name that `encodeQueryPart` may spell otherwise. */
const NOT_CANONICAL = /[%~]/;

/**
 * `name` as `encodeQueryPart` spells it. RFC 3986 §2.1 and §6.2.2 make `%2b` and `%2B` one
 * escape, `%61` the letter `a` and `~` the escape `%7E`; another implementation may pass a name
 * on as its user wrote it. Decoding and re-encoding keeps each name apart from any other
 * (`a%2520b` stays the name `a%20b`); a name that is not in encoded form is left as it is, and
 * so never found.
 */
function canonicalName(name: string): string {
  if (!NOT_CANONICAL.test(name) || !ENCODED_NAME.test(name)) return name;
  try {
    return encodeQueryPart(decodeURIComponent(name));
  } catch {
    // Escapes that are not UTF-8 (`%FF`): the parser reads them as U+FFFD, never as this name.
    return name;
  }
}

const COMPONENT_PARAMS = new Set(["sf", "key", "bs", "req", "name", "tr"]);
const FIELD_ONLY_PARAMS = ["sf", "key", "bs"] as const;

/** The fields of `source`'s messages as they are now (see `readFields`). */
function readSource(source: ComponentSource): SourceFields {
  return {
    message: readFields(source.message.headers),
    request: source.request === undefined ? undefined : readFields(source.request.headers),
  };
}

/**
 * The value of one identifier, from the message's headers as they are now: always exactly one
 * (RFC 9421 §2.5 gives each covered component one line; a repeated `@query-param` is refused).
 * An array because earlier versions gave one value per occurrence of a repeated parameter.
 * @throws ValidationException naming the component when it cannot be derived from the message,
 * or naming `queryParameterLimit` when that is not a positive integer or `Infinity`.
 */
export function componentValues(
  id: Item,
  source: ComponentSource,
  options: SignatureBaseOptions = {},
): string[] {
  return [derivedValue(id, source, options, readSource(source))];
}

/** `componentValues` within one operation, from the fields it read when it began. */
function derivedValue(
  id: Item,
  source: ComponentSource,
  options: DerivationOptions,
  read: SourceFields,
): string {
  const name = id.value;
  if (typeof name !== "string") throw componentError(id, "identifier must be a string");
  const params = id.params;
  // Most identifiers carry no parameters: skip the iterator and the lookups for them.
  const hasParams = params.size > 0;
  if (hasParams) {
    for (const key of params.keys()) {
      if (!COMPONENT_PARAMS.has(key)) throw componentError(id, `unknown parameter "${key}"`);
    }
    if (params.has("tr")) throw componentError(id, "trailer fields (;tr) are not supported");
  }
  let message: HttpMessage = source.message;
  let fields: ReadFields | undefined = read.message;
  if (hasParams && params.get("req") === true) {
    if (isRequestMessage(source.message) || source.request === undefined) {
      throw componentError(id, ";req needs a response signed in the context of its request");
    }
    message = source.request;
    fields = read.request;
  }

  if (name.charCodeAt(0) === 0x40 /* @ */) {
    if (hasParams) {
      for (const key of FIELD_ONLY_PARAMS) {
        if (params.has(key)) throw componentError(id, `;${key} applies only to header fields`);
      }
    }
    if (hasParams && name !== "@query-param" && params.has("name")) {
      throw componentError(id, ";name applies only to @query-param");
    }
    if (name === "@status") {
      if (isRequestMessage(message)) throw componentError(id, "@status exists only in responses");
      if (!Number.isInteger(message.status) || message.status < 100 || message.status > 999) {
        throw componentError(id, "status must be a three-digit integer");
      }
      return String(message.status);
    }
    if (name === "@signature-params") throw componentError(id, "cannot be covered explicitly");
    if (!isRequestMessage(message)) throw componentError(id, "exists only in requests");
    if (name === "@method") {
      // Still refuses a message whose URL is not absolute, as every other derived component.
      targetUrl(id, message);
      // A method from untyped code may be anything (undefined, "", "GET /x"): name the method
      // rather than fail later on a value that is not a string, or sign a method no server has.
      if (typeof message.method !== "string" || !METHOD_TOKEN.test(message.method)) {
        throw componentError(id, "the method must be an HTTP token (RFC 9110 §9.1)");
      }
      return message.method;
    }
    const url = targetUrl(id, message);
    // The message's own authority, not a `;req` one: a response's verifier (the client) chose
    // the request it sent, so `authorities` is about requests a server receives.
    const authorities = message === source.message ? options.authorities : undefined;
    switch (name) {
      case "@target-uri":
        knownAuthority(id, message);
        listedAuthority(id, url, authorities);
        return targetUri(url);
      case "@authority":
        knownAuthority(id, message);
        listedAuthority(id, url, authorities);
        return url.host.toLowerCase();
      case "@scheme":
        return url.protocol.slice(0, -1).toLowerCase();
      case "@request-target": {
        // In absolute form the request target is the whole URI, its authority included: the
        // URI received, while the message still names it.
        const received = absoluteFormTargets.get(message);
        const absolute = received === message.url ? received : undefined;
        if (absolute !== undefined) listedAuthority(id, url, authorities);
        return absolute ?? originFormTarget(url);
      }
      case "@path":
        return url.pathname === "" ? "/" : url.pathname;
      case "@query":
        return url.search === "" ? "?" : url.search;
      case "@query-param": {
        const wanted = params.get("name");
        if (typeof wanted !== "string") throw componentError(id, 'needs a string ;name="…"');
        const query = parsedQuery(url);
        const canonical = canonicalName(wanted);
        const param = query.params.get(canonical);
        if (param === undefined) {
          throw componentError(
            id,
            ENCODED_NAME.test(wanted)
              ? "parameter is absent from the query"
              : "the name must be given encoded as RFC 9421 §2.2.8 says (a space as %20)",
          );
        }
        // RFC 9421 §2.2.8: a repeated name must not be covered. Applications disagree on which
        // occurrence `?a=1&a=2` means, so a signature over every one (or over one) would vouch
        // for a value the application might not read; an appended `&a=2` must break it, and so
        // must an appended `&a[]=2` or `&[a]=2`, which `qs` reads as a second occurrence.
        if (param.values.length > 1) {
          throw componentError(
            id,
            "parameter name is repeated in the query; RFC 9421 §2.2.8 forbids covering it, cover @query instead",
          );
        }
        // The application's query parser reads only the first `limit` pieces: past them its
        // handler sees no parameter and applies a default, so `?` and 1000 `&` put in front of
        // a signed `dryRun=true` must break the signature.
        const limit = options.queryParameterLimit;
        assertQueryParameterLimit(limit);
        if (param.piece >= (limit ?? DEFAULT_QUERY_PARAMETER_LIMIT)) {
          const reader =
            limit === undefined
              ? `${DEFAULT_QUERY_PARAMETER_LIMIT}, all that qs and node's querystring read`
              : `${limit} that the application's query parser reads`;
          throw componentError(
            id,
            `the parameter is in piece ${param.piece + 1} of the query's &-separated pieces (empty ones counted), past the first ${reader} (queryParameterLimit), so the application would not see it; cover @query instead`,
          );
        }
        // qs reads each name as the WHATWG parser does: a repeat would have been refused above.
        if (query.qsAsWhatwg) return param.values[0] as string;
        // The textual checks first: they hold whatever `depth` qs is given.
        const qsReading = hasBracketedForm(query, canonical)
          ? QS_CONFLICTS.extended
          : hasPlainPrefix(query, canonical)
            ? QS_CONFLICTS.prefix
            : qsProblem(qsNamesOf(query), param.decoded, param.piece);
        if (qsReading !== undefined) {
          throw componentError(
            id,
            `parameter name is repeated in the query (${qsReading}); RFC 9421 §2.2.8 forbids covering it, cover @query instead`,
          );
        }
        return param.values[0] as string;
      }
      default:
        throw componentError(id, "unknown derived component");
    }
  }

  if (params.has("name")) throw componentError(id, ";name applies only to @query-param");
  // Only a source given without its request's fields could leave them unread: read them now.
  fields ??= readFields(message.headers);
  const lines = fields.lines.get(name);
  if (lines === undefined) throw componentError(id, "field is absent from the message");
  const bs = params.get("bs") === true;
  const sf = params.get("sf") === true;
  const key = params.get("key");
  if (bs && (sf || key !== undefined))
    throw componentError(id, ";bs cannot be combined with ;sf or ;key");
  if (bs) {
    return lines
      .map((line) => serializeBareItem(new Uint8Array(fieldLineBytes(id, trimFieldValue(line)))))
      .join(", ");
  }
  const combined =
    lines.length === 1 ? trimFieldValue(lines[0] as string) : lines.map(trimFieldValue).join(", ");
  if (!sf && key === undefined) return combined;
  // Own properties only: a covered "constructor" or "__proto__" must not find Object.prototype's.
  const extra = options.structuredFields;
  const type =
    (extra !== undefined && Object.hasOwn(extra, name) ? extra[name] : undefined) ??
    (Object.hasOwn(KNOWN_STRUCTURED_FIELDS, name) ? KNOWN_STRUCTURED_FIELDS[name] : undefined);
  if (key !== undefined) {
    if (typeof key !== "string") throw componentError(id, ";key must be a string");
    if (type !== undefined && type !== "dictionary")
      throw componentError(id, "field is not a dictionary");
    // Cached per field: the request's Signature is parsed by verification already.
    const member = fieldDictionary(fields, name)?.get(key);
    if (member === undefined) throw componentError(id, "dictionary has no such key");
    return isInnerList(member) ? serializeInnerList(member) : serializeItem(member);
  }
  if (type === undefined) {
    throw componentError(id, "structured type of the field is unknown; add it to structuredFields");
  }
  // Held to the same rules as `;key` above: re-serializing keeps only the last of repeated keys,
  // which would sign one reading of an ambiguous Signature or Content-Digest field.
  const parsed =
    type === "dictionary"
      ? parseDictionary(combined, dictionaryParseOptions(name))
      : parseStructuredField(combined, type);
  return serializeStructuredField(parsed);
}

/**
 * A field line's bytes, as HTTP parsers hand them over: one character per byte (latin1). A
 * character above U+00FF came from a header source that decoded the bytes otherwise; latin1
 * encoding would keep only its low byte, so `;bs` would vouch for "a" and accept "š" (U+0161).
 */
function fieldLineBytes(id: Item, line: string): Buffer {
  for (let i = 0; i < line.length; i++) {
    if (line.charCodeAt(i) > 0xff) {
      throw componentError(id, "a field line has a character above U+00FF, not a byte");
    }
  }
  return Buffer.from(line, "latin1");
}

/**
 * RFC 9421 §2.1 strips leading and trailing spaces and tabs (RFC 9110 OWS), nothing else.
 * `String.prototype.trim` also strips no-break spaces, U+3000, CR, LF and more, which Node
 * passes through in header values: a signature over "v" would then verify "\u00a0v\n".
 */
function trimFieldValue(line: string): string {
  let start = 0;
  let end = line.length;
  while (start < end && (line.charCodeAt(start) === 0x20 || line.charCodeAt(start) === 0x09)) {
    start++;
  }
  while (end > start && (line.charCodeAt(end - 1) === 0x20 || line.charCodeAt(end - 1) === 0x09)) {
    end--;
  }
  return start === 0 && end === line.length ? line : line.slice(start, end);
}

/** The signature parameters of RFC 9421 §2.3. Times are seconds since the epoch. */
export interface SignatureParameters {
  readonly created?: number;
  readonly expires?: number;
  readonly nonce?: string;
  readonly alg?: string;
  readonly keyid?: string;
  readonly tag?: string;
}

/** The `@signature-params` inner list: covered identifiers plus parameters. */
export function signatureParamsList(
  covered: readonly Item[],
  params: SignatureParameters,
): InnerList {
  const p: Parameters = new Map();
  // Order follows the RFC's examples: created, expires, nonce, alg, keyid, tag.
  if (params.created !== undefined) p.set("created", params.created);
  if (params.expires !== undefined) p.set("expires", params.expires);
  if (params.nonce !== undefined) p.set("nonce", params.nonce);
  if (params.alg !== undefined) p.set("alg", params.alg);
  if (params.keyid !== undefined) p.set("keyid", params.keyid);
  if (params.tag !== undefined) p.set("tag", params.tag);
  return { items: covered, params: p };
}

/**
 * Builds the signature base of RFC 9421 §2.5 for the covered components and the given
 * `@signature-params` inner list (as parsed from Signature-Input, so a verifier reproduces the
 * signer's serialization exactly).
 * @throws ValidationException when a component is duplicated or cannot be derived.
 */
export function createSignatureBase(
  signatureParams: InnerList,
  source: ComponentSource,
  options: SignatureBaseOptions = {},
): string {
  return signatureBase(
    signatureParams.items,
    signatureParams.items.map(serializeItem),
    serializeInnerList(signatureParams),
    source,
    options,
    readSource(source),
  );
}

/** Up to this many covered identifiers are checked for repeats without a set. */
const SHORT_LIST = 16;

/**
 * `createSignatureBase` with the identifiers and the inner list already serialized (the signer
 * and the verifier have them at hand), so nothing is serialized twice.
 * @internal
 */
export function signatureBase(
  items: readonly Item[],
  identifiers: readonly string[],
  serializedParams: string,
  source: ComponentSource,
  options: DerivationOptions,
  read: SourceFields,
): string {
  let base = "";
  // A set for long lists, not indexOf: a hostile Signature-Input may list many thousands of
  // identifiers. A short one (every honest one) is scanned, with no set to build per message.
  const seen = items.length > SHORT_LIST ? new Set<string>() : undefined;
  for (let i = 0; i < items.length; i++) {
    const id = items[i] as Item;
    const serialized = identifiers[i] as string;
    if (seen === undefined) {
      for (let j = 0; j < i; j++) {
        if (identifiers[j] === serialized) throw componentError(id, "is covered twice");
      }
    } else {
      if (seen.has(serialized)) throw componentError(id, "is covered twice");
      seen.add(serialized);
    }
    const value = derivedValue(id, source, options, read);
    if (value.includes("\n") || value.includes("\r")) {
      throw componentError(id, "value contains a line break");
    }
    base += `${serialized}: ${value}\n`;
  }
  return `${base}"@signature-params": ${serializedParams}`;
}
