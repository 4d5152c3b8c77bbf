import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { currentEncryptionContext, runWithEncryptionContext } from "./context-scope.ts";

describe("encryption context scope", () => {
  test("is undefined outside a scope and follows async work inside one", async () => {
    expect(currentEncryptionContext()).toBeUndefined();
    const seen = await runWithEncryptionContext({ tenantId: "a" }, async () => {
      await new Promise((r) => setTimeout(r, 1));
      return currentEncryptionContext();
    });
    expect(seen).toEqual({ tenantId: "a" });
    expect(currentEncryptionContext()).toBeUndefined();
  });

  test("nested scopes merge, inner values win, and concurrent scopes stay apart", async () => {
    const inner = runWithEncryptionContext({ tenantId: "a", region: "eu" }, () =>
      runWithEncryptionContext({ tenantId: "b" }, () => currentEncryptionContext()),
    );
    expect(inner).toEqual({ tenantId: "b", region: "eu" });
    const [x, y] = await Promise.all(
      ["x", "y"].map((t) =>
        runWithEncryptionContext({ tenantId: t }, async () => {
          await new Promise((r) => setTimeout(r, t === "x" ? 5 : 1));
          return currentEncryptionContext()?.tenantId;
        }),
      ),
    );
    expect([x, y]).toEqual(["x", "y"]);
  });

  test("rejects non-string values and freezes the context", () => {
    expect(() => runWithEncryptionContext({ tenantId: 1 as never }, () => 0)).toThrow(
      ValidationError,
    );
    runWithEncryptionContext({ tenantId: "a" }, () => {
      expect(Object.isFrozen(currentEncryptionContext())).toBe(true);
    });
  });
});
