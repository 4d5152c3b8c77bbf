import { STATUS_CODES } from "node:http";
import type { KmsError } from "@kms/core";
import { kmsErrorProblem, PROBLEM_TYPE_BASE, type ProblemDetails } from "@kms/express";

/**
 * The demo's own failures, by status, in the `type` namespace the NestJS demo uses too:
 * `https://kms.dev/problems/demo/<kind>`. KMS errors keep @kms/express's `kms/<code>` types.
 */
const KINDS: Readonly<Record<number, { readonly type: string; readonly title: string }>> = {
  400: { type: "demo/invalid-input", title: "Invalid input" },
  401: { type: "demo/unauthenticated", title: "Unauthenticated" },
  404: { type: "demo/not-found", title: "Not found" },
  405: { type: "demo/method-not-allowed", title: "Method not allowed" },
  409: { type: "demo/conflict", title: "Conflict" },
  413: { type: "demo/payload-too-large", title: "Payload too large" },
  415: { type: "demo/unsupported-media-type", title: "Unsupported media type" },
};

/** The problem+json body of one of the demo's own failures; `detail` names the rule. */
export function demoProblem(status: number, detail: string): ProblemDetails {
  const kind = KINDS[status] ?? { type: `http/${status}`, title: STATUS_CODES[status] ?? "Error" };
  return { type: `${PROBLEM_TYPE_BASE}${kind.type}`, title: kind.title, status, detail };
}

/** The opaque 500 for a fault that is not a KMS error: the log line is under `requestId`. */
export function internalProblem(requestId: string): ProblemDetails {
  return {
    type: `${PROBLEM_TYPE_BASE}demo/internal`,
    title: "Internal error",
    status: 500,
    detail: "the server failed; its log names this request id",
    requestId,
  };
}

/**
 * `kmsErrorHandler`'s mapping (`kmsErrorProblem`), with one demo-specific status: a clinic whose
 * KMS key is disabled or pending deletion gets 410 Gone rather than 409: every request of the
 * clinic fails alike (crypto-shredding), and no retry of the client's brings the key back, only
 * an operator. The body, with its generic detail, stays the shared one.
 */
export function clinicKmsProblem(error: KmsError): ProblemDetails {
  const problem = kmsErrorProblem(error);
  const keyGone = error.code === "KMSInvalidStateException" || error.code === "DisabledException";
  // An internal fault keeps its opaque 500, whatever its code says.
  return keyGone && error.clientFault ? { ...problem, status: 410 } : problem;
}
