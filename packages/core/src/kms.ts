import { DEFAULT_IDENTITY, type KmsIdentity } from "./arn.ts";
import { type Clock, systemClock } from "./clock.ts";
import { isKmsError, KmsInternalError, RootKeyError, ValidationError } from "./errors.ts";
import { RootKeySource } from "./hsm/root-key.ts";
import { SoftwareHsm } from "./hsm/software-hsm.ts";
import {
  destroyKey,
  isDeletionDue,
  isRotationDue,
  type KmsContext,
  rotateIfDue,
} from "./internal/key-access.ts";
import type { KeyStore } from "./keystore/key-store.ts";
import { MemoryKeyStore } from "./keystore/memory-key-store.ts";
import * as aliases from "./operations/aliases.ts";
import * as keys from "./operations/keys.ts";
import * as rotation from "./operations/rotation.ts";
import * as symmetric from "./operations/symmetric.ts";
import * as tags from "./operations/tags.ts";
import type {
  AliasRequest,
  CallOptions,
  CreateKeyRequest,
  CreateKeyResponse,
  DecryptRequest,
  DecryptResponse,
  DescribeKeyRequest,
  DescribeKeyResponse,
  EnableKeyRotationRequest,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
  GenerateRandomRequest,
  GenerateRandomResponse,
  GetKeyRotationStatusResponse,
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
  TagResourceRequest,
  UntagResourceRequest,
  UpdateKeyDescriptionRequest,
} from "./types.ts";

export interface KmsOptions {
  /** Where keys live; default: a new MemoryKeyStore (keys die with the process). */
  readonly store?: KeyStore;
  /**
   * The root key that wraps key material at rest. Required with a durable store; with the
   * memory store the default is a fresh random key.
   */
  readonly rootKey?: RootKeySource | Uint8Array;
  /** Time source for rotation schedules and deletion windows; default: the system clock. */
  readonly clock?: Clock;
  /** Region used in ARNs; default `local`. */
  readonly region?: string;
  /** 12-digit account id used in ARNs; default `000000000000`. */
  readonly account?: string;
  /** ARN partition; default `aws`, so AWS tooling parses our ARNs. */
  readonly partition?: string;
}

/**
 * The KMS facade: every operation validates its request, checks the key's state, performs the
 * cryptographic work in the HSM layer, and raises only KmsError subclasses.
 */
export class Kms {
  readonly #ctx: KmsContext;

  /** Use `createKms`; the constructor expects an opened HSM. */
  constructor(ctx: KmsContext) {
    this.#ctx = ctx;
  }

  /** The account, region and partition this KMS puts in its ARNs. */
  get identity(): KmsIdentity {
    return this.#ctx.identity;
  }

  /**
   * The one pipeline every operation goes through. `body` receives the context for this call;
   * authorization and auditing hook in here so that no operation can skip them.
   */
  async #run<T>(
    operation: string,
    _request: unknown,
    _options: CallOptions | undefined,
    body: (ctx: KmsContext) => Promise<T>,
  ): Promise<T> {
    try {
      return await body(this.#ctx);
    } catch (error) {
      if (isKmsError(error)) throw error;
      // Unknown failures become KMSInternalException with the original kept as cause, so callers
      // only ever handle KmsError while the detail is not lost for operators.
      throw new KmsInternalError(`${operation} failed unexpectedly`, { cause: error });
    }
  }

  /**
   * Creates a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).
   * @throws ValidationException, TagException, UnsupportedOperationException.
   */
  createKey(request: CreateKeyRequest = {}, options?: CallOptions): Promise<CreateKeyResponse> {
    return this.#run("createKey", request, options, (ctx) => keys.createKey(ctx, request));
  }

  /** @throws NotFoundException, ValidationException. */
  describeKey(request: DescribeKeyRequest, options?: CallOptions): Promise<DescribeKeyResponse> {
    return this.#run("describeKey", request, options, (ctx) => keys.describeKey(ctx, request));
  }

  /** Keys ordered by key id; `limit` 1–1000 (default 100). @throws InvalidMarkerException. */
  listKeys(request: PageRequest = {}, options?: CallOptions): Promise<ListKeysResponse> {
    return this.#run("listKeys", request, options, (ctx) => keys.listKeys(ctx, request));
  }

  /** @throws NotFoundException, KMSInvalidStateException, ValidationException. */
  updateKeyDescription(request: UpdateKeyDescriptionRequest, options?: CallOptions): Promise<void> {
    return this.#run("updateKeyDescription", request, options, (ctx) =>
      keys.updateKeyDescription(ctx, request),
    );
  }

  /** @throws NotFoundException, KMSInvalidStateException. */
  enableKey(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("enableKey", request, options, (ctx) => keys.enableKey(ctx, request));
  }

  /** @throws NotFoundException, KMSInvalidStateException. */
  disableKey(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("disableKey", request, options, (ctx) => keys.disableKey(ctx, request));
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
    return this.#run("scheduleKeyDeletion", request, options, (ctx) =>
      keys.scheduleKeyDeletion(ctx, request),
    );
  }

  /** Cancels a scheduled deletion; the key becomes Disabled. @throws KMSInvalidStateException. */
  cancelKeyDeletion(request: KeyIdRequest, options?: CallOptions): Promise<{ keyId: string }> {
    return this.#run("cancelKeyDeletion", request, options, (ctx) =>
      keys.cancelKeyDeletion(ctx, request),
    );
  }

  /** @throws AlreadyExistsException, InvalidAliasNameException, NotFoundException, KMSInvalidStateException. */
  createAlias(request: AliasRequest, options?: CallOptions): Promise<void> {
    return this.#run("createAlias", request, options, (ctx) => aliases.createAlias(ctx, request));
  }

  /** @throws NotFoundException, ValidationException, KMSInvalidStateException. */
  updateAlias(request: AliasRequest, options?: CallOptions): Promise<void> {
    return this.#run("updateAlias", request, options, (ctx) => aliases.updateAlias(ctx, request));
  }

  /** @throws NotFoundException, ValidationException. */
  deleteAlias(request: { aliasName: string }, options?: CallOptions): Promise<void> {
    return this.#run("deleteAlias", request, options, (ctx) => aliases.deleteAlias(ctx, request));
  }

  /** Aliases ordered by name; `limit` 1–100 (default 50). @throws InvalidMarkerException. */
  listAliases(
    request: ListAliasesRequest = {},
    options?: CallOptions,
  ): Promise<ListAliasesResponse> {
    return this.#run("listAliases", request, options, (ctx) => aliases.listAliases(ctx, request));
  }

  /**
   * Turns on automatic rotation every 90–2560 days (default 365).
   * @throws DisabledException, KMSInvalidStateException, UnsupportedOperationException.
   */
  enableKeyRotation(request: EnableKeyRotationRequest, options?: CallOptions): Promise<void> {
    return this.#run("enableKeyRotation", request, options, (ctx) =>
      rotation.enableKeyRotation(ctx, request),
    );
  }

  /** @throws DisabledException, KMSInvalidStateException, UnsupportedOperationException. */
  disableKeyRotation(request: KeyIdRequest, options?: CallOptions): Promise<void> {
    return this.#run("disableKeyRotation", request, options, (ctx) =>
      rotation.disableKeyRotation(ctx, request),
    );
  }

  /** @throws NotFoundException, UnsupportedOperationException. */
  getKeyRotationStatus(
    request: KeyIdRequest,
    options?: CallOptions,
  ): Promise<GetKeyRotationStatusResponse> {
    return this.#run("getKeyRotationStatus", request, options, (ctx) =>
      rotation.getKeyRotationStatus(ctx, request),
    );
  }

  /**
   * Adds new key material now; older material keeps decrypting what it encrypted.
   * @throws DisabledException, KMSInvalidStateException, LimitExceededException (25 per key).
   */
  rotateKeyOnDemand(
    request: KeyIdRequest,
    options?: CallOptions,
  ): Promise<RotateKeyOnDemandResponse> {
    return this.#run("rotateKeyOnDemand", request, options, (ctx) =>
      rotation.rotateKeyOnDemand(ctx, request),
    );
  }

  /** @throws NotFoundException, InvalidMarkerException, UnsupportedOperationException. */
  listKeyRotations(
    request: ListKeyRotationsRequest,
    options?: CallOptions,
  ): Promise<ListKeyRotationsResponse> {
    return this.#run("listKeyRotations", request, options, (ctx) =>
      rotation.listKeyRotations(ctx, request),
    );
  }

  /**
   * Encrypts up to 4096 bytes under a symmetric key, bound to the encryption context.
   * @throws NotFoundException, DisabledException, KMSInvalidStateException,
   *   InvalidKeyUsageException, ValidationException.
   */
  encrypt(request: EncryptRequest, options?: CallOptions): Promise<EncryptResponse> {
    return this.#run("encrypt", request, options, (ctx) => symmetric.encrypt(ctx, request));
  }

  /**
   * Decrypts a ciphertext blob; the encryption context must match exactly.
   * @throws InvalidCiphertextException (tampered, wrong context, unknown key), IncorrectKeyException,
   *   DisabledException, KMSInvalidStateException, NotFoundException.
   */
  decrypt(request: DecryptRequest, options?: CallOptions): Promise<DecryptResponse> {
    return this.#run("decrypt", request, options, (ctx) => symmetric.decrypt(ctx, request));
  }

  /**
   * Decrypts and re-encrypts under another key and/or context without returning the plaintext.
   * @throws as decrypt and encrypt.
   */
  reEncrypt(request: ReEncryptRequest, options?: CallOptions): Promise<ReEncryptResponse> {
    return this.#run("reEncrypt", request, options, (ctx) => symmetric.reEncrypt(ctx, request));
  }

  /**
   * Returns a fresh data key in plaintext and encrypted under the KMS key.
   * @throws as encrypt; ValidationException unless exactly one of keySpec/numberOfBytes is set.
   */
  generateDataKey(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyResponse> {
    return this.#run("generateDataKey", request, options, (ctx) =>
      symmetric.generateDataKey(ctx, request),
    );
  }

  /** As generateDataKey, returning only the encrypted copy. */
  generateDataKeyWithoutPlaintext(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyWithoutPlaintextResponse> {
    return this.#run("generateDataKeyWithoutPlaintext", request, options, (ctx) =>
      symmetric.generateDataKeyWithoutPlaintext(ctx, request),
    );
  }

  /** 1–1024 random bytes from the CSPRNG. @throws ValidationException. */
  generateRandom(
    request: GenerateRandomRequest,
    options?: CallOptions,
  ): Promise<GenerateRandomResponse> {
    return this.#run("generateRandom", request, options, () => symmetric.generateRandom(request));
  }

  /** @throws TagException, NotFoundException, KMSInvalidStateException. */
  tagResource(request: TagResourceRequest, options?: CallOptions): Promise<void> {
    return this.#run("tagResource", request, options, (ctx) => tags.tagResource(ctx, request));
  }

  /** @throws TagException, NotFoundException, KMSInvalidStateException. */
  untagResource(request: UntagResourceRequest, options?: CallOptions): Promise<void> {
    return this.#run("untagResource", request, options, (ctx) => tags.untagResource(ctx, request));
  }

  /** Tags ordered by key; `limit` 1–50 (default 50). */
  listResourceTags(
    request: ListResourceTagsRequest,
    options?: CallOptions,
  ): Promise<ListResourceTagsResponse> {
    return this.#run("listResourceTags", request, options, (ctx) =>
      tags.listResourceTags(ctx, request),
    );
  }

  /**
   * Performs due work on every key: destroys keys whose deletion window has passed and rotates
   * keys whose rotation is due. The same work also happens lazily when a key is used; call this
   * from a timer so that unused keys are destroyed on schedule too.
   */
  runMaintenance(): Promise<MaintenanceReport> {
    return this.#run("runMaintenance", undefined, undefined, async () => {
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
    });
  }

  /** Closes the key store. */
  close(): Promise<void> {
    return this.#ctx.store.close();
  }

  toJSON(): { kms: string; store: string } {
    return { kms: "Kms", store: this.#ctx.store.description };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `Kms { store: ${this.#ctx.store.description}, account: ${this.#ctx.identity.account} }`;
  }
}

/**
 * Creates a KMS. With no options: an in-memory store under a fresh random root key.
 * @throws RootKeyError when a durable store is given without a root key, or with the wrong one.
 */
export async function createKms(options: KmsOptions = {}): Promise<Kms> {
  const store = options.store ?? new MemoryKeyStore();
  let source: RootKeySource;
  if (options.rootKey instanceof Uint8Array) source = RootKeySource.fromBytes(options.rootKey);
  else if (options.rootKey !== undefined) source = options.rootKey;
  else if (store instanceof MemoryKeyStore) source = RootKeySource.ephemeral();
  else {
    throw new RootKeyError(
      `key store ${store.description} is durable and needs a root key: pass rootKey ` +
        "(RootKeySource.fromEnv(), fromFile(), fromPassphrase(), or devFile() for development)",
    );
  }
  const identity: KmsIdentity = {
    partition: options.partition ?? DEFAULT_IDENTITY.partition,
    region: options.region ?? DEFAULT_IDENTITY.region,
    account: options.account ?? DEFAULT_IDENTITY.account,
  };
  if (!/^\d{12}$/.test(identity.account)) {
    throw new ValidationError(`"account" must be 12 digits, got ${identity.account}`);
  }
  const hsm = await SoftwareHsm.open(source, store);
  return new Kms({ store, hsm, clock: options.clock ?? systemClock, identity });
}
