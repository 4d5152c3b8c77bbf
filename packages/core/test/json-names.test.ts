import { describe, expect, test } from "vitest";
import { findRepeatedJsonName } from "../src/index.ts";

describe("findRepeatedJsonName", () => {
  test("names the first repeated member and where it is", () => {
    expect(
      findRepeatedJsonName('{"Statement":[{"Effect":"Allow"},{"Effect":"Deny","Effect":"Allow"}]}'),
    ).toEqual({ name: "Effect", path: "$.Statement[1].Effect" });
    expect(findRepeatedJsonName('{"a b":{"x":1,"\\u0078":2}}')).toEqual({
      name: "x",
      path: '$["a b"].x',
    });
  });

  test("the same name in different objects, or inside strings, is not a repeat", () => {
    expect(findRepeatedJsonName('{"a":{"a":1},"b":[{"a":2},{"a":3}],"c":"\\"a\\":{,}"}')).toBe(
      undefined,
    );
    expect(findRepeatedJsonName("[1,2,3]")).toBe(undefined);
  });
});
