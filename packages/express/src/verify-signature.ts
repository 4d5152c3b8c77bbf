import { isKmsError } from "@kms/core";
import {
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
} from "@kms/http-signatures";
import type { Request, RequestHandler } from "express";
import { PROBLEM_TYPE_BASE, sendProblem } from "./problem.ts";
import { readRawBody } from "./raw-body.ts";
import { requestMessage } from "./request-message.ts";

export type VerifiedSignature = Extract<VerificationResult, { ok: true }>;

const verified = new WeakMap<Request, VerifiedSignature>();

/** The signature `verifySignature` accepted for this request, if any. */
export function verifiedSignatureOf(req: Request): VerifiedSignature | undefined {
  return verified.get(req);
}

export interface VerifySignatureOptions extends VerificationPolicy {
  /** Largest body read when no parser captured it; default 1 MiB. */
  readonly bodyLimit?: number;
}

/**
 * Verifies the request's RFC 9421 signature (and Content-Digest) against `policy`. A failure
 * answers 401 `application/problem+json` naming the failed check, and the handler never runs.
 * Needs the raw body: put `express.json({ verify: captureRawBody })` (or raw/text/urlencoded)
 * before it, or no parser at all.
 * Errors from key lookup or the KMS go to `next(error)`; an unusable body answers 400.
 */
export function verifySignature(policy: VerifySignatureOptions): RequestHandler {
  const limit = policy.bodyLimit ?? 1024 * 1024;
  return async (req, res, next) => {
    let body: Uint8Array;
    try {
      body = await readRawBody(req, limit);
    } catch (error) {
      if (isKmsError(error) && error.clientFault) {
        sendProblem(res, {
          type: `${PROBLEM_TYPE_BASE}signature/body`,
          title: "Request body unusable for signature verification",
          status: error.message.includes("limit") ? 413 : 400,
          detail: error.message,
        });
        return;
      }
      next(error);
      return;
    }
    const result = await verifyMessage(requestMessage(req, body), policy);
    if (!result.ok) {
      res.setHeader("WWW-Authenticate", "Signature");
      sendProblem(res, {
        type: `${PROBLEM_TYPE_BASE}signature/${result.check}`,
        title: "HTTP message signature rejected",
        status: 401,
        detail: result.detail,
        check: result.check,
        ...(result.label !== undefined ? { label: result.label } : {}),
      });
      return;
    }
    verified.set(req, result);
    next();
  };
}
