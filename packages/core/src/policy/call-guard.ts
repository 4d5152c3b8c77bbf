/**
 * What the facade's pipeline does around every operation: snapshots the request, builds the
 * call's state and context, validates grant tokens, authorizes calls that have no key, applies
 * dryRun, and records the audit event once the operation settled.
 */
import { type KmsIdentity, keyArn } from "../arn.ts";
import { buildAuditEvent } from "../audit/audit-event.ts";
import type { AuditSink } from "../audit/audit-sink.ts";
import { Auditor, type AuditorOptions } from "../audit/auditor.ts";
import { MemoryAuditSink } from "../audit/memory-audit-sink.ts";
import { invalidCiphertext } from "../envelope/ciphertext-blob.ts";
import {
  DryRunOperationError,
  KmsError,
  KmsInternalError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import { isDeletionDue, type KmsContext, resolveKeyId } from "../internal/key-access.ts";
import { setOwnMember } from "../internal/own-member.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import { validateAliasName } from "../operations/aliases.ts";
import { isRsaEncryptionAlgorithm } from "../operations/asymmetric.ts";
import {
  assertGrantableKey,
  createGrantArguments,
  type DelegatedGrant,
  delegationRefusal,
  retireGrantTarget,
  retiringPrincipalDecision,
  validateGrantTokens,
} from "../operations/grants.ts";
import { keyArgumentsOf, parseKeyArgument } from "../operations/key-arguments.ts";
import { incorrectKey } from "../operations/symmetric.ts";
import { currentRequestId } from "../request-id-scope.ts";
import type { CallOptions } from "../types.ts";
import {
  ACCOUNT_LEVEL_OPERATIONS,
  actionsFor,
  authorizationRequest,
  authorizeAccount,
  authorizeKey,
  authorizeKeyNow,
  type CallState,
  ciphertextKeyId,
  defaultAccountPolicy,
  type KeyRole,
  keyPolicyOf,
  type PolicySettings,
  principalAccountOf,
  RSA_REENCRYPT_SOURCE_ACTIONS,
  reEncryptKeyIds,
  resourceAliasesOf,
  usesReEncryptOnSameKey,
  usesResourceAliases,
} from "./authorizer.ts";
import { type Decision, evaluate } from "./evaluate.ts";
import { parsePolicy } from "./policy-document.ts";
import type { PrincipalTagIndex } from "./principal-tags.ts";

export interface AuditOptions extends AuditorOptions {
  readonly sink: AuditSink;
}

export interface CallGuardOptions {
  readonly principal?: string | undefined;
  readonly principalTags?: PrincipalTagIndex | undefined;
  readonly accountPolicy?: string | undefined;
  readonly authorization?: boolean | undefined;
  readonly audit?: AuditSink | AuditOptions | false | undefined;
}

const RECORDED: Promise<void> = Promise.resolve();

/** How deep a request's plain objects and arrays may nest (the request itself is level 0). */
export const MAX_REQUEST_DEPTH = 8;
/** How many properties and array elements a request may hold in all, nested ones included. */
export const MAX_REQUEST_VALUES = 10000;
/** AWS's bound on an access key id (`CallOptions.accessKeyId`). */
const MAX_ACCESS_KEY_ID_LENGTH = 128;

/** A call as begin() builds it: an unreadable request is raised by before(), and so audited. */
interface GuardedCall extends CallState {
  readonly unreadable: ValidationError | undefined;
}

/**
 * The request as the call sees it from start to end: every own enumerable string-keyed
 * property read exactly once, plain objects (prototype Object.prototype or null) and arrays
 * copied recursively, anything else (bytes, Dates, class instances) kept by reference. Policy
 * conditions, the operation and the audit event all read this copy, so a getter, a Proxy or a
 * caller changing its objects while the call awaits cannot get one value authorized and another
 * one used or recorded. The request object itself is copied whatever its prototype (its fields
 * would otherwise escape the copy), and so are the bytes of its `ciphertextBlob`; other bytes and
 * non-objects are returned as they are, so the operations' own messages for them stay the same.
 * @throws ValidationError when a getter or Proxy trap throws, or the request nests deeper than
 *   MAX_REQUEST_DEPTH or holds more than MAX_REQUEST_VALUES values.
 */
export function snapshotRequest(request: unknown): unknown {
  if (typeof request !== "object" || request === null || ArrayBuffer.isView(request)) {
    return request;
  }
  const budget = { left: MAX_REQUEST_VALUES };
  try {
    if (Array.isArray(request)) return copyArray(request, 0, budget);
    const copy = copyRecord(request, Object.getPrototypeOf(request) === null, 0, budget);
    // A ciphertext's header is parsed more than once (the key it names decides whether
    // reEncrypt needs ReEncryptFrom or ReEncryptTo on each key): a copy of its bytes, so that
    // every parse reads what the call started with. It is not secret; plaintexts stay uncopied.
    if (copy.ciphertextBlob instanceof Uint8Array) {
      copy.ciphertextBlob = new Uint8Array(copy.ciphertextBlob);
    }
    return copy;
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    throw new ValidationError(`"request" could not be read: a property getter or Proxy threw`, {
      cause: error,
    });
  }
}

function copyValue(value: unknown, depth: number, budget: { left: number }): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return copyArray(value, depth, budget);
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Object.prototype) return copyRecord(value, false, depth, budget);
  if (proto === null) return copyRecord(value, true, depth, budget);
  return value;
}

function copyRecord(
  value: object,
  nullProto: boolean,
  depth: number,
  budget: { left: number },
): Record<string, unknown> {
  if (depth > MAX_REQUEST_DEPTH) throw tooDeep();
  const keys = Object.keys(value);
  budget.left -= keys.length;
  if (budget.left < 0) throw tooLarge();
  const out: Record<string, unknown> = nullProto ? Object.create(null) : {};
  for (const key of keys) {
    const copied = copyValue((value as Record<string, unknown>)[key], depth + 1, budget);
    setOwnMember(out, key, copied);
  }
  return out;
}

function copyArray(value: readonly unknown[], depth: number, budget: { left: number }): unknown[] {
  if (depth > MAX_REQUEST_DEPTH) throw tooDeep();
  const length = value.length;
  budget.left -= length;
  if (budget.left < 0) throw tooLarge();
  const out: unknown[] = [];
  for (let i = 0; i < length; i++) out.push(copyValue(value[i], depth + 1, budget));
  return out;
}

function tooDeep(): ValidationError {
  return new ValidationError(`"request" must not nest deeper than ${MAX_REQUEST_DEPTH} levels`);
}

function tooLarge(): ValidationError {
  return new ValidationError(
    `"request" must not hold more than ${MAX_REQUEST_VALUES} properties and array elements`,
  );
}

/** Default trail when none is configured: the newest 10 000 events in memory. */
export const DEFAULT_MEMORY_AUDIT_EVENTS = 10000;

export class CallGuard {
  readonly settings: PolicySettings;
  readonly auditor: Auditor;
  /** False when the user turned the trail off (`audit: false`): no event is built at all. */
  readonly auditing: boolean;
  readonly defaultPrincipal: string;
  #lastPrincipal: string | undefined;
  #lastPrincipalAccount = "";

  constructor(identity: KmsIdentity, options: CallGuardOptions = {}) {
    this.defaultPrincipal =
      options.principal ?? `arn:${identity.partition}:iam::${identity.account}:root`;
    if (typeof this.defaultPrincipal !== "string" || this.defaultPrincipal.length === 0) {
      throw new ValidationError(`"principal" must be a non-empty string`);
    }
    this.settings = {
      identity,
      enabled: options.authorization ?? true,
      accountPolicy:
        options.accountPolicy === undefined
          ? defaultAccountPolicy(identity)
          : parsePolicy(options.accountPolicy),
      principalTags: options.principalTags ?? new Map(),
    };
    const audit = options.audit;
    this.auditing = audit !== false;
    if (audit === false) {
      // An empty trail that stays empty, so kms.audit still answers (with no events).
      this.auditor = new Auditor(new MemoryAuditSink({ maxEvents: 0 }));
    } else if (audit === undefined) {
      this.auditor = new Auditor(new MemoryAuditSink({ maxEvents: DEFAULT_MEMORY_AUDIT_EVENTS }));
    } else if ("sink" in audit) {
      this.auditor = new Auditor(audit.sink, audit);
    } else {
      this.auditor = new Auditor(audit);
    }
  }

  /**
   * Starts a call on a snapshot of `request` (snapshotRequest): `call.request` is what every
   * later step reads, the operation's body included. Never throws for the request: an
   * unreadable one is raised by before(), so that its rejection is audited.
   */
  begin(
    operation: string,
    request: unknown,
    options: CallOptions | undefined,
    now: number,
  ): CallState {
    let snapshot: unknown;
    let unreadable: ValidationError | undefined;
    try {
      snapshot = snapshotRequest(request);
    } catch (error) {
      unreadable = error as ValidationError;
    }
    // Each option is read once, like the request: a getter answering a string to a type check
    // and something else to the use cannot put a non-string in the call.
    let given: unknown;
    let sourceIp: unknown;
    let viaService: unknown;
    let requestId: unknown;
    let accessKeyId: unknown;
    try {
      given = options?.principal;
      sourceIp = options?.sourceIp;
      viaService = options?.viaService;
      requestId = options?.requestId;
      accessKeyId = options?.accessKeyId;
    } catch (cause) {
      // Not the default principal: the audit event must not name someone the caller may not be.
      given = false;
      unreadable ??= new ValidationError(
        `"options" could not be read: a property getter or Proxy threw`,
        { cause },
      );
    }
    if (requestId !== undefined && typeof requestId !== "string") {
      // Refused (audited, as "(invalid requestId)"), not silently replaced by a random id.
      unreadable ??= new ValidationError(`"requestId" must be a string`);
    }
    const validAccessKeyId =
      typeof accessKeyId === "string" &&
      accessKeyId.length > 0 &&
      accessKeyId.length <= MAX_ACCESS_KEY_ID_LENGTH;
    if (accessKeyId !== undefined && !validAccessKeyId) {
      // Refused rather than left out: the audit trail would otherwise lose who signed the call.
      unreadable ??= new ValidationError(
        `"accessKeyId" must be a string of 1–${MAX_ACCESS_KEY_ID_LENGTH} characters`,
      );
    }
    given ??= this.defaultPrincipal;
    // A bad principal is rejected in before(), so that the rejection is audited too.
    const principal = typeof given === "string" ? given.slice(0, 2049) : "(invalid principal)";
    const call: GuardedCall = {
      operation,
      principal,
      principalAccount: this.#principalAccount(principal),
      request: snapshot,
      unreadable,
      ...(typeof sourceIp === "string" ? { sourceIp } : {}),
      ...(typeof viaService === "string" ? { viaService } : {}),
      ...(validAccessKeyId ? { accessKeyId: accessKeyId as string } : {}),
      // The caller's own id wins; else the request this call serves (runWithRequestId), which
      // validated its id when the scope was entered.
      requestId:
        (requestId as string | undefined) ?? currentRequestId() ?? globalThis.crypto.randomUUID(),
      now,
      settings: this.settings,
      keys: new Map(),
      decisions: [],
    };
    return call;
  }

  /**
   * principalAccountOf, remembered for the last principal seen: nearly every call comes from
   * the principal of the call before it (the default one, or a server's one client), and parsing
   * its ARN (a split and a regular expression) was a good part of what begin() cost.
   */
  #principalAccount(principal: string): string {
    if (principal !== this.#lastPrincipal) {
      this.#lastPrincipalAccount = principalAccountOf(principal, this.settings.identity);
      this.#lastPrincipal = principal;
    }
    return this.#lastPrincipalAccount;
  }

  context(base: KmsContext, call: CallState): KmsContext {
    return { ...base, call, authorize: (key) => authorizeKeyNow(call, base.store, key) };
  }

  /** Checks that run before the operation's body. */
  before(call: CallState): void {
    const unreadable = (call as Partial<GuardedCall>).unreadable;
    if (unreadable !== undefined) throw unreadable;
    if (
      call.principal === "(invalid principal)" ||
      call.principal.length === 0 ||
      call.principal.length > 2048
    ) {
      throw new ValidationError(`"principal" must be a string of 1–2048 characters`);
    }
    const dryRun = (call.request as { dryRun?: unknown } | null | undefined)?.dryRun;
    if (typeof call.request === "object" && dryRun !== undefined && typeof dryRun !== "boolean") {
      throw new ValidationError(`"dryRun" expected a boolean`);
    }
    validateGrantTokens(call.request);
    if (ACCOUNT_LEVEL_OPERATIONS.has(call.operation)) authorizeAccount(call);
  }

  /** dryRun: the operation would have succeeded; secrets it produced are wiped. */
  after(call: CallState, response: unknown): void {
    const request = call.request as { dryRun?: unknown } | undefined;
    if (typeof request !== "object" || request === null || request.dryRun !== true) return;
    if (typeof response === "object" && response !== null) {
      for (const value of Object.values(response)) {
        if (value instanceof Uint8Array) value.fill(0);
      }
    }
    throw new DryRunOperationError("the request would have succeeded, but dryRun was set");
  }

  /**
   * Which statement or grant would allow or deny `call`, without performing it. Keys come from
   * the request's key arguments, those the operation reads (KEY_ARGUMENTS), or its ciphertext
   * header. A key argument the operation would refuse for its form is refused here alike.
   * CreateGrant allowed on a key is also held to the delegation rule, as createGrant holds it.
   * `call` is the call explained (its principal may be another's, `as`); `base.call` is the
   * explain call itself, whose caller must be allowed to read each key (explainableKey).
   * @throws ValidationError, NotFoundError (a key that does not exist, as the calls answer),
   *   InvalidCiphertextError (a symmetric ciphertext's header names a key that does not exist, as
   *   Decrypt and ReEncrypt answer), IncorrectKeyError (decrypt's keyId or reEncrypt's
   *   sourceKeyId names another key than the header's, and the call would be allowed on every
   *   key it reads: as the call answers), AccessDeniedError (the caller may not read a key's
   *   policy or grants).
   */
  async explain(base: KmsContext, call: CallState): Promise<ExplainResult> {
    const caller = base.call;
    if (caller === undefined) throw new KmsInternalError("explain runs only as a call");
    const settings: PolicySettings = { ...this.settings, enabled: true };
    const probe: CallState = { ...call, settings, decisions: [] };
    const request = (call.request ?? {}) as Record<string, unknown>;
    const keyArguments = checkedKeyArguments(base, call.operation, request);
    if (ACCOUNT_LEVEL_OPERATIONS.has(call.operation)) {
      try {
        authorizeAccount(probe);
      } catch {
        // recorded in probe.decisions
      }
    } else {
      const ids = new Set<string>();
      const resolved = new Map<string, string>();
      for (const [name, reference] of keyArguments) {
        const id = await resolveKeyId(base, reference, name);
        resolved.set(name, id);
        ids.add(id);
      }
      // The key the ciphertext's header names, as the authorizer reads it (an RSA ciphertext
      // names none), and the key argument naming the ciphertext's key (decrypt's keyId,
      // reEncrypt's sourceKeyId). When the two differ the call reads the argument's key alone,
      // authorizes it, and answers IncorrectKeyException (operations/symmetric.ts open): the
      // header's key, missing or not, is not explained.
      const headerKeyId = ciphertextKeyId(
        request,
        call.operation === "reEncrypt" ? "sourceEncryptionAlgorithm" : "encryptionAlgorithm",
      );
      const blobKeyArgument =
        call.operation === "decrypt"
          ? "keyId"
          : call.operation === "reEncrypt"
            ? "sourceKeyId"
            : undefined;
      const namedBlobKey =
        blobKeyArgument === undefined ? undefined : resolved.get(blobKeyArgument);
      const incorrect =
        headerKeyId !== undefined && namedBlobKey !== undefined && namedBlobKey !== headerKeyId
          ? blobKeyArgument
          : undefined;
      // ReEncrypt's source key where its ciphertext's header does not name it (an RSA source, or
      // a sourceKeyId naming another key): as reEncrypt authorizes it, for kms:ReEncryptFrom.
      const namedSource =
        call.operation === "reEncrypt" &&
        (incorrect !== undefined || isRsaEncryptionAlgorithm(request.sourceEncryptionAlgorithm))
          ? resolved.get("sourceKeyId")
          : undefined;
      // RetireGrant is also open to the grant's retiring principal (see retireGrant), and a
      // grant token names the key by itself.
      const retiring = call.operation === "retireGrant" ? retireGrantTarget(request) : undefined;
      if (retiring?.keyId !== undefined) ids.add(retiring.keyId);
      // UpdateAlias and DeleteAlias are authorized on the key the alias points to now too (see
      // aliases.ts): explained without it, a caller denied there would read "allowed".
      if (call.operation === "updateAlias" || call.operation === "deleteAlias") {
        const aliasName = validateAliasName(request.aliasName);
        const alias = await base.store.getAlias(aliasName);
        if (alias === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
        ids.add(alias.targetKeyId);
      }
      if (headerKeyId !== undefined && incorrect === undefined) ids.add(headerKeyId);
      if (ids.size === 0) {
        throw new ValidationError(
          `"request" names no key for ${call.operation} to be explained on`,
        );
      }
      const keys: StoredKey[] = [];
      let headerKeyMissing = false;
      for (const keyId of ids) {
        try {
          keys.push(await explainableKey(base, caller, keyId));
        } catch (error) {
          // The call answers a header naming a key that does not exist as it answers a tampered
          // blob (operations/symmetric.ts open), whether or not a key argument names it too;
          // only once the other keys are read, as reEncrypt reads its destination key first.
          if (error instanceof NotFoundError && keyId === headerKeyId) {
            headerKeyMissing = true;
            continue;
          }
          throw error;
        }
      }
      if (headerKeyMissing) throw invalidCiphertext();
      for (const key of keys) {
        const keyId = key.keyId;
        const policy = keyPolicyOf(key, settings.identity);
        const actions: readonly (readonly [string, KeyRole])[] =
          keyId !== namedSource
            ? actionsFor(probe, key)
            : [
                ...RSA_REENCRYPT_SOURCE_ACTIONS,
                ...(resolved.get("destinationKeyId") === keyId
                  ? [["kms:ReEncryptTo", "destination"] as const]
                  : []),
              ];
        const aliases = usesResourceAliases(policy)
          ? await resourceAliasesOf(base.store, keyId)
          : undefined;
        const reEncryptKeys =
          call.operation === "reEncrypt" && usesReEncryptOnSameKey(policy)
            ? await reEncryptKeyIds(probe, base.store)
            : undefined;
        for (const [action, role] of actions) {
          // RetireGrant is not granted by any grant of the caller, only by the named one
          // (retiringPrincipalDecision), as retireGrant itself decides.
          let decision = evaluate(
            policy,
            retiring !== undefined ? [] : (key.grants ?? []),
            authorizationRequest(probe, action, key, role, aliases, reEncryptKeys),
          );
          if (retiring !== undefined && !decision.allowed && decision.reason !== "explicit-deny") {
            decision =
              retiringPrincipalDecision(key, retiring.grantId, probe.principal) ?? decision;
          }
          if (call.operation === "createGrant" && decision.allowed) {
            decision = explainedDelegation(base, probe, key, decision) ?? decision;
          }
          probe.decisions.push({
            action,
            resource: authorizationRequest(probe, action, key, role).resource,
            decision,
          });
        }
      }
      // A call allowed everything it asks fails on the mismatch; a denied one answers
      // AccessDenied first, which the decisions show.
      if (incorrect !== undefined && probe.decisions.every((d) => d.decision.allowed)) {
        throw incorrectKey(incorrect);
      }
    }
    const decisions = probe.decisions.map((d) => ({
      action: d.action,
      resource: d.resource,
      allowed: d.decision.allowed,
      reason: d.decision.reason,
      ...(d.decision.statement !== undefined ? { statementIndex: d.decision.statement.index } : {}),
      ...(d.decision.statement?.sid !== undefined ? { sid: d.decision.statement.sid } : {}),
      ...(d.decision.grantId !== undefined ? { grantId: d.decision.grantId } : {}),
      message: d.decision.message,
    }));
    return { allowed: decisions.length > 0 && decisions.every((d) => d.allowed), decisions };
  }

  /**
   * Records work the KMS does on its own rather than for a caller (sealing records left
   * unsealed by an earlier release, while opening; destroying a key past its deletion window; an
   * automatic rotation) as an AwsServiceEvent under the default principal.
   */
  recordInternal(
    operation: string,
    request: Readonly<Record<string, string>>,
    now: number,
    keys: readonly StoredKey[],
  ): Promise<void> {
    if (!this.auditing) return RECORDED;
    const call = this.begin(operation, request, undefined, now);
    for (const key of keys) call.keys.set(key.keyId, key);
    return this.auditor.record({
      ...buildAuditEvent(call, { response: request }),
      eventType: "AwsServiceEvent",
    });
  }

  /**
   * Records the call; rejects (fail-closed) when the event could not be written. Undefined when
   * the trail is off (`audit: false`): nothing to wait for, so the caller spares an await.
   */
  record(
    call: CallState,
    outcome: { response?: unknown; error?: unknown },
  ): Promise<void> | undefined {
    if (!this.auditing) return undefined;
    return this.auditor.record(buildAuditEvent(call, outcome));
  }
}

/**
 * CreateGrant's delegation rule (delegationRefusal) for the explained call `probe`, allowed
 * kms:CreateGrant on `key` by `decision`, as createGrant applies it: only to a request that gets
 * that far. Undefined when the rule allows the grant, and when the call fails before it for
 * whoever asks (malformed arguments, the key's state, operations the key cannot hold): explain
 * reports authorization, and the call answers those alike.
 */
function explainedDelegation(
  ctx: KmsContext,
  probe: CallState,
  key: StoredKey,
  decision: Decision,
): Decision | undefined {
  let requested: DelegatedGrant;
  try {
    requested = createGrantArguments(probe.request);
    assertGrantableKey(ctx, key, requested);
  } catch (error) {
    if (error instanceof KmsError) return undefined;
    throw error;
  }
  return delegationRefusal(ctx.identity, key, probe.principal, decision, requested);
}

/** What explain reports of a key is what these read: its policy's statements, its grants. */
const EXPLAIN_READS = ["getKeyPolicy", "listGrants"] as const;

/**
 * Reads key `keyId` for explain, once its caller (the explain call's, never the `as` principal)
 * is authorized for kms:GetKeyPolicy and kms:ListGrants on it as those calls are, naming it by
 * key id: the statement indexes, Sids and grant ids explain reports would otherwise reach a
 * caller the key policy keeps from them, explicit Deny included. The authorizations and the key
 * go into the explain call's own record (its audit event's decisions and resources).
 * @throws NotFoundError for a key that does not exist or whose deletion is due (as every call
 *   answers; not destroyed here, explain changes nothing), AccessDeniedError.
 */
async function explainableKey(
  base: KmsContext,
  caller: CallState,
  keyId: string,
): Promise<StoredKey> {
  const key = await base.store.getKey(keyId);
  if (key === undefined || isDeletionDue(base, key)) {
    throw new NotFoundError(`key ${keyArn(base.identity, keyId)} does not exist`);
  }
  for (const operation of EXPLAIN_READS) {
    await authorizeKey({ ...caller, operation, request: { keyId } }, base.store, key);
  }
  return key;
}

/**
 * The arguments of `request` that name a key for `operation` (KEY_ARGUMENTS, which the
 * operations read too), each checked as the operation checks it before reading anything: an
 * alias where the operation takes a key id or key ARN only is refused here as the call refuses
 * it, not explained on the key the alias points to now.
 * @throws ValidationError, NotFoundError (see parseKeyArgument).
 */
function checkedKeyArguments(
  ctx: KmsContext,
  operation: string,
  request: Readonly<Record<string, unknown>>,
): (readonly [string, unknown])[] {
  // A grant token names its grant's key itself, and retireGrant then reads no keyId.
  if (operation === "retireGrant" && request.grantToken !== undefined) return [];
  const named: (readonly [string, unknown])[] = [];
  for (const [argument, naming] of keyArgumentsOf(operation)) {
    const reference = request[argument];
    if (reference === undefined) continue;
    parseKeyArgument(ctx, operation, argument, naming, reference);
    named.push([argument, reference]);
  }
  return named;
}

export interface ExplainResult {
  /** Whether every authorization the call needs would be granted. */
  readonly allowed: boolean;
  readonly decisions: readonly {
    readonly action: string;
    readonly resource: string;
    readonly allowed: boolean;
    readonly reason: string;
    readonly statementIndex?: number;
    readonly sid?: string;
    readonly grantId?: string;
    readonly message: string;
  }[];
}
