import { PROBLEM_CONTENT_TYPE } from "@kms/http-signatures";
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
import { ProblemDetailsException } from "./problem-details.exception.ts";

/**
 * Sends a `ProblemDetailsException` as `application/problem+json`, with its headers. One thrown
 * after the response started is logged (its problem, which was meant for the client anyway) and
 * the response aborted, as `KmsExceptionFilter` does.
 */
@Catch(ProblemDetailsException)
@Injectable()
export class ProblemDetailsFilter implements ExceptionFilter<ProblemDetailsException> {
  readonly #adapterHost: HttpAdapterHost;
  readonly #logger = new Logger("ProblemDetailsFilter");

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#adapterHost = adapterHost;
  }

  catch(exception: ProblemDetailsException, host: ArgumentsHost): void {
    // Outside HTTP (microservices, websockets) there is no response to write.
    if (host.getType() !== "http") throw exception;
    const adapter = this.#adapterHost.httpAdapter;
    const response: unknown = host.switchToHttp().getResponse();
    const late = abortStartedResponse(response);
    if (late !== "unsent") {
      this.#logger.error(`${lateErrorNote(late)}\n${describeProblem(exception)}`);
      return;
    }
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    adapter.setHeader(response, "content-type", PROBLEM_CONTENT_TYPE);
    adapter.reply(response, exception.problem, exception.problem.status);
  }
}

/** The exception's problem (written for the client, so safe to log) and where it was thrown. */
function describeProblem(exception: ProblemDetailsException): string {
  const { status, type, detail } = exception.problem;
  const summary = `${exception.name}: ${status} ${type}: ${detail}`;
  const frames = exception.stack?.split("\n").slice(1) ?? [];
  return [summary, ...frames].join("\n");
}
