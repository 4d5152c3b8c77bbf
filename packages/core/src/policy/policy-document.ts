/**
 * Key policy documents in AWS's JSON grammar, parsed into a form the evaluator can run without
 * re-validating. Every malformed document is rejected with MalformedPolicyDocumentError naming
 * the JSON path of the bad element (`$.Statement[1].Condition.StringEquals`).
 */
import { MalformedPolicyDocumentError } from "../errors.ts";
import { findRepeatedJsonName, jsonMemberPath } from "../internal/json-names.ts";
import { type ConditionOperator, DECIMAL, parseConditionOperator } from "./conditions.ts";
import { type PolicyValue, parseTemplate } from "./variables.ts";

/** AWS's limit for a key policy document. */
export const MAX_KEY_POLICY_BYTES = 32768;

export type Effect = "Allow" | "Deny";

/** Principals named in a statement; `any` for `"*"` or `{"AWS": "*"}`. */
export interface PrincipalSet {
  readonly any: boolean;
  readonly aws: readonly string[];
  readonly service: readonly string[];
  /** Exact principal names (AWS and Service entries), for a constant-time lookup. */
  readonly names: ReadonlySet<string>;
  /** Accounts named by their root (`arn:…:iam::<account>:root` or a bare account id). */
  readonly accounts: ReadonlySet<string>;
}

function accountRoot(entry: string): string | undefined {
  if (/^\d{12}$/.test(entry)) return entry;
  return /^arn:[^:]+:iam::(\d{12}):root$/.exec(entry)?.[1];
}

function principalSetOf(any: boolean, aws: string[], service: string[]): PrincipalSet {
  const accounts = new Set<string>();
  for (const entry of aws) {
    const root = accountRoot(entry);
    if (root !== undefined) accounts.add(root);
  }
  return { any, aws, service, names: new Set([...aws, ...service]), accounts };
}

export interface ConditionClause {
  /** As written, for explanations. */
  readonly operatorText: string;
  readonly operator: ConditionOperator;
  /** As written; matched case-insensitively, the kms:EncryptionContext:<key> key part too. */
  readonly key: string;
  readonly values: readonly string[];
  /** The values with their policy variables, when any has one; resolved per request. */
  readonly templates?: readonly PolicyValue[];
}

export interface PolicyStatement {
  readonly index: number;
  readonly sid?: string;
  readonly effect: Effect;
  readonly principal?: PrincipalSet;
  readonly notPrincipal?: PrincipalSet;
  /** Lower-cased action patterns; exactly one of actions / notActions is set. */
  readonly actions?: readonly string[];
  readonly notActions?: readonly string[];
  readonly resources?: readonly string[];
  readonly notResources?: readonly string[];
  /** Resource / NotResource patterns with their policy variables, when any has one. */
  readonly resourceTemplates?: readonly PolicyValue[];
  readonly notResourceTemplates?: readonly PolicyValue[];
  readonly conditions: readonly ConditionClause[];
}

export interface PolicyDocument {
  readonly version: string;
  readonly id?: string;
  readonly statements: readonly PolicyStatement[];
}

function fail(path: string, rule: string): never {
  throw new MalformedPolicyDocumentError(`policy document: ${path} ${rule}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A string or a non-empty array of strings (AWS accepts both). */
function stringList(path: string, value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (!Array.isArray(value) || value.length === 0) {
    fail(path, "must be a string or a non-empty array of strings");
  }
  return value.map((item, i) => {
    if (typeof item !== "string") fail(`${path}[${i}]`, "must be a string");
    return item;
  });
}

const ACTION = /^(\*|[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+)$/;

function actionList(path: string, value: unknown): string[] {
  return stringList(path, value).map((action, i) => {
    if (!ACTION.test(action)) {
      fail(Array.isArray(value) ? `${path}[${i}]` : path, `"${action}" is not an action`);
    }
    return action.toLowerCase();
  });
}

function principalSet(path: string, value: unknown, strict: boolean): PrincipalSet {
  if (value === "*") return principalSetOf(true, [], []);
  if (!isObject(value)) fail(path, `must be "*" or an object with "AWS" or "Service"`);
  const keys = Object.keys(value);
  if (keys.length === 0) fail(path, "must name at least one principal");
  let aws: string[] = [];
  let service: string[] = [];
  for (const key of keys) {
    const list = stringList(jsonMemberPath(path, key), value[key]);
    list.forEach((p, i) => {
      const at = Array.isArray(value[key])
        ? `${jsonMemberPath(path, key)}[${i}]`
        : jsonMemberPath(path, key);
      if (p.length === 0) fail(at, "must not be empty");
      // Principals are matched by exact name, so a wildcard inside one would match no caller: a
      // Deny naming `…:user/*` would deny nobody. AWS refuses such a principal as invalid.
      if (strict && /[*?]/.test(p) && !(key === "AWS" && p === "*")) {
        fail(at, `"${p}" is not a principal: the only wildcard is "*" or {"AWS": "*"}`);
      }
    });
    if (key === "AWS") aws = list;
    else if (key === "Service") service = list;
    else if (key !== "Federated" && key !== "CanonicalUser") {
      fail(
        jsonMemberPath(path, key),
        `is not a principal type (AWS, Service, Federated, CanonicalUser)`,
      );
    }
  }
  return principalSetOf(aws.includes("*"), aws, service);
}

/**
 * The values' policy variables, parsed (only "2012-10-17" policies have them; in "2008-10-17"
 * `${…}` is plain text, as in IAM). Undefined when no value has one.
 */
function templatesOf(
  path: (i: number) => string,
  values: readonly string[],
  variables: boolean,
  allowed = true,
): PolicyValue[] | undefined {
  if (!variables || !values.some((v) => v.includes("${"))) return undefined;
  return values.map((v, i) => {
    const parsed = parseTemplate(v);
    if (typeof parsed === "object" && "problem" in parsed) return fail(path(i), parsed.problem);
    if (typeof parsed !== "string" && !allowed) {
      fail(path(i), "may use policy variables only with String and Arn condition operators");
    }
    return parsed;
  });
}

/**
 * Single-valued keys AWS refuses under ForAllValues (OverlyPermissiveCondition): the set
 * operator is true for a request without the key, so `ForAllValues:StringEquals
 * kms:EncryptionContext:tenant` would allow calls with no tenant at all.
 */
const SINGLE_VALUED = /^(kms:encryptioncontext:|aws:requesttag\/)/i;

/**
 * Arn operators compare the six colon-separated parts of an ARN: a value with fewer parts (and
 * no variable that could supply them) matches no request, so a Deny holding it would deny
 * nothing and an ArnNot… Deny everything.
 */
function arnProblem(operator: ConditionOperator, values: readonly string[]): string | undefined {
  if (!operator.base.startsWith("Arn")) return undefined;
  const bad = values.find((v) => v !== "*" && !v.includes("${") && v.split(":").length < 6);
  return bad === undefined
    ? undefined
    : `value "${bad}" is not an ARN (arn:partition:service:region:account:resource) or "*"`;
}

/**
 * Numeric operators compare integers and decimals (IAM: "an integer or decimal value"), as
 * DECIMAL spells them. A JSON number is decimal already.
 */

function numericProblem(
  operator: ConditionOperator,
  items: readonly unknown[],
): string | undefined {
  if (!operator.base.startsWith("Numeric")) return undefined;
  const bad = items.find((v) => typeof v === "string" && !DECIMAL.test(v));
  return bad === undefined
    ? undefined
    : `value "${String(bad)}" is not a decimal number (digits, optionally a leading "-" and a fraction: "30", "-1.5")`;
}

function conditionBlock(
  path: string,
  value: unknown,
  variables: boolean,
  strict: boolean,
): ConditionClause[] {
  if (!isObject(value)) fail(path, "must be an object of condition operators");
  const clauses: ConditionClause[] = [];
  for (const [operatorText, block] of Object.entries(value)) {
    const opPath = jsonMemberPath(path, operatorText);
    const operator = parseConditionOperator(operatorText);
    if (operator === undefined) fail(opPath, "is not a condition operator");
    if (!isObject(block) || Object.keys(block).length === 0) {
      fail(opPath, "must be a non-empty object of condition keys");
    }
    for (const [key, raw] of Object.entries(block)) {
      const keyPath = jsonMemberPath(opPath, key);
      if (key.length === 0 || key.length > 256) fail(keyPath, "is not a condition key");
      if (strict && operator.set === "ForAllValues" && SINGLE_VALUED.test(key)) {
        fail(
          keyPath,
          "is single-valued: ForAllValues would match requests without it (AWS: OverlyPermissiveCondition); remove ForAllValues",
        );
      }
      const list = Array.isArray(raw) ? raw : [raw];
      if (list.length === 0) fail(keyPath, "must have at least one value");
      const values = list.map((item, i) => {
        const itemPath = Array.isArray(raw) ? `${keyPath}[${i}]` : keyPath;
        if (typeof item === "string") return item;
        if (typeof item === "boolean") return String(item);
        if (typeof item === "number" && Number.isFinite(item)) return String(item);
        return fail(itemPath, "must be a string, number or boolean");
      });
      const templates = templatesOf(
        (i) => (Array.isArray(raw) ? `${keyPath}[${i}]` : keyPath),
        values,
        variables,
        operator.takesVariables,
      );
      const problem =
        operator.validate(values) ??
        (strict ? (arnProblem(operator, values) ?? numericProblem(operator, list)) : undefined);
      if (problem !== undefined) fail(keyPath, problem);
      clauses.push({ operatorText, operator, key, values, ...(templates ? { templates } : {}) });
    }
  }
  return clauses;
}

const STATEMENT_KEYS = new Set([
  "Sid",
  "Effect",
  "Principal",
  "NotPrincipal",
  "Action",
  "NotAction",
  "Resource",
  "NotResource",
  "Condition",
]);

function statement(
  path: string,
  value: unknown,
  index: number,
  variables: boolean,
  strict: boolean,
): PolicyStatement {
  if (!isObject(value)) fail(path, "must be an object");
  for (const key of Object.keys(value)) {
    if (!STATEMENT_KEYS.has(key)) fail(jsonMemberPath(path, key), "is not a statement element");
  }
  const s = value;
  let sid: string | undefined;
  if (s.Sid !== undefined) {
    if (typeof s.Sid !== "string" || !/^[A-Za-z0-9 _.:/=+@-]*$/.test(s.Sid)) {
      fail(`${path}.Sid`, "must be a string of letters, digits, spaces and _.:/=+@-");
    }
    sid = s.Sid;
  }
  if (s.Effect !== "Allow" && s.Effect !== "Deny")
    fail(`${path}.Effect`, `must be "Allow" or "Deny"`);
  if ((s.Principal === undefined) === (s.NotPrincipal === undefined)) {
    fail(path, `must have exactly one of "Principal" and "NotPrincipal"`);
  }
  // AWS: "NotPrincipal must be used with Effect Deny". An Allow for everyone but the named
  // principals would reach every other account too.
  if (strict && s.NotPrincipal !== undefined && s.Effect === "Allow") {
    fail(`${path}.NotPrincipal`, `may only be used with "Effect": "Deny"`);
  }
  if ((s.Action === undefined) === (s.NotAction === undefined)) {
    fail(path, `must have exactly one of "Action" and "NotAction"`);
  }
  if ((s.Resource === undefined) === (s.NotResource === undefined)) {
    fail(path, `must have exactly one of "Resource" and "NotResource"`);
  }
  return {
    index,
    ...(sid !== undefined ? { sid } : {}),
    effect: s.Effect,
    ...(s.Principal !== undefined
      ? { principal: principalSet(`${path}.Principal`, s.Principal, strict) }
      : { notPrincipal: principalSet(`${path}.NotPrincipal`, s.NotPrincipal, strict) }),
    ...(s.Action !== undefined
      ? { actions: actionList(`${path}.Action`, s.Action) }
      : { notActions: actionList(`${path}.NotAction`, s.NotAction) }),
    ...resourcePatterns(path, s.Resource, s.NotResource, variables, strict),
    conditions:
      s.Condition === undefined
        ? []
        : conditionBlock(`${path}.Condition`, s.Condition, variables, strict),
  };
}

function resourcePatterns(
  path: string,
  resource: unknown,
  notResource: unknown,
  variables: boolean,
  strict: boolean,
): Pick<
  PolicyStatement,
  "resources" | "notResources" | "resourceTemplates" | "notResourceTemplates"
> {
  const element = resource !== undefined ? "Resource" : "NotResource";
  const list = stringList(`${path}.${element}`, resource ?? notResource);
  const at = (i: number) =>
    Array.isArray(resource ?? notResource) ? `${path}.${element}[${i}]` : `${path}.${element}`;
  // An empty pattern matches no key: a Deny holding it would deny nothing.
  if (strict) {
    list.forEach((r, i) => {
      if (r.length === 0) fail(at(i), "must not be empty");
    });
  }
  const templates = templatesOf(at, list, variables);
  if (resource !== undefined) {
    return { resources: list, ...(templates ? { resourceTemplates: templates } : {}) };
  }
  return { notResources: list, ...(templates ? { notResourceTemplates: templates } : {}) };
}

/**
 * Parses and validates a key policy document. A key repeated within one JSON object is refused:
 * `"Effect": "Deny", …, "Effect": "Allow"` would otherwise silently mean Allow.
 * @throws MalformedPolicyDocumentException naming the path of the first bad element.
 */
export function parsePolicy(text: unknown): PolicyDocument {
  const document = parseDocument(text, true);
  const repeated = findRepeatedJsonName(text as string);
  if (repeated !== undefined) {
    fail(repeated.path, "is repeated; JSON.parse would keep only the last");
  }
  return document;
}

/**
 * parsePolicy without the repeated-key check, for policies already stored: one an earlier
 * release accepted must stay usable, if only to replace it. `strict` adds the checks later
 * releases made for new documents (ForAllValues with a single-valued key, wildcard principals,
 * empty resources, ARN and numeric literals).
 */
function parseDocument(text: unknown, strict = false): PolicyDocument {
  if (typeof text !== "string") fail("$", "must be a JSON string");
  if (text.trim().length === 0) fail("$", "must not be empty");
  if (Buffer.byteLength(text, "utf8") > MAX_KEY_POLICY_BYTES) {
    fail("$", `must be at most ${MAX_KEY_POLICY_BYTES} bytes`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    fail("$", "is not valid JSON");
  }
  if (!isObject(json)) fail("$", "must be a JSON object");
  for (const key of Object.keys(json)) {
    if (key !== "Version" && key !== "Id" && key !== "Statement") {
      fail(jsonMemberPath("$", key), "is not a policy element (Version, Id, Statement)");
    }
  }
  const version = json.Version ?? "2008-10-17";
  if (version !== "2012-10-17" && version !== "2008-10-17") {
    fail("$.Version", `must be "2012-10-17" or "2008-10-17"`);
  }
  if (json.Id !== undefined && typeof json.Id !== "string") fail("$.Id", "must be a string");
  const raw = json.Statement;
  if (raw === undefined) fail("$.Statement", "is required");
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0) fail("$.Statement", "must have at least one statement");
  const statements = list.map((s, i) =>
    statement(
      Array.isArray(raw) ? `$.Statement[${i}]` : "$.Statement",
      s,
      i,
      version === "2012-10-17",
      strict,
    ),
  );
  const sids = new Set<string>();
  for (const s of statements) {
    if (s.sid === undefined || s.sid === "") continue;
    if (sids.has(s.sid)) fail(`$.Statement[${s.index}].Sid`, `"${s.sid}" is not unique`);
    sids.add(s.sid);
  }
  return { version, ...(typeof json.Id === "string" ? { id: json.Id } : {}), statements };
}

const cache = new Map<string, PolicyDocument>();
const CACHE_LIMIT = 256;

/**
 * A stored policy, parsed with a small cache: a key's policy is parsed once, not on every call.
 * No repeated-key check (see parseDocument): new documents went through parsePolicy.
 */
export function parsePolicyCached(text: string): PolicyDocument {
  const hit = cache.get(text);
  if (hit !== undefined) return hit;
  const parsed = parseDocument(text);
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  cache.set(text, parsed);
  return parsed;
}

/**
 * The policy AWS gives a key created without one: the account (root) may do everything, which
 * here means every principal of the account (there is no IAM layer; see docs/POLICY.md).
 */
export function defaultKeyPolicy(partition: string, account: string): string {
  // Memoized: keys without a stored policy ask for it on every call.
  const id = `${partition}:${account}`;
  let text = defaultPolicies.get(id);
  if (text === undefined) {
    text = renderDefaultKeyPolicy(partition, account);
    if (defaultPolicies.size < 64) defaultPolicies.set(id, text);
  }
  return text;
}

const defaultPolicies = new Map<string, string>();

function renderDefaultKeyPolicy(partition: string, account: string): string {
  return JSON.stringify(
    {
      Version: "2012-10-17",
      Id: "key-default-1",
      Statement: [
        {
          Sid: "Enable IAM User Permissions",
          Effect: "Allow",
          Principal: { AWS: `arn:${partition}:iam::${account}:root` },
          Action: "kms:*",
          Resource: "*",
        },
      ],
    },
    null,
    2,
  );
}
