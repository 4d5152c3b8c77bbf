import { type ResponseSigningOptions, signNodeResponse } from "@kms/http-signatures";
import type { RequestHandler } from "express";
import { kmsContextOf } from "./kms-context.ts";
import { knownRawBody, rawBodyOf } from "./raw-body.ts";
import { decidedRequestId } from "./request-id.ts";
import { requestMessage } from "./request-message.ts";
import { verifiedSignatureOf } from "./verify-signature.ts";

/**
 * `SignOptions` of @kms/http-signatures without `request`, plus `components` (default:
 * `@status`, `content-type` and `content-digest` when present, the request's `@method` and
 * `@target-uri` (`;req`), and the request's verified signature (`"signature";key="<label>";req`)
 * when `verifySignature` accepted one) and `digest` (default sha-256, false for none).
 */
export type SignResponseOptions = ResponseSigningOptions;

/**
 * Signs every response (RFC 9421), bound to the request it answers. The body is buffered until
 * `end` so the Content-Digest and signature cover exactly what is sent; streaming responses are
 * therefore held in memory. A signing failure (e.g. KMS unavailable) answers 500 unsigned
 * rather than sending an unsigned success. A KMS signer's call is audited under the request's id
 * (`kmsContext`'s, or the one `verifySignature` used).
 */
export function signResponse(options: SignResponseOptions): RequestHandler {
  return (req, res, next) => {
    signNodeResponse(res, options, () => ({
      // The same view verification used (and its parsed URL), body-less requests included.
      request: requestMessage(req, rawBodyOf(req) ?? knownRawBody(req)),
      verifiedLabel: verifiedSignatureOf(req)?.label,
      // A KMS signer's call is audited under the request's id wherever the response ends.
      requestId: kmsContextOf(req)?.requestId ?? decidedRequestId(req),
    }));
    next();
  };
}
