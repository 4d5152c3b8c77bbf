import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { type BlindIndexSpec, FieldEncryptionEngine } from "./field-encryption-engine.ts";

/**
 * FORMAT §6.5: a string that is not well-formed Unicode, before or after normalizing, is a
 * ValidationException. A `normalize` function may make a lone surrogate well-formed (U+FFFD, or
 * nothing); the index must not then match the rows of the string it became, which no field can
 * hold a lone surrogate for.
 */

async function engine() {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  return new FieldEncryptionEngine({ kms, dataKeyStore: new MemoryDataKeyStore(), keyId });
}

const at = { model: "User", field: "nameIndex", context: { tenantId: "a" } };
const toWellFormed = (s: string) => s.replace(/[\uD800-\uDFFF]/g, "\uFFFD");
const dropSurrogates = (s: string) => s.replace(/[\uD800-\uDFFF]/g, "");

describe("a blind index of a lone surrogate", () => {
  test.each<[string, BlindIndexSpec, string]>([
    ["untyped, normalized to U+FFFD", { normalize: toWellFormed }, "a\uD800"],
    ["untyped, normalized away", { normalize: dropSurrogates }, "a\uDC00"],
    ["typed string", { normalize: toWellFormed, type: "string" }, "\uD800"],
    ["typed json", { normalize: dropSurrogates, type: "json" }, "x\uDBFF"],
    ["untyped, no normalization", {}, "\uD800"],
  ])("%s is refused, naming the index, not quoting the value", async (_, spec, value) => {
    const e = await engine();
    const error = await e.blindIndex(at, spec, value).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toContain('"nameIndex"');
    expect((error as Error).message).not.toContain(value);
  });

  test("well-formed strings the same function maps keep their index", async () => {
    const e = await engine();
    const spec = { normalize: toWellFormed };
    expect(await e.blindIndex(at, spec, "a\uFFFD")).toBe(await e.blindIndex(at, {}, "a\uFFFD"));
  });
});
