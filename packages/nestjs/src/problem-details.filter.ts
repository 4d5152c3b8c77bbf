import { PROBLEM_CONTENT_TYPE } from "@kms/http-signatures";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  Inject,
  Injectable,
} from "@nestjs/common";
import { HttpAdapterHost } from "@nestjs/core";
import { ProblemDetailsException } from "./problem-details.exception.ts";

/** Sends a `ProblemDetailsException` as `application/problem+json`, with its headers. */
@Catch(ProblemDetailsException)
@Injectable()
export class ProblemDetailsFilter implements ExceptionFilter<ProblemDetailsException> {
  readonly #adapterHost: HttpAdapterHost;

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#adapterHost = adapterHost;
  }

  catch(exception: ProblemDetailsException, host: ArgumentsHost): void {
    // Outside HTTP (microservices, websockets) there is no response to write.
    if (host.getType() !== "http") throw exception;
    const adapter = this.#adapterHost.httpAdapter;
    const response: unknown = host.switchToHttp().getResponse();
    for (const [name, value] of Object.entries(exception.headers)) {
      adapter.setHeader(response, name, value);
    }
    adapter.setHeader(response, "content-type", PROBLEM_CONTENT_TYPE);
    adapter.reply(response, exception.problem, exception.problem.status);
  }
}
