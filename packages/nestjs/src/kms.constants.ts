/** Injection token of the configured `KmsLike` (the in-process `Kms` or any client). */
export const KMS_CLIENT = "@kms/nestjs:KMS_CLIENT";
/** Injection token of the default nonce store of `SignatureGuard` (undefined when disabled). */
export const KMS_NONCE_STORE = "@kms/nestjs:KMS_NONCE_STORE";

export const REQUIRE_SIGNATURE_METADATA = "@kms/nestjs:require-signature";
export const SKIP_SIGNATURE_METADATA = "@kms/nestjs:skip-signature";
export const SIGN_RESPONSE_METADATA = "@kms/nestjs:sign-response";
