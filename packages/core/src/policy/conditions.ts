/**
 * IAM condition operators with AWS's semantics for missing keys, negation, multi-valued keys
 * (ForAllValues:/ForAnyValue:) and the …IfExists suffix.
 */
import { BlockList, isIP } from "node:net";
import { globMatch } from "./glob-match.ts";

// evaluate.ts matches Action and Resource patterns with the same glob.
export { globMatch };

type Test = (requestValue: string, policyValue: string) => boolean;

export interface ConditionOperator {
  /** Operator name without qualifiers, e.g. `StringNotLike`. */
  readonly base: string;
  readonly set?: "ForAllValues" | "ForAnyValue";
  readonly ifExists: boolean;
  /** Whether policy values are glob patterns (StringLike, Arn*): variables resolve literally. */
  readonly glob: boolean;
  /** Whether policy variables may appear in its values (String and Arn operators, as in IAM). */
  readonly takesVariables: boolean;
  /** Returns why the policy values are unusable, or undefined. */
  validate(values: readonly string[]): string | undefined;
  /**
   * Evaluates against the request's values for the key: undefined when the key is absent,
   * otherwise its values (one for single-valued keys).
   */
  evaluate(requestValues: readonly string[] | undefined, policyValues: readonly string[]): boolean;
}

/**
 * An integer or decimal as IAM writes one ("30", "-1.5"). `Number()` reads far more — "0x1E",
 * "0b11110", " 3e1 " and "30." are all 30 — so a value would match a number its writer did not
 * put in it. Policies are held to it when parsed strictly; request values always.
 */
export const DECIMAL: RegExp = /^-?\d+(?:\.\d+)?$/;

function parseNumber(value: string): number | undefined {
  if (value.trim() === "") return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? n : undefined;
}

const ISO_DATE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * ISO-8601 dates or epoch seconds, as IAM accepts. A time without an offset is UTC, as in IAM:
 * Date.parse would read it in the process's time zone, so a policy would mean another instant
 * on each server. Dates that do not exist (2026-02-30) are refused, not rolled over.
 */
function parseDate(value: string): number | undefined {
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const m = ISO_DATE.exec(value);
  if (m === null) return undefined;
  const [, year, month, day, hour = "00", minute = "00", second = "00", fraction = ""] = m;
  const offset = m[8]?.toUpperCase() ?? "Z";
  const t = Date.parse(`${year}-${month}-${day}T${hour}:${minute}:${second}${fraction}${offset}`);
  if (Number.isNaN(t)) return undefined;
  // Date.parse accepts 2026-02-30 as March 2: the calendar date must survive the round trip.
  const civil = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  return civil.getUTCDate() === Number(day) && civil.getUTCMonth() === Number(month) - 1
    ? t
    : undefined;
}

function arnMatch(pattern: string, value: string): boolean {
  const split = (s: string): string[] | undefined => {
    const parts = s.split(":");
    if (parts.length < 6) return undefined;
    return [...parts.slice(0, 5), parts.slice(5).join(":")];
  };
  const p = split(pattern);
  const v = split(value);
  if (p === undefined || v === undefined) return pattern === "*";
  return p.every((part, i) => globMatch(part, v[i]!));
}

const blockLists = new Map<string, BlockList | null>();

/** One BlockList per CIDR, built once: policies repeat the same blocks on every call. */
function blockListOf(cidr: string): BlockList | null {
  let list = blockLists.get(cidr);
  if (list !== undefined) return list;
  const [address, prefixText] = cidr.split("/");
  const addressFamily = isIP(address ?? "");
  list = null;
  if (addressFamily !== 0) {
    list = new BlockList();
    const type = addressFamily === 4 ? "ipv4" : "ipv6";
    const prefix = prefixText === undefined ? (addressFamily === 4 ? 32 : 128) : Number(prefixText);
    list.addSubnet(address!, prefix, type);
  }
  if (blockLists.size >= 1024) blockLists.clear();
  blockLists.set(cidr, list);
  return list;
}

function cidrMatch(cidr: string, ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  const list = blockListOf(cidr);
  return list?.check(ip, family === 4 ? "ipv4" : "ipv6") ?? false;
}

function validCidr(value: string): boolean {
  const [address, prefix, extra] = value.split("/");
  const family = isIP(address ?? "");
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

interface BaseOperator {
  readonly test: Test;
  readonly negated: boolean;
  readonly validate?: (value: string) => string | undefined;
}

const numeric =
  (cmp: (a: number, b: number) => boolean): Test =>
  (r, p) => {
    // A policy stored before numeric literals were held to DECIMAL still compares as it did.
    const a = DECIMAL.test(r) ? Number(r) : undefined;
    const b = parseNumber(p);
    return a !== undefined && b !== undefined && cmp(a, b);
  };
const date =
  (cmp: (a: number, b: number) => boolean): Test =>
  (r, p) => {
    const a = parseDate(r);
    const b = parseDate(p);
    return a !== undefined && b !== undefined && cmp(a, b);
  };
const numberRule = (v: string): string | undefined =>
  parseNumber(v) === undefined ? `value "${v}" is not a number` : undefined;
const dateRule = (v: string): string | undefined =>
  parseDate(v) === undefined ? `value "${v}" is not an ISO-8601 date or epoch seconds` : undefined;
const boolRule = (v: string): string | undefined =>
  v.toLowerCase() === "true" || v.toLowerCase() === "false"
    ? undefined
    : `value "${v}" must be true or false`;

const eq = (a: number, b: number): boolean => a === b;
const lt = (a: number, b: number): boolean => a < b;
const le = (a: number, b: number): boolean => a <= b;
const gt = (a: number, b: number): boolean => a > b;
const ge = (a: number, b: number): boolean => a >= b;

const stringEquals: Test = (r, p) => r === p;
const stringEqualsIgnoreCase: Test = (r, p) => r.toLowerCase() === p.toLowerCase();
const stringLike: Test = (r, p) => globMatch(p, r);
const arnLike: Test = (r, p) => arnMatch(p, r);
const ipMatch: Test = (r, p) => cidrMatch(p, r);
const ipRule = (v: string): string | undefined =>
  validCidr(v) ? undefined : `value "${v}" is not an IP address or CIDR block`;

const BASE_OPERATORS: Readonly<Record<string, BaseOperator>> = {
  StringEquals: { test: stringEquals, negated: false },
  StringNotEquals: { test: stringEquals, negated: true },
  StringEqualsIgnoreCase: { test: stringEqualsIgnoreCase, negated: false },
  StringNotEqualsIgnoreCase: { test: stringEqualsIgnoreCase, negated: true },
  StringLike: { test: stringLike, negated: false },
  StringNotLike: { test: stringLike, negated: true },
  NumericEquals: { test: numeric(eq), negated: false, validate: numberRule },
  NumericNotEquals: { test: numeric(eq), negated: true, validate: numberRule },
  NumericLessThan: { test: numeric(lt), negated: false, validate: numberRule },
  NumericLessThanEquals: { test: numeric(le), negated: false, validate: numberRule },
  NumericGreaterThan: { test: numeric(gt), negated: false, validate: numberRule },
  NumericGreaterThanEquals: { test: numeric(ge), negated: false, validate: numberRule },
  DateEquals: { test: date(eq), negated: false, validate: dateRule },
  DateNotEquals: { test: date(eq), negated: true, validate: dateRule },
  DateLessThan: { test: date(lt), negated: false, validate: dateRule },
  DateLessThanEquals: { test: date(le), negated: false, validate: dateRule },
  DateGreaterThan: { test: date(gt), negated: false, validate: dateRule },
  DateGreaterThanEquals: { test: date(ge), negated: false, validate: dateRule },
  Bool: { test: (r, p) => r.toLowerCase() === p.toLowerCase(), negated: false, validate: boolRule },
  ArnEquals: { test: arnLike, negated: false },
  ArnLike: { test: arnLike, negated: false },
  ArnNotEquals: { test: arnLike, negated: true },
  ArnNotLike: { test: arnLike, negated: true },
  IpAddress: { test: ipMatch, negated: false, validate: ipRule },
  NotIpAddress: { test: ipMatch, negated: true, validate: ipRule },
};

function makeOperator(
  base: string,
  set: "ForAllValues" | "ForAnyValue" | undefined,
  ifExists: boolean,
): ConditionOperator | undefined {
  if (base === "Null") {
    if (ifExists) return undefined;
    return {
      base,
      ...(set !== undefined ? { set } : {}),
      ifExists,
      glob: false,
      takesVariables: false,
      validate: (values) => values.map(boolRule).find((p) => p !== undefined),
      evaluate: (request, policy) => {
        const absent = request === undefined || request.length === 0;
        return policy.some((p) => (p.toLowerCase() === "true") === absent);
      },
    };
  }
  const op = BASE_OPERATORS[base];
  if (op === undefined) return undefined;
  const matches = (value: string, policy: readonly string[]): boolean =>
    policy.some((p) => op.test(value, p));
  return {
    base,
    ...(set !== undefined ? { set } : {}),
    ifExists,
    glob: op.test === stringLike || op.test === arnLike,
    takesVariables: base.startsWith("String") || base.startsWith("Arn"),
    validate: (values) =>
      op.validate === undefined ? undefined : values.map(op.validate).find((p) => p !== undefined),
    evaluate: (request, policy) => {
      // An empty multi-valued key (`encryptionContext: {}` for kms:EncryptionContextKeys) is
      // absent, as Null reads it: read as present, a Deny `StringLikeIfExists` that holds when
      // the context is omitted would let `{}` through. Without IfExists or a set qualifier the
      // answer is the one an empty list gave (a positive operator false, a negated one true).
      if (request === undefined || request.length === 0) {
        if (ifExists) return true;
        if (set === "ForAllValues") return true;
        if (set === "ForAnyValue") return false;
        return op.negated;
      }
      const hit = (v: string): boolean => (op.negated ? !matches(v, policy) : matches(v, policy));
      if (set === "ForAllValues") return request.every(hit);
      if (set === "ForAnyValue") return request.some(hit);
      // Without a set qualifier a negated operator must miss every value, a positive one hit any.
      return op.negated ? request.every(hit) : request.some(hit);
    },
  };
}

const operatorCache = new Map<string, ConditionOperator | undefined>();

/** Parses `[ForAllValues:|ForAnyValue:]<Operator>[IfExists]`; undefined when unknown. */
export function parseConditionOperator(text: string): ConditionOperator | undefined {
  if (operatorCache.has(text)) return operatorCache.get(text);
  let rest = text;
  let set: "ForAllValues" | "ForAnyValue" | undefined;
  if (rest.startsWith("ForAllValues:")) {
    set = "ForAllValues";
    rest = rest.slice("ForAllValues:".length);
  } else if (rest.startsWith("ForAnyValue:")) {
    set = "ForAnyValue";
    rest = rest.slice("ForAnyValue:".length);
  }
  const ifExists = rest.endsWith("IfExists");
  if (ifExists) rest = rest.slice(0, -"IfExists".length);
  const operator = makeOperator(rest, set, ifExists);
  if (operatorCache.size < 1024) operatorCache.set(text, operator);
  return operator;
}
