/**
 * Verifying Signature-Input / Signature against a policy (RFC 9421 §3.2, §7).
 */
import { ValidationError } from "@kms/core";
import {
  isSignatureAlgorithm,
  type MessageVerifier,
  type SignatureAlgorithm,
} from "./algorithms.ts";
import {
  type BodyChecksum,
  bodyChecksums,
  DIGEST_ALGORITHMS,
  type DigestAlgorithm,
  type DigestFieldName,
  verifyDigestField,
} from "./content-digest.ts";
import { assertAuthorities } from "./internal/authorities.ts";
import { detachedString } from "./internal/detached-string.ts";
import { type MacInput, takesText } from "./internal/hmac-sha256.ts";
import {
  fieldDictionary,
  type HttpMessage,
  isRequestMessage,
  type ReadFields,
  type RequestMessage,
  readFields,
} from "./message.ts";
import { MemoryNonceStore, type NonceStore } from "./nonce-store.ts";
import {
  assertQueryParameterLimit,
  type ComponentSpec,
  resolveComponent,
  type SignatureBaseOptions,
  type SignatureParameters,
  type SourceFields,
  signatureBase,
} from "./signature-base.ts";
import {
  type Dictionary,
  type InnerList,
  isInnerList,
  serializeItem,
  serializeParameters,
} from "./structured-fields.ts";

/** Longer nonces are refused (`nonce`): random nonces need a few dozen characters. */
export const MAX_NONCE_LENGTH = 256;

/** Every check a verification can fail at (for metrics, dashboards and tests). */
export const VERIFICATION_CHECKS = [
  "signature-missing",
  "signature-malformed",
  "label",
  "tag",
  "algorithm",
  "components",
  "created",
  "expires",
  "max-age",
  "keyid",
  "key",
  "signature",
  "content-digest",
  "repr-digest",
  "nonce",
  "replay",
] as const;

/** Which check a failed verification stopped at; stable, for problem+json bodies and metrics. */
export type VerificationCheck = (typeof VERIFICATION_CHECKS)[number];

export type VerificationResult =
  | {
      readonly ok: true;
      readonly label: string;
      readonly keyId: string;
      readonly algorithm: SignatureAlgorithm;
      readonly params: SignatureParameters;
      /** The covered component identifiers, serialized (e.g. `"@query-param";name="a"`). */
      readonly covered: readonly string[];
    }
  | {
      readonly ok: false;
      readonly check: VerificationCheck;
      /** Names the failed rule; never contains key material or header values. */
      readonly detail: string;
      readonly label?: string;
    };

/**
 * Whether a signature's covered identifiers (`VerificationResult.covered`) bind the whole value of
 * the message's own header field `name`: plain, `;sf` or `;bs`. A `;key` member is part of the
 * value only, a `;tr` trailer is not the header, and `;req` names another message's field. For
 * a header the application acts on, such as a tenant id: a signature that leaves it out vouches
 * for the message, not for a value anyone on the way could change.
 */
export function coversField(covered: readonly string[], name: string): boolean {
  const id = `"${name.toLowerCase()}"`;
  return covered.some((item) => item === id || item === `${id};sf` || item === `${id};bs`);
}

export interface KeyLookupContext {
  readonly label: string;
  readonly params: SignatureParameters;
  readonly message: HttpMessage;
}

export interface VerificationPolicy extends SignatureBaseOptions {
  /** Resolves the `keyid` to a verifier; undefined or null means unknown key (check `key`). */
  readonly keyLookup: (
    keyId: string,
    context: KeyLookupContext,
  ) => MessageVerifier | null | undefined | Promise<MessageVerifier | null | undefined>;
  /**
   * Components every accepted signature must cover (e.g. `@method`, `content-digest`). Default:
   * for a request `@method`, its target (`@target-uri`, or `@authority` with `@path` and
   * `@query`, or `@authority` with `@request-target`) and, when it has content, `content-digest`;
   * for a response `@status` and, when it has content, `content-digest`. A list replaces the
   * default; `[]` accepts a signature whatever it covers, even nothing.
   */
  readonly requiredComponents?: readonly ComponentSpec[];
  /**
   * The authorities (`host[:port]`) this server answers to, e.g.
   * `["api.example.com", "api.example.com:8443"]`. A request's authority is whatever its client
   * names (the Host field, HTTP/2's `:authority`, a forwarded host the framework trusts), so
   * without this list a covered `@authority` or `@target-uri` proves nothing about the receiving
   * server: a signature made for another service that shares the key and has the same path
   * verifies here when the client names that service. With it, a signature covering
   * `@authority`, `@target-uri` (or an absolute-form `@request-target`) of an authority not
   * listed fails as `components`. An entry without a port stands for the scheme's default
   * port; hosts compare case-insensitively. Only requests are checked (not the `;req`
   * components of a response, whose request the verifier sent itself). Default: not checked.
   */
  readonly authorities?: readonly string[];
  /** Only this label is considered; default any label on the message. */
  readonly label?: string;
  /**
   * Without `label`, a message carrying more signatures than this fails (`signature-malformed`)
   * before any key lookup: each one tried costs a lookup and a verification, with a KMS verifier
   * a KMS call, and a sender needs few. Default 8.
   */
  readonly maxSignatures?: number;
  /** Accepted algorithms; default every supported one. */
  readonly algorithms?: readonly SignatureAlgorithm[];
  /** Reject signatures whose `created` is older than this; default 300 s. */
  readonly maxAgeSeconds?: number;
  /** Tolerated clock difference for `created` / `expires`; default 30 s. */
  readonly clockSkewSeconds?: number;
  /** Require the `created` parameter; default true. */
  readonly requireCreated?: boolean;
  /** Require the `expires` parameter; default false. */
  readonly requireExpires?: boolean;
  /** Require this `tag` value (application profile). */
  readonly tag?: string;
  /**
   * Replay protection: nonces are remembered here, per `keyid` (not per label, which is not
   * signed). The store is the replay domain: see `NonceStore`. Default: a `MemoryNonceStore`
   * belonging to this policy object (one process; build the policy once, not per message).
   * `false` remembers no nonce, so a signed message can be replayed until it expires.
   */
  readonly nonceStore?: NonceStore | false;
  /**
   * Require a `nonce` parameter; default true when `nonceStore` is set to a store, false with
   * the default store (a signature without a nonce is then not protected against replay).
   */
  readonly requireNonce?: boolean;
  /**
   * Content-Digest: "required" makes a covered, matching digest mandatory; "if-present"
   * (default) checks one when the signature covers it. The raw body must be supplied, except
   * for a response without content by definition (one answering HEAD, or a 1xx, 204 or 304 whose
   * `@status` the signature covers): its content is empty, and a covered Content-Digest must be
   * the digest of empty content. "required" does not ask such a response for a Content-Digest
   * unless it was given a non-empty body.
   */
  readonly contentDigest?: "required" | "if-present";
  /**
   * Repr-Digest: "required" makes a covered Repr-Digest mandatory; "if-present" (default)
   * checks one when the signature covers it. Either way it is checked against the raw body only
   * when the message carries the whole representation (not a 206, a Content-Range, a response to
   * HEAD, a 1xx, 204 or 304): otherwise it describes data the message does not carry.
   */
  readonly reprDigest?: "required" | "if-present";
  /**
   * Digest algorithms accepted in Content-Digest and Repr-Digest; default sha-256 and sha-512.
   * A signature covering one member (`;key`) in another algorithm fails the field's check.
   */
  readonly digestAlgorithms?: readonly DigestAlgorithm[];
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
}

type Failure = Extract<VerificationResult, { ok: false }>;

const fail = (check: VerificationCheck, detail: string, label?: string): Failure =>
  label === undefined ? { ok: false, check, detail } : { ok: false, check, detail, label };

const isPromise = <T>(value: T | Promise<T>): value is Promise<T> =>
  typeof (value as { then?: unknown } | undefined)?.then === "function";

type CoveredItem = InnerList["items"][number];

/**
 * Whether `id` names this message's own `field`, in any form (plain, `;sf`, `;key`, `;bs`). A
 * `;req` form names the request's field, a claim about the request's body, which is checked
 * when the request is verified, not against this response's body.
 */
function coversOwnItem(id: CoveredItem, field: string): boolean {
  return id.value === field && id.params.get("req") !== true;
}

/** Whether the signature covers this message's own `field` (see `coversOwnItem`). */
function coversOwnField(list: InnerList, field: string): boolean {
  return list.items.some((id) => coversOwnItem(id, field));
}

/**
 * Why a `;key` member of the message's own `field` that the signature covers cannot be checked
 * against the body, or undefined when every one can. The field check compares only the members
 * in an accepted algorithm: a covered member in another one (`;key="sha-384"`) would go
 * unchecked while an uncovered member the sender added (`sha-512=` of another body) passed, so
 * the body could be swapped under the signature. What the signature covers must be what is
 * verified. An accepted member is always checked: the field check compares every one, and a
 * covered key is present, or the signature base could not have been derived.
 */
function uncheckableKey(
  list: InnerList,
  field: DigestFieldName,
  accept: readonly DigestAlgorithm[] = DIGEST_ALGORITHMS,
): string | undefined {
  const name = field === "Content-Digest" ? "content-digest" : "repr-digest";
  for (const id of list.items) {
    if (!coversOwnItem(id, name)) continue;
    const key = id.params.get("key");
    if (typeof key === "string" && !(accept as readonly string[]).includes(key)) {
      return `${field} ${JSON.stringify(key)} is covered by the signature (;key) but is not an accepted algorithm (${accept.join(", ")}), so the body cannot be checked against it`;
    }
  }
  return undefined;
}

/** The serialized identifiers of the inner list, or undefined when one is not a string. */
function coveredIdentifiers(list: InnerList): string[] | undefined {
  const items = list.items;
  const ids = new Array<string>(items.length);
  for (let i = 0; i < items.length; i++) {
    const id = items[i] as CoveredItem;
    if (typeof id.value !== "string") return undefined;
    ids[i] = serializeItem(id);
  }
  return ids;
}

function readParams(list: InnerList): SignatureParameters | string {
  const out: Record<string, string | number> = {};
  for (const [key, value] of list.params) {
    if (key === "created" || key === "expires") {
      if (typeof value !== "number") return `${key} must be an integer`;
      out[key] = value;
    } else if (key === "nonce" || key === "alg" || key === "keyid" || key === "tag") {
      if (typeof value !== "string") return `${key} must be a string`;
      out[key] = value;
    }
    // Unknown parameters are covered by the signature through @signature-params; ignore them.
  }
  return out as SignatureParameters;
}

/**
 * Verifies the message's signatures against `policy`. Resolves to ok with the accepted
 * signature, or to a failure naming the check that failed (for the first candidate label when
 * none passes). `request` is the request a response answers (for `;req` components).
 * @throws errors thrown by `keyLookup`, the verifier or the nonce store (e.g. KMS outages), so
 * an infrastructure fault is never reported as a bad signature; ValidationException when
 * `maxAgeSeconds` or `clockSkewSeconds` is not a finite number of seconds, 0 or more,
 * `authorities` is not a non-empty list of `host[:port]`, or `queryParameterLimit` is not a
 * positive integer or `Infinity`.
 */
export async function verifyMessage(
  message: HttpMessage,
  policy: VerificationPolicy,
  request?: RequestMessage,
): Promise<VerificationResult> {
  return verifyMessageEagerly(message, policy, request);
}

/**
 * `verifyMessage` without a promise when none is needed: the result is returned directly when
 * the key lookup, the verifier (`verifySync`) and the absence of a nonce to record let the whole
 * check run synchronously (local secrets and public keys), and as a promise otherwise. For
 * middleware, where a deferred response costs measurable throughput.
 * @throws (synchronously, or as a rejection) what `verifyMessage` rejects with.
 */
export function verifyMessageEagerly(
  message: HttpMessage,
  policy: VerificationPolicy,
  request?: RequestMessage,
): VerificationResult | Promise<VerificationResult> {
  assertPolicy(policy);
  // Read as they are now, and held until the end (an async key lookup or verifier included).
  // The request too: a client that reuses one headers object for its next request must bind a
  // response to that request, not to the one it verified a response for before.
  const read: SourceFields = {
    message: readFields(message.headers),
    request:
      request === undefined || isRequestMessage(message) ? undefined : readFields(request.headers),
  };
  let inputs: Dictionary | undefined;
  let signatures: Dictionary | undefined;
  try {
    inputs = fieldDictionary(read.message, "signature-input");
    signatures = fieldDictionary(read.message, "signature");
  } catch (error) {
    return fail(
      "signature-malformed",
      `Signature-Input or Signature is not a dictionary with unique labels and parameters: ${(error as Error).message}`,
    );
  }
  if (inputs === undefined || signatures === undefined || inputs.size === 0) {
    return fail("signature-missing", "the message has no Signature-Input and Signature fields");
  }
  if (policy.label !== undefined) {
    return verifyLabel(policy.label, inputs, signatures, message, policy, request, read);
  }
  if (inputs.size === 1) {
    const [label] = inputs.keys();
    return verifyLabel(label as string, inputs, signatures, message, policy, request, read);
  }
  const most = policy.maxSignatures ?? DEFAULT_MAX_SIGNATURES;
  if (!Number.isSafeInteger(most) || most < 1) {
    throw new ValidationError(`"maxSignatures" must be a positive integer, got ${String(most)}`);
  }
  if (inputs.size > most) {
    return fail(
      "signature-malformed",
      `the message carries ${inputs.size} signatures; at most ${most} are tried without policy.label`,
    );
  }
  return verifyEachLabel(inputs, signatures, message, policy, request, read);
}

const DEFAULT_MAX_SIGNATURES = 8;

/**
 * Checked before any message is read, so a misconfigured policy fails every request alike. A NaN
 * (`Number(process.env.MAX_AGE)` of an unset variable) compares false with every number: no
 * signature would be too old, from the future or expired, and each nonce would be remembered
 * for NaN milliseconds — not at all, so every signed message could be replayed for ever.
 * An `authorities` list that is empty or has an entry that is not `host[:port]` would refuse
 * every request as forged, or (an entry with a path) never match what was meant. A bad
 * `queryParameterLimit` would otherwise fail only the signatures covering a `@query-param`, as
 * `components`, as if the requests were at fault.
 * @throws ValidationException naming the option.
 */
function assertPolicy(policy: VerificationPolicy): void {
  // Plain calls, no list: this runs on every verification.
  assertSeconds("maxAgeSeconds", policy.maxAgeSeconds);
  assertSeconds("clockSkewSeconds", policy.clockSkewSeconds);
  assertAuthorities(policy.authorities);
  assertQueryParameterLimit(policy.queryParameterLimit);
}

function assertSeconds(name: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    const got = typeof value === "number" ? String(value) : typeof value;
    throw new ValidationError(
      `"${name}" must be a finite number of seconds, 0 or more, got ${got}`,
    );
  }
}

async function verifyEachLabel(
  inputs: Dictionary,
  signatures: Dictionary,
  message: HttpMessage,
  policy: VerificationPolicy,
  request: RequestMessage | undefined,
  read: SourceFields,
): Promise<VerificationResult> {
  let first: Failure | undefined;
  for (const label of inputs.keys()) {
    const result = await verifyLabel(label, inputs, signatures, message, policy, request, read);
    if (result.ok) return result;
    first ??= result;
  }
  return first as Failure;
}

/** A signature that passed the checks on its parameters, waiting for its key. */
interface Candidate {
  readonly label: string;
  readonly input: InnerList;
  readonly signature: Uint8Array;
  readonly params: SignatureParameters & { readonly keyid: string };
  readonly covered: readonly string[];
  readonly digestChecked: boolean;
  readonly reprDigestChecked: boolean;
  /** The message is a response without content by definition; see `hasNoContentByDefinition`. */
  readonly noContent: boolean;
  readonly message: HttpMessage;
  readonly request: RequestMessage | undefined;
  /** The fields of both, as this verification read them at its start. */
  readonly read: SourceFields;
  readonly policy: VerificationPolicy;
  readonly now: number;
  readonly skew: number;
  readonly maxAge: number;
}

function verifyLabel(
  label: string,
  inputs: Dictionary,
  signatures: Dictionary,
  message: HttpMessage,
  policy: VerificationPolicy,
  request: RequestMessage | undefined,
  read: SourceFields,
): VerificationResult | Promise<VerificationResult> {
  const input = inputs.get(label);
  const sigMember = signatures.get(label);
  if (input === undefined) return fail("label", `no signature labelled "${label}"`, label);
  if (sigMember === undefined)
    return fail("signature-malformed", "Signature has no value for this label", label);
  const covered = isInnerList(input) ? coveredIdentifiers(input) : undefined;
  if (covered === undefined || !isInnerList(input)) {
    return fail(
      "signature-malformed",
      "Signature-Input member must be an inner list of strings",
      label,
    );
  }
  if (isInnerList(sigMember) || !(sigMember.value instanceof Uint8Array)) {
    return fail("signature-malformed", "Signature member must be a byte sequence", label);
  }
  const params = readParams(input);
  if (typeof params === "string") return fail("signature-malformed", params, label);

  if (policy.tag !== undefined && params.tag !== policy.tag) {
    return fail("tag", `tag must be "${policy.tag}"`, label);
  }
  const allowed = policy.algorithms;
  if (params.alg !== undefined) {
    if (!isSignatureAlgorithm(params.alg))
      return fail("algorithm", "alg is not a supported algorithm", label);
    if (allowed !== undefined && !allowed.includes(params.alg)) {
      return fail("algorithm", `alg ${params.alg} is not allowed here`, label);
    }
  }

  const noContent = hasNoContentByDefinition(input, message, request);
  if (policy.requiredComponents === undefined) {
    const missing = missingDefaultCoverage(covered, message, read.message, noContent);
    if (missing !== undefined) return fail("components", missing, label);
  } else {
    for (const spec of policy.requiredComponents) {
      const id = resolveComponent(spec).identifier;
      if (!covered.includes(id)) return fail("components", `signature must cover ${id}`, label);
    }
  }
  // A digest of content that HTTP framing rules out vouches for nothing (our own signer omits it
  // there); a body supplied anyway is still held to "required".
  const digestRequired =
    policy.contentDigest === "required" &&
    !(noContent && (message.body === undefined || message.body.length === 0));
  const digestCovered = covered.includes('"content-digest"');
  if (digestRequired && !digestCovered) {
    return fail("components", 'signature must cover "content-digest"', label);
  }
  // Covered in another form (`;sf`, `;key="sha-256"`), the field is still a claim about the
  // body that the signer vouched for: check it, or the body could be swapped under it.
  const digestClaimed = coversOwnField(input, "content-digest");
  const reprRequired = policy.reprDigest === "required";
  if (reprRequired && !covered.includes('"repr-digest"')) {
    return fail("components", 'signature must cover "repr-digest"', label);
  }

  const now = Math.floor((policy.now ?? Date.now)() / 1000);
  const skew = policy.clockSkewSeconds ?? 30;
  const maxAge = policy.maxAgeSeconds ?? 300;
  if (params.created === undefined) {
    if (policy.requireCreated ?? true)
      return fail("created", "created parameter is required", label);
  } else {
    if (params.created > now + skew) return fail("created", "created is in the future", label);
    if (now - params.created > maxAge + skew) {
      return fail("max-age", `signature is older than ${maxAge} s`, label);
    }
  }
  if (params.expires === undefined) {
    if (policy.requireExpires === true)
      return fail("expires", "expires parameter is required", label);
  } else if (now > params.expires + skew) {
    return fail("expires", "signature has expired", label);
  }
  if (params.nonce !== undefined && params.nonce.length > MAX_NONCE_LENGTH) {
    // Every nonce is remembered for the signature's lifetime: a signer sending 16 KB nonces
    // would make the store hold gigabytes before its entry bound is reached.
    return fail("nonce", `nonce is longer than ${MAX_NONCE_LENGTH} characters`, label);
  }
  const requireNonce =
    policy.requireNonce ?? (policy.nonceStore !== undefined && policy.nonceStore !== false);
  if (requireNonce && params.nonce === undefined) {
    return fail("nonce", "nonce parameter is required", label);
  }
  if (
    params.nonce !== undefined &&
    policy.nonceStore !== false &&
    params.created === undefined &&
    params.expires === undefined
  ) {
    // Such a signature is accepted forever, and a nonce can be remembered only for a while:
    // once forgotten, the message could be replayed.
    return fail("created", "created or expires is required for replay protection", label);
  }

  if (params.keyid === undefined) return fail("keyid", "keyid parameter is required", label);
  const candidate: Candidate = {
    label,
    input,
    signature: sigMember.value,
    params: params as Candidate["params"],
    covered,
    digestChecked: digestClaimed || digestRequired,
    reprDigestChecked: reprRequired || coversOwnField(input, "repr-digest"),
    noContent,
    message,
    request,
    read,
    policy,
    now,
    skew,
    maxAge,
  };
  const found = policy.keyLookup(params.keyid, { label, params, message });
  // A synchronous lookup (the common in-memory key map) costs no extra microtask.
  return isPromise(found)
    ? found.then((verifier) => checkSignature(candidate, verifier))
    : checkSignature(candidate, found);
}

function checkSignature(
  candidate: Candidate,
  verifier: MessageVerifier | null | undefined,
): VerificationResult | Promise<VerificationResult> {
  const { label, input, covered, params, message, request, policy } = candidate;
  const allowed = policy.algorithms;
  // A lookup backed by a map or a database answers null as often as undefined for "no such key".
  if (verifier === undefined || verifier === null) {
    return fail("key", "keyid is not a known key", label);
  }
  if (params.alg !== undefined && params.alg !== verifier.algorithm) {
    return fail("algorithm", "alg does not match the key's algorithm", label);
  }
  if (allowed !== undefined && !allowed.includes(verifier.algorithm)) {
    return fail(
      "algorithm",
      `the key's algorithm ${verifier.algorithm} is not allowed here`,
      label,
    );
  }

  let base: string;
  try {
    // The identifiers are serialized above already; the inner list is re-serialized (not
    // copied from the field) so the base is the canonical form the signer signed.
    base = signatureBase(
      input.items,
      covered,
      `(${covered.join(" ")})${serializeParameters(input.params)}`,
      { message, request: isRequestMessage(message) ? undefined : request },
      policy,
      candidate.read,
    );
  } catch (error) {
    if (error instanceof ValidationError) return fail("components", error.message, label);
    throw error;
  }
  if (verifier.verifySync !== undefined) {
    // Called on the verifier: a verifier of the caller's own may be a class that reads `this`.
    const valid = takesText(verifier.verifySync)
      ? (verifier.verifySync as (base: MacInput, signature: Uint8Array) => boolean)(
          base,
          candidate.signature,
        )
      : verifier.verifySync(Buffer.from(base, "utf8"), candidate.signature);
    return afterSignature(candidate, verifier, valid);
  }
  return verifier
    .verify(Buffer.from(base, "utf8"), candidate.signature)
    .then((valid) => afterSignature(candidate, verifier, valid));
}

function afterSignature(
  candidate: Candidate,
  verifier: MessageVerifier,
  valid: boolean,
): VerificationResult | Promise<VerificationResult> {
  const { label, params, message, policy, now, skew, maxAge } = candidate;
  if (!valid) return fail("signature", "signature does not match the signature base", label);

  // The content is empty in a response without content by definition (RFC 9530 Appendix B.2),
  // so no raw body is needed to know it. Such a response's Repr-Digest is never checked.
  const content = message.body ?? (candidate.noContent ? NO_CONTENT : undefined);
  // Shared by both checks, so a body under Content-Digest and Repr-Digest is hashed once per
  // algorithm.
  const checksums =
    content !== undefined && (candidate.digestChecked || candidate.reprDigestChecked)
      ? bodyChecksums(content)
      : undefined;
  if (candidate.digestChecked) {
    if (checksums === undefined) {
      return fail("content-digest", "the raw body is needed to check Content-Digest", label);
    }
    const unchecked = uncheckableKey(candidate.input, "Content-Digest", policy.digestAlgorithms);
    if (unchecked !== undefined) return fail("content-digest", unchecked, label);
    const field = candidate.read.message.lines.get("content-digest");
    const digest = verifyDigestField(
      "Content-Digest",
      (field ?? []).join(", "),
      checksums,
      policy.digestAlgorithms,
    );
    if (!digest.ok) return fail("content-digest", digest.reason, label);
  }
  if (candidate.reprDigestChecked) {
    const failure = checkReprDigest(candidate, checksums);
    if (failure !== undefined) return failure;
  }

  // Nonces are recorded only for signatures that verified, so forged requests cannot burn them.
  const nonceStore = params.nonce === undefined ? undefined : nonceStoreOf(policy);
  if (nonceStore !== undefined) {
    // Kept for as long as the signature could still be accepted: until the earlier of its
    // expiry and the end of its max age (at least one exists, checked above). Both checks
    // compare whole seconds, so a signature is still accepted throughout the second
    // `acceptedUntil`: the nonce must outlive its end, not its start, or it could be replayed in
    // that last second. `now` is rounded down, so this keeps it up to a second longer still.
    const acceptedUntil = Math.min(
      params.expires === undefined ? Number.POSITIVE_INFINITY : params.expires + skew,
      params.created === undefined ? Number.POSITIVE_INFINITY : params.created + maxAge + skew,
    );
    const lifetime = acceptedUntil + 1 - now;
    // A copy: keyid and nonce are views of the whole Signature-Input field (an unsigned label
    // beside the signature can pad it to kilobytes), and a store may keep the string it is given
    // for the signature's lifetime.
    const key = detachedString(`${params.keyid}\u0000${params.nonce}`);
    return nonceStore
      .checkAndStore(key, Math.max(lifetime, 1) * 1000)
      .then((fresh) =>
        fresh ? accepted(candidate, verifier) : fail("replay", "nonce was already used", label),
      );
  }
  return accepted(candidate, verifier);
}

// One store per policy object, made when its first nonce arrives: middleware holds its policy
// for its lifetime, so each middleware is its own replay domain, as a store passed to it would be.
const defaultNonceStores = new WeakMap<VerificationPolicy, NonceStore>();

/** The store that remembers the policy's nonces: its own, the default one, or none (`false`). */
function nonceStoreOf(policy: VerificationPolicy): NonceStore | undefined {
  const configured = policy.nonceStore;
  if (configured !== undefined) return configured === false ? undefined : configured;
  let store = defaultNonceStores.get(policy);
  if (store === undefined) {
    // On the policy's clock, so nonces expire when the policy stops accepting their signatures.
    store = new MemoryNonceStore(policy.now === undefined ? {} : { now: policy.now });
    defaultNonceStores.set(policy, store);
  }
  return store;
}

/**
 * Whether the message carries content: its raw body when supplied, otherwise what its framing
 * announces (a Content-Length other than 0, a Transfer-Encoding), except in a response without
 * content by definition, whose Content-Length describes what a GET would get.
 */
function hasContent(message: HttpMessage, fields: ReadFields, noContent: boolean): boolean {
  if (message.body !== undefined) return message.body.length > 0;
  if (noContent) return false;
  if (fields.lines.has("transfer-encoding")) return true;
  const length = fields.lines.get("content-length");
  return length?.some((value) => value.trim() !== "0") === true;
}

const TARGET_COVERAGE = '"@target-uri" (or "@authority" with "@path" and "@query")';

/**
 * What the default policy misses in `covered`, or undefined. A signature that covers less can be
 * moved to another method, target or body (RFC 9421 §7.2.1): one over `()` made for
 * `GET /harmless` verifies on `DELETE /accounts/7`. `@authority` with `@path` and `@query` is
 * the target as RFC 9421 Appendix B.2.3 covers it, without `@scheme`, which an application
 * answering on one scheme does not need signed.
 */
function missingDefaultCoverage(
  covered: readonly string[],
  message: HttpMessage,
  fields: ReadFields,
  noContent: boolean,
): string | undefined {
  if (isRequestMessage(message)) {
    if (!covered.includes('"@method"')) return 'signature must cover "@method"';
    const target =
      covered.includes('"@target-uri"') ||
      (covered.includes('"@authority"') &&
        (covered.includes('"@request-target"') ||
          (covered.includes('"@path"') && covered.includes('"@query"'))));
    if (!target) return `signature must cover ${TARGET_COVERAGE}`;
  } else if (!covered.includes('"@status"')) {
    return 'signature must cover "@status"';
  }
  if (hasContent(message, fields, noContent) && !covered.includes('"content-digest"')) {
    return 'signature must cover "content-digest": the message has content';
  }
  return undefined;
}

/** RFC 9110 §6.4.1: these responses never carry content, whatever representation they describe. */
const hasNoContent = (status: number): boolean => status < 200 || status === 204 || status === 304;

/** A status whose body is not the whole representation, when the signer vouches for it. */
const isPartialStatus = (status: number): boolean => status === 206 || hasNoContent(status);

/** The content of a response without content by definition. */
const NO_CONTENT = new Uint8Array(0);

/**
 * Whether the message is a response that carries no content by definition: one to HEAD, or a
 * 1xx, 204 or 304. The status counts only when the signature covers `@status`, or an
 * intermediary could relabel a 200 as 204 to have its body go unchecked. The request a response
 * answers is the caller's own, so its method is taken as given.
 */
function hasNoContentByDefinition(
  input: InnerList,
  message: HttpMessage,
  request: RequestMessage | undefined,
): boolean {
  if (isRequestMessage(message)) return false;
  if (request?.method === "HEAD") return true;
  return coversOwnField(input, "@status") && hasNoContent(message.status);
}

/**
 * Whether the body is known not to be the whole selected representation: a Content-Range, a
 * response without content by definition, or a 206. Status and Content-Range count only when
 * the signature covers them, or an intermediary could turn a 200 into a 206, or add a
 * Content-Range, to have the check skipped.
 */
function isPartial({ input, message, read, noContent }: Candidate): boolean {
  if (coversOwnField(input, "content-range") && read.message.lines.has("content-range")) {
    return true;
  }
  if (isRequestMessage(message)) return false;
  return noContent || (coversOwnField(input, "@status") && message.status === 206);
}

/**
 * Repr-Digest is over the selected representation data (content codings included) and
 * Content-Digest over the content (RFC 9530 §2, §3). When the message carries the whole
 * representation the two are the same bytes, so a covered Repr-Digest must match the body as a
 * Content-Digest would; a partial or bodiless message says nothing the body can confirm.
 */
function checkReprDigest(
  candidate: Candidate,
  checksums: BodyChecksum | undefined,
): Failure | undefined {
  const { label, message, policy } = candidate;
  if (isPartial(candidate)) return undefined;
  if (checksums === undefined) {
    return fail("repr-digest", "the raw body is needed to check Repr-Digest", label);
  }
  const unchecked = uncheckableKey(candidate.input, "Repr-Digest", policy.digestAlgorithms);
  if (unchecked !== undefined) return fail("repr-digest", unchecked, label);
  const field = candidate.read.message.lines.get("repr-digest");
  const digest = verifyDigestField(
    "Repr-Digest",
    (field ?? []).join(", "),
    checksums,
    policy.digestAlgorithms,
  );
  if (digest.ok) return undefined;
  const unsignedPartial =
    candidate.read.message.lines.has("content-range") ||
    (!isRequestMessage(message) && isPartialStatus(message.status));
  return fail(
    "repr-digest",
    unsignedPartial
      ? `${digest.reason} (a partial status or Content-Range exempts it only when the signature covers "@status" or "content-range")`
      : digest.reason,
    label,
  );
}

function accepted(candidate: Candidate, verifier: MessageVerifier): VerificationResult {
  const { label, params, covered } = candidate;
  return { ok: true, label, keyId: params.keyid, algorithm: verifier.algorithm, params, covered };
}
