// The one mapping from KmsError to problem+json and to the log line, used by @kms/express's
// kmsErrorHandler and @kms/nestjs's KmsExceptionFilter.
import {
  AccessDeniedError,
  AlreadyExistsError,
  ConflictError,
  DisabledError,
  DryRunOperationError,
  IncorrectKeyError,
  InvalidAliasNameError,
  InvalidArnError,
  InvalidCiphertextError,
  InvalidGrantIdError,
  InvalidGrantTokenError,
  InvalidKeyUsageError,
  InvalidMacError,
  InvalidMarkerError,
  InvalidSignatureError,
  InvalidStateError,
  KeyStoreConflictError,
  type KmsError,
  type KmsErrorCode,
  KmsInternalError,
  LimitExceededError,
  MalformedPolicyDocumentError,
  NotFoundError,
  RootKeyError,
  TagError,
  UnsupportedOperationError,
  ValidationError,
} from "@kms/core";
import { describe, expect, it } from "vitest";
import { describeKmsFault, kmsErrorProblem, PROBLEM_TYPE_BASE } from "../src/index.ts";

const KEY_ARN = "arn:aws:kms:local:111122223333:key/11111111-1111-4111-8111-111111111111";
/** In every message: a fixed detail must not carry it, a message-as-detail must. */
const MESSAGE = `"keyId" ${KEY_ARN} breaks the rule`;

type ErrorClass = new (message: string, options?: { readonly cause?: unknown }) => KmsError;

/**
 * Every code core has, with what the client is sent: `fixed` a detail of our own (the message
 * names keys or principals, or would tell another tenant's data from altered data), `message`
 * the error's message (it names an argument and a rule), `internal` the opaque 500. A `Record`
 * over `KmsErrorCode`, so a code added to core fails to compile here until it is placed.
 */
const EXPECTED: Record<
  KmsErrorCode,
  { readonly make: ErrorClass; readonly status: number; readonly detail: string | "message" }
> = {
  AccessDeniedException: {
    make: AccessDeniedError,
    status: 403,
    detail: "the key management service denied an operation this request needs",
  },
  InvalidCiphertextException: {
    make: InvalidCiphertextError,
    status: 403,
    detail:
      "the ciphertext cannot be decrypted in this request's encryption context " +
      "(it belongs to another tenant or context, or it was altered)",
  },
  IncorrectKeyException: {
    make: IncorrectKeyError,
    status: 403,
    detail: "the ciphertext was not encrypted under the requested key",
  },
  NotFoundException: {
    make: NotFoundError,
    status: 404,
    detail: "a key this request needs does not exist",
  },
  AlreadyExistsException: { make: AlreadyExistsError, status: 409, detail: "message" },
  ConflictException: { make: ConflictError, status: 409, detail: "message" },
  DisabledException: {
    make: DisabledError,
    status: 409,
    detail: "a key this request needs is disabled",
  },
  KMSInvalidStateException: {
    make: InvalidStateError,
    status: 409,
    detail:
      "a key this request needs is not in a state that allows this operation (for example, pending deletion)",
  },
  LimitExceededException: { make: LimitExceededError, status: 429, detail: "message" },
  InvalidKeyUsageException: {
    make: InvalidKeyUsageError,
    status: 400,
    detail: "a key this request needs does not allow this operation",
  },
  UnsupportedOperationException: {
    make: UnsupportedOperationError,
    status: 400,
    detail: "a key this request needs does not support this operation in its current state or type",
  },
  DryRunOperationException: { make: DryRunOperationError, status: 400, detail: "message" },
  InvalidAliasNameException: { make: InvalidAliasNameError, status: 400, detail: "message" },
  InvalidArnException: { make: InvalidArnError, status: 400, detail: "message" },
  InvalidGrantIdException: { make: InvalidGrantIdError, status: 400, detail: "message" },
  InvalidGrantTokenException: { make: InvalidGrantTokenError, status: 400, detail: "message" },
  InvalidMarkerException: { make: InvalidMarkerError, status: 400, detail: "message" },
  KMSInvalidMacException: { make: InvalidMacError, status: 400, detail: "message" },
  KMSInvalidSignatureException: { make: InvalidSignatureError, status: 400, detail: "message" },
  MalformedPolicyDocumentException: {
    make: MalformedPolicyDocumentError,
    status: 400,
    detail: "message",
  },
  TagException: { make: TagError, status: 400, detail: "message" },
  ValidationException: { make: ValidationError, status: 400, detail: "message" },
  KMSInternalException: { make: KmsInternalError, status: 500, detail: "internal" },
  RootKeyError: { make: RootKeyError, status: 500, detail: "internal" },
  KeyStoreConflictError: { make: KeyStoreConflictError, status: 500, detail: "internal" },
};

const OPAQUE = {
  type: `${PROBLEM_TYPE_BASE}kms/internal`,
  title: "Key management failure",
  status: 500,
  detail: "the key management service failed; see the server logs",
};

const CASES = Object.entries(EXPECTED).map(([code, expected]) => ({ code, ...expected }));

describe("kmsErrorProblem", () => {
  it.each(CASES.filter((c) => c.detail !== "internal"))(
    "answers $code $status as kms/$code",
    ({ code, make, status, detail }) => {
      const error = new make(MESSAGE, { cause: new Error(`driver said ${KEY_ARN}`) });
      expect(error.code).toBe(code);
      expect(kmsErrorProblem(error)).toEqual({
        type: `${PROBLEM_TYPE_BASE}kms/${code}`,
        title: code,
        status,
        detail: detail === "message" ? MESSAGE : detail,
        code,
      });
    },
  );

  it.each(CASES.filter((c) => c.detail === "internal"))(
    "answers $code, an internal fault, with an opaque 500 that names neither code nor message",
    ({ code, make }) => {
      const error = new make(`store at /var/kms/keys.db is corrupt: ${KEY_ARN}`);
      expect(error.clientFault).toBe(false);
      const problem = kmsErrorProblem(error);
      expect(problem).toEqual(OPAQUE);
      const sent = JSON.stringify(problem);
      for (const internal of [code, KEY_ARN, "/var/kms", "corrupt"]) {
        expect(sent).not.toContain(internal);
      }
    },
  );

  it("sends the fixed details without the message, which names the key", () => {
    for (const { make, detail } of CASES) {
      if (detail === "message") continue;
      expect(JSON.stringify(kmsErrorProblem(new make(MESSAGE)))).not.toContain(KEY_ARN);
    }
  });

  it("answers an error from untyped code that is not a KmsError opaquely", () => {
    // No `clientFault: true`, so nothing says its message is fit for a client.
    const notKms = new Error(`SELECT secret FROM t WHERE arn = '${KEY_ARN}'`) as unknown;
    expect(kmsErrorProblem(notKms as KmsError)).toEqual(OPAQUE);
  });
});

/** An error shaped like a database driver's: a class name, a code, a message quoting values. */
function driverError(message: string, code?: unknown, name = "SqliteError"): Error {
  const error = new Error(message);
  error.name = name;
  return code === undefined ? error : Object.assign(error, { code });
}

const SECRET_VALUE = "078-05-1120";

describe("describeKmsFault", () => {
  it("is the stack alone when there is no cause", () => {
    const fault = new KmsInternalError("the key store could not be read");
    expect(describeKmsFault(fault)).toBe(fault.stack);
  });

  it("keeps a KMS cause's name and message, and drops any other cause's message", () => {
    const driver = driverError(
      `UNIQUE constraint failed: ssn = '${SECRET_VALUE}'`,
      "SQLITE_CONSTRAINT",
    );
    const fault = new KmsInternalError("the key store could not be written", {
      cause: new ValidationError('"record" was refused by the store', { cause: driver }),
    });
    const lines = describeKmsFault(fault).split("\n");
    expect(lines[0]).toBe("KmsInternalError: the key store could not be written");
    expect(lines).toContain('caused by ValidationError: "record" was refused by the store');
    expect(lines.at(-1)).toBe("caused by SqliteError (code SQLITE_CONSTRAINT; message not logged)");
    expect(lines.join("\n")).not.toContain(SECRET_VALUE);
    expect(lines.join("\n")).not.toContain("UNIQUE constraint");
  });

  it.each<[string, unknown, string]>([
    ["a numeric code", 23505, "caused by QueryFailedError (code 23505; message not logged)"],
    [
      "a dotted code",
      "ER_LOCK.DEADLOCK",
      "caused by QueryFailedError (code ER_LOCK.DEADLOCK; message not logged)",
    ],
    // A code that is not a driver's token may be anything, the value included: left out.
    [
      "a code with spaces",
      `dup ${SECRET_VALUE}`,
      "caused by QueryFailedError (message not logged)",
    ],
    [
      "a code too long to be one",
      "X".repeat(65),
      "caused by QueryFailedError (message not logged)",
    ],
    ["an object code", { value: SECRET_VALUE }, "caused by QueryFailedError (message not logged)"],
    ["no code", undefined, "caused by QueryFailedError (message not logged)"],
  ])("logs a non-KMS cause with %s by class and code only", (_name, code, line) => {
    const cause = driverError(`INSERT ... VALUES ('${SECRET_VALUE}')`, code, "QueryFailedError");
    const text = describeKmsFault(new KmsInternalError("write failed", { cause }));
    expect(text.split("\n").at(-1)).toBe(line);
    expect(text).not.toContain(SECRET_VALUE);
    expect(text).not.toContain("INSERT");
  });

  it("names a cause that is not an Error without showing it", () => {
    const text = describeKmsFault(
      new KmsInternalError("lookup failed", { cause: `password=${SECRET_VALUE}` }),
    );
    expect(text.split("\n").at(-1)).toBe("caused by a non-Error");
    expect(text).not.toContain(SECRET_VALUE);
  });

  it("logs at most four causes, so a cyclic chain ends", () => {
    const a = new KmsInternalError("a");
    const b = new KmsInternalError("b", { cause: a });
    Object.defineProperty(a, "cause", { value: b });
    const lines = describeKmsFault(new KmsInternalError("top", { cause: a })).split("\n");
    expect(lines.filter((line) => line.startsWith("caused by "))).toEqual([
      "caused by KmsInternalError: a",
      "caused by KmsInternalError: b",
      "caused by KmsInternalError: a",
      "caused by KmsInternalError: b",
    ]);
  });
});
