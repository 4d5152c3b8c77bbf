// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
/**
 * The IAM glob (`*`, `?`, GLOB_ESCAPE) of StringLike / ArnLike / Action / Resource: the answers
 * of a regular expression built from the pattern, the same answers as the backtracking matcher
 * it replaced wherever the value holds no `*` (where that one was wrong), and work linear in the
 * input where that one took |pattern|·|value| steps (a caller could write the pattern through a
 * policy variable).
 */
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import type { StoredKey } from "../../src/keystore/key-store.ts";
import {
  actionOf,
  authorizationRequest,
  type CallState,
  defaultAccountPolicy,
} from "../../src/policy/authorizer.ts";
import { evaluate } from "../../src/policy/evaluate.ts";
import { type GlobMeter, globMatch } from "../../src/policy/glob-match.ts";
import { parsePolicy } from "../../src/policy/policy-document.ts";
import { GLOB_ESCAPE } from "../../src/policy/variables.ts";

/**
 * The matcher as it was before (packages/core/src/policy/conditions.ts). It read a `*` of the
 * value as matching a `*` of the pattern literally, with no way back, so `a*` missed `a*b`.
 */
function referenceGlobMatch(pattern: string, value: string, ignoreCase = false): boolean {
  const characters = (text: string): string | readonly string[] =>
    /[\uD800-\uDFFF]/.test(text) ? Array.from(text) : text;
  if (pattern === "*") return true;
  const p = characters(ignoreCase ? pattern.toLowerCase() : pattern);
  const v = characters(ignoreCase ? value.toLowerCase() : value);
  let pi = 0;
  let vi = 0;
  let star = -1;
  let mark = 0;
  while (vi < v.length) {
    if (pi + 1 < p.length && p[pi] === GLOB_ESCAPE && p[pi + 1] === v[vi]) {
      pi += 2;
      vi++;
    } else if (pi < p.length && p[pi] !== GLOB_ESCAPE && (p[pi] === "?" || p[pi] === v[vi])) {
      pi++;
      vi++;
    } else if (pi < p.length && p[pi] === "*") {
      star = pi++;
      mark = vi;
    } else if (star !== -1) {
      pi = star + 1;
      vi = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === "*") pi++;
  return pi === p.length;
}

const E = GLOB_ESCAPE;

/** IAM's glob as a regular expression over code points (`u`): the oracle. */
function regexGlobMatch(pattern: string, value: string, ignoreCase = false): boolean {
  const p = Array.from(ignoreCase ? pattern.toLowerCase() : pattern);
  const literal = (c: string): string => `\\u{${c.codePointAt(0)!.toString(16)}}`;
  let source = "";
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === E) {
      const next = p[++i];
      if (next === undefined) return false; // escapes nothing: matches nothing
      source += literal(next);
    } else if (c === "*") source += "[^]*";
    else if (c === "?") source += "[^]";
    else source += literal(c);
  }
  return new RegExp(`^${source}$`, "u").test(ignoreCase ? value.toLowerCase() : value);
}
const EMOJI = "\u{1F600}";
// Lone surrogates too: a value may hold them, and no pattern may match half of a pair.
const ALPHABET = ["a", "b", "A", "*", "?", E, EMOJI, "\uD83D", "\uDE00"] as const;
const text = (maxLength: number) =>
  fc.array(fc.constantFrom(...ALPHABET), { maxLength }).map((cs) => cs.join(""));

/** A pattern made from `value` (keep, `?`, `*`, `*`+keep, escape), so most pairs match. */
const derivedPair = fc
  .array(fc.tuple(fc.constantFrom(...ALPHABET), fc.integer({ min: 0, max: 5 })), { maxLength: 14 })
  .map((cells) => {
    const value = cells.map(([c]) => c).join("");
    const pattern = cells
      .map(([c, op]) => [c, "?", "*", `*${c}`, `${E}${c}`, `${c}*`][op])
      .join("");
    return { pattern, value };
  });

/** Long runs with `?` between `*`s (more than one 32-bit word), on a value of a, b and 😀. */
const longRunPair = fc
  .record({
    value: fc.array(fc.constantFrom<string>("a", "b", "a", "b", EMOJI), {
      minLength: 40,
      maxLength: 240,
    }),
    start: fc.nat(),
    length: fc.integer({ min: 1, max: 100 }),
    holes: fc.array(fc.nat(), { maxLength: 8 }),
    flip: fc.option(fc.nat()),
    tail: fc.constantFrom("", "a", "b", "?"),
  })
  .map(({ value, start, length, holes, flip, tail }) => {
    const from = start % value.length;
    const run = value.slice(from, from + length);
    for (const h of holes) run[h % run.length] = "?";
    if (flip !== null) {
      const i = flip % run.length;
      run[i] = run[i] === "a" ? "b" : "a";
    }
    return { pattern: `*${run.join("")}*${tail}`, value: value.join("") };
  });

describe("globMatch is IAM's glob", () => {
  test("random patterns and values", () => {
    fc.assert(
      fc.property(text(10), text(12), fc.boolean(), (pattern, value, ignoreCase) => {
        expect(globMatch(pattern, value, ignoreCase)).toBe(
          regexGlobMatch(pattern, value, ignoreCase),
        );
      }),
      { numRuns: 5000 },
    );
  });

  test("patterns derived from the value", () => {
    fc.assert(
      fc.property(derivedPair, text(3), fc.boolean(), ({ pattern, value }, noise, ignoreCase) => {
        for (const [p, v] of [
          [pattern, value],
          [pattern, value + noise],
          [noise + pattern, value],
        ] as const) {
          expect(globMatch(p, v, ignoreCase)).toBe(regexGlobMatch(p, v, ignoreCase));
        }
      }),
      { numRuns: 3000 },
    );
  });

  test("long runs with ? between two *", () => {
    fc.assert(
      fc.property(longRunPair, ({ pattern, value }) => {
        expect(globMatch(pattern, value)).toBe(regexGlobMatch(pattern, value));
      }),
      { numRuns: 1000 },
    );
  });

  test.each([
    ["*", "", true],
    ["*", "anything", true],
    ["", "", true],
    ["", "a", false],
    ["a", "", false],
    ["kms:Encrypt", "kms:Encrypt", true],
    ["kms:Encrypt", "kms:encrypt", false],
    ["kms:*", "kms:", true],
    ["kms:*", "kms:Decrypt", true],
    ["kms:*", "km", false],
    ["**", "", true],
    ["a*a", "a", false],
    ["a*a", "aa", true],
    ["*ab*ab*", "abab", true],
    ["*ab*ab*", "aba", false],
    ["*aab", "aaab", true],
    ["*a?c*", "xxabcxx", true],
    ["*a?c*", "xxacxx", false],
    ["?", "", false],
    ["??", "ab", true],
    ["v?", `v${EMOJI}`, true],
    ["v??", `v${EMOJI}`, false],
    ["?\uDE00", EMOJI, false],
    [`*${EMOJI}`, `x${EMOJI}`, true],
    [`${E}*`, "*", true],
    [`${E}*`, "x", false],
    [`${E}?`, "?", true],
    [`${E}?`, "x", false],
    [`${E}${E}`, E, true],
    [`a*${E}`, "a", false],
    [E, "", false],
    [`*${E}*b`, "xx*b", true],
    [`*${E}*b`, "xxyb", false],
    // A `*` in the value is just a character: the pattern's `*` may still take more or none.
    ["a*", "a*b", true],
    ["x*", "x*", true],
    ["*?", "*", true],
    ["a*b", "a**b", true],
    ["admin/*", "admin/*x", true],
  ] as const)("%j against %j → %s", (pattern, value, expected) => {
    expect(globMatch(pattern, value)).toBe(expected);
    expect(regexGlobMatch(pattern, value)).toBe(expected);
  });

  test("same answers as the matcher it replaced for values without `*`", () => {
    fc.assert(
      fc.property(text(10), text(12), fc.boolean(), (pattern, value, ignoreCase) => {
        fc.pre(!value.includes("*"));
        expect(globMatch(pattern, value, ignoreCase)).toBe(
          referenceGlobMatch(pattern, value, ignoreCase),
        );
      }),
      { numRuns: 3000 },
    );
  });

  test("ignoreCase folds the pattern and the value", () => {
    expect(globMatch("Users/*/KEYS", "users/alice/keys", true)).toBe(true);
    expect(globMatch("Users/*/KEYS", "users/alice/keys")).toBe(false);
  });
});

describe("globMatch does work proportional to its input", () => {
  const steps = (pattern: string, value: string): { matched: boolean; steps: number } => {
    const meter: GlobMeter = { steps: 0 };
    const matched = globMatch(pattern, value, false, meter);
    return { matched, steps: meter.steps };
  };
  const linear = (pattern: string, value: string) => 4 * (pattern.length + value.length);

  test.each([
    // StringLike "*${kms:EncryptionContext:owner}", owner = 2 600 a's + b, path = 5 400 a's.
    ["a substituted owner after *", `*${"a".repeat(2600)}b`, "a".repeat(5400), false],
    ["a 2.7 KB literal after *", `*${"a".repeat(2700)}b`, "a".repeat(8000), false],
    ["a 2.7 KB literal between two *", `*${"a".repeat(2700)}b*`, "a".repeat(8000), false],
    ["many short runs", `${"*a".repeat(2000)}*b`, "a".repeat(8000), false],
    ["a literal found at the end", `*${"ab".repeat(1000)}c*`, `${"ab".repeat(4000)}c`, true],
  ])("%s", (_, pattern, value, expected) => {
    const { matched, steps: taken } = steps(pattern, value);
    expect(matched).toBe(expected);
    expect(taken).toBeLessThanOrEqual(linear(pattern, value));
  });

  test("a run with ? costs one pass over the value per 32 characters of the run", () => {
    const run = `${"a".repeat(2000)}?b`;
    const pattern = `*${run}*`;
    const value = "a".repeat(8000);
    const { matched, steps: taken } = steps(pattern, value);
    expect(matched).toBe(false);
    const words = Math.ceil(run.length / 32);
    expect(taken).toBeLessThanOrEqual(4 * pattern.length + 2 * value.length * words);
    // A short run with ? is linear: one word.
    expect(steps(`*a?b*`, value).steps).toBeLessThanOrEqual(linear(`*a?b*`, value));
  });

  test("doubling the input at most doubles the work", () => {
    const at = (n: number) => steps(`*${"a".repeat(n)}b`, "a".repeat(3 * n)).steps;
    expect(at(4000)).toBeLessThanOrEqual(2.1 * at(2000));
  });
});

describe("StringLike in key policies", () => {
  const IDENTITY = { partition: "aws", region: "local", account: "000000000000" };
  const ALICE = "arn:aws:iam::111122223333:user/alice";
  const KEY: StoredKey = {
    keyId: "1234abcd-12ab-34cd-56ef-1234567890ab",
    revision: 1,
    createdAt: 0,
    description: "",
    keySpec: "SYMMETRIC_DEFAULT",
    keyUsage: "ENCRYPT_DECRYPT",
    origin: "AWS_KMS",
    multiRegion: false,
    keyState: "Enabled",
    rotation: { enabled: false, periodInDays: 365, onDemandRotations: 0 },
    tags: [],
    versions: [],
    currentVersion: 1,
  };
  const allowed = (
    statements: readonly Record<string, unknown>[],
    encryptionContext: Record<string, string>,
  ): boolean => {
    const policy = parsePolicy(
      JSON.stringify({
        Version: "2012-10-17",
        Statement: statements.map((s) => ({
          Principal: { AWS: ALICE },
          Action: "kms:*",
          Resource: "*",
          ...s,
        })),
      }),
    );
    const call: CallState = {
      operation: "encrypt",
      principal: ALICE,
      principalAccount: "111122223333",
      request: { encryptionContext },
      requestId: "r",
      now: 0,
      settings: {
        identity: IDENTITY,
        enabled: true,
        accountPolicy: defaultAccountPolicy(IDENTITY),
        principalTags: new Map(),
      },
      keys: new Map(),
      decisions: [],
    };
    return evaluate(policy, [], authorizationRequest(call, actionOf("encrypt"), KEY, "single"))
      .allowed;
  };
  const ownPath = {
    Effect: "Allow",
    Condition: {
      StringLike: { "kms:EncryptionContext:path": "*/${kms:EncryptionContext:owner}/*" },
    },
  };

  test.each([
    [{ owner: "alice", path: "/home/alice/notes" }, true],
    [{ owner: "alice", path: "/home/alicia/notes" }, false],
    [{ owner: "*", path: "/home/alice/notes" }, false],
    [{ owner: "*", path: "/home/*/notes" }, true],
    [{ owner: "a?c", path: "/x/abc/y" }, false],
    [{ owner: `${"a".repeat(2600)}b`, path: `/${"a".repeat(5400)}/` }, false],
    [{ owner: `${"a".repeat(2600)}b`, path: `/${"a".repeat(2500)}/${"a".repeat(2600)}b/` }, true],
  ])("a path under the owner's name: %#", (context, expected) => {
    expect(allowed([ownPath], context)).toBe(expected);
  });

  test("a `*` in the context where the pattern has one does not step around a Deny", () => {
    const statements = [
      { Effect: "Allow" },
      { Effect: "Deny", Condition: { StringLike: { "kms:EncryptionContext:path": "admin/*" } } },
    ];
    expect(allowed(statements, { path: "users/alice" })).toBe(true);
    expect(allowed(statements, { path: "admin/keys" })).toBe(false);
    expect(allowed(statements, { path: "admin/*" })).toBe(false);
    expect(allowed(statements, { path: "admin/*keys" })).toBe(false);
  });
});
