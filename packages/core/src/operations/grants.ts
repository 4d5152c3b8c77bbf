import { type KmsIdentity, keyArn } from "../arn.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import {
  AccessDeniedError,
  DryRunOperationError,
  InvalidGrantIdError,
  InvalidGrantTokenError,
  LimitExceededError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { assertObject, assertString } from "../internal/assert.ts";
import {
  checkKeyState,
  destroyKey,
  getKey,
  isDeletionDue,
  type KmsContext,
  updateKey,
} from "../internal/key-access.ts";
import { pageLimit, pageMarker, pageRequest, toPage } from "../internal/pagination.ts";
import type { StoredGrant, StoredKey } from "../keystore/key-store.ts";
import {
  authorizationRequest,
  authorizeKey,
  type CallState,
  decisionOn,
  keyPolicyOf,
} from "../policy/authorizer.ts";
import {
  type Decision,
  evaluate,
  grantConstraintsHold,
  namesPrincipal,
} from "../policy/evaluate.ts";
import type { EncryptionContext, KeyIdRequest, Page, PageRequest } from "../types.ts";
import {
  assertConstraintSize,
  assertConstraintsFitKey,
  assertGrantOperationsFitKey,
  GRANT_OPERATIONS,
  type GrantOperation,
} from "./grant-operations.ts";
import { directKeyId, loadDirectKey } from "./key-arguments.ts";
import { notAuthorized } from "./policies.ts";

export { GRANT_OPERATIONS, type GrantOperation } from "./grant-operations.ts";

/**
 * Most grants a key may hold by default. Grants live on the key record, so every write of the
 * key (createGrant, retireGrant, a tag, a rotation) seals and stores all of them again: a
 * principal allowed CreateGrant on a shared key could otherwise make each such write cost
 * hundreds of milliseconds of CPU. `KmsOptions.maxGrantsPerKey` raises it up to AWS's quota.
 */
export const DEFAULT_MAX_GRANTS_PER_KEY = 1000;
/** AWS's quota of grants per KMS key: the most `maxGrantsPerKey` may be set to. */
export const MAX_GRANTS_PER_KEY = 50000;
export const MAX_GRANT_TOKENS = 10;

/**
 * One encryption-context constraint per grant, as AWS KMS requires: `createGrant` refuses an
 * object with both or neither, and the type says so too.
 */
export type GrantConstraints =
  | {
      readonly encryptionContextEquals: EncryptionContext;
      readonly encryptionContextSubset?: never;
    }
  | {
      readonly encryptionContextSubset: EncryptionContext;
      readonly encryptionContextEquals?: never;
    };

export interface CreateGrantRequest extends KeyIdRequest {
  readonly granteePrincipal: string;
  readonly retiringPrincipal?: string;
  readonly operations: readonly GrantOperation[];
  readonly constraints?: GrantConstraints;
  readonly grantTokens?: readonly string[];
  /** Idempotency: the same name with the same fields returns the existing grant. */
  readonly name?: string;
  readonly dryRun?: boolean;
}
export interface CreateGrantResponse {
  readonly grantId: string;
  readonly grantToken: string;
}
export interface GrantListEntry {
  readonly keyId: string;
  readonly grantId: string;
  readonly name?: string;
  readonly creationDate: Date;
  readonly granteePrincipal: string;
  readonly retiringPrincipal?: string;
  readonly issuingAccount: string;
  readonly operations: readonly string[];
  /** As stored: a grant created before the one-constraint rule may hold both constraints. */
  readonly constraints?: StoredGrant["constraints"];
}
export interface ListGrantsRequest extends KeyIdRequest, PageRequest {
  readonly grantId?: string;
  readonly granteePrincipal?: string;
  readonly grantTokens?: readonly string[];
}
export interface ListGrantsResponse extends Page {
  readonly grants: readonly GrantListEntry[];
}
export interface ListRetirableGrantsRequest extends PageRequest {
  readonly retiringPrincipal: string;
}
export interface RetireGrantRequest {
  readonly grantToken?: string;
  readonly keyId?: string;
  readonly grantId?: string;
  readonly dryRun?: boolean;
}
export interface RevokeGrantRequest extends KeyIdRequest {
  readonly grantId: string;
  readonly dryRun?: boolean;
}

/**
 * Grant tokens: AWS uses them to make a new grant effective before it propagates. Grants here
 * are effective at once, so a token only has to be well-formed (at most 10, 1–8192 chars).
 * @throws ValidationException, InvalidGrantTokenException.
 */
export function validateGrantTokens(request: unknown): void {
  if (typeof request !== "object" || request === null) return;
  const tokens = (request as { grantTokens?: unknown }).grantTokens;
  if (tokens === undefined) return;
  if (!Array.isArray(tokens) || tokens.length > MAX_GRANT_TOKENS) {
    throw new ValidationError(
      `"grantTokens" must be an array of at most ${MAX_GRANT_TOKENS} tokens`,
    );
  }
  tokens.forEach((t, i) => {
    if (typeof t !== "string" || t.length === 0 || t.length > 8192) {
      throw new ValidationError(`"grantTokens[${i}]" must be a string of 1–8192 characters`);
    }
    decodeGrantToken(t);
  });
}

interface TokenContent {
  readonly keyId: string;
  readonly grantId: string;
}

function encodeGrantToken(keyId: string, grantId: string): string {
  const nonce = Buffer.from(randomBytes(16)).toString("base64url");
  return Buffer.from(JSON.stringify({ v: 1, k: keyId, g: grantId, n: nonce })).toString(
    "base64url",
  );
}

function decodeGrantToken(token: string): TokenContent {
  try {
    const json = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Record<
      string,
      unknown
    >;
    if (json.v === 1 && typeof json.k === "string" && typeof json.g === "string") {
      return { keyId: json.k, grantId: json.g };
    }
  } catch {
    // fall through
  }
  throw new InvalidGrantTokenError("the grant token is not a token issued by this KMS");
}

function principalArg(name: string, value: unknown): string {
  return assertString(name, value, 1, 256);
}

/** assertObject, and a plain object: a Date or Map is not a JSON object. */
function plainObject(name: string, value: unknown): Record<string, unknown> {
  const obj = assertObject(name, value);
  const proto = Object.getPrototypeOf(obj);
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError(`"${name}" must be a plain object`);
  }
  return obj;
}

function contextArg(name: string, value: unknown): EncryptionContext {
  // A copy, checked and stored: the caller's object may change while createGrant awaits the
  // store, and the grant must hold the constraint that was checked (and delegation compared).
  const obj = { ...plainObject(name, value) };
  // The rules an encryption context follows (string values, no empty key, well-formed Unicode:
  // stores write UTF-8, so a lone surrogate would come back as another constraint).
  encodeEncryptionContext(obj as EncryptionContext, name);
  assertConstraintSize(name, obj as EncryptionContext);
  return obj as EncryptionContext;
}

/**
 * A constraints object must hold exactly one constraint. Both at once: AWS answers "More than
 * one constraint supplied" (ValidationException), even when one of them is empty. None at all
 * is refused too (beyond AWS): `{ encryptionContextSubset: undefined }` from a missing variable
 * would otherwise become an unconstrained grant without a word.
 */
function constraintsArg(value: unknown): StoredGrant["constraints"] | undefined {
  if (value === undefined) return undefined;
  const c = plainObject("constraints", value);
  for (const k of Object.keys(c)) {
    if (k !== "encryptionContextEquals" && k !== "encryptionContextSubset") {
      throw new ValidationError(`"constraints.${k}" is not a grant constraint`);
    }
  }
  const equals =
    c.encryptionContextEquals === undefined
      ? undefined
      : contextArg("constraints.encryptionContextEquals", c.encryptionContextEquals);
  const subset =
    c.encryptionContextSubset === undefined
      ? undefined
      : contextArg("constraints.encryptionContextSubset", c.encryptionContextSubset);
  if (equals !== undefined && subset !== undefined) {
    throw new ValidationError(
      `"constraints" may hold encryptionContextEquals or encryptionContextSubset, not both`,
    );
  }
  if (equals !== undefined) return { encryptionContextEquals: equals };
  if (subset !== undefined) return { encryptionContextSubset: subset };
  throw new ValidationError(
    `"constraints" must hold encryptionContextEquals or encryptionContextSubset; omit "constraints" for a grant without constraints`,
  );
}

function operationsArg(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new ValidationError(`"operations" must be a non-empty array of grant operations`);
  }
  const ops = value.map((op, i) => {
    if (!(GRANT_OPERATIONS as readonly unknown[]).includes(op)) {
      throw new ValidationError(
        `"operations[${i}]" must be one of ${GRANT_OPERATIONS.join(", ")}, got ${String(op)}`,
      );
    }
    return op as string;
  });
  const unique = [...new Set(ops)];
  // AWS: "Grants must not contain only the CreateGrant operation" — such a grant could only
  // hand on CreateGrant itself, which is refused again, so it would allow nothing.
  if (unique.length === 1 && unique[0] === "CreateGrant") {
    throw new ValidationError(`"operations" must hold an operation besides CreateGrant`);
  }
  return unique;
}

const sameList = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && [...a].sort().join("\0") === [...b].sort().join("\0");

function sameGrantFields(a: StoredGrant, b: Omit<StoredGrant, "grantId" | "createdAt">): boolean {
  return (
    a.granteePrincipal === b.granteePrincipal &&
    a.retiringPrincipal === b.retiringPrincipal &&
    sameList(a.operations, b.operations) &&
    JSON.stringify(a.constraints ?? null) === JSON.stringify(b.constraints ?? null)
  );
}

/** What a createGrant request asks to hand on: what the delegation rule judges. */
export interface DelegatedGrant {
  readonly operations: readonly string[];
  readonly constraints?: NonNullable<StoredGrant["constraints"]>;
}

/**
 * CreateGrant's delegation rule (AWS's): a grant that allowed CreateGrant may only hand on what
 * it has. Any one of `principal`'s CreateGrant grants on `key` may be the parent: authorization
 * names the first that allows kms:CreateGrant, which need not be the one holding the operations
 * asked for. Grants are not pooled: every operation and the constraint must come from the same
 * parent. Pure, so that createGrant (on each record it authorizes) and `kms.explain` (on the
 * record it explains) decide alike.
 * @param decision the decision that allowed kms:CreateGrant on this very record of `key`; the
 *   rule binds only a caller a grant allowed (a retry after a lost write may find the parent
 *   revoked, or the caller allowed by the key policy instead).
 * @returns the denial of kms:CreateGrant, with the message the call throws; undefined when the
 *   rule allows the grant or does not apply.
 */
export function delegationRefusal(
  identity: KmsIdentity,
  key: StoredKey,
  principal: string,
  decision: Decision | undefined,
  requested: DelegatedGrant,
): Decision | undefined {
  if (decision?.reason !== "grant-allow") return undefined;
  // The grants authorization could have used: a role session's include its role's.
  const parents = (key.grants ?? []).filter(
    (g) => namesPrincipal(g.granteePrincipal, principal) && g.operations.includes("CreateGrant"),
  );
  const refusals = parents.map((parent) => parentRefusal(parent, requested));
  if (refusals.length === 0 || refusals.includes(undefined)) return undefined;
  const named = parents.findIndex((g) => g.grantId === decision.grantId);
  return {
    allowed: false,
    reason: "implicit-deny",
    message: notAuthorized(
      principal,
      "kms:CreateGrant",
      keyArn(identity, key.keyId),
      refusals[Math.max(named, 0)] as string,
    ),
  };
}

/** delegationRefusal on the record `key` createGrant writes to, as the call decided on it. */
function checkDelegation(ctx: KmsContext, key: StoredKey, requested: DelegatedGrant): void {
  const call = ctx.call;
  if (call === undefined) return;
  const decision = decisionOn(call, "kms:CreateGrant", key)?.decision;
  const refusal = delegationRefusal(ctx.identity, key, call.principal, decision, requested);
  if (refusal !== undefined) throw new AccessDeniedError(refusal.message);
}

/** Why `parent` cannot be the parent of `requested`, or undefined when it can. */
function parentRefusal(parent: StoredGrant, requested: DelegatedGrant): string | undefined {
  const extra = requested.operations.filter((op) => !parent.operations.includes(op));
  if (extra.length > 0) return `grant ${parent.grantId} does not allow ${extra.join(", ")}`;
  if (!atLeastAsStrict(parent, requested.constraints)) {
    return `grant ${parent.grantId} has encryption-context constraints the new grant does not keep`;
  }
  return undefined;
}

/**
 * Whether every encryption context the `child` constraints admit is admitted by `parent`, so a
 * delegated grant can narrow its parent's constraints but never widen them. A child pinned to
 * one context (Equals) needs the parent to admit that context; a child admitting every
 * superset of some pairs (Subset, or nothing) needs a parent that is Subset-only with pairs
 * the child also requires.
 */
function atLeastAsStrict(parent: StoredGrant, child: StoredGrant["constraints"]): boolean {
  if (parent.constraints === undefined) return true;
  if (child?.encryptionContextEquals !== undefined) {
    return grantConstraintsHold(parent, child.encryptionContextEquals);
  }
  if (parent.constraints.encryptionContextEquals !== undefined) return false;
  return grantConstraintsHold(parent, child?.encryptionContextSubset ?? {});
}

function toEntry(ctx: KmsContext, key: StoredKey, g: StoredGrant): GrantListEntry {
  return {
    keyId: keyArn(ctx.identity, key.keyId),
    grantId: g.grantId,
    ...(g.name !== undefined ? { name: g.name } : {}),
    creationDate: new Date(g.createdAt),
    granteePrincipal: g.granteePrincipal,
    ...(g.retiringPrincipal !== undefined ? { retiringPrincipal: g.retiringPrincipal } : {}),
    issuingAccount: `arn:${ctx.identity.partition}:iam::${ctx.identity.account}:root`,
    operations: g.operations,
    ...(g.constraints !== undefined ? { constraints: g.constraints } : {}),
  };
}

/**
 * `ctx` authorizing the call as `checked`, the arguments as validated and copied, rather than
 * the caller's request: its objects may change while the call awaits the store, and the policy
 * (kms:EncryptionContext:<key>, kms:GrantOperations…) must judge the grant that is stored.
 */
function authorizingChecked(ctx: KmsContext, checked: Record<string, unknown>): KmsContext {
  const call = ctx.call;
  if (call === undefined || ctx.authorize === undefined) return ctx;
  // Shares the call's decisions and keys, which the audit record reads.
  const checkedCall = { ...call, request: checked };
  return { ...ctx, authorize: (key) => authorizeKey(checkedCall, ctx.store, key) };
}

/** The arguments of a createGrant request besides its key, checked and copied. */
export interface CreateGrantArguments extends DelegatedGrant {
  readonly name?: string;
  readonly granteePrincipal: string;
  readonly retiringPrincipal?: string;
}

/**
 * The arguments of createGrant `request` besides its key and dryRun, checked as createGrant
 * checks them before it reads the key, and copied (see contextArg).
 * @throws ValidationError.
 */
export function createGrantArguments(request: unknown): CreateGrantArguments {
  const r = assertObject("request", request) as Partial<Record<keyof CreateGrantRequest, unknown>>;
  const granteePrincipal = principalArg("granteePrincipal", r.granteePrincipal);
  const retiringPrincipal =
    r.retiringPrincipal === undefined
      ? undefined
      : principalArg("retiringPrincipal", r.retiringPrincipal);
  const operations = operationsArg(r.operations);
  const constraints = constraintsArg(r.constraints);
  const name = r.name === undefined ? undefined : assertString("name", r.name, 1, 256);
  if (name !== undefined && !/^[a-zA-Z0-9:/_-]+$/.test(name)) {
    throw new ValidationError(`"name" may hold only letters, digits and :/_-`);
  }
  return {
    ...(name !== undefined ? { name } : {}),
    granteePrincipal,
    ...(retiringPrincipal !== undefined ? { retiringPrincipal } : {}),
    operations,
    ...(constraints !== undefined ? { constraints } : {}),
  };
}

/**
 * What createGrant checks of the key it read, once the caller is authorized on it (so a caller
 * without kms:CreateGrant learns nothing of the key's state or spec) and before the delegation
 * rule: its state, and that it can hold the grant's operations and constraints.
 * @throws the key-state errors (KMSInvalidStateException…), ValidationException.
 */
export function assertGrantableKey(
  ctx: KmsContext,
  key: StoredKey,
  requested: DelegatedGrant,
): void {
  checkKeyState(ctx, key, "createGrant");
  assertGrantOperationsFitKey(key.keySpec, key.keyUsage, requested.operations);
  if (requested.constraints !== undefined) {
    assertConstraintsFitKey(key.keySpec, key.keyUsage, requested.operations);
  }
}

/**
 * Creates a grant. The operations must be ones the key supports (see grant-operations.ts), not
 * CreateGrant alone; constraints only on symmetric encryption keys, one constraint per grant.
 * Grants stored before these checks existed are kept and evaluated as before.
 * @throws ValidationException, NotFoundException, DisabledException, KMSInvalidStateException,
 * AccessDeniedException, LimitExceededException, DryRunOperationException.
 */
export async function createGrant(
  ctx: KmsContext,
  request: CreateGrantRequest,
): Promise<CreateGrantResponse> {
  const requested = createGrantArguments(request);
  const fields = { ...requested, issuingPrincipal: ctx.call?.principal ?? "" };
  const { name } = requested;
  const keyIdArgument: unknown = request.keyId;
  const checked = authorizingChecked(ctx, {
    ...fields,
    keyId: keyIdArgument,
    ...(request.dryRun !== undefined ? { dryRun: request.dryRun } : {}),
  });
  const loaded = await getKey(checked, directKeyId(checked, "createGrant", "keyId", keyIdArgument));
  assertGrantableKey(ctx, loaded, requested);
  checkDelegation(ctx, loaded, requested);
  if (request.dryRun === true) {
    throw new DryRunOperationError("the request would have succeeded, but dryRun was set");
  }
  let grantId = "";
  // Authorized again, delegation included, on whichever record the grant is written to.
  const delegation = (key: StoredKey) => checkDelegation(ctx, key, requested);
  await updateKey(
    checked,
    loaded.keyId,
    "createGrant",
    (key) => {
      const grants = key.grants ?? [];
      const existing =
        name === undefined
          ? undefined
          : grants.find((g) => g.name === name && sameGrantFields(g, fields));
      if (existing !== undefined) {
        grantId = existing.grantId;
        return {};
      }
      const max = ctx.maxGrantsPerKey ?? DEFAULT_MAX_GRANTS_PER_KEY;
      if (grants.length >= max) {
        throw new LimitExceededError(
          `a key can have at most ${max} grants (KmsOptions.maxGrantsPerKey); retire or revoke some first`,
        );
      }
      grantId = Buffer.from(randomBytes(32)).toString("hex");
      return { grants: [...grants, { ...fields, grantId, createdAt: ctx.clock.now() }] };
    },
    delegation,
  );
  return { grantId, grantToken: encodeGrantToken(loaded.keyId, grantId) };
}

const byGrantId = (a: StoredGrant, b: StoredGrant): number =>
  a.grantId < b.grantId ? -1 : a.grantId > b.grantId ? 1 : 0;

const sortedGrantLists = new WeakMap<readonly StoredGrant[], readonly StoredGrant[]>();

/**
 * The key's grants ordered by grant id, sorted once per frozen grant list (stores that cache
 * records hand out the same one on every read) rather than on every page of every listing.
 */
function grantsById(key: StoredKey): readonly StoredGrant[] {
  const grants = key.grants ?? [];
  if (!Object.isFrozen(grants)) return [...grants].sort(byGrantId);
  let sorted = sortedGrantLists.get(grants);
  if (sorted === undefined) {
    sorted = Object.freeze([...grants].sort(byGrantId));
    sortedGrantLists.set(grants, sorted);
  }
  return sorted;
}

/** The index of the first grant whose id sorts after `after` (binary search). */
function firstAfter(sorted: readonly StoredGrant[], after: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (sorted[mid]!.grantId <= after) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** Grants of a key, ordered by grant id. `limit` 1–100 (default 50). */
export async function listGrants(
  ctx: KmsContext,
  request: ListGrantsRequest,
): Promise<ListGrantsResponse> {
  assertObject("request", request);
  const limit = pageLimit(request, { max: 100, default: 50 });
  const key = await loadDirectKey(ctx, "listGrants", "keyId", request.keyId);
  const scope = `listGrants ${key.keyId}`;
  const after = pageMarker(request, scope);
  const sorted = grantsById(key);
  // One more than a page: the extra one only says that more exist.
  const matches: StoredGrant[] = [];
  for (let i = after === undefined ? 0 : firstAfter(sorted, after); i < sorted.length; i++) {
    const g = sorted[i]!;
    if (request.grantId !== undefined && g.grantId !== request.grantId) continue;
    if (request.granteePrincipal !== undefined && g.granteePrincipal !== request.granteePrincipal) {
      continue;
    }
    matches.push(g);
    if (matches.length > limit) break;
  }
  const page = toPage(matches, limit, (g) => g.grantId, scope);
  return {
    grants: page.items.map((g) => toEntry(ctx, key, g)),
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}

/** A grant found for listRetirableGrants, with its key; its marker is `<key id>/<grant id>`. */
interface RetirableGrant {
  readonly key: StoredKey;
  readonly grant: StoredGrant;
}

const KEYS_PER_READ = 100;

/**
 * Grants on any key of this KMS that `retiringPrincipal` may retire, ordered by key id, then
 * grant id. Keys are read in the store's key-id order (KeyStore.listKeys) from the marker's key
 * on, and reading stops at the first key after which a page and one more are found: no grant of
 * a later key can sort before them. A principal with fewer retirable grants than that still
 * costs a read of every key after the marker.
 */
export async function listRetirableGrants(
  ctx: KmsContext,
  request: ListRetirableGrantsRequest,
): Promise<ListGrantsResponse> {
  assertObject("request", request);
  const principal = principalArg("retiringPrincipal", request.retiringPrincipal);
  const { limit, after } = pageRequest(request, { max: 100, default: 50 }, "listRetirableGrants");
  // Key ids and grant ids hold no "/", so a marker splits at its last one.
  const slash = after === undefined ? -1 : after.lastIndexOf("/");
  const afterKey = after === undefined ? undefined : slash === -1 ? after : after.slice(0, slash);
  const afterGrant = after === undefined || slash === -1 ? "" : after.slice(slash + 1);
  const found: RetirableGrant[] = [];
  /** Adds the key's retirable grants past the marker, in grant-id order. */
  const collect = async (key: StoredKey): Promise<void> => {
    // A key past its deletion window is gone, and its grants with it.
    if (isDeletionDue(ctx, key)) {
      await destroyKey(ctx, key);
      return;
    }
    const sorted = grantsById(key);
    for (
      let i = key.keyId === afterKey ? firstAfter(sorted, afterGrant) : 0;
      i < sorted.length;
      i++
    ) {
      if (sorted[i]!.retiringPrincipal === principal) found.push({ key, grant: sorted[i]! });
    }
  };
  // The marker's own key first: listKeys resumes after it, and it may hold more of the page.
  if (afterKey !== undefined) {
    const key = await ctx.store.getKey(afterKey);
    if (key !== undefined) await collect(key);
  }
  let cursor = afterKey;
  while (found.length <= limit) {
    const keys = await ctx.store.listKeys({
      limit: KEYS_PER_READ,
      ...(cursor !== undefined ? { after: cursor } : {}),
    });
    for (const key of keys) {
      await collect(key);
      if (found.length > limit) break;
    }
    if (keys.length < KEYS_PER_READ) break;
    cursor = keys[keys.length - 1]!.keyId;
  }
  const page = toPage(
    found.slice(0, limit + 1),
    limit,
    (f) => `${f.key.keyId}/${f.grant.grantId}`,
    "listRetirableGrants",
  );
  return {
    grants: page.items.map((f) => toEntry(ctx, f.key, f.grant)),
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}

function removeGrant(key: StoredKey, grantId: string): StoredGrant[] {
  const grants = key.grants ?? [];
  if (!grants.some((g) => g.grantId === grantId)) {
    throw new NotFoundError(`grant ${grantId} does not exist on key ${key.keyId}`);
  }
  return grants.filter((g) => g.grantId !== grantId);
}

/**
 * The grant a retireGrant request names, for `kms.explain`: its key (a grant token carries
 * the key id) and grant id. Undefined parts when the request does not name them usably.
 */
export function retireGrantTarget(request: Readonly<Record<string, unknown>>): {
  readonly keyId?: string;
  readonly grantId?: string;
} {
  if (typeof request.grantToken === "string") {
    try {
      return decodeGrantToken(request.grantToken);
    } catch {
      return {};
    }
  }
  return typeof request.grantId === "string" ? { grantId: request.grantId } : {};
}

/**
 * What lets `principal` retire the grant beyond the key policy: being its retiring principal,
 * or its grantee when it includes RetireGrant (either one naming the role `principal` is a
 * session of counts, as for grants' grantees). Undefined when neither.
 */
export function retiringPrincipalDecision(
  key: StoredKey,
  grantId: string | undefined,
  principal: string,
): Decision | undefined {
  const grant = key.grants?.find((g) => g.grantId === grantId);
  if (grant === undefined) return undefined;
  const role = namesPrincipal(grant.retiringPrincipal, principal)
    ? "the retiring principal"
    : namesPrincipal(grant.granteePrincipal, principal) && grant.operations.includes("RetireGrant")
      ? "the grantee, with RetireGrant,"
      : undefined;
  if (role === undefined) return undefined;
  return {
    allowed: true,
    reason: "grant-allow",
    grantId: grant.grantId,
    message: `${principal} is ${role} of grant ${grant.grantId}`,
  };
}

/**
 * Retires a grant: allowed for its retiring principal, its grantee when the grant includes
 * RetireGrant, or whoever the key policy allows kms:RetireGrant — unless a statement of the key
 * policy explicitly denies the caller kms:RetireGrant, which wins over all three.
 * @throws InvalidGrantTokenException, InvalidGrantIdException, NotFoundException, AccessDeniedException.
 */
export async function retireGrant(ctx: KmsContext, request: RetireGrantRequest): Promise<void> {
  assertObject("request", request);
  let keyId: string;
  let grantId: string;
  if (request.grantToken !== undefined) {
    const token = decodeGrantToken(assertString("grantToken", request.grantToken, 1, 8192));
    keyId = token.keyId;
    grantId = token.grantId;
  } else {
    if (request.keyId === undefined || request.grantId === undefined) {
      throw new ValidationError(`specify "grantToken", or both "keyId" and "grantId"`);
    }
    keyId = directKeyId(ctx, "retireGrant", "keyId", request.keyId);
    grantId = assertString("grantId", request.grantId, 1, 128);
  }
  assertGrantId(grantId);
  const current = await getKey(ctx, keyId);
  authorizeRetire(ctx, current, grantId);
  if (request.dryRun === true) {
    throw new DryRunOperationError("the request would have succeeded, but dryRun was set");
  }
  // Authorized again on whichever record the retirement is written to: a policy put or a
  // retiring principal changed after the read above is obeyed, as it would be up front.
  await updateKey(
    ctx,
    keyId,
    "retireGrant",
    (key) => ({ grants: removeGrant(key, grantId) }),
    (key) => authorizeRetire(ctx, key, grantId),
  );
}

/**
 * Whether the caller may retire grant `grantId` of `key` (see retireGrant). The decision goes
 * into the call's decisions, once per key record, so that the audit event records it as every
 * other event records its own (authorizeKey does not decide RetireGrant).
 * @throws NotFoundError when the key has no such grant, AccessDeniedError when the caller may
 *   not retire it.
 */
function authorizeRetire(ctx: KmsContext, key: StoredKey, grantId: string): void {
  const grant = key.grants?.find((g) => g.grantId === grantId);
  if (grant === undefined) {
    throw new NotFoundError(`grant ${grantId} does not exist on key ${key.keyId}`);
  }
  const call = ctx.call;
  if (call === undefined || !call.settings.enabled) return;
  const decision = retireDecision(ctx, call, key, grantId);
  if (decisionOn(call, "kms:RetireGrant", key) === undefined) {
    call.decisions.push({
      action: "kms:RetireGrant",
      resource: keyArn(ctx.identity, key.keyId),
      decision,
      key,
    });
  }
  if (!decision.allowed) throw new AccessDeniedError(decision.message);
}

/**
 * Who may retire a grant: its retiring principal, its grantee when it includes RetireGrant, or
 * whoever the key policy allows kms:RetireGrant. AWS: an explicit Deny on kms:RetireGrant in an
 * IAM policy stops even the grant's own retiring principal; with no IAM here the key policy
 * stands in for it, so its Deny does too.
 */
function retireDecision(
  ctx: KmsContext,
  call: CallState,
  key: StoredKey,
  grantId: string,
): Decision {
  const principal = call.principal;
  // One evaluation of the key policy answers both its explicit Deny and its Allow.
  const byPolicy = evaluate(
    keyPolicyOf(key, call.settings.identity),
    [],
    authorizationRequest(call, "kms:RetireGrant", key, "single"),
  );
  if (byPolicy.reason === "explicit-deny") return byPolicy;
  const byGrant = retiringPrincipalDecision(key, grantId, principal);
  if (byGrant !== undefined) return byGrant;
  if (byPolicy.allowed) return byPolicy;
  return {
    allowed: false,
    reason: "implicit-deny",
    message: `${principal} is not authorized to perform kms:RetireGrant on ${keyArn(ctx.identity, key.keyId)}: it is neither the retiring principal nor allowed by the key policy`,
  };
}

/** @throws NotFoundException, InvalidGrantIdException, AccessDeniedException. */
export async function revokeGrant(ctx: KmsContext, request: RevokeGrantRequest): Promise<void> {
  assertObject("request", request);
  const grantId = assertString("grantId", request.grantId, 1, 128);
  assertGrantId(grantId);
  const key = await loadDirectKey(ctx, "revokeGrant", "keyId", request.keyId);
  if (request.dryRun === true) {
    removeGrant(key, grantId);
    throw new DryRunOperationError("the request would have succeeded, but dryRun was set");
  }
  await updateKey(ctx, key.keyId, "revokeGrant", (latest) => ({
    grants: removeGrant(latest, grantId),
  }));
}

/** What CreateGrant makes a grant id: 64 lowercase hex digits. */
export const GRANT_ID = /^[0-9a-f]{64}$/;

/** @throws InvalidGrantIdException when `grantId` cannot be one this KMS made. */
function assertGrantId(grantId: string): void {
  if (!GRANT_ID.test(grantId)) throw new InvalidGrantIdError(`"grantId" is not a grant id`);
}
