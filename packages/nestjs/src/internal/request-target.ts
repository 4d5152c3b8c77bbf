/**
 * Where the target URI (`@target-uri`, `@authority`, `@scheme`…) comes from: the scheme and
 * host the platform gives the application, so a reverse proxy is trusted exactly when the
 * platform trusts it. Express 5 (`req.protocol`, `req.host`) and Fastify (`request.protocol`,
 * `request.host`) read X-Forwarded-Proto and X-Forwarded-Host only when their trust-proxy
 * setting trusts the peer, and the connection and the Host field otherwise.
 *
 * Framework-neutral, and would sit best in @kms/http-signatures beside `nodeRequestMessage`
 * (shared with @kms/express, whose `request-message.ts` applies the same rule).
 */
import type { IncomingMessage } from "node:http";
import type { NodeRequestLike } from "@kms/http-signatures";

/** The platform request fields the target is taken from. */
export interface TargetFields {
  readonly method?: string | undefined;
  readonly originalUrl?: string | undefined;
  /** `http` or `https`, a trusted X-Forwarded-Proto included. */
  readonly protocol?: string | undefined;
  /** `host[:port]`, a trusted X-Forwarded-Host included. */
  readonly host?: string | undefined;
  /** Express's application, whose `trust proxy fn` setting decides `protocol` and `host`. */
  readonly app?: unknown;
}

/** Not a host[:port]: every component derived from the target is then refused (401). */
const UNVERIFIABLE_HOST = "forwarded value not written by the trusted proxy";

/**
 * The request as `nodeRequestMessage` reads it. When the platform answers a forwarded scheme or
 * host, the target is built from it; the header fields a signature covers stay the request's
 * own (`headersDistinct`), Host included.
 *
 * A forwarded value is accepted only when it is the last entry of its field: a proxy that
 * appends puts the client's own value first and its own last, and the platform trusts only
 * that last hop. Fastify answers the last entry; Express answers the first, so under Express a
 * list whose first entry differs from its last makes the target unverifiable rather than
 * letting a signature made for another service verify here.
 */
export function targetSource(fields: TargetFields, incoming: IncomingMessage): NodeRequestLike {
  const own: NodeRequestLike = {
    method: fields.method ?? incoming.method,
    url: incoming.url,
    originalUrl: fields.originalUrl,
    protocol: fields.protocol,
    headers: incoming.headers,
    headersDistinct: incoming.headersDistinct,
    socket: incoming.socket,
  };
  const forwardedHost = incoming.headers["x-forwarded-host"];
  const forwardedProto = incoming.headers["x-forwarded-proto"];
  if (forwardedHost === undefined && forwardedProto === undefined) return own;
  const tls = (incoming.socket as { encrypted?: unknown } | null)?.encrypted === true;
  const connection = tls ? "https" : "http";
  const protocol = fields.protocol ?? connection;
  const host = typeof fields.host === "string" ? fields.host : incoming.headers.host;
  // Express answers a trusted list's first entry, the client's, even when it repeats what the
  // connection or Host says ("http, https" behind a TLS proxy): such a list is checked too.
  const trusted = expressTrustsPeer(fields, incoming);
  const hostForwarded =
    forwardedHost !== undefined &&
    (host !== incoming.headers.host || (trusted && isList(forwardedHost)));
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
function expressTrustsPeer(fields: TargetFields, incoming: IncomingMessage): boolean {
  const app = fields.app as { get?: (setting: string) => unknown } | null | undefined;
  const trust = typeof app?.get === "function" ? app.get("trust proxy fn") : undefined;
  return typeof trust === "function" && trust(incoming.socket?.remoteAddress, 0) === true;
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
