/**
 * Where the target URI (`@target-uri`, `@authority`, `@scheme`…) of a received request comes
 * from: the scheme and host the web framework gives the application, so a reverse proxy is
 * trusted exactly when the framework trusts it. Express 5 (`req.protocol`, `req.host`) and
 * Fastify (`request.protocol`, `request.host`) read X-Forwarded-Proto and X-Forwarded-Host only
 * when their trust-proxy setting trusts the peer, and the connection and the Host field
 * otherwise. Shared by @kms/express and @kms/nestjs so both apply one rule.
 */
import type { IncomingMessage } from "node:http";
import { type NodeRequestLike, requestAuthority } from "./node-message.ts";

/** What the framework answers about the request (Express and Fastify name them alike). */
export interface PlatformTarget {
  readonly method?: string | undefined;
  /** Express: the URL before mounting stripped a prefix. */
  readonly originalUrl?: string | undefined;
  /** `http` or `https`, a trusted X-Forwarded-Proto included. */
  readonly protocol?: string | undefined;
  /** `host[:port]`, a trusted X-Forwarded-Host included. */
  readonly host?: string | undefined;
  /** Express's application, whose `trust proxy fn` setting decides `protocol` and `host`. */
  readonly app?: unknown;
}

/** The Node request under the framework's (Express's is the same object; Fastify's `.raw`). */
export type PlatformIncoming = Pick<
  IncomingMessage,
  "method" | "url" | "headers" | "headersDistinct" | "socket"
>;

/** Not a host[:port]: every component derived from the target is then refused (401). */
const UNVERIFIABLE_HOST = "forwarded value not written by the trusted proxy";

/**
 * The request as `nodeRequestMessage` reads it. When the framework answers a forwarded scheme
 * or host, the target is built from it; the header fields a signature covers stay the
 * request's own (`headersDistinct`), Host included.
 *
 * A forwarded value is accepted only when it is the last entry of its field: a proxy that
 * appends puts the client's own value first and its own last, and the framework trusts only
 * that last hop. Fastify answers the last entry; Express answers the first, so under Express a
 * list whose first entry differs from its last makes the target unverifiable rather than
 * letting a signature made for another service verify here.
 */
export function platformRequest(
  platform: PlatformTarget,
  incoming: PlatformIncoming,
): NodeRequestLike {
  const own: NodeRequestLike = {
    method: platform.method ?? incoming.method,
    url: incoming.url,
    originalUrl: platform.originalUrl,
    protocol: platform.protocol,
    headers: incoming.headers,
    headersDistinct: incoming.headersDistinct,
    socket: incoming.socket,
  };
  const forwardedHost = incoming.headers["x-forwarded-host"];
  const forwardedProto = incoming.headers["x-forwarded-proto"];
  if (forwardedHost === undefined && forwardedProto === undefined) return own;
  const tls = (incoming.socket as { encrypted?: unknown } | null)?.encrypted === true;
  const connection = tls ? "https" : "http";
  const protocol = platform.protocol ?? connection;
  // The request's own authority: Host, or HTTP/2's :authority, as Fastify answers without a
  // forwarded value.
  const ownHost = requestAuthority(incoming.headers).host;
  // Fastify answers "" for a request without Host (HTTP/1.0), Express undefined: either is the
  // request's own missing Host, not a forwarded value, so an untrusted field changes nothing.
  const host =
    typeof platform.host === "string" && !(platform.host === "" && ownHost === undefined)
      ? platform.host
      : ownHost;
  // Express answers a trusted list's first entry, the client's, even when it repeats what the
  // connection or Host says ("http, https" behind a TLS proxy): such a list is checked too.
  const trusted = expressTrustsPeer(platform, incoming);
  const hostForwarded =
    forwardedHost !== undefined && (host !== ownHost || (trusted && isList(forwardedHost)));
  const protoForwarded =
    forwardedProto !== undefined &&
    (protocol !== connection || (trusted && isList(forwardedProto)));
  if (!hostForwarded && !protoForwarded) return own;
  const unverifiable =
    (hostForwarded && !isLastEntry(forwardedHost, host)) ||
    (protoForwarded && !isLastEntry(forwardedProto, protocol));
  return { ...own, protocol, headers: { host: unverifiable ? UNVERIFIABLE_HOST : host } };
}

/**
 * Whether Express's `trust proxy` setting trusts the nearest peer, as `req.protocol` and
 * `req.host` decide it; false on other platforms (Fastify answers a list's last entry).
 */
function expressTrustsPeer(platform: PlatformTarget, incoming: PlatformIncoming): boolean {
  const app = platform.app as { get?: (setting: string) => unknown } | null | undefined;
  const trust = typeof app?.get === "function" ? app.get("trust proxy fn") : undefined;
  // Express reads the fields when the setting's answer is truthy (`!trust(…)`): a function of
  // the application's own may answer an address or 1 rather than true.
  return typeof trust === "function" && Boolean(trust(incoming.socket?.remoteAddress, 0));
}

function isList(field: string | readonly string[]): boolean {
  return typeof field === "string"
    ? field.includes(",")
    : field.length > 1 || isList(field[0] ?? "");
}

/** Node joins repeated X-Forwarded-* lines with ", ", so the last entry follows the last comma. */
function isLastEntry(field: string | readonly string[], answered: string | undefined): boolean {
  const line = typeof field === "string" ? field : (field.at(-1) ?? "");
  return answered !== undefined && line.slice(line.lastIndexOf(",") + 1).trim() === answered;
}
