import type {
  CallOptions,
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
  GenerateMacRequest,
  GenerateMacResponse,
  GetPublicKeyRequest,
  GetPublicKeyResponse,
  SignRequest,
  SignResponse,
  VerifyMacRequest,
  VerifyMacResponse,
  VerifyRequest,
  VerifyResponse,
} from "./types.ts";

/**
 * The narrow surface adapters depend on. The in-process `Kms` satisfies it, and so can a thin
 * wrapper over `@aws-sdk/client-kms` or over this project's server, so that every adapter
 * runs unchanged against any of them.
 */
export interface KmsLike {
  encrypt(request: EncryptRequest, options?: CallOptions): Promise<EncryptResponse>;
  decrypt(request: DecryptRequest, options?: CallOptions): Promise<DecryptResponse>;
  generateDataKey(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyResponse>;
  generateDataKeyWithoutPlaintext(
    request: GenerateDataKeyRequest,
    options?: CallOptions,
  ): Promise<GenerateDataKeyWithoutPlaintextResponse>;
  /** @throws InvalidKeyUsageError, ValidationError, and the key-state errors. */
  sign(request: SignRequest, options?: CallOptions): Promise<SignResponse>;
  /** @throws InvalidSignatureError when the signature does not verify. */
  verify(request: VerifyRequest, options?: CallOptions): Promise<VerifyResponse>;
  /** @throws InvalidKeyUsageError, ValidationError, and the key-state errors. */
  generateMac(request: GenerateMacRequest, options?: CallOptions): Promise<GenerateMacResponse>;
  /** @throws InvalidMacError when the MAC does not match. */
  verifyMac(request: VerifyMacRequest, options?: CallOptions): Promise<VerifyMacResponse>;
  /** @throws UnsupportedOperationError for symmetric and HMAC keys. */
  getPublicKey(request: GetPublicKeyRequest, options?: CallOptions): Promise<GetPublicKeyResponse>;
}
