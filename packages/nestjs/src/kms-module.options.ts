import type { KmsLike, KmsOptions } from "@kms/core";
import type {
  KeyLookupContext,
  MessageVerifier,
  NonceStore,
  ResponseSigningOptions,
  VerificationPolicy,
} from "@kms/http-signatures";
import type { ExecutionContext } from "@nestjs/common";
import type { KmsContextOptions } from "./kms-context.ts";

/** What a key lookup sees besides the `keyid`: the signature, the KMS, the Nest context. */
export interface SignatureKeyContext extends KeyLookupContext {
  /** The module's KMS, e.g. for `createKmsVerifier({ kms, keyId, algorithm })`. */
  readonly kms: KmsLike;
  readonly execution: ExecutionContext;
}

/**
 * A verification policy (see `VerificationPolicy` in @kms/http-signatures), every field
 * optional so module defaults and `@RequireSignature(...)` can be layered.
 */
export interface SignaturePolicy
  extends Partial<Omit<VerificationPolicy, "keyLookup" | "nonceStore">> {
  /**
   * Verifier for a `keyid`, or undefined (or null) for an unknown key. What it throws
   * propagates as a 500, a value that is not an Error as a `KMSInternalException`.
   */
  readonly keyLookup?: (
    keyId: string,
    context: SignatureKeyContext,
  ) => MessageVerifier | null | undefined | Promise<MessageVerifier | null | undefined>;
  /**
   * Replay protection. Default: one in-memory store per module (`MemoryNonceStore`), which
   * makes the `nonce` parameter required. `false` turns replay protection off.
   */
  readonly nonceStore?: NonceStore | false;
  /** Largest body the guard reads itself when no parser kept a raw copy; default 1 MiB. */
  readonly bodyLimit?: number;
}

/** `ResponseSigningOptions` of @kms/http-signatures with every field optional for layering. */
export type ResponseSigningPolicy = Partial<ResponseSigningOptions>;

export interface KmsModuleOptions {
  /**
   * The KMS to use: the in-process `Kms` or any `KmsLike` (`awsKms` from @kms/aws: AWS KMS or @kms/server).
   * When absent the module creates one with `createKms(kmsOptions)`.
   */
  readonly kms?: KmsLike;
  /** Options for `createKms` when `kms` is absent (`store`, `rootKey`, `clock`…); default an in-memory KMS. */
  readonly kmsOptions?: KmsOptions;
  /**
   * Close the KMS on module destroy (`app.close()`). Default: true for a KMS the module
   * created, false for one passed in (its owner closes it).
   */
  readonly closeOnDestroy?: boolean;
  /** Default policy of `SignatureGuard`; routes refine it with `@RequireSignature(...)`. */
  readonly signature?: SignaturePolicy;
  /** Default options of `SignResponseInterceptor`; routes refine them with `@SignResponse(...)`. */
  readonly responseSigning?: ResponseSigningPolicy;
  /** How `KmsContextInterceptor` derives the encryption context and principal. */
  readonly context?: KmsContextOptions;
}
