import { DEFAULT_IDENTITY, type KmsIdentity, keyArn } from "./arn.ts";
import type { AuditHead } from "./audit/audit-chain.ts";
import type { AuditEvent, AuditReadOptions, AuditSink } from "./audit/audit-sink.ts";
import {
  type AuditTrailVerification,
  type AuditTrailVerifyOptions,
  verifyAuditTrail,
} from "./audit/audit-trail-verification.ts";
import type { KeyLastUsage } from "./audit/auditor.ts";
import { type Clock, checkedClock, systemClock } from "./clock.ts";
import { isKmsError, KmsInternalError, RootKeyError, ValidationError } from "./errors.ts";
import { RootKeySource, TransientRootKeys } from "./hsm/root-key.ts";
import { SoftwareHsm } from "./hsm/software-hsm.ts";
import { assertInteger, assertObject } from "./internal/assert.ts";
import {
  destroyKey,
  isDeletionDue,
  isRotationDue,
  type KmsContext,
  rotateIfDue,
} from "./internal/key-access.ts";
import type { KeyStore } from "./keystore/key-store.ts";
import { MemoryKeyStore } from "./keystore/memory-key-store.ts";
import {
  assertSealedStore,
  SealedKeyStore,
  sealUnsealedRecords,
  type UnsealedRecordsMode,
} from "./keystore/sealed-key-store.ts";
import * as aliases from "./operations/aliases.ts";
import * as asymmetric from "./operations/asymmetric.ts";
import * as dataKeyPair from "./operations/data-key-pair.ts";
import * as grants from "./operations/grants.ts";
import { directKeyId } from "./operations/key-arguments.ts";
import * as keys from "./operations/keys.ts";
import * as mac from "./operations/mac.ts";
import * as policies from "./operations/policies.ts";
import * as rotation from "./operations/rotation.ts";
import * as symmetric from "./operations/symmetric.ts";
import * as tags from "./operations/tags.ts";
import { type AuditOptions, CallGuard, type ExplainResult } from "./policy/call-guard.ts";
import { indexPrincipalTags } from "./policy/principal-tags.ts";
import { runWithRequestId } from "./request-id-scope.ts";
import type {
  AliasRequest,
  CallOptions,
  CreateKeyRequest,
  CreateKeyResponse,
  DecryptRequest,
  DecryptResponse,
  DeriveSharedSecretRequest,
  DeriveSharedSecretResponse,
  DescribeKeyRequest,
  DescribeKeyResponse,
  EnableKeyRotationRequest,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyPairRequest,
  GenerateDataKeyPairResponse,
  GenerateDataKeyPairWithoutPlaintextResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
  GenerateMacRequest,
  GenerateMacResponse,
  GenerateRandomRequest,
  GenerateRandomResponse,
  GetKeyRotationStatusResponse,
  GetPublicKeyRequest,
  GetPublicKeyResponse,
  KeyIdRequest,
  ListAliasesRequest,
  ListAliasesResponse,
  ListKeyRotationsRequest,
  ListKeyRotationsResponse,
  ListKeysResponse,
  ListResourceTagsRequest,
  ListResourceTagsResponse,
  MaintenanceReport,
  PageRequest,
  ReEncryptRequest,
  ReEncryptResponse,
  RotateKeyOnDemandResponse,
  ScheduleKeyDeletionRequest,
  ScheduleKeyDeletionResponse,
  SignRequest,
  SignResponse,
  TagResourceRequest,
  UntagResourceRequest,
  UpdateKeyDescriptionRequest,
  VerifyMacRequest,
  VerifyMacResponse,
  VerifyRequest,
  VerifyResponse,
} from "./types.ts";

export interface KmsOptions {
  /** Where keys live; default: a new MemoryKeyStore (keys die with the process). */
  readonly store?: KeyStore;
  /**
   * The root key that wraps key material at rest. Required with a durable store; with the
   * memory store the default is a fresh random key.
   */
  readonly rootKey?: RootKeySource | Uint8Array;
  /**
   * Root keys used only to unwrap material during a root-key rotation (see `rotateRootKey`):
   * the old root key once `rootKey` is the new one, or the new one on instances not yet switched.
   */
  readonly unwrapRootKeys?: readonly (RootKeySource | Uint8Array)[];
  /**
   * Time source for rotation schedules, deletion windows and audit event times; default: the
   * system clock. A reading that is not a finite number of milliseconds a `Date` can hold (NaN,
   * Infinity, a string…), or a `now()` that throws, fails the call with KMSInternalException
   * naming the clock: before the call does anything (unaudited: its event would have no time)
   * when it is the call's first reading, else as the call's audited failure.
   */
  readonly clock?: Clock;
  /** Region used in ARNs; default `local`. */
  readonly region?: string;
  /** 12-digit account id used in ARNs; default `000000000000`. */
  readonly account?: string;
  /** ARN partition; default `aws`, so AWS tooling parses our ARNs. */
  readonly partition?: string;
  /**
   * Principal calls run as unless CallOptions.principal names another; default the account
   * root `arn:<partition>:iam::<account>:root`. See docs/POLICY.md for the format.
   */
  readonly principal?: string;
  /**
   * Tags of principals, for aws:PrincipalTag/<key> conditions: principal → tag key → value. Read
   * once, at creation: editing the object afterwards does not change what the Kms authorizes.
   */
  readonly principalTags?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /**
   * Policy (key policy grammar, resource `*`) for calls without a key: createKey, listKeys,
   * listAliases, generateRandom, listRetirableGrants. Default: every principal of the account.
   */
  readonly accountPolicy?: string;
  /** Default true. False skips policy evaluation entirely (for benchmarks); calls are still audited. */
  readonly authorization?: boolean;
  /**
   * Where the audit trail goes: a sink, or `{ sink, failClosed, onError }`. Default: the newest
   * 10 000 events in memory. Fail-closed (default) fails any call whose event was not written.
   * `false` keeps no trail at all (no event is built; getKeyLastUsage then knows nothing): the
   * hash-chained event costs about as much as the AES-GCM call of a small encrypt.
   */
  readonly audit?: AuditSink | AuditOptions | false;
  /**
   * Records without a record seal (docs/FORMAT.md §4.1), as releases before seals wrote them.
   * `"refuse"` (default): opening fails with a RootKeyError when the first page of keys or
   * aliases holds one, and any such record read later is refused like a tampered one.
   * `"seal"`: every unsealed key and alias is sealed once while opening, trusting it as it is
   * then (one `SealRecord` audit event each). Set it for one start after upgrading, then remove
   * it. Records that have a seal are never resealed: a failing one stays refused.
   */
  readonly unsealedRecords?: UnsealedRecordsMode;
  /**
   * Most grants one key may hold: 1–50 000 (AWS's quota), default 1 000. Grants are stored with
   * their key, so every write of a key (a grant created or retired, a tag, a rotation) costs
   * time in proportion to its grants; createGrant past the limit fails with
   * LimitExceededException. Grants already stored beyond it are kept.
   */
  readonly maxGrantsPerKey?: number;
}

/**
 * The KMS facade: every operation validates its request, checks the key's state, performs the
 * cryptographic work in the HSM layer, and raises only KmsError subclasses.
 *
 * A key is named as AWS KMS lets each operation name it. The cryptographic operations,
 * describeKey and getPublicKey take a key id, key ARN, alias name or alias ARN. Every other
 * operation that names a key (its state, description, rotation, policy, tags, grants, last
 * usage) takes a key id or key ARN only and answers an alias with NotFoundException; the target
 * of createAlias and updateAlias and listAliases' `keyId` answer one with ValidationException.
 */
export class Kms {
  readonly #ctx: KmsContext;
  readonly #guard: CallGuard;
  /** Set by close(): the closing, and from then on the refusal of every call. */
  #closing: Promise<void> | undefined;
  /** Calls admitted and not yet settled, their audit events included. */
  #inFlight = 0;
  /** Set while close() waits for the calls in flight: called when the last one settles. */
  #drained: (() => void) | undefined;

  /** Use `createKms`; the constructor expects an opened HSM. */
  constructor(ctx: KmsContext, guard: CallGuard = new CallGuard(ctx.identity)) {
    // Destructions and automatic rotations, lazy or in runMaintenance, go to this Kms's trail
    // as events of their own, with the trail's failure mode: under fail-closed (the default) a
    // call whose destruction or rotation was not recorded fails, as one whose own event was not
    // written (the work is done by then, not undone); fail-open reports it to onError.
    // ctx.clock is createKms's checkedClock.
    this.#ctx = {
      ...ctx,
      recordInternal: (operation, request, key) =>
        guard.recordInternal(operation, request, ctx.clock.now(), [key]),
    };
    this.#guard = guard;
  }

  /** The account, region and partition this KMS puts in its ARNs. */
  get identity(): KmsIdentity {
    return this.#ctx.identity;
  }

  /**
   * The one pipeline every operation goes through. `body` receives the context for this call
   * and the call's snapshot of `request` (never the caller's object, which may change while the
   * call awaits); authorization and auditing hook in here so that no operation can skip them.
   */
  async #run<R, T>(
    operation: string,
    request: R,
    options: CallOptions | undefined,
    body: (ctx: KmsContext, request: R) => Promise<T>,
  ): Promise<T> {
    // Not audited: the trail is closed, or closes once the calls admitted before settled.
    if (this.#closing !== undefined) {
      throw new KmsInternalError(`${operation} failed: this Kms is closed`);
    }
    // Not audited either: an event needs the time. Read first, so the call has done nothing.
    const now = this.#ctx.clock.now();
    const call = this.#guard.begin(operation, request, options, now);
    let outcome: { response: T } | { error: unknown };
    this.#inFlight++;
    try {
      try {
        this.#guard.before(call);
        assertDryRunSupported(operation, call.request);
        const response = await body(this.#guard.context(this.#ctx, call), call.request as R);
        this.#guard.after(call, response);
        outcome = { response };
      } catch (error) {
        // Unknown failures become KMSInternalException with the original kept as cause, so
        // callers only ever handle KmsError while the detail is not lost for operators.
        outcome = {
          error: isKmsError(error)
            ? error
            : new KmsInternalError(`${operation} failed unexpectedly`, { cause: error }),
        };
      }
      // Fail-closed: a call whose audit event was not written is not acknowledged.
      const recording = this.#guard.record(call, outcome);
      if (recording !== undefined) await recording;
    } finally {
      // Settled only once its event is recorded: close() closes the sink after that.
      if (--this.#inFlight === 0) this.#drained?.();
    }
    if ("error" in outcome) throw outcome.error;
    return outcome.response;
  }

  /**
   * Creates a key: SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT by default, or any keySpec/keyUsage pair
   * AWS allows (RSA, ECC, Ed25519, HMAC, ML-DSA; see key-specs.ts).
   * @throws ValidationException, TagException, UnsupportedOperationException.
   */
  createKey(request: CreateKeyRequest = {}, options?: CallOptions): Promise<CreateKeyResponse> {
    return this.#run("createKey", request, options, createKeyBody);
  }

  /** @throws NotFoundException, ValidationException. */
  describeKey(request: DescribeKeyRequest, options?: CallOptions): Promise<DescribeKeyResponse> {
    return this.#run("describeKey", request, options, keys.describeKey);
  }

  /** Keys ordered by key id; `limit` 1–1000 (default 100). @throws InvalidMarkerException. */
  listKeys(request: PageRequest = {}, options?: CallOptions): Promise<ListKeysResponse> {
    return this.#run("listKeys", request, options, keys.listKeys);
  }

  /** @throws NotFoundException, KMSInvalidStateException, ValidationException. */
  updateKeyDescription(request: UpdateKeyDescriptionRequest, options?: CallOptions): Promise<void> {
    return this.#run("updateKeyDescription", request, options, keys.updateKeyDescription);
  }

  /** @throws NotFoundException, KMSInvalidStateException. */
  enableKey(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("enableKey", request, options, keys.enableKey);
  }

  /** @throws NotFoundException, KMSInvalidStateException. */
  disableKey(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("disableKey", request, options, keys.disableKey);
  }

  /**
   * Schedules destruction after 7–30 days (default 30). Until then the key is unusable and the
   * deletion can be cancelled; afterwards the key and its ciphertexts are gone for good.
   * @throws NotFoundException, KMSInvalidStateException, ValidationException.
   */
  scheduleKeyDeletion(
    request: ScheduleKeyDeletionRequest,
    options?: CallOptions,
  ): Promise<ScheduleKeyDeletionResponse> {
    return this.#run("scheduleKeyDeletion", request, options, keys.scheduleKeyDeletion);
  }

  /** Cancels a scheduled deletion; the key becomes Disabled. @throws KMSInvalidStateException. */
  cancelKeyDeletion(request: KeyIdRequest, options?: CallOptions): Promise<{ keyId: string }> {
    return this.#run("cancelKeyDeletion", request, options, keys.cancelKeyDeletion);
  }

  /** @throws AlreadyExistsException, InvalidAliasNameException, NotFoundException, KMSInvalidStateException. */
  createAlias(request: AliasRequest, options?: CallOptions): Promise<void> {
    return this.#run("createAlias", request, options, aliases.createAlias);
  }

  /** @throws NotFoundException, ValidationException, KMSInvalidStateException. */
  updateAlias(request: AliasRequest, options?: CallOptions): Promise<void> {
    return this.#run("updateAlias", request, options, aliases.updateAlias);
  }

  /** @throws NotFoundException, ValidationException. */
  deleteAlias(request: { aliasName: string }, options?: CallOptions): Promise<void> {
    return this.#run("deleteAlias", request, options, aliases.deleteAlias);
  }

  /** Aliases ordered by name; `limit` 1–100 (default 50). @throws InvalidMarkerException. */
  listAliases(
    request: ListAliasesRequest = {},
    options?: CallOptions,
  ): Promise<ListAliasesResponse> {
    return this.#run("listAliases", request, options, aliases.listAliases);
  }

  /**
   * Turns on automatic rotation every 90–2560 days (default 365).
   * @throws DisabledException, KMSInvalidStateException, UnsupportedOperationException.
   */
  enableKeyRotation(request: EnableKeyRotationRequest, options?: CallOptions): Promise<void> {
    return this.#run("enableKeyRotation", request, options, rotation.enableKeyRotation);
  }

  /** @throws DisabledException, KMSInvalidStateException, UnsupportedOperationException. */
  disableKeyRotation(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("disableKeyRotation", request, options, rotation.disableKeyRotation);
  }

  /** @throws NotFoundException, UnsupportedOperationException. */
  getKeyRotationStatus(
    request: KeyIdRequest,
    options?: CallOptions,
  ): Promise<GetKeyRotationStatusResponse> {
    return this.#run("getKeyRotationStatus", request, options, rotation.getKeyRotationStatus);
  }

  /**
   * Adds new key material now; older material keeps decrypting what it encrypted.
   * @throws DisabledException, KMSInvalidStateException, LimitExceededException (25 per key).
   */
  rotateKeyOnDemand(
    request: KeyIdRequest,
    options?: CallOptions,
  ): Promise<RotateKeyOnDemandResponse> {
    return this.#run("rotateKeyOnDemand", request, options, rotation.rotateKeyOnDemand);
  }

  /** @throws NotFoundException, InvalidMarkerException, UnsupportedOperationException. */
  listKeyRotations(
    request: ListKeyRotationsRequest,
    options?: CallOptions,
  ): Promise<ListKeyRotationsResponse> {
    return this.#run("listKeyRotations", request, options, rotation.listKeyRotations);
  }

  /**
   * Encrypts up to 4096 bytes under a symmetric key, bound to the encryption context.
   * @throws NotFoundException, DisabledException, KMSInvalidStateException,
   *   InvalidKeyUsageException, ValidationException.
   */
  encrypt(request: EncryptRequest, options?: CallOptions): Promise<EncryptResponse> {
    return this.#run("encrypt", request, options, symmetric.encrypt);
  }

  /**
   * Decrypts a ciphertext blob; the encryption context must match exactly.
   * @throws InvalidCiphertextException (tampered, wrong context, unknown key), IncorrectKeyException,
   *   DisabledException, KMSInvalidStateException, NotFoundException.
   */
  decrypt(request: DecryptRequest, options?: CallOptions): Promise<DecryptResponse> {
    return this.#run("decrypt", request, options, symmetric.decrypt);
  }

  /**
   * Decrypts and re-encrypts under another key and/or context without returning the plaintext.
   * @throws as decrypt and encrypt.
   */
  reEncrypt(request: ReEncryptRequest, options?: CallOptions): Promise<ReEncryptResponse> {
    return this.#run("reEncrypt", request, options, symmetric.reEncrypt);
  }

  /**
   * Returns a fresh data key in plaintext and encrypted under the KMS key.
   * @throws as encrypt; ValidationException unless exactly one of keySpec/numberOfBytes is set.
   */
  generateDataKey(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyResponse> {
    return this.#run("generateDataKey", request, options, symmetric.generateDataKey);
  }

  /** As generateDataKey, returning only the encrypted copy. */
  generateDataKeyWithoutPlaintext(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyWithoutPlaintextResponse> {
    return this.#run(
      "generateDataKeyWithoutPlaintext",
      request,
      options,
      symmetric.generateDataKeyWithoutPlaintext,
    );
  }

  /** 1–1024 random bytes from the CSPRNG. @throws ValidationException. */
  generateRandom(
    request: GenerateRandomRequest,
    options?: CallOptions,
  ): Promise<GenerateRandomResponse> {
    return this.#run("generateRandom", request, options, generateRandomBody);
  }

  /**
   * Signs a message (RAW, up to 4096 bytes), a digest (DIGEST) or an ML-DSA μ (EXTERNAL_MU)
   * with an asymmetric SIGN_VERIFY key. ECDSA signatures are DER-encoded.
   * @throws ValidationException, InvalidKeyUsageException (wrong usage or algorithm for the key),
   *   NotFoundException, DisabledException, KMSInvalidStateException,
   *   UnsupportedOperationException (RSASSA_PSS with DIGEST).
   */
  sign(request: SignRequest, options?: CallOptions): Promise<SignResponse> {
    return this.#run("sign", request, options, asymmetric.sign);
  }

  /**
   * Verifies a signature; an invalid one raises InvalidSignatureError, never `false`.
   * @throws KMSInvalidSignatureException, and as sign.
   */
  verify(request: VerifyRequest, options?: CallOptions): Promise<VerifyResponse> {
    return this.#run("verify", request, options, asymmetric.verify);
  }

  /**
   * The DER SubjectPublicKeyInfo of an asymmetric key, with its spec, usage and algorithms.
   * @throws UnsupportedOperationException (symmetric or HMAC key), NotFoundException,
   *   DisabledException, KMSInvalidStateException.
   */
  getPublicKey(request: GetPublicKeyRequest, options?: CallOptions): Promise<GetPublicKeyResponse> {
    return this.#run("getPublicKey", request, options, asymmetric.getPublicKey);
  }

  /**
   * HMAC of up to 4096 bytes with a GENERATE_VERIFY_MAC key.
   * @throws ValidationException, InvalidKeyUsageException, NotFoundException, DisabledException,
   *   KMSInvalidStateException.
   */
  generateMac(request: GenerateMacRequest, options?: CallOptions): Promise<GenerateMacResponse> {
    return this.#run("generateMac", request, options, mac.generateMac);
  }

  /**
   * Checks a MAC in constant time; a mismatch raises InvalidMacError.
   * @throws KMSInvalidMacException, and as generateMac.
   */
  verifyMac(request: VerifyMacRequest, options?: CallOptions): Promise<VerifyMacResponse> {
    return this.#run("verifyMac", request, options, mac.verifyMac);
  }

  /**
   * A fresh RSA/ECC/Ed25519 key pair: the private key as PKCS#8 DER in plaintext and encrypted
   * under a symmetric KMS key with the encryption context (decrypt() opens it).
   * @throws ValidationException, InvalidKeyUsageException, NotFoundException, DisabledException,
   *   KMSInvalidStateException.
   */
  generateDataKeyPair(
    request: GenerateDataKeyPairRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyPairResponse> {
    return this.#run("generateDataKeyPair", request, options, dataKeyPair.generateDataKeyPair);
  }

  /** As generateDataKeyPair, returning only the encrypted private key. */
  generateDataKeyPairWithoutPlaintext(
    request: GenerateDataKeyPairRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyPairWithoutPlaintextResponse> {
    return this.#run(
      "generateDataKeyPairWithoutPlaintext",
      request,
      options,
      dataKeyPair.generateDataKeyPairWithoutPlaintext,
    );
  }

  /**
   * ECDH between a KEY_AGREEMENT key and a peer's DER public key; returns the raw secret.
   * @throws ValidationException (malformed peer key or another curve), InvalidKeyUsageException,
   *   NotFoundException, DisabledException, KMSInvalidStateException.
   */
  deriveSharedSecret(
    request: DeriveSharedSecretRequest,
    options?: CallOptions,
  ): Promise<DeriveSharedSecretResponse> {
    return this.#run("deriveSharedSecret", request, options, asymmetric.deriveSharedSecret);
  }

  /** @throws TagException, NotFoundException, KMSInvalidStateException. */
  tagResource(request: TagResourceRequest, options?: CallOptions): Promise<void> {
    return this.#run("tagResource", request, options, tags.tagResource);
  }

  /** @throws TagException, NotFoundException, KMSInvalidStateException. */
  untagResource(request: UntagResourceRequest, options?: CallOptions): Promise<void> {
    return this.#run("untagResource", request, options, tags.untagResource);
  }

  /** Tags ordered by key; `limit` 1–50 (default 50). */
  listResourceTags(
    request: ListResourceTagsRequest,
    options?: CallOptions,
  ): Promise<ListResourceTagsResponse> {
    return this.#run("listResourceTags", request, options, tags.listResourceTags);
  }

  /**
   * Performs due work on every key: destroys keys whose deletion window has passed and rotates
   * keys whose rotation is due. The same work also happens lazily when a key is used; call this
   * from a timer so that unused keys are destroyed on schedule too. Wherever it happens, each
   * destruction is recorded as a `DeleteKey` event and each automatic rotation as a `RotateKey`
   * event naming the key, besides the event of the call (here `RunMaintenance`) it happened in.
   */
  runMaintenance(): Promise<MaintenanceReport> {
    return this.#run("runMaintenance", undefined, undefined, (ctx) => {
      // The work runs in the KMS's own context, which no key policy governs; its DeleteKey and
      // RotateKey events carry this call's request id, as lazy work's carry their call's.
      const requestId = ctx.call?.requestId;
      return requestId === undefined
        ? this.#maintain()
        : runWithRequestId(requestId, () => this.#maintain());
    });
  }

  async #maintain(): Promise<MaintenanceReport> {
    const rotatedKeyIds: string[] = [];
    const deletedKeyIds: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.#ctx.store.listKeys({ limit: 100, ...(after ? { after } : {}) });
      for (const key of page) {
        if (isDeletionDue(this.#ctx, key)) {
          await destroyKey(this.#ctx, key);
          deletedKeyIds.push(key.keyId);
        } else if (isRotationDue(this.#ctx, key)) {
          await rotateIfDue(this.#ctx, key);
          rotatedKeyIds.push(key.keyId);
        }
      }
      if (page.length < 100) break;
      after = page[page.length - 1]!.keyId;
    }
    return { rotatedKeyIds, deletedKeyIds };
  }

  /**
   * Replaces the key policy ("default"). Refuses a policy that would lock the caller out of
   * PutKeyPolicy unless bypassPolicyLockoutSafetyCheck is true.
   * @throws MalformedPolicyDocumentException, NotFoundException, ValidationException, AccessDeniedException.
   */
  putKeyPolicy(request: policies.PutKeyPolicyRequest, options?: CallOptions): Promise<void> {
    return this.#run("putKeyPolicy", request, options, policies.putKeyPolicy);
  }

  /** The key policy; AWS's default policy for keys created without one. @throws NotFoundException. */
  getKeyPolicy(
    request: policies.GetKeyPolicyRequest,
    options?: CallOptions,
  ): Promise<policies.GetKeyPolicyResponse> {
    return this.#run("getKeyPolicy", request, options, policies.getKeyPolicy);
  }

  /** Always `["default"]`. @throws NotFoundException. */
  listKeyPolicies(
    request: policies.ListKeyPoliciesRequest,
    options?: CallOptions,
  ): Promise<policies.ListKeyPoliciesResponse> {
    return this.#run("listKeyPolicies", request, options, policies.listKeyPolicies);
  }

  /**
   * Gives `granteePrincipal` the listed operations on a key, optionally only for matching
   * encryption contexts. The same `name` with the same fields returns the same grant.
   * ValidationException also when an operation is one the key cannot perform (Sign on a
   * symmetric key, …), when the operations are CreateGrant alone, or when constraints are given
   * on a key other than a symmetric encryption key, name both kinds at once, or name neither.
   * @throws ValidationException, NotFoundException, DisabledException, LimitExceededException,
   *   AccessDeniedException, DryRunOperationException.
   */
  createGrant(
    request: grants.CreateGrantRequest,
    options?: CallOptions,
  ): Promise<grants.CreateGrantResponse> {
    return this.#run("createGrant", request, options, grants.createGrant);
  }

  /** Grants of a key; `limit` 1–100 (default 50). @throws NotFoundException, InvalidMarkerException. */
  listGrants(
    request: grants.ListGrantsRequest,
    options?: CallOptions,
  ): Promise<grants.ListGrantsResponse> {
    return this.#run("listGrants", request, options, grants.listGrants);
  }

  /** Grants that `retiringPrincipal` may retire, across keys. @throws InvalidMarkerException. */
  listRetirableGrants(
    request: grants.ListRetirableGrantsRequest,
    options?: CallOptions,
  ): Promise<grants.ListGrantsResponse> {
    return this.#run("listRetirableGrants", request, options, grants.listRetirableGrants);
  }

  /** @throws InvalidGrantTokenException, InvalidGrantIdException, NotFoundException, AccessDeniedException, DryRunOperationException. */
  retireGrant(request: grants.RetireGrantRequest, options?: CallOptions): Promise<void> {
    return this.#run("retireGrant", request, options, grants.retireGrant);
  }

  /** @throws InvalidGrantIdException, NotFoundException, AccessDeniedException, DryRunOperationException. */
  revokeGrant(request: grants.RevokeGrantRequest, options?: CallOptions): Promise<void> {
    return this.#run("revokeGrant", request, options, grants.revokeGrant);
  }

  /**
   * Which key-policy statement or grant would allow or deny `request.operation` with
   * `request.request` for the caller, without performing it (beyond AWS). Audited itself.
   * @throws ValidationException for an unknown operation or a request naming no key,
   *   NotFoundException for a key that does not exist (InvalidCiphertextException when only a
   *   symmetric ciphertext's header names it, as Decrypt answers); IncorrectKeyException when
   *   decrypt's keyId or reEncrypt's sourceKeyId names another key than the ciphertext's header
   *   and the explained call is allowed on every key it reads (a denied one is reported, as the
   *   call answers AccessDenied first; the header's key is then not read, as the call does not
   *   read it); for a key argument named in a form the
   *   operation does not take, the operation's own answer (an alias where it takes a key id or
   *   key ARN only: NotFoundException; an alias as an alias's target: ValidationException).
   *   AccessDeniedException (needs kms:Explain on the account policy, and kms:GetKeyPolicy and
   *   kms:ListGrants on every key the explained call reads, since what it reports of a key is
   *   what those read; decided for the caller, never the `as` principal; recorded as a denied
   *   Explain event).
   */
  explain(
    request: {
      readonly operation: string;
      readonly request: object;
      /** Whose call to explain (principal, sourceIp…); default: the caller's own. */
      readonly as?: CallOptions;
    },
    options?: CallOptions,
  ): Promise<ExplainResult> {
    return this.#run("explain", request, options, (ctx, r) => {
      const { operation, request: target } = assertExplainRequest(this, r);
      const as = r.as === undefined ? options : assertObject("as", r.as);
      return this.#guard.explain(
        ctx,
        this.#guard.begin(operation, target, as as CallOptions | undefined, ctx.clock.now()),
      );
    });
  }

  /**
   * When the key was last used for a successful cryptographic operation, from the audit trail
   * (AWS's GetKeyLastUsage). `trackingStartDate` is the later of the key's creation and the
   * oldest event the trail was read from: without `keyLastUsage`, the key was not used since
   * then. It is absent with `audit: false`, which tracks nothing.
   * @throws NotFoundException, AccessDeniedException (needs kms:GetKeyLastUsage).
   */
  getKeyLastUsage(request: KeyIdRequest, options?: CallOptions): Promise<GetKeyLastUsageResponse> {
    return this.#run("getKeyLastUsage", request, options, async (ctx, r) => {
      const keyId = directKeyId(ctx, "getKeyLastUsage", "keyId", r?.keyId);
      const { keyMetadata } = await keys.describeKey(ctx, { keyId });
      const created = keyMetadata.creationDate;
      const { usage, trackingStart } = await this.#guard.auditor.lastUsage(keyMetadata.arn);
      // An empty trail starts with this call's own event.
      const since = trackingStart?.getTime() ?? ctx.call?.now ?? ctx.clock.now();
      return {
        keyId: keyMetadata.arn,
        ...(usage !== undefined ? { keyLastUsage: usage } : {}),
        ...(this.#guard.auditing
          ? { trackingStartDate: new Date(Math.max(since, created.getTime())) }
          : {}),
        keyCreationDate: created,
      };
    });
  }

  /** The audit trail: its sink, its events, its head, and a full verification. */
  get audit(): AuditTrail {
    const auditor = this.#guard.auditor;
    return {
      sink: auditor.sink,
      events: (options) => auditor.sink.read(options),
      head: () => auditor.head(),
      verify: async (options) => {
        // Head first: events appended between the two reads then extend past the head instead
        // of leaving the head past the events, which would read as truncation.
        const head = await auditor.head();
        return verifyAuditTrail(auditor.sink, head, options);
      },
    };
  }

  /**
   * Stops admitting calls, waits for the calls in flight to settle and their audit events to be
   * recorded, then flushes the audit trail, closes its sink and the key store, and releases every
   * key the HSM holds in memory (root keys, record-seal keys, unwrapped key material; raw private
   * secrets are zero-filled), even when closing the trail or the store fails. From the first
   * close() on, every new operation fails with KMSInternalException, unaudited. The wait has no
   * bound of its own: a call held by a store that never answers holds close() too (the stores'
   * own timeouts, such as a lock timeout, bound their operations). Calling it again returns the
   * first call's promise; awaiting it inside a call of the same Kms never settles.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Closing the trail or the store under a call would lose the event of work already done
    // (a deletion scheduled, a data key returned), or fail a call whose change was made.
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
    try {
      await this.#guard.auditor.close();
      await this.#ctx.store.close();
    } finally {
      this.#ctx.hsm.close();
    }
  }

  toJSON(): { kms: string; store: string } {
    return { kms: "Kms", store: this.#ctx.store.description };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `Kms { store: ${this.#ctx.store.description}, account: ${this.#ctx.identity.account} }`;
  }
}

/** AWS's GetKeyLastUsageResponse, camelCased. */
export interface GetKeyLastUsageResponse {
  /** The key's ARN. */
  readonly keyId: string;
  /** Absent when the trail holds no successful cryptographic use since `trackingStartDate`. */
  readonly keyLastUsage?: KeyLastUsage;
  /**
   * From when uses are known: the later of `keyCreationDate` and the oldest audit event read.
   * Absent when auditing is off (`audit: false`).
   */
  readonly trackingStartDate?: Date;
  readonly keyCreationDate: Date;
}

/** Read access to a Kms's audit trail. */
export interface AuditTrail {
  readonly sink: AuditSink;
  /** Events, oldest first. */
  events(options?: AuditReadOptions): Promise<readonly AuditEvent[]>;
  /** Position and hash of the newest written event: keep it elsewhere to detect truncation. */
  head(): Promise<AuditHead | undefined>;
  /**
   * Verifies the events in the sink against the hash chain and the current head (read first),
   * from sequence 0 (from the first event held, on a sink that `keepsWindow`). Reads the sink a
   * page at a time (`readPages`, else `read({ after, limit })`), so memory does not grow with the
   * trail; the verdict is `verifyAuditLog`'s on the whole trail, its `index` the position in it,
   * plus the `sequence` the event at a break claims. A stored event the sink cannot parse is
   * reached only if the chain holds up to it.
   * @throws ValidationException for bad options; KMSInternalException when the sink cannot be
   *   read (including a stored event it cannot parse, unless `unreadable: "malformed"`).
   */
  verify(options?: AuditTrailVerifyOptions): Promise<AuditTrailVerification>;
}

function createKeyBody(ctx: KmsContext, request: CreateKeyRequest): Promise<CreateKeyResponse> {
  const policy = policies.validateCreateKeyPolicy(request);
  return keys.createKey(ctx, request, policy);
}

function generateRandomBody(
  _ctx: KmsContext,
  request: GenerateRandomRequest,
): Promise<GenerateRandomResponse> {
  return symmetric.generateRandom(request);
}

/**
 * The operations that take `dryRun`, as in AWS KMS. Under it they change nothing (the grant
 * operations stop before their write; a due rotation or destruction is left to the next real
 * use, see isDryRun), so the pipeline can answer DryRunOperationException after the body ran.
 */
const DRY_RUN_OPERATIONS: ReadonlySet<string> = new Set([
  "encrypt",
  "decrypt",
  "reEncrypt",
  "generateDataKey",
  "generateDataKeyWithoutPlaintext",
  "generateDataKeyPair",
  "generateDataKeyPairWithoutPlaintext",
  "sign",
  "verify",
  "generateMac",
  "verifyMac",
  "deriveSharedSecret",
  "createGrant",
  "retireGrant",
  "revokeGrant",
]);

/**
 * Refuses `dryRun: true` on an operation without a dry run. Without this the operation would
 * run for real (schedule a deletion, create a key…) and then answer DryRunOperationException,
 * telling the caller that nothing happened.
 * @throws ValidationError.
 */
function assertDryRunSupported(operation: string, request: unknown): void {
  if (DRY_RUN_OPERATIONS.has(operation)) return;
  if ((request as { dryRun?: unknown } | null | undefined)?.dryRun === true) {
    throw new ValidationError(`"dryRun" is not supported by ${operation}; nothing was done`);
  }
}

function assertExplainRequest(
  kms: Kms,
  request: unknown,
): { operation: string; request: Record<string, unknown> } {
  const r = assertObject("request", request);
  const operation = r.operation;
  if (
    typeof operation !== "string" ||
    operation === "explain" ||
    typeof (kms as unknown as Record<string, unknown>)[operation] !== "function" ||
    !Object.hasOwn(Kms.prototype, operation)
  ) {
    throw new ValidationError(
      `"operation" must name an operation of Kms, got ${String(operation)}`,
    );
  }
  return { operation, request: assertObject("request.request", r.request) };
}

/**
 * Creates a KMS. With no options: an in-memory store under a fresh random root key. Every
 * record the KMS reads from the store is checked against its record seal (docs/FORMAT.md §4.1).
 * @throws RootKeyError when a durable store is given without a root key, or with the wrong one,
 *   or when the store holds records without a seal and `unsealedRecords` is not `"seal"`.
 *   ValidationError for a malformed option.
 */
export async function createKms(options: KmsOptions = {}): Promise<Kms> {
  const store = options.store ?? new MemoryKeyStore();
  const unsealed = options.unsealedRecords === undefined ? "refuse" : options.unsealedRecords;
  if (unsealed !== "refuse" && unsealed !== "seal") {
    throw new ValidationError(
      `"unsealedRecords" expected "refuse" or "seal", got ${String(options.unsealedRecords)}`,
    );
  }
  if (options.clock !== undefined && typeof options.clock?.now !== "function") {
    throw new ValidationError(`"clock" must be an object with a now() method`);
  }
  const maxGrantsPerKey =
    options.maxGrantsPerKey === undefined
      ? undefined
      : assertInteger("maxGrantsPerKey", options.maxGrantsPerKey, 1, grants.MAX_GRANTS_PER_KEY);
  const principalTags =
    options.principalTags === undefined ? undefined : indexPrincipalTags(options.principalTags);
  const identity: KmsIdentity = {
    partition: options.partition ?? DEFAULT_IDENTITY.partition,
    region: options.region ?? DEFAULT_IDENTITY.region,
    account: options.account ?? DEFAULT_IDENTITY.account,
  };
  // Root keys given as bytes are copied for the open only, and the copies wiped after it.
  const transient = new TransientRootKeys();
  let hsm: SoftwareHsm;
  try {
    let source: RootKeySource;
    if (options.rootKey !== undefined) source = transient.source(options.rootKey);
    else if (store instanceof MemoryKeyStore) source = RootKeySource.ephemeral();
    else {
      throw new RootKeyError(
        `key store ${store.description} is durable and needs a root key: pass rootKey ` +
          "(RootKeySource.fromEnv(), fromFile(), fromPassphrase(), or devFile() for development)",
      );
    }
    if (!/^\d{12}$/.test(identity.account)) {
      throw new ValidationError(`"account" must be 12 digits, got ${identity.account}`);
    }
    hsm = await SoftwareHsm.open(source, store, {
      unwrapRootKeys: (options.unwrapRootKeys ?? []).map((k) => transient.source(k)),
    });
  } finally {
    transient.wipe();
  }
  const guard = new CallGuard(identity, { ...options, principalTags });
  const clock = checkedClock(options.clock ?? systemClock);
  const keyName = (keyId: string): string => `key ${keyArn(identity, keyId)}`;
  // Every read and write of the Kms goes through the seals; only the one-time upgrade below
  // writes through the raw store.
  const sealed = new SealedKeyStore(store, hsm, { keyName });
  if (unsealed === "seal") {
    await sealUnsealedRecords(store, sealed, (record) =>
      record.kind === "key"
        ? guard.recordInternal("sealRecord", { keyId: record.key.keyId }, clock.now(), [record.key])
        : guard.recordInternal(
            "sealRecord",
            { aliasName: record.alias.aliasName, targetKeyId: record.alias.targetKeyId },
            clock.now(),
            [],
          ),
    );
  } else {
    await assertSealedStore(store, keyName);
  }
  return new Kms(
    {
      store: sealed,
      hsm,
      clock,
      identity,
      ...(maxGrantsPerKey === undefined ? {} : { maxGrantsPerKey }),
    },
    guard,
  );
}
