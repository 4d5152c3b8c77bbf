import { KmsInternalError } from "@kms/core";
import { describe, expect, test } from "vitest";
import { faultSummary } from "./fault-summary.ts";

const SSN = "123-45-6789";

class PrismaClientKnownRequestError extends Error {
  readonly code = "P2003";
}

/** Shaped like TypeORM's: the driver's error in `driverError`, the query's values beside it. */
class QueryFailedError extends Error {
  readonly parameters = [SSN];
  readonly driverError: Error;
  constructor(driverError: Error) {
    super(`invalid input syntax for type integer: "${SSN}"`);
    this.driverError = driverError;
  }
}

function withCode(message: string, code: unknown): Error {
  return Object.assign(new Error(message), { code });
}

describe("faultSummary", () => {
  const cases: [string, unknown, string][] = [
    [
      "an ORM error: class and code",
      new PrismaClientKnownRequestError(`Unique constraint failed on ${SSN}`),
      "PrismaClientKnownRequestError P2003",
    ],
    [
      "a QueryFailedError: its driver's error as the cause",
      new QueryFailedError(withCode(`invalid input syntax: "${SSN}"`, "22P02")),
      "QueryFailedError; caused by Error 22P02",
    ],
    [
      "a KMS error: its message too, then its causes' classes and codes",
      new KmsInternalError("the KMS server did not answer", {
        cause: new TypeError("fetch failed", {
          cause: withCode(`connect ECONNREFUSED ${SSN}`, "ECONNREFUSED"),
        }),
      }),
      "KmsInternalError KMSInternalException: the KMS server did not answer; caused by TypeError; caused by Error ECONNREFUSED",
    ],
    ["a numeric code", withCode(SSN, 42), "Error 42"],
    ["a code that is free text", withCode("boom", `value ${SSN}`), "Error"],
    ["a code that is not a token", withCode("boom", "P2002\nforged log line"), "Error"],
    [
      "a name that is not an identifier, on an object",
      Object.assign(Object.create(null), { name: `Error: ${SSN}` }),
      "an object",
    ],
    ["a thrown string", SSN, "a thrown string"],
    ["a thrown number", 1234, "a thrown number"],
    ["a thrown null", null, "a thrown null"],
    ["a thrown undefined", undefined, "a thrown undefined"],
  ];
  test.each(cases)("%s", (_, error, summary) => {
    expect(faultSummary(error)).toBe(summary);
    expect(faultSummary(error)).not.toContain(SSN);
  });

  test("follows four causes at most, so a cycle ends", () => {
    const looped = withCode("a", "E1");
    looped.cause = looped;
    expect(faultSummary(looped)).toBe(`Error E1${"; caused by Error E1".repeat(4)}`);
  });
});
