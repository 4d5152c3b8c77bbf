import { SeededRandom as Rng } from "@kms/tooling/random";
import "reflect-metadata";
import { inspect } from "node:util";
import {
  createKms,
  InvalidCiphertextError,
  type Kms,
  runWithEncryptionContext,
  ValidationError,
} from "@kms/core";
import { retainSqliteHandle, retainSqliteStatements } from "@kms/keystore-sqlite";
import type Database from "better-sqlite3";
import {
  And,
  Between,
  Column,
  DataSource,
  Entity,
  Equal,
  type FindOperator,
  type FindOptionsOrder,
  type FindOptionsWhere,
  ILike,
  In,
  IsNull,
  LessThan,
  LessThanOrEqual,
  Like,
  type Logger,
  ManyToOne,
  MoreThan,
  MoreThanOrEqual,
  Not,
  type ObjectLiteral,
  Or,
  PrimaryGeneratedColumn,
  QueryFailedError,
  Raw,
  type Relation,
  type Repository,
  TypeORMError,
} from "typeorm";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { UnsealedValue } from "../src/encrypted-column.ts";
import {
  encryptedParameter,
  encryptedWhere,
  fieldEncryption,
  type TypeormFieldEncryption,
} from "../src/index.ts";
import { Note, Post, User } from "./entities.ts";

// Property tests of encryptedWhere and of the subscriber, as seeded random loops: fast-check is
// not a devDependency of this package. Every case derives its own PRNG from (SEED, property,
// case), so a failure message's seed and case index reproduce it alone:
//   WHERE_PROPERTIES_SEED=<seed> npx vitest run test/where-properties.test.ts

const SEED = Number(process.env.WHERE_PROPERTIES_SEED ?? 20_261_205);

// ---------------------------------------------------------------------------------------------
// Plaintext twins of User and Post in a database of their own: the same wheres run there, to
// check the reference semantics below against what TypeORM and SQLite really do.
// ---------------------------------------------------------------------------------------------

@Entity("wp_plain_users")
class PlainUser {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @Column({ type: String, length: 512 })
  email: string;

  /** Stored normalized (trimmed), as the blind index compares it. */
  @Column({ type: String, length: 512, nullable: true })
  phone: string | null;

  @Column({ type: "text", nullable: true })
  profile: string | null;

  @Column({ type: "blob", nullable: true })
  avatar: Buffer | null;
}

@Entity("wp_plain_posts")
class PlainPost {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "text" })
  body: string;

  @ManyToOne(() => PlainUser, { eager: true })
  author: Relation<PlainUser>;
}

// ---------------------------------------------------------------------------------------------
// Databases whose every statement is recorded twice: by TypeORM's logger (what TypeORM says it
// sends) and by the better-sqlite3 connection itself (what SQLite is actually asked to run).
// ---------------------------------------------------------------------------------------------

interface Recorded {
  readonly source: "logger" | "driver";
  readonly sql: string;
  readonly params: readonly unknown[];
}

function paramList(parameters: unknown): unknown[] {
  if (Array.isArray(parameters)) return parameters;
  if (parameters === undefined) return [];
  return [parameters];
}

class RecordingLogger implements Logger {
  readonly #log: Recorded[];
  constructor(log: Recorded[]) {
    this.#log = log;
  }
  logQuery(query: string, parameters?: unknown[] | ObjectLiteral): void {
    this.#log.push({ source: "logger", sql: query, params: paramList(parameters) });
  }
  logQueryError(_error: string | Error, query: string, parameters?: unknown[] | ObjectLiteral) {
    this.#log.push({ source: "logger", sql: query, params: paramList(parameters) });
  }
  logQuerySlow(_time: number, query: string, parameters?: unknown[] | ObjectLiteral): void {
    this.#log.push({ source: "logger", sql: query, params: paramList(parameters) });
  }
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}
}

type Connection = Database.Database;
type RawRow = Record<string, unknown>;

/** Wraps the connection's prepare/exec so that every run/all/get/iterate is recorded. */
function recordDriver(db: Connection, log: Recorded[]): (sql: string) => Database.Statement {
  const prepare = db.prepare.bind(db) as (sql: string) => Database.Statement;
  const exec = db.exec.bind(db);
  const wrap = (sql: string, statement: Database.Statement): Database.Statement =>
    new Proxy(statement, {
      get(target, property) {
        const value: unknown = Reflect.get(target, property, target);
        if (typeof value !== "function") return value;
        const method = value as (...args: unknown[]) => unknown;
        if (
          property === "run" ||
          property === "all" ||
          property === "get" ||
          property === "iterate"
        ) {
          return (...args: unknown[]) => {
            log.push({ source: "driver", sql, params: args });
            return method.apply(target, args);
          };
        }
        return method.bind(target);
      },
    });
  Object.defineProperty(db, "prepare", { value: (sql: string) => wrap(sql, prepare(sql)) });
  Object.defineProperty(db, "exec", {
    value: (sql: string) => {
      log.push({ source: "driver", sql, params: [] });
      return exec(sql);
    },
  });
  return prepare;
}

type DataSourceEntities = readonly (
  | typeof User
  | typeof Post
  | typeof Note
  | typeof PlainUser
  | typeof PlainPost
)[];

interface TestDatabase {
  readonly ds: DataSource;
  readonly log: Recorded[];
  /** SQL straight on the connection, neither recorded nor seen by TypeORM. */
  raw(sql: string, params?: unknown[]): RawRow[];
  close(): Promise<void>;
}

async function openDatabase(
  encryption: TypeormFieldEncryption | undefined,
  entities: DataSourceEntities,
): Promise<TestDatabase> {
  retainSqliteStatements();
  const log: Recorded[] = [];
  const ds = new DataSource({
    type: "better-sqlite3",
    database: ":memory:",
    entities: [...entities, ...(encryption?.entities ?? [])],
    subscribers: encryption === undefined ? [] : [encryption.subscriber],
    synchronize: true,
    logger: new RecordingLogger(log),
  });
  await ds.initialize();
  retainSqliteHandle(ds);
  const driver = ds.driver as unknown as {
    databaseConnection: Connection;
    queryRunner?: { stmtCache?: Map<string, unknown> };
  };
  const prepare = recordDriver(driver.databaseConnection, log);
  // Statements cached while synchronizing were prepared before the recording started.
  driver.queryRunner?.stmtCache?.clear();
  log.length = 0;
  return {
    ds,
    log,
    raw(sql, params = []) {
      const statement = prepare(sql);
      if (statement.reader) return statement.all(...params) as RawRow[];
      statement.run(...params);
      return [];
    },
    close: () => ds.destroy(),
  };
}

/**
 * Plaintexts that cannot turn up by chance: "§" is outside base64url and outside every other
 * value these tests write, so a hit inside ciphertext or a data key row is never a coincidence.
 */
function secretText(rng: Rng, serial: number): string {
  const chars = [..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 @._-éü😀"];
  let s = "§";
  for (let n = 4 + rng.int(10); n > 0; n--) s += rng.pick(chars);
  return `${s}§${serial}`;
}

const show = (v: unknown): string =>
  inspect(v, { depth: 6, breakLength: Number.POSITIVE_INFINITY, maxStringLength: 200 });

/** Recorded statements or parameters that carry one of the plaintexts. */
function leaks(recorded: readonly Recorded[], secrets: readonly string[]): string[] {
  const out: string[] = [];
  const needles = secrets.filter((s) => s.length >= 5);
  for (const { source, sql, params } of recorded) {
    for (const item of [sql, ...params]) {
      for (const secret of needles) {
        let hit: boolean;
        if (typeof item === "string") hit = item.includes(secret);
        else if (item instanceof Uint8Array) hit = Buffer.from(item).includes(Buffer.from(secret));
        else if (typeof item === "object" && item !== null) hit = show(item).includes(secret);
        else hit = false;
        if (hit) out.push(`${source}: ${show(secret)} in ${show(item)} (${sql.slice(0, 100)})`);
      }
    }
  }
  return out;
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

async function attempt<T>(run: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    return { ok: false, error };
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

/** TypeORM's own refusal of a null or undefined where value (invalidWhereValuesBehavior). */
function isInvalidWhereValue(error: unknown): boolean {
  return (
    error instanceof TypeORMError &&
    !(error instanceof QueryFailedError) &&
    /(Null|Undefined) value encountered/.test(error.message)
  );
}

// ---------------------------------------------------------------------------------------------
// Where clauses as data: each case builds fresh FindOperators from it (TypeORM's value
// transformers rewrite operators in place, so one operator object serves one query only), and
// evaluates it over the plaintext rows in SQL's three-valued logic, as TypeORM's SQL does.
// ---------------------------------------------------------------------------------------------

type Lit = string | number | null;
type Comparison = "like" | "ilike" | "lt" | "lte" | "gt" | "gte";

type Op =
  | { readonly k: "val"; readonly v: string | number }
  | { readonly k: "null" }
  | { readonly k: "undef" }
  | { readonly k: "eq"; readonly v: Lit }
  | { readonly k: "in"; readonly vs: readonly Lit[] }
  | { readonly k: "not"; readonly inner: Op }
  | { readonly k: "isNull" }
  | { readonly k: "cmp"; readonly f: Comparison; readonly v: string | number }
  | { readonly k: "between"; readonly a: string | number; readonly b: string | number }
  | { readonly k: "raw"; readonly v: string }
  | { readonly k: "and" | "or"; readonly ops: readonly Op[] };

const USER_KEYS = ["tenantId", "id", "email", "phone", "profile", "avatar", "phoneIndex"] as const;
type UserKey = (typeof USER_KEYS)[number];
type UserWhere = Partial<Record<UserKey, Op>>;

interface PostWhere {
  readonly id?: Op;
  readonly body?: Op;
  readonly author?: UserWhere;
}

let rawParameter = 0;

function buildOp(op: Op, map: (v: Lit) => Lit): unknown {
  switch (op.k) {
    case "val":
      return map(op.v);
    case "null":
      return null;
    case "undef":
      return undefined;
    case "eq":
      return Equal(map(op.v));
    case "in":
      return In(op.vs.map(map));
    case "not":
      return Not(buildOp(op.inner, map));
    case "isNull":
      return IsNull();
    case "cmp": {
      const v = map(op.v);
      const f = {
        like: Like,
        ilike: ILike,
        lt: LessThan,
        lte: LessThanOrEqual,
        gt: MoreThan,
        gte: MoreThanOrEqual,
      }[op.f];
      return f(v);
    }
    case "between":
      return Between(map(op.a), map(op.b));
    case "raw": {
      const name = `rawParameter${++rawParameter}`;
      return Raw((alias) => `${alias} = :${name}`, { [name]: map(op.v) });
    }
    case "and":
    case "or": {
      const children = op.ops.map((o) => buildOp(o, map) as FindOperator<unknown>);
      return op.k === "and" ? And(...children) : Or(...children);
    }
  }
}

function buildUserWhere(where: UserWhere, mirror: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, op] of Object.entries(where) as [UserKey, Op][]) {
    const map = mirror && key === "phone" ? normalizeLit : identityLit;
    // The twin has no index column: a lookup on it is refused before it could get there.
    out[mirror && key === "phoneIndex" ? "phone" : key] = buildOp(op, map);
  }
  return out;
}

function buildPostWhere(where: PostWhere, mirror: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(where) as [keyof PostWhere, Op | UserWhere][]) {
    out[key] =
      key === "author"
        ? buildUserWhere(value as UserWhere, mirror)
        : buildOp(value as Op, identityLit);
  }
  return out;
}

/** The phone column's blind index normalization (`normalize: ["trim"]` in entities.ts). */
const normalizePhone = (v: string): string => v.trim();
const normalizeLit = (v: Lit): Lit => (typeof v === "string" ? normalizePhone(v) : v);
const identityLit = (v: Lit): Lit => v;

type Tri = boolean | null;
const and3 = (a: Tri, b: Tri): Tri =>
  a === false || b === false ? false : a === null || b === null ? null : true;
const or3 = (a: Tri, b: Tri): Tri =>
  a === true || b === true ? true : a === null || b === null ? null : false;
const not3 = (a: Tri): Tri => (a === null ? null : !a);

const asciiLower = (s: string): string => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** SQLite's LIKE: % and _ wildcards, ASCII letters case-insensitive. */
function like(cell: string, pattern: string): boolean {
  const body = [...asciiLower(pattern)]
    .map((c) => (c === "%" ? ".*" : c === "_" ? "." : c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("");
  return new RegExp(`^${body}$`, "su").test(asciiLower(cell));
}

type Cell = string | number | null;

function evalOp(cell: Cell, op: Op, key: (v: string) => string): Tri {
  const same = (v: Lit): Tri => {
    if (cell === null || v === null) return null;
    if (typeof cell === "number" || typeof v === "number") return cell === v;
    return key(cell) === key(v);
  };
  const order = (v: Lit): number | null => {
    if (cell === null || v === null) return null;
    if (typeof cell !== typeof v) throw new Error(`unmodelled comparison ${cell} ~ ${v}`);
    return cell < v ? -1 : cell > v ? 1 : 0;
  };
  const test = (c: number | null, f: (c: number) => boolean): Tri => (c === null ? null : f(c));
  switch (op.k) {
    case "val":
    case "eq":
      return same(op.v);
    case "null":
      return cell === null;
    case "undef":
      return true;
    case "in": {
      if (op.vs.length === 0) return false;
      const each = op.vs.map(same);
      return each.includes(true) ? true : each.includes(null) ? null : false;
    }
    case "not":
      // Not(null) is `col != NULL`: unknown for every row.
      return op.inner.k === "null" ? null : not3(evalOp(cell, op.inner, key));
    case "isNull":
      return cell === null;
    case "cmp":
      switch (op.f) {
        case "like":
        case "ilike":
          if (cell === null) return null;
          return like(String(cell), String(op.v));
        case "lt":
          return test(order(op.v), (c) => c < 0);
        case "lte":
          return test(order(op.v), (c) => c <= 0);
        case "gt":
          return test(order(op.v), (c) => c > 0);
        case "gte":
          return test(order(op.v), (c) => c >= 0);
      }
      break;
    case "between":
      return and3(
        test(order(op.a), (c) => c >= 0),
        test(order(op.b), (c) => c <= 0),
      );
    case "raw":
      return same(op.v);
    case "and":
      return op.ops.reduce<Tri>((acc, o) => and3(acc, evalOp(cell, o, key)), true);
    case "or":
      return op.ops.reduce<Tri>((acc, o) => or3(acc, evalOp(cell, o, key)), false);
  }
  throw new Error(`unmodelled operator ${show(op)}`);
}

interface Profile {
  likes: string[];
  age: number;
}

/** A user as written, in plaintext. */
interface UserRow {
  id: number;
  tenantId: string;
  email: string;
  phone: string | null;
  profile: Profile | null;
  /** The avatar's bytes are this text in UTF-8. */
  avatar: string | null;
}

interface PostRow {
  id: number;
  authorId: number;
  body: string;
}

const identity = (v: string): string => v;

/**
 * `builder`: QueryBuilder.where(object) semantics, which compare a null or undefined value with
 * `= ?` bound to NULL: unknown for every row (find* refuses both; see isInvalidWhereValue).
 */
function evalUser(row: UserRow, where: UserWhere, builder = false): Tri {
  let out: Tri = true;
  for (const [key, op] of Object.entries(where) as [UserKey, Op][]) {
    let r: Tri;
    if (builder && (op.k === "null" || op.k === "undef")) {
      out = and3(out, null);
      continue;
    }
    switch (key) {
      case "tenantId":
      case "id":
      case "email":
        r = evalOp(row[key], op, identity);
        break;
      case "phone":
      case "phoneIndex":
        r = evalOp(row.phone, op, normalizePhone);
        break;
      case "profile":
        r = evalOp(row.profile === null ? null : JSON.stringify(row.profile), op, identity);
        break;
      case "avatar":
        r = evalOp(row.avatar, op, identity);
        break;
    }
    out = and3(out, r);
  }
  return out;
}

function evalPost(post: PostRow, users: ReadonlyMap<number, UserRow>, where: PostWhere): Tri {
  let out: Tri = true;
  if (where.id !== undefined) out = and3(out, evalOp(post.id, where.id, identity));
  if (where.body !== undefined) out = and3(out, evalOp(post.body, where.body, identity));
  if (where.author !== undefined) {
    out = and3(out, evalUser(users.get(post.authorId) as UserRow, where.author));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What encryptedWhere must do with a where, from the README's rules rather than its code.
// `must`: keys one of which a refusal has to name (a refusal is required); `may`: keys it may
// refuse without being wrong; `invalid`: keys whose null or undefined value TypeORM itself
// refuses on plaintext columns (invalidWhereValuesBehavior's default), so the lookup must fail.
// ---------------------------------------------------------------------------------------------

interface Verdict {
  readonly must: Set<string>;
  readonly may: Set<string>;
  readonly invalid: Set<string>;
}

const newVerdict = (): Verdict => ({ must: new Set(), may: new Set(), invalid: new Set() });

const SUPPORTED = new Set<Op["k"]>(["val", "eq", "in", "not", "isNull", "null"]);

function opsIn(op: Op): Op[] {
  if (op.k === "not") return [op, ...opsIn(op.inner)];
  if (op.k === "and" || op.k === "or") return [op, ...op.ops.flatMap(opsIn)];
  return [op];
}

function literalsIn(op: Op): Lit[] {
  return opsIn(op).flatMap((o) =>
    o.k === "val" || o.k === "eq" || o.k === "cmp" || o.k === "raw"
      ? [o.v]
      : o.k === "in"
        ? [...o.vs]
        : o.k === "between"
          ? [o.a, o.b]
          : [],
  );
}

/** The tenant a where pins by equality, as the README's `fromRow` context needs it. */
function pinnedTenant(where: UserWhere): string | undefined {
  const op = where.tenantId;
  if (op?.k === "val" && typeof op.v === "string") return op.v;
  if (op?.k === "eq" && typeof op.v === "string") return op.v;
  return undefined;
}

function judgeUser(where: UserWhere, context: string | undefined, verdict: Verdict): void {
  const tenant = context ?? pinnedTenant(where);
  for (const [key, op] of Object.entries(where) as [UserKey, Op][]) {
    if (op.k === "undef") {
      if (key === "phoneIndex") verdict.must.add(key);
      else verdict.invalid.add(key);
      continue;
    }
    if (op.k === "null") verdict.invalid.add(key);
    if (key === "tenantId" || key === "id") continue;
    if (key === "phoneIndex") {
      verdict.must.add(key);
      continue;
    }
    const ops = opsIn(op);
    const nullChecksOnly = ops.every((o) => o.k === "not" || o.k === "isNull" || o.k === "null");
    if (key === "profile" || key === "avatar") {
      // Randomized without a blind index: nothing to compare, a null check may be refused too.
      (nullChecksOnly ? verdict.may : verdict.must).add(key);
      continue;
    }
    if (ops.some((o) => !SUPPORTED.has(o.k))) verdict.must.add(key);
    const literals = literalsIn(op);
    if (
      key === "email" &&
      literals.some((v) => typeof v === "string" && v.toLowerCase().startsWith(PREFIX))
    ) {
      verdict.must.add(key);
    }
    // A null inside Equal/In has no ciphertext; refusing it is fair.
    if (literals.includes(null)) verdict.may.add(key);
    if (tenant === undefined) (nullChecksOnly ? verdict.may : verdict.must).add("tenantId");
  }
}

function judgePost(where: PostWhere, verdict: Verdict): void {
  for (const [key, value] of Object.entries(where) as [keyof PostWhere, Op | UserWhere][]) {
    if (key === "author") judgeUser(value as UserWhere, undefined, verdict);
    else if (key === "body") {
      const op = value as Op;
      if (op.k === "undef" || op.k === "null") verdict.invalid.add("body");
      else {
        const nullChecksOnly = opsIn(op).every((o) => o.k === "not" || o.k === "isNull");
        (nullChecksOnly ? verdict.may : verdict.must).add("body");
      }
    }
  }
}

/** How a message names a column: `User.email` (this package) or `"email"` (core's codec). */
const MESSAGE_NAMES: Record<string, RegExp> = {
  tenantId: /\bUser\.tenantId\b/,
  email: /\bUser\.email\b|"email"/,
  phone: /\bUser\.phone(Index)?\b|"phone(Index)?"/,
  phoneIndex: /\bUser\.phoneIndex\b/,
  profile: /\bUser\.profile\b/,
  avatar: /\bUser\.avatar\b/,
  body: /\bPost\.body\b/,
};

const PREFIX = "kms1:";

// ---------------------------------------------------------------------------------------------
// Random rows and wheres.
// ---------------------------------------------------------------------------------------------

const TENANTS = ["t1", "t2", "T1"];
const EMAILS = [
  "§alice@example.com",
  "§Alice@example.com",
  "§bob@example.com",
  " §bob@example.com",
  "§émile@exämple.fr",
  "§😀@x.y",
  "§t1",
  "",
];
const PHONES = ["§+1 555 0100", "  §+1 555 0100 ", "§+1 555 0101", "§abc-DEF", "§ABC-def", "t2"];
const EXTRA = ["§nobody", "kms1:AAAA", "kms1:", "KMS1:abc", " ", "§alice", "t1"];
const LIKES = ["§green tea", "§coffee", "§😀😀😀"];

function genUsers(rng: Rng): Omit<UserRow, "id">[] {
  const rows: Omit<UserRow, "id">[] = [];
  for (const tenantId of TENANTS) {
    for (const email of EMAILS) {
      if (!rng.chance(0.7)) continue;
      rows.push({
        tenantId,
        email,
        phone: rng.chance(0.3) ? null : rng.pick(PHONES),
        profile: rng.chance(0.3) ? null : { likes: [rng.pick(LIKES)], age: rng.int(90) },
        avatar: rng.chance(0.4) ? null : `§avatar ${rng.int(1000)}`,
      });
    }
  }
  // Insertion order decides ids; shuffle so that ids do not follow tenants.
  for (let i = rows.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [rows[i], rows[j]] = [rows[j] as Omit<UserRow, "id">, rows[i] as Omit<UserRow, "id">];
  }
  return rows;
}

function toUser(row: Omit<UserRow, "id"> & { id?: number }): User {
  return Object.assign(new User(), {
    ...(row.id === undefined ? {} : { id: row.id }),
    tenantId: row.tenantId,
    email: row.email,
    phone: row.phone,
    profile: row.profile === null ? null : { likes: [...row.profile.likes], age: row.profile.age },
    avatar: row.avatar === null ? null : Uint8Array.from(Buffer.from(row.avatar)),
  });
}

/** What a loaded User holds, in the shape of UserRow. */
function userRowOf(user: User): UserRow {
  return {
    id: user.id,
    tenantId: user.tenantId,
    email: user.email,
    phone: user.phone,
    profile: user.profile,
    avatar: user.avatar === null ? null : Buffer.from(user.avatar).toString("utf8"),
  };
}

/**
 * Half the cases are wild (misused operators, undefined and null, ciphertext as a value); the
 * others keep to what the README documents, so that enough of them reach the database.
 */
interface Style {
  readonly wild: boolean;
  /** An email ciphertext copied from the database. */
  readonly ciphertext: string;
}

function genLookupValue(rng: Rng, pool: readonly string[], style: Style): string {
  if (style.wild && rng.chance(0.05)) return style.ciphertext;
  return rng.chance(0.75) ? rng.pick(pool) : rng.pick(EXTRA);
}

function genMisuse(rng: Rng, value: () => string): Op {
  switch (rng.int(8)) {
    case 0:
      return { k: "cmp", f: rng.pick(["like", "ilike"] as const), v: `%${value().slice(1, 4)}%` };
    case 1:
      return { k: "cmp", f: rng.pick(["lt", "lte", "gt", "gte"] as const), v: value() };
    case 2:
      return { k: "between", a: value(), b: value() };
    case 3:
      return { k: "raw", v: value() };
    case 4:
      return {
        k: "and",
        ops: [
          { k: "eq", v: value() },
          { k: "not", inner: { k: "eq", v: value() } },
        ],
      };
    case 5:
      return {
        k: "or",
        ops: [
          { k: "eq", v: value() },
          { k: "eq", v: value() },
        ],
      };
    case 6:
      return { k: "not", inner: genMisuse(rng, value) };
    default:
      return { k: "in", vs: [value(), value()] };
  }
}

function genSupported(rng: Rng, value: () => string, style: Style, depth: number): Op {
  const lit = (): Lit => (style.wild && rng.chance(0.05) ? null : value());
  switch (rng.int(depth === 0 ? 7 : 5)) {
    case 0:
    case 1:
      return { k: "val", v: value() };
    case 2:
      return { k: "eq", v: lit() };
    case 3:
      return { k: "in", vs: Array.from({ length: rng.int(4) }, lit) };
    case 4:
      return { k: "isNull" };
    default:
      if (style.wild && rng.chance(0.1)) return { k: "not", inner: { k: "null" } };
      return { k: "not", inner: genSupported(rng, value, style, depth + 1) };
  }
}

function genEncryptedOp(rng: Rng, pool: readonly string[], style: Style): Op {
  const value = () => genLookupValue(rng, pool, style);
  if (style.wild) {
    if (rng.chance(0.04)) return { k: "undef" };
    if (rng.chance(0.04)) return { k: "null" };
    if (rng.chance(0.3)) return genMisuse(rng, value);
  }
  return genSupported(rng, value, style, 0);
}

const TENANT_VALUES = [...TENANTS, "t3", "t"];

function genTenantOp(rng: Rng): Op {
  switch (rng.int(5)) {
    case 0:
      return { k: "in", vs: Array.from({ length: 1 + rng.int(2) }, () => rng.pick(TENANT_VALUES)) };
    case 1:
      return { k: "not", inner: { k: "val", v: rng.pick(TENANT_VALUES) } };
    case 2:
      return { k: "cmp", f: "like", v: rng.pick(["t%", "T%", "%1"]) };
    case 3:
      return { k: "cmp", f: rng.pick(["gt", "lt"] as const), v: rng.pick(TENANT_VALUES) };
    default:
      return { k: "eq", v: rng.pick(TENANT_VALUES) };
  }
}

function genIdOp(rng: Rng, count: number): Op {
  const id = () => 1 + rng.int(count + 2);
  switch (rng.int(5)) {
    case 0:
      return { k: "val", v: id() };
    case 1:
      return { k: "in", vs: Array.from({ length: rng.int(5) }, id) };
    case 2:
      return { k: "cmp", f: rng.pick(["gt", "lt", "gte", "lte"] as const), v: id() };
    case 3:
      return { k: "not", inner: { k: "val", v: id() } };
    default:
      return { k: "between", a: id(), b: id() };
  }
}

function genUserWhere(rng: Rng, count: number, style: Style, pin: string | undefined): UserWhere {
  const entries: [UserKey, Op][] = [];
  const tenant = pin ?? (rng.chance(style.wild ? 0.6 : 0.85) ? rng.pick(TENANT_VALUES) : undefined);
  if (tenant !== undefined) {
    entries.push(["tenantId", rng.chance(0.6) ? { k: "val", v: tenant } : { k: "eq", v: tenant }]);
  } else if (rng.chance(0.5)) entries.push(["tenantId", genTenantOp(rng)]);
  const keys: UserKey[] = ["email", "email", "phone", "phone", "id"];
  if (style.wild) keys.push("profile", "avatar", "phoneIndex");
  for (let n = 1 + rng.int(2); n > 0; n--) {
    const key = rng.pick(keys);
    if (entries.some(([k]) => k === key)) continue;
    let op: Op;
    if (key === "id") op = genIdOp(rng, count);
    else if (key === "email") op = genEncryptedOp(rng, EMAILS, style);
    else if (key === "phone") op = genEncryptedOp(rng, PHONES, style);
    else if (key === "phoneIndex") op = { k: "val", v: rng.pick(PHONES) };
    else if (rng.chance(0.4))
      op = rng.pick<Op>([{ k: "isNull" }, { k: "not", inner: { k: "isNull" } }]);
    else op = { k: "val", v: rng.pick(LIKES) };
    entries.push([key, op]);
  }
  // TypeORM drops an empty object from an OR: never generate one.
  if (entries.length === 0) entries.push(["id", genIdOp(rng, count)]);
  // The order of keys decides which problem a refusal names first.
  for (let i = entries.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [entries[i], entries[j]] = [entries[j] as [UserKey, Op], entries[i] as [UserKey, Op]];
  }
  return Object.fromEntries(entries);
}

// ---------------------------------------------------------------------------------------------
// Running one lookup the same way on the encrypted repository and on its plaintext twin.
// ---------------------------------------------------------------------------------------------

const USER_LOOKUPS = [
  "find",
  "findBy",
  "findOne",
  "findOneBy",
  "count",
  "countBy",
  "findAndCount",
  "existsBy",
  "qbGetMany",
  "qbGetCount",
] as const;
type UserLookup = (typeof USER_LOOKUPS)[number];

type Answer =
  | { readonly kind: "rows"; readonly rows: readonly unknown[] }
  | { readonly kind: "one"; readonly row: unknown; readonly first: boolean }
  | { readonly kind: "count"; readonly n: number }
  | { readonly kind: "exists"; readonly b: boolean };

async function lookUp<T extends { id: number }>(
  repo: Repository<T>,
  lookup: UserLookup,
  where: FindOptionsWhere<T> | FindOptionsWhere<T>[],
  project: (entity: T) => unknown,
): Promise<Answer> {
  const order = { id: "ASC" } as FindOptionsOrder<T>;
  const byId = (a: T, b: T) => a.id - b.id;
  switch (lookup) {
    case "find":
      return { kind: "rows", rows: (await repo.find({ where, order })).map(project) };
    case "findBy":
      return { kind: "rows", rows: (await repo.findBy(where)).sort(byId).map(project) };
    case "findOne": {
      const row = await repo.findOne({ where, order });
      return { kind: "one", row: row === null ? null : project(row), first: true };
    }
    case "findOneBy": {
      const row = await repo.findOneBy(where);
      return { kind: "one", row: row === null ? null : project(row), first: false };
    }
    case "count":
      return { kind: "count", n: await repo.count({ where }) };
    case "countBy":
      return { kind: "count", n: await repo.countBy(where) };
    case "findAndCount": {
      const [rows, n] = await repo.findAndCount({ where, order });
      expect(n).toBe(rows.length);
      return { kind: "rows", rows: rows.map(project) };
    }
    case "existsBy":
      return { kind: "exists", b: await repo.existsBy(where) };
    case "qbGetMany":
      return {
        kind: "rows",
        rows: (
          await repo.createQueryBuilder("x").where(where).orderBy("x.id", "ASC").getMany()
        ).map(project),
      };
    case "qbGetCount":
      return { kind: "count", n: await repo.createQueryBuilder("x").where(where).getCount() };
  }
}

/** Whether an answer is the one the expected rows (in id order) call for. */
function answers(answer: Answer, expected: readonly unknown[]): boolean {
  const same = (a: unknown, b: unknown) => show(a) === show(b);
  switch (answer.kind) {
    case "rows":
      return same(answer.rows, expected);
    case "count":
      return answer.n === expected.length;
    case "exists":
      return answer.b === expected.length > 0;
    case "one":
      if (answer.row === null) return expected.length === 0;
      return answer.first
        ? same(answer.row, expected[0])
        : expected.some((e) => same(answer.row, e));
  }
}

function plainUserRowOf(user: PlainUser): Pick<UserRow, "id"> {
  return { id: user.id };
}

function secretsIn(ops: readonly Op[]): string[] {
  return ops
    .flatMap(literalsIn)
    .filter((v): v is string => typeof v === "string" && v.includes("§"));
}

// ---------------------------------------------------------------------------------------------
// Property 1: a random lookup through encryptedWhere either gives the plaintext answer or is a
// ValidationError naming a column it cannot serve; never another error, never a wrong answer,
// and its plaintext never reaches the database.
// ---------------------------------------------------------------------------------------------

// Operation kinds of the write property.
type WriteKind =
  | "save"
  | "insert"
  | "qbInsert"
  | "update"
  | "updateNoContext"
  | "updateWhere"
  | "qbUpdate"
  | "qbUpdateWhere"
  | "qbUpdateRawSet"
  | "qbUpdateNoListeners"
  | "saveLoaded"
  | "savePost"
  | "saveWithRelations"
  | "upsert"
  | "transaction"
  | "delete"
  | "lookup"
  | "misuse";
type MisuseKind =
  | "findBy"
  | "findByLike"
  | "countByIn"
  | "existsBy"
  | "findOneByJson"
  | "builderWhere"
  | "updateCriteria"
  | "deleteCriteria"
  | "findByRaw"
  | "findByRawSql";

describe("lookups on encrypted columns: the plaintext answer or a ValidationError", () => {
  const CASES = 400;
  let kms: Kms;
  let db: TestDatabase;
  let mirror: TestDatabase;
  let users: Repository<User>;
  let posts: Repository<Post>;
  let plainUsers: Repository<PlainUser>;
  let plainPosts: Repository<PlainPost>;
  let rows: UserRow[];
  let postRows: PostRow[];
  let ciphertext: string;

  beforeAll(async () => {
    kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    db = await openDatabase(fieldEncryption({ kms, keyId }), [User, Post, Note]);
    mirror = await openDatabase(undefined, [PlainUser, PlainPost]);
    users = db.ds.getRepository(User);
    posts = db.ds.getRepository(Post);
    plainUsers = mirror.ds.getRepository(PlainUser);
    plainPosts = mirror.ds.getRepository(PlainPost);
    const rng = new Rng(SEED, 1, -1);
    const generated = genUsers(rng);
    const saved = await users.save(generated.map(toUser));
    rows = saved.map(userRowOf);
    expect(rows.map(({ id: _, ...rest }) => rest)).toEqual(generated);
    const twins = await plainUsers.save(
      rows.map((r) =>
        Object.assign(new PlainUser(), {
          tenantId: r.tenantId,
          email: r.email,
          phone: r.phone === null ? null : normalizePhone(r.phone),
          profile: r.profile === null ? null : JSON.stringify(r.profile),
          avatar: r.avatar === null ? null : Buffer.from(r.avatar),
        }),
      ),
    );
    expect(twins.map((t) => t.id)).toEqual(rows.map((r) => r.id));
    // Post.body is bound to the ambient tenant: each post is written in its author's.
    postRows = [];
    for (const row of rows) {
      for (let n = rng.int(3); n > 0; n--) {
        const body = `§post ${postRows.length} of ${row.email}`;
        const author = saved.find((u) => u.id === row.id) as User;
        const post = await runWithEncryptionContext({ tenant: row.tenantId }, () =>
          posts.save(Object.assign(new Post(), { body, author })),
        );
        await plainPosts.save(
          Object.assign(new PlainPost(), { body, author: { id: row.id } as PlainUser }),
        );
        postRows.push({ id: post.id, authorId: row.id, body });
      }
    }
    ciphertext = String(db.raw(`SELECT "email" FROM "kms_users" LIMIT 1`)[0]?.email);
    expect(ciphertext.startsWith(PREFIX)).toBe(true);
  });
  afterAll(async () => {
    await db?.close();
    await mirror?.close();
  });

  test(`${CASES} random lookups through find*, count*, exists, findAndCount and QueryBuilder`, async () => {
    const failures: string[] = [];
    const tally = { answered: 0, refused: 0, matched: 0, posts: 0 };
    const usersById = new Map(rows.map((r) => [r.id, r]));
    for (let i = 0; i < CASES; i++) {
      const rng = new Rng(SEED, 1, i);
      const style: Style = { wild: rng.chance(0.5), ciphertext };
      const onPosts = rng.chance(0.15);
      const verdict = newVerdict();
      let label: string;
      let expected: unknown[] | undefined;
      let encryptedCall: () => Promise<Answer>;
      let mirrorCall: () => Promise<Answer>;
      let secrets: string[];

      if (onPosts) {
        // The author's tenant is pinned and is the scope: the posts found decrypt.
        const tenant = rng.pick(TENANTS);
        const where: PostWhere = {
          author: genUserWhere(rng, rows.length, style, tenant),
          ...(rng.chance(0.3) ? { id: genIdOp(rng, postRows.length) } : {}),
          ...(style.wild && rng.chance(0.3)
            ? {
                body: rng.pick<Op>([
                  { k: "val", v: "§post 0" },
                  { k: "isNull" },
                  { k: "cmp", f: "like", v: "%post%" },
                ]),
              }
            : {}),
        };
        judgePost(where, verdict);
        const lookup = rng.pick(["find", "findBy", "count"] as const);
        label = `posts.${lookup} in tenant ${tenant} where ${show(where)}`;
        const postProject = (p: Post | PlainPost) => ({
          id: p.id,
          body: p.body,
          author: p.author.id,
        });
        const run = async <T extends { id: number }>(
          repo: Repository<T>,
          w: Record<string, unknown>,
          project: (e: T) => unknown,
        ) => lookUp(repo, lookup, w as FindOptionsWhere<T>, project);
        encryptedCall = () =>
          runWithEncryptionContext({ tenant }, async () =>
            run(
              posts,
              await encryptedWhere(posts, buildPostWhere(where, false) as FindOptionsWhere<Post>),
              postProject,
            ),
          );
        mirrorCall = () => run(plainPosts, buildPostWhere(where, true), postProject);
        if (verdict.must.size === 0 && verdict.invalid.size === 0) {
          expected = postRows
            .filter((p) => evalPost(p, usersById, where) === true)
            .map((p) => ({ id: p.id, body: p.body, author: p.authorId }));
        }
        secrets = secretsIn([
          ...Object.values(where.author ?? {}),
          ...(where.body === undefined ? [] : [where.body]),
        ]);
        tally.posts++;
      } else {
        const many = rng.chance(0.25);
        const wheres = Array.from({ length: many ? 1 + rng.int(3) : 1 }, () =>
          genUserWhere(rng, rows.length, style, undefined),
        );
        // The documented use of `context`: the tenant the where restricts to, given apart.
        let context: string | undefined;
        const only = wheres[0] as UserWhere;
        const pinned = pinnedTenant(only);
        if (!many && pinned !== undefined && rng.chance(0.25)) {
          context = pinned;
          if (rng.chance(0.5)) only.tenantId = { k: "in", vs: [pinned] };
        }
        for (const w of wheres) judgeUser(w, context, verdict);
        const lookup = rng.pick(USER_LOOKUPS);
        const builder = lookup === "qbGetMany" || lookup === "qbGetCount";
        // QueryBuilder.where(object) compares null and undefined values (see evalUser).
        if (builder) verdict.invalid.clear();
        label = `users.${lookup} where ${show(many ? wheres : only)}${context === undefined ? "" : ` context ${context}`}`;
        const build = (mirrored: boolean) => {
          const built = wheres.map((w) => buildUserWhere(w, mirrored));
          return many ? built : (built[0] as Record<string, unknown>);
        };
        encryptedCall = async () => {
          const options = context === undefined ? {} : { context: { tenantId: context } };
          const built = build(false);
          const rewritten = Array.isArray(built)
            ? await encryptedWhere(users, built as FindOptionsWhere<User>[], options)
            : await encryptedWhere(users, built as FindOptionsWhere<User>, options);
          return lookUp(users, lookup, rewritten, userRowOf);
        };
        mirrorCall = () =>
          lookUp(plainUsers, lookup, build(true) as FindOptionsWhere<PlainUser>, plainUserRowOf);
        if (verdict.must.size === 0 && verdict.invalid.size === 0) {
          expected = rows.filter((r) => wheres.some((w) => evalUser(r, w, builder) === true));
        }
        secrets = secretsIn(
          wheres.flatMap((w) =>
            Object.entries(w)
              .filter(([k]) => k !== "tenantId" && k !== "id")
              .map(([, op]) => op),
          ),
        );
      }
      const where = `seed ${SEED} case ${i}: ${label}`;

      // The reference semantics, checked against SQLite on the plaintext twin.
      const reference = await attempt(mirrorCall);
      if (expected !== undefined) {
        const ids = expected.map((e) => ({ id: (e as { id: number }).id }));
        const twin = reference.ok
          ? answers(reference.value, onPosts ? expected : ids)
          : describeError(reference.error);
        expect(twin, `reference semantics disagree with SQLite: ${where}`).toBe(true);
      } else if (verdict.invalid.size > 0 && verdict.must.size === 0) {
        expect(reference.ok ? "answered" : isInvalidWhereValue(reference.error), where).toBe(true);
      }

      const before = db.log.length;
      const outcome = await attempt(encryptedCall);
      for (const leak of leaks(db.log.slice(before), secrets))
        failures.push(`leak ${leak}: ${where}`);
      if (!outcome.ok) {
        tally.refused++;
        const message = describeError(outcome.error);
        const blamed = [...verdict.must, ...verdict.may, ...verdict.invalid];
        if (outcome.error instanceof ValidationError) {
          if (!blamed.some((k) => MESSAGE_NAMES[k]?.test(message))) {
            failures.push(`refused naming none of [${blamed.join(", ")}] (${message}): ${where}`);
          }
        } else if (!(verdict.invalid.size > 0 && isInvalidWhereValue(outcome.error))) {
          failures.push(`unexpected ${message}: ${where}`);
        }
        continue;
      }
      tally.answered++;
      if (verdict.must.size > 0) {
        failures.push(
          `accepted a lookup it must refuse (${[...verdict.must].join(", ")}): ${where}`,
        );
      } else if (verdict.invalid.size > 0) {
        failures.push(
          `answered although TypeORM refuses ${[...verdict.invalid].join(", ")} on plaintext columns (${show(outcome.value)}): ${where}`,
        );
      } else if (expected !== undefined && !answers(outcome.value, expected)) {
        failures.push(`wrong answer ${show(outcome.value)}, expected ${show(expected)}: ${where}`);
      } else if (expected !== undefined && expected.length > 0) tally.matched++;
    }
    expect(failures.slice(0, 60), `${failures.length} failing cases; tally ${show(tally)}`).toEqual(
      [],
    );
    // Both sides of the property must be exercised, and lookups must find rows.
    expect(tally.answered).toBeGreaterThan(CASES / 4);
    expect(tally.refused).toBeGreaterThan(CASES / 5);
    expect(tally.matched).toBeGreaterThan(CASES / 8);
  });
});

// ---------------------------------------------------------------------------------------------
// Property 2: whatever is written or looked up through the documented APIs, the plaintext of an
// encrypted column is in no statement and no parameter, neither in TypeORM's log nor at the
// driver; the database ends up holding what was written, and the blind index keeps up.
// ---------------------------------------------------------------------------------------------

class Rollback extends Error {}

interface KnownPost {
  readonly id: number;
  readonly authorId: number;
  readonly body: string;
}

type Expectation = "ok" | "refuse";

describe("no plaintext of an encrypted column reaches the database", () => {
  const OPERATIONS = 260;
  let db: TestDatabase;
  let users: Repository<User>;
  let posts: Repository<Post>;

  beforeAll(async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    db = await openDatabase(fieldEncryption({ kms, keyId }), [User, Post, Note]);
    users = db.ds.getRepository(User);
    posts = db.ds.getRepository(Post);
  });
  afterAll(async () => {
    await db?.close();
  });

  test(`${OPERATIONS} random writes, lookups and misuses`, async () => {
    const model = new Map<number, UserRow>();
    const postModel = new Map<number, KnownPost>();
    const secrets: string[] = [];
    const failures: string[] = [];
    const tally = { ok: 0, refused: 0, rolledBack: 0, checks: 0, resyncs: 0 };
    let serial = 0;

    const sameRows = (actual: readonly User[], ids: readonly number[]) =>
      show(actual.map(userRowOf).sort((a, b) => a.id - b.id)) ===
      show([...new Set(ids)].sort((a, b) => a - b).map((id) => model.get(id)));

    /** Everything readable equals the model, and every phone is found through its index. */
    async function verify(where: string): Promise<void> {
      tally.checks++;
      const all = await users.find({ order: { id: "ASC" } });
      if (!sameRows(all, [...model.keys()])) {
        const loaded = new Map(all.map((u) => [u.id, userRowOf(u)]));
        const ids = new Set([...loaded.keys(), ...model.keys()]);
        const diff = [...ids]
          .filter((id) => show(loaded.get(id)) !== show(model.get(id)))
          .map((id) => `${id}: database ${show(loaded.get(id))}, model ${show(model.get(id))}`);
        failures.push(`database != model [${diff.join("; ")}]: ${where}`);
        return;
      }
      for (const row of model.values()) {
        if (row.phone === null) continue;
        const found = await users.findBy(
          await encryptedWhere(users, { tenantId: row.tenantId, phone: row.phone }),
        );
        const expected = [...model.values()].filter(
          (r) => r.tenantId === row.tenantId && r.phone === row.phone,
        );
        if (
          !sameRows(
            found,
            expected.map((r) => r.id),
          )
        ) {
          failures.push(
            `phone lookup of user ${row.id} found ${show(found.map((u) => u.id))}: ${where}`,
          );
        }
      }
      for (const tenant of TENANTS) {
        const loaded = await runWithEncryptionContext({ tenant }, () =>
          posts.find({ where: { author: { tenantId: tenant } }, order: { id: "ASC" } }),
        );
        const expected = [...postModel.values()].filter(
          (p) => model.get(p.authorId)?.tenantId === tenant,
        );
        if (
          show(loaded.map((p) => [p.id, p.author.id, p.body])) !==
          show(expected.map((p) => [p.id, p.authorId, p.body]))
        ) {
          failures.push(`posts of ${tenant}: ${show(loaded)} != ${show(expected)}: ${where}`);
        }
      }
    }

    async function resync(): Promise<void> {
      tally.resyncs++;
      const all = await users.find();
      await users.save(all);
      model.clear();
      for (const u of all) model.set(u.id, userRowOf(u));
      postModel.clear();
      for (const tenant of TENANTS) {
        const loaded = await runWithEncryptionContext({ tenant }, () =>
          posts.find({ where: { author: { tenantId: tenant } } }),
        );
        for (const p of loaded)
          postModel.set(p.id, { id: p.id, authorId: p.author.id, body: p.body });
      }
    }

    for (let i = 0; i < OPERATIONS; i++) {
      const rng = new Rng(SEED, 2, i);
      const text = (): string => {
        const s = secretText(rng, serial++);
        secrets.push(s);
        return s;
      };
      const tenant = rng.pick(TENANTS);
      const newRow = (t: string): Omit<UserRow, "id"> => ({
        tenantId: t,
        email: text(),
        phone: rng.chance(0.7) ? text() : null,
        profile: rng.chance(0.6) ? { likes: [text()], age: rng.int(90) } : null,
        avatar: rng.chance(0.5) ? text() : null,
      });
      const inTenant = [...model.values()].filter((r) => r.tenantId === tenant);
      const someUser = inTenant.length === 0 ? undefined : rng.pick(inTenant);
      const hasPosts = (id: number) => [...postModel.values()].some((p) => p.authorId === id);
      /** New values for some of a user's encrypted columns (at least one). */
      const changes = (): Partial<Omit<UserRow, "id" | "tenantId">> => {
        const out: Partial<Omit<UserRow, "id" | "tenantId">> = {};
        if (rng.chance(0.5)) out.email = text();
        if (rng.chance(0.5)) out.phone = rng.chance(0.2) ? null : text();
        if (rng.chance(0.4))
          out.profile = rng.chance(0.2) ? null : { likes: [text()], age: rng.int(90) };
        if (rng.chance(0.3)) out.avatar = rng.chance(0.2) ? null : text();
        if (Object.keys(out).length === 0) out.phone = text();
        return out;
      };
      /** A change set as TypeORM values (bytes for the avatar). */
      const values = (c: Partial<Omit<UserRow, "id" | "tenantId">>) => {
        const { avatar, ...rest } = c;
        return {
          ...rest,
          ...(avatar === undefined
            ? {}
            : { avatar: avatar === null ? null : Uint8Array.from(Buffer.from(avatar)) }),
        };
      };
      /** Whether the caller's objects hold plaintext again after a write. */
      const restored = (entities: readonly User[], written: readonly Omit<UserRow, "id">[]) =>
        show(entities.map((e) => ({ ...userRowOf(e), id: 0 }))) ===
        show(written.map((w) => ({ id: 0, ...w })));

      let label = "";
      const tag = () => `seed ${SEED} operation ${i}: ${label}`;
      /** Users the operation writes: read back right after it. */
      const touched: number[] = [];
      const put = (row: UserRow) => {
        model.set(row.id, row);
        touched.push(row.id);
      };
      let expectation: Expectation = "ok";
      let run: () => Promise<void> = async () => {};
      let refuseNames = /\bUser\.(email|phone|profile|avatar|tenantId)\b/;
      const kind = rng.pick<WriteKind>([
        "save",
        "save",
        "insert",
        "qbInsert",
        "update",
        "updateNoContext",
        "updateWhere",
        "qbUpdate",
        "qbUpdateWhere",
        "qbUpdateRawSet",
        "qbUpdateNoListeners",
        "saveLoaded",
        "savePost",
        "saveWithRelations",
        "upsert",
        "transaction",
        "delete",
        "lookup",
        "lookup",
        "misuse",
      ] as const);

      switch (kind) {
        case "save":
        case "insert":
        case "qbInsert": {
          const written = Array.from({ length: 1 + rng.int(3) }, () =>
            newRow(rng.chance(0.7) ? tenant : rng.pick(TENANTS)),
          );
          const entities = written.map(toUser);
          const how = kind === "save" ? rng.pick(["repository", "manager"] as const) : "repository";
          label = `${kind} (${how}) ${show(written)}`;
          run = async () => {
            if (kind === "save") {
              if (how === "manager") await db.ds.manager.save(entities);
              else if (entities.length === 1) await users.save(entities[0] as User);
              else await users.save(entities);
            } else if (kind === "insert") {
              await users.insert(entities.length === 1 ? (entities[0] as User) : entities);
            } else {
              const result = await users
                .createQueryBuilder()
                .insert()
                .into(User)
                .values(entities)
                .execute();
              result.identifiers.forEach((identifier, n) => {
                (entities[n] as User).id = (identifier as { id: number }).id;
              });
            }
            if (!restored(entities, written)) {
              failures.push(`${kind} left ${show(entities)} on the caller's objects: ${tag()}`);
            }
            entities.forEach((e, n) => {
              put({ id: e.id, ...(written[n] as Omit<UserRow, "id">) });
            });
          };
          break;
        }
        case "update":
        case "updateNoContext":
        case "qbUpdate": {
          if (someUser === undefined) continue;
          const withTenant = kind !== "updateNoContext";
          // Without the tenant: values to seal under it (the avatar has no context, a null
          // needs none).
          const c = withTenant
            ? changes()
            : rng.pick([
                { email: text() },
                { phone: text() },
                { profile: { likes: [text()], age: 1 } },
              ]);
          const set = { ...(withTenant ? { tenantId: tenant } : {}), ...values(c) };
          label = `${kind} user ${someUser.id} set ${show(set)}`;
          expectation = withTenant ? "ok" : "refuse";
          refuseNames = /\bUser\.tenantId\b/;
          run = async () => {
            if (kind === "qbUpdate") {
              await users
                .createQueryBuilder()
                .update(User)
                .set(set)
                .where("id = :id", { id: someUser.id })
                .execute();
            } else await users.update(someUser.id, set);
            put({ ...someUser, ...c });
          };
          break;
        }
        case "updateWhere":
        case "qbUpdateWhere": {
          if (someUser === undefined) continue;
          const c = changes();
          const set = { tenantId: tenant, ...values(c) };
          const byPhone = someUser.phone !== null && rng.chance(0.4);
          const lookup = byPhone
            ? { tenantId: tenant, phone: In([someUser.phone, text()]) }
            : { tenantId: tenant, email: rng.chance(0.5) ? someUser.email : Equal(someUser.email) };
          label = `${kind} where ${byPhone ? "phone" : "email"} of user ${someUser.id} set ${show(set)}`;
          run = async () => {
            const criteria = await encryptedWhere(users, lookup as FindOptionsWhere<User>);
            const result =
              kind === "updateWhere"
                ? await users.update(criteria, set)
                : await users.createQueryBuilder().update(User).set(set).where(criteria).execute();
            if (result.affected !== 1) {
              failures.push(`${kind} updated ${result.affected} rows, expected 1: ${tag()}`);
            }
            // Phones repeat only by chance of the generator, which never repeats a secret.
            put({ ...someUser, ...c });
          };
          break;
        }
        case "qbUpdateRawSet":
        case "qbUpdateNoListeners": {
          if (someUser === undefined) continue;
          const secret = text();
          const column = rng.pick(["email", "phone", "profile"] as const);
          expectation = "refuse";
          refuseNames = new RegExp(`\\bUser\\.${column}\\b|"${column}"`);
          if (kind === "qbUpdateRawSet") {
            // A SQL expression as the value: the subscriber cannot encrypt it, so it must refuse.
            label = `${kind} user ${someUser.id} set ${column} = '${secret}'`;
            run = async () => {
              await users
                .createQueryBuilder()
                .update(User)
                .set({ tenantId: tenant, [column]: () => `'${secret}'` })
                .where("id = :id", { id: someUser.id })
                .execute();
            };
          } else {
            label = `${kind} user ${someUser.id} set ${column} = ${secret}`;
            const value = column === "profile" ? { likes: [secret], age: 1 } : secret;
            run = async () => {
              await users
                .createQueryBuilder()
                .update(User)
                .set({ tenantId: tenant, [column]: value })
                .where("id = :id", { id: someUser.id })
                .callListeners(false)
                .execute();
            };
          }
          break;
        }
        case "saveLoaded": {
          if (someUser === undefined) continue;
          const c = changes();
          label = `save loaded user ${someUser.id} changed ${show(c)}`;
          run = async () => {
            const loaded = await users.findOneByOrFail({ id: someUser.id });
            Object.assign(loaded, values(c));
            await users.save(loaded);
            const after = { ...someUser, ...c };
            if (show(userRowOf(loaded)) !== show(after)) {
              failures.push(`save left ${show(loaded)} on the caller's object: ${tag()}`);
            }
            put(after);
          };
          break;
        }
        case "savePost": {
          if (someUser === undefined) continue;
          const body = text();
          const full = rng.chance(0.5);
          label = `save post ${show(body)} by user ${someUser.id} (${full ? "loaded" : "reference"})`;
          run = async () => {
            // A loaded author carries its plaintext along; none of it may be written.
            const author = full
              ? await users.findOneByOrFail({ id: someUser.id })
              : Object.assign(new User(), { id: someUser.id });
            const post = await runWithEncryptionContext({ tenant }, () =>
              posts.save(Object.assign(new Post(), { body, author })),
            );
            if (post.body !== body) failures.push(`post left ${show(post.body)}: ${tag()}`);
            postModel.set(post.id, { id: post.id, authorId: someUser.id, body });
          };
          break;
        }
        case "saveWithRelations": {
          const author = inTenant.find((r) => hasPosts(r.id));
          if (author === undefined) continue;
          const c = changes();
          label = `save user ${author.id} loaded with its posts, changed ${show(c)}`;
          run = async () => {
            await runWithEncryptionContext({ tenant }, async () => {
              const loaded = await users.findOneOrFail({
                where: { id: author.id },
                relations: { posts: true },
              });
              Object.assign(loaded, values(c));
              await users.save(loaded);
            });
            put({ ...author, ...c });
          };
          break;
        }
        case "upsert": {
          const existing = someUser !== undefined && rng.chance(0.7) ? someUser : undefined;
          const written = newRow(tenant);
          const entity = toUser({
            ...written,
            ...(existing === undefined ? {} : { id: existing.id }),
          });
          label = `upsert ${existing === undefined ? "new" : `over user ${existing.id}`} ${show(written)}`;
          run = async () => {
            await users.upsert(entity, ["id"]);
            const id = existing?.id ?? entity.id;
            put({ id, ...written });
          };
          break;
        }
        case "transaction": {
          const fresh = newRow(tenant);
          const entity = toUser(fresh);
          const target = someUser !== undefined && rng.chance(0.6) ? someUser : undefined;
          const phone = text();
          const body = someUser !== undefined && rng.chance(0.5) ? text() : undefined;
          const rollback = rng.chance(0.35);
          label = `transaction: save ${show(fresh)}${target === undefined ? "" : `, update user ${target.id} phone ${phone}`}${body === undefined ? "" : `, post ${body}`}${rollback ? ", rolled back" : ""}`;
          let postId = 0;
          run = async () => {
            const outcome = await attempt(() =>
              runWithEncryptionContext({ tenant }, () =>
                db.ds.transaction(async (manager) => {
                  await manager.save(entity);
                  if (target !== undefined) {
                    await manager.update(User, target.id, { tenantId: tenant, phone });
                  }
                  if (body !== undefined && someUser !== undefined) {
                    const post = await manager.save(
                      Object.assign(new Post(), { body, author: { id: someUser.id } as User }),
                    );
                    postId = post.id;
                  }
                  if (rollback) throw new Rollback();
                }),
              ),
            );
            if (!restored([entity], [fresh])) {
              failures.push(`transaction left ${show(entity)} on the caller's object: ${tag()}`);
            }
            if (rollback) {
              if (outcome.ok || !(outcome.error instanceof Rollback)) {
                throw outcome.ok ? new Error("the transaction committed") : outcome.error;
              }
              tally.rolledBack++;
              return;
            }
            if (!outcome.ok) throw outcome.error;
            put({ id: entity.id, ...fresh });
            if (target !== undefined) put({ ...target, phone });
            if (body !== undefined && someUser !== undefined) {
              postModel.set(postId, { id: postId, authorId: someUser.id, body });
            }
          };
          break;
        }
        case "delete": {
          const posted = [...postModel.values()].filter(
            (p) => model.get(p.authorId)?.tenantId === tenant,
          );
          if (posted.length > 0 && rng.chance(0.3)) {
            const post = rng.pick(posted);
            label = `delete post ${post.id}`;
            run = async () => {
              await runWithEncryptionContext({ tenant }, async () => {
                const loaded = await posts.findOneByOrFail({ id: post.id });
                await posts.remove(loaded);
              });
              postModel.delete(post.id);
            };
            break;
          }
          const victim = inTenant.find((r) => !hasPosts(r.id));
          if (victim === undefined) continue;
          const how = rng.pick(["where", "id", "remove"] as const);
          label = `delete user ${victim.id} by ${how}`;
          run = async () => {
            if (how === "where") {
              await users.delete(
                await encryptedWhere(users, {
                  tenantId: tenant,
                  email: In([victim.email, text()]),
                }),
              );
            } else if (how === "id") await users.delete(victim.id);
            else await users.remove(await users.findOneByOrFail({ id: victim.id }));
            model.delete(victim.id);
            touched.push(victim.id);
          };
          break;
        }
        case "lookup": {
          if (someUser === undefined) continue;
          const how = rng.pick([
            "emailIn",
            "phoneNot",
            "phoneParameter",
            "emailParameter",
            "builder",
          ] as const);
          label = `lookup ${how} around user ${someUser.id}`;
          const others = inTenant.filter(() => rng.chance(0.3)).map((r) => r.email);
          run = async () => {
            let found: User[];
            let expected: UserRow[];
            if (how === "emailIn" || how === "builder") {
              const emails = [someUser.email, ...others, text()];
              const where = await encryptedWhere(users, { tenantId: tenant, email: In(emails) });
              found =
                how === "builder"
                  ? await users.createQueryBuilder("u").where(where).getMany()
                  : await users.findBy(where);
              expected = inTenant.filter((r) => emails.includes(r.email));
            } else if (how === "phoneNot") {
              const phone = someUser.phone ?? text();
              found = await users.findBy(
                await encryptedWhere(users, { tenantId: tenant, phone: Not(phone) }),
              );
              expected = inTenant.filter((r) => r.phone !== null && r.phone !== phone);
            } else {
              const property = how === "phoneParameter" ? "phone" : "email";
              const value = someUser[property] ?? text();
              const p = await encryptedParameter(users, property, value, {
                context: { tenantId: tenant },
              });
              const column = property === "phone" ? "phoneIndex" : "email";
              found = await users
                .createQueryBuilder("u")
                .where(`u.tenantId = :t AND u.${column} = :p`, { t: tenant, p })
                .getMany();
              expected = inTenant.filter((r) => r[property] === value);
            }
            if (
              !sameRows(
                found,
                expected.map((r) => r.id),
              )
            ) {
              failures.push(
                `lookup found ${show(found.map(userRowOf))}, expected ${show(expected)}: ${tag()}`,
              );
            }
          };
          break;
        }
        case "misuse": {
          const secret = text();
          const how = rng.pick<MisuseKind>([
            "findBy",
            "findByLike",
            "countByIn",
            "existsBy",
            "findOneByJson",
            "builderWhere",
            "updateCriteria",
            "deleteCriteria",
            "findByRaw",
            "findByRawSql",
          ] as const);
          expectation = "refuse";
          refuseNames = /\bUser\.(email|phone|profile)\b/;
          label = `plain ${how} with ${secret}`;
          run = async () => {
            switch (how) {
              case "findBy":
                await users.findBy({ tenantId: tenant, email: secret });
                break;
              case "findByLike":
                await users.findBy({ tenantId: tenant, phone: Like(`%${secret}%`) });
                break;
              case "countByIn":
                await users.countBy({ email: In([secret]) });
                break;
              case "existsBy":
                await users.existsBy({ phone: Not(secret) });
                break;
              case "findOneByJson":
                await users.findOneBy({ profile: { likes: [secret], age: 1 } as never });
                break;
              case "builderWhere":
                await users.createQueryBuilder("u").where({ email: secret }).getMany();
                break;
              case "updateCriteria":
                await users.update({ email: secret }, { tenantId: tenant });
                break;
              case "deleteCriteria":
                await users.delete({ phone: secret });
                break;
              case "findByRaw":
                await users.findBy({ email: Raw((alias) => `${alias} = :v`, { v: secret }) });
                break;
              case "findByRawSql":
                await users.findBy({ phone: Raw(`'${secret}'`) });
                break;
            }
          };
          break;
        }
      }

      const where = tag();
      const failuresBefore = failures.length;
      const before = db.log.length;
      const outcome = await attempt(run);
      for (const leak of leaks(db.log.slice(before), secrets))
        failures.push(`leak ${leak}: ${where}`);
      if (outcome.ok) {
        tally.ok++;
        if (expectation === "refuse") failures.push(`accepted: ${where}`);
      } else {
        tally.refused++;
        const message = describeError(outcome.error);
        if (expectation === "ok") failures.push(`failed (${message}): ${where}`);
        else if (!(outcome.error instanceof ValidationError) || !refuseNames.test(message)) {
          failures.push(`refused with ${message}: ${where}`);
        }
      }
      if (outcome.ok) {
        for (const id of touched) {
          const row = model.get(id);
          const found = await users.findOneBy({ id });
          if (show(found === null ? undefined : userRowOf(found)) !== show(row)) {
            failures.push(`user ${id} reads ${show(found)}, expected ${show(row)}: ${where}`);
          } else if (row !== undefined) {
            // The index must follow the phone: null exactly when it is, else its hash.
            const phone = row.phone ?? IsNull();
            const ids = (
              await users.findBy(await encryptedWhere(users, { tenantId: row.tenantId, phone }))
            ).map((u) => u.id);
            if (!ids.includes(id)) {
              failures.push(
                `user ${id} is not found by its phone ${show(row.phone)} (found ${show(ids)}): ${where}`,
              );
            }
          }
        }
      }
      if (i % 20 === 19) await verify(where);
      // One failure must not cascade into many: take the database as it is, and rewrite every
      // user through save() (which seals all columns and recomputes the index) to repair it.
      if (failures.length > failuresBefore) await resync();
    }
    await verify(`seed ${SEED} after ${OPERATIONS} operations`);
    // At rest too: no table holds a plaintext.
    const tables = db
      .raw(`SELECT name FROM sqlite_master WHERE type = 'table'`)
      .map((r) => String(r.name));
    for (const table of tables) {
      const cells = db.raw(`SELECT * FROM "${table}"`).flatMap((r) => Object.values(r));
      const hits = leaks([{ source: "driver", sql: "", params: cells }], secrets);
      for (const hit of hits) failures.push(`stored in ${table}: ${hit}`);
    }
    expect(failures.slice(0, 20), `${failures.length} failures; tally ${show(tally)}`).toEqual([]);
    // The recording must have seen the traffic, or the absence of leaks proves nothing.
    expect(db.log.filter((r) => r.source === "driver").length).toBeGreaterThan(OPERATIONS);
    expect(db.log.filter((r) => r.source === "logger").length).toBeGreaterThan(OPERATIONS);
    expect(tally.ok).toBeGreaterThan(OPERATIONS / 2);
    expect(tally.rolledBack).toBeGreaterThan(0);
    expect(model.size).toBeGreaterThan(10);
  });
});

// ---------------------------------------------------------------------------------------------
// Property 3: a stored value copied (raw SQL) to another row, column, tenant or entity fails to
// decrypt with InvalidCiphertextError on every read path, warm or cold, unless its binding
// (entity, column, context: the README's AAD) is the same, in which case it reads as the value
// it was. A row moved to another tenant fails the same way.
// ---------------------------------------------------------------------------------------------

interface StoredCell {
  readonly table: "kms_users" | "kms_posts" | "kms_notes";
  readonly id: number;
  readonly column: string;
  /** Entity, column and context: what the ciphertext is bound to. */
  readonly binding: string;
  readonly plaintext: unknown;
}

describe("a value moved to another row, column, tenant or entity does not decrypt", () => {
  const CASES = 400;
  let db: TestDatabase;
  let encryption: TypeormFieldEncryption;
  let users: Repository<User>;
  let posts: Repository<Post>;
  let notes: Repository<Note>;
  const cells: StoredCell[] = [];
  const tenantOfPost = new Map<number, string>();
  const authorOfPost = new Map<number, number>();

  beforeAll(async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    encryption = fieldEncryption({ kms, keyId });
    db = await openDatabase(encryption, [User, Post, Note]);
    users = db.ds.getRepository(User);
    posts = db.ds.getRepository(Post);
    notes = db.ds.getRepository(Note);
    const rng = new Rng(SEED, 3, -1);
    let serial = 0;
    const text = () => secretText(rng, serial++);
    for (const tenantId of TENANTS) {
      for (let n = 0; n < 3; n++) {
        const row = {
          tenantId,
          email: text(),
          phone: text(),
          profile: { likes: [text()], age: rng.int(90) },
          avatar: text(),
        };
        const user = await users.save(toUser(row));
        const context = `tenantId=${tenantId}`;
        for (const column of ["email", "phone", "profile"] as const) {
          cells.push({
            table: "kms_users",
            id: user.id,
            column,
            binding: `User.${column} ${context}`,
            plaintext: row[column],
          });
        }
        cells.push({
          table: "kms_users",
          id: user.id,
          column: "avatar",
          binding: "User.avatar",
          plaintext: row.avatar,
        });
        const body = text();
        const post = await runWithEncryptionContext({ tenant: tenantId }, () =>
          posts.save(Object.assign(new Post(), { body, author: user })),
        );
        tenantOfPost.set(post.id, tenantId);
        authorOfPost.set(post.id, user.id);
        cells.push({
          table: "kms_posts",
          id: post.id,
          column: "body",
          binding: `Post.body tenant=${tenantId}`,
          plaintext: body,
        });
      }
    }
    for (let n = 0; n < 3; n++) {
      const note = await notes.save(Object.assign(new Note(), { title: text(), code: text() }));
      cells.push({
        table: "kms_notes",
        id: note.id,
        column: "title",
        binding: "Note.title",
        plaintext: note.title,
      });
      cells.push({
        table: "kms_notes",
        id: note.id,
        column: "code",
        binding: "Note.code",
        plaintext: note.code,
      });
    }
  });
  afterAll(async () => {
    await db?.close();
  });

  const stored = (cell: StoredCell): unknown =>
    db.raw(`SELECT "${cell.column}" AS v FROM "${cell.table}" WHERE "id" = ?`, [cell.id])[0]?.v;
  const write = (cell: StoredCell, value: unknown): void => {
    db.raw(`UPDATE "${cell.table}" SET "${cell.column}" = ? WHERE "id" = ?`, [value, cell.id]);
  };

  /** Reads the cell's row through one of the decrypting paths; returns the cell's value. */
  async function read(cell: StoredCell, how: number): Promise<unknown> {
    if (cell.table === "kms_notes") {
      const note =
        how % 2 === 0
          ? await notes.findOneByOrFail({ id: cell.id })
          : await notes.createQueryBuilder("n").where("n.id = :id", { id: cell.id }).getOneOrFail();
      return note[cell.column as "title" | "code"];
    }
    if (cell.table === "kms_posts") {
      const tenant = tenantOfPost.get(cell.id) as string;
      return runWithEncryptionContext({ tenant }, async () => {
        if (how % 3 === 0) return (await posts.findOneByOrFail({ id: cell.id })).body;
        if (how % 3 === 1) {
          // Through the author's one-to-many relation.
          const author = await users.findOneOrFail({
            where: { id: authorOfPost.get(cell.id) as number },
            relations: { posts: true },
          });
          return author.posts.find((p) => p.id === cell.id)?.body;
        }
        return (await posts.find({ where: { author: { tenantId: tenant } } })).find(
          (p) => p.id === cell.id,
        )?.body;
      });
    }
    let user: User | undefined;
    switch (how % 4) {
      case 0:
        user = await users.findOneByOrFail({ id: cell.id });
        break;
      case 1:
        user = await users
          .createQueryBuilder("u")
          .where("u.id = :id", { id: cell.id })
          .getOneOrFail();
        break;
      case 2:
        user = (await users.find({ order: { id: "ASC" } })).find((u) => u.id === cell.id);
        break;
      default: {
        // Through a post's eager author, inside the post's tenant.
        const postId = [...authorOfPost].find(([, a]) => a === cell.id)?.[0] as number;
        const tenant = tenantOfPost.get(postId) as string;
        user = (
          await runWithEncryptionContext({ tenant }, () => posts.findOneByOrFail({ id: postId }))
        ).author;
      }
    }
    const value: unknown = user?.[cell.column as "email" | "phone" | "profile" | "avatar"];
    return value instanceof Uint8Array ? Buffer.from(value).toString("utf8") : value;
  }

  test(`${CASES} random copies and tenant moves, read warm and cold`, async () => {
    const failures: string[] = [];
    const tally = { moved: 0, sameBinding: 0, refused: 0 };
    for (let i = 0; i < CASES; i++) {
      const rng = new Rng(SEED, 3, i);
      const how = rng.int(12);
      const cold = rng.chance(0.5);
      let label: string;
      let expected: { value: unknown } | "invalid";
      let target: StoredCell;
      let undo: () => void;
      if (rng.chance(0.25)) {
        // The whole row moves: every value bound to its tenant is now out of place.
        const userCells = cells.filter((c) => c.table === "kms_users" && c.column !== "avatar");
        target = rng.pick(userCells);
        const from = db.raw(`SELECT "tenantId" AS t FROM "kms_users" WHERE "id" = ?`, [
          target.id,
        ])[0]?.t;
        const to = rng.pick(TENANTS.filter((t) => t !== from));
        db.raw(`UPDATE "kms_users" SET "tenantId" = ? WHERE "id" = ?`, [to, target.id]);
        undo = () =>
          db.raw(`UPDATE "kms_users" SET "tenantId" = ? WHERE "id" = ?`, [from, target.id]);
        label = `user ${target.id} moved from ${from} to ${to}`;
        expected = "invalid";
      } else {
        const source = rng.pick(cells);
        target = rng.pick(cells.filter((c) => c !== source));
        // A copy of another row's email duplicates a value of a unique column.
        if (source.column === "email" && target.column === "email" && source.table === target.table)
          continue;
        const original = stored(target);
        write(target, stored(source));
        undo = () => write(target, original);
        label = `${source.table}.${source.column} of ${source.id} (${source.binding}) copied to ${target.table}.${target.column} of ${target.id} (${target.binding})`;
        expected = source.binding === target.binding ? { value: source.plaintext } : "invalid";
      }
      const where = `seed ${SEED} case ${i}: ${label}, read ${how}${cold ? " cold" : ""}`;
      if (cold) encryption.engine.clearCache();
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on("unhandledRejection", onUnhandled);
      const outcome = await attempt(() => read(target, how));
      // A rejection nobody awaits surfaces once the abandoned batch settles.
      if (!outcome.ok)
        for (let n = 0; n < 3; n++) await new Promise((resolve) => setImmediate(resolve));
      process.off("unhandledRejection", onUnhandled);
      for (const reason of unhandled) {
        failures.push(`unhandled rejection ${describeError(reason)}: ${where}`);
      }
      undo();
      if (expected === "invalid") {
        tally.moved++;
        if (outcome.ok) failures.push(`read ${show(outcome.value)}: ${where}`);
        else if (!(outcome.error instanceof InvalidCiphertextError)) {
          failures.push(`failed with ${describeError(outcome.error)}: ${where}`);
        } else tally.refused++;
      } else {
        tally.sameBinding++;
        if (!outcome.ok) failures.push(`failed with ${describeError(outcome.error)}: ${where}`);
        else if (show(outcome.value) !== show(expected.value)) {
          failures.push(`read ${show(outcome.value)}, expected ${show(expected.value)}: ${where}`);
        }
      }
    }
    // Every cell reads as written again: the copies were undone, nothing else changed.
    for (const cell of cells) {
      const outcome = await attempt(() => read(cell, 0));
      if (!outcome.ok || show(outcome.value) !== show(cell.plaintext)) {
        failures.push(
          `cell ${cell.table}.${cell.column} of ${cell.id} reads ${show(outcome.ok ? outcome.value : describeError(outcome.error))} after the test`,
        );
      }
    }
    expect(failures.slice(0, 20), `${failures.length} failures; tally ${show(tally)}`).toEqual([]);
    expect(tally.refused).toBeGreaterThan(CASES / 2);
    expect(tally.sameBinding).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Minimal counterexamples found by the properties, kept as regressions: each fails until the
// package handles it.
// ---------------------------------------------------------------------------------------------

describe("regressions: counterexamples to the properties", () => {
  let db: TestDatabase;
  let users: Repository<User>;

  beforeAll(async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    db = await openDatabase(fieldEncryption({ kms, keyId }), [User, Post, Note]);
    users = db.ds.getRepository(User);
  });
  afterAll(async () => {
    await db?.close();
  });

  const user = (tenantId: string, email: string, phone: string | null) =>
    toUser({ tenantId, email, phone, profile: null, avatar: null });

  // Property 1: encryptedWhere drops a key whose value is undefined (`if (value === undefined)
  // continue`), where TypeORM 1.x refuses it on a plaintext column (invalidWhereValuesBehavior
  // defaults to "throw"); the lookup silently matches every row of the tenant.
  test("an undefined lookup value is refused as on a plaintext column, not dropped", async () => {
    await users.save([
      user("ra", "§alice@example.com", null),
      user("ra", "§bob@example.com", null),
    ]);
    const input: { email?: string } = {};
    const outcome = await attempt(async () =>
      users.findOneBy(
        await encryptedWhere(users, {
          tenantId: "ra",
          email: input.email,
        } as FindOptionsWhere<User>),
      ),
    );
    expect(outcome.ok ? `found ${show(outcome.value?.email)}` : "refused").toBe("refused");
    if (!outcome.ok) {
      expect(outcome.error instanceof ValidationError || isInvalidWhereValue(outcome.error)).toBe(
        true,
      );
    }
  });

  // Property 1: a null inside In (or Equal) on a blind-indexed column is replaced by the index
  // of JSON null instead of staying SQL NULL, so NOT(phone IN (x, NULL)) matches rows that it
  // matches on no plaintext row (where it is unknown unless phone = x, and then false).
  test("a null inside In on a blind-indexed column keeps SQL's NULL semantics", async () => {
    await users.save([user("rb", "§a@x", "§+1 555 0100"), user("rb", "§b@x", "§+1 555 0199")]);
    const outcome = await attempt(async () =>
      users.findBy(
        await encryptedWhere(users, { tenantId: "rb", phone: Not(In(["§+1 555 0100", null])) }),
      ),
    );
    // Refusing a null it cannot seal is as good as the plaintext answer.
    if (outcome.ok) expect(outcome.value.map((u) => u.email)).toEqual([]);
    else expect(outcome.error).toBeInstanceOf(ValidationError);
  });

  // Property 2: Repository.upsert computes its ON CONFLICT ... DO UPDATE SET list from the
  // entity before beforeInsert adds the index, so the phone was replaced and its index was not.
  test("upsert over an existing row recomputes the blind index", async () => {
    const saved = await users.save(user("rc", "§c@x", "§111"));
    await users.upsert(Object.assign(user("rc", "§c2@x", "§333"), { id: saved.id }), ["id"]);
    expect((await users.findOneByOrFail({ id: saved.id })).phone).toBe("§333");
    const byPhone = async (phone: string) =>
      (await users.findBy(await encryptedWhere(users, { tenantId: "rc", phone }))).map((u) => u.id);
    expect({ new: await byPhone("§333"), old: await byPhone("§111") }).toEqual({
      new: [saved.id],
      old: [],
    });
  });

  // Property 3: with a warm cache, afterLoad throws synchronously for one value after another
  // value of the row joined the asynchronous batch; TypeORM abandons the batch's promise, whose
  // rejection is then unhandled (which ends a Node process by default).
  test("a row moved to another tenant fails to load without an unhandled rejection", async () => {
    const moved = await users.save(user("rd1", "§d@x", "§444"));
    await users.save(user("rd2", "§e@x", "§555"));
    db.raw(`UPDATE "kms_users" SET "tenantId" = 'rd2' WHERE "id" = ?`, [moved.id]);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      await expect(users.findOneBy({ id: moved.id })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      process.off("unhandledRejection", onUnhandled);
      db.raw(`UPDATE "kms_users" SET "tenantId" = 'rd1' WHERE "id" = ?`, [moved.id]);
    }
    expect(unhandled.map(describeError)).toEqual([]);
  });

  // Found while probing property 1's `context` option: it wins over the where's own tenant
  // equality, so a contradictory pair seals the value under another tenant and Not() returns
  // the very row it excludes.
  test("a context that contradicts the where's own equality is refused, not obeyed", async () => {
    await users.save(user("re2", "§f@x", null));
    const outcome = await attempt(async () =>
      users.findBy(
        await encryptedWhere(
          users,
          { tenantId: "re2", email: Not("§f@x") },
          { context: { tenantId: "re1" } },
        ),
      ),
    );
    if (outcome.ok) expect(outcome.value.map((u) => u.email)).toEqual([]);
    else expect(outcome.error).toBeInstanceOf(ValidationError);
  });

  // Property 2: Raw on an encrypted column in a plain find was not refused: with parameters the
  // plaintext was sent and silently matched nothing; as SQL text it failed with QueryFailedError.
  test("Raw on an encrypted column is refused and sends no plaintext", async () => {
    const secret = "§raw secret§";
    for (const operator of [Raw((alias) => `${alias} = :v`, { v: secret }), Raw(`'${secret}'`)]) {
      const before = db.log.length;
      const outcome = await attempt(() => users.findBy({ email: operator }));
      expect(leaks(db.log.slice(before), [secret])).toEqual([]);
      expect(outcome.ok ? "answered" : describeError(outcome.error)).toMatch(/^ValidationError/);
    }
  });

  // Found by a junk-input table: an array where was rewritten element by element without a
  // check, so a null element crashed with a TypeError and a string became `{ 0: "t", … }`.
  test("an array where with an element that is not an object is a ValidationError", async () => {
    for (const where of [[null], [undefined], ["tenantId"], [{ tenantId: "rg" }, 7]]) {
      const outcome = await attempt(() => encryptedWhere(users, where as FindOptionsWhere<User>[]));
      expect(outcome.ok ? "answered" : describeError(outcome.error), inspect(where)).toMatch(
        /^ValidationError: "where" expected an object or an array of objects/,
      );
    }
  });

  // TypeORM pastes some operands into the SQL text itself; a plaintext stand-in that printed as
  // "[object Object]" there reached the database as a broken statement instead of a refusal.
  test("a plaintext stand-in refuses to become a string or a number", () => {
    const unsealed = new UnsealedValue("User", "email");
    for (const convert of [
      () => String(unsealed),
      () => `${unsealed}`,
      () => Number(unsealed),
      () => `${unsealed.valueOf()}`,
      () => JSON.stringify([unsealed]),
    ]) {
      expect(convert).toThrow(ValidationError);
      expect(convert).toThrow(/^User\.email is encrypted: .*encryptedWhere\(\)/);
    }
  });
});
