/**
 * Producing Signature-Input / Signature fields (RFC 9421 §3.1, §4).
 */
import { randomBytes } from "node:crypto";
import { ValidationError } from "@kms/core";
import type { MessageSigner } from "./algorithms.ts";
import { computeContentDigest, type DigestAlgorithm } from "./content-digest.ts";
import { type MacInput, takesText } from "./internal/hmac-sha256.ts";
import {
  cachedFields,
  fieldDictionary,
  type HttpMessage,
  isRequestMessage,
  type ReadFields,
  type RequestMessage,
  readFields,
} from "./message.ts";
import {
  type ComponentSpec,
  componentIdentifier,
  resolveComponent,
  type SignatureBaseOptions,
  signatureBase,
  signatureParamsList,
} from "./signature-base.ts";
import {
  type Dictionary,
  type Item,
  serializeBareItem,
  serializeDictionary,
  serializeInnerList,
} from "./structured-fields.ts";

export interface SignOptions extends SignatureBaseOptions {
  readonly signer: MessageSigner;
  /** Signature label; default `sig1`. */
  readonly label?: string;
  /** Covered components, in order. */
  readonly components: readonly ComponentSpec[];
  /** `created`, seconds since the epoch; default now. `false` omits it. */
  readonly created?: number | false;
  /** Seconds after `created` at which the signature expires; omitted by default. */
  readonly expiresIn?: number;
  /** A nonce string, or true for a random one; omitted by default. */
  readonly nonce?: string | boolean;
  readonly tag?: string;
  /** Overrides the signer's keyId in the `keyid` parameter. */
  readonly keyId?: string;
  /** Publish the `alg` parameter; default false (RFC 9421 prefers deriving it from the key). */
  readonly includeAlg?: boolean;
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
  /** For responses: the request being answered, for `;req` components. */
  readonly request?: RequestMessage;
}

export interface SignatureFields {
  readonly label: string;
  /** The full Signature-Input field value (existing labels kept, this one added). */
  readonly signatureInput: string;
  /** The full Signature field value. */
  readonly signature: string;
  /** The signature base that was signed (for debugging; contains only covered values). */
  readonly base: string;
}

const LABEL = /^[a-z*][a-z0-9_\-.*]*$/;

const EMPTY: Dictionary = new Map();

function existingDictionary(fields: ReadFields, name: string): Dictionary {
  try {
    return fieldDictionary(fields, name) ?? EMPTY;
  } catch (error) {
    // The new field is the old one re-serialized plus a member: from an unparsable or ambiguous
    // field that would silently drop a signature or pass the ambiguity on.
    throw new ValidationError(
      `the message's ${name} field must be a dictionary with unique labels and parameters to add a signature`,
      { cause: error },
    );
  }
}

/** `dict` with `label=member` appended, serialized (the label is known to be new). */
function appendMember(dict: Dictionary, label: string, member: string): string {
  return dict.size === 0
    ? `${label}=${member}`
    : `${serializeDictionary(dict)}, ${label}=${member}`;
}

/**
 * Signs `message` and returns Signature-Input and Signature values that keep any signatures
 * already on the message (multiple labels).
 * @throws ValidationException for a bad label, a label already on the message, an existing
 * Signature-Input or Signature that does not parse or repeats a label or a member's parameter,
 * a component the message lacks (or a `@query-param` that is repeated or past
 * `queryParameterLimit`), or a `queryParameterLimit` that is not a positive integer or
 * `Infinity`; errors from the signer (KMS errors) propagate.
 */
export async function signMessage(
  message: HttpMessage,
  options: SignOptions,
): Promise<SignatureFields> {
  return signMessageEagerly(message, options, options.components, options.request);
}

/**
 * The identifier items of a list of specs and their serializations, in order.
 * @internal
 */
export interface CoveredComponents {
  readonly items: readonly Item[];
  readonly identifiers: readonly string[];
}

/**
 * The identifier items of `specs` and their serializations, in order.
 * @internal
 */
export function coveredComponents(specs: readonly ComponentSpec[]): CoveredComponents {
  const items = new Array<Item>(specs.length);
  const identifiers = new Array<string>(specs.length);
  for (let i = 0; i < specs.length; i++) {
    const resolved = resolveComponent(specs[i] as ComponentSpec);
    items[i] = resolved.item;
    identifiers[i] = resolved.identifier;
  }
  return { items, identifiers };
}

const DEFAULT_LABEL = "sig1";

/**
 * `signMessage` that returns the fields directly when the signer offers `signSync`, and a
 * promise otherwise (KMS signers). `components` and `request` are separate arguments, so a
 * caller with per-message values need not copy the options. The request's fields are read as
 * they are now, as `verifyMessage(response, policy, request)` reads them; with
 * `requestAsVerified`, as its verification read them if they are still cached (a server's
 * response to a request whose Node `headersDistinct` do not change), so a server does not
 * parse the request's Signature twice. `resolved`, when given, is `coveredComponents(components)`
 * worked out before (for a list that cannot change).
 * @throws (synchronously, or as a rejection) what `signMessage` rejects with.
 * @internal
 */
export function signMessageEagerly(
  message: HttpMessage,
  options: Omit<SignOptions, "components" | "request">,
  components: readonly ComponentSpec[],
  request: RequestMessage | undefined,
  requestAsVerified = false,
  resolved?: CoveredComponents,
): SignatureFields | Promise<SignatureFields> {
  const label = options.label ?? DEFAULT_LABEL;
  if (label !== DEFAULT_LABEL && !LABEL.test(label))
    throw new ValidationError('"label" must be a lower-case structured field key');
  const now = Math.floor((options.now ?? Date.now)() / 1000);
  const created = options.created === false ? undefined : (options.created ?? now);
  if (
    options.expiresIn !== undefined &&
    (!Number.isInteger(options.expiresIn) || options.expiresIn <= 0)
  ) {
    throw new ValidationError('"expiresIn" must be a positive integer number of seconds');
  }
  const nonce =
    options.nonce === true
      ? randomBytes(16).toString("base64url")
      : typeof options.nonce === "string"
        ? options.nonce
        : undefined;
  const keyid = options.keyId ?? options.signer.keyId;
  // A caller adding a second signature sets the first one's fields on the same headers object:
  // read as they are now, and held for the whole call.
  const source = { message, request: isRequestMessage(message) ? undefined : request };
  // The request first: reading the message may evict the oldest cache entry.
  const requestFields =
    source.request === undefined
      ? undefined
      : (requestAsVerified ? cachedFields : readFields)(source.request.headers);
  const read = { message: readFields(message.headers), request: requestFields };
  const inputs = existingDictionary(read.message, "signature-input");
  const signatures = existingDictionary(read.message, "signature");
  if (inputs.has(label) || signatures.has(label)) {
    throw new ValidationError(`"label" ${label} is already used by a signature on the message`);
  }
  const covered = resolved ?? coveredComponents(components);
  // The parameters of signatureParamsList, in its order, serialized straight to text (each value
  // still goes through the item serializer, which refuses what RFC 8941 cannot carry).
  let params = "";
  if (created !== undefined) params += `;created=${serializeBareItem(created)}`;
  if (options.expiresIn !== undefined) {
    params += `;expires=${serializeBareItem((created ?? now) + options.expiresIn)}`;
  }
  if (nonce !== undefined) params += `;nonce=${serializeBareItem(nonce)}`;
  if (options.includeAlg === true) params += `;alg=${serializeBareItem(options.signer.algorithm)}`;
  if (keyid !== undefined) params += `;keyid=${serializeBareItem(keyid)}`;
  if (options.tag !== undefined) params += `;tag=${serializeBareItem(options.tag)}`;
  // Serialized once: the same text is the @signature-params line and the Signature-Input member.
  const serializedParams = `(${covered.identifiers.join(" ")})${params}`;
  const base = signatureBase(
    covered.items,
    covered.identifiers,
    serializedParams,
    source,
    options,
    read,
  );
  const fields = (signature: Uint8Array): SignatureFields => ({
    label,
    signatureInput: appendMember(inputs, label, serializedParams),
    signature: appendMember(signatures, label, serializeBareItem(signature)),
    base,
  });
  const { signer } = options;
  if (signer.signSync === undefined) return signer.sign(Buffer.from(base, "utf8")).then(fields);
  // Called on the signer: a signer of the caller's own may be a class that reads `this`.
  return fields(
    takesText(signer.signSync)
      ? (signer.signSync as (base: MacInput) => Uint8Array)(base)
      : signer.signSync(Buffer.from(base, "utf8")),
  );
}

/** Serialized `@signature-params` for the given components and parameters. */
export function serializeSignatureParams(
  components: readonly ComponentSpec[],
  params: Parameters<typeof signatureParamsList>[1],
): string {
  return serializeInnerList(signatureParamsList(components.map(componentIdentifier), params));
}

// --- outgoing requests (fetch / undici / webhooks) -------------------------------------

type HeadersInitLike = ConstructorParameters<typeof Headers>[0];

export interface RequestLike {
  readonly method: string;
  readonly url: string | URL;
  /**
   * An array value in a plain object is signed as Node's http client sends it: one field line
   * per element (a Cookie array as one line joined with "; ").
   */
  readonly headers?: HeadersInitLike | Readonly<Record<string, string | readonly string[]>>;
  readonly body?: Uint8Array | string | null | undefined;
}

export interface SignRequestOptions extends Omit<SignOptions, "components" | "request"> {
  /**
   * Covered components; default `@method`, `@target-uri`, plus `content-digest` and
   * `content-type` when present.
   */
  readonly components?: readonly ComponentSpec[];
  /** Content-Digest algorithms to add when there is a body; false to add none. Default sha-256. */
  readonly digest?: readonly DigestAlgorithm[] | false;
}

async function bodyBytes(request: Request | RequestLike): Promise<Uint8Array | undefined> {
  if (typeof Request !== "undefined" && request instanceof Request) {
    if (request.body === null) return undefined;
    return new Uint8Array(await request.clone().arrayBuffer());
  }
  const body = (request as RequestLike).body;
  if (body === undefined || body === null) return undefined;
  return typeof body === "string" ? new TextEncoder().encode(body) : body;
}

/**
 * The request's fields as Node's http client sends them. An array value in a plain object is one
 * field line per element, which a receiver combines with ", " (RFC 9110 §5.3); Node joins a
 * Cookie array with "; " into one line instead, as Node's Headers joins appended Cookie values.
 * `new Headers(record)` would turn `["a", "b"]` into "a,b" (the array's string form), signing a
 * value no receiver sees.
 */
function outgoingHeaders(init: RequestLike["headers"]): Headers {
  // A Headers, or pairs (an array, any iterable): no array values to read.
  if (
    init === undefined ||
    typeof (init as Partial<Iterable<unknown>>)[Symbol.iterator] === "function"
  ) {
    return new Headers(init as HeadersInitLike | undefined);
  }
  const headers = new Headers();
  for (const [name, value] of Object.entries(init as Readonly<Record<string, unknown>>)) {
    if (Array.isArray(value)) {
      for (const line of value) headers.append(name, String(line));
    } else {
      // As the Headers constructor takes a record: each value appended, converted to a string.
      headers.append(name, value as string);
    }
  }
  return headers;
}

/**
 * Signs an outgoing request. Returns the headers to add (Content-Digest when there is a body,
 * Signature-Input, Signature); the request itself is not modified. The method of a `Request` is
 * signed as fetch sends it (fetch upper-cases only DELETE, GET, HEAD, OPTIONS, POST and PUT, so
 * `patch` goes out as `patch`); the method of a plain object is upper-cased, as Node's http
 * client sends it.
 * @throws ValidationException as for `signMessage`; signer errors propagate.
 */
export async function signRequest(
  request: Request | RequestLike,
  options: SignRequestOptions,
): Promise<Record<string, string>> {
  if (typeof request?.method !== "string") {
    throw new ValidationError('"method" must be a string such as "POST"');
  }
  const isFetchRequest = typeof Request !== "undefined" && request instanceof Request;
  return signOutgoing(
    isFetchRequest ? request.method : request.method.toUpperCase(),
    request,
    options,
  );
}

/**
 * `signRequest` with the method as it will be sent.
 * @internal
 */
export async function signOutgoing(
  method: string,
  request: Request | RequestLike,
  options: SignRequestOptions,
): Promise<Record<string, string>> {
  const headers = outgoingHeaders(request.headers);
  const body = await bodyBytes(request);
  const added: Record<string, string> = {};
  if (body !== undefined && options.digest !== false && !headers.has("content-digest")) {
    added["content-digest"] = computeContentDigest(body, options.digest ?? ["sha-256"]);
    headers.set("content-digest", added["content-digest"]);
  }
  const components =
    options.components ??
    (["@method", "@target-uri", "content-digest", "content-type"] as const).filter(
      (c) => c.startsWith("@") || headers.has(c),
    );
  const fields = await signMessage(
    { method, url: request.url, headers, body },
    { ...options, components },
  );
  added["signature-input"] = fields.signatureInput;
  added.signature = fields.signature;
  return added;
}
