import {
  type NodeRequestLike,
  nodeRequestMessage,
  type RequestMessage,
} from "@kms/http-signatures";
import type { Request } from "express";
import { requestState } from "./request-state.ts";

/** Not a host[:port]: every component derived from the target is then refused (401). */
const UNVERIFIABLE_HOST = "several forwarded values";

/**
 * The neutral message view of an Express request. The target URI is the one Express itself
 * gives the application: `req.protocol`, `req.host` and `originalUrl`, so with `trust proxy`
 * trusting the peer, X-Forwarded-Proto and X-Forwarded-Host, and never otherwise. A trusted
 * X-Forwarded-Host or X-Forwarded-Proto that Express took from a list makes the target
 * unverifiable: Express trusts only the last hop, which appends its own value to the list,
 * while it answers the first one, which the client may have sent.
 */
export function requestMessage(req: Request, body?: Uint8Array): RequestMessage {
  // Verification and response signing share one view, so its URL is parsed once per request.
  const state = requestState(req);
  const known = state.message;
  if (known !== undefined && known.body === body) return known;
  const message = nodeRequestMessage(targetSource(req), body);
  state.message = message;
  return message;
}

/**
 * `req` itself when the target comes from the connection and the Host field; otherwise a view
 * whose Host is the forwarded host Express answers. The fields a signature covers stay the
 * request's own (`headersDistinct`), Host included.
 */
function targetSource(req: Request): NodeRequestLike {
  const forwardedHost = req.headers["x-forwarded-host"];
  const forwardedProto = req.headers["x-forwarded-proto"];
  if (forwardedHost === undefined && forwardedProto === undefined) return req;
  // Express 5 answers these from the forwarded fields only when `trust proxy` trusts the peer;
  // a value equal to the one the connection gives is the same either way.
  const protocol = req.protocol;
  const host = req.host;
  const hostForwarded = forwardedHost !== undefined && host !== req.headers.host;
  const connection = (req.socket as { encrypted?: unknown }).encrypted === true ? "https" : "http";
  const protoForwarded = forwardedProto !== undefined && protocol !== connection;
  // A trusted list's first entry is the client's even when it repeats what the connection or
  // Host says ("http, https" behind a TLS proxy), so a trusted list is refused whatever it holds.
  const listed =
    trustsPeer(req) &&
    ((forwardedHost !== undefined && isList(forwardedHost)) ||
      (forwardedProto !== undefined && isList(forwardedProto)));
  if (!hostForwarded && !protoForwarded && !listed) return req;
  return {
    method: req.method,
    originalUrl: req.originalUrl,
    protocol,
    headers: { host: listed ? UNVERIFIABLE_HOST : host },
    headersDistinct: req.headersDistinct,
  };
}

/**
 * Whether Express reads X-Forwarded-* for this request: the `trust proxy` decision for the
 * nearest peer, as `req.protocol` and `req.host` make it. Unknown (no Express app): trusted,
 * which can only refuse a list, never accept one.
 */
function trustsPeer(req: Request): boolean {
  const trust: unknown = req.app?.get("trust proxy fn");
  if (typeof trust !== "function") return true;
  return trust(req.socket.remoteAddress, 0) === true;
}

/** Node joins repeated X-Forwarded-* lines with ", ", so a list is a comma in one value. */
function isList(value: string | readonly string[]): boolean {
  return typeof value === "string"
    ? value.includes(",")
    : value.length > 1 || isList(value[0] ?? "");
}
