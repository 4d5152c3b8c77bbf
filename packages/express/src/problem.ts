import { PROBLEM_CONTENT_TYPE, type ProblemDetails } from "@kms/http-signatures";
import type { Response } from "express";

// The bodies and the type URI base are shared with the Nest layer through @kms/http-signatures.
export { PROBLEM_TYPE_BASE, type ProblemDetails } from "@kms/http-signatures";

/** Sends `problem` as `application/problem+json`. */
export function sendProblem(res: Response, problem: ProblemDetails): void {
  res.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem));
}
