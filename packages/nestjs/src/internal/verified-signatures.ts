/**
 * The signature `SignatureGuard` accepted for each request, kept apart from the guard so the
 * default KMS context can ask whether it covers the tenant header without importing the guard.
 */
import type { VerificationResult } from "@kms/http-signatures";

export type VerifiedSignature = Extract<VerificationResult, { ok: true }>;

const verified = new WeakMap<object, VerifiedSignature>();

export function verifiedSignatureOf(request: object): VerifiedSignature | undefined {
  return verified.get(request);
}

export function setVerifiedSignature(request: object, signature: VerifiedSignature): void {
  verified.set(request, signature);
}
