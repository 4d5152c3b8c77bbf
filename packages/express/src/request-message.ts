import type { RequestMessage } from "@kms/http-signatures";
import type { Request } from "express";

/**
 * The neutral message view of an Express request. The target URI is rebuilt from the protocol,
 * the Host header and `originalUrl` (set `trust proxy` when behind a proxy that rewrites them).
 */
export function requestMessage(req: Request, body?: Uint8Array): RequestMessage {
  const url = `${req.protocol}://${req.get("host") ?? "localhost"}${req.originalUrl}`;
  // headersDistinct keeps repeated field lines apart (needed for ;bs).
  return { method: req.method, url, headers: req.headersDistinct, body };
}
