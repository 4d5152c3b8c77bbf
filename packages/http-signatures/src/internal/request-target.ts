/**
 * The target URI of a request as a Node server received it (RFC 9112 §3.2–3.3), or why it
 * cannot be verified. A signature must cover what the server routes on, but the routers parse
 * the target with other rules than the WHATWG parser that derives the components: that parser
 * removes dot segments (also `%2e`), turns `\` into `/`, drops tabs and newlines, decodes and
 * re-encodes hosts, and takes a Host such as `example.com/admin` as part of the path. A
 * signature over `/orders/1` would then verify for `/admin/x/../../orders/1`. Every such target
 * is refused here instead of being normalized into another one.
 */
import { BoundedCache } from "./bounded-cache.ts";
import { detachedString } from "./detached-string.ts";

/**
 * The parts of a target URI that components are derived from, named and spelled as `URL` names
 * and spells them (a `URL` is one).
 */
export interface TargetParts {
  readonly href: string;
  /** The scheme and its colon, `https:`. */
  readonly protocol: string;
  /** The host and a port other than the scheme's default, `example.com:8443`. */
  readonly host: string;
  readonly hostname: string;
  /** "" for the scheme's default port. */
  readonly port: string;
  readonly pathname: string;
  /** The query and its `?`; "" for none or an empty one. */
  readonly search: string;
  readonly hash: string;
  readonly username: string;
  readonly password: string;
}

/** What the request message is built from: its target URI, and its parts or the refusal. */
export interface ReceivedTarget {
  readonly url: string;
  readonly parsed: TargetParts | string;
  /** The request-target as received, when it was in absolute form. */
  readonly absoluteForm?: string;
  /**
   * Why the authority is unknown although the path is not: an origin-form target without a Host
   * field (HTTP/1.0). `url` then has a placeholder authority that only the path and query are
   * read from; `@authority` and `@target-uri` fail with this reason.
   */
  readonly authorityProblem?: string;
}

// RFC 9112 §3.2 makes Host mandatory in HTTP/1.1; HTTP/1.0 may omit it. Any authority filled in
// for it (Node's `localhost`, the server's own name) would let a signature made for that origin
// verify on this server, so none is: only the components that do not name one are derived.
const PLACEHOLDER_AUTHORITY = "localhost";
const NO_HOST = "the request has no Host header, so its authority is unknown";

// RFC 3986 host (IP literal, IPv4 or reg-name) and optional port: nothing that ends the authority.
const AUTHORITY = /^(\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::([0-9]*))?$/;

// Node's legacy `url.parse`, which Express's router applies to an absolute-form target, ends the
// host at any other character and routes the rest of the authority as path (`a.example;x/y`
// routes `;x/y`), and drops a host over 255 characters, so absolute-form authorities are held to
// DNS names and IP literals of that length.
const ABSOLUTE_AUTHORITY = /^(?:\[[0-9A-Fa-f:.]{1,253}\]|[A-Za-z0-9._-]{1,255})(?::[0-9]+)?$/;

const ABSOLUTE_FORM = /^(https?):\/\/([^/?#]*)(.*)$/is;

// RFC 3986 path characters (pchar and "/") without `'`: the legacy parser escapes `'` to `%27`
// in the path (the router then sees `/a%27b`) while the WHATWG parser keeps it, and it escapes
// the characters RFC 3986 forbids anyway (`"`, `{`, `|`, …). On this set both give the path
// as sent.
const ABSOLUTE_PATH = /^(?:[A-Za-z0-9\-._~!$&()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;
// Both parsers escape `'` in the query alike, so `@query` matches what `req.query` decodes.
const ABSOLUTE_QUERY = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/;

// Origin-form targets the WHATWG parser keeps exactly as sent: the path in ABSOLUTE_PATH's set,
// the query in RFC 3986's without `'` (the parser percent-encodes controls, space, `"`, `#`,
// `<`, `>`, `` ` ``, `{`, `}` and non-ASCII in a path, and `'` too in the query of an http(s)
// URI, and leaves a malformed escape be). For these, the URI's parts are cut from the target
// instead of parsed; anything else takes the parser.
const KEPT_TARGET =
  /^(?:[A-Za-z0-9\-._~!$&()*+,;=:@/]|%[0-9A-Fa-f]{2})*(?:\?(?:[A-Za-z0-9\-._~!$&()*+,;=:@/?[\]]|%[0-9A-Fa-f]{2})*)?$/;

const REWRITTEN_PATH =
  "the request path has dot segments or characters a URL parser rewrites, so it cannot be matched to the route";

/**
 * The target of a request received with `target` as its request-target, `host` as its Host
 * field and `protocol` as the scheme of the connection (honouring trust-proxy settings).
 *
 * Origin form (`/orders/42?x=1`): the URI is `protocol://Host target`; without Host its
 * authority is unknown (see `authorityProblem`).
 * Absolute form (`http://a.example/orders/42`, RFC 9112 §3.2.2): the URI is the target as sent;
 * its authority replaces Host, so a Host that differs from it (which RFC 9112 §3.2 forbids a
 * client to send) is refused, because frameworks still answer `req.hostname` from Host and the
 * signature would cover an authority the application never sees. A scheme that differs from
 * the connection's is refused for the same reason (`req.protocol`, `req.secure`).
 * Asterisk form (`OPTIONS *`) and authority form (`CONNECT host:port`) have no path to route on
 * and are refused.
 */
export function receivedTarget(
  protocol: string,
  host: string | undefined,
  target: string,
): ReceivedTarget {
  if (target.startsWith("/")) {
    const authority = host ?? PLACEHOLDER_AUTHORITY;
    const url = `${protocol}://${authority}${target}`;
    const parsed = parseOriginForm(protocol, authority, target, url);
    return host === undefined ? { url, parsed, authorityProblem: NO_HOST } : { url, parsed };
  }
  const absolute = ABSOLUTE_FORM.exec(target);
  if (absolute === null) {
    return {
      url: `${protocol}://${host ?? PLACEHOLDER_AUTHORITY}${target}`,
      parsed:
        "the request target is in neither origin form nor absolute form with an http or https scheme",
    };
  }
  const [, scheme = "", authority = "", rest = ""] = absolute;
  return {
    url: target,
    parsed: parseAbsoluteForm(protocol, host, target, scheme, authority, rest),
    absoluteForm: target,
  };
}

function parseOriginForm(
  protocol: string,
  host: string,
  target: string,
  url: string,
): TargetParts | string {
  const authority = checkAuthority(protocol, host, "the Host header");
  if (typeof authority === "string") return authority;
  if (target.includes("#")) return "the request target has a fragment";
  const query = target.indexOf("?");
  const path = query === -1 ? target : target.slice(0, query);
  if (/[\\\t\n\r]/.test(path) || hasDotSegment(path)) return REWRITTEN_PATH;
  // An accepted authority is known only for http and https, the schemes KEPT_TARGET is for.
  if (authority !== undefined && KEPT_TARGET.test(target)) {
    return {
      // The authority as sent when that is already how the parser spells it (the usual case).
      href: authority.host === host ? url : `${protocol}://${authority.host}${target}`,
      protocol: authority.protocol,
      host: authority.host,
      hostname: authority.hostname,
      port: authority.port,
      pathname: path,
      // The parser gives "" for an empty query (`/a?`) as for none.
      search: query === -1 || query === target.length - 1 ? "" : target.slice(query),
      hash: "",
      username: "",
      password: "",
    };
  }
  try {
    return new URL(url);
  } catch {
    return "the request target is not a valid URI";
  }
}

function parseAbsoluteForm(
  protocol: string,
  host: string | undefined,
  target: string,
  scheme: string,
  authority: string,
  rest: string,
): URL | string {
  if (scheme.toLowerCase() !== protocol.toLowerCase()) {
    return "the request target's scheme differs from the connection's protocol";
  }
  if (authority.includes("@")) return "the request target has userinfo";
  if (!ABSOLUTE_AUTHORITY.test(authority)) {
    return "the request target's authority is not a DNS name or IP literal with an optional port";
  }
  const authorityIssue = checkAuthority(scheme, authority, "the request target's authority");
  if (typeof authorityIssue === "string") return authorityIssue;
  // Hosts are case-insensitive (RFC 3986 §3.2.2); anything else a client sends differently in
  // the two places is a client error or a rewrite on the way.
  if (host === undefined || host.toLowerCase() !== authority.toLowerCase()) {
    return "the Host header differs from the request target's authority (RFC 9112 §3.2)";
  }
  if (rest.includes("#")) return "the request target has a fragment";
  const query = rest.indexOf("?");
  const path = query === -1 ? rest : rest.slice(0, query);
  if (!ABSOLUTE_PATH.test(path) || hasDotSegment(path)) return REWRITTEN_PATH;
  if (query !== -1 && !ABSOLUTE_QUERY.test(rest.slice(query + 1))) {
    return "the request query has characters outside RFC 3986";
  }
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return "the request target is not a valid URI";
  }
  // The rules above are meant to leave the path exactly as sent; checked, not assumed.
  if (url.pathname !== (path === "" ? "/" : path)) return REWRITTEN_PATH;
  return url;
}

/** An accepted authority as the URL parser spells it, with the scheme it was accepted for. */
interface CanonicalAuthority {
  readonly protocol: string;
  readonly host: string;
  readonly hostname: string;
  readonly port: string;
}

/**
 * Why `authority` (host[:port]) cannot be verified, if it cannot: not a host, a port that is
 * not 1–65535 in plain decimal, or a host the URL parser would rewrite (percent-decoded,
 * `2130706433` read as `127.0.0.1`, IPv6 compressed), which would make a signature over one
 * authority verify for another spelling that the application sees as a different host.
 * Otherwise, for http and https, how the URL parser spells it (undefined for other schemes).
 */
function checkAuthority(
  scheme: string,
  authority: string,
  what: string,
): CanonicalAuthority | string | undefined {
  // A server sees few distinct hosts: the URL parse below is done once per accepted one. Keyed
  // by the authority alone, one cache per scheme: no key is built per request.
  const accepted =
    scheme === "http" ? acceptedHttp : scheme === "https" ? acceptedHttps : undefined;
  const known = accepted?.get(authority);
  if (known !== undefined) return known;
  const checked = uncachedAuthority(scheme, authority, what);
  if (typeof checked === "string") return checked;
  if (accepted === undefined) return undefined;
  // Refusals are not kept: the Host field is the client's choice. For the same reason the cache
  // evicts rather than fills up (64 made-up hosts would otherwise shut the server's own out),
  // and keeps a copy: the authority may be cut from a request-target kilobytes long.
  accepted.set(detachedString(authority), checked);
  return checked;
}

const acceptedHttp = new BoundedCache<string, CanonicalAuthority>(64);
const acceptedHttps = new BoundedCache<string, CanonicalAuthority>(64);

function uncachedAuthority(
  scheme: string,
  authority: string,
  what: string,
): CanonicalAuthority | string {
  const match = AUTHORITY.exec(authority);
  if (match === null) return `${what} is not a host[:port]`;
  const [, hostPart = "", port] = match;
  if (port !== undefined && (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65_535)) {
    return `${what} has a port that is not a decimal number from 1 to 65535`;
  }
  let url: URL;
  try {
    url = new URL(`${scheme}://${authority}/`);
  } catch {
    return `${what} is not a valid host`;
  }
  if (url.hostname !== hostPart.toLowerCase()) {
    return `${what} is not in the canonical form a URL parser keeps`;
  }
  return { protocol: url.protocol, host: url.host, hostname: url.hostname, port: url.port };
}

/** Whether a segment of `path` is `.` or `..`, also spelled with `%2e`. */
function hasDotSegment(path: string): boolean {
  // Most paths have neither character: no segments to split out then.
  if (!path.includes(".") && !path.includes("%")) return false;
  return path.split("/").some(isDotSegment);
}

function isDotSegment(segment: string): boolean {
  if (segment.length === 0 || segment.length > 6) return false;
  const s = segment.toLowerCase().replaceAll("%2e", ".");
  return s === "." || s === "..";
}
