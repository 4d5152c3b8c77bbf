import type { IncomingMessage } from "node:http";
import { isKmsError, runWithRequestId, ValidationError } from "@kms/core";
import {
  MemoryNonceStore,
  type MessageVerifier,
  type NonceStore,
  PROBLEM_TYPE_BASE,
  type RequestMessage,
  signatureProblem,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
} from "@kms/http-signatures";
import {
  type CanActivate,
  type ExecutionContext,
  Inject,
  Injectable,
  Optional,
} from "@nestjs/common";
import { Reflector } from "@nestjs/core";
import {
  httpObjects,
  type PlatformRequest,
  platformRequestMessage,
  readRawBody,
} from "./internal/http.ts";
import {
  acceptedAlready,
  requestVerification,
  type VerificationKey,
  withRequestNonces,
} from "./internal/request-verifications.ts";
import { asServerFault } from "./internal/server-fault.ts";
import {
  verifiedSignatureOf as acceptedSignatureOf,
  setVerifiedSignature,
  type VerifiedSignature,
} from "./internal/verified-signatures.ts";
import {
  KMS_NONCE_STORE,
  REQUIRE_SIGNATURE_METADATA,
  SKIP_SIGNATURE_METADATA,
} from "./kms.constants.ts";
import { KMS_MODULE_OPTIONS } from "./kms.module-definition.ts";
import { KmsService } from "./kms.service.ts";
import { requestIdOf } from "./kms-context.ts";
import type {
  KmsModuleOptions,
  SignatureKeyContext,
  SignaturePolicy,
} from "./kms-module.options.ts";
import { ProblemDetailsException } from "./problem-details.exception.ts";

export type { VerifiedSignature } from "./internal/verified-signatures.ts";

/**
 * The store of guards built without the module's (see `canActivate`), one per `KmsService`:
 * one replay domain for all of them, as the module's store is for the guards it builds, so two
 * built alike make the same check and a nonce one of them recorded is a replay to the other.
 */
const fallbackNonceStores = new WeakMap<KmsService, NonceStore>();

/** The signature `SignatureGuard` accepted for this request, if any. */
export function verifiedSignatureOf(request: object): VerifiedSignature | undefined {
  return acceptedSignatureOf(request);
}

/** A route's effective policy: module defaults, then the class's, then the method's. */
export interface EffectiveSignaturePolicy extends Omit<SignaturePolicy, "nonceStore"> {
  /** `false`: replay protection turned off for the route (no store at all, not a default one). */
  readonly nonceStore?: NonceStore | false;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;

/**
 * Verifies the request's RFC 9421 signature (and Content-Digest, and its nonce against replay)
 * before the handler: per-route policy from `@RequireSignature(...)` over the module's
 * `signature` defaults. A failure throws a 401 problem+json naming the failed check
 * (`https://kms.dev/problems/signature/<check>`), so nothing reaches the handler. Errors from
 * key lookup or the KMS propagate as a 500, so an outage is not reported as a forged request:
 * a `KmsError` among them (a disabled key, a missing `keyLookup`) is re-thrown as
 * `KMSInternalException` with the original in `cause`, which `KmsExceptionFilter` answers
 * with an opaque 500 rather than as a client fault; so is a thrown value that is not an Error.
 * The verification runs inside the request's id (`requestIdOf`, the one `KmsContextInterceptor`
 * uses), so a KMS verifier's call is audited under it; the id is echoed in `x-request-id`, on a
 * refusal too.
 * Subclass it and override the `protected` hooks (`resolveKey`, `policyFor`,
 * `requestMessage`, `rejection`). Several guards on one route each verify with their own policy
 * (the request's nonce is not a replay to the later ones when they share its store); only a
 * repeat of the same check is skipped: the same guard bound twice, or another guard whose check
 * on the route is equal by value (effective policy, KMS, nonce store object, and the default
 * `resolveKey` / `requestMessage` / `rawBody` hooks), whatever its class or instance.
 */
@Injectable()
export class SignatureGuard implements CanActivate {
  protected readonly reflector: Reflector;
  protected readonly kmsService: KmsService;
  protected readonly options: KmsModuleOptions;
  protected readonly defaultNonceStore: NonceStore | undefined;

  constructor(
    @Inject(Reflector) reflector: Reflector,
    @Inject(KmsService) kmsService: KmsService,
    @Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions,
    @Optional() @Inject(KMS_NONCE_STORE) nonceStore?: NonceStore | null,
  ) {
    this.reflector = reflector;
    this.kmsService = kmsService;
    this.options = options;
    this.defaultNonceStore = nonceStore ?? undefined;
  }

  async canActivate(execution: ExecutionContext): Promise<boolean> {
    // Only HTTP requests carry signatures; fail closed elsewhere.
    if (execution.getType() !== "http") return false;
    if (this.skipped(execution)) return true;
    const { request, incoming, response } = httpObjects(execution);
    const policy = this.policyFor(execution);
    const { nonceStore, ...settings } = policy;
    // Left out, @kms/http-signatures would make a default store, fresh for this per-request
    // policy object and so remembering nothing. A policy names none when the guard was built
    // without the module's store (`new SignatureGuard(reflector, kms, options)`, a subclass's
    // constructor passing three arguments): such guards share one per `KmsService`.
    const store = nonceStore ?? this.#fallbackNonceStore();
    // A check that already accepted this request is not run again: the same guard bound twice,
    // or another guard (another instance, a subclass, another module's) whose check is the
    // same by value. Any other check runs, or a route's keys and policy would be skipped
    // whenever a guard with a laxer policy accepted the request first.
    const state = requestVerification(request);
    const key: VerificationKey = {
      guard: this,
      handler: execution.getHandler(),
      controller: execution.getClass(),
      hooks: this.#hooksOwner(),
      kms: this.kmsService.kms,
      nonceStore: store,
      policy: settings,
    };
    if (acceptedAlready(state, key)) return true;
    const body = await this.rawBody(request, incoming, policy.bodyLimit ?? DEFAULT_BODY_LIMIT);
    const message = this.requestMessage(request, incoming, body);
    const { keyLookup: _, bodyLimit: __, ...rest } = settings;
    const verificationPolicy: VerificationPolicy = {
      ...rest,
      nonceStore: store === false ? false : withRequestNonces(store, state),
      keyLookup: (keyId, context) =>
        this.resolveKey(keyId, { ...context, kms: this.kmsService.kms, execution }, policy),
    };
    // The id the KMS context will have (the module's `context` options decide it).
    const requestId = requestIdOf(request, this.options.context);
    if (!response.headersSent) response.setHeader("x-request-id", requestId);
    let result: VerificationResult;
    try {
      result = await runWithRequestId(requestId, () => verifyMessage(message, verificationPolicy));
    } catch (error) {
      throw asServerFault(error, "signature verification");
    }
    if (!result.ok) throw this.rejection(result, execution);
    setVerifiedSignature(request, result);
    state.accepted.push(key);
    return true;
  }

  /**
   * Whose hooks decide the message and the keys: the shared default ones, or this guard's
   * own overrides, which may read state of this instance (an injected key registry), so they
   * make a check of this instance only. `policyFor` needs no such care: its result is what is
   * compared. `rejection` only shapes a refusal.
   */
  #hooksOwner(): object {
    const base = SignatureGuard.prototype;
    return this.resolveKey === base.resolveKey &&
      this.requestMessage === base.requestMessage &&
      this.rawBody === base.rawBody
      ? base
      : this;
  }

  #fallbackNonceStore(): NonceStore {
    let store = fallbackNonceStores.get(this.kmsService);
    if (store === undefined) {
      store = new MemoryNonceStore();
      fallbackNonceStores.set(this.kmsService, store);
    }
    return store;
  }

  /**
   * The decorator nearest the handler decides: a method's `@SkipSignature()` exempts it from its
   * controller's requirement, and a method's `@RequireSignature()` is enforced even under its
   * controller's `@SkipSignature()`.
   */
  private skipped(execution: ExecutionContext): boolean {
    const handler = execution.getHandler();
    if (this.reflector.get<boolean | undefined>(SKIP_SIGNATURE_METADATA, handler) === true) {
      return true;
    }
    if (this.reflector.get<unknown>(REQUIRE_SIGNATURE_METADATA, handler) !== undefined) {
      return false;
    }
    return (
      this.reflector.get<boolean | undefined>(SKIP_SIGNATURE_METADATA, execution.getClass()) ===
      true
    );
  }

  /** The route's policy: module `signature` defaults, then class and method decorators. */
  protected policyFor(execution: ExecutionContext): EffectiveSignaturePolicy {
    const [onMethod, onClass] = this.reflector.getAll<(SignaturePolicy | undefined)[]>(
      REQUIRE_SIGNATURE_METADATA,
      [execution.getHandler(), execution.getClass()],
    );
    const merged: SignaturePolicy = { ...this.options.signature, ...onClass, ...onMethod };
    const { nonceStore, ...rest } = merged;
    const store = nonceStore === false ? false : (nonceStore ?? this.defaultNonceStore);
    return store === undefined ? rest : { ...rest, nonceStore: store };
  }

  /**
   * The verifier for `keyId` (undefined or null: unknown key); default the policy's `keyLookup`.
   * @throws ValidationException when no `keyLookup` is configured (a setup error, not a bad
   * request).
   */
  protected resolveKey(
    keyId: string,
    context: SignatureKeyContext,
    policy: EffectiveSignaturePolicy,
  ): MessageVerifier | null | undefined | Promise<MessageVerifier | null | undefined> {
    if (policy.keyLookup === undefined) {
      throw new ValidationError(
        '"keyLookup" is not configured: set signature.keyLookup in KmsModule options, pass it ' +
          "to @RequireSignature(...), or override SignatureGuard.resolveKey",
      );
    }
    return policy.keyLookup(keyId, context);
  }

  /**
   * The message view of the request that is verified. `body` is undefined when a body parser
   * decoded the request's Content-Encoding (see `rawBody`).
   */
  protected requestMessage(
    request: PlatformRequest,
    incoming: IncomingMessage,
    body: Uint8Array | undefined,
  ): RequestMessage {
    return platformRequestMessage(request, incoming, body);
  }

  /** The exception for a failed verification; default 401 problem+json. */
  protected rejection(
    failure: Extract<VerificationResult, { ok: false }>,
    _execution: ExecutionContext,
  ): Error {
    return new ProblemDetailsException(signatureProblem(failure), {
      "www-authenticate": "Signature",
    });
  }

  /**
   * The raw body; an unusable one (consumed without a copy, too large) answers 400 / 413.
   * Undefined when a parser decoded its Content-Encoding: the request is then verified without
   * it, so a signature whose Content-Digest must be checked fails (401 `content-digest`).
   */
  protected async rawBody(
    request: PlatformRequest,
    incoming: IncomingMessage,
    limit: number,
  ): Promise<Uint8Array | undefined> {
    try {
      return await readRawBody(request, incoming, limit);
    } catch (error) {
      if (!(isKmsError(error) && error.clientFault)) throw error;
      throw new ProblemDetailsException({
        type: `${PROBLEM_TYPE_BASE}signature/body`,
        title: "Request body unusable for signature verification",
        status: error.message.includes("limit") ? 413 : 400,
        detail: error.message,
      });
    }
  }
}
