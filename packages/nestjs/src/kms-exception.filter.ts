import { isKmsError, KmsError } from "@kms/core";
import {
  describeKmsFault,
  kmsErrorProblem,
  PROBLEM_CONTENT_TYPE,
  type ProblemDetails,
} from "@kms/http-signatures";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  Inject,
  Injectable,
  Logger,
} from "@nestjs/common";
import { HttpAdapterHost } from "@nestjs/core";

// The mapping lives in @kms/http-signatures, so this filter and @kms/express's
// `kmsErrorHandler` send one answer for one error; exported here as before.
export { kmsErrorProblem } from "@kms/http-signatures";

/**
 * Maps `KmsError`s thrown by handlers to `application/problem+json` (e.g.
 * `InvalidCiphertextException` → 403, `NotFoundException` → 404, internal faults → 500 with an
 * opaque body, their stack and causes logged through Nest's `Logger`). Opt in:
 * `KmsModule.forRoot({ mapKmsErrors: true, … })`, `@UseFilters(...)`, or
 * `app.useGlobalFilters(...)`.
 */
@Catch(KmsError)
@Injectable()
export class KmsExceptionFilter implements ExceptionFilter<KmsError> {
  readonly #adapterHost: HttpAdapterHost;
  readonly #logger = new Logger("KmsExceptionFilter");

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#adapterHost = adapterHost;
  }

  catch(exception: KmsError, host: ArgumentsHost): void {
    if (host.getType() !== "http" || !isKmsError(exception)) throw exception;
    const adapter = this.#adapterHost.httpAdapter;
    const response: unknown = host.switchToHttp().getResponse();
    const problem = this.toProblem(exception);
    // The opaque answer tells the client to look in the server logs: this is what it finds.
    // KMS errors carry no key material or plaintext in their messages; other causes are logged
    // by class and code only.
    if (!exception.clientFault) this.#logger.error(describeKmsFault(exception));
    adapter.setHeader(response, "content-type", PROBLEM_CONTENT_TYPE);
    adapter.reply(response, problem, problem.status);
  }

  /** Override to change statuses or wording. */
  protected toProblem(error: KmsError): ProblemDetails {
    return kmsErrorProblem(error);
  }
}
