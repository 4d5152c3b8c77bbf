import { ValidationError } from "@kms/core";
import { describe, expect, test } from "vitest";
import { defineModels, type ModelDescriptor, parseSchema } from "../src/index.ts";
import { parsed, typed } from "./field-context.behaviour.ts";
import { kmsSchema } from "./generated/kms/kms-schema.ts";

/** A schema of one model around `fieldLines`, for the load-time checks. */
function chartSchema(fieldLines: string, modelDoc = "/// @kms.context(tenantId)"): string {
  return `${modelDoc}
model Chart {
  id       Int    @id
  tenantId String
  recordId String
  ${fieldLines}
}`;
}

describe("per-field context: the descriptor", () => {
  test("annotations, defineModels and the generator give the same descriptor", () => {
    expect(parsed.Chart).toEqual(typed.Chart);
    expect(kmsSchema.Chart).toEqual(parsed.Chart);
    const chart = parsed.Chart as ModelDescriptor;
    expect(chart.encrypted.note?.context).toEqual({ fromRow: ["recordId"], fromScope: [] });
    expect(chart.encrypted.ssn?.context).toEqual({ fromRow: [], fromScope: [] });
    // Fields adding the same keys share one context (a result row builds it once for both).
    expect(chart.encrypted.note?.context).toBe(chart.encrypted.vitals?.context);
    expect(chart.contextColumns).toEqual(["tenantId", "recordId"]);
    const scoped = parseSchema(
      chartSchema("/// @kms.encrypted @kms.context(row: recordId, scope: visit)\n  note String"),
    );
    expect(scoped.Chart?.encrypted.note?.context).toEqual({
      fromRow: ["recordId"],
      fromScope: ["visit"],
    });
  });

  const invalid: [string, () => unknown, RegExp][] = [
    [
      "an unknown column on a field",
      () => parseSchema(chartSchema("/// @kms.encrypted @kms.context(recordID)\n  note String")),
      /model "Chart" field "note": context column "recordID" is not a column of Chart/,
    ],
    [
      "an unknown column on the model",
      () => parseSchema(chartSchema("note String", "/// @kms.context(tenant)")),
      /model "Chart": context column "tenant" is not a column of Chart/,
    ],
    [
      "an encrypted context column (annotations)",
      () =>
        parseSchema(
          chartSchema(
            "/// @kms.encrypted\n  secret String\n  /// @kms.encrypted @kms.context(secret)\n  note String",
          ),
        ),
      /model "Chart": context column "secret" is itself encrypted/,
    ],
    [
      "an encrypted context column (defineModels)",
      () =>
        defineModels({
          Chart: { encrypted: { recordId: {}, note: { context: { fromRow: ["recordId"] } } } },
        }),
      /model "Chart": context column "recordId" is itself encrypted/,
    ],
    [
      "an encrypted model context column",
      () =>
        defineModels({
          Chart: { encrypted: { tenantId: {} }, context: { fromRow: ["tenantId"] } },
        }),
      /context column "tenantId" is itself encrypted/,
    ],
    [
      "a column already in the model's context",
      () => parseSchema(chartSchema("/// @kms.encrypted @kms.context(tenantId)\n  note String")),
      /field "note": context column "tenantId" is already in the model's context/,
    ],
    [
      "@kms.context on a field that is not encrypted",
      () => parseSchema(chartSchema("/// @kms.context(recordId)\n  note String")),
      /field "note": @kms.context on a field .* needs @kms.encrypted on the same field/,
    ],
    [
      "an unknown argument",
      () =>
        parseSchema(
          chartSchema("/// @kms.encrypted @kms.context(column: recordId)\n  note String"),
        ),
      /@kms.context takes columns, row: and scope:, not column:/,
    ],
    [
      "a context list that is not a list of names",
      () =>
        defineModels({
          Chart: {
            encrypted: { note: { context: { fromRow: "recordId" as unknown as string[] } } },
          },
        }),
      /field "note": context.fromRow must be a list of non-empty column or key names/,
    ],
  ];
  test.each(invalid)("%s is a ValidationError naming it", (_label, load, message) => {
    expect(load).toThrow(ValidationError);
    expect(load).toThrow(message);
  });
});
