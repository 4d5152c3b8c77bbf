import type {
  CallOptions,
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
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
}
