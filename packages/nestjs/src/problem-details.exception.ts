import type { ProblemDetails } from "@kms/http-signatures";
import { HttpException } from "@nestjs/common";

/**
 * An HTTP error whose body is an RFC 9457 problem. `ProblemDetailsFilter` (registered by
 * `KmsModule`) sends it as `application/problem+json` with `headers`; without that filter Nest
 * still sends the same body and status as plain JSON.
 */
export class ProblemDetailsException extends HttpException {
  readonly problem: ProblemDetails;
  /** Extra response headers, e.g. `WWW-Authenticate: Signature` on a 401. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(problem: ProblemDetails, headers: Readonly<Record<string, string>> = {}) {
    super(problem, problem.status);
    this.problem = problem;
    this.headers = headers;
  }
}
