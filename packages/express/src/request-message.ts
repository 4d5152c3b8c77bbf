import { nodeRequestMessage, type RequestMessage } from "@kms/http-signatures";
import type { Request } from "express";
import { requestState } from "./request-state.ts";

/**
 * The neutral message view of an Express request. The target URI is rebuilt from the protocol,
 * the Host header and `originalUrl` (set `trust proxy` when behind a proxy that rewrites them).
 */
export function requestMessage(req: Request, body?: Uint8Array): RequestMessage {
  // Verification and response signing share one view, so its URL is parsed once per request.
  const state = requestState(req);
  const known = state.message;
  if (known !== undefined && known.body === body) return known;
  const message = nodeRequestMessage(req, body);
  state.message = message;
  return message;
}
