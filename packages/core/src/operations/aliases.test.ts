import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidAliasNameError, ValidationError } from "../errors.ts";
import { validateAliasName } from "./aliases.ts";

const ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-:";

describe("validateAliasName", () => {
  test.each([
    "alias/a",
    "alias/my-app_key:prod/v2",
    "alias/AWS", // only the alias/aws/ prefix is reserved
    "alias/awsome",
    `alias/${"x".repeat(250)}`,
  ])("accepts %s", (name) => {
    expect(validateAliasName(name)).toBe(name);
  });

  test("accepts every name of allowed characters up to 256 in all", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: fc.constantFrom(...ALLOWED), minLength: 1, maxLength: 250 }),
        (rest) => {
          const name = `alias/${rest}`;
          if (name.startsWith("alias/aws/")) {
            expect(() => validateAliasName(name)).toThrow(InvalidAliasNameError);
          } else {
            expect(validateAliasName(name)).toBe(name);
          }
        },
      ),
    );
  });

  test.each(["alias/aws/", "alias/aws/s3", "alias/aws/a/b"])(
    "reserved %s → InvalidAliasNameError",
    (name) => {
      expect(() => validateAliasName(name)).toThrow(InvalidAliasNameError);
    },
  );

  test.each([
    ["nothing after the prefix", "alias/"],
    ["257 characters", `alias/${"x".repeat(251)}`],
    ["a space", "alias/a b"],
    ["a dot", "alias/a.b"],
    ["a non-ASCII letter", "alias/é"],
    ["a newline", "alias/a\n"],
  ])("%s → InvalidAliasNameError", (_name, name) => {
    expect(() => validateAliasName(name)).toThrow(InvalidAliasNameError);
  });

  test("any character outside the allowed set → InvalidAliasNameError", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 10 }),
        fc.string({ minLength: 1, maxLength: 1 }).filter((c) => !ALLOWED.includes(c)),
        fc.string({ maxLength: 10 }),
        (before, bad, after) => {
          const name = `alias/${before}${bad}${after}`;
          expect(() => validateAliasName(name)).toThrow(InvalidAliasNameError);
        },
      ),
    );
  });

  test.each([
    ["no prefix", "app"],
    ["a capitalised prefix", "Alias/app"],
    ["an ARN", "arn:aws:kms:local:000000000000:alias/app"],
    ["an empty string", ""],
    ["a number", 5],
    ["null", null],
    ["undefined", undefined],
  ])("%s → ValidationError", (_name, name) => {
    expect(() => validateAliasName(name)).toThrow(ValidationError);
  });

  test("the message names the argument", () => {
    expect(() => validateAliasName("app")).toThrow(/aliasName/);
    expect(() => validateAliasName("alias/aws/x")).toThrow(/aliasName/);
  });
});
