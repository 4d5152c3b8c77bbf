/**
 * RFC 9457 problem details for signature failures, shared by the framework layers so Express
 * and Nest answer the same bodies.
 */
import { ValidationError } from "@kms/core";
import type { VerificationResult } from "./verify.ts";

/** An RFC 9457 problem details body. */
export interface ProblemDetails {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

/** Prefix of every problem `type` URI this project emits. */
export const PROBLEM_TYPE_BASE = "https://kms.dev/problems/";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/**
 * The 401 body for a failed verification: `type` ends in the failed check, `check` names it,
 * `detail` names the rule (never header values or key material).
 */
export function signatureProblem(
  failure: Extract<VerificationResult, { ok: false }>,
): ProblemDetails {
  return {
    type: `${PROBLEM_TYPE_BASE}signature/${failure.check}`,
    title: "HTTP message signature rejected",
    status: 401,
    detail: failure.detail,
    check: failure.check,
    ...(failure.label !== undefined ? { label: failure.label } : {}),
  };
}

/**
 * The 500 body sent instead of a response that could not be signed. Only a ValidationError's
 * message (which names an argument and a rule) is shown; anything else stays generic.
 */
export function responseSigningProblem(error: unknown): ProblemDetails {
  return {
    type: `${PROBLEM_TYPE_BASE}signature/response-signing`,
    title: "Response could not be signed",
    status: 500,
    detail: error instanceof ValidationError ? error.message : "the signer failed",
  };
}
