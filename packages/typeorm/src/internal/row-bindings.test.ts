import type { FieldBinding } from "@kms/core";
import { describe, expect, test } from "vitest";
import type { EncryptedColumnSpec } from "../encrypted-column.ts";
import { RowBindings, rowBindingsFor } from "./row-bindings.ts";

function binding(tenantId: string): FieldBinding {
  return Object.freeze({ model: "Account", field: "email", context: { tenantId } });
}

function specWith(context: Partial<EncryptedColumnSpec["context"]>): EncryptedColumnSpec {
  return {
    context: { fromRow: [], fromScope: [], rowIdentity: [], ...context },
  } as unknown as EncryptedColumnSpec;
}

describe("RowBindings", () => {
  test("hands each value its own binding, whichever value was looked up last", () => {
    const shared = new RowBindings("tenantId");
    const t1 = shared.add("t1", binding("t1"));
    const t2 = shared.add("t2", binding("t2"));
    // Rows of two tenants, interleaved: the last value looked up is never another's answer.
    expect(["t1", "t2", "t2", "t1", "t3", "t1"].map((v) => shared.get(v))).toEqual([
      t1,
      t2,
      t2,
      t1,
      undefined,
      t1,
    ]);
    // Equal values the driver made afresh (not the same string object) share the binding.
    expect(shared.get(["t", "1"].join(""))).toBe(t1);
  });

  test("keeps at most 1024 values, dropping the oldest together", () => {
    const shared = new RowBindings("tenantId");
    for (let i = 0; i < 1024; i++) shared.add(`t${i}`, binding(`t${i}`));
    shared.get("t5");
    expect(shared.get("t0")).toEqual(binding("t0"));
    shared.add("t1024", binding("t1024"));
    expect({ t0: shared.get("t0"), t5: shared.get("t5") }).toEqual({
      t0: undefined,
      t5: undefined,
    });
    expect(shared.get("t1024")).toEqual(binding("t1024"));
  });

  test("serves only a context of one fromRow column and nothing else", () => {
    expect(rowBindingsFor(specWith({ fromRow: ["tenantId"] }))?.key).toBe("tenantId");
    for (const context of [
      {},
      { fromRow: ["tenantId", "region"] },
      { fromRow: ["tenantId"], fromScope: ["tenant"] },
      { fromRow: ["tenantId"], rowIdentity: ["id"] },
      { fromScope: ["tenant"] },
    ]) {
      expect(rowBindingsFor(specWith(context))).toBeUndefined();
    }
  });
});
