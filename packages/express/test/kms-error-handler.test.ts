import {
  AccessDeniedError,
  AlreadyExistsError,
  ConflictError,
  DisabledError,
  IncorrectKeyError,
  InvalidCiphertextError,
  InvalidKeyUsageError,
  InvalidStateError,
  type KmsError,
  KmsInternalError,
  LimitExceededError,
  NotFoundError,
  UnsupportedOperationError,
  ValidationError,
} from "@kms/core";
import express, { type NextFunction, type Request, type Response } from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { kmsContext, kmsErrorHandler, kmsErrorProblem } from "../src/index.ts";

const KEY_ARN = "arn:aws:kms:local:111122223333:key/11111111-1111-4111-8111-111111111111";

describe("kmsErrorProblem", () => {
  // The statuses and details of @kms/nestjs's kmsErrorProblem: one answer whatever the adapter.
  it.each<[string, KmsError, number, string | undefined]>([
    [
      "InvalidCiphertextError",
      new InvalidCiphertextError("x"),
      403,
      "cannot be decrypted in this request's",
    ],
    [
      "IncorrectKeyError",
      new IncorrectKeyError(KEY_ARN),
      403,
      "not encrypted under the requested key",
    ],
    [
      "AccessDeniedError",
      new AccessDeniedError(`${KEY_ARN} denied`),
      403,
      "denied an operation this request needs",
    ],
    ["NotFoundError", new NotFoundError(`${KEY_ARN} not found`), 404, "does not exist"],
    ["AlreadyExistsError", new AlreadyExistsError("alias/a exists"), 409, undefined],
    ["ConflictError", new ConflictError("changed meanwhile"), 409, undefined],
    ["DisabledError", new DisabledError(`${KEY_ARN} is disabled`), 409, "is disabled"],
    [
      "InvalidStateError",
      new InvalidStateError(`${KEY_ARN} is pending deletion`),
      409,
      "not in a state",
    ],
    ["LimitExceededError", new LimitExceededError("too many"), 429, undefined],
    [
      "InvalidKeyUsageError",
      new InvalidKeyUsageError(`${KEY_ARN} is for signing`),
      400,
      "does not allow this operation",
    ],
    [
      "UnsupportedOperationError",
      new UnsupportedOperationError(`${KEY_ARN} is symmetric`),
      400,
      "does not support",
    ],
  ])(
    "answers %s with its status and a detail that names no key",
    (_name, error, status, detail) => {
      const problem = kmsErrorProblem(error);
      expect(problem).toMatchObject({
        type: `https://kms.dev/problems/kms/${error.code}`,
        title: error.code,
        status,
        code: error.code,
      });
      expect(problem.detail).toContain(detail ?? error.message);
      expect(JSON.stringify(problem)).not.toContain(KEY_ARN);
    },
  );

  it("answers other client faults 400 with their message, which names the argument", () => {
    const problem = kmsErrorProblem(new ValidationError('"keyId" must not be empty'));
    expect(problem).toMatchObject({ status: 400, detail: '"keyId" must not be empty' });
  });

  it("keeps internal faults opaque", () => {
    const problem = kmsErrorProblem(new KmsInternalError("store at /var/kms/keys.db is corrupt"));
    expect(problem).toEqual({
      type: "https://kms.dev/problems/kms/internal",
      title: "Key management failure",
      status: 500,
      detail: "the key management service failed; see the server logs",
    });
  });
});

/** An app whose route throws `thrown`, behind kmsContext, answered by kmsErrorHandler. */
function appThrowing(
  thrown: unknown,
  log: string[],
  after?: (res: Response) => void,
  reached: string[] = [],
) {
  const app = express();
  app.use((req, _res, next) => {
    (req as unknown as { user: object }).user = { id: "u1", tenantId: "acme" };
    next();
  });
  app.use(kmsContext());
  app.get("/fail", async (_req, res) => {
    after?.(res);
    await new Promise((resolve) => setTimeout(resolve, 1));
    throw thrown;
  });
  app.use(kmsErrorHandler({ log: (message) => log.push(message) }));
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    reached.push(String(error));
    if (res.headersSent) res.end();
    else res.status(599).json({ reachedNextHandler: String(error) });
  });
  return app;
}

describe("kmsErrorHandler", () => {
  it("answers a KMS client fault as problem+json and logs nothing", async () => {
    const log: string[] = [];
    const res = await request(appThrowing(new NotFoundError(`${KEY_ARN} not found`), log)).get(
      "/fail",
    );
    expect(res.status).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text)).toMatchObject({ code: "NotFoundException", status: 404 });
    expect(res.text).not.toContain(KEY_ARN);
    expect(log).toEqual([]);
  });

  it("answers an internal fault opaquely and logs it with its causes and the request id", async () => {
    const log: string[] = [];
    // A driver's message can quote the values of the statement that failed.
    const driver = Object.assign(new Error("UNIQUE constraint failed: email = 'ann@example.com'"), {
      code: "SQLITE_CONSTRAINT",
    });
    const fault = new KmsInternalError("the key store could not be read", {
      cause: new ValidationError('"record" was refused by the store', { cause: driver }),
    });
    const res = await request(appThrowing(fault, log)).get("/fail").set("x-request-id", "req-7");
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text)).toEqual(kmsErrorProblem(fault));
    expect(res.text).not.toMatch(/SQLITE|key store|ann@/);
    expect(log).toHaveLength(1);
    // The server's id, the one the response names, not the client's.
    const requestId = String(res.headers["x-request-id"]);
    expect(requestId).not.toBe("req-7");
    expect(log[0]).toMatch(
      new RegExp(`^\\[request ${requestId}\\] KmsInternalError: the key store could not be read`),
    );
    expect(log[0]).toContain('caused by ValidationError: "record" was refused by the store');
    expect(log[0]).toContain("caused by Error (code SQLITE_CONSTRAINT; message not logged)");
    expect(log[0]).not.toContain("ann@example.com");
  });

  it("passes other errors on to the next error handler", async () => {
    const log: string[] = [];
    const res = await request(appThrowing(new RangeError("not ours"), log)).get("/fail");
    expect(res.status).toBe(599);
    expect(res.body).toEqual({ reachedNextHandler: "RangeError: not ours" });
  });

  it("passes a KMS error on when the response head has already left", async () => {
    const reached: string[] = [];
    const partial = (res: Response) => {
      res.status(200).write("partial");
    };
    const res = await request(
      appThrowing(new InvalidCiphertextError("x"), [], partial, reached),
    ).get("/fail");
    // Not a 403 problem attempted on a 200 already under way: the next handler deals with it.
    expect(res.status).toBe(200);
    expect(res.text).toBe("partial");
    expect(reached).toEqual(["InvalidCiphertextError: x"]);
  });
});
