import { applyDecorators, SetMetadata, UseGuards } from "@nestjs/common";
import { REQUIRE_SIGNATURE_METADATA, SKIP_SIGNATURE_METADATA } from "./kms.constants.ts";
import type { SignaturePolicy } from "./kms-module.options.ts";
import { SignatureGuard } from "./signature.guard.ts";

/**
 * Requires a valid RFC 9421 signature on the route (method) or every route (class), verified by
 * `SignatureGuard` with `policy` layered over the module's `signature` defaults (method over
 * class over module).
 */
export function RequireSignature(policy: SignaturePolicy = {}): MethodDecorator & ClassDecorator {
  return applyDecorators(
    SetMetadata(REQUIRE_SIGNATURE_METADATA, policy),
    UseGuards(SignatureGuard),
  );
}

/** Exempts a route (or controller) from an app-wide `SignatureGuard`, e.g. a health check. */
export function SkipSignature(): MethodDecorator & ClassDecorator {
  return SetMetadata(SKIP_SIGNATURE_METADATA, true);
}

/** The name for `RequireSignature`: verify the route's incoming signature. */
export const VerifySignature: typeof RequireSignature = RequireSignature;
