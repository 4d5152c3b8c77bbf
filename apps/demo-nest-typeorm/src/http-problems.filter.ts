import { STATUS_CODES } from "node:http";
import { ProblemDetailsException, ProblemDetailsFilter } from "@kms/nestjs";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Inject,
  Injectable,
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
 * Answers every `HttpException` as `application/problem+json`, like the app's own errors: without
 * it, body-parser failures (invalid JSON, a body over the limit) and unknown routes get Nest's
 * default JSON, whose message repeats the parser's, i.e. part of the request body. The detail is
 * fixed per status, never the exception's message. `ProblemDetailsException`s go through
 * unchanged.
 */
@Catch(HttpException)
@Injectable()
export class HttpProblemsFilter implements ExceptionFilter<HttpException> {
  readonly #problems: ProblemDetailsFilter;

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#problems = new ProblemDetailsFilter(adapterHost);
  }

  catch(exception: HttpException, host: ArgumentsHost): void {
    this.#problems.catch(
      exception instanceof ProblemDetailsException ? exception : problemOf(exception),
      host,
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
