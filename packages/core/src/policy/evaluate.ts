/**
 * Policy evaluation: an explicit Deny in the key policy wins; otherwise an Allow from the key
 * policy or from a grant permits the call; otherwise the call is implicitly denied.
 */
import type { StoredGrant } from "../keystore/key-store.ts";
import { globMatch } from "./conditions.ts";
import type {
  ConditionClause,
  PolicyDocument,
  PolicyStatement,
  PrincipalSet,
} from "./policy-document.ts";
import { resolveValues, variableKeys } from "./variables.ts";

export interface AuthorizationRequest {
  /** `kms:Encrypt`, `kms:ReEncryptFrom`… */
  readonly action: string;
  /** `action` in lower case (policy actions are case-insensitive). */
  readonly actionLower: string;
  readonly principal: string;
  /** The principal's account, when its name carries one (ARNs). */
  readonly principalAccount: string | undefined;
  /** Key ARN, or `*` for calls without a key. */
  readonly resource: string;
  /** Condition key values: undefined when absent; condition key names are case-insensitive. */
  conditionValues(key: string): readonly string[] | undefined;
  /**
   * Set only when the request reads some single-valued key more than one way: the readings of
   * `key` (each its values under one reading), or undefined when it has one reading. A context
   * holding `stage` and `Stage` reads kms:EncryptionContext:stage as either value; tags holding
   * both spellings read aws:ResourceTag/stage or aws:RequestTag/stage likewise.
   */
  readonly conditionReadings?:
    | ((key: string) => readonly (readonly string[])[] | undefined)
    | undefined;
  /** The request's encryption context (for grant constraints); undefined when none applies. */
  readonly encryptionContext: Readonly<Record<string, string>> | undefined;
  /** Whether the operation takes an encryption context (grant constraints apply only then). */
  readonly takesEncryptionContext: boolean;
}

export interface StatementRef {
  readonly index: number;
  readonly sid?: string;
  readonly effect: "Allow" | "Deny";
}

export type DecisionReason = "explicit-deny" | "policy-allow" | "grant-allow" | "implicit-deny";

export interface Decision {
  readonly allowed: boolean;
  readonly reason: DecisionReason;
  /** The deciding statement (explicit deny, policy allow). */
  readonly statement?: StatementRef;
  /** The deciding grant (grant allow). */
  readonly grantId?: string;
  /** Human-readable reason, safe for errors and logs. */
  readonly message: string;
}

/** Account id from an ARN (`arn:partition:service:region:account:...`). */
export function accountOf(principal: string): string | undefined {
  if (!principal.startsWith("arn:")) return undefined;
  const account = principal.split(":")[4];
  return account !== undefined && /^\d{12}$/.test(account) ? account : undefined;
}

// The role's name is the whole segment after `assumed-role/`, whatever its characters (IAM's
// are letters, digits and + = , . @ _ -): a narrower pattern would let a principal spelled with
// others step around a Deny naming its role. The session's name after it must not be empty;
// `s` so that it may begin with any character.
const ROLE_SESSION = /^arn:([^:]+):sts::(\d{12}):assumed-role\/([^/]+)\/./s;

/**
 * The role an assumed-role session is a session of: `arn:<partition>:sts::<account>:
 * assumed-role/<role>/<session>` → `arn:<partition>:iam::<account>:role/<role>`; undefined for
 * any other principal. AWS matches a role named in a key policy or a grant for all its sessions,
 * and gives the role's ARN as aws:PrincipalArn. A session ARN does not carry the role's path, so
 * `role/<path>/<role>` is never found from one (AWS resolves the role itself; there is no IAM here).
 */
export function roleArnOf(principal: string): string | undefined {
  // Most principals are no session: one substring test before the regular expression.
  if (!principal.includes(":assumed-role/")) return undefined;
  const m = ROLE_SESSION.exec(principal);
  return m === null ? undefined : `arn:${m[1]}:iam::${m[2]}:role/${m[3]}`;
}

/**
 * Whether a grant's grantee or retiring principal `named` stands for `principal`: the principal
 * itself, or the role `principal` is a session of (`role`: roleArnOf(principal), passed by
 * callers that already computed it).
 */
export function namesPrincipal(
  named: string | undefined,
  principal: string,
  role: string | undefined = roleArnOf(principal),
): boolean {
  return named !== undefined && (named === principal || (role !== undefined && named === role));
}

/**
 * `role` is roleArnOf(request.principal): a statement naming a role applies to its sessions, as
 * in AWS, an Allow and a Deny alike (a Deny on role/Admin that sessions of Admin step around would
 * deny no one who assumes the role).
 */
function principalIn(
  set: PrincipalSet,
  request: AuthorizationRequest,
  role: string | undefined,
): boolean {
  if (set.any || set.names.has(request.principal)) return true;
  if (role !== undefined && set.names.has(role)) return true;
  // No IAM here: an account root stands for every principal of that account.
  return request.principalAccount !== undefined && set.accounts.has(request.principalAccount);
}

const ACCOUNT_ROOT = /^arn:[^:]+:iam::\d{12}:root$/;

/**
 * Whether `set` names the principal itself: `*`, its exact name, or (for an account root) its
 * account. What a Deny's NotPrincipal exempts. AWS's own pattern lists the exempted user with
 * its account ("Deny everyone but Bob" names Bob and the account root); read as every principal
 * of the account, as principalIn reads it, that would exempt the whole account. A role exempts
 * none of its sessions either: AWS asks for the session's own ARN beside the role's there.
 */
function principalNamed(set: PrincipalSet, request: AuthorizationRequest): boolean {
  if (set.any || set.names.has(request.principal)) return true;
  return (
    request.principalAccount !== undefined &&
    set.accounts.has(request.principalAccount) &&
    ACCOUNT_ROOT.test(request.principal)
  );
}

type Lookup = (key: string) => readonly string[] | undefined;

/** Most readings one statement element is tested under; past it, an Allow fails, a Deny holds. */
const MAX_READINGS = 256;

/**
 * Whether `test` (one element of a statement: a condition, Resource, NotResource) holds for the
 * request. `keys` lists the condition keys the element reads. A key the request reads several
 * ways is tested each way: an Allow needs every reading, a Deny any, so adding a case-variant
 * duplicate to the context neither widens an Allow nor steps around a Deny.
 */
function holds(
  effect: "Allow" | "Deny",
  readingsOf: NonNullable<AuthorizationRequest["conditionReadings"]>,
  lookup: Lookup,
  keys: readonly string[],
  test: (lookup: Lookup) => boolean,
): boolean {
  let lookups = [lookup];
  const seen = new Set<string>();
  for (const key of keys) {
    const lower = key.toLowerCase();
    if (seen.has(lower)) continue;
    seen.add(lower);
    const readings = readingsOf(key);
    if (readings === undefined) continue;
    if (lookups.length * readings.length > MAX_READINGS) return effect === "Deny";
    lookups = lookups.flatMap((inner) =>
      readings.map(
        (reading): Lookup =>
          (k) =>
            k.toLowerCase() === lower ? reading : inner(k),
      ),
    );
  }
  return effect === "Allow" ? lookups.every(test) : lookups.some(test);
}

function inResources(s: PolicyStatement, resource: string, lookup: Lookup): boolean {
  const resources = s.resourceTemplates
    ? resolveValues(s.resourceTemplates, lookup, true)
    : s.resources;
  if (resources !== undefined && !resources.some((r) => globMatch(r, resource))) return false;
  const notResources = s.notResourceTemplates
    ? resolveValues(s.notResourceTemplates, lookup, true)
    : s.notResources;
  return !notResources?.some((r) => globMatch(r, resource));
}

function conditionHolds(c: ConditionClause, lookup: Lookup): boolean {
  return c.operator.evaluate(
    lookup(c.key),
    c.templates ? resolveValues(c.templates, lookup, c.operator.glob) : c.values,
  );
}

function statementApplies(
  s: PolicyStatement,
  request: AuthorizationRequest,
  lookup: Lookup,
  role: string | undefined,
): boolean {
  if (s.principal !== undefined && !principalIn(s.principal, request, role)) return false;
  if (s.notPrincipal !== undefined) {
    // Exempt from a Deny only when named; out of a (legacy) Allow as soon as principalIn says
    // so: in doubt, a Deny applies and an Allow does not.
    const excluded =
      s.effect === "Deny"
        ? principalNamed(s.notPrincipal, request)
        : principalIn(s.notPrincipal, request, role);
    if (excluded) return false;
  }
  const action = request.actionLower;
  if (s.actions !== undefined && !s.actions.some((p) => globMatch(p, action))) return false;
  if (s.notActions?.some((p) => globMatch(p, action))) return false;
  const readingsOf = request.conditionReadings;
  // Authorization runs on every call: a request read one way only (nearly all) allocates no
  // closure per statement or condition.
  if (readingsOf === undefined) {
    if (!inResources(s, request.resource, lookup)) return false;
    for (const c of s.conditions) if (!conditionHolds(c, lookup)) return false;
    return true;
  }
  const resourceKeys = [
    ...variableKeys(s.resourceTemplates),
    ...variableKeys(s.notResourceTemplates),
  ];
  if (
    !holds(s.effect, readingsOf, lookup, resourceKeys, (l) => inResources(s, request.resource, l))
  ) {
    return false;
  }
  return s.conditions.every((c) =>
    holds(s.effect, readingsOf, lookup, [c.key, ...variableKeys(c.templates)], (l) =>
      conditionHolds(c, l),
    ),
  );
}

function ref(s: PolicyStatement): StatementRef {
  return { index: s.index, ...(s.sid !== undefined ? { sid: s.sid } : {}), effect: s.effect };
}

function describe(s: PolicyStatement): string {
  return s.sid ? `statement ${s.index} ("${s.sid}")` : `statement ${s.index}`;
}

/**
 * Grant constraint check; keys compare case-insensitively, values exactly (as AWS). Pair by
 * pair: folding the context into a map by lower-cased key would keep only one of
 * `{ tenant: "a", TENANT: "b" }` and let it pass `encryptionContextEquals: { tenant: "b" }`.
 */
export function grantConstraintsHold(
  grant: StoredGrant,
  context: Readonly<Record<string, string>> | undefined,
): boolean {
  const constraints = grant.constraints;
  if (constraints === undefined) return true;
  const actual = Object.entries(context ?? {});
  const equals = constraints.encryptionContextEquals;
  if (equals !== undefined) {
    const expected = Object.entries(equals);
    if (!expected.every((pair) => containsPair(actual, pair))) return false;
    if (!actual.every((pair) => containsPair(expected, pair))) return false;
  }
  const subset = constraints.encryptionContextSubset;
  if (subset !== undefined) {
    if (!Object.entries(subset).every((pair) => containsPair(actual, pair))) return false;
  }
  return true;
}

function containsPair(
  pairs: readonly (readonly [string, string])[],
  [key, value]: readonly [string, string],
): boolean {
  const lower = key.toLowerCase();
  return pairs.some(([k, v]) => v === value && k.toLowerCase() === lower);
}

function grantAllows(
  grant: StoredGrant,
  request: AuthorizationRequest,
  role: string | undefined,
): boolean {
  if (!namesPrincipal(grant.granteePrincipal, request.principal, role)) return false;
  const operation = request.action.slice(request.action.indexOf(":") + 1);
  if (!grant.operations.includes(operation)) return false;
  return !request.takesEncryptionContext || grantConstraintsHold(grant, request.encryptionContext);
}

/** Allow decisions by deciding statement (parsed documents are cached and never changed). */
const allowDecisions = new WeakMap<PolicyStatement, Decision>();

/**
 * The decision of an Allow by `s`, which names nothing of the request: built once per statement
 * and frozen, rather than a message rendered on every call the statement allows.
 */
function policyAllow(s: PolicyStatement): Decision {
  let decision = allowDecisions.get(s);
  if (decision === undefined) {
    decision = Object.freeze({
      allowed: true,
      reason: "policy-allow",
      statement: Object.freeze(ref(s)),
      message: `allowed by ${describe(s)} of the key policy`,
    });
    allowDecisions.set(s, decision);
  }
  return decision;
}

/** Evaluates a request against a key policy and the key's grants. */
export function evaluate(
  policy: PolicyDocument,
  grants: readonly StoredGrant[],
  request: AuthorizationRequest,
): Decision {
  let allow: PolicyStatement | undefined;
  const lookup: Lookup = (key) => request.conditionValues(key);
  const role = roleArnOf(request.principal);
  for (const s of policy.statements) {
    if (!statementApplies(s, request, lookup, role)) continue;
    if (s.effect === "Deny") {
      return {
        allowed: false,
        reason: "explicit-deny",
        statement: ref(s),
        message: `${request.principal} is not authorized to perform ${request.action} on ${request.resource}: explicitly denied by ${describe(s)} of the key policy`,
      };
    }
    allow ??= s;
  }
  if (allow !== undefined) return policyAllow(allow);
  const grant = grants.find((g) => grantAllows(g, request, role));
  if (grant !== undefined) {
    return {
      allowed: true,
      reason: "grant-allow",
      grantId: grant.grantId,
      message: `allowed by grant ${grant.grantId}`,
    };
  }
  return {
    allowed: false,
    reason: "implicit-deny",
    message: `${request.principal} is not authorized to perform ${request.action} on ${request.resource}: no statement of the key policy and no grant allows it`,
  };
}
