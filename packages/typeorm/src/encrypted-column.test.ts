import "reflect-metadata";
import { ValidationError } from "@kms/core";
import { describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  type EncryptedColumnContext,
  encryptedSpecsOf,
} from "./encrypted-column.ts";

/** Decorates a fresh class's `note` with `context`, as `@EncryptedColumn` does on definition. */
function declare(context: EncryptedColumnContext): new () => object {
  class Chart {}
  EncryptedColumn({ nullable: true, context })(Chart.prototype, "note");
  return Chart;
}

describe("@EncryptedColumn context.rowIdentity", () => {
  test("is kept apart from fromRow and fromScope in the column's spec", () => {
    const [spec] = encryptedSpecsOf(declare({ fromScope: ["tenant"], rowIdentity: ["recordId"] }));
    expect(spec?.context).toEqual({
      fromRow: [],
      fromScope: ["tenant"],
      rowIdentity: ["recordId"],
    });
    expect(Object.isFrozen(spec?.context.rowIdentity)).toBe(true);
    const [plain] = encryptedSpecsOf(declare({ fromRow: ["tenantId"] }));
    expect(plain?.context.rowIdentity).toEqual([]);
  });

  test("a name in rowIdentity and in fromRow or fromScope is refused when the class is defined", () => {
    expect(() => declare({ fromRow: ["recordId"], rowIdentity: ["recordId"] })).toThrow(
      ValidationError,
    );
    expect(() => declare({ fromRow: ["recordId"], rowIdentity: ["recordId"] })).toThrow(
      /^Chart\.note: "recordId" is in both context\.fromRow and context\.rowIdentity$/,
    );
    expect(() => declare({ fromScope: ["tenant"], rowIdentity: ["tenant"] })).toThrow(
      /"tenant" is in both context\.fromScope and context\.rowIdentity/,
    );
  });

  test.each([
    ["a string", "recordId"],
    ["an empty name", [""]],
    ["a number", [1]],
    ["null", null],
  ])("rowIdentity as %s is refused like fromRow", (_, rowIdentity) => {
    const context = { rowIdentity } as unknown as EncryptedColumnContext;
    expect(() => declare(context)).toThrow(
      /^Chart\.note: "context\.rowIdentity" must be an array of property names$/,
    );
    const fromRow = { fromRow: rowIdentity } as unknown as EncryptedColumnContext;
    expect(() => declare(fromRow)).toThrow(/"context\.fromRow" must be an array/);
  });
});
