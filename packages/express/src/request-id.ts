import { randomUUID } from "node:crypto";
import type { Request } from "express";
import { existingRequestState, requestState } from "./request-state.ts";

export interface RequestIdOptions {
  /**
   * Take the request id from the client's `x-request-id` when it is well-formed (1–128
   * characters of `A-Z a-z 0-9 _ . -`) instead of choosing one. Off by default: the id names
   * the request's KMS audit events, and a client that chooses it can file its calls under
   * another request's id. Set it only where something the client cannot bypass (a gateway)
   * sets the header.
   */
  readonly trustRequestIdHeader?: boolean;
}

const REQUEST_ID = /^[\w.-]{1,128}$/;

let mismatchWarned = false;

/**
 * The id under which the request's KMS calls are audited (and that `kmsContext` echoes in
 * `x-request-id`): a random UUID, or with `trustRequestIdHeader` the client's well-formed
 * `x-request-id`. Decided once per request, by the first of `verifySignature` and `kmsContext`
 * (or a call of your own) to ask, so the signature check's KMS call and everything after it
 * carry the same id: give both middlewares the same `trustRequestIdHeader`. A later caller
 * that asks with another setting gets the id already decided, and a process warning
 * (`KMS_REQUEST_ID_TRUST_MISMATCH`) once.
 */
export function requestIdOf(req: Request, options: RequestIdOptions = {}): string {
  const trusted = options.trustRequestIdHeader === true;
  const state = requestState(req);
  if (state.requestId !== undefined) {
    if (state.requestIdTrusted !== trusted && !mismatchWarned) {
      mismatchWarned = true;
      process.emitWarning(
        `the request id was decided ${state.requestIdTrusted ? "with" : "without"} ` +
          `trustRequestIdHeader and is read ${trusted ? "with" : "without"} it; give ` +
          "verifySignature and kmsContext the same trustRequestIdHeader",
        { code: "KMS_REQUEST_ID_TRUST_MISMATCH" },
      );
    }
    return state.requestId;
  }
  const sent = trusted ? req.get("x-request-id") : undefined;
  const requestId = sent !== undefined && REQUEST_ID.test(sent) ? sent : randomUUID();
  state.requestId = requestId;
  state.requestIdTrusted = trusted;
  return requestId;
}

/** The request id decided for `req` so far, if any (see `requestIdOf`). */
export function decidedRequestId(req: Request): string | undefined {
  return existingRequestState(req)?.requestId;
}
