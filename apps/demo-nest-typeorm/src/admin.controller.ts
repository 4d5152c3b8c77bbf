import { KmsService, VerifySignature } from "@kms/nestjs";
import { encryptionOf } from "@kms/typeorm";
import { Controller, Delete, HttpCode, Inject, Param, Post } from "@nestjs/common";
import { InjectDataSource } from "@nestjs/typeorm";
import type { DataSource } from "typeorm";
import { invalidInput } from "./problems.ts";
import { tenantKeyAlias } from "./tenant-keys.service.ts";

const CLINIC = /^[a-z0-9][a-z0-9-]{0,39}$/;

function clinicOf(clinic: string): string {
  if (!CLINIC.test(clinic)) throw invalidInput("clinic: 1–40 characters of a-z, 0-9 and -");
  return clinic;
}

/**
 * Crypto-shredding: scheduling deletion of one clinic's KMS key makes that clinic's records
 * unreadable (409 `KMSInvalidStateException`) at once, and nobody else's; cancelling within the
 * window brings them back. Administrative calls must be signed with the demo's HMAC key
 * (`scripts/admin.ts` does it), like the webhooks.
 */
@Controller("admin/clinics")
@VerifySignature({
  requiredComponents: ["@method", "@target-uri"],
  requireExpires: true,
  algorithms: ["hmac-sha256"],
})
export class AdminController {
  readonly #kms: KmsService;
  readonly #dataSource: DataSource;

  constructor(@Inject(KmsService) kms: KmsService, @InjectDataSource() dataSource: DataSource) {
    this.#kms = kms;
    this.#dataSource = dataSource;
  }

  @Delete(":clinic/key")
  async shred(
    @Param("clinic") clinic: string,
  ): Promise<{ clinic: string; keyState: string; deletionDate: string }> {
    const result = await this.#kms.core.scheduleKeyDeletion({
      keyId: tenantKeyAlias(clinicOf(clinic)),
      pendingWindowInDays: 7,
    });
    // Data keys already unwrapped stay usable in the engine's cache until dropped.
    encryptionOf(this.#dataSource).engine.clearCache();
    return { clinic, keyState: result.keyState, deletionDate: result.deletionDate.toISOString() };
  }

  @Post(":clinic/key/restore")
  @HttpCode(200)
  async restore(@Param("clinic") clinic: string): Promise<{ clinic: string; keyState: string }> {
    const kms = this.#kms.core;
    const keyId = tenantKeyAlias(clinicOf(clinic));
    // Cancelling leaves the key Disabled (AWS semantics): enable it again.
    await kms.cancelKeyDeletion({ keyId });
    await kms.enableKey({ keyId });
    return { clinic, keyState: (await kms.describeKey({ keyId })).keyMetadata.keyState };
  }
}
