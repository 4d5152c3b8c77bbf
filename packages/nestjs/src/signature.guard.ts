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
import { asServerFault } from "./internal/server-fault.ts";
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

export type VerifiedSignature = Extract<VerificationResult, { ok: true }>;

const verified = new WeakMap<object, VerifiedSignature>();

/** Per request: the checks that accepted it, and the nonces they recorded. */
interface RequestVerification {
  /** Each guard that accepted it, and the route it verified it for. */
  readonly accepted: AcceptedVerification[];
  /**
   * Per nonce store, the nonces this request's checks recorded in it. A nonce recorded in
   * another store is no proof for this one: a subclass with its own store (a shared Redis store
   * next to an instance's memory) must still record it there, or a replay to another instance
   * would meet neither.
   */
  readonly nonces: WeakMap<NonceStore, Set<string>>;
}

interface AcceptedVerification {
  readonly guard: SignatureGuard;
  /**
   * The route's handler and controller: their decorators are part of the policy. One request
   * meets several routes when a handler injects `@Next()` and calls it: Express hands the same
   * request to the next route matching the path, whose guards run again with its own handler.
   */
  readonly handler: object;
  readonly controller: object;
}

const verifications = new WeakMap<object, RequestVerification>();

function verificationOf(request: object): RequestVerification {
  let state = verifications.get(request);
  if (state === undefined) {
    state = { accepted: [], nonces: new WeakMap() };
    verifications.set(request, state);
  }
  return state;
}

/**
 * `store` as one more guard on the same request sees it: a nonce that this request's earlier
 * verification recorded in this same store is the request's own, not a replay. Every other
 * nonce (one recorded only in another guard's store included) goes to `store`. A replayed
 * request still meets the earlier guard, which finds its nonce in the store.
 */
function withRequestNonces(store: NonceStore, state: RequestVerification): NonceStore {
  let recorded = state.nonces.get(store);
  if (recorded === undefined) {
    recorded = new Set();
    state.nonces.set(store, recorded);
  }
  const own = recorded;
  return {
    checkAndStore: async (nonce, ttlMs) => {
      if (own.has(nonce)) return true;
      const fresh = await store.checkAndStore(nonce, ttlMs);
      if (fresh) own.add(nonce);
      return fresh;
    },
  };
}

/** The signature `SignatureGuard` accepted for this request, if any. */
export function verifiedSignatureOf(request: object): VerifiedSignature | undefined {
  return verified.get(request);
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
 * (the request's nonce is not a replay to the later ones); only a repeat of the same check is
 * skipped: the same guard bound twice, or the app-wide `SignatureGuard` and the one
 * `@RequireSignature` binds when both come from the same `KmsModule`.
 */
@Injectable()
export class SignatureGuard implements CanActivate {
  protected readonly reflector: Reflector;
  protected readonly kmsService: KmsService;
  protected readonly options: KmsModuleOptions;
  protected readonly defaultNonceStore: NonceStore | undefined;
  /** This guard's own store, for a policy that names none (see `canActivate`). */
  #fallbackNonceStore: NonceStore | undefined;

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
    // The same guard may be bound twice (app-wide and by @RequireSignature): it verifies once.
    // Any other guard verifies for itself, or a route's keys and policy would be skipped
    // whenever a guard with a laxer policy accepted the request first.
    const state = verificationOf(request);
    const route: Omit<AcceptedVerification, "guard"> = {
      handler: execution.getHandler(),
      controller: execution.getClass(),
    };
    if (state.accepted.some((earlier) => this.#acceptedBy(earlier, route))) return true;
    const policy = this.policyFor(execution);
    const body = await this.rawBody(request, incoming, policy.bodyLimit ?? DEFAULT_BODY_LIMIT);
    const message = this.requestMessage(request, incoming, body);
    const { keyLookup: _, bodyLimit: __, nonceStore, ...rest } = policy;
    // Left out, @kms/http-signatures would make a default store, fresh for this per-request
    // policy object and so remembering nothing. A policy names none when the guard was built
    // without the module's store (`new SignatureGuard(reflector, kms, options)`, a subclass's
    // constructor passing three arguments): the guard then keeps one of its own.
    const store = nonceStore ?? this.#ownNonceStore();
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
    verified.set(request, result);
    state.accepted.push({ guard: this, ...route });
    return true;
  }

  /**
   * Whether an earlier acceptance of this request stands for this guard's own check: only when
   * that check would be the very same. Same route (its decorators are merged into the policy;
   * a request passed on by `@Next()` reaches another route's guards as the same request),
   * and the same guard instance, or two plain `SignatureGuard`s built from the same module
   * options object, KMS and nonce store (the app-wide one and the one `@RequireSignature`
   * binds: their policy is nothing else). A subclass's hooks may read state of their own (an
   * injected key registry), so a subclass's acceptance stands for that instance only.
   */
  #acceptedBy(earlier: AcceptedVerification, route: Omit<AcceptedVerification, "guard">): boolean {
    if (earlier.handler !== route.handler || earlier.controller !== route.controller) return false;
    const other = earlier.guard;
    if (other === this) return true;
    return (
      other.constructor === SignatureGuard &&
      this.constructor === SignatureGuard &&
      other.options === this.options &&
      other.kmsService === this.kmsService &&
      other.defaultNonceStore === this.defaultNonceStore
    );
  }

  #ownNonceStore(): NonceStore {
    if (this.#fallbackNonceStore === undefined) this.#fallbackNonceStore = new MemoryNonceStore();
    return this.#fallbackNonceStore;
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
