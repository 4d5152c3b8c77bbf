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
import { abortStartedResponse, lateErrorNote } from "./internal/started-response.ts";

// The mapping lives in @kms/http-signatures, so this filter and @kms/express's
// `kmsErrorHandler` send one answer for one error; exported here as before.
export { kmsErrorProblem } from "@kms/http-signatures";

/**
 * Maps `KmsError`s thrown by handlers to `application/problem+json` (e.g.
 * `InvalidCiphertextException` → 403, `NotFoundException` → 404, internal faults → 500 with an
 * opaque body, their stack and causes logged through Nest's `Logger`). Opt in:
 * `KmsModule.forRoot({ mapKmsErrors: true, … })`, `@UseFilters(...)`, or
 * `app.useGlobalFilters(...)`.
 *
 * An error thrown after the response started (a handler that wrote through `@Res()`) cannot be
 * answered: the filter then aborts the response (the connection closes without ending the body,
 * so the client sees a failed exchange, not a complete one) and logs the error, client faults
 * included, since the client never learns of it.
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
    const late = abortStartedResponse(response);
    if (late !== "unsent") {
      this.#logger.error(`${lateErrorNote(late)}\n${describeKmsFault(exception)}`);
      return;
    }
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
