import fc from "fast-check";
import { beforeAll, describe, expect, test } from "vitest";
import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine } from "./field-encryption-engine.ts";
import { MAX_JSON_DEPTH } from "./json-data.ts";
import { encodeFieldValue, encodeIndexValue, parseLegacyValue } from "./value-codec.ts";

/**
 * The member names of a json value are part of its plaintext (a map keyed by email address or
 * patient name): a refusal says where the value is not JSON data by positions (`$.<member 2>[0]`),
 * never by name, on every path that refuses one (FORMAT §6.3, §6.5).
 */

/** Names that look like data, and names that look like identifiers, which a path once printed bare. */
const MARKERS = [
  "SECRET-MARKER-123",
  "alice@example.com",
  "Émile Zola",
  "4111111111111111",
  "patientName",
  "ssn_4111",
  "$diagnosis",
  "MarkerIdentifierThatIsLongerThan32Chars",
];

/**
 * What a caller, a log or an HTTP body shows of an error: its message and its causes'. Not the
 * stacks: a throwing getter's own stack names the getter, which is the caller's code.
 */
function seen(error: unknown): string {
  const parts: string[] = [];
  for (let e = error, depth = 0; e !== undefined && depth < 8; depth++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join("\n");
}

function expectNoName(text: string, name: string): void {
  // A name cut short (as to 32 characters) still gives it away: its first 10 do here.
  expect(text).not.toContain(name.slice(0, 10));
}

class Patient {
  id = 1;
}

const nest = (name: string, levels: number): unknown => {
  let value: unknown = 0;
  for (let i = 0; i < levels; i++) value = { [name]: value };
  return value;
};

/** Every reason a json value is refused, with the bad part under (or named) `name`. */
const REASONS: [string, (name: string) => unknown, string | RegExp][] = [
  ["an undefined member", (n) => ({ [n]: undefined }), "undefined at $.<member 1>"],
  ["a function member", (n) => ({ other: 1, [n]: () => 1 }), "a function at $.<member 2>"],
  ["a symbol member", (n) => ({ [n]: Symbol("s") }), "a symbol at $.<member 1>"],
  ["an undefined element", (n) => ({ [n]: [0, undefined] }), "undefined at $.<member 1>[1]"],
  ["NaN", (n) => ({ [n]: { [n]: Number.NaN } }), "NaN or ±Infinity at $.<member 1>.<member 1>"],
  ["Infinity", (n) => [{ [n]: -Infinity }], "NaN or ±Infinity at $[0].<member 1>"],
  ["a bigint", (n) => ({ [n]: [1n] }), "a bigint at $.<member 1>[0]"],
  [
    "a hole",
    (n) => {
      const holey: unknown[] = [1];
      holey[2] = 3;
      return { [n]: holey };
    },
    "a hole at $.<member 1>[1]",
  ],
  [
    "a symbol-keyed member",
    (n) => ({ [n]: { [Symbol(n)]: 1 } }),
    "a symbol-keyed member at $.<member 1>",
  ],
  [
    "a non-enumerable member",
    (n) => ({ [n]: Object.defineProperty({ a: 1 }, n, { value: 2, enumerable: false }) }),
    "a non-enumerable member at $.<member 1>.<member 2>",
  ],
  ["a toJSON() method", (n) => ({ [n]: { toJSON: () => n } }), "a toJSON() method at $.<member 1>"],
  [
    "an array member beside the elements",
    (n) => ({ [n]: Object.assign([1, 2], { [n]: 3 }) }),
    "a member that is not an element at $.<member 1>.<member 3>",
  ],
  [
    "a symbol-keyed array member",
    (n) => ({ [n]: Object.assign([1], { [Symbol(n)]: 3 }) }),
    "a symbol-keyed member at $.<member 1>",
  ],
  ["a Date", (n) => ({ [n]: new Date(0) }), "a Date at $.<member 1>"],
  ["a Map", (n) => ({ [n]: new Map([[n, n]]) }), "an instance of Map at $.<member 1>"],
  ["a class instance", (n) => ({ [n]: new Patient() }), "an instance of Patient at $.<member 1>"],
  [
    "a custom prototype",
    (n) => ({ [n]: Object.create({ [n]: 1 }) as unknown }),
    "an object with a custom prototype at $.<member 1>",
  ],
  [
    "a cycle",
    (n) => {
      const cyclic: Record<string, unknown> = {};
      cyclic[n] = { [n]: cyclic };
      return cyclic;
    },
    "a cycle at $.<member 1>.<member 1>",
  ],
  [
    "nesting too deep",
    (n) => nest(n, MAX_JSON_DEPTH + 1),
    `nesting deeper than ${MAX_JSON_DEPTH} levels at $${".<member 1>".repeat(16)}…`,
  ],
  [
    "a getter that throws",
    (n) => ({
      get [n](): never {
        throw new Error("getter failed");
      },
    }),
    // No path: the getter's own error is the cause.
    /is not serializable|must be JSON-serializable/,
  ],
];

/** Too many values: 2^40 written out, refused after a million; slow, so under one name only. */
function tooMany(name: string): unknown {
  let shared: unknown = [1];
  for (let i = 0; i < 40; i++) shared = [shared, shared];
  return { [name]: { [name]: shared } };
}

describe("a json refusal names no member (FORMAT §6.3, §6.5)", () => {
  let engine: FieldEncryptionEngine;
  let legacy: FieldEncryptionEngine;
  beforeAll(async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
    legacy = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
      legacyPlaintext: true,
    });
  });
  const binding = { model: "User", field: "profile", context: { tenant: "t1" } };

  /** Each way a json value is refused: writes in both modes, blind indexes, lookups. */
  const paths: [string, (value: unknown) => unknown][] = [
    ["encrypt, randomized", (v) => engine.encrypt(binding, { type: "json" }, v)],
    ["encryptText, randomized", (v) => engine.encryptText(binding, { type: "json" }, v)],
    [
      "encrypt, deterministic",
      (v) => engine.encrypt(binding, { type: "json", mode: "deterministic" }, v),
    ],
    [
      "encryptText, deterministic",
      (v) => engine.encryptText(binding, { type: "json", mode: "deterministic" }, v),
    ],
    ["encryptIfCached", (v) => engine.encryptIfCached(binding, { type: "json" }, v)],
    [
      "lookupFormsText",
      (v) => legacy.lookupFormsText(binding, { type: "json", mode: "deterministic" }, v),
    ],
    ["legacyForm", (v) => legacy.legacyForm(binding, { type: "json" }, v, "text")],
    ["blindIndex, untyped", (v) => engine.blindIndex(binding, {}, v)],
    ["blindIndex, typed json", (v) => engine.blindIndex(binding, { type: "json" }, v)],
    ["blindIndexForms", (v) => engine.blindIndexForms(binding, { type: "json" }, v)],
  ];

  async function refusal(path: (value: unknown) => unknown, value: unknown): Promise<string> {
    let error: unknown;
    try {
      await path(value);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    return seen(error);
  }

  describe.each(paths)("%s", (_path, path) => {
    test.each(REASONS)("refuses %s by position", async (_reason, build, where) => {
      for (const name of MARKERS) {
        const text = await refusal(path, build(name));
        expectNoName(text, name);
        if (typeof where === "string") expect(text).toContain(where);
        else expect(text).toMatch(where);
      }
    });
  });

  // A million values take a second to walk: one write and one index.
  const walks = ["encrypt, randomized", "blindIndex, untyped"];
  test.each(paths.filter(([name]) => walks.includes(name)))(
    "%s refuses more than a million values by position",
    async (_path, path) => {
      const name = MARKERS[0] as string;
      const text = await refusal(path, tooMany(name));
      expectNoName(text, name);
      expect(text).toContain("more than 1000000 values at $.<member 1>.<member 1>");
    },
  );

  test("counts members in key order, from 1, whatever they are named", () => {
    const step = fc.oneof(
      fc.record({ index: fc.nat({ max: 4 }) }),
      fc.record({ name: fc.stringMatching(/^[A-Za-z_$][\w$]{2,40}$/), before: fc.nat({ max: 4 }) }),
    );
    const bad = fc.constantFrom<[unknown, string]>(
      [undefined, "undefined"],
      [Number.NaN, "NaN or ±Infinity"],
      [new Map(), "an instance of Map"],
      [1n, "a bigint"],
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 6 }), bad, (steps, [leaf, found]) => {
        // "Qz" marks every name: no message has it, so a name cannot match the text by chance.
        let value: unknown = leaf;
        let path = "";
        for (const s of [...steps].reverse()) {
          if ("index" in s) {
            const array: unknown[] = new Array<unknown>(s.index).fill(0);
            array.push(value);
            value = array;
            path = `[${s.index}]${path}`;
          } else {
            const object: Record<string, unknown> = {};
            for (let i = 0; i < s.before; i++) object[`Qz-sibling${i}`] = i;
            object[`Qz${s.name}`] = value;
            value = object;
            path = `.<member ${s.before + 1}>${path}`;
          }
        }
        for (const encode of [
          () => encodeFieldValue("doc", "json", value),
          () => encodeIndexValue("doc", value),
        ]) {
          let message = "";
          try {
            encode();
          } catch (error) {
            message = seen(error);
          }
          expect(message).toContain(`${found} at $${path}`);
          expect(message).not.toContain("Qz");
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("legacy date text (FORMAT §6.7): ISO 8601 only, nothing guessed", () => {
  const binding = { model: "User", field: "born", context: { tenant: "t1" } };
  let legacy: FieldEncryptionEngine;
  beforeAll(async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    legacy = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
      legacyPlaintext: true,
    });
  });

  const refused = [
    "SECRET-MARKER-123",
    "1",
    "0",
    "2020",
    "x 2020",
    "SECRET 12",
    "abc-1-2",
    "",
    "Tue Jan 02 2024",
    new Date(0).toString(),
    new Date(0).toUTCString(),
    "01/02/2024",
    "2024-1-2",
    "2024-01-02T03",
    "2024-01-02Z",
    " 2024-01-02",
    "2024-01-02\n",
    "2024-02-30",
    "2023-02-29",
    "1900-02-29",
    "2024-04-31",
    "2024-13-01",
    "2024-00-10",
    "2024-01-00",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:60Z",
    "2024-01-01T23:59:60Z",
    "2024-01-02T03:04:05+24:00",
    "2024-01-02T03:04:05+02:60",
    "2024-01-02T03:04:05.1234567890Z",
    "-000000-01-01T00:00:00.000Z",
    "+275760-09-13T00:00:00.001Z",
    "2024-01-02 BC",
  ];

  test.each(refused)("refuses %j, without quoting it", (text) => {
    let error: unknown;
    try {
      parseLegacyValue("born", "date", text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toBe('legacy value of "born" is not a date in text form');
  });

  test("a read refuses such a row with the generic error, not a guessed date", async () => {
    for (const text of ["SECRET-MARKER-123", "1", "2024-02-30"]) {
      const read = legacy.decryptText(binding, { type: "date" }, text);
      await expect(read).rejects.toThrow(InvalidCiphertextError);
      await expect(legacy.decryptText(binding, { type: "date" }, text)).rejects.not.toThrow(
        /SECRET|2024/,
      );
    }
  });

  test.each([
    ["2024-05-06", "2024-05-06T00:00:00.000Z"],
    ["2024-05-06T07:08:09.123Z", "2024-05-06T07:08:09.123Z"],
    ["2024-05-06T07:08Z", "2024-05-06T07:08:00.000Z"],
    ["2024-05-06 07:08:09.123456+02", "2024-05-06T05:08:09.123Z"],
    ["2024-05-06T07:08:09.9+0200", "2024-05-06T05:08:09.900Z"],
    ["2024-05-06T07:08-02:30", "2024-05-06T09:38:00.000Z"],
    ["2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z"],
    ["2000-02-29", "2000-02-29T00:00:00.000Z"],
    ["0099-12-31", "0099-12-31T00:00:00.000Z"],
    ["+275760-09-13T00:00:00.000Z", "+275760-09-13T00:00:00.000Z"],
    ["-271821-04-20T00:00:00.000Z", "-271821-04-20T00:00:00.000Z"],
  ])("reads %s as %s", async (text, iso) => {
    expect((parseLegacyValue("born", "date", text) as Date).toISOString()).toBe(iso);
    expect(
      ((await legacy.decryptText(binding, { type: "date" }, text)) as Date).toISOString(),
    ).toBe(iso);
  });

  test("reads a time without a zone as local time, as ECMAScript does", () => {
    expect(parseLegacyValue("born", "date", "2024-05-06T07:08:09")).toEqual(
      new Date(2024, 4, 6, 7, 8, 9),
    );
    expect(parseLegacyValue("born", "date", "2024-05-06 07:08")).toEqual(
      new Date(2024, 4, 6, 7, 8),
    );
  });

  test("reads back every date's legacy form (toISOString)", () => {
    fc.assert(
      fc.property(fc.date({ noInvalidDate: true }), (date) => {
        const form = legacy.legacyForm(binding, { type: "date" }, date, "text");
        expect(form).toBe(date.toISOString());
        expect(parseLegacyValue("born", "date", form as string)).toEqual(date);
      }),
      { numRuns: 500 },
    );
  });
});
