import { KmsError, MalformedPolicyDocumentError, parsePolicy } from "@kms/core";
import fc from "fast-check";
import { describe, expect, test } from "vitest";

const ok = { Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*" };
const doc = (statements: unknown, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ Version: "2012-10-17", Statement: statements, ...extra });

describe("parsePolicy", () => {
  test("accepts AWS's grammar: single statement object, string or array values, NotAction", () => {
    const parsed = parsePolicy(
      JSON.stringify({
        Version: "2012-10-17",
        Id: "x",
        Statement: {
          Sid: "One",
          Effect: "Deny",
          NotPrincipal: { AWS: ["arn:aws:iam::111122223333:root"], Service: "svc" },
          NotAction: ["kms:Decrypt", "kms:Gen*"],
          NotResource: "arn:aws:kms:*",
          Condition: {
            "ForAnyValue:StringLikeIfExists": { "kms:EncryptionContextKeys": ["a*", "b"] },
          },
        },
      }),
    );
    expect(parsed.statements).toHaveLength(1);
    expect(parsed.statements[0]).toMatchObject({
      sid: "One",
      effect: "Deny",
      notActions: ["kms:decrypt", "kms:gen*"],
    });
  });

  test.each([
    ["not JSON", "{", "$ is not valid JSON"],
    ["not an object", "[]", "$ must be a JSON object"],
    ["empty", "  ", "$ must not be empty"],
    ["unknown top-level element", doc([ok], { Foo: 1 }), "$.Foo is not a policy element"],
    ["bad version", doc([ok], { Version: "2020-01-01" }), "$.Version"],
    ["missing Statement", JSON.stringify({ Version: "2012-10-17" }), "$.Statement is required"],
    ["empty Statement", doc([]), "$.Statement must have at least one statement"],
    ["statement not an object", doc([ok, 5]), "$.Statement[1] must be an object"],
    ["bad Effect", doc([{ ...ok, Effect: "allow" }]), "$.Statement[0].Effect"],
    [
      "no Principal",
      doc([{ Effect: "Allow", Action: "kms:*", Resource: "*" }]),
      `$.Statement[0] must have exactly one of "Principal"`,
    ],
    [
      "Principal and NotPrincipal",
      doc([{ ...ok, NotPrincipal: "*" }]),
      `$.Statement[0] must have exactly one of "Principal"`,
    ],
    [
      "bad principal type",
      doc([{ ...ok, Principal: { Bogus: "x" } }]),
      "$.Statement[0].Principal.Bogus",
    ],
    [
      "principal list with a number",
      doc([{ ...ok, Principal: { AWS: ["a", 3] } }]),
      "$.Statement[0].Principal.AWS[1]",
    ],
    [
      "no Action",
      doc([{ Effect: "Allow", Principal: "*", Resource: "*" }]),
      `must have exactly one of "Action"`,
    ],
    [
      "bad action",
      doc([{ ...ok, Action: ["kms:Encrypt", "not an action"] }]),
      "$.Statement[0].Action[1]",
    ],
    [
      "no Resource",
      doc([{ Effect: "Allow", Principal: "*", Action: "*" }]),
      `must have exactly one of "Resource"`,
    ],
    ["unknown statement element", doc([{ ...ok, Foo: 1 }]), "$.Statement[0].Foo"],
    [
      "unknown operator",
      doc([{ ...ok, Condition: { StringEqualz: { a: "b" } } }]),
      "$.Statement[0].Condition.StringEqualz",
    ],
    [
      "operator with prefix",
      doc([{ ...ok, Condition: { "ForSomeValues:StringEquals": { a: "b" } } }]),
      `$.Statement[0].Condition["ForSomeValues:StringEquals"]`,
    ],
    [
      "condition value object",
      doc([{ ...ok, Condition: { StringEquals: { "kms:CallerAccount": { x: 1 } } } }]),
      `$.Statement[0].Condition.StringEquals["kms:CallerAccount"]`,
    ],
    [
      "empty condition block",
      doc([{ ...ok, Condition: { StringEquals: {} } }]),
      "$.Statement[0].Condition.StringEquals must be a non-empty object",
    ],
    [
      "numeric operator with text",
      doc([{ ...ok, Condition: { NumericLessThan: { "aws:EpochTime": ["1", "x"] } } }]),
      `$.Statement[0].Condition.NumericLessThan["aws:EpochTime"]`,
    ],
    [
      "date operator with text",
      doc([{ ...ok, Condition: { DateLessThan: { "aws:CurrentTime": "soon" } } }]),
      "is not an ISO-8601 date",
    ],
    [
      "Bool with text",
      doc([{ ...ok, Condition: { Bool: { "kms:GrantIsForAWSResource": "yes" } } }]),
      "must be true or false",
    ],
    [
      "bad CIDR",
      doc([{ ...ok, Condition: { IpAddress: { "aws:SourceIp": "10.0.0.0/99" } } }]),
      "not an IP address or CIDR",
    ],
    [
      "Null with IfExists",
      doc([{ ...ok, Condition: { NullIfExists: { a: "true" } } }]),
      "NullIfExists is not a condition operator",
    ],
    [
      "duplicate Sid",
      doc([
        { ...ok, Sid: "A" },
        { ...ok, Sid: "A" },
      ]),
      `$.Statement[1].Sid "A" is not unique`,
    ],
    ["too large", doc([{ ...ok, Sid: "x".repeat(40000) }]), "at most 32768 bytes"],
  ])("%s → MalformedPolicyDocument naming %s", (_name, text, path) => {
    let caught: unknown;
    try {
      parsePolicy(text);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(MalformedPolicyDocumentError);
    expect((caught as Error).message).toContain(path);
  });

  test("a non-string document is malformed", () => {
    expect(() => parsePolicy(42)).toThrow(MalformedPolicyDocumentError);
  });
});

describe("a key repeated within one JSON object is refused (JSON.parse keeps only the last)", () => {
  const allow = `"Principal":"*","Action":"kms:*","Resource":"*"`;
  test.each([
    [
      "Effect: Deny then Allow",
      `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",${allow}},{"Effect":"Deny",${allow},"Effect":"Allow"}]}`,
      "$.Statement[1].Effect is repeated",
    ],
    [
      "a second condition block under the same operator",
      `{"Version":"2012-10-17","Statement":{"Effect":"Allow",${allow},"Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"a"},"StringEquals":{"kms:CallerAccount":"000000000000"}}}}`,
      "$.Statement.Condition.StringEquals is repeated",
    ],
    [
      "the same condition key twice",
      `{"Version":"2012-10-17","Statement":{"Effect":"Allow",${allow},"Condition":{"StringEquals":{"aws:PrincipalArn":"x","aws:PrincipalArn":"y"}}}}`,
      `$.Statement.Condition.StringEquals["aws:PrincipalArn"] is repeated`,
    ],
    [
      "Statement twice",
      `{"Version":"2012-10-17","Statement":{"Effect":"Deny",${allow}},"Statement":{"Effect":"Allow",${allow}}}`,
      "$.Statement is repeated",
    ],
    [
      "a key spelled with a JSON escape",
      `{"Version":"2012-10-17","Statement":{"Effect":"Deny",${allow},"\\u0045ffect":"Allow"}}`,
      "$.Statement.Effect is repeated",
    ],
  ])("%s", (_name, text, message) => {
    expect(() => parsePolicy(text)).toThrow(MalformedPolicyDocumentError);
    expect(() => parsePolicy(text)).toThrow(message);
  });

  test("the same key in different objects, and braces, commas, quotes in strings, are not repeats", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 12 }), fc.string({ maxLength: 12 }), {
          minKeys: 1,
          maxKeys: 4,
        }),
        (pairs) => {
          const statement = { ...ok, Condition: { StringEquals: pairs } };
          // 2008-10-17: `${` in the generated strings is text, not a policy variable.
          const text = JSON.stringify({ Version: "2008-10-17", Statement: [statement, statement] });
          expect(parsePolicy(text).statements).toHaveLength(2);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("fuzz: no input crashes the parser", () => {
  const outcome = (input: unknown): void => {
    try {
      parsePolicy(input);
    } catch (error) {
      if (!(error instanceof KmsError)) throw error;
    }
  };

  test("arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => outcome(s)),
      { numRuns: 2000 },
    );
  });

  test("arbitrary JSON values", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), (v) => outcome(JSON.stringify(v))),
      {
        numRuns: 2000,
      },
    );
  });

  const scalar = fc.oneof(
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.constant("*"),
    fc.constant("kms:*"),
  );
  const value = fc.oneof(
    scalar,
    fc.array(scalar, { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 10 }), scalar, { maxKeys: 3 }),
  );
  const operator = fc.oneof(
    fc.constantFrom(
      "StringEquals",
      "ForAllValues:StringLike",
      "ForAnyValue:NumericLessThanIfExists",
      "Null",
      "Bool",
      "IpAddress",
      "DateLessThan",
      "ArnLike",
    ),
    fc.string({ maxLength: 12 }),
  );
  const statement = fc.record(
    {
      Sid: fc.oneof(fc.string({ maxLength: 8 }), fc.integer()),
      Effect: fc.oneof(fc.constantFrom("Allow", "Deny"), scalar),
      Principal: fc.oneof(fc.constant("*"), fc.record({ AWS: value }), value),
      Action: value,
      NotAction: value,
      Resource: value,
      Condition: fc.oneof(
        fc.dictionary(
          operator,
          fc.dictionary(fc.string({ maxLength: 25 }), value, { maxKeys: 2 }),
          { maxKeys: 2 },
        ),
        scalar,
      ),
    },
    { requiredKeys: [] },
  );

  test("near-valid policy documents", () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            Version: fc.oneof(fc.constant("2012-10-17"), scalar),
            Statement: fc.oneof(statement, fc.array(statement, { maxLength: 4 }), scalar),
          },
          { requiredKeys: [] },
        ),
        (d) => outcome(JSON.stringify(d)),
      ),
      { numRuns: 3000 },
    );
  });
});
