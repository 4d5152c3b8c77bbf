import { keyArn } from "../arn.ts";
import { AccessDeniedError, MalformedPolicyDocumentError, ValidationError } from "../errors.ts";
import { assertBoolean, assertObject } from "../internal/assert.ts";
import { type KmsContext, updateKey } from "../internal/key-access.ts";
import { pageLimit, pageMarker } from "../internal/pagination.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import { authorizationRequest, type CallState } from "../policy/authorizer.ts";
import { evaluate } from "../policy/evaluate.ts";
import { defaultKeyPolicy, type PolicyDocument, parsePolicy } from "../policy/policy-document.ts";
import type { CreateKeyRequest, KeyIdRequest, Page, PageRequest } from "../types.ts";
import { directKeyId, loadDirectKey } from "./key-arguments.ts";

/** AWS keys have exactly one policy, named "default". */
export const KEY_POLICY_NAME = "default";

export interface PutKeyPolicyRequest extends KeyIdRequest {
  /** Only "default"; optional as in current AWS. */
  readonly policyName?: string;
  readonly policy: string;
  readonly bypassPolicyLockoutSafetyCheck?: boolean;
}
export interface GetKeyPolicyRequest extends KeyIdRequest {
  readonly policyName?: string;
}
export interface GetKeyPolicyResponse {
  readonly policy: string;
  readonly policyName: string;
}
export interface ListKeyPoliciesRequest extends KeyIdRequest, PageRequest {}
export interface ListKeyPoliciesResponse extends Page {
  readonly policyNames: readonly string[];
}

function assertPolicyName(value: unknown): void {
  if (value !== undefined && value !== KEY_POLICY_NAME) {
    throw new ValidationError(`"policyName" must be "${KEY_POLICY_NAME}", got ${String(value)}`);
  }
}

/**
 * The lockout safety check: refuses a policy under which the caller could not change the
 * policy again (AWS's rule), unless the caller explicitly bypasses it. Judged on `key`, the key
 * the policy will govern (for CreateKey, the record about to be stored), as the caller's next
 * PutKeyPolicy would be: a statement scoped by Resource to key ARNs, or by aws:ResourceTag,
 * must count, or a Deny of PutKeyPolicy on `arn:…:key/*` would pass and lock the caller out.
 * @throws MalformedPolicyDocumentException.
 */
export function checkLockout(
  call: CallState | undefined,
  policy: PolicyDocument,
  key: StoredKey,
  bypass: boolean,
): void {
  if (bypass || call === undefined || !call.settings.enabled) return;
  const decision = evaluate(
    policy,
    [],
    authorizationRequest(call, "kms:PutKeyPolicy", key, "single"),
  );
  if (!decision.allowed) {
    throw new MalformedPolicyDocumentError(
      `the new key policy will not allow you (${call.principal}) to update the key policy in the future; set "bypassPolicyLockoutSafetyCheck" to true to set it anyway`,
    );
  }
}

/** CreateKey's policy as validateCreateKeyPolicy read it, for createKey's lockout check. */
export interface CreateKeyPolicy {
  /** The text the key stores: the request's `policy`, read once. */
  readonly text: string;
  readonly document: PolicyDocument;
  readonly bypass: boolean;
}

/**
 * Validates CreateKey's policy document (malformed documents are refused before anything else)
 * and returns it as read: the request's `policy` is read once, so the key stores that same text
 * whatever a getter would answer the second time. The lockout check waits for the key it will
 * govern (createKey runs it): its ARN and tags are what a later PutKeyPolicy is judged on.
 */
export function validateCreateKeyPolicy(request: CreateKeyRequest): CreateKeyPolicy | undefined {
  if (typeof request !== "object" || request === null) return undefined;
  const text: unknown = request.policy;
  if (text === undefined) return undefined;
  const bypass =
    request.bypassPolicyLockoutSafetyCheck === undefined
      ? false
      : assertBoolean("bypassPolicyLockoutSafetyCheck", request.bypassPolicyLockoutSafetyCheck);
  // parsePolicy refuses anything but a string.
  return { text: text as string, document: parsePolicy(text), bypass };
}

export async function putKeyPolicy(ctx: KmsContext, request: PutKeyPolicyRequest): Promise<void> {
  assertObject("request", request);
  assertPolicyName(request.policyName);
  const bypass =
    request.bypassPolicyLockoutSafetyCheck === undefined
      ? false
      : assertBoolean("bypassPolicyLockoutSafetyCheck", request.bypassPolicyLockoutSafetyCheck);
  // Read once: the text stored is the text checked, whatever a getter answers the second time.
  const text: unknown = request.policy;
  const document = parsePolicy(text);
  const keyId = directKeyId(ctx, "putKeyPolicy", "keyId", request.keyId);
  await updateKey(ctx, keyId, "putKeyPolicy", (key) => {
    checkLockout(ctx.call, document, key, bypass);
    return { policy: text as string };
  });
}

export async function getKeyPolicy(
  ctx: KmsContext,
  request: GetKeyPolicyRequest,
): Promise<GetKeyPolicyResponse> {
  assertObject("request", request);
  assertPolicyName(request.policyName);
  const key = await loadDirectKey(ctx, "getKeyPolicy", "keyId", request.keyId);
  return {
    policy: key.policy ?? defaultKeyPolicy(ctx.identity.partition, ctx.identity.account),
    policyName: KEY_POLICY_NAME,
  };
}

export async function listKeyPolicies(
  ctx: KmsContext,
  request: ListKeyPoliciesRequest,
): Promise<ListKeyPoliciesResponse> {
  assertObject("request", request);
  pageLimit(request, { max: 1000, default: 100 });
  const key = await loadDirectKey(ctx, "listKeyPolicies", "keyId", request.keyId);
  // One policy fits every page, so no marker was ever issued for this listing.
  pageMarker(request, `listKeyPolicies ${key.keyId}`);
  return { policyNames: [KEY_POLICY_NAME], truncated: false };
}

export function accessDenied(ctx: KmsContext, action: string, key: StoredKey, why: string): never {
  throw new AccessDeniedError(
    notAuthorized(ctx.call?.principal ?? "caller", action, keyArn(ctx.identity, key.keyId), why),
  );
}

/** The message of an AccessDeniedError that an operation's own rule (not a policy) decided. */
export function notAuthorized(principal: string, action: string, arn: string, why: string): string {
  return `${principal} is not authorized to perform ${action} on ${arn}: ${why}`;
}
