import type { Response } from "express";

/** An RFC 9457 problem details body. */
export interface ProblemDetails {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly [extension: string]: unknown;
}

export const PROBLEM_TYPE_BASE = "https://kms.dev/problems/";

/** Sends `problem` as `application/problem+json`. */
export function sendProblem(res: Response, problem: ProblemDetails): void {
  res.status(problem.status).type("application/problem+json").send(JSON.stringify(problem));
}
