import { isKmsError, KmsInternalError, ValidationError } from "../errors.ts";
import { assertObject, describe } from "../internal/assert.ts";
import { redactDataKey } from "../internal/redacted.ts";
import type { KmsLike } from "../kms-like.ts";
import type { CallOptions } from "../types.ts";
import {
  DATA_KEY_LENGTH,
  type DecryptDataKeyRequest,
  type EncryptDataKeyRequest,
  type EncryptDataKeyResult,
  type EncryptedDataKey,
  type Keyring,
  nextKeyringInstance,
  requestDataKey,
} from "./keyring.ts";

/** Provider id of data keys wrapped by a KMS key (the in-process Kms or AWS KMS alike). */
export const KMS_PROVIDER_ID = "kms";

export interface KmsKeyringOptions {
  /** Anything with encrypt / decrypt / generateDataKey: the in-process Kms, `awsKms` (@kms/aws). */
  readonly kms: KmsLike;
  /**
   * Key ids, ARNs or aliases. The first generates the data key, each other one wraps a copy. On
   * decrypt only copies made under these keys are tried: by id/ARN first, then each alias in
   * this order (see `decryptDataKey` for the cost). Empty = discovery keyring: decrypts with
   * whichever KMS key made a copy (decrypt only).
   */
  readonly keyIds: readonly string[];
  /** Passed to every KMS call; part of the keyring's identity (they change what KMS allows). */
  readonly grantTokens?: readonly string[];
  /**
   * Principal and request id passed to every KMS call. Everything but `requestId` is part of the
   * keyring's identity, so a shared DataKeyCache never hands one caller a data key that KMS
   * released to another. Copied at construction.
   */
  readonly callOptions?: CallOptions;
}

const instances = new WeakMap<object, number>();

/** What the KMS calls of one `decryptDataKey` met besides refusals. */
interface Attempts {
  /** The first failure that was not a refusal of the request (boxed: `throw undefined`). */
  outage: { readonly error: unknown } | undefined;
}

/**
 * Wraps data keys under KMS keys through any {@link KmsLike}. The message's encryption context is
 * passed to KMS, so a copy only unwraps with the same context and KMS audits every use.
 */
export class KmsKeyring implements Keyring {
  readonly identity: string;
  readonly keyIds: readonly string[];
  readonly #kms: KmsLike;
  readonly #grantTokens: readonly string[] | undefined;
  readonly #callOptions: CallOptions | undefined;

  /**
   * @throws ValidationException when `kms` is missing, a key id is not a string of 1 to 2048
   * characters, `grantTokens` is not an array of strings, or `callOptions` is not an object of
   * strings.
   */
  constructor(options: KmsKeyringOptions) {
    const kms = options?.kms as KmsLike | undefined;
    if (typeof kms?.generateDataKey !== "function" || typeof kms.decrypt !== "function") {
      throw new ValidationError('"kms" expected an object with generateDataKey/encrypt/decrypt');
    }
    if (!Array.isArray(options.keyIds)) {
      throw new ValidationError('"keyIds" expected an array of key ids (empty for discovery)');
    }
    for (const id of options.keyIds) {
      if (typeof id !== "string" || id.length === 0 || id.length > 2048) {
        throw new ValidationError('"keyIds" entries must be strings of 1 to 2048 characters');
      }
    }
    this.#kms = kms;
    this.keyIds = [...options.keyIds];
    this.#grantTokens = grantTokensArg(options.grantTokens);
    this.#callOptions = callOptionsArg(options.callOptions);
    // A per-client number keeps two Kms instances holding the same key id apart in the cache.
    let client = instances.get(kms);
    if (client === undefined) {
      client = nextKeyringInstance();
      instances.set(kms, client);
    }
    // Keyrings over one client with the same keys share cached data keys only when KMS would
    // answer them alike: same principal, source, service and grant tokens. The request id only
    // correlates logs, so caching across one caller's requests keeps working.
    const { requestId: _correlationOnly, ...caller } = this.#callOptions ?? {};
    const authorization = Object.entries(caller)
      .filter(([, value]) => value !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.identity = `kms#${client}:${JSON.stringify([this.keyIds, authorization, this.#grantTokens ?? null])}`;
  }

  /**
   * @throws ValidationException for a discovery keyring, or a request's `dataKey` that is not
   *   32 bytes; KMS errors from the calls. When a later key's Encrypt fails, a data key this
   *   keyring generated is zeroed first (it will never be used, and nobody else holds it).
   */
  async encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult> {
    const [generator, ...others] = this.keyIds;
    if (generator === undefined) {
      throw new ValidationError('"keyIds" is empty: a discovery KmsKeyring can only decrypt');
    }
    const context = request.encryptionContext;
    const encryptedDataKeys: EncryptedDataKey[] = [];
    let dataKey = requestDataKey(request);
    if (dataKey === undefined) {
      const generated = await this.#kms.generateDataKey(
        this.#withGrants({ keyId: generator, keySpec: "AES_256", encryptionContext: context }),
        this.#callOptions,
      );
      if (generated.plaintext.length !== DATA_KEY_LENGTH) {
        generated.plaintext.fill(0);
        throw new ValidationError(`KMS returned a data key that is not ${DATA_KEY_LENGTH} bytes`);
      }
      dataKey = generated.plaintext;
      encryptedDataKeys.push({
        providerId: KMS_PROVIDER_ID,
        providerInfo: generated.keyId,
        ciphertext: generated.ciphertextBlob,
      });
    } else {
      others.unshift(generator);
    }
    try {
      for (const keyId of others) {
        const wrapped = await this.#kms.encrypt(
          this.#withGrants({ keyId, plaintext: dataKey, encryptionContext: context }),
          this.#callOptions,
        );
        encryptedDataKeys.push({
          providerId: KMS_PROVIDER_ID,
          providerInfo: wrapped.keyId,
          ciphertext: wrapped.ciphertextBlob,
        });
      }
    } catch (error) {
      // A key the request brought is the caller's to zero (a MultiKeyring does).
      if (dataKey !== request.dataKey) dataKey.fill(0);
      throw error;
    }
    return redactDataKey<EncryptDataKeyResult>({ dataKey, encryptedDataKeys });
  }

  /**
   * Unwraps the first copy KMS will open for one of this keyring's keys. Order and cost:
   * 1. copies whose ARN matches a configured key id or ARN, in header order: one KMS Decrypt
   *    each, pinned to that ARN;
   * 2. then, for each remaining KMS copy in header order, each configured alias (`alias/…` or
   *    an alias ARN) in configuration order: one KMS Decrypt per (copy, alias) pair, pinned to
   *    the alias, which KMS resolves and refuses when it names another key. Aliases cannot be
   *    matched locally, so a keyring with `a` aliases may spend up to `a` calls per copy.
   * A discovery keyring (no key ids) tries each KMS copy once, pinned to the copy's provider
   * info. It stops at the first success; single-call failures (wrong key, disabled key,
   * unreachable KMS) only move on. When no copy opens and a call failed for a reason that is
   * not the request's (a KMS server fault, a network error), that failure is thrown rather
   * than answering "no key here": the message then fails as an outage, which a retry may
   * mend, not as an invalid message.
   * @throws the first KMS server fault (`clientFault` false, as is) or other thrown value (as
   *   a `KmsInternalError` with it in `cause`) when no copy opened.
   *
   * Provider info is unauthenticated until the data key is known (whoever made the message
   * chose it), and the decrypt policy's `allowedKeyIds` filters on it. So a KMS answer counts
   * only when the key KMS reports equals the copy's provider info, as in the AWS Encryption
   * SDK: a copy made under one key and labelled with another never opens.
   */
  async decryptDataKey(request: DecryptDataKeyRequest): Promise<Uint8Array | undefined> {
    const attempts: Attempts = { outage: undefined };
    const key = await this.#decryptAny(request, attempts);
    if (key !== undefined || attempts.outage === undefined) return key;
    const { error } = attempts.outage;
    throw isKmsError(error)
      ? error
      : new KmsInternalError("KMS Decrypt of a data key could not be completed; see cause", {
          cause: error,
        });
  }

  async #decryptAny(
    request: DecryptDataKeyRequest,
    attempts: Attempts,
  ): Promise<Uint8Array | undefined> {
    const copies = request.encryptedDataKeys.filter((edk) => edk.providerId === KMS_PROVIDER_ID);
    if (this.keyIds.length === 0) {
      for (const edk of copies) {
        const key = await this.#tryDecrypt(edk, request, edk.providerInfo, attempts);
        if (key !== undefined) return key;
      }
      return undefined;
    }
    const unmatched: EncryptedDataKey[] = [];
    for (const edk of copies) {
      if (this.keyIds.some((id) => matchesKey(id, edk.providerInfo))) {
        const key = await this.#tryDecrypt(edk, request, edk.providerInfo, attempts);
        if (key !== undefined) return key;
      } else {
        unmatched.push(edk);
      }
    }
    const aliases = this.keyIds.filter(isAlias);
    for (const edk of unmatched) {
      for (const alias of aliases) {
        const key = await this.#tryDecrypt(edk, request, alias, attempts);
        if (key !== undefined) return key;
      }
    }
    return undefined;
  }

  async #tryDecrypt(
    edk: EncryptedDataKey,
    request: DecryptDataKeyRequest,
    keyId: string,
    attempts: Attempts,
  ): Promise<Uint8Array | undefined> {
    try {
      const opened = await this.#kms.decrypt(
        this.#withGrants({
          ciphertextBlob: edk.ciphertext,
          encryptionContext: request.encryptionContext,
          keyId,
        }),
        this.#callOptions,
      );
      if (opened.keyId === edk.providerInfo && opened.plaintext.length === DATA_KEY_LENGTH) {
        return opened.plaintext;
      }
      opened.plaintext.fill(0);
    } catch (error) {
      // Another key or another copy may still succeed. A refusal of this request (wrong key,
      // disabled, denied, tampered) is the copy's own; anything else is kept to report.
      if (!(isKmsError(error) && error.clientFault)) attempts.outage ??= { error };
    }
    return undefined;
  }

  #withGrants<T extends object>(request: T): T {
    return this.#grantTokens === undefined
      ? request
      : { ...request, grantTokens: this.#grantTokens };
  }
}

/**
 * A copy of `grantTokens`, checked: they become part of the identity, which must neither throw
 * nor let two different lists serialize alike (a string would otherwise spread into characters).
 */
function grantTokensArg(value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((token) => typeof token === "string")) {
    throw new ValidationError(`"grantTokens" expected an array of strings, got ${describe(value)}`);
  }
  return [...value];
}

/** A frozen copy of `callOptions`, whose values (part of the identity) must be strings. */
function callOptionsArg(value: unknown): CallOptions | undefined {
  if (value === undefined) return undefined;
  const copy = { ...assertObject("callOptions", value) };
  for (const [name, field] of Object.entries(copy)) {
    if (field !== undefined && typeof field !== "string") {
      throw new ValidationError(`"callOptions.${name}" expected a string, got ${describe(field)}`);
    }
  }
  return Object.freeze(copy) as CallOptions;
}

/** Whether configured `id` (key id or key ARN) names the key that made a copy under `arn`. */
function matchesKey(id: string, arn: string): boolean {
  return id === arn || arn.endsWith(`:key/${id}`);
}

function isAlias(id: string): boolean {
  return id.startsWith("alias/") || id.includes(":alias/");
}
