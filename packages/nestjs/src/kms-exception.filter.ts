import { isKmsError, KmsError, type KmsErrorCode } from "@kms/core";
import { PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, type ProblemDetails } from "@kms/http-signatures";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  Inject,
  Injectable,
} from "@nestjs/common";
import { HttpAdapterHost } from "@nestjs/core";

/** HTTP status for each KMS error code; client faults not listed answer 400. */
const STATUS: Partial<Record<KmsErrorCode, number>> = {
  AccessDeniedException: 403,
  // The ciphertext is not readable in this request's encryption context: another tenant's
  // data, or altered. Not a 400: the request was well formed, the caller lacks access.
  InvalidCiphertextException: 403,
  IncorrectKeyException: 403,
  NotFoundException: 404,
  AlreadyExistsException: 409,
  ConflictException: 409,
  DisabledException: 409,
  KMSInvalidStateException: 409,
  LimitExceededException: 429,
};

/**
 * Decryption failures stay generic (no oracle telling "wrong tenant" from "altered"). So do
 * denials: their message names the server's principal, the key ARN and the policy statement
 * that denied, which is the operator's business (it is in the audit trail), not the client's.
 */
const GENERIC_DETAIL: Partial<Record<KmsErrorCode, string>> = {
  AccessDeniedException: "the key management service denied an operation this request needs",
  InvalidCiphertextException:
    "the ciphertext cannot be decrypted in this request's encryption context " +
    "(it belongs to another tenant or context, or it was altered)",
  IncorrectKeyException: "the ciphertext was not encrypted under the requested key",
};

/** The problem+json body for a KMS error: status by code, internal faults kept opaque. */
export function kmsErrorProblem(error: KmsError): ProblemDetails {
  if (!error.clientFault) {
    return {
      type: `${PROBLEM_TYPE_BASE}kms/internal`,
      title: "Key management failure",
      status: 500,
      detail: "the key management service failed; see the server logs",
    };
  }
  return {
    type: `${PROBLEM_TYPE_BASE}kms/${error.code}`,
    title: error.code,
    status: STATUS[error.code] ?? 400,
    // Messages of client faults name an argument and a rule, never plaintext or key material.
    detail: GENERIC_DETAIL[error.code] ?? error.message,
    code: error.code,
  };
}

/**
 * Maps `KmsError`s thrown by handlers to `application/problem+json` (e.g.
 * `InvalidCiphertextException` → 403, `NotFoundException` → 404, internal faults → 500 with an
 * opaque body). Opt in: `KmsModule.forRoot({ mapKmsErrors: true, … })`, `@UseFilters(...)`,
 * or `app.useGlobalFilters(...)`.
 */
@Catch(KmsError)
@Injectable()
export class KmsExceptionFilter implements ExceptionFilter<KmsError> {
  readonly #adapterHost: HttpAdapterHost;

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#adapterHost = adapterHost;
  }

  catch(exception: KmsError, host: ArgumentsHost): void {
    if (host.getType() !== "http" || !isKmsError(exception)) throw exception;
    const adapter = this.#adapterHost.httpAdapter;
    const response: unknown = host.switchToHttp().getResponse();
    const problem = this.toProblem(exception);
    adapter.setHeader(response, "content-type", PROBLEM_CONTENT_TYPE);
    adapter.reply(response, problem, problem.status);
  }

  /** Override to change statuses or wording. */
  protected toProblem(error: KmsError): ProblemDetails {
    return kmsErrorProblem(error);
  }
}
