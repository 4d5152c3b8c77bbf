/**
 * Per-call authorization: turns a call (operation, request, caller) and a key into an
 * AuthorizationRequest, evaluates it, and remembers the decisions for the audit trail and for
 * `explain`. Condition key values are extracted generically from the request object, so
 * operations added later (sign, verify, generateMac…) get kms:SigningAlgorithm etc. for free.
 */
import { type KmsIdentity, keyArn, parseKeyReference } from "../arn.ts";
import { parseBlob } from "../envelope/ciphertext-blob.ts";
import { AccessDeniedError } from "../errors.ts";
import { isPlainObject } from "../internal/assert.ts";
import type { KeyStore, StoredGrant, StoredKey } from "../keystore/key-store.ts";
import {
  type AuthorizationRequest,
  accountOf,
  type Decision,
  evaluate,
  roleArnOf,
} from "./evaluate.ts";
import { defaultKeyPolicy, type PolicyDocument, parsePolicyCached } from "./policy-document.ts";
import { type PrincipalTagIndex, principalTag } from "./principal-tags.ts";
import {
  DEFAULT_PENDING_WINDOW_IN_DAYS,
  DEFAULT_ROTATION_PERIOD_IN_DAYS,
} from "./request-defaults.ts";

/** Policy settings of one Kms (from createKms options). */
export interface PolicySettings {
  readonly identity: KmsIdentity;
  /** False only for benchmarks/tests that measure the cost of authorization. */
  readonly enabled: boolean;
  /** Policy for calls without a key (createKey, listKeys, generateRandom…); resource `*`. */
  readonly accountPolicy: PolicyDocument;
  /** A role session also has its role's tags: see principalTag. */
  readonly principalTags: PrincipalTagIndex;
}

export interface AuthorizationRecord {
  readonly action: string;
  readonly resource: string;
  readonly decision: Decision;
  /** The key record the decision was made on (its policy, grants and tags), if any. */
  readonly key?: StoredKey;
}

/** What one call is: built by the facade for every operation. */
export interface CallState {
  readonly operation: string;
  readonly principal: string;
  readonly principalAccount: string;
  readonly request: unknown;
  readonly sourceIp?: string;
  readonly viaService?: string;
  readonly accessKeyId?: string;
  readonly requestId: string;
  readonly now: number;
  readonly settings: PolicySettings;
  /** Keys the call touched, by key id (for the audit record's resources). */
  readonly keys: Map<string, StoredKey>;
  readonly decisions: AuthorizationRecord[];
}

/** Operations without a key resource: authorized against the account policy up front. */
export const ACCOUNT_LEVEL_OPERATIONS: ReadonlySet<string> = new Set([
  "createKey",
  "listKeys",
  "listAliases",
  "generateRandom",
  "listRetirableGrants",
  "runMaintenance",
  "explain",
  "verifyAuditLog",
]);

/** Operations whose key-level authorization applies an encryption context. */
const EC_OPERATIONS = new Set([
  "encrypt",
  "decrypt",
  "reEncrypt",
  "generateDataKey",
  "generateDataKeyWithoutPlaintext",
  "generateDataKeyPair",
  "generateDataKeyPairWithoutPlaintext",
]);

export function defaultAccountPolicy(identity: KmsIdentity): PolicyDocument {
  return parsePolicyCached(defaultKeyPolicy(identity.partition, identity.account));
}

/** `encrypt` → `kms:Encrypt`. */
export function actionOf(operation: string): string {
  return `kms:${operation.charAt(0).toUpperCase()}${operation.slice(1)}`;
}

/** Principal's account: from its ARN, else (a plain name) the KMS's own account. */
export function principalAccountOf(principal: string, identity: KmsIdentity): string {
  return accountOf(principal) ?? identity.account;
}

function field(request: unknown, name: string): unknown {
  return typeof request === "object" && request !== null
    ? (request as Record<string, unknown>)[name]
    : undefined;
}

function stringField(request: unknown, name: string): string | undefined {
  const value = field(request, name);
  return typeof value === "string" ? value : undefined;
}

function contextField(request: unknown, name: string): Record<string, string> | undefined {
  const value = field(request, name);
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  return value as Record<string, string>;
}

/** The context of CreateGrant's constraint (createGrant refuses a request with both). */
function constraintContext(request: unknown): Record<string, string> | undefined {
  const constraints = field(request, "constraints");
  return (
    contextField(constraints, "encryptionContextEquals") ??
    contextField(constraints, "encryptionContextSubset")
  );
}

type TagPair = { readonly tagKey: string; readonly tagValue: string };

/**
 * The request's tags that validateTags would store: plain objects (the request snapshot's
 * copies) with a string key and value. A class instance is left out rather than read: a getter
 * on it could answer a condition one value and the write another (validateTags refuses it), and
 * a tag that is not an object at all must fail as a TagError, not as a crash here.
 */
function requestTagPairs(tags: readonly unknown[]): TagPair[] {
  const pairs: TagPair[] = [];
  for (const t of tags) {
    if (!isPlainObject(t)) continue;
    const { tagKey, tagValue } = t;
    if (typeof tagKey === "string" && typeof tagValue === "string") {
      pairs.push({ tagKey, tagValue });
    }
  }
  return pairs;
}

/**
 * aws:TagKeys: the tag keys the request names (CreateKey and TagResource: its tags'
 * keys; UntagResource: its tagKeys). Undefined for requests naming none.
 */
function requestTagKeys(
  request: unknown,
  tags: readonly TagPair[] | undefined,
): readonly string[] | undefined {
  if (tags !== undefined) return tags.map((t) => t.tagKey);
  const keys = field(request, "tagKeys");
  return Array.isArray(keys) ? keys.filter((k): k is string => typeof k === "string") : undefined;
}

/** The key id a key reference names directly (key id or key ARN); undefined for aliases. */
function keyIdOf(identity: KmsIdentity, reference: unknown): string | undefined {
  try {
    const ref = parseKeyReference(identity, reference);
    return ref.kind === "key" ? ref.keyId : undefined;
  } catch {
    return undefined;
  }
}

/** Alias named by the request, as an alias name (alias ARNs reduced to `alias/...`). */
function requestAlias(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.startsWith("alias/")) return value;
  const at = value.indexOf(":alias/");
  return value.startsWith("arn:") && at !== -1 ? value.slice(at + 1) : undefined;
}

/**
 * The values of every tag whose key is `name` in some case, one per spelling (a spelling
 * repeated in a request: its last value, the one stored). Tag keys are case-sensitive in KMS,
 * so a key may hold `Stage` and `stage`; condition key names are not.
 */
function tagSpellings(tags: readonly unknown[], name: string): string[] {
  const lower = name.toLowerCase();
  const bySpelling = new Map<string, string>();
  for (const t of tags) {
    const tagKey = field(t, "tagKey");
    const tagValue = field(t, "tagValue");
    if (
      typeof tagKey === "string" &&
      typeof tagValue === "string" &&
      tagKey.toLowerCase() === lower
    ) {
      bySpelling.set(tagKey, tagValue);
    }
  }
  return [...bySpelling.values()];
}

/** hasCaseVariants for a context, allocating nothing for one whose keys are all lower case. */
function contextHasCaseVariants(context: Readonly<Record<string, string>>): boolean {
  for (const key in context) {
    if (key !== key.toLowerCase() && Object.hasOwn(context, key)) {
      return hasCaseVariants(Object.keys(context));
    }
  }
  return false;
}

function tagsHaveCaseVariants(tags: readonly unknown[]): boolean {
  return (
    tags.length > 1 &&
    hasCaseVariants(
      tags.map((t) => field(t, "tagKey")).filter((k): k is string => typeof k === "string"),
    )
  );
}

const storedTagVariants = new WeakMap<StoredKey["tags"], boolean>();

/** tagsHaveCaseVariants for a stored key, remembered per tag list (stores replace, never edit). */
function storedTagsHaveCaseVariants(key: StoredKey): boolean {
  let known = storedTagVariants.get(key.tags);
  if (known === undefined) {
    known = tagsHaveCaseVariants(key.tags);
    storedTagVariants.set(key.tags, known);
  }
  return known;
}

function lookupTag(
  tags: readonly { tagKey: string; tagValue: string }[],
  name: string,
): string | undefined {
  const lower = name.toLowerCase();
  // The last: a request repeating a tag key stores its last value (validateTags), so that is
  // the one a condition must judge, not an earlier decoy.
  return tags.findLast((t) => t.tagKey.toLowerCase() === lower)?.tagValue;
}

/**
 * Whether two of `keys` differ only in case. Cheap for the usual keys: two keys that differ
 * only in case cannot both be lower case.
 */
function hasCaseVariants(keys: readonly string[]): boolean {
  let lowerOnly = true;
  for (const key of keys) if (key !== key.toLowerCase()) lowerOnly = false;
  if (lowerOnly) return false;
  return new Set(keys.map((k) => k.toLowerCase())).size < new Set(keys).size;
}

/** The context's values by lower-cased key; a key held in several cases has several values. */
function foldKeys(context: Readonly<Record<string, string>>): Map<string, string[]> {
  const folded = new Map<string, string[]>();
  for (const [key, value] of Object.entries(context)) {
    const lower = key.toLowerCase();
    const list = folded.get(lower);
    if (list === undefined) folded.set(lower, [value]);
    else list.push(value);
  }
  return folded;
}

export type KeyRole = "single" | "source" | "destination";

/** A condition key's one value, or none. */
function one(v: string | undefined): readonly string[] | undefined {
  return v === undefined ? undefined : [v];
}

/** A boolean request field as a condition key's value; none for anything else. */
function bool(v: unknown): readonly string[] | undefined {
  return typeof v === "boolean" ? [String(v)] : undefined;
}

/**
 * Builds the request to evaluate for `action` on `key` (or on `*` when `key` is undefined).
 * Values are computed only when a condition asks for them; the encryption context alone is
 * indexed up front, to know whether it holds a key in several cases.
 */
export function authorizationRequest(
  call: CallState,
  action: string,
  key: StoredKey | undefined,
  role: KeyRole,
  resourceAliases?: readonly string[],
  reEncryptKeys?: ReEncryptKeys,
): AuthorizationRequest {
  const { request, settings } = call;
  const contextName =
    role === "source"
      ? "sourceEncryptionContext"
      : role === "destination"
        ? "destinationEncryptionContext"
        : "encryptionContext";
  // CreateGrant's encryption context is its constraint's, as in AWS: a policy bounds with
  // kms:EncryptionContext:<key> and kms:EncryptionContextKeys the grants a caller may create.
  const encryptionContext =
    call.operation === "createGrant"
      ? constraintContext(request)
      : contextField(request, contextName);
  const keyIdArgument =
    role === "source" ? "sourceKeyId" : role === "destination" ? "destinationKeyId" : "keyId";
  const algorithmName =
    role === "source"
      ? "sourceEncryptionAlgorithm"
      : role === "destination"
        ? "destinationEncryptionAlgorithm"
        : "encryptionAlgorithm";
  const takesEncryptionContext =
    EC_OPERATIONS.has(call.operation) && (key === undefined || key.keySpec === "SYMMETRIC_DEFAULT");

  /**
   * CreateKey's value for a property of the key it creates: the request's, or the default
   * createKey applies when it is omitted (AWS evaluates the default too, so omitting keySpec
   * cannot step around a Deny on SYMMETRIC_DEFAULT). `null` takes the default too, as createKey
   * applies it for keySpec, keyUsage and origin (`??`): read as no value, `keySpec: null` would
   * step around that Deny. A value of the wrong type has none; createKey refuses it.
   */
  const created = (given: unknown, fallback: string | boolean): readonly string[] | undefined => {
    if (call.operation !== "createKey") return undefined;
    const value = given ?? fallback;
    return typeof value === "string" || typeof value === "boolean" ? [String(value)] : undefined;
  };

  /**
   * The number of days the operation applies: the request's, or its default when the field is
   * omitted, as for createKey's properties above. Only an omitted field takes the default: unlike
   * createKey, these operations refuse `null`, as a value of the wrong type, which has none here.
   */
  const applied = (given: unknown, fallback: number): readonly string[] | undefined => {
    const days = given === undefined ? fallback : given;
    return typeof days === "number" ? [String(days)] : undefined;
  };

  // kms:EncryptionContext:<key> names the context key in any case, as AWS reads the whole
  // condition key name; only values are case-sensitive. A context may hold one key in several
  // cases (`{ stage: "x", Stage: "y" }`): each value is one reading of the condition key, and
  // evaluate tests a condition under every reading (Allow) or any (Deny). Own pairs only: a
  // plain object also answers "constructor" or "toString" with what every object inherits.
  // Folded only when a key is held in several cases and a condition reads the context.
  let contextByKey: Map<string, string[]> | undefined;
  const ambiguousContext =
    encryptionContext !== undefined && contextHasCaseVariants(encryptionContext);
  const tagsField = field(request, "tags");
  const requestTags = Array.isArray(tagsField) ? requestTagPairs(tagsField) : undefined;
  // Not remembered for a request: its caller may reuse and change the array.
  const ambiguousTags =
    (key !== undefined && storedTagsHaveCaseVariants(key)) ||
    (requestTags !== undefined && tagsHaveCaseVariants(requestTags));

  const values = (lower: string, original: string): readonly string[] | undefined => {
    if (lower.startsWith("kms:encryptioncontext:")) {
      if (encryptionContext === undefined) return undefined;
      const name = lower.slice("kms:encryptioncontext:".length);
      if (ambiguousContext) {
        contextByKey ??= foldKeys(encryptionContext);
        return contextByKey.get(name);
      }
      // One value at most: the key as the condition writes it, or in another case.
      const written = original.slice("kms:encryptioncontext:".length);
      if (Object.hasOwn(encryptionContext, written)) return [encryptionContext[written]!];
      for (const k of Object.keys(encryptionContext)) {
        if (k.toLowerCase() === name) return [encryptionContext[k]!];
      }
      return undefined;
    }
    if (lower.startsWith("aws:principaltag/")) {
      return one(principalTag(settings.principalTags, call.principal, original.slice(17)));
    }
    if (lower.startsWith("aws:resourcetag/")) {
      return key === undefined ? undefined : one(lookupTag(key.tags, original.slice(16)));
    }
    if (lower.startsWith("aws:requesttag/")) {
      return requestTags === undefined
        ? undefined
        : one(lookupTag(requestTags, original.slice(15)));
    }
    switch (lower) {
      case "kms:encryptioncontextkeys":
        return encryptionContext === undefined ? undefined : Object.keys(encryptionContext);
      case "aws:tagkeys":
        return requestTagKeys(request, requestTags);
      case "kms:calleraccount":
      case "aws:principalaccount":
        return [call.principalAccount];
      case "aws:principalarn":
        // A role session's is its role's ARN, as in AWS: a Deny on the role's ARN must hold for
        // every session of it (the role path, which a session ARN lacks, is not restored).
        return [roleArnOf(call.principal) ?? call.principal];
      case "aws:username":
        // Present for IAM users only, as in AWS: the name after the user's path.
        return one(/^arn:[^:]+:iam::\d{12}:user\/(?:.*\/)?([^/]+)$/.exec(call.principal)?.[1]);
      case "kms:viaservice":
        return one(call.viaService);
      case "aws:sourceip":
        return one(call.sourceIp);
      case "aws:currenttime":
        return [new Date(call.now).toISOString()];
      case "aws:epochtime":
        return [String(Math.floor(call.now / 1000))];
      case "kms:requestalias":
        return one(requestAlias(stringField(request, keyIdArgument)));
      case "kms:resourcealiases":
        return resourceAliases;
      case "kms:keyspec":
      case "kms:customermasterkeyspec":
        return key !== undefined
          ? [key.keySpec]
          : created(
              field(request, "keySpec") ?? field(request, "customerMasterKeySpec"),
              "SYMMETRIC_DEFAULT",
            );
      case "kms:keyusage":
      case "kms:customermasterkeyusage":
        return key !== undefined
          ? [key.keyUsage]
          : created(field(request, "keyUsage"), "ENCRYPT_DECRYPT");
      case "kms:keyorigin":
        return key !== undefined ? [key.origin] : created(field(request, "origin"), "AWS_KMS");
      case "kms:multiregion":
        return key !== undefined
          ? [String(key.multiRegion)]
          : created(field(request, "multiRegion"), false);
      case "kms:encryptionalgorithm": {
        const given = stringField(request, algorithmName);
        return one(given ?? (takesEncryptionContext ? "SYMMETRIC_DEFAULT" : undefined));
      }
      case "kms:messagetype":
        // Sign and Verify only; RAW when omitted, as AWS answers for a parameter's default.
        return call.operation === "sign" || call.operation === "verify"
          ? one(stringField(request, "messageType") ?? "RAW")
          : undefined;
      case "kms:reencryptonsamekey": {
        if (call.operation !== "reEncrypt") return undefined;
        // The role's own key is resolved; the other side as reEncryptKeys resolved it (aliases
        // too), else only when named by id or key ARN.
        const source =
          role === "source"
            ? key?.keyId
            : (reEncryptKeys?.source ??
              blobKeyId(request) ??
              keyIdOf(settings.identity, field(request, "sourceKeyId")));
        const destination =
          role === "destination"
            ? key?.keyId
            : (reEncryptKeys?.destination ??
              keyIdOf(settings.identity, field(request, "destinationKeyId")));
        return [String(source !== undefined && source === destination)];
      }
      case "kms:signingalgorithm":
        return one(stringField(request, "signingAlgorithm"));
      case "kms:macalgorithm":
        return one(stringField(request, "macAlgorithm"));
      case "kms:keyagreementalgorithm":
        return one(stringField(request, "keyAgreementAlgorithm"));
      case "kms:datakeypairspec":
        return one(stringField(request, "keyPairSpec"));
      case "kms:granteeprincipal":
        return one(stringField(request, "granteePrincipal"));
      case "kms:retiringprincipal":
        return one(stringField(request, "retiringPrincipal"));
      case "kms:grantoperations": {
        const ops = field(request, "operations");
        return Array.isArray(ops)
          ? ops.filter((o): o is string => typeof o === "string")
          : undefined;
      }
      case "kms:grantisforawsresource":
        return call.operation === "createGrant" ||
          call.operation === "listGrants" ||
          call.operation === "revokeGrant"
          ? [String(call.viaService !== undefined)]
          : undefined;
      case "kms:grantconstrainttype": {
        const c = field(request, "constraints");
        if (typeof c !== "object" || c === null) return undefined;
        const types: string[] = [];
        if (field(c, "encryptionContextEquals") !== undefined)
          types.push("EncryptionContextEquals");
        if (field(c, "encryptionContextSubset") !== undefined)
          types.push("EncryptionContextSubset");
        return types.length === 0 ? undefined : types;
      }
      case "kms:bypasspolicylockoutsafetycheck":
        return bool(field(request, "bypassPolicyLockoutSafetyCheck"));
      case "kms:rotationperiodindays":
        return call.operation === "enableKeyRotation"
          ? applied(field(request, "rotationPeriodInDays"), DEFAULT_ROTATION_PERIOD_IN_DAYS)
          : undefined;
      case "kms:schedulekeydeletionpendingwindowindays":
        return call.operation === "scheduleKeyDeletion"
          ? applied(field(request, "pendingWindowInDays"), DEFAULT_PENDING_WINDOW_IN_DAYS)
          : undefined;
      default:
        return undefined;
    }
  };
  return {
    action,
    actionLower: action.toLowerCase(),
    principal: call.principal,
    principalAccount: call.principalAccount,
    resource: key === undefined ? "*" : keyArn(settings.identity, key.keyId),
    conditionValues: (name) => values(name.toLowerCase(), name),
    // Always present (undefined mostly): a spread here would cost every call a slow copy.
    // A context key or tag key held in several cases is read once per spelling; evaluate
    // tests a condition under every reading (Allow) or any (Deny).
    conditionReadings:
      ambiguousContext || ambiguousTags
        ? (name: string) => {
            const lower = name.toLowerCase();
            let all: readonly string[] | undefined;
            if (lower.startsWith("kms:encryptioncontext:")) all = values(lower, name);
            else if (lower.startsWith("aws:resourcetag/") && key !== undefined) {
              all = tagSpellings(key.tags, name.slice(16));
            } else if (lower.startsWith("aws:requesttag/") && requestTags !== undefined) {
              all = tagSpellings(requestTags, name.slice(15));
            }
            return all !== undefined && all.length > 1 ? all.map((v) => [v]) : undefined;
          }
        : undefined,
    encryptionContext,
    takesEncryptionContext,
  };
}

/** The default key policy of each Kms identity, parsed, with the names it was rendered for. */
const defaultPolicyDocuments = new WeakMap<
  KmsIdentity,
  { readonly partition: string; readonly account: string; readonly document: PolicyDocument }
>();

/** The key's policy: its stored document, or AWS's default when none was set. */
export function keyPolicyOf(key: StoredKey, identity: KmsIdentity): PolicyDocument {
  if (key.policy !== undefined) return parsePolicyCached(key.policy);
  // Most keys have no policy of their own: this lookup spares every call on one the rendering
  // of the default's cache key, and a parse whenever 256 stored policies evicted it.
  const { partition, account } = identity;
  let known = defaultPolicyDocuments.get(identity);
  if (known === undefined || known.partition !== partition || known.account !== account) {
    known = {
      partition,
      account,
      document: parsePolicyCached(defaultKeyPolicy(partition, account)),
    };
    defaultPolicyDocuments.set(identity, known);
  }
  return known.document;
}

/** Condition keys whose values cost a store read, by policy: which of them it reads. */
const keysRead = new WeakMap<PolicyDocument, ReadonlySet<string>>();

/** Whether any condition of `policy` reads `conditionKey` (lower case), computed once per policy. */
function readsConditionKey(policy: PolicyDocument, conditionKey: string): boolean {
  let read = keysRead.get(policy);
  if (read === undefined) {
    read = new Set(policy.statements.flatMap((s) => s.conditions.map((c) => c.key.toLowerCase())));
    keysRead.set(policy, read);
  }
  return read.has(conditionKey);
}

/** Whether any condition needs kms:ResourceAliases (a store read). */
export function usesResourceAliases(policy: PolicyDocument): boolean {
  return readsConditionKey(policy, "kms:resourcealiases");
}

/**
 * Every alias of the key, page after page: a key may have more aliases than one page holds,
 * and a Deny on kms:ResourceAliases must see the one past the first page too.
 */
export async function resourceAliasesOf(store: KeyStore, keyId: string): Promise<string[]> {
  const names: string[] = [];
  for (;;) {
    const after = names.at(-1);
    const page = await store.listAliases({
      limit: 100,
      targetKeyId: keyId,
      ...(after !== undefined ? { after } : {}),
    });
    for (const alias of page) names.push(alias.aliasName);
    if (page.length < 100) return names;
  }
}

/** Whether any condition reads kms:ReEncryptOnSameKey (resolving an alias is a store read). */
export function usesReEncryptOnSameKey(policy: PolicyDocument): boolean {
  return readsConditionKey(policy, "kms:reencryptonsamekey");
}

/** ReEncrypt's source and destination key ids, as far as the request and the store tell. */
export interface ReEncryptKeys {
  readonly source: string | undefined;
  readonly destination: string | undefined;
}

/**
 * Resolves ReEncrypt's keys, aliases included, for kms:ReEncryptOnSameKey. An alias naming the
 * source key is the same key, as in AWS: read as another key, it would step around a Deny for
 * `true` (and trip one for `false`) on the key policy side that sees the alias unresolved.
 */
export async function reEncryptKeyIds(call: CallState, store: KeyStore): Promise<ReEncryptKeys> {
  const resolve = async (reference: unknown): Promise<string | undefined> => {
    let ref: ReturnType<typeof parseKeyReference>;
    try {
      ref = parseKeyReference(call.settings.identity, reference);
    } catch {
      return undefined;
    }
    return ref.kind === "key" ? ref.keyId : (await store.getAlias(ref.aliasName))?.targetKeyId;
  };
  return {
    source: blobKeyId(call.request) ?? (await resolve(field(call.request, "sourceKeyId"))),
    destination: await resolve(field(call.request, "destinationKeyId")),
  };
}

/**
 * The key a symmetric ciphertext's header names: `request.ciphertextBlob`'s, when the request's
 * `algorithmField` (`encryptionAlgorithm` for Decrypt, `sourceEncryptionAlgorithm` for
 * ReEncrypt) is omitted or SYMMETRIC_DEFAULT and the blob parses. An RSA ciphertext
 * (RSAES_OAEP_*) is raw RSA output that names no key: read as a blob header it would name
 * whatever key its bytes happen to spell (an RSA ciphertext starting 01 01 is found in seconds
 * with the public key), so the key comes from the key id argument instead, which AWS requires
 * there. Any other algorithm is one the call refuses before it reads the blob. The authorizer
 * and explain both read the ciphertext's key through this, so that they agree on it.
 */
export function ciphertextKeyId(
  request: unknown,
  algorithmField: "encryptionAlgorithm" | "sourceEncryptionAlgorithm",
): string | undefined {
  const algorithm = field(request, algorithmField);
  if (algorithm !== undefined && algorithm !== "SYMMETRIC_DEFAULT") return undefined;
  const blob = field(request, "ciphertextBlob");
  if (!(blob instanceof Uint8Array)) return undefined;
  try {
    return parseBlob(blob).keyId;
  } catch {
    return undefined;
  }
}

/** ReEncrypt's source key as its ciphertext names it (see ciphertextKeyId). */
function blobKeyId(request: unknown): string | undefined {
  return ciphertextKeyId(request, "sourceEncryptionAlgorithm");
}

/** The one action of each operation but reEncrypt, built once per operation name. */
const singleActions = new Map<string, readonly (readonly [string, KeyRole])[]>();

/** The actions a call needs on `key`, with the role the key plays. */
export function actionsFor(
  call: CallState,
  key: StoredKey,
): readonly (readonly [string, KeyRole])[] {
  if (call.operation !== "reEncrypt") {
    let single = singleActions.get(call.operation);
    if (single === undefined) {
      single = Object.freeze([Object.freeze([actionOf(call.operation), "single"] as const)]);
      // Operation names are the facade's own few (and explain's, checked against them).
      if (singleActions.size < 256) singleActions.set(call.operation, single);
    }
    return single;
  }
  const source = blobKeyId(call.request);
  const actions: [string, KeyRole][] = [];
  if (source === key.keyId) actions.push(["kms:ReEncryptFrom", "source"]);
  if (source !== key.keyId || mayBeDestination(call, key)) {
    actions.push(["kms:ReEncryptTo", "destination"]);
  }
  return actions;
}

/**
 * What ReEncrypt needs of an RSA source key. Its ciphertext names no key, so actionsFor would
 * take it for a destination and ask kms:ReEncryptTo; reEncrypt (and explain) pass these instead.
 */
export const RSA_REENCRYPT_SOURCE_ACTIONS: readonly (readonly [string, KeyRole])[] = [
  ["kms:ReEncryptFrom", "source"],
];

/** An alias could name the source key too, so it needs ReEncryptTo as well (conservative). */
function mayBeDestination(call: CallState, key: StoredKey): boolean {
  const destination = stringField(call.request, "destinationKeyId");
  if (destination === undefined) return false;
  return destination.endsWith(key.keyId) || requestAlias(destination) !== undefined;
}

function deny(decision: Decision): never {
  throw new AccessDeniedError(decision.message);
}

/**
 * Evaluates and records; throws AccessDeniedError on a deny. `actions` defaults to what the call
 * needs of the key as far as the request tells (actionsFor); a caller that knows the key's role
 * better (ReEncrypt's RSA source, which its ciphertext does not name) passes them.
 */
export async function authorizeKey(
  call: CallState,
  store: KeyStore,
  key: StoredKey,
  actions: readonly (readonly [string, KeyRole])[] = actionsFor(call, key),
): Promise<void> {
  await authorizeKeyNow(call, store, key, actions);
}

/**
 * authorizeKey, deciding at once when the key policy reads nothing from the store (no
 * kms:ResourceAliases condition, no kms:ReEncryptOnSameKey one on a reEncrypt): then it returns
 * undefined, or throws AccessDeniedError itself, and its caller awaits nothing. Otherwise it
 * returns the promise of the decision, made once the store answered. The same checks in the
 * same order either way; only the nearly universal case spares a promise per key read.
 */
export function authorizeKeyNow(
  call: CallState,
  store: KeyStore,
  key: StoredKey,
  actions: readonly (readonly [string, KeyRole])[] = actionsFor(call, key),
): Promise<void> | undefined {
  call.keys.set(key.keyId, key);
  // RetireGrant is authorized by the grant itself (retiring principal), see retireGrant.
  if (!call.settings.enabled || call.operation === "retireGrant") return undefined;
  const policy = keyPolicyOf(key, call.settings.identity);
  const readsAliases = usesResourceAliases(policy);
  const readsReEncryptKeys = call.operation === "reEncrypt" && usesReEncryptOnSameKey(policy);
  if (!readsAliases && !readsReEncryptKeys) {
    decideKey(call, key, policy, actions, undefined, undefined);
    return undefined;
  }
  return (async () => {
    const aliases = readsAliases ? await resourceAliasesOf(store, key.keyId) : undefined;
    const reEncryptKeys = readsReEncryptKeys ? await reEncryptKeyIds(call, store) : undefined;
    decideKey(call, key, policy, actions, aliases, reEncryptKeys);
  })();
}

/** authorizeKey's decisions, once the condition values that cost a store read are known. */
function decideKey(
  call: CallState,
  key: StoredKey,
  policy: PolicyDocument,
  actions: readonly (readonly [string, KeyRole])[],
  aliases: readonly string[] | undefined,
  reEncryptKeys: ReEncryptKeys | undefined,
): void {
  const resource = keyArn(call.settings.identity, key.keyId);
  for (const [action, role] of actions) {
    // Decided once per action and key record: a call that reads the key again after another
    // writer changed it (a retry after a lost compare-and-set) is decided on what it read last.
    const done = call.decisions.find(
      (d) => d.action === action && d.resource === resource && sameRecord(d.key, key),
    );
    if (done !== undefined) {
      if (!done.decision.allowed) deny(done.decision);
      continue;
    }
    const decision = evaluate(
      policy,
      grantsOf(key, call.principal),
      authorizationRequest(call, action, key, role, aliases, reEncryptKeys),
    );
    call.decisions.push({ action, resource, decision, key });
    if (!decision.allowed) deny(decision);
  }
}

const grantsByGrantee = new WeakMap<
  readonly StoredGrant[],
  ReadonlyMap<string, readonly StoredGrant[]>
>();
const NO_GRANTS: readonly StoredGrant[] = Object.freeze([]);

/**
 * The key's grants whose grantee is `principal`, or the role `principal` is a session of, in
 * stored order: the only ones evaluate can match (a grant allows nothing to anyone else), so the
 * deciding grant is the same. Indexed once per frozen grant list (stores that cache records hand
 * out the same one on every read), so a call on a key with thousands of grants costs a lookup or
 * two instead of a walk over all of them.
 */
export function grantsOf(key: StoredKey, principal: string): readonly StoredGrant[] {
  const grants = key.grants;
  if (grants === undefined || grants.length === 0) return NO_GRANTS;
  const role = roleArnOf(principal);
  const serves = (g: StoredGrant): boolean =>
    g.granteePrincipal === principal || (role !== undefined && g.granteePrincipal === role);
  // A list that is not frozen could change in place: filtered anew, never remembered.
  if (!Object.isFrozen(grants)) return grants.filter(serves);
  let index = grantsByGrantee.get(grants);
  if (index === undefined) {
    const built = new Map<string, StoredGrant[]>();
    for (const grant of grants) {
      const list = built.get(grant.granteePrincipal);
      if (list === undefined) built.set(grant.granteePrincipal, [grant]);
      else list.push(grant);
    }
    index = built;
    grantsByGrantee.set(grants, index);
  }
  const own = index.get(principal) ?? NO_GRANTS;
  const roles = role === undefined ? NO_GRANTS : (index.get(role) ?? NO_GRANTS);
  // A session holding grants of its own and its role's: one walk keeps them in stored order.
  if (own.length > 0 && roles.length > 0) return grants.filter(serves);
  const mine = own.length > 0 ? own : roles;
  // The list is frozen, its grants need not be: one changed in place since is never matched
  // for a grantee it no longer names (a grant changed to name this one is missed: a denial).
  return mine.every(serves) ? mine : mine.filter(serves);
}

/**
 * Whether two reads of a key are the same record: the same object, or the same seal, which
 * covers every field a decision reads and changes with every write (FORMAT §4.1).
 */
function sameRecord(decided: StoredKey | undefined, key: StoredKey): boolean {
  return decided === key || (decided?.seal !== undefined && decided.seal === key.seal);
}

/**
 * The decision the call made for `action` on this very record of `key` (authorizeKey), if it
 * made one. A call that read the key more than once (a retry after a lost compare-and-set) holds
 * a decision per record; what it writes must follow the one made on the record it writes.
 */
export function decisionOn(
  call: CallState,
  action: string,
  key: StoredKey,
): AuthorizationRecord | undefined {
  const resource = keyArn(call.settings.identity, key.keyId);
  return call.decisions.findLast(
    (d) => d.action === action && d.resource === resource && sameRecord(d.key, key),
  );
}

/** Authorizes a call without a key resource against the account policy. */
export function authorizeAccount(call: CallState): void {
  if (!call.settings.enabled) return;
  const action = actionOf(call.operation);
  const decision = evaluate(
    call.settings.accountPolicy,
    [],
    authorizationRequest(call, action, undefined, "single"),
  );
  call.decisions.push({ action, resource: "*", decision });
  if (!decision.allowed) deny(decision);
}
