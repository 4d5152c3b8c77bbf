import { randomUUID } from "node:crypto";
import { STATUS_CODES } from "node:http";
import { isKmsError } from "@kms/core";
import { faultSummary } from "@kms/demo-shared";
import {
  KmsExceptionFilter,
  kmsContextOf,
  ProblemDetailsException,
  ProblemDetailsFilter,
} from "@kms/nestjs";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Inject,
  Injectable,
  Logger,
} from "@nestjs/common";
import { HttpAdapterHost } from "@nestjs/core";

/** What the demo says for the HTTP errors Nest and its body parser raise, by status. */
const PROBLEMS: Readonly<Record<number, { type: string; title: string; detail: string }>> = {
  400: {
    type: "demo/invalid-input",
    title: "Invalid input",
    detail: "the request is malformed: a body that is not valid JSON, or a bad URL encoding",
  },
  404: { type: "demo/not-found", title: "Not found", detail: "no such route" },
  413: {
    type: "demo/payload-too-large",
    title: "Payload too large",
    detail: "the body exceeds the size limit",
  },
};

/**
 * Answers every exception as `application/problem+json`, like the app's own errors:
 * - an `HttpException` Nest or its body parser raises (invalid JSON, a body over the limit, an
 *   unknown route) with a fixed detail per status, never its message, which repeats the
 *   parser's, i.e. part of the request body; a `ProblemDetailsException` unchanged;
 * - a `KmsError` as @kms/nestjs's `KmsExceptionFilter` answers it (KmsModule registers that
 *   one too, but Nest hands an exception to one filter, chosen by registration order);
 * - anything else with an opaque 500 naming the request id, logged as `faultSummary` (classes
 *   and codes) under that id. Nest's default handler logged the whole error, and a TypeORM
 *   QueryFailedError carries its query's `parameters`: a value that reached SQL unencrypted
 *   (a lookup written without `encryptedWhere`) went to the log in plaintext.
 */
@Catch()
@Injectable()
export class ProblemsFilter implements ExceptionFilter {
  readonly #problems: ProblemDetailsFilter;
  readonly #kmsErrors: KmsExceptionFilter;
  readonly #logger = new Logger(ProblemsFilter.name);

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#problems = new ProblemDetailsFilter(adapterHost);
    this.#kmsErrors = new KmsExceptionFilter(adapterHost);
  }

  catch(exception: unknown, host: ArgumentsHost): void {
    // Outside HTTP (microservices, websockets) there is no response to write.
    if (host.getType() !== "http") throw exception;
    if (exception instanceof HttpException) {
      this.#problems.catch(
        exception instanceof ProblemDetailsException ? exception : problemOf(exception),
        host,
      );
    } else if (isKmsError(exception)) {
      this.#kmsErrors.catch(exception, host);
    } else {
      this.#problems.catch(this.#internalError(exception, host), host);
    }
  }

  /**
   * Logs `exception` as one safe line and returns its answer. The request id is the KMS
   * context's when the request got that far (the `x-request-id` already sent, and the one in
   * the KMS audit trail), else a new one.
   */
  #internalError(exception: unknown, host: ArgumentsHost): ProblemDetailsException {
    const request = host.switchToHttp().getRequest<object>();
    const requestId = kmsContextOf(request)?.requestId ?? randomUUID();
    this.#logger.error(`internal error (request ${requestId}): ${faultSummary(exception)}`);
    return new ProblemDetailsException(
      {
        type: "https://kms.dev/problems/demo/internal",
        title: "Internal error",
        status: 500,
        detail: "the server failed; its log names this request id",
        requestId,
      },
      { "x-request-id": requestId },
    );
  }
}

function problemOf(exception: HttpException): ProblemDetailsException {
  const status = exception.getStatus();
  const known = PROBLEMS[status];
  const text = STATUS_CODES[status] ?? "Error";
  return new ProblemDetailsException({
    type: `https://kms.dev/problems/${known?.type ?? `http/${status}`}`,
    title: known?.title ?? text,
    status,
    detail: known?.detail ?? text,
  });
}
