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

  test("reads each value once, so a getter cannot pass the check and then change", () => {
    let reads = 0;
    const getter = {
      get tenantId(): string {
        reads += 1;
        return (reads === 1 ? "ok" : 42) as never;
      },
    };
    const seen = runWithEncryptionContext(getter, () => currentEncryptionContext());
    expect(seen).toEqual({ tenantId: "ok" });
    expect(reads).toBe(1);
  });

  test("reads each value of a Proxy once, also when merged over an enclosing scope", () => {
    let gets = 0;
    const proxy = new Proxy<Record<string, string>>(
      { tenantId: "t" },
      {
        get: (target, key) => {
          gets += 1;
          return gets === 1 ? Reflect.get(target, key) : 42;
        },
      },
    );
    const nested = runWithEncryptionContext({ tenantId: "outer", region: "eu" }, () =>
      runWithEncryptionContext(proxy, () => currentEncryptionContext()),
    );
    expect(nested).toEqual({ tenantId: "t", region: "eu" });
    expect(typeof nested?.tenantId).toBe("string");
  });

  test("a __proto__ key stays a plain key of the scope", () => {
    const context = JSON.parse('{"__proto__":"x","tenantId":"a"}') as Record<string, string>;
    const seen = runWithEncryptionContext(context, () => currentEncryptionContext());
    expect(Object.getPrototypeOf(seen)).toBe(Object.prototype);
    expect(Object.entries(seen ?? {})).toEqual([
      ["__proto__", "x"],
      ["tenantId", "a"],
    ]);
  });
});
