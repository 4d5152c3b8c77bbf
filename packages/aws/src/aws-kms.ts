import { BlockList, isIP } from "node:net";
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EnableKeyCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  GenerateMacCommand,
  GetPublicKeyCommand,
  type KMSClient,
  ScheduleKeyDeletionCommand,
  type KeyMetadata as SdkKeyMetadata,
  SignCommand,
  VerifyCommand,
  VerifyMacCommand,
} from "@aws-sdk/client-kms";
import {
  type CallOptions,
  type DecryptRequest,
  type DecryptResponse,
  type EncryptionAlgorithm,
  type EncryptRequest,
  type EncryptResponse,
  type GenerateDataKeyRequest,
  type GenerateDataKeyResponse,
  type GenerateDataKeyWithoutPlaintextResponse,
  type GenerateMacRequest,
  type GenerateMacResponse,
  type GetPublicKeyRequest,
  type GetPublicKeyResponse,
  InvalidMacError,
  InvalidSignatureError,
  KEY_SPEC_TABLE,
  type KeyAgreementAlgorithm,
  type KeySpec,
  type KeyUsage,
  KmsInternalError,
  type KmsLike,
  type MacAlgorithm,
  type SigningAlgorithm,
  type SignRequest,
  type SignResponse,
  ValidationError,
  type VerifyMacRequest,
  type VerifyMacResponse,
  type VerifyRequest,
  type VerifyResponse,
} from "@kms/core";
import { toKmsError } from "./aws-errors.ts";
import { assertRequest, blob, context, describe, grantTokens } from "./internal/input.ts";
import {
  asRequested,
  bytes,
  date,
  flag,
  keyIdFor,
  knownMembers,
  type Members,
  oneOf,
  optionalText,
  text,
  wipe,
} from "./internal/output.ts";

export interface AwsKmsOptions {
  /**
   * Milliseconds one call may take in all, including the SDK's retries and credential
   * resolution; past it the request is aborted and the call fails with KmsInternalError.
   * Default: none (the client's own `requestHandler` timeouts and `maxAttempts` apply).
   */
  readonly timeoutMs?: number;
  /**
   * Send requests over plain `http://` to a host other than this machine. Default false: such a
   * call fails with ValidationError before anything is sent, since plaintexts and data keys
   * would cross the network unencrypted. Plain HTTP to loopback (`localhost`, 127.0.0.0/8,
   * `::1`: a local KMS emulator, `kms serve` on the same host) is always allowed.
   */
  readonly allowInsecureEndpoint?: boolean;
}

const ENCRYPTION_ALGORITHMS: Members<EncryptionAlgorithm> = {
  SYMMETRIC_DEFAULT: true,
  RSAES_OAEP_SHA_1: true,
  RSAES_OAEP_SHA_256: true,
};
const SIGNING_ALGORITHMS: Members<SigningAlgorithm> = {
  RSASSA_PSS_SHA_256: true,
  RSASSA_PSS_SHA_384: true,
  RSASSA_PSS_SHA_512: true,
  RSASSA_PKCS1_V1_5_SHA_256: true,
  RSASSA_PKCS1_V1_5_SHA_384: true,
  RSASSA_PKCS1_V1_5_SHA_512: true,
  ECDSA_SHA_256: true,
  ECDSA_SHA_384: true,
  ECDSA_SHA_512: true,
  ED25519_SHA_512: true,
  ED25519_PH_SHA_512: true,
  ML_DSA_SHAKE_256: true,
};
const MAC_ALGORITHMS: Members<MacAlgorithm> = {
  HMAC_SHA_224: true,
  HMAC_SHA_256: true,
  HMAC_SHA_384: true,
  HMAC_SHA_512: true,
};
const KEY_AGREEMENT_ALGORITHMS: Members<KeyAgreementAlgorithm> = { ECDH: true };
const KEY_USAGES: Members<KeyUsage> = {
  ENCRYPT_DECRYPT: true,
  SIGN_VERIFY: true,
  GENERATE_VERIFY_MAC: true,
  KEY_AGREEMENT: true,
};
const KEY_SPECS: Members<KeySpec> = Object.fromEntries(
  Object.keys(KEY_SPEC_TABLE).map((spec) => [spec, true]),
) as Members<KeySpec>;

const DATA_KEY_BYTES = { AES_128: 16, AES_256: 32 } as const;

const MAX_TIMEOUT_MS = 2 ** 31 - 1;

interface SendOptions {
  readonly abortSignal?: AbortSignal;
}

/** What the build step of the SDK's middleware stack passes on: the HTTP request it built. */
interface BuildArgs {
  readonly request: unknown;
}
type BuildHandler = (args: BuildArgs) => Promise<unknown>;

/**
 * The one overload of a command's `middlewareStack.add` that {@link AwsKms} calls. Declared here
 * because the SDK's middleware types live in @smithy/types, which this package does not depend
 * on; the stack's other overloads (other steps) keep TypeScript from matching it structurally.
 */
interface BuildStep {
  add(
    middleware: (next: BuildHandler) => BuildHandler,
    options: { readonly step: "build"; readonly name: string; readonly override: boolean },
  ): void;
}

/** Addresses whose traffic never leaves the machine. */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** `localhost`, or an address in 127.0.0.0/8 or `::1` (the SDK gives IPv6 in brackets). */
function isLoopback(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") return true;
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? "ipv4" : "ipv6");
}

/**
 * Refuses a request about to go out over plain HTTP to another machine. Run on the request the
 * SDK built, so it sees the endpoint however it was configured (`endpoint`, AWS_ENDPOINT_URL_KMS
 * or the shared config file, a custom endpoint provider), and before the signer, the retries and
 * the HTTP handler: nothing is sent. The SDK resolves the endpoint only asynchronously, on the
 * way to a send, so there is nothing to check in the constructor.
 */
const refuseCleartext: (next: BuildHandler) => BuildHandler = (next) => async (args) => {
  const { protocol, hostname, port } = args.request as {
    readonly protocol?: unknown;
    readonly hostname?: unknown;
    readonly port?: unknown;
  };
  // Node's HTTP handler uses TLS for "https:" only: anything else goes out in clear.
  if (protocol === "https:" || (typeof hostname === "string" && isLoopback(hostname))) {
    return next(args);
  }
  const where = `${String(protocol)}//${String(hostname)}${typeof port === "number" ? `:${port}` : ""}`;
  throw new ValidationError(
    `the KMSClient's endpoint ${where} is plain HTTP to another machine: plaintexts and data keys would cross the network unencrypted; use https://, or pass allowInsecureEndpoint: true to awsKms if the network is trusted`,
  );
};

/**
 * What the key-management calls of {@link AwsKms} read of AWS's KeyMetadata: enough to find, name,
 * shred and restore a key. `keyState` is AWS's, which has states core does not (`Creating`,
 * `Unavailable`, …).
 */
export interface AwsKeyMetadata {
  readonly keyId: string;
  readonly arn: string;
  readonly keyState: string;
  readonly enabled: boolean;
  readonly description: string;
  readonly deletionDate?: Date;
}

function keyMetadataOf(operation: string, metadata: SdkKeyMetadata | undefined): AwsKeyMetadata {
  if (metadata === undefined || metadata === null) {
    throw new KmsInternalError(`AWS KMS ${operation} response lacks "KeyMetadata"`);
  }
  const deletionDate =
    metadata.DeletionDate === undefined ? undefined : date(operation, metadata, "DeletionDate");
  return {
    keyId: text(operation, metadata, "KeyId"),
    arn: text(operation, metadata, "Arn"),
    keyState: text(operation, metadata, "KeyState"),
    enabled: flag(operation, metadata, "Enabled"),
    description: optionalText(operation, metadata, "Description") ?? "",
    ...(deletionDate === undefined ? {} : { deletionDate }),
  };
}

/**
 * A {@link KmsLike} over `@aws-sdk/client-kms`: each method sends the matching AWS KMS command
 * through the given client, so every @kms adapter (field encryption, keyrings, HTTP signatures)
 * runs against AWS KMS or any endpoint speaking its protocol.
 *
 * Calls run as whoever the client's credentials are. `CallOptions` are accepted for the
 * interface and ignored: `principal` cannot be chosen per call (AWS authenticates the signed
 * request), and AWS KMS has no input for `requestId`, `sourceIp` or `viaService`; AWS assigns its
 * own request id (in the SDK error's `$metadata` for failures, and in CloudTrail).
 *
 * Errors are @kms/core's classes (see {@link toKmsError}); a response lacking a member core's
 * response type requires fails with KmsInternalError. Request members the SDK's serializer would
 * alter (an encryption context pair whose value is not a string, a blob that is not a
 * Uint8Array, a grant token that is not a string) are refused first with ValidationException.
 */
export class AwsKms implements KmsLike {
  readonly #client: KMSClient;
  readonly #timeoutMs: number | undefined;
  readonly #allowInsecureEndpoint: boolean;

  /**
   * @throws ValidationException when `client` has no `send`, `timeoutMs` is not 1–2^31-1 or
   *   `allowInsecureEndpoint` is not a boolean.
   */
  constructor(client: KMSClient, options: AwsKmsOptions = {}) {
    if (typeof (client as Partial<KMSClient> | null)?.send !== "function") {
      throw new ValidationError(`"client" expected a KMSClient (an object with send)`);
    }
    if (options === null || typeof options !== "object") {
      throw new ValidationError(`"options" expected an object, got ${describe(options)}`);
    }
    const { timeoutMs } = options;
    if (
      timeoutMs !== undefined &&
      (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS)
    ) {
      throw new ValidationError(
        `"timeoutMs" must be an integer from 1 to ${MAX_TIMEOUT_MS}, got ${String(timeoutMs)}`,
      );
    }
    const { allowInsecureEndpoint } = options;
    if (allowInsecureEndpoint !== undefined && typeof allowInsecureEndpoint !== "boolean") {
      throw new ValidationError(
        `"allowInsecureEndpoint" expected a boolean, got ${describe(allowInsecureEndpoint)}`,
      );
    }
    this.#client = client;
    this.#timeoutMs = timeoutMs;
    this.#allowInsecureEndpoint = allowInsecureEndpoint === true;
  }

  /** `command`, refusing to go out in clear unless allowInsecureEndpoint (see refuseCleartext). */
  #guard<C extends { readonly middlewareStack: object }>(command: C): C {
    if (!this.#allowInsecureEndpoint) {
      (command.middlewareStack as BuildStep).add(refuseCleartext, {
        step: "build",
        name: "kmsRefuseCleartextEndpoint",
        override: true,
      });
    }
    return command;
  }

  /**
   * AWS KMS Encrypt.
   * @throws NotFoundException, DisabledException, KMSInvalidStateException,
   *   InvalidKeyUsageException, InvalidGrantTokenException, AccessDeniedException,
   *   ValidationException, DryRunOperationException, KMSInternalException.
   */
  async encrypt(request: EncryptRequest, _options?: CallOptions): Promise<EncryptResponse> {
    assertRequest(request);
    const op = "Encrypt";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new EncryptCommand({
            KeyId: request.keyId,
            Plaintext: blob("plaintext", request.plaintext),
            EncryptionContext: context(request.encryptionContext),
            EncryptionAlgorithm: request.encryptionAlgorithm,
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    return {
      ciphertextBlob: bytes(op, out, "CiphertextBlob"),
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      encryptionAlgorithm: asRequested(
        op,
        out,
        "EncryptionAlgorithm",
        ENCRYPTION_ALGORITHMS,
        request.encryptionAlgorithm ?? "SYMMETRIC_DEFAULT",
      ),
    };
  }

  /**
   * AWS KMS Decrypt.
   * @throws InvalidCiphertextException, IncorrectKeyException, NotFoundException,
   *   DisabledException, KMSInvalidStateException, InvalidKeyUsageException,
   *   InvalidGrantTokenException, AccessDeniedException, ValidationException,
   *   DryRunOperationException, KMSInternalException.
   */
  async decrypt(request: DecryptRequest, _options?: CallOptions): Promise<DecryptResponse> {
    assertRequest(request);
    const op = "Decrypt";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new DecryptCommand({
            CiphertextBlob: blob("ciphertextBlob", request.ciphertextBlob),
            EncryptionContext: context(request.encryptionContext),
            KeyId: request.keyId,
            EncryptionAlgorithm: request.encryptionAlgorithm,
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    try {
      const keyId = keyIdFor(op, out, "KeyId", request.keyId);
      const encryptionAlgorithm = asRequested(
        op,
        out,
        "EncryptionAlgorithm",
        ENCRYPTION_ALGORITHMS,
        request.encryptionAlgorithm ?? "SYMMETRIC_DEFAULT",
      );
      const keyMaterialId = optionalText(op, out, "KeyMaterialId");
      // Last, so that a malformed response fails before the plaintext is copied anywhere.
      const plaintext = bytes(op, out, "Plaintext");
      return {
        plaintext,
        keyId,
        encryptionAlgorithm,
        ...(keyMaterialId === undefined ? {} : { keyMaterialId }),
      };
    } finally {
      wipe(out, "Plaintext");
    }
  }

  /**
   * AWS KMS GenerateDataKey.
   * @throws KMSInternalException also when the data key is not the requested length; and as
   *   encrypt.
   */
  async generateDataKey(
    request: GenerateDataKeyRequest,
    _options?: CallOptions,
  ): Promise<GenerateDataKeyResponse> {
    assertRequest(request);
    const op = "GenerateDataKey";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new GenerateDataKeyCommand({
            KeyId: request.keyId,
            KeySpec: request.keySpec,
            NumberOfBytes: request.numberOfBytes,
            EncryptionContext: context(request.encryptionContext),
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    try {
      const ciphertextBlob = bytes(op, out, "CiphertextBlob");
      const keyId = keyIdFor(op, out, "KeyId", request.keyId);
      const keyMaterialId = optionalText(op, out, "KeyMaterialId");
      const plaintext = bytes(op, out, "Plaintext");
      const expected =
        request.numberOfBytes ??
        (request.keySpec === undefined ? undefined : DATA_KEY_BYTES[request.keySpec]);
      // A short key from a faulty or hostile endpoint would silently weaken everything sealed
      // under it; AWS never answers with another length.
      if (expected !== undefined && plaintext.length !== expected) {
        const got = plaintext.length;
        plaintext.fill(0);
        throw new KmsInternalError(
          `AWS KMS ${op} returned a ${got}-byte data key; ${expected} bytes were requested`,
        );
      }
      return {
        ciphertextBlob,
        plaintext,
        keyId,
        ...(keyMaterialId === undefined ? {} : { keyMaterialId }),
      };
    } finally {
      wipe(out, "Plaintext");
    }
  }

  /** AWS KMS GenerateDataKeyWithoutPlaintext. @throws as encrypt. */
  async generateDataKeyWithoutPlaintext(
    request: GenerateDataKeyRequest,
    _options?: CallOptions,
  ): Promise<GenerateDataKeyWithoutPlaintextResponse> {
    assertRequest(request);
    const op = "GenerateDataKeyWithoutPlaintext";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new GenerateDataKeyWithoutPlaintextCommand({
            KeyId: request.keyId,
            KeySpec: request.keySpec,
            NumberOfBytes: request.numberOfBytes,
            EncryptionContext: context(request.encryptionContext),
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    const keyMaterialId = optionalText(op, out, "KeyMaterialId");
    return {
      ciphertextBlob: bytes(op, out, "CiphertextBlob"),
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      ...(keyMaterialId === undefined ? {} : { keyMaterialId }),
    };
  }

  /**
   * AWS KMS Sign. ECDSA signatures are DER, as AWS returns them.
   * @throws InvalidKeyUsageException, ValidationException, NotFoundException, DisabledException,
   *   KMSInvalidStateException, AccessDeniedException, KMSInternalException.
   */
  async sign(request: SignRequest, _options?: CallOptions): Promise<SignResponse> {
    assertRequest(request);
    const op = "Sign";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new SignCommand({
            KeyId: request.keyId,
            Message: blob("message", request.message),
            MessageType: request.messageType,
            SigningAlgorithm: request.signingAlgorithm,
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    return {
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      signature: bytes(op, out, "Signature"),
      signingAlgorithm: asRequested(
        op,
        out,
        "SigningAlgorithm",
        SIGNING_ALGORITHMS,
        request.signingAlgorithm,
      ),
    };
  }

  /**
   * AWS KMS Verify. As in AWS and core, an invalid signature throws rather than returning
   * `signatureValid: false`; an endpoint that answers false is treated the same way.
   * @throws KMSInvalidSignatureException when the signature does not verify, and as sign.
   */
  async verify(request: VerifyRequest, _options?: CallOptions): Promise<VerifyResponse> {
    assertRequest(request);
    const op = "Verify";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new VerifyCommand({
            KeyId: request.keyId,
            Message: blob("message", request.message),
            MessageType: request.messageType,
            Signature: blob("signature", request.signature),
            SigningAlgorithm: request.signingAlgorithm,
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    if (!flag(op, out, "SignatureValid")) {
      throw new InvalidSignatureError("the signature is not valid for this message");
    }
    return {
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      signatureValid: true,
      signingAlgorithm: asRequested(
        op,
        out,
        "SigningAlgorithm",
        SIGNING_ALGORITHMS,
        request.signingAlgorithm,
      ),
    };
  }

  /**
   * AWS KMS GenerateMac.
   * @throws InvalidKeyUsageException, ValidationException, NotFoundException, DisabledException,
   *   KMSInvalidStateException, AccessDeniedException, KMSInternalException.
   */
  async generateMac(
    request: GenerateMacRequest,
    _options?: CallOptions,
  ): Promise<GenerateMacResponse> {
    assertRequest(request);
    const op = "GenerateMac";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new GenerateMacCommand({
            KeyId: request.keyId,
            Message: blob("message", request.message),
            MacAlgorithm: request.macAlgorithm,
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    return {
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      mac: bytes(op, out, "Mac"),
      macAlgorithm: asRequested(op, out, "MacAlgorithm", MAC_ALGORITHMS, request.macAlgorithm),
    };
  }

  /**
   * AWS KMS VerifyMac. A mismatch throws, as in AWS and core; so does an endpoint answering
   * `MacValid: false`.
   * @throws KMSInvalidMacException when the MAC does not match, and as generateMac.
   */
  async verifyMac(request: VerifyMacRequest, _options?: CallOptions): Promise<VerifyMacResponse> {
    assertRequest(request);
    const op = "VerifyMac";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new VerifyMacCommand({
            KeyId: request.keyId,
            Message: blob("message", request.message),
            MacAlgorithm: request.macAlgorithm,
            Mac: blob("mac", request.mac),
            GrantTokens: grantTokens(request.grantTokens),
            DryRun: request.dryRun,
          }),
        ),
        o,
      ),
    );
    if (!flag(op, out, "MacValid")) {
      throw new InvalidMacError("the MAC is not valid for this message");
    }
    return {
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      macValid: true,
      macAlgorithm: asRequested(op, out, "MacAlgorithm", MAC_ALGORITHMS, request.macAlgorithm),
    };
  }

  /**
   * AWS KMS GetPublicKey. Algorithm lists keep only the algorithms core knows.
   * @throws UnsupportedOperationException for symmetric and HMAC keys; KMSInternalException
   *   for a key spec or usage core does not know (SM2, ML-KEM); and the key-state errors.
   */
  async getPublicKey(
    request: GetPublicKeyRequest,
    _options?: CallOptions,
  ): Promise<GetPublicKeyResponse> {
    assertRequest(request);
    const op = "GetPublicKey";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new GetPublicKeyCommand({
            KeyId: request.keyId,
            GrantTokens: grantTokens(request.grantTokens),
          }),
        ),
        o,
      ),
    );
    const keySpec = oneOf(op, out, "KeySpec", KEY_SPECS);
    const encryptionAlgorithms = knownMembers(
      op,
      out,
      "EncryptionAlgorithms",
      ENCRYPTION_ALGORITHMS,
    );
    const signingAlgorithms = knownMembers(op, out, "SigningAlgorithms", SIGNING_ALGORITHMS);
    const keyAgreementAlgorithms = knownMembers(
      op,
      out,
      "KeyAgreementAlgorithms",
      KEY_AGREEMENT_ALGORITHMS,
    );
    return {
      keyId: keyIdFor(op, out, "KeyId", request.keyId),
      publicKey: bytes(op, out, "PublicKey"),
      // The deprecated member's enumeration stops before the newer key specs (Ed25519, ML-DSA),
      // so it may be absent; AWS defines it as equal to KeySpec.
      customerMasterKeySpec:
        out.CustomerMasterKeySpec === undefined
          ? keySpec
          : oneOf(op, out, "CustomerMasterKeySpec", KEY_SPECS),
      keySpec,
      keyUsage: oneOf(op, out, "KeyUsage", KEY_USAGES),
      ...(encryptionAlgorithms === undefined ? {} : { encryptionAlgorithms }),
      ...(signingAlgorithms === undefined ? {} : { signingAlgorithms }),
      ...(keyAgreementAlgorithms === undefined ? {} : { keyAgreementAlgorithms }),
    };
  }

  /**
   * AWS KMS DescribeKey (key id, key ARN, alias name or alias ARN).
   * @throws NotFoundException, AccessDeniedException, KMSInternalException.
   */
  async describeKey(request: { readonly keyId: string }): Promise<{ keyMetadata: AwsKeyMetadata }> {
    assertRequest(request);
    const op = "DescribeKey";
    const out = await this.#call(op, (o) =>
      this.#client.send(this.#guard(new DescribeKeyCommand({ KeyId: request.keyId })), o),
    );
    return { keyMetadata: keyMetadataOf(op, out.KeyMetadata) };
  }

  /**
   * AWS KMS CreateKey, with the caller's default key policy.
   * @throws ValidationException, LimitExceededException, AccessDeniedException,
   *   KMSInternalException.
   */
  async createKey(
    request: {
      readonly description?: string;
      readonly keySpec?: KeySpec;
      readonly keyUsage?: KeyUsage;
    } = {},
  ): Promise<{ keyMetadata: AwsKeyMetadata }> {
    assertRequest(request);
    const op = "CreateKey";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new CreateKeyCommand({
            Description: request.description,
            KeySpec: request.keySpec,
            KeyUsage: request.keyUsage,
          }),
        ),
        o,
      ),
    );
    return { keyMetadata: keyMetadataOf(op, out.KeyMetadata) };
  }

  /**
   * AWS KMS CreateAlias.
   * @throws AlreadyExistsException, NotFoundException, ValidationException,
   *   AccessDeniedException, KMSInternalException.
   */
  async createAlias(request: {
    readonly aliasName: string;
    readonly targetKeyId: string;
  }): Promise<void> {
    assertRequest(request);
    await this.#call("CreateAlias", (o) =>
      this.#client.send(
        this.#guard(
          new CreateAliasCommand({
            AliasName: request.aliasName,
            TargetKeyId: request.targetKeyId,
          }),
        ),
        o,
      ),
    );
  }

  /**
   * AWS KMS ScheduleKeyDeletion. AWS takes a key id or ARN here, not an alias. `deletionDate` is
   * absent when AWS sends none: a multi-Region primary key with replicas is first
   * `PendingReplicaDeletion`, and its date is set once the replicas are gone.
   * @throws NotFoundException, KMSInvalidStateException, ValidationException,
   *   AccessDeniedException, KMSInternalException.
   */
  async scheduleKeyDeletion(request: {
    readonly keyId: string;
    readonly pendingWindowInDays?: number;
  }): Promise<{ keyId: string; keyState: string; deletionDate?: Date }> {
    assertRequest(request);
    const op = "ScheduleKeyDeletion";
    const out = await this.#call(op, (o) =>
      this.#client.send(
        this.#guard(
          new ScheduleKeyDeletionCommand({
            KeyId: request.keyId,
            PendingWindowInDays: request.pendingWindowInDays,
          }),
        ),
        o,
      ),
    );
    const deletionDate = out.DeletionDate === undefined ? undefined : date(op, out, "DeletionDate");
    return {
      keyId: text(op, out, "KeyId"),
      keyState: text(op, out, "KeyState"),
      ...(deletionDate === undefined ? {} : { deletionDate }),
    };
  }

  /**
   * AWS KMS CancelKeyDeletion; the key is left Disabled, as in AWS.
   * @throws NotFoundException, KMSInvalidStateException, AccessDeniedException,
   *   KMSInternalException.
   */
  async cancelKeyDeletion(request: { readonly keyId: string }): Promise<void> {
    assertRequest(request);
    await this.#call("CancelKeyDeletion", (o) =>
      this.#client.send(this.#guard(new CancelKeyDeletionCommand({ KeyId: request.keyId })), o),
    );
  }

  /**
   * AWS KMS EnableKey.
   * @throws NotFoundException, KMSInvalidStateException, AccessDeniedException,
   *   KMSInternalException.
   */
  async enableKey(request: { readonly keyId: string }): Promise<void> {
    assertRequest(request);
    await this.#call("EnableKey", (o) =>
      this.#client.send(this.#guard(new EnableKeyCommand({ KeyId: request.keyId })), o),
    );
  }

  /** Sends one command, bounded by `timeoutMs`, with every failure mapped to a KmsError. */
  async #call<T>(operation: string, send: (options: SendOptions) => Promise<T>): Promise<T> {
    const timeoutMs = this.#timeoutMs;
    if (timeoutMs === undefined) {
      try {
        return await send({});
      } catch (error) {
        throw toKmsError(error, operation);
      }
    }
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Raced as well as passed to the SDK, so the deadline holds even where a request handler or
    // credential provider does not observe the signal.
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new KmsInternalError(
          `AWS KMS ${operation} did not complete within ${timeoutMs} ms`,
        );
        controller.abort(error);
        reject(error);
      }, timeoutMs);
    });
    let sent: Promise<T> | undefined;
    try {
      sent = send({ abortSignal: controller.signal });
      return await Promise.race([sent, deadline]);
    } catch (error) {
      if (!controller.signal.aborted) throw toKmsError(error, operation);
      // An answer that still arrives is dropped: its plaintext or data key is wiped, as it
      // would have been in time.
      sent?.then(
        (output) => wipe(output, "Plaintext"),
        () => {},
      );
      throw controller.signal.reason;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Wraps a `KMSClient` (or the aggregated `KMS` client) as a {@link KmsLike}.
 * @example
 *   const kms = awsKms(new KMSClient({ region: "eu-west-1" }));
 *   const engine = new FieldEncryptionEngine({ kms, dataKeyStore, keyId: "alias/app" });
 * @throws ValidationException when `client` is not a client or `options` are invalid.
 */
export function awsKms(client: KMSClient, options?: AwsKmsOptions): AwsKms {
  return new AwsKms(client, options);
}
