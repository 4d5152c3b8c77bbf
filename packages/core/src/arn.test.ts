import { describe, expect, test } from "vitest";
import { aliasArn, DEFAULT_IDENTITY, keyArn, parseKeyReference } from "./arn.ts";
import { NotFoundError, ValidationError } from "./errors.ts";

const KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab";
const identity = DEFAULT_IDENTITY;

describe("keyArn / aliasArn", () => {
  test("use the documented local form by default", () => {
    expect(keyArn(identity, KEY_ID)).toBe(`arn:aws:kms:local:000000000000:key/${KEY_ID}`);
    expect(aliasArn(identity, "alias/app")).toBe("arn:aws:kms:local:000000000000:alias/app");
  });

  test("reflect a custom identity", () => {
    const custom = { partition: "aws-cn", region: "cn-north-1", account: "123456789012" };
    expect(keyArn(custom, KEY_ID)).toBe(`arn:aws-cn:kms:cn-north-1:123456789012:key/${KEY_ID}`);
    expect(aliasArn(custom, "alias/a")).toBe("arn:aws-cn:kms:cn-north-1:123456789012:alias/a");
  });
});

describe("parseKeyReference", () => {
  test.each([
    ["a key id", KEY_ID, { kind: "key", keyId: KEY_ID }],
    ["a key ARN", keyArn(identity, KEY_ID), { kind: "key", keyId: KEY_ID }],
    ["an alias name", "alias/app", { kind: "alias", aliasName: "alias/app" }],
    [
      "an alias ARN",
      aliasArn(identity, "alias/a/b:c"),
      { kind: "alias", aliasName: "alias/a/b:c" },
    ],
  ])("parses %s", (_name, input, expected) => {
    expect(parseKeyReference(identity, input)).toEqual(expected);
  });

  test("round-trips every ARN it builds", () => {
    for (const id of [KEY_ID, "00000000-0000-4000-8000-000000000000"]) {
      expect(parseKeyReference(identity, keyArn(identity, id))).toEqual({ kind: "key", keyId: id });
    }
  });

  test.each([
    ["another account", `arn:aws:kms:local:111111111111:key/${KEY_ID}`],
    ["another region", `arn:aws:kms:us-east-1:000000000000:key/${KEY_ID}`],
    ["another partition", `arn:aws-us-gov:kms:local:000000000000:key/${KEY_ID}`],
    ["another service", `arn:aws:iam:local:000000000000:key/${KEY_ID}`],
    ["a truncated ARN", "arn:aws:kms:local"],
    ["an ARN of another resource type", `arn:aws:kms:local:000000000000:grant/${KEY_ID}`],
    ["an ARN with a malformed key id", "arn:aws:kms:local:000000000000:key/nope"],
    ["a malformed key id", "nope"],
    ["an upper-case key id", KEY_ID.toUpperCase().replace("ABCD", "XYZW")],
    ["a key id with extra characters", `${KEY_ID}0`],
  ])("%s → NotFoundError", (_name, input) => {
    expect(() => parseKeyReference(identity, input)).toThrow(NotFoundError);
  });

  test.each([
    ["an empty string", ""],
    ["a 2049-character string", "a".repeat(2049)],
    ["a number", 5],
    ["null", null],
    ["undefined", undefined],
    ["an object", { keyId: KEY_ID }],
    ["bytes", new Uint8Array(16)],
  ])("%s → ValidationError naming the argument", (_name, input) => {
    expect(() => parseKeyReference(identity, input, "destinationKeyId")).toThrow(ValidationError);
    expect(() => parseKeyReference(identity, input, "destinationKeyId")).toThrow(
      /destinationKeyId/,
    );
  });

  test("the NotFoundError names the argument too", () => {
    expect(() => parseKeyReference(identity, "nope", "sourceKeyId")).toThrow(/sourceKeyId/);
  });

  test("a custom identity accepts its own ARNs and rejects the default ones", () => {
    const custom = { partition: "aws", region: "eu-west-1", account: "123456789012" };
    expect(parseKeyReference(custom, keyArn(custom, KEY_ID))).toEqual({
      kind: "key",
      keyId: KEY_ID,
    });
    expect(() => parseKeyReference(custom, keyArn(identity, KEY_ID))).toThrow(NotFoundError);
  });
});
