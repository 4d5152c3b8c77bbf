/**
 * `createSignedFetch`: a fetch that signs every request it sends, each redirect hop included.
 *
 * fetch's own redirect handling (`redirect: "follow"`) re-sends a request's headers to the
 * redirect target: a signature made for one URL would reach another URL, possibly on another
 * origin that can replay it against the first. So the wrapper follows redirects itself, with
 * WHATWG Fetch's rules ("HTTP-redirect fetch"), and signs each hop for its own URL.
 */
import { ValidationError } from "@kms/core";
import { type SignRequestOptions, signOutgoing } from "./sign.ts";

type FetchInput = Parameters<typeof fetch>[0];

/** Decides whether to follow a redirect from `from` to `target`, on another origin. */
export type CrossOriginRedirectRule = (target: URL, from: URL) => boolean;

export interface SignedFetchOptions extends Omit<SignRequestOptions, "nonce"> {
  /**
   * true for a fresh random nonce on every request and redirect hop. No fixed string, unlike
   * `signRequest`: each request would reuse it.
   */
  readonly nonce?: boolean;
  /** The fetch to wrap (undici's or a test double); default globalThis.fetch. */
  readonly fetch?: typeof fetch;
  /**
   * Whether `redirect: "follow"` (fetch's default) follows a redirect to another origin
   * (scheme, host or port), signing the request anew for it: `true`, or a rule given the
   * target and the URL redirected from. Default `false`: such a redirect rejects with a
   * TypeError. Redirects within one origin are followed, each signed for its own URL.
   */
  readonly allowCrossOriginRedirect?: boolean | CrossOriginRedirectRule;
}

/** One request of a redirect chain, before it is signed. */
interface Hop {
  readonly method: string;
  readonly url: URL;
  /** The caller's fields, as fetch would carry them to this hop; no signature of ours. */
  readonly headers: Headers;
  readonly body: Uint8Array | undefined;
}

/** fetch's redirect statuses; a 300 or 304 is returned as it is. */
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** fetch's limit: the request after the 20th redirect is a network error. */
const MAX_REDIRECTS = 20;

/**
 * Removed when a redirect turns the request into a GET without its body: fetch's
 * request-body-header names, and the digests of the body that is no longer sent.
 */
const BODY_FIELDS = [
  "content-encoding",
  "content-language",
  "content-location",
  "content-type",
  "content-digest",
  "repr-digest",
] as const;

/** Credentials fetch removes when a redirect leaves the origin (as undici does). */
const ORIGIN_CREDENTIAL_FIELDS = [
  "authorization",
  "proxy-authorization",
  "cookie",
  "host",
] as const;

/** Signatures made for the first URL, which the caller may have set: never carried on. */
const SIGNATURE_FIELDS = ["signature", "signature-input"] as const;

/** Outside printable ASCII: a Location sent as raw bytes, not percent-encoded. */
const NOT_ENCODED = /[^\x20-\x7e]/;

/**
 * A Location field as fetch reads it. Field values reach JavaScript one byte per character
 * (Latin-1); a server that sends a non-ASCII URL unencoded sends UTF-8, so fetch decodes such a
 * value as UTF-8 first (undici's `responseLocationURL`). Taken as Latin-1, `/café` would become
 * `/cafÃ©` and the next hop would go to `/caf%C3%83%C2%A9`, not where fetch goes.
 */
function locationText(location: string): string {
  if (!NOT_ENCODED.test(location)) return location;
  const bytes = new Uint8Array(location.length);
  for (let i = 0; i < location.length; i++) bytes[i] = location.charCodeAt(i) & 0xff;
  return new TextDecoder().decode(bytes);
}

function crossOriginRule(
  option: SignedFetchOptions["allowCrossOriginRedirect"],
): CrossOriginRedirectRule {
  if (option === undefined || option === false) return () => false;
  if (option === true) return () => true;
  if (typeof option === "function") return option;
  throw new ValidationError('"allowCrossOriginRedirect" must be a boolean or a function');
}

/**
 * The request fetch would make after `response`, or undefined when `response` is not a
 * redirect to follow (not a redirect status, or no Location).
 * @throws TypeError where fetch answers a network error, and for a cross-origin redirect
 * `allowCrossOrigin` refuses.
 */
function nextHop(
  response: Response,
  hop: Hop,
  redirects: number,
  allowCrossOrigin: CrossOriginRedirectRule,
): Hop | undefined {
  const { status } = response;
  if (!REDIRECT_STATUSES.has(status)) return undefined;
  const location = response.headers.get("location");
  if (location === null) return undefined;
  let url: URL;
  try {
    url = new URL(locationText(location), hop.url);
  } catch (cause) {
    throw new TypeError(`signed fetch: the redirect's Location is not a URL`, { cause });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`signed fetch: a redirect to a ${url.protocol} URL is not followed`);
  }
  if (redirects === MAX_REDIRECTS) {
    throw new TypeError(`signed fetch: redirect count exceeded (${MAX_REDIRECTS})`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new TypeError("signed fetch: a redirect to a URL with credentials is not followed");
  }
  const headers = new Headers(hop.headers);
  for (const name of SIGNATURE_FIELDS) headers.delete(name);
  if (url.origin !== hop.url.origin) {
    // The rule gets copies: what it does to them does not change where the request goes.
    if (!allowCrossOrigin(new URL(url), new URL(hop.url))) {
      throw new TypeError(
        `signed fetch: a redirect from ${hop.url.origin} to another origin (${url.origin}) is not followed; allowCrossOriginRedirect permits it`,
      );
    }
    for (const name of ORIGIN_CREDENTIAL_FIELDS) headers.delete(name);
  }
  const becomesGet =
    ((status === 301 || status === 302) && hop.method === "POST") ||
    (status === 303 && hop.method !== "GET" && hop.method !== "HEAD");
  if (!becomesGet) return { method: hop.method, url, headers, body: hop.body };
  for (const name of BODY_FIELDS) headers.delete(name);
  return { method: "GET", url, headers, body: undefined };
}

/** The caller's fetch options other than those each hop sets itself. */
type PassedOptions = Omit<RequestInit, "method" | "headers" | "body" | "redirect" | "signal">;

/**
 * What `init` holds besides the request itself (`credentials`, `keepalive`, an undici
 * `dispatcher` for a proxy or agent…), passed on to the wrapped fetch on every hop: the
 * `Request` the wrapper builds from `init` keeps only what the Fetch standard defines.
 */
function passedOptions(init: RequestInit | undefined): PassedOptions {
  if (init === undefined) return {};
  const {
    method: _method,
    headers: _headers,
    body: _body,
    redirect: _redirect,
    signal: _signal,
    ...rest
  } = init;
  return rest;
}

/** Releases a redirect's connection; its body is not read. */
async function discard(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

/**
 * A fetch that signs every request before sending it, so two services (or a webhook sender)
 * talk signed without touching each call site.
 *
 * With `redirect: "follow"` (the default), redirects are followed here, as fetch would follow
 * them (a 303, and a 301 or 302 after a POST, become a GET without the body and its fields; at
 * most 20), and each hop is signed anew for its URL; the caller's Signature and Signature-Input,
 * made for the first URL, are not carried on. A redirect to another origin is refused unless
 * `allowCrossOriginRedirect` permits it; Authorization, Proxy-Authorization and Cookie are then
 * removed, as fetch removes them. `redirect: "manual"` and `"error"` go to the wrapped fetch
 * as they are.
 * @throws ValidationException from signing, or for an `allowCrossOriginRedirect` that is
 * neither a boolean nor a function; a redirect that is not followed (to another origin unless
 * permitted, past 20, to a URL that is not http(s) or has credentials) rejects with a TypeError,
 * as fetch rejects; network errors propagate from fetch.
 */
export function createSignedFetch(options: SignedFetchOptions): typeof fetch {
  const inner = options.fetch ?? globalThis.fetch;
  // One nonce string would go out on every request and every redirect hop, and a verifier
  // with a nonce store refuses each after the first: the signer draws them (`nonce: true`).
  if (typeof options.nonce === "string") {
    throw new ValidationError('"nonce" must be true or omitted: a fixed nonce would be reused');
  }
  const allowCrossOrigin = crossOriginRule(options.allowCrossOriginRedirect);

  const send = async (
    hop: Hop,
    redirect: Request["redirect"],
    signal: AbortSignal,
    passed: PassedOptions,
  ): Promise<Response> => {
    const { method, url, body } = hop;
    // `method` is what `inner` sends (fetch's normalization is already applied).
    const added = await signOutgoing(
      method,
      { method, url: url.href, headers: hop.headers, body },
      options,
    );
    const headers = new Headers(hop.headers);
    for (const [name, value] of Object.entries(added)) headers.set(name, value);
    return inner(url.href, {
      ...passed,
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      redirect,
      signal,
    });
  };

  const signed = async (input: FetchInput, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const body = request.body === null ? undefined : new Uint8Array(await request.arrayBuffer());
    let hop: Hop = {
      method: request.method,
      url: new URL(request.url),
      headers: new Headers(request.headers),
      body,
    };
    const passed = passedOptions(init);
    if (request.redirect !== "follow") {
      return send(hop, request.redirect, request.signal, passed);
    }
    for (let redirects = 0; ; redirects++) {
      const response = await send(hop, "manual", request.signal, passed);
      let next: Hop | undefined;
      try {
        next = nextHop(response, hop, redirects, allowCrossOrigin);
      } catch (error) {
        await discard(response);
        throw error;
      }
      if (next === undefined) {
        // As fetch reports a followed redirect (the response's URL is the last hop's already).
        if (redirects > 0) Object.defineProperty(response, "redirected", { value: true });
        return response;
      }
      await discard(response);
      hop = next;
    }
  };
  return signed as typeof fetch;
}
