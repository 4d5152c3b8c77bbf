import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { jsonDataText, MAX_JSON_DEPTH, MAX_JSON_VALUES, type NotJsonData } from "./json-data.ts";

/** JSON data as JSON.parse and object literals make it, with what JSON.stringify treats specially. */
const jsonData: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(-0, 0, 1e21, 5e-324, -1.5e-7),
    fc.string({ unit: "binary" }),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.dictionary(
      fc.oneof(
        fc.string({ unit: "binary", maxLength: 6 }),
        fc.constantFrom("__proto__", "toJSON", "0", "10", "2", "-1", "1.5", "constructor"),
      ),
      tie("value"),
      { maxKeys: 5 },
    ),
  ),
})).value;

function refusal(value: unknown): NotJsonData {
  const result = jsonDataText(value);
  if (typeof result === "string") throw new Error(`accepted as ${result}`);
  return result;
}

describe("JSON data (FORMAT §6.3, §6.5)", () => {
  test("its text is JSON.stringify's, byte for byte", () => {
    fc.assert(
      fc.property(jsonData, (value) => {
        expect(jsonDataText(value)).toBe(JSON.stringify(value));
      }),
      { numRuns: 2000 },
    );
  });

  test("objects without a prototype, own __proto__ members and integer keys write as JSON.stringify does", () => {
    const bare = Object.assign(Object.create(null) as object, { b: 1, 1: "x", a: [true] });
    const parsed = JSON.parse('{"__proto__":{"x":1},"z":-0,"3":null,"1":"é\\ud800"}') as unknown;
    for (const value of [bare, parsed, { nested: bare }, [parsed, -0]]) {
      expect(jsonDataText(value)).toBe(JSON.stringify(value));
    }
  });

  class Point {
    x = 1;
  }
  const hole: unknown[] = [1];
  hole[2] = 3;
  const withSymbol = { a: 1, [Symbol("s")]: 2 };
  const hidden = Object.defineProperty({ a: 1 }, "b", { value: 2, enumerable: false });
  const cyclic: Record<string, unknown> = { a: { b: [] as unknown[] } };
  ((cyclic.a as { b: unknown[] }).b as unknown[]).push(cyclic);

  test.each<[string, unknown, Partial<NotJsonData>]>([
    ["NaN", { n: Number.NaN }, { found: "NaN or ±Infinity", path: "$.<member 1>" }],
    ["Infinity", [Number.NEGATIVE_INFINITY], { found: "NaN or ±Infinity", path: "$[0]" }],
    [
      "undefined member",
      { a: 1, b: undefined },
      { found: "undefined", path: "$.<member 2>", why: "JSON leaves the member out" },
    ],
    [
      "undefined element",
      [1, undefined],
      { found: "undefined", path: "$[1]", why: "JSON writes it as null" },
    ],
    ["undefined itself", undefined, { found: "undefined", path: "$" }],
    ["function member", { f: () => 1 }, { found: "a function", path: "$.<member 1>" }],
    ["symbol element", [Symbol("s")], { found: "a symbol", path: "$[0]" }],
    ["bigint", { n: [1n] }, { found: "a bigint", path: "$.<member 1>[0]" }],
    ["hole", hole, { found: "a hole", path: "$[1]" }],
    ["symbol key", withSymbol, { found: "a symbol-keyed member", path: "$" }],
    ["non-enumerable member", hidden, { found: "a non-enumerable member", path: "$.<member 2>" }],
    [
      "toJSON method",
      { a: { toJSON: () => 1 } },
      { found: "a toJSON() method", path: "$.<member 1>" },
    ],
    ["Map", { m: new Map() }, { found: "an instance of Map", path: "$.<member 1>" }],
    ["Set", new Set([1]), { found: "an instance of Set", path: "$" }],
    ["Uint8Array", Uint8Array.of(1), { found: "an instance of Uint8Array" }],
    ["Buffer", { b: Buffer.of(1) }, { found: "an instance of Buffer" }],
    [
      "Date",
      { d: new Date(0) },
      { found: "a Date", path: "$.<member 1>", why: "JSON writes it as a string" },
    ],
    ["class instance", [new Point()], { found: "an instance of Point", path: "$[0]" }],
    ["boxed number", new Number(1), { found: "an instance of Number" }],
    ["boxed string", { s: new String("x") }, { found: "an instance of String" }],
    ["inherited members", Object.create({ a: 1 }), { found: "an object with a custom prototype" }],
    ["array subclass", new (class List extends Array {})(), { found: "an instance of List" }],
    ["cycle", cyclic, { found: "a cycle", path: "$.<member 1>.<member 1>[0]" }],
    [
      "members of any name",
      { a: 1, "a b": { ["x".repeat(40)]: 0n } },
      { path: "$.<member 2>.<member 1>" },
    ],
  ])("refuses %s, naming where", (_name, value, expected) => {
    expect(refusal(value)).toMatchObject(expected);
  });

  test("neither a member name nor a value appears, the path counts members by position", () => {
    const reason = refusal({ "4111 1111": { note: "secret", n: Number.NaN } });
    expect(`${reason.found} ${reason.path} ${reason.why}`).not.toMatch(/4111|secret|note/);
    expect(reason.path).toBe("$.<member 1>.<member 2>");
  });

  test(`takes ${MAX_JSON_DEPTH} levels of nesting and refuses one more, with a short path`, () => {
    const nest = (levels: number) => {
      let value: unknown = 0;
      for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { a: value };
      return value;
    };
    expect(jsonDataText(nest(MAX_JSON_DEPTH))).toBe(JSON.stringify(nest(MAX_JSON_DEPTH)));
    const reason = refusal(nest(MAX_JSON_DEPTH + 1));
    expect(reason.found).toBe(`nesting deeper than ${MAX_JSON_DEPTH} levels`);
    expect(reason.path.endsWith("…")).toBe(true);
    expect(reason.path).toBe(`$${"[0].<member 1>".repeat(8)}…`);
  });

  test(`takes ${MAX_JSON_VALUES} values and refuses more, also in a graph that shares one array`, () => {
    const most = new Array<number>(MAX_JSON_VALUES - 1).fill(0);
    expect(jsonDataText(most)).toHaveLength(2 * MAX_JSON_VALUES - 1);
    expect(refusal([...most, 0]).found).toBe(`more than ${MAX_JSON_VALUES} values`);
    // 2^40 values written out; JSON.stringify would run until the string is too long.
    let shared: unknown = [1];
    for (let i = 0; i < 40; i++) shared = [shared, shared];
    expect(refusal(shared).found).toBe(`more than ${MAX_JSON_VALUES} values`);
  });

  test("refuses an array with a toJSON() method, which JSON.stringify writes as its result", () => {
    const tagged = Object.assign([1, 2], { toJSON: () => "other" });
    expect(JSON.stringify(tagged)).toBe('"other"');
    expect(refusal({ list: tagged })).toMatchObject({
      found: "a toJSON() method",
      path: "$.<member 1>",
    });
  });

  test("refuses an array with members beside its elements, which JSON.stringify drops", () => {
    const extra = Object.assign([1, 2], { extra: 3 });
    expect(JSON.stringify(extra)).toBe("[1,2]");
    expect(refusal(extra)).toStrictEqual({
      found: "a member that is not an element",
      path: "$.<member 3>",
      why: "JSON writes only an array's elements",
    });
    const symbolic = Object.assign([1], { [Symbol("s")]: 2 });
    const match = /b/.exec("abc") as RegExpExecArray;
    // Integer-like names that are no element: past 2^32 - 2, or not as String(i) writes them.
    const past = Object.assign([1], { "4294967295": 2 });
    const padded = Object.assign([1], { "01": 2 });
    const holeAndExtra: unknown[] = Object.assign([1], { x: 1 });
    holeAndExtra[2] = 3;
    const cases: [unknown, Partial<NotJsonData>][] = [
      [{ list: extra }, { path: "$.<member 1>.<member 3>" }],
      [[[0], extra], { path: "$[1].<member 3>" }],
      [{ s: symbolic }, { found: "a symbol-keyed member", path: "$.<member 1>" }],
      // Keys "0", "index", "input", "groups".
      [match, { found: "a member that is not an element", path: "$.<member 2>" }],
      [past, { path: "$.<member 2>" }],
      [padded, { path: "$.<member 2>" }],
      // A hole and an extra member as many own keys as the elements would have.
      [holeAndExtra, { path: "$.<member 3>" }],
    ];
    for (const [value, expected] of cases) expect(refusal(value)).toMatchObject(expected);
    // The same arrays without them are taken, and so is an element made non-enumerable, which
    // JSON.stringify writes all the same.
    expect(jsonDataText({ list: [1, 2] })).toBe('{"list":[1,2]}');
    const quiet = Object.defineProperty([1, 2], 0, { value: 0, enumerable: false });
    expect(jsonDataText(quiet)).toBe("[0,2]");
    expect(JSON.stringify(quiet)).toBe("[0,2]");
  });

  test("refuses a hole even where Array.prototype holds an element that JSON.stringify would write", () => {
    const holey: unknown[] = [1];
    holey[2] = 3;
    const proto = Array.prototype as unknown as Record<number, unknown>;
    proto[1] = "inherited";
    try {
      expect(JSON.stringify(holey)).toBe('[1,"inherited",3]');
      expect(refusal({ a: holey })).toMatchObject({ found: "a hole", path: "$.<member 1>[1]" });
      expect(refusal(new Array(2))).toMatchObject({ found: "a hole", path: "$[0]" });
    } finally {
      delete proto[1];
    }
  });

  test("refuses arrays whose prototype is not an Array.prototype", () => {
    const bare = Object.setPrototypeOf([1], null) as unknown;
    const asObject = Object.setPrototypeOf([1], Object.prototype) as unknown;
    class Tagged extends Array<number> {}
    const reasons = [bare, asObject, Tagged.from([1]), { nested: Tagged.of(1) }].map(
      (value) => refusal(value).found,
    );
    expect(reasons).toStrictEqual([
      "an object with a custom prototype",
      "an object with a custom prototype",
      "an instance of Tagged",
      "an instance of Tagged",
    ]);
  });

  test("names a cycle where it closes, however wide the value around it", () => {
    // An ORM entity with back-references: 50 posts, each naming its author.
    const user: { name: string; posts: { title: string; author: unknown }[] } = {
      name: "a",
      posts: [],
    };
    for (let i = 0; i < 50; i++) user.posts.push({ title: `t${i}`, author: user });
    expect(refusal(user)).toMatchObject({
      found: "a cycle",
      path: "$.<member 2>[0].<member 2>",
    });
    const wide: Record<string, unknown> = Object.fromEntries(
      Array.from({ length: 3000 }, (_, i) => [`k${i}`, i]),
    );
    wide.self = wide;
    expect(refusal(wide)).toMatchObject({ found: "a cycle", path: "$.<member 3001>" });
  });

  test("takes plain objects and arrays of another realm (a vm context), as before", () => {
    const foreign = runInNewContext(
      'JSON.parse(\'{ "a": [1, { "b": null }], "__proto__": [] }\')',
    ) as unknown;
    expect(foreign instanceof Object).toBe(false);
    expect(jsonDataText(foreign)).toBe(JSON.stringify(foreign));
    expect(jsonDataText(runInNewContext("[[]]"))).toBe("[[]]");
    // Its class instances, Maps and toJSON() methods stay refused.
    const refused = runInNewContext(`[
      new (class Point { x = 1 })(),
      new Map(),
      { toJSON: () => 1 },
      Object.assign([], { toJSON: () => 1 }),
      Object.create({ constructor: function Object() {} }),
    ]`) as unknown[];
    expect(Array.from(refused, (value) => refusal(value).found)).toStrictEqual([
      "an instance of Point",
      "an instance of Map",
      "a toJSON() method",
      "a toJSON() method",
      "an instance of Object",
    ]);
  });

  test("reads each getter once, so that the text is what was checked", () => {
    let reads = 0;
    const value = {
      get flip() {
        reads += 1;
        return reads === 1 ? "first" : undefined;
      },
    };
    expect(jsonDataText(value)).toBe('{"flip":"first"}');
    expect(reads).toBe(1);
  });

  test("lets what a getter throws through, for the caller to wrap", () => {
    const boom = new Error("getter failed");
    const value = {
      get a(): never {
        throw boom;
      },
    };
    expect(() => jsonDataText(value)).toThrow(boom);
  });
});
