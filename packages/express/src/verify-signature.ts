import { isKmsError, runWithRequestId } from "@kms/core";
import {
  coversField,
  signatureProblem,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessageEagerly,
} from "@kms/http-signatures";
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { serverFault } from "./internal/callback-error.ts";
import { PROBLEM_TYPE_BASE, sendProblem } from "./problem.ts";
import { bodyDecoded, knownRawBody, readRawBody } from "./raw-body.ts";
import { type RequestIdOptions, requestIdOf } from "./request-id.ts";
import { requestMessage } from "./request-message.ts";
import { existingRequestState, requestState } from "./request-state.ts";

const VERIFICATION_CALLBACKS = "keyLookup, the verifier or the nonce store";

export type VerifiedSignature = Extract<VerificationResult, { ok: true }>;

/** The signature `verifySignature` accepted for this request, if any. */
export function verifiedSignatureOf(req: Request): VerifiedSignature | undefined {
  return existingRequestState(req)?.verified;
}

export interface VerifySignatureOptions extends VerificationPolicy, RequestIdOptions {
  /** Largest body read when no parser captured it; default 1 MiB. */
  readonly bodyLimit?: number;
}

/**
 * Verifies the request's RFC 9421 signature (and Content-Digest) against `policy`. A failure
 * answers 401 `application/problem+json` naming the failed check, and the handler never runs.
 * Needs the raw body: put `express.json({ verify: captureRawBody })` (or raw/text/urlencoded)
 * before it, or no parser at all.
 * Errors from key lookup or the KMS go to `next(error)`: a `KmsError` (a disabled or deleted
 * verification key) and a thrown value that is not an Error as a `KmsInternalError` with the
 * original as `cause` (the client cannot fix the server's keys, and Express would read
 * `undefined` or `"route"` as leave to run the handler); an unusable body answers 400.
 * The verification runs inside the request's id (`requestIdOf`, the one `kmsContext` uses;
 * `trustRequestIdHeader` as there), so a KMS verifier's call is audited under it; the id is
 * echoed in `x-request-id`, on a refusal too.
 */
export function verifySignature(policy: VerifySignatureOptions): RequestHandler {
  const limit = policy.bodyLimit ?? 1024 * 1024;
  const conclude = (
    req: Request,
    res: Response,
    next: NextFunction,
    result: VerificationResult,
  ): void => {
    if (!result.ok) {
      res.setHeader("WWW-Authenticate", "Signature");
      sendProblem(res, signatureProblem(result));
      return;
    }
    const state = requestState(req);
    // A kmsContext that ran first (app-wide, this check per route) took the tenant from a
    // header; a signature that leaves the header out does not vouch for that tenant.
    const tenantHeader = state.tenantHeader;
    if (tenantHeader !== undefined && !coversField(result.covered, tenantHeader)) {
      sendProblem(res, {
        type: `${PROBLEM_TYPE_BASE}context/tenant-unsigned`,
        title: "Tenant header not covered by the signature",
        status: 400,
        detail: `the request's tenant came from header ${tenantHeader}, which its signature does not cover`,
      });
      return;
    }
    state.verified = result;
    next();
  };
  // Synchronous when the key lookup and verifier are (local keys): the request then goes on
  // in the same tick, which measurably beats deferring every request by a promise.
  const verify = (
    req: Request,
    res: Response,
    next: NextFunction,
    body: Uint8Array | undefined,
  ): Promise<void> | undefined => {
    let result: VerificationResult | Promise<VerificationResult>;
    try {
      const requestId = requestIdOf(req, policy);
      res.setHeader("x-request-id", requestId);
      result = runWithRequestId(requestId, () =>
        verifyMessageEagerly(requestMessage(req, body), policy),
      );
    } catch (error) {
      next(serverFault(error, VERIFICATION_CALLBACKS));
      return undefined;
    }
    if ("then" in result) {
      return result.then(
        (settled) => conclude(req, res, next, settled),
        (error: unknown) => next(serverFault(error, VERIFICATION_CALLBACKS)),
      );
    }
    conclude(req, res, next, result);
    return undefined;
  };
  const readThenVerify = async (req: Request, res: Response, next: NextFunction) => {
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
    await verify(req, res, next, body);
  };
  return (req, res, next) => {
    // A body-less or already captured request needs no stream read, and no extra await.
    const body = knownRawBody(req);
    if (body !== undefined) return verify(req, res, next, body);
    // Checked without a body: only a signature whose digest needs the encoded bytes then fails.
    return bodyDecoded(req) ? verify(req, res, next, undefined) : readThenVerify(req, res, next);
  };
}
