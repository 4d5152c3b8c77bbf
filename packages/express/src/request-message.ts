import { nodeRequestMessage, platformRequest, type RequestMessage } from "@kms/http-signatures";
import type { Request } from "express";
import { requestState } from "./request-state.ts";

/**
 * The neutral message view of an Express request. The target URI is the one Express itself
 * gives the application: `req.protocol`, `req.host` and `originalUrl`, so with `trust proxy`
 * trusting the peer, X-Forwarded-Proto and X-Forwarded-Host, and never otherwise. A trusted
 * forwarded list whose first entry (the one Express answers, which the client may have sent)
 * is not also its last (the one the trusted proxy appended) makes the target unverifiable.
 */
export function requestMessage(req: Request, body?: Uint8Array): RequestMessage {
  // Verification and response signing share one view, so its URL is parsed once per request.
  const state = requestState(req);
  const known = state.message;
  if (known !== undefined && known.body === body) return known;
  const message = nodeRequestMessage(platformRequest(req, req), body);
  state.message = message;
  return message;
}
