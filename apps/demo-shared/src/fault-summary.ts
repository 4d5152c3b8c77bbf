import { isKmsError } from "@kms/core";

/** A `code` worth logging is a short token (P2002, SQLITE_CONSTRAINT, 23505, ECONNREFUSED). */
const CODE = /^[A-Za-z0-9_.-]{1,64}$/;
const CLASS_NAME = /^[A-Za-z_$][\w$]{0,63}$/;
/** Enough to reach the driver or socket error under an ORM's and a KMS client's wrappers. */
const MAX_CAUSES = 4;

/**
 * One line for the operator's log about a failure the API answered with an opaque 500: the
 * error's class and code, then its causes', and never their messages. ORM and driver messages
 * repeat a query's arguments — a Prisma validation error prints the whole `data` it was given,
 * so a value that reached the wrong client unencrypted (an SSN) would land in the log. Only a
 * KMS error's message is kept: @kms/core's messages name an argument and a rule, never
 * plaintext or key material, and they say which KMS fault it was.
 */
export function faultSummary(error: unknown): string {
  const parts = [summary(error)];
  let cause = causeOf(error);
  for (let depth = 0; cause !== undefined && depth < MAX_CAUSES; depth++) {
    parts.push(`caused by ${summary(cause)}`);
    cause = causeOf(cause);
  }
  return parts.join("; ");
}

function summary(error: unknown): string {
  if (typeof error !== "object" || error === null) {
    return `a thrown ${error === null ? "null" : typeof error}`;
  }
  if (isKmsError(error)) return `${error.name} ${error.code}: ${error.message}`;
  const name = className(error);
  const { code } = error as { code?: unknown };
  const shown =
    (typeof code === "string" && CODE.test(code)) || Number.isSafeInteger(code)
      ? ` ${String(code)}`
      : "";
  return `${name}${shown}`;
}

/** The class's name (pg's DatabaseError is `name`d "error"), else `name` when it is an identifier. */
function className(error: object): string {
  const constructorName = (error as { constructor?: { name?: unknown } }).constructor?.name;
  if (typeof constructorName === "string" && CLASS_NAME.test(constructorName)) {
    return constructorName;
  }
  const { name } = error as { name?: unknown };
  return typeof name === "string" && CLASS_NAME.test(name) ? name : "an object";
}

/** `cause`, or TypeORM's `driverError` (a QueryFailedError keeps the driver's error there). */
function causeOf(error: unknown): unknown {
  if (typeof error !== "object" || error === null) return undefined;
  const { cause, driverError } = error as { cause?: unknown; driverError?: unknown };
  return cause ?? driverError;
}
