import { type ServerResponse, STATUS_CODES } from "node:http";
import { isKmsError } from "@kms/core";
import { faultSummary } from "@kms/demo-shared";
import {
  type KmsContextRequest,
  KmsExceptionFilter,
  ProblemDetailsException,
  ProblemDetailsFilter,
  requestIdOf,
} from "@kms/nestjs";
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Inject,
  Injectable,
  Logger,
  NotFoundException,
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

/** The part of an Express 5 router layer read to find the methods a path takes. */
interface RouteLayer {
  readonly route?: { readonly methods: Readonly<Record<string, boolean | undefined>> };
  match(path: string): unknown;
}

/**
 * The methods the app's routes take for `path` (HEAD with GET, as Express answers it, and
 * OPTIONS), from the Express router Nest registered them on; none for a path no route matches.
 */
function allowedMethods(express: unknown, path: string): string[] {
  const stack = (express as { router?: { stack?: readonly RouteLayer[] } }).router?.stack ?? [];
  const methods = new Set<string>();
  for (const layer of stack) {
    if (layer.route === undefined || !layer.match(path)) continue;
    for (const [method, routed] of Object.entries(layer.route.methods)) {
      if (routed === true && method !== "_all") methods.add(method.toUpperCase());
    }
  }
  if (methods.size === 0) return [];
  if (methods.has("GET")) methods.add("HEAD");
  return [...[...methods].sort(), "OPTIONS"];
}

/**
 * Answers every exception as `application/problem+json`, like the app's own errors:
 * - an `HttpException` Nest or its body parser raises (invalid JSON, a body over the limit, an
 *   unknown route) with a fixed detail per status, never its message, which repeats the
 *   parser's, i.e. part of the request body; a `ProblemDetailsException` unchanged; Nest's 404
 *   for a method the path's routes do not take is 405 with `Allow` (as the Express demo
 *   answers), and OPTIONS there 204 with `Allow`;
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
  readonly #adapterHost: HttpAdapterHost;
  readonly #logger = new Logger(ProblemsFilter.name);

  constructor(@Inject(HttpAdapterHost) adapterHost: HttpAdapterHost) {
    this.#problems = new ProblemDetailsFilter(adapterHost);
    this.#kmsErrors = new KmsExceptionFilter(adapterHost);
    this.#adapterHost = adapterHost;
  }

  catch(exception: unknown, host: ArgumentsHost): void {
    // Outside HTTP (microservices, websockets) there is no response to write.
    if (host.getType() !== "http") throw exception;
    // Nest's own "no route" (the demo's 404s are ProblemDetailsExceptions).
    if (exception instanceof NotFoundException && this.#methodNotAllowed(host)) return;
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
   * Answers a method the path's routes do not take: 405 naming the ones they do, OPTIONS 204.
   * @returns false when no route matches the path at all, or one takes the method (a handler's
   * own NotFoundException, for a record it did not find): a 404 then.
   */
  #methodNotAllowed(host: ArgumentsHost): boolean {
    const http = host.switchToHttp();
    const request = http.getRequest<{ method: string; path: string }>();
    const allow = allowedMethods(this.#adapterHost.httpAdapter.getInstance(), request.path);
    // OPTIONS is always in `allow` (answered here), so it says nothing about a matched route.
    if (allow.length === 0 || (request.method !== "OPTIONS" && allow.includes(request.method))) {
      return false;
    }
    if (request.method === "OPTIONS") {
      http
        .getResponse<ServerResponse>()
        .writeHead(204, { allow: allow.join(", ") })
        .end();
      return true;
    }
    this.#problems.catch(
      new ProblemDetailsException(
        {
          type: "https://kms.dev/problems/demo/method-not-allowed",
          title: "Method not allowed",
          status: 405,
          detail: `method ${request.method} not allowed here: ${allow.join(", ")}`,
        },
        { allow: allow.join(", ") },
      ),
      host,
    );
    return true;
  }

  /**
   * Logs `exception` as one safe line and returns its answer. The request id is the one the
   * request's KMS calls were audited under, when any were made: `SignatureGuard` decides it on
   * the webhook and admin routes, which have no KMS context (their `x-request-id` is already
   * set), `KmsContextInterceptor` on the patient routes. A request that got to neither gets a
   * new one. The module's `context` options leave the client's `x-request-id` untrusted, as
   * this call does.
   */
  #internalError(exception: unknown, host: ArgumentsHost): ProblemDetailsException {
    const request = host.switchToHttp().getRequest<KmsContextRequest>();
    const requestId = requestIdOf(request);
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
