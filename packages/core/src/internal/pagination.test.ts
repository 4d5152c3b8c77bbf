import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidMarkerError, ValidationError } from "../errors.ts";
import { pageRequest, toPage } from "./pagination.ts";

describe("pageRequest", () => {
  test("defaults to 100 of at most 1000, or the operation's bounds", () => {
    expect(pageRequest(undefined)).toEqual({ limit: 100 });
    expect(pageRequest({})).toEqual({ limit: 100 });
    expect(pageRequest({}, { max: 50, default: 50 })).toEqual({ limit: 50 });
  });

  test.each([
    [1, true],
    [1000, true],
    [0, false],
    [1001, false],
    [-1, false],
    [1.5, false],
    [Number.NaN, false],
    [Number.POSITIVE_INFINITY, false],
    ["10", false],
    [null, false],
  ])("limit %s accepted: %s", (limit, ok) => {
    const call = () => pageRequest({ limit: limit as number });
    if (ok) expect(call()).toEqual({ limit });
    else expect(call).toThrow(ValidationError);
  });

  test("the operation's maximum applies", () => {
    expect(pageRequest({ limit: 100 }, { max: 100, default: 50 }).limit).toBe(100);
    expect(() => pageRequest({ limit: 101 }, { max: 100, default: 50 })).toThrow(ValidationError);
  });

  test.each([null, 5, "marker", new Uint8Array(2), [1]])(
    "a request that is not an object (%o) → ValidationError",
    (request) => {
      expect(() => pageRequest(request as never)).toThrow(ValidationError);
    },
  );

  test("every marker toPage makes is accepted and yields the last id", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, unit: "grapheme" }), (id) => {
        const page = toPage([id, `${id}~`], 1, (x) => x);
        expect(page.nextMarker).toBeDefined();
        expect(pageRequest({ marker: page.nextMarker! })).toEqual({ limit: 100, after: id });
      }),
    );
  });

  test.each([
    ["empty", ""],
    ["with spaces", "a b"],
    ["standard base64", "YWJj+/=="],
    ["padded", "YQ=="],
    ["not canonical base64url", "YR"],
    ["invalid UTF-8 inside", Buffer.from([0xff, 0xfe]).toString("base64url")],
    ["too long", "YWFh".repeat(300)],
    ["a number", 5],
    ["null", null],
  ])("a marker %s → InvalidMarkerError", (_name, marker) => {
    expect(() => pageRequest({ marker: marker as string })).toThrow(InvalidMarkerError);
  });
});

describe("toPage", () => {
  test("no marker when everything fits", () => {
    expect(toPage([1, 2], 2, String)).toEqual({ items: [1, 2], truncated: false });
    expect(toPage([], 5, String)).toEqual({ items: [], truncated: false });
  });

  test("one extra item means truncated, and the marker is opaque", () => {
    const page = toPage(["a", "b", "c"], 2, (x) => x);
    expect(page.items).toEqual(["a", "b"]);
    expect(page.truncated).toBe(true);
    expect(page.nextMarker).not.toBe("b");
    expect(page.nextMarker).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  test("paging through any sorted id list visits each id once, in order", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 10 }),
        (ids, limit) => {
          const sorted = [...ids].sort();
          const seen: string[] = [];
          let after: string | undefined;
          for (let guard = 0; guard <= sorted.length + 1; guard++) {
            const rest = sorted.filter((id) => after === undefined || id > after);
            const page = toPage(rest.slice(0, limit + 1), limit, (x) => x);
            seen.push(...page.items);
            if (page.nextMarker === undefined) break;
            after = pageRequest({ marker: page.nextMarker }).after;
          }
          expect(seen).toEqual(sorted);
        },
      ),
    );
  });
});
