import { createKms, runWithEncryptionContext, ValidationError } from "@kms/core";
import { SeededRandom as Rng } from "@kms/tooling/random";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import type { TestDatabase } from "./backends.ts";
import type { PrismaClient } from "./generated/client.ts";
import {
  attempt,
  BACKENDS,
  describeError,
  type Extended,
  extendClient,
  leaks,
  openRecordingClient,
  type PropertyBackend,
  type RecordingDatabase,
  secretText,
  show,
} from "./recording.ts";

// Property tests of the `where` rewriting, as seeded random loops: fast-check is not a
// devDependency of this package. Every case derives its own PRNG from (SEED, property, case), so
// a failure message's seed and case index reproduce it alone:
//   WHERE_PROPERTIES_SEED=<seed> npx vitest run test/where-properties.test.ts

const SEED = Number(process.env.WHERE_PROPERTIES_SEED ?? 20_260_601);

type Where = { [key: string]: unknown };

function isPlainObject(v: unknown): v is Where {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

const PREFIX = "kms1:";
const LONE_SURROGATE = "\uD83D";
/** A surrogate without its pair: not Unicode text, which the engine refuses to encrypt. */
const LONE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** The phone column's blind index normalization (`normalize: "trim,lowercase"` in the schema). */
const normalizePhone = (v: string): string => v.trim().toLowerCase();

// ---------------------------------------------------------------------------------------------
// Reference semantics: SQL's three-valued logic over the plaintext rows, as the database
// evaluates Prisma's filters (SQLite's LIKE folds ASCII case, PostgreSQL's does not unless
// `mode: "insensitive"`, which folds every comparison of its filter object; comparisons are
// binary: the test database's collation is C). The blind-indexed phone compares normalized
// values, which is the documented meaning of a blind-index lookup.
// ---------------------------------------------------------------------------------------------

interface Semantics {
  /** SQLite's LIKE (contains, startsWith, endsWith) folds ASCII case; PostgreSQL's does not. */
  readonly likeFoldsCase: boolean;
}

interface Row {
  id: number;
  tenantId: string;
  email: string;
  name: string | null;
  phone: string | null;
  plain: string | null;
}

type Tri = boolean | null;
const and3 = (a: Tri, b: Tri): Tri =>
  a === false || b === false ? false : a === null || b === null ? null : true;
const or3 = (a: Tri, b: Tri): Tri =>
  a === true || b === true ? true : a === null || b === null ? null : false;
const not3 = (a: Tri): Tri => (a === null ? null : !a);

const asciiLower = (s: string): string => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

type Cell = string | number | null;

function evalFilter(
  cell: Cell,
  filter: unknown,
  exactKey: (v: string) => string,
  semantics: Semantics,
): Tri {
  // PostgreSQL's `mode: "insensitive"` compares lowercased values in every operator of its
  // object (a nested `not: { … }` has its own mode).
  const insensitive = isPlainObject(filter) && filter.mode === "insensitive";
  const key = insensitive ? (v: string) => exactKey(v).toLowerCase() : exactKey;
  const same = (v: unknown): Tri => {
    if (cell === null) return null;
    if (typeof cell === "number") return cell === v;
    return typeof v === "string" && key(cell) === key(v);
  };
  const order = (v: unknown, test: (c: number) => boolean): Tri => {
    if (cell === null) return null;
    if (typeof cell === "number" && typeof v === "number") return test(cell - v);
    if (typeof cell === "string" && typeof v === "string") {
      const [c, w] = [key(cell), key(v)];
      return test(c < w ? -1 : c > w ? 1 : 0);
    }
    throw new Error(`unmodelled comparison ${String(cell)} ~ ${String(v)}`);
  };
  const like = (v: unknown, test: (c: string, v: string) => boolean): Tri => {
    if (cell === null) return null;
    if (typeof cell !== "string" || typeof v !== "string") throw new Error("unmodelled LIKE");
    if (insensitive) return test(cell.toLowerCase(), v.toLowerCase());
    return semantics.likeFoldsCase ? test(asciiLower(cell), asciiLower(v)) : test(cell, v);
  };
  if (filter === null) return cell === null;
  if (!isPlainObject(filter)) return same(filter);
  let out: Tri = true;
  for (const [op, v] of Object.entries(filter)) {
    let r: Tri;
    switch (op) {
      case "mode":
        continue;
      case "equals":
        r = v === null ? cell === null : same(v);
        break;
      case "in":
      case "notIn": {
        const list = v as unknown[];
        if (list.length === 0) r = op === "notIn";
        else if (cell === null) r = null;
        else r = list.some((item) => same(item) === true) === (op === "in");
        break;
      }
      case "not":
        r =
          v === null
            ? cell !== null
            : not3(isPlainObject(v) ? evalFilter(cell, v, exactKey, semantics) : same(v));
        break;
      case "contains":
        r = like(v, (c, s) => c.includes(s));
        break;
      case "startsWith":
        r = like(v, (c, s) => c.startsWith(s));
        break;
      case "endsWith":
        r = like(v, (c, s) => c.endsWith(s));
        break;
      case "lt":
        r = order(v, (c) => c < 0);
        break;
      case "lte":
        r = order(v, (c) => c <= 0);
        break;
      case "gt":
        r = order(v, (c) => c > 0);
        break;
      case "gte":
        r = order(v, (c) => c >= 0);
        break;
      default:
        throw new Error(`unmodelled filter ${op}`);
    }
    out = and3(out, r);
  }
  return out;
}

const identity = (v: string): string => v;

function evalWhere(row: Row, where: Where, semantics: Semantics): Tri {
  let out: Tri = true;
  for (const [key, value] of Object.entries(where)) {
    let r: Tri;
    const clauses = (Array.isArray(value) ? value : [value]) as Where[];
    const sub = (c: Where) => evalWhere(row, c, semantics);
    if (key === "AND") r = clauses.reduce<Tri>((acc, c) => and3(acc, sub(c)), true);
    else if (key === "OR") r = clauses.reduce<Tri>((acc, c) => or3(acc, sub(c)), false);
    else if (key === "NOT") {
      r = clauses.reduce<Tri>((acc, c) => and3(acc, not3(sub(c))), true);
    } else if (key === "id" || key === "tenantId" || key === "email" || key === "name") {
      r = evalFilter(row[key], value, identity, semantics);
    } else if (key === "phone") r = evalFilter(row.phone, value, normalizePhone, semantics);
    // Only a null check reaches here; the index is null exactly when the phone is.
    else if (key === "phoneIndex" && value === null) r = row.phone === null;
    else throw new Error(`unmodelled where key ${key}`);
    out = and3(out, r);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the extension must do with a where: the documented rules, not its code. `must` holds
// the fields whose filter has to be refused; `may` those it may refuse without being wrong
// (a null check it does not recognise, or a context this model of the rules does not see).
// ---------------------------------------------------------------------------------------------

interface Verdict {
  readonly must: Set<string>;
  readonly may: Set<string>;
}

const SCALAR_OPS = new Set(["equals", "in", "notIn", "not"]);

/**
 * The tenant an object pins by exact equality (`tenantId: "t1"` or `{ equals: "t1" }`, the
 * latter beside other operators, which only narrow it). `mode: "insensitive"` makes `equals`
 * match "T1" too, and every other filter admits several tenants: those pin nothing.
 */
function pinnedTenant(where: Where): string | undefined {
  const v = where.tenantId;
  if (typeof v === "string") return v;
  if (isPlainObject(v) && typeof v.equals === "string" && v.mode !== "insensitive") return v.equals;
  return undefined;
}

/**
 * The context of an object's filters: its own pinned tenant or one of its AND members', else the
 * enclosing object's. Sound because the enclosing object is a conjunction that contains it, so
 * rows outside that tenant fail the enclosing object whatever this one evaluates to.
 */
function contextOf(where: Where, inherited: string | undefined): string | undefined {
  const and = where.AND;
  const members = Array.isArray(and) ? (and as Where[]) : isPlainObject(and) ? [and] : [];
  for (const source of [where, ...members]) {
    const t = pinnedTenant(source);
    if (t !== undefined) return t;
  }
  return inherited;
}

function leaves(filter: unknown): unknown[] {
  if (Array.isArray(filter)) return filter.flatMap(leaves);
  if (isPlainObject(filter)) return Object.values(filter).flatMap(leaves);
  return [filter];
}

function judgeEncrypted(
  field: "email" | "name" | "phone",
  filter: unknown,
  context: string | undefined,
  verdict: Verdict,
): void {
  const all = leaves(filter);
  if (all.some((v) => typeof v === "string" && LONE.test(v))) verdict.must.add(field);
  if (isPlainObject(filter)) {
    for (const [op, v] of Object.entries(filter)) {
      if (!SCALAR_OPS.has(op)) verdict.must.add(field);
      if (op === "not" && isPlainObject(v) && Object.keys(v).some((k) => k !== "equals")) {
        verdict.must.add(field);
      }
    }
  }
  const topLevelNulls = isPlainObject(filter)
    ? Object.values(filter).every((v) => v === null)
    : filter === null;
  if (topLevelNulls) return;
  const onlyNulls = all.every((v) => v === null);
  if (field === "name") {
    // A randomized column cannot be compared; a nested null check may be refused as well.
    (onlyNulls ? verdict.may : verdict.must).add(field);
    return;
  }
  if (
    field === "email" &&
    all.some((v) => typeof v === "string" && v.toLowerCase().startsWith(PREFIX))
  ) {
    verdict.must.add(field);
  }
  // Lookups seal their value under the row's context: without an exact one there is none to use.
  if (context === undefined) verdict.must.add("tenantId");
}

function judgeWhere(where: Where, inherited: string | undefined, verdict: Verdict): void {
  const context = contextOf(where, inherited);
  for (const [key, value] of Object.entries(where)) {
    if (key === "AND" || key === "OR" || key === "NOT") {
      for (const clause of (Array.isArray(value) ? value : [value]) as Where[]) {
        judgeWhere(clause, context, verdict);
      }
    } else if (key === "phoneIndex") {
      (value === null ? verdict.may : verdict.must).add(key);
    } else if (key === "email" || key === "name" || key === "phone") {
      judgeEncrypted(key, value, context, verdict);
    }
  }
}

const MESSAGE_NAMES: Record<string, RegExp> = {
  email: /User\.email\b|"email"/,
  name: /User\.name\b|"name"/,
  phone: /User\.phone\b|"phone(Index)?"/,
  phoneIndex: /User\.phoneIndex\b|"phoneIndex"/,
  tenantId: /\btenantId\b/,
};

// ---------------------------------------------------------------------------------------------
// Random rows and wheres.
// ---------------------------------------------------------------------------------------------

const TENANTS = ["t1", "t2", "T1"];
const EMAILS = [
  "alice@example.com",
  "Alice@Example.com",
  "bob@example.com",
  " bob@example.com",
  "carol@x.y",
  "émile@exämple.fr",
  "😀@x.y",
  "",
  "t1",
];
const PHONES = ["+1 555 0100", "  +1 555 0100 ", "+1 555 0101", "ABC-def", "abc-DEF", "İx", "t2"];
const NAMES = ["Alice", "alice", "Bob", "😀", "t1"];
const EXTRA = ["nobody", "kms1:AAAA", "kms1:", "KMS1:abc", " ", "alice", "example"];
const TENANT_VALUES = [...TENANTS, "t", "T", "1", "t3", "", "kms1:x"];

function genRows(rng: Rng): Omit<Row, "id">[] {
  const rows: Omit<Row, "id">[] = [];
  for (const tenantId of TENANTS) {
    for (const email of EMAILS) {
      if (!rng.chance(0.7)) continue;
      rows.push({
        tenantId,
        email,
        name: rng.chance(0.3) ? null : rng.pick(NAMES),
        phone: rng.chance(0.3) ? null : rng.pick(PHONES),
        plain: null,
      });
    }
  }
  // Creation order decides ids; shuffle so ids do not follow tenants.
  for (let i = rows.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [rows[i], rows[j]] = [rows[j] as Omit<Row, "id">, rows[i] as Omit<Row, "id">];
  }
  return rows;
}

const STRING_OPS = ["contains", "startsWith", "endsWith", "lt", "gt", "gte", "lte"] as const;
const REFUSED_OPS = [...STRING_OPS, "mode", "search"] as const;

function genTenantFilter(rng: Rng, pin: boolean, style: Style): unknown {
  const value = () => rng.pick(TENANT_VALUES);
  if (pin) {
    if (rng.chance(0.5)) return rng.pick(TENANTS);
    const filter: Where = { equals: rng.pick(TENANTS) };
    // Beside equals, another operator only narrows it; `mode: "default"` changes nothing.
    if (rng.chance(0.2)) filter[rng.pick(["not", "in", "gte"])] = value();
    if (style.mode && rng.chance(0.2)) filter.mode = "default";
    if (filter.in !== undefined) filter.in = [filter.in, value()];
    return filter;
  }
  if (rng.chance(0.3)) return value();
  const ops = ["equals", "in", "notIn", "not", ...STRING_OPS];
  // SQLite's filters have no `mode`: Prisma itself refuses it there.
  if (style.mode) ops.push("mode", "mode");
  const filter: Where = {};
  for (let n = 1 + rng.int(2); n > 0; n--) {
    const op = rng.pick(ops);
    if (op === "in" || op === "notIn") filter[op] = rng.some(TENANT_VALUES, 3);
    else if (op === "mode") filter.mode = rng.chance(0.8) ? "insensitive" : "default";
    else if (op === "not") {
      filter.not = rng.chance(0.6) ? value() : { [rng.pick(STRING_OPS)]: value() };
    } else filter[op] = value();
  }
  // `mode` alone is no filter (Prisma wants an operator beside it).
  if (Object.keys(filter).every((k) => k === "mode")) filter.equals = value();
  return filter;
}

/**
 * A filter on the context column that looks like a tenant but admits rows of other tenants
 * ("T1" beside "t1"): the extension must never take it as the rows' context.
 */
function genLooseTenant(rng: Rng, style: Style): unknown {
  const tenant = rng.pick(TENANTS);
  const shapes: (() => unknown)[] = [
    () => ({ in: [tenant, rng.pick(TENANTS)] }),
    () => ({ startsWith: tenant.slice(0, 1) }),
    () => ({ contains: rng.pick(["1", "t", "T"]) }),
    () => ({ gte: rng.pick(["T", "t", "t1"]) }),
    () => ({ not: tenant }),
    () => ({ notIn: [rng.pick(TENANT_VALUES)] }),
  ];
  if (style.mode) {
    const insensitive = () => ({ equals: tenant, mode: "insensitive" });
    shapes.push(insensitive, insensitive, insensitive, () => {
      const op = rng.pick(["in", "startsWith", "not"]);
      const operand = op === "in" ? [tenant] : op === "startsWith" ? tenant.slice(0, 1) : tenant;
      return { [op]: operand, mode: "insensitive" };
    });
  }
  return rng.pick(shapes)();
}

/**
 * Half the cases are wild (any operator, any value); the others keep to what the extension
 * serves, so that enough of them reach the database and compare results.
 */
interface Style {
  readonly wild: boolean;
  readonly ciphertext: string;
  /** The backend takes `mode: "insensitive"` (PostgreSQL). */
  readonly mode: boolean;
}

function genEncryptedValue(rng: Rng, field: "email" | "name" | "phone", style: Style) {
  if (style.wild && rng.chance(0.04)) return `x${LONE_SURROGATE}`;
  if (style.wild && rng.chance(0.06)) return style.ciphertext;
  const pool = field === "email" ? EMAILS : field === "phone" ? PHONES : NAMES;
  return rng.chance(0.75) ? rng.pick(pool) : rng.pick(EXTRA);
}

function genEncryptedFilter(rng: Rng, field: "email" | "name" | "phone", style: Style) {
  const nullable = field !== "email";
  const value = () => genEncryptedValue(rng, field, style);
  const maybeNull = () => (nullable && rng.chance(0.2) ? null : value());
  if (nullable && rng.chance(0.1)) return null;
  if (field === "name" && !style.wild) return rng.pick([null, { not: null }, { equals: null }]);
  if (rng.chance(0.35)) return value();
  const filter: Where = {};
  for (let n = 1 + rng.int(2); n > 0; n--) {
    if (style.wild && rng.chance(0.3)) {
      const op = rng.pick(REFUSED_OPS);
      filter[op] = op === "mode" ? rng.pick(["insensitive", "default"]) : value();
      continue;
    }
    const op = rng.pick(["equals", "in", "notIn", "not"]);
    if (op === "in" || op === "notIn") {
      filter[op] = Array.from({ length: rng.int(4) }, value);
    } else if (op === "not") {
      const shape = rng.int(style.wild ? 10 : 8);
      filter.not =
        shape < 6
          ? maybeNull()
          : shape < 8
            ? { equals: maybeNull() }
            : { [rng.pick(["in", "contains", "mode"])]: [value()] };
    } else filter[op] = maybeNull();
  }
  return filter;
}

function genIdFilter(rng: Rng, count: number): unknown {
  const id = () => 1 + rng.int(count + 2);
  if (rng.chance(0.3)) return id();
  const op = rng.pick(["in", "notIn", "lt", "gt", "not"]);
  return { [op]: op === "in" || op === "notIn" ? Array.from({ length: rng.int(4) }, id) : id() };
}

function genWhere(rng: Rng, depth: number, rowCount: number, style: Style): Where {
  const where: Where = {};
  const keys = ["tenantId", "email", "email", "phone", "phone", "name", "id"];
  if (depth < 3) keys.push("AND", "OR", "NOT", "AND", "OR", "NOT");
  if (style.wild && rng.chance(0.05)) keys.push("phoneIndex");
  // Most cases pin a tenant, so that lookups on encrypted fields have their context; many others
  // filter the tenant column with something that is not an exact equality, or pin different
  // tenants in OR/NOT branches, which must never stand for the rows' context.
  const pin = depth === 0 ? (style.wild ? 0.6 : 0.9) : 0.25;
  if (rng.chance(depth === 0 ? 0.3 : 0.1)) {
    const [a, b] = [rng.pick(TENANTS), rng.pick(TENANTS)];
    switch (rng.int(5)) {
      case 0:
        where.OR = [{ tenantId: a }, { tenantId: b }];
        break;
      case 1:
        where.NOT = { tenantId: a };
        break;
      case 2:
        where.AND = [{ tenantId: genLooseTenant(rng, style) }];
        break;
      default:
        where.tenantId = genLooseTenant(rng, style);
    }
  } else if (rng.chance(pin)) where.tenantId = genTenantFilter(rng, true, style);
  // Never an empty clause: Prisma drops `{}` inside OR/NOT, a quirk of Prisma, not of the
  // extension, that the reference semantics would have to copy.
  const size = 1 + rng.int(depth === 0 ? 3 : 2);
  for (let i = 0; i < size; i++) {
    const key = rng.pick(keys);
    if (key === "tenantId") where.tenantId = genTenantFilter(rng, false, style);
    else if (key === "email" || key === "name" || key === "phone") {
      where[key] = genEncryptedFilter(rng, key, style);
    } else if (key === "id") where.id = genIdFilter(rng, rowCount);
    else if (key === "phoneIndex") where.phoneIndex = rng.chance(0.2) ? null : rng.pick(PHONES);
    else {
      const clause = () => genWhere(rng, depth + 1, rowCount, style);
      const n = rng.int(3);
      where[key] =
        key !== "OR" && rng.chance(0.3) ? clause() : Array.from({ length: n + 1 }, clause);
    }
  }
  return where;
}

/** The plaintext copy's where: blind-index lookups compare normalized values. */
function mirrorWhere(where: Where): Where {
  // One conjunct per key, since `phoneIndex` and `phone` both become `phone` there.
  const conjuncts = Object.entries(where).map(([key, value]): Where => {
    if (key === "AND" || key === "OR" || key === "NOT") {
      return {
        [key]: Array.isArray(value)
          ? (value as Where[]).map(mirrorWhere)
          : mirrorWhere(value as Where),
      };
    }
    if (key === "phone") return { phone: mapStrings(value, normalizePhone) };
    if (key === "phoneIndex") return { phone: value };
    return { [key]: value };
  });
  return { AND: conjuncts };
}

function mapStrings(value: unknown, f: (s: string) => string): unknown {
  if (typeof value === "string") return f(value);
  if (Array.isArray(value)) return value.map((v) => mapStrings(v, f));
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, f)]));
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Property 1: a random where either gives the plaintext answer or is a ValidationError naming
// the field it cannot serve; a write through it seals each row under that row's own context;
// no plaintext of an encrypted field in it reaches the database. On every backend.
// ---------------------------------------------------------------------------------------------

/**
 * The plaintexts an encrypted-field filter or a write carries that cannot turn up by chance in
 * a statement: short values ("t1", "😀") are also tenants or fit inside base64url ciphertext,
 * and values starting "kms1:" are ciphertext to the extension.
 */
function filterPlaintexts(where: unknown, into: Set<string>): Set<string> {
  if (Array.isArray(where)) for (const w of where) filterPlaintexts(w, into);
  if (!isPlainObject(where)) return into;
  for (const [key, value] of Object.entries(where)) {
    if (key === "AND" || key === "OR" || key === "NOT") filterPlaintexts(value, into);
    if (key !== "email" && key !== "name" && key !== "phone") continue;
    for (const leaf of leaves(value)) {
      if (typeof leaf === "string" && leaf.trim().length >= 5 && !leaf.startsWith(PREFIX)) {
        into.add(leaf);
      }
    }
  }
  return into;
}

const WRITES_USER = /^\s*(UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+\S*[`"]User[`"]/i;

for (const backend of BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `where on encrypted fields (${backend.name}): the plaintext answer or a ValidationError`,
    () => {
      const CASES = 400;
      let rec: RecordingDatabase;
      let mirror: TestDatabase;
      let prisma: Extended;
      let rows: Row[];
      let ciphertext: string;
      let snapshot: Awaited<ReturnType<PrismaClient["user"]["findMany"]>>;

      beforeAll(async () => {
        rec = await backend.openRecording();
        mirror = await backend.openPlain();
        const kms = await createKms();
        const keyId = (await kms.createKey()).keyMetadata.keyId;
        prisma = extendClient(rec.base, kms, keyId);
        const generated = genRows(new Rng(SEED, 1, -1));
        for (const row of generated) await prisma.user.create({ data: row });
        rows = (await prisma.user.findMany({ orderBy: { id: "asc" } })).map(pickRow);
        expect(rows.map(({ id: _, ...rest }) => rest)).toEqual(generated);
        // The plaintext copy answers the same wheres in the database itself, to check the
        // reference semantics above against the database rather than trusting them.
        await mirror.prisma.user.createMany({
          data: rows.map((r) => ({
            ...r,
            phone: r.phone === null ? null : normalizePhone(r.phone),
          })),
        });
        snapshot = await rec.base.user.findMany({ orderBy: { id: "asc" } });
        ciphertext = (snapshot[0] as { email: string }).email;
      }, 60_000);
      afterAll(async () => {
        await rec?.close();
        await mirror?.close();
      });

      function pickRow(r: Row): Row {
        return {
          id: r.id,
          tenantId: r.tenantId,
          email: r.email,
          name: r.name,
          phone: r.phone,
          plain: r.plain,
        };
      }

      async function restore(): Promise<void> {
        await rec.base.user.deleteMany();
        await rec.base.user.createMany({ data: snapshot });
      }

      /**
       * Every row's values open under that row's own tenant: the extended client decrypts each
       * row with the context read from its own columns, and a value sealed under any other
       * context fails to authenticate.
       */
      async function expectOwnContexts(label: string): Promise<Row[]> {
        const read = await attempt(() => prisma.user.findMany({ orderBy: { id: "asc" } }));
        expect(
          read.ok ? "every row opens" : describeError(read.error),
          `a row sealed under another context than its own: ${label}`,
        ).toBe("every row opens");
        return (read.ok ? (read.value as Row[]) : []).map(pickRow);
      }

      test(`${CASES} random wheres through findMany, count, update, updateMany and deleteMany`, async () => {
        const tally = { succeeded: 0, refused: 0, rewrote: 0, looseTenant: 0 };
        for (let i = 0; i < CASES; i++) {
          const rng = new Rng(SEED, 1, i);
          const style = { wild: rng.chance(0.5), ciphertext, mode: backend.mode };
          const generated = genWhere(rng, 0, rows.length, style);
          const operation = rng.pick([
            "findMany",
            "count",
            "update",
            "updateMany",
            "updateMany",
            "deleteMany",
          ] as const);
          // `update` takes a unique where: the generated one beside an id (maybe of no row).
          const target = 1 + rng.int(rows.length + 1);
          const where = operation === "update" ? { ...generated, id: target } : generated;
          const marker = `marker-${i}`;
          const newName = rng.chance(
            operation === "update" || operation === "updateMany" ? 0.6 : 0.3,
          )
            ? `renamed ${i} 😀`
            : undefined;
          const label = `${backend.name} seed ${SEED} case ${i}: ${operation} where ${show(where)}${
            newName === undefined ? "" : ` data.name ${show(newName)}`
          }`;
          if (pinnedTenant(where) === undefined && "tenantId" in where) tally.looseTenant++;

          const verdict: Verdict = { must: new Set(), may: new Set() };
          judgeWhere(where, undefined, verdict);
          // updateMany seals the new name under the where's context, which it must then pin;
          // update reads its one row's own context when the where does not pin one.
          if (
            operation === "updateMany" &&
            newName !== undefined &&
            contextOf(where, undefined) === undefined
          ) {
            verdict.must.add("tenantId");
          }
          // Filters the extension must refuse have no reference answer to compute.
          const expected =
            verdict.must.size === 0
              ? rows.filter((r) => evalWhere(r, where, backend) === true).map((r) => r.id)
              : [];
          if (verdict.must.size === 0) {
            const reference = await mirror.prisma.user.findMany({
              where: mirrorWhere(where) as never,
              select: { id: true },
              orderBy: { id: "asc" },
            });
            expect(
              reference.map((r) => r.id),
              `reference semantics disagree with ${backend.name}: ${label}`,
            ).toEqual(expected);
          }

          const driverBefore = rec.driver.length;
          const eventsBefore = rec.events.length;
          const data = newName === undefined ? { plain: marker } : { plain: marker, name: newName };
          const outcome = await attempt(async () => {
            switch (operation) {
              case "findMany":
                return prisma.user.findMany({ where: where as never, orderBy: { id: "asc" } });
              case "count":
                return prisma.user.count({ where: where as never });
              case "update":
                return prisma.user.update({ where: where as never, data });
              case "updateMany":
                return prisma.user.updateMany({ where: where as never, data });
              case "deleteMany":
                return prisma.user.deleteMany({ where: where as never });
            }
          });
          const secrets = [
            ...filterPlaintexts(where, new Set(newName === undefined ? [] : [newName])),
          ];
          expect(leaks(rec.driver.slice(driverBefore), secrets), `driver: ${label}`).toEqual([]);
          expect(leaks(rec.events.slice(eventsBefore), secrets), `query log: ${label}`).toEqual([]);

          const notFound =
            !outcome.ok && (outcome.error as { code?: unknown } | undefined)?.code === "P2025";
          if (!outcome.ok && !(operation === "update" && notFound)) {
            tally.refused++;
            const message = describeError(outcome.error);
            expect(
              outcome.error,
              `expected a ValidationError, got ${message}: ${label}`,
            ).toBeInstanceOf(ValidationError);
            const blamed = [...verdict.must, ...verdict.may];
            expect(
              blamed.some((f) => MESSAGE_NAMES[f]?.test(message)),
              `refused, but naming none of [${blamed.join(", ")}]: ${message}: ${label}`,
            ).toBe(true);
            // A data key made for the lookup may be stored; the rows must stay as they were.
            expect(
              rec.driver.slice(driverBefore).filter((r) => WRITES_USER.test(r.sql)),
              `a refused call still wrote: ${label}`,
            ).toEqual([]);
            continue;
          }
          tally.succeeded++;
          const value = outcome.ok ? outcome.value : undefined;
          if (/"(email|phone)":/.test(JSON.stringify(where)) && expected.length > 0) {
            tally.rewrote++;
          }
          expect([...verdict.must], `accepted a where it must refuse: ${label}`).toEqual([]);
          const byId = new Map(rows.map((r) => [r.id, r]));
          const changed = (r: Row): Row => ({
            ...r,
            plain: marker,
            ...(newName === undefined ? {} : { name: newName }),
          });
          switch (operation) {
            case "findMany":
              expect((value as Row[]).map(pickRow), label).toEqual(
                expected.map((id) => byId.get(id)),
              );
              break;
            case "count":
              expect(value, label).toBe(expected.length);
              break;
            case "update":
            case "updateMany": {
              const hit = new Set(expected);
              if (operation === "update") {
                expect(notFound ? [] : [target], `update's row: ${label}`).toEqual(expected);
                if (!notFound) {
                  expect(pickRow(value as Row), label).toEqual(changed(byId.get(target) as Row));
                }
              } else {
                expect(value, label).toEqual({ count: expected.length });
              }
              const after = await expectOwnContexts(label);
              expect(after, label).toEqual(rows.map((r) => (hit.has(r.id) ? changed(r) : r)));
              if (expected.length > 0) await restore();
              break;
            }
            case "deleteMany": {
              expect(value, label).toEqual({ count: expected.length });
              const left = await rec.base.user.findMany({
                select: { id: true },
                orderBy: { id: "asc" },
              });
              const gone = new Set(expected);
              expect(
                left.map((r) => r.id),
                label,
              ).toEqual(rows.filter((r) => !gone.has(r.id)).map((r) => r.id));
              if (expected.length > 0) await restore();
              break;
            }
          }
        }
        // Both sides of the property must be exercised, lookups on encrypted fields must find
        // rows, and the context column must often be filtered loosely.
        expect(tally.succeeded).toBeGreaterThan(CASES / 4);
        expect(tally.refused).toBeGreaterThan(CASES / 4);
        expect(tally.rewrote).toBeGreaterThan(CASES / 20);
        expect(tally.looseTenant).toBeGreaterThan(CASES / 10);
      }, 120_000);
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Property 2: whatever the extension is asked to write or look up, the plaintext of an
// encrypted field is in no statement or bound argument that reaches the database.
// ---------------------------------------------------------------------------------------------

interface KnownUser {
  readonly id: number;
  readonly tenantId: string;
  email: string;
  /** Posts hold a foreign key: such a user cannot be deleted. */
  hasPosts: boolean;
}

type DelegateName = "user" | "post" | "comment";
type DelegateOperation =
  | "findMany"
  | "findFirst"
  | "findUnique"
  | "count"
  | "create"
  | "createManyAndReturn"
  | "update"
  | "updateMany"
  | "upsert"
  | "delete"
  | "deleteMany";

/** One entry point for every generated call: the arguments are built as data, not typed code. */
function call(
  prisma: Extended,
  model: DelegateName,
  operation: DelegateOperation,
  args: Where,
): Promise<unknown> {
  const delegate = prisma[model] as unknown as Record<
    DelegateOperation,
    (args: Where) => Promise<unknown>
  >;
  return delegate[operation](args);
}

for (const backend of BACKENDS) {
  describe.skipIf(backend.skipReason !== undefined)(
    `no plaintext of an encrypted field reaches the database (${backend.name})`,
    () => {
      const OPERATIONS = 300;
      let rec: RecordingDatabase;
      let prisma: Extended;

      beforeAll(async () => {
        ({ rec, prisma } = await openRecordingClient(backend));
      });
      afterAll(async () => {
        await rec?.close();
      });

      test(`${OPERATIONS} random creates, updates, upserts, finds and deletes`, async () => {
        const secrets: (string | number)[] = [];
        const users: KnownUser[] = [];
        let serial = 0;
        const tally = { ok: 0, refused: 0 };
        for (let i = 0; i < OPERATIONS; i++) {
          const rng = new Rng(SEED, 2, i);
          const text = (): string => {
            const s = secretText(rng, serial++);
            secrets.push(s);
            return s;
          };
          const score = (): number => {
            // A fractional part: its decimal form holds a "." that no id or key row carries.
            const n = Number(`${700_000 + serial++}.${125 + rng.int(800)}`);
            secrets.push(n);
            return n;
          };
          const bytes = (): Uint8Array => Buffer.from(text(), "utf8");
          const tenantId = rng.pick(["t1", "t2"]);
          const user = users.length > 0 && rng.chance(0.85) ? rng.pick(users) : undefined;
          /** An email to look up: a stored one (of `user`) or a fresh plaintext. */
          const lookup = (): string =>
            user !== undefined && rng.chance(0.6) ? user.email : text();
          const set = <T>(v: T): T | { set: T } => (rng.chance(0.3) ? { set: v } : v);
          const userData = (t: string): Where => {
            const data: Where = { tenantId: t, email: text() };
            if (rng.chance(0.6)) data.name = rng.chance(0.1) ? null : text();
            if (rng.chance(0.6)) data.phone = rng.chance(0.1) ? null : text();
            if (rng.chance(0.3)) data.profile = { note: text(), n: [text()] };
            if (rng.chance(0.3)) data.score = score();
            if (rng.chance(0.2)) data.avatar = bytes();
            return data;
          };
          const postData = (t: string): Where => {
            const data: Where = { tenantId: t, title: "title", body: text() };
            if (rng.chance(0.3)) {
              const when = new Date(1_000_000_000_000 + serial++ * 1_001);
              secrets.push(when.toISOString(), when.getTime());
              data.publishedAt = when;
            }
            return data;
          };
          const emailFilter = (): unknown => {
            switch (rng.int(6)) {
              case 0:
                return lookup();
              case 1:
                return { equals: lookup() };
              case 2:
                return { in: Array.from({ length: 1 + rng.int(3) }, lookup) };
              case 3:
                return { notIn: Array.from({ length: 1 + rng.int(3) }, lookup) };
              case 4:
                return { not: lookup() };
              default:
                return { not: { equals: lookup() } };
            }
          };
          const lookupWhere = (t: string): Where => {
            const where: Where = { tenantId: t };
            if (rng.chance(0.8)) where.email = emailFilter();
            if (rng.chance(0.4)) where.phone = rng.chance(0.5) ? text() : { in: [text(), text()] };
            const wrap = rng.int(4);
            if (wrap === 1) return { tenantId: t, AND: [where] };
            if (wrap === 2) return { tenantId: t, OR: [where, { email: emailFilter() }] };
            if (wrap === 3) return { tenantId: t, NOT: { email: emailFilter() }, AND: where };
            return where;
          };
          const owner = user ?? { tenantId, email: text() };
          const unique = (): Where => ({
            tenantId_email: { tenantId: owner.tenantId, email: owner.email },
          });

          let label: string;
          let run: () => Promise<unknown>;
          let after: (value: unknown) => void = () => {};
          /** Whether the extension must refuse the call, may refuse it, or must serve it. */
          let refusal: "must" | "may" | "never" = "never";
          const kind = rng.pick([
            "create",
            "createMany",
            "update",
            "updateMany",
            "upsert",
            "find",
            "find",
            "find",
            "findUnique",
            "cursor",
            "relation",
            "relationCount",
            "refused",
            "delete",
          ] as const);
          switch (kind) {
            case "create": {
              const data = userData(tenantId);
              const withPosts = rng.chance(0.4);
              if (withPosts) data.posts = { create: [postData(tenantId), postData(tenantId)] };
              label = `user.create ${show(data)}`;
              run = () => call(prisma, "user", "create", { data });
              after = (v) => {
                const { id } = v as { id: number };
                users.push({ id, tenantId, email: data.email as string, hasPosts: withPosts });
              };
              break;
            }
            case "createMany": {
              const data = Array.from({ length: 1 + rng.int(3) }, () => userData(tenantId));
              label = `user.createManyAndReturn ${show(data)}`;
              run = () => call(prisma, "user", "createManyAndReturn", { data });
              after = (v) => {
                for (const row of v as { id: number; email: string }[]) {
                  users.push({ id: row.id, tenantId, email: row.email, hasPosts: false });
                }
              };
              break;
            }
            case "update": {
              if (user === undefined) continue;
              const data: Where = {};
              const email = rng.chance(0.3) ? text() : undefined;
              if (email !== undefined) data.email = set(email);
              if (rng.chance(0.7)) data.name = set(text());
              if (rng.chance(0.5)) data.phone = set(text());
              if (rng.chance(0.3)) data.score = set(score());
              if (rng.chance(0.3)) {
                data.posts = rng.chance(0.5)
                  ? { create: postData(user.tenantId) }
                  : { updateMany: { where: { tenantId: user.tenantId }, data: { body: text() } } };
              }
              const where = rng.chance(0.5)
                ? { id: user.id }
                : rng.chance(0.5)
                  ? unique()
                  : { id: user.id, tenantId: user.tenantId, email: user.email };
              label = `user.update ${show({ where, data })}`;
              run = () => call(prisma, "user", "update", { where, data });
              after = () => {
                if (email !== undefined) user.email = email;
                if (isPlainObject(data.posts) && "create" in data.posts) user.hasPosts = true;
              };
              break;
            }
            case "updateMany": {
              const where = lookupWhere(user?.tenantId ?? tenantId);
              const data = { name: text(), phone: text() };
              label = `user.updateMany ${show({ where, data })}`;
              run = () => call(prisma, "user", "updateMany", { where, data });
              break;
            }
            case "upsert": {
              const create = { ...userData(owner.tenantId), email: owner.email };
              const update = { name: text() };
              label = `user.upsert ${show({ where: unique(), create, update })}`;
              run = () => call(prisma, "user", "upsert", { where: unique(), create, update });
              after = (v) => {
                const { id } = v as { id: number };
                if (!users.some((u) => u.id === id)) {
                  users.push({ id, tenantId: owner.tenantId, email: owner.email, hasPosts: false });
                }
              };
              break;
            }
            case "find": {
              const where = lookupWhere(user?.tenantId ?? tenantId);
              const operation = rng.pick(["findMany", "findFirst", "count"] as const);
              label = `user.${operation} ${show({ where })}`;
              run = () => call(prisma, "user", operation, { where });
              break;
            }
            case "findUnique": {
              const where =
                rng.chance(0.5) || user === undefined
                  ? unique()
                  : { id: user.id, tenantId: user.tenantId, email: lookup() };
              label = `user.findUnique ${show({ where })}`;
              run = () => call(prisma, "user", "findUnique", { where });
              break;
            }
            case "cursor": {
              const args = {
                where: { tenantId: owner.tenantId },
                cursor: unique(),
                take: 2,
                orderBy: { id: "asc" },
              };
              label = `user.findMany ${show(args)}`;
              // A cursor is a unique where: served by rewriting it, or refused, but never a miss.
              refusal = "may";
              run = () => call(prisma, "user", "findMany", args);
              after = (v) => {
                const page = (v as { id: number }[]).map((r) => r.id);
                expect(page[0], `cursor page: ${label}`).toBe(user?.id);
              };
              break;
            }
            case "relation": {
              const t = owner.tenantId;
              // A lookup across a relation needs the related rows' own tenant inside the filter:
              // the post's (or the including user's) tenant is not the author's.
              const pinned = rng.chance(0.7);
              const author = pinned
                ? { tenantId: t, email: emailFilter() }
                : { email: emailFilter() };
              if (!pinned) refusal = "must";
              const args = rng.chance(0.5)
                ? { where: { tenantId: t, author: { is: author } } }
                : { where: { tenantId: t }, include: { posts: { where: { author } } } };
              label = `${"include" in args ? "user" : "post"}.findMany ${show(args)}`;
              run = () => call(prisma, "include" in args ? "user" : "post", "findMany", args);
              break;
            }
            case "relationCount": {
              // A filtered relation count is a where on the related model, like include's.
              const args = {
                where: { tenantId: owner.tenantId },
                select: { id: true, _count: { select: { posts: { where: { body: text() } } } } },
              };
              label = `user.findMany ${show(args)}`;
              refusal = "must";
              run = () => call(prisma, "user", "findMany", args);
              break;
            }
            case "refused": {
              const where = rng.chance(0.5)
                ? { tenantId, email: { [rng.pick(STRING_OPS)]: text() } }
                : { tenantId, OR: [{ name: text() }, { phone: { contains: text() } }] };
              label = `user.findMany ${show({ where })}`;
              refusal = "must";
              run = () => call(prisma, "user", "findMany", { where });
              break;
            }
            case "delete": {
              const victim = users.find(
                (u) => !u.hasPosts && u.tenantId === (user?.tenantId ?? tenantId),
              );
              if (victim === undefined) continue;
              const where = rng.chance(0.5)
                ? { tenantId_email: { tenantId: victim.tenantId, email: victim.email } }
                : { tenantId: victim.tenantId, email: { in: [victim.email, text()] } };
              const operation = "tenantId_email" in where ? "delete" : "deleteMany";
              label = `user.${operation} ${show({ where })}`;
              run = () => call(prisma, "user", operation, { where });
              after = () => {
                users.splice(users.indexOf(victim), 1);
              };
              break;
            }
          }

          const driverBefore = rec.driver.length;
          const eventsBefore = rec.events.length;
          const outcome = await attempt(run);
          const where = `${backend.name} seed ${SEED} operation ${i}: ${label}`;
          expect(leaks(rec.driver.slice(driverBefore), secrets), `driver: ${where}`).toEqual([]);
          expect(leaks(rec.events.slice(eventsBefore), secrets), `query log: ${where}`).toEqual([]);
          if (outcome.ok) {
            tally.ok++;
            expect(refusal, `accepted a call it must refuse: ${where}`).not.toBe("must");
            after(outcome.value);
          } else {
            tally.refused++;
            expect(
              outcome.error,
              `expected a ValidationError, got ${describeError(outcome.error)}: ${where}`,
            ).toBeInstanceOf(ValidationError);
            expect(refusal, `refused (${describeError(outcome.error)}): ${where}`).not.toBe(
              "never",
            );
          }
        }
        // The recording must have seen the traffic, or the absence of leaks proves nothing.
        expect(rec.driver.length).toBeGreaterThan(OPERATIONS);
        expect(rec.events.length).toBeGreaterThan(OPERATIONS / 2);
        expect(tally.ok).toBeGreaterThan(OPERATIONS / 2);
      });
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Property 3: a randomized field (neither deterministic nor blind-indexed) is refused in a where
// with any operator and any non-null value, wherever the where sits, before anything runs.
// ---------------------------------------------------------------------------------------------

interface RandomizedField {
  readonly model: "User" | "Post" | "Comment";
  readonly field: string;
  value(rng: Rng, text: () => string): unknown;
}

const RANDOMIZED: readonly RandomizedField[] = [
  { model: "User", field: "name", value: (_rng, text) => text() },
  {
    model: "User",
    field: "profile",
    value: (rng, text) => (rng.chance(0.5) ? text() : 700_000.5 + rng.int(100)),
  },
  {
    model: "User",
    field: "score",
    value: (rng, text) => (rng.chance(0.5) ? 700_000.5 + rng.int(100) : text()),
  },
  { model: "User", field: "avatar", value: (_rng, text) => Buffer.from(text()) },
  { model: "Post", field: "body", value: (_rng, text) => text() },
  {
    model: "Post",
    field: "publishedAt",
    value: (rng, text) => (rng.chance(0.5) ? new Date(1_000_000_000_000 + rng.int(1e6)) : text()),
  },
  { model: "Comment", field: "text", value: (_rng, text) => text() },
];

const ALL_OPS = ["equals", "in", "notIn", "not", ...REFUSED_OPS] as const;

describe("randomized fields are refused in any where", () => {
  const CASES = 300;
  let rec: RecordingDatabase;
  let prisma: Extended;

  beforeAll(async () => {
    ({ rec, prisma } = await openRecordingClient());
    // Rows to find, so a filter that slipped through would have something to match or miss.
    const user = await prisma.user.create({
      data: {
        tenantId: "t1",
        email: "a@x",
        name: "Ann",
        posts: { create: { tenantId: "t1", title: "p", body: "body" } },
      },
      include: { posts: true },
    });
    // Awaited inside the scope: Prisma queries are lazy and run when awaited.
    await runWithEncryptionContext({ tenantId: "t1" }, async () =>
      prisma.comment.create({ data: { text: "hello", postId: user.posts[0]?.id as number } }),
    );
  });
  afterAll(async () => {
    await rec?.close();
  });

  function genFilter(rng: Rng, target: RandomizedField, text: () => string): unknown {
    const value = () => target.value(rng, text);
    if (rng.chance(0.25)) return value();
    const filter: Where = {};
    const ops = 1 + rng.int(2);
    for (let n = 0; n < ops; n++) {
      const op = rng.pick(ALL_OPS);
      if (op === "in" || op === "notIn") filter[op] = Array.from({ length: 1 + rng.int(3) }, value);
      else if (op === "mode") filter.mode = rng.pick(["insensitive", "default"]);
      else if (op === "not") {
        filter.not = rng.pick([value(), { equals: value() }, { contains: value() }]);
      } else filter[op] = value();
    }
    // A null check beside a comparison is still a comparison.
    if (rng.chance(0.2)) filter[rng.pick(["equals", "not"])] = null;
    if (Object.values(filter).every((v) => v === null)) filter.in = [value()];
    return filter;
  }

  /** Buries the filter under AND/OR/NOT, beside a pinned tenant where the model has one. */
  function nest(rng: Rng, model: RandomizedField["model"], where: Where): Where {
    let out = where;
    for (let depth = rng.int(3); depth > 0; depth--) {
      const key = rng.pick(["AND", "OR", "NOT"]);
      out = { [key]: rng.chance(0.5) || key === "OR" ? [out] : out };
    }
    if (model !== "Comment" && rng.chance(0.6)) out = { tenantId: "t1", ...out };
    return out;
  }

  interface Placement {
    readonly model: DelegateName;
    readonly operations: readonly DelegateOperation[];
    readonly args: Where;
  }

  /** Where the filter on `model` sits in a query, possibly on another model. */
  function place(rng: Rng, model: RandomizedField["model"], where: Where): Placement {
    const wheres: readonly DelegateOperation[] = [
      "findMany",
      "findFirst",
      "count",
      "updateMany",
      "deleteMany",
    ];
    const reads: readonly DelegateOperation[] = ["findMany", "findFirst"];
    const data = (m: DelegateName): Where =>
      m === "user" ? { plain: "p" } : m === "post" ? { title: "p" } : {};
    const direct = (m: DelegateName): Placement => ({
      model: m,
      operations: wheres,
      args: { where, data: data(m) },
    });
    const options: Record<RandomizedField["model"], (() => Placement)[]> = {
      User: [
        () => direct("user"),
        () => ({
          model: "post",
          operations: wheres,
          args: {
            where: { author: rng.chance(0.5) ? where : { [rng.pick(["is", "isNot"])]: where } },
            data: data("post"),
          },
        }),
      ],
      Post: [
        () => direct("post"),
        () => ({
          model: "user",
          operations: wheres,
          args: {
            where: { posts: { [rng.pick(["some", "every", "none"])]: where } },
            data: data("user"),
          },
        }),
        () => ({
          model: "user",
          operations: reads,
          args: { [rng.pick(["include", "select"])]: { posts: { where } } },
        }),
        () => ({
          model: "user",
          operations: reads,
          args: { select: { id: true, _count: { select: { posts: { where } } } } },
        }),
      ],
      Comment: [
        () => direct("comment"),
        () => ({
          model: "post",
          operations: wheres,
          args: {
            where: { comments: { [rng.pick(["some", "every", "none"])]: where } },
            data: data("post"),
          },
        }),
        () => ({
          model: "user",
          operations: wheres,
          args: { where: { posts: { some: { comments: { some: where } } } }, data: data("user") },
        }),
        () => ({
          model: "post",
          operations: reads,
          args: { include: { comments: { where } } },
        }),
        () => ({
          model: "post",
          operations: reads,
          args: { select: { id: true, _count: { select: { comments: { where } } } } },
        }),
      ],
    };
    return rng.pick(options[model])();
  }

  test(`${CASES} random filters on randomized fields, anywhere in a query`, async () => {
    let serial = 0;
    for (let i = 0; i < CASES; i++) {
      const rng = new Rng(SEED, 3, i);
      const secrets: (string | number)[] = [];
      const text = (): string => {
        const s = secretText(rng, serial++);
        secrets.push(s);
        return s;
      };
      const target = rng.pick(RANDOMIZED);
      const where = nest(rng, target.model, { [target.field]: genFilter(rng, target, text) });
      const placed = place(rng, target.model, where);
      const operation = rng.pick(placed.operations);
      const args: Where = { ...placed.args };
      // Only the writes take data.
      if (operation !== "updateMany") delete args.data;
      const label = `seed ${SEED} case ${i}: ${placed.model}.${operation} ${show(args)}`;
      const before = rec.driver.length;
      // Comments bind to the ambient context, which must not be what stops the query.
      const outcome = await attempt(() =>
        runWithEncryptionContext({ tenantId: "t1" }, async () =>
          call(prisma, placed.model, operation, args),
        ),
      );
      expect(
        outcome.ok,
        `accepted a filter on randomized ${target.model}.${target.field}: ${label}`,
      ).toBe(false);
      if (outcome.ok) continue;
      const message = describeError(outcome.error);
      expect(outcome.error, `expected a ValidationError, got ${message}: ${label}`).toBeInstanceOf(
        ValidationError,
      );
      expect(message, label).toMatch(new RegExp(`\\b${target.model}\\.${target.field}\\b`));
      expect(
        rec.driver.slice(before).map((r) => r.sql),
        `a refused query still reached the database: ${label}`,
      ).toEqual([]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Minimal counterexamples, kept as regressions: each failed before the extension handled it.
// ---------------------------------------------------------------------------------------------

describe("regressions: counterexamples to the properties", () => {
  let rec: RecordingDatabase;
  let prisma: Extended;

  beforeAll(async () => {
    ({ rec, prisma } = await openRecordingClient());
  });
  afterAll(async () => {
    await rec?.close();
  });

  // Found by properties 2 and 3: `_count: { select: { posts: { where } } }` is a where on Post
  // that the extension never walks (it walks include/select relations only).
  test("a filtered relation count is refused like include's where, before reaching the database", async () => {
    const body = "§secret body§";
    await prisma.user.create({
      data: {
        tenantId: "t1",
        email: "a@x",
        posts: { create: { tenantId: "t1", title: "p", body } },
      },
    });
    const before = rec.driver.length;
    const outcome = await attempt(() =>
      prisma.user.findMany({
        where: { tenantId: "t1" },
        select: { id: true, _count: { select: { posts: { where: { body } } } } },
      }),
    );
    expect(leaks(rec.driver.slice(before), [body])).toEqual([]);
    expect(outcome.ok ? outcome.value : outcome.error).toBeInstanceOf(ValidationError);
    expect(outcome.ok ? "" : describeError(outcome.error)).toMatch(/\bPost\.body\b/);
  });

  // Found by property 2: `cursor` is a unique where the extension never rewrites.
  test("a cursor on a unique with an encrypted field is rewritten (or refused), never sent in clear", async () => {
    const email = "§cursor@example.com§";
    const user = await prisma.user.create({ data: { tenantId: "t2", email } });
    const before = rec.driver.length;
    const outcome = await attempt(() =>
      prisma.user.findMany({
        where: { tenantId: "t2" },
        cursor: { tenantId_email: { tenantId: "t2", email } },
        take: 1,
      }),
    );
    expect(leaks(rec.driver.slice(before), [email])).toEqual([]);
    if (outcome.ok) expect((outcome.value as { id: number }[]).map((r) => r.id)).toEqual([user.id]);
    else expect(outcome.error).toBeInstanceOf(ValidationError);
  });

  // Found while checking how property 1's contexts are resolved: a to-one relation filter
  // written in shorthand (`author: { tenantId, email }`) counts as an AND clause of the post
  // itself, so the author's tenant becomes the context the post's new values are sealed under.
  test("a write's context never comes from a relation filter", async () => {
    const author = await prisma.user.create({ data: { tenantId: "t2", email: "author@x" } });
    const post = await prisma.post.create({
      data: { tenantId: "t1", title: "p", body: "old", authorId: author.id },
    });
    const outcome = await attempt(() =>
      prisma.post.updateMany({
        where: { author: { tenantId: "t2", email: "author@x" } },
        data: { body: "new" },
      }),
    );
    if (!outcome.ok) {
      // Refusing (no tenant of the post in the where) is as good as sealing it right.
      expect(outcome.error).toBeInstanceOf(ValidationError);
      return;
    }
    const read = await attempt(() => prisma.post.findUniqueOrThrow({ where: { id: post.id } }));
    expect(read.ok ? read.value : describeError(read.error)).toMatchObject({ body: "new" });
  });

  // Found by property 1 (update drawn with unique wheres): with no tenant pinned at the top, an
  // update reads its row's context first, with the caller's where instead of the rewritten one,
  // so an OR branch's lookup on an encrypted field went to the database in clear.
  test("update's read of its row's context sends the rewritten where, never a plaintext", async () => {
    const email = "§branch@example.com§";
    const user = await prisma.user.create({ data: { tenantId: "t1", email } });
    const before = rec.driver.length;
    const updated = await prisma.user.update({
      where: { id: user.id, OR: [{ tenantId: "t1", email }] },
      data: { name: "renamed" },
    });
    expect(leaks(rec.driver.slice(before), [email])).toEqual([]);
    expect(updated).toMatchObject({ id: user.id, email, name: "renamed" });
  });
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL's `mode: "insensitive"` on the context column: `{ equals: "acme", mode }` matches
// "ACME" rows too, so "acme" is not their context. Found by property 1 on PostgreSQL.
// ---------------------------------------------------------------------------------------------

const pgBackend = BACKENDS.find((b) => b.name === "PostgreSQL") as PropertyBackend;

describe.skipIf(pgBackend.skipReason !== undefined)(
  "regressions: a case-insensitive context filter is never the rows' context (PostgreSQL)",
  () => {
    let rec: RecordingDatabase;
    let prisma: Extended;
    let lower: { id: number };
    let upper: { id: number };
    const insensitive = { equals: "acme", mode: "insensitive" } as const;

    beforeAll(async () => {
      rec = await pgBackend.openRecording();
      const kms = await createKms();
      prisma = extendClient(rec.base, kms, (await kms.createKey()).keyMetadata.keyId);
    });
    afterAll(async () => {
      await rec?.close();
    });
    beforeEach(async () => {
      await rec.base.post.deleteMany();
      await rec.base.user.deleteMany();
      lower = await prisma.user.create({
        data: { tenantId: "acme", email: "ann@acme", name: "Ann", phone: "+1 555" },
      });
      upper = await prisma.user.create({
        data: { tenantId: "ACME", email: "ann@acme", name: "Ann", phone: "+1 555" },
      });
    });

    /** Every row still opens under its own tenant. */
    async function rowsOpen(): Promise<unknown> {
      const read = await attempt(() => prisma.user.findMany({ orderBy: { id: "asc" } }));
      return read.ok ? "every row opens" : describeError(read.error);
    }

    test("updateMany sealing under it is refused, and no row changes", async () => {
      const outcome = await attempt(() =>
        prisma.user.updateMany({ where: { tenantId: insensitive }, data: { name: "Bea" } }),
      );
      expect(outcome.ok ? outcome.value : outcome.error).toBeInstanceOf(ValidationError);
      expect(outcome.ok ? "" : describeError(outcome.error)).toMatch(
        /User\.tenantId is not an exact equality/,
      );
      expect(await rowsOpen()).toBe("every row opens");
      const names = await prisma.user.findMany({ select: { name: true } });
      expect(names.map((r) => r.name)).toEqual(["Ann", "Ann"]);
    });

    test("lookups on deterministic and blind-indexed fields under it are refused", async () => {
      for (const where of [
        { tenantId: insensitive, email: "ann@acme" },
        { tenantId: insensitive, phone: "+1 555" },
        { AND: [{ tenantId: insensitive }], email: { in: ["ann@acme"] } },
      ]) {
        const outcome = await attempt(() => prisma.user.findMany({ where }));
        expect(outcome.ok ? outcome.value : outcome.error, show(where)).toBeInstanceOf(
          ValidationError,
        );
      }
      // An exact tenant beside it still pins the context.
      const found = await prisma.user.findMany({
        where: { tenantId: "ACME", AND: [{ tenantId: insensitive }], email: "ann@acme" },
      });
      expect(found.map((r) => r.id)).toEqual([upper.id]);
    });

    test("update and upsert seal under the row's own tenant, or refuse", async () => {
      const updated = await prisma.user.update({
        where: { id: upper.id, tenantId: insensitive },
        data: { name: "Bea" },
      });
      expect(updated).toMatchObject({ tenantId: "ACME", name: "Bea" });
      const upsert = await attempt(() =>
        prisma.user.upsert({
          where: { id: upper.id, tenantId: insensitive },
          create: { tenantId: "ACME", email: "x@acme" },
          update: { name: "Cy" },
        }),
      );
      if (!upsert.ok) expect(upsert.error).toBeInstanceOf(ValidationError);
      expect(await rowsOpen()).toBe("every row opens");
    });

    // A nested write's rows keep their own tenant (a user's posts may be another tenant's), so
    // neither the parent's tenant nor the loose filter chooses their keys.
    test("a nested write under it is refused, and no row changes", async () => {
      await prisma.post.create({
        data: { tenantId: "ACME", title: "t", body: "old", authorId: upper.id },
      });
      const outcome = await attempt(() =>
        prisma.user.update({
          where: { id: upper.id },
          data: {
            posts: { updateMany: { where: { tenantId: insensitive }, data: { body: "new" } } },
          },
        }),
      );
      expect(outcome.ok ? outcome.value : outcome.error).toBeInstanceOf(ValidationError);
      expect(outcome.ok ? "" : describeError(outcome.error)).toMatch(
        /Post\.tenantId is not an exact equality/,
      );
      const read = await attempt(() => prisma.post.findMany());
      expect(read.ok ? read.value : describeError(read.error)).toMatchObject([{ body: "old" }]);
    });

    test("where the context is not needed it is only a filter", async () => {
      const found = await prisma.user.findMany({
        where: { tenantId: insensitive },
        orderBy: { id: "asc" },
      });
      expect(found.map((r) => [r.tenantId, r.email, r.name])).toEqual([
        ["acme", "ann@acme", "Ann"],
        ["ACME", "ann@acme", "Ann"],
      ]);
      expect(found.map((r) => r.id)).toEqual([lower.id, upper.id]);
    });
  },
);
