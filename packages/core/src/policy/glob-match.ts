/**
 * IAM's glob, as StringLike / ArnLike and Action / Resource patterns use it, in time linear in
 * the pattern and the value (see globMatch for runs holding `?`). A backtracking matcher takes
 * |pattern|·|value| steps on `*aaa…ab` against `aaa…a`, and a policy variable lets a caller
 * write up to 8 KB of that pattern themselves (`StringLike "*${kms:EncryptionContext:owner}"`).
 */
import { GLOB_ESCAPE } from "./variables.ts";

/** Counts units of work (character comparisons, bit-vector words) so a test can bound it. */
export interface GlobMeter {
  steps: number;
}

type Characters = string | readonly string[];

/** A `?` in a segment parsed from an escaped pattern: no character is the empty string. */
const ANY = "";

/** Characters that make a pattern more than a literal. */
const SPECIAL = new RegExp(`[*?${GLOB_ESCAPE}]`);

/** What a pattern needs parsed for: escapes, characters of two UTF-16 units. */
const NOT_PLAIN = new RegExp(`[${GLOB_ESCAPE}\\uD800-\\uDFFF]`);

/** Any UTF-16 surrogate: the string holds a character that takes two code units. */
const SURROGATE = /[\uD800-\uDFFF]/;

/** The characters of `text`, as code points when it has any outside the BMP. */
function characters(text: string): Characters {
  return SURROGATE.test(text) ? Array.from(text) : text;
}

/**
 * The pattern's runs between unescaped `*`s, each a list of characters with ANY for `?`.
 * Undefined when the pattern ends in a lone GLOB_ESCAPE: that escapes nothing, so no value
 * matches it.
 */
function segmentsOf(p: Characters): readonly (readonly string[])[] | undefined {
  const segments: string[][] = [];
  let current: string[] = [];
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === GLOB_ESCAPE) {
      i++;
      if (i === p.length) return undefined;
      current.push(p[i]!);
    } else if (c === "*") {
      segments.push(current);
      current = [];
    } else {
      current.push(c === "?" ? ANY : c);
    }
  }
  segments.push(current);
  return segments;
}

/** Whether `segment` matches v[at, at + |segment|); `wild` stands for `?` in it. */
function matchesAt(
  segment: Characters,
  v: Characters,
  at: number,
  wild: string,
  meter?: GlobMeter,
): boolean {
  for (let k = 0; k < segment.length; k++) {
    const c = segment[k]!;
    if (c !== wild && c !== v[at + k]) {
      if (meter !== undefined) meter.steps += k + 1;
      return false;
    }
  }
  if (meter !== undefined) meter.steps += segment.length;
  return true;
}

/** Reused for short runs: allocating it took longer than matching an ARN (policies run per call). */
const BORDER_SCRATCH = new Int32Array(256);

/**
 * Where `segment` (no `?`) first occurs wholly inside v[from, to), or -1: Knuth–Morris–Pratt,
 * at most 2·|segment| + 2·(to − from) comparisons.
 */
function findLiteral(
  segment: Characters,
  v: Characters,
  from: number,
  to: number,
  meter?: GlobMeter,
): number {
  const length = segment.length;
  // border[k]: length of the longest proper prefix of segment[0..k] that is also its suffix.
  const border = length <= BORDER_SCRATCH.length ? BORDER_SCRATCH : new Int32Array(length);
  let steps = 0;
  for (let k = 1, b = 0; k < length; k++) {
    while (b > 0 && segment[k] !== segment[b]) {
      b = border[b - 1]!;
      steps++;
    }
    if (segment[k] === segment[b]) b++;
    border[k] = b;
    steps++;
  }
  let found = -1;
  for (let i = from, k = 0; i < to; i++) {
    while (k > 0 && segment[k] !== v[i]) {
      k = border[k - 1]!;
      steps++;
    }
    if (segment[k] === v[i]) k++;
    steps++;
    if (k === length) {
      found = i - length + 1;
      break;
    }
  }
  if (meter !== undefined) meter.steps += steps;
  return found;
}

/**
 * Where `segment` (with `?`) first occurs wholly inside v[from, to), or -1: trying each start
 * when that is cheaper, else Shift-And over ⌈|segment|/32⌉ words per character of the value.
 * No linear-time method is known for one-character wildcards short of FFTs; only a policy's own
 * text holds a `?` (substituted values are escaped), and a segment longer than the value is
 * refused before this runs.
 */
function findWithAny(
  segment: Characters,
  v: Characters,
  from: number,
  to: number,
  wild: string,
  meter?: GlobMeter,
): number {
  const length = segment.length;
  const words = (length + 31) >>> 5;
  const starts = to - length - from + 1;
  if (starts * length <= 2 * (to - from) * words) {
    for (let at = from; at < from + starts; at++) {
      if (matchesAt(segment, v, at, wild, meter)) return at;
    }
    return -1;
  }
  // Bit k of state: segment[0..k] matches the value ending here. `?` positions are set for
  // every character; a literal's are kept as (word, bits) pairs, so memory stays O(|segment|).
  const any = new Uint32Array(words);
  const literal = new Map<string, number[]>();
  for (let k = 0; k < length; k++) {
    const c = segment[k]!;
    const word = k >>> 5;
    const bit = 1 << (k & 31);
    if (c === wild) {
      any[word]! |= bit;
      continue;
    }
    let pairs = literal.get(c);
    if (pairs === undefined) {
      pairs = [];
      literal.set(c, pairs);
    }
    if (pairs.length > 0 && pairs[pairs.length - 2] === word) pairs[pairs.length - 1]! |= bit;
    else pairs.push(word, bit);
  }
  const state = new Uint32Array(words);
  const shifted = new Uint32Array(words);
  const last = words - 1;
  const done = 1 << ((length - 1) & 31);
  let steps = length;
  let found = -1;
  for (let i = from; i < to; i++) {
    let carry = 1;
    for (let w = 0; w < words; w++) {
      const d = state[w]!;
      const s = (d << 1) | carry;
      carry = d >>> 31;
      shifted[w] = s;
      state[w] = s & any[w]!;
    }
    const pairs = literal.get(v[i]!);
    if (pairs !== undefined) {
      for (let j = 0; j < pairs.length; j += 2) {
        const w = pairs[j]!;
        state[w]! |= shifted[w]! & pairs[j + 1]!;
      }
    }
    steps += words + (pairs === undefined ? 0 : pairs.length / 2);
    if ((state[last]! & done) !== 0) {
      found = i - length + 1;
      break;
    }
  }
  if (meter !== undefined) meter.steps += steps;
  return found;
}

/**
 * Glob with `*` (any run, including none) and `?` (one character), as StringLike / ArnLike use.
 * A character after GLOB_ESCAPE is literal (resolved policy variables and `${*}` put it there).
 * Characters are code points: `?` matches an emoji whole, and no pattern matches half of one.
 *
 * Cost: O(|pattern| + |value|) when no `?` stands between two `*`s — always so for text a
 * policy variable substituted — and O(|pattern| + |value|·⌈s/32⌉) otherwise, s the longest such
 * run. `meter`, when given, is charged the steps taken.
 */
export function globMatch(
  pattern: string,
  value: string,
  ignoreCase = false,
  meter?: GlobMeter,
): boolean {
  if (pattern === "*") return true;
  const patternText = ignoreCase ? pattern.toLowerCase() : pattern;
  const valueText = ignoreCase ? value.toLowerCase() : value;
  if (meter !== undefined) meter.steps += patternText.length;
  if (!SPECIAL.test(patternText)) return patternText === valueText;
  let segments: readonly Characters[];
  let v: Characters;
  let wild: string;
  if (!NOT_PLAIN.test(patternText) && !(patternText.includes("?") && SURROGATE.test(valueText))) {
    // No escapes and only characters of one UTF-16 unit in the pattern: a run of them starts
    // and ends between two characters of the value, so code units can stand for characters
    // (for `?` too, when the value has no characters of two units either).
    segments = patternText.split("*");
    v = valueText;
    wild = "?";
  } else {
    const parsed = segmentsOf(characters(patternText));
    if (parsed === undefined) return false;
    segments = parsed;
    v = characters(valueText);
    wild = ANY;
  }
  let fixed = 0;
  for (const segment of segments) fixed += segment.length;
  if (fixed > v.length) return false;
  const first = segments[0]!;
  if (segments.length === 1) return fixed === v.length && matchesAt(first, v, 0, wild, meter);
  const lastSegment = segments[segments.length - 1]!;
  const end = v.length - lastSegment.length;
  if (!matchesAt(first, v, 0, wild, meter) || !matchesAt(lastSegment, v, end, wild, meter)) {
    return false;
  }
  // Between two `*`s a run has a fixed length, so its leftmost occurrence ends earliest and
  // leaves the most room for the runs after it: any match can be moved onto it. Each search
  // starts where the previous run ended, so the searches read disjoint stretches of the value.
  let at = first.length;
  for (let s = 1; s < segments.length - 1; s++) {
    const segment = segments[s]!;
    if (segment.length === 0) continue;
    const found = segment.includes(wild)
      ? findWithAny(segment, v, at, end, wild, meter)
      : findLiteral(segment, v, at, end, meter);
    if (found === -1) return false;
    at = found + segment.length;
  }
  return true;
}
