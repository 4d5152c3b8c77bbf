import { ValidationError } from "@kms/core";
import { describe, expect, test } from "vitest";
import { parseSchema } from "../src/index.ts";
import { configFromAnnotations } from "../src/schema-descriptor.ts";

/**
 * An annotation argument that is not understood is refused, never skipped: a misspelt mode
 * would store a lookup field randomized (lookups then fail) and a misspelt normalization would
 * index values unnormalized, silently.
 */

const model = (lines: string, modelDoc = "") => `${modelDoc}
model U {
  id       Int     @id
  tenantId String
  ${lines}
}`;

const invalid: [string, string, RegExp][] = [
  [
    "a misspelt mode",
    model("/// @kms.encrypted(determinstic)\n  ssn String"),
    /model "U" field "ssn": @kms.encrypted takes deterministic or randomized without a name, not "determinstic"/,
  ],
  [
    "the mode given by name",
    model("/// @kms.encrypted(mode: deterministic)\n  ssn String"),
    /model "U" field "ssn": @kms.encrypted takes type:, not mode:/,
  ],
  [
    "a misspelt argument name",
    model("/// @kms.encrypted(deterministic, typ: json)\n  ssn String"),
    /model "U" field "ssn": @kms.encrypted takes type:, not typ:/,
  ],
  [
    "two modes",
    model("/// @kms.encrypted(deterministic, randomized)\n  ssn String"),
    /field "ssn": @kms.encrypted takes one mode, not deterministic and randomized/,
  ],
  [
    "an argument given twice",
    model("/// @kms.encrypted(type: json, type: string)\n  ssn String"),
    /field "ssn": @kms.encrypted: argument type: is given twice/,
  ],
  [
    "an empty argument",
    model("/// @kms.encrypted(deterministic,)\n  ssn String"),
    /field "ssn": @kms.encrypted: an argument is empty/,
  ],
  [
    "a named argument without a value",
    model("/// @kms.encrypted(type:)\n  ssn String"),
    /field "ssn": @kms.encrypted: argument type: has no value/,
  ],
  [
    "an unclosed parenthesis",
    model("/// @kms.encrypted(deterministic\n  ssn String"),
    /field "ssn": @kms.encrypted: "\(" is not closed on its line/,
  ],
  [
    "arguments set apart from the name",
    model("/// @kms.encrypted (deterministic)\n  ssn String"),
    /field "ssn": write the arguments of @kms.encrypted right after its name/,
  ],
  [
    "@kms.encrypted twice on a field",
    model("/// @kms.encrypted\n  /// @kms.encrypted(deterministic)\n  ssn String"),
    /field "ssn": @kms.encrypted is given twice/,
  ],
  [
    "no annotation name",
    model("/// @kms.\n  ssn String"),
    /field "ssn": "@kms\." must be followed by an annotation name/,
  ],
  [
    "a misspelt blind index argument",
    model(
      '/// @kms.encrypted\n  ssn String\n  /// @kms.blindIndex(of: ssn, normalise: "trim,lowercase")\n  idx String?',
    ),
    /model "U" field "idx": @kms.blindIndex takes of:, bytes:, normalize:, not normalise:/,
  ],
  [
    "an unknown normalization",
    model(
      '/// @kms.encrypted\n  ssn String\n  /// @kms.blindIndex(of: ssn, normalize: "trim,lower")\n  idx String?',
    ),
    /field "idx": @kms.blindIndex normalize: takes lowercase, trim, nfkc, not "lower"/,
  ],
  [
    "bytes that are not a number",
    model(
      "/// @kms.encrypted\n  ssn String\n  /// @kms.blindIndex(of: ssn, bytes: 16b)\n  idx String?",
    ),
    /field "idx": @kms.blindIndex bytes: must be a whole number, not "16b"/,
  ],
  [
    "the indexed field given twice",
    model("/// @kms.encrypted\n  ssn String\n  /// @kms.blindIndex(ssn, of: ssn)\n  idx String?"),
    /field "idx": @kms.blindIndex indexes one field/,
  ],
  [
    "@kms. in capitals",
    model("/// @KMS.encrypted\n  ssn String"),
    /model "U" field "ssn": @KMS.encrypted is not an annotation \(they are case-sensitive\): write @kms.encrypted/,
  ],
  [
    "@kms. capitalized, with arguments",
    model("/// @Kms.encrypted(deterministic)\n  ssn String"),
    /field "ssn": @Kms.encrypted is not an annotation .*: write @kms.encrypted/,
  ],
  [
    "an annotation name in another case",
    model("/// @kms.Encrypted\n  ssn String"),
    /field "ssn": @kms.Encrypted is not an annotation .*: write @kms.encrypted/,
  ],
  [
    "a blind index name in lower case",
    model("/// @kms.encrypted\n  ssn String\n  /// @kms.blindindex(of: ssn)\n  idx String?"),
    /field "idx": @kms.blindindex is not an annotation .*: write @kms.blindIndex/,
  ],
  [
    "a model context in capitals, after a correct one",
    model("/// @kms.encrypted\n  ssn String", "/// @kms.context(tenantId) @KMS.context(id)"),
    /model "U": @KMS.context is not an annotation .*: write @kms.context/,
  ],
  [
    "an unknown name behind @kms. in capitals",
    model("/// @KMS.secret\n  ssn String"),
    /field "ssn": unknown annotation @KMS.secret/,
  ],
  [
    "a context naming nothing",
    model("/// @kms.encrypted\n  ssn String", "/// @kms.context()"),
    /model "U": @kms.context names no column or scope key/,
  ],
];

describe("annotation arguments", () => {
  test.each(invalid)("refuses %s", (_, schema, message) => {
    expect(() => parseSchema(schema)).toThrow(ValidationError);
    expect(() => parseSchema(schema)).toThrow(message);
  });

  test("the generator's route refuses them too (the same reader of annotations)", () => {
    const doc = ["@kms.encrypted(determinstic)"];
    expect(() =>
      configFromAnnotations([
        {
          name: "U",
          doc: [""],
          fields: [
            { name: "id", type: "Int", optional: false, doc: [""] },
            { name: "ssn", type: "String", optional: false, doc },
          ],
        },
      ]),
    ).toThrow(/model "U" field "ssn": @kms.encrypted takes deterministic or randomized/);
    expect(() =>
      configFromAnnotations([
        {
          name: "U",
          doc: [""],
          fields: [
            { name: "id", type: "Int", optional: false, doc: [""] },
            { name: "ssn", type: "String", optional: false, doc: ["@KMS.encrypted"] },
          ],
        },
      ]),
    ).toThrow(/model "U" field "ssn": @KMS.encrypted is not an annotation/);
  });

  test("accepts every documented form", () => {
    const parsed = parseSchema(
      model(
        [
          "/// @kms.encrypted(randomized)",
          "  a String",
          "  /// @kms.encrypted(deterministic, type: json) — the patient's chart",
          "  b String",
          '  /// @kms.encrypted(type: "date")',
          "  c String",
          '  /// @kms.blindIndex(of: a, bytes: 8, normalize: "trim, lowercase")',
          "  aIndex String?",
          "  /// @kms.blindIndex(b)",
          "  bIndex String?",
          "  /// @kms.encrypted @kms.context(row: id, scope: visit)",
          "  d String",
        ].join("\n"),
        "/// @kms.context(tenantId) Rows of one tenant.",
      ),
    ).U;
    expect(parsed?.encrypted.a).toMatchObject({ mode: "randomized", type: "string" });
    expect(parsed?.encrypted.b).toMatchObject({ mode: "deterministic", type: "json" });
    expect(parsed?.encrypted.c).toMatchObject({ mode: "randomized", type: "date" });
    expect(parsed?.encrypted.d?.context).toEqual({ fromRow: ["id"], fromScope: ["visit"] });
    expect(parsed?.blindIndexes.aIndex).toMatchObject({
      of: "a",
      bytes: 8,
      normalize: ["trim", "lowercase"],
    });
    expect(parsed?.blindIndexes.bIndex).toMatchObject({ of: "b", bytes: 16 });
    expect(parsed?.context.fromRow).toEqual(["tenantId"]);
  });
});
