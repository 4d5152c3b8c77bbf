import { CLINIC } from "@kms/demo-shared";
import { createKmsVerifier } from "@kms/http-signatures";
import { VerifySignature } from "@kms/nestjs";
import { encryptionOf } from "@kms/typeorm";
import { Controller, Delete, HttpCode, Inject, Param, Post } from "@nestjs/common";
import { InjectDataSource } from "@nestjs/typeorm";
import type { DataSource } from "typeorm";
import { ADMIN_KEY_ALIAS, ADMIN_KEY_ID, type DemoKms, type KeyAdmin } from "./kms.ts";
import { invalidInput } from "./problems.ts";
import { tenantKeyAlias } from "./tenant-keys.service.ts";
import { DEMO_KMS } from "./tokens.ts";

function clinicOf(clinic: string): string {
  if (!CLINIC.test(clinic)) throw invalidInput("clinic: 1–40 characters of a-z, 0-9 and -");
  return clinic;
}

/**
 * Crypto-shredding: scheduling deletion of one clinic's KMS key makes that clinic's records
 * unreadable (409 `KMSInvalidStateException`), and nobody else's; cancelling within the window
 * brings them back. At once through this instance, which drops its cached data keys; another
 * instance sharing the data keeps using the data keys it has cached until they reach the
 * engine's `maxAgeMs` (`dataKeyMaxAgeMs`, 30 s). Administrative calls must be signed with the
 * demo's admin HMAC key (`scripts/admin.ts` does it); the webhook key, which every webhook peer
 * holds, is refused here.
 */
@Controller("admin/clinics")
@VerifySignature({
  requiredComponents: ["@method", "@target-uri"],
  requireExpires: true,
  algorithms: ["hmac-sha256"],
  // `authorities` stays the module's (AppModule: this instance's host:ports), so a call signed
  // for another instance is refused here. The lookup replaces the module's (the webhook key).
  keyLookup: (keyId, { kms }) =>
    keyId === ADMIN_KEY_ID
      ? createKmsVerifier({ kms, keyId: ADMIN_KEY_ALIAS, algorithm: "hmac-sha256" })
      : undefined,
})
export class AdminController {
  readonly #keys: KeyAdmin;
  readonly #dataSource: DataSource;

  constructor(@Inject(DEMO_KMS) kms: DemoKms, @InjectDataSource() dataSource: DataSource) {
    this.#keys = kms.keys;
    this.#dataSource = dataSource;
  }

  /** The clinic's key id: AWS KMS's ScheduleKeyDeletion and CancelKeyDeletion take no alias. */
  async #keyIdOf(clinic: string): Promise<string> {
    const alias = tenantKeyAlias(clinicOf(clinic));
    return (await this.#keys.describeKey({ keyId: alias })).keyMetadata.keyId;
  }

  @Delete(":clinic/key")
  async shred(
    @Param("clinic") clinic: string,
  ): Promise<{ clinic: string; keyState: string; deletionDate: string | null }> {
    const result = await this.#keys.scheduleKeyDeletion({
      keyId: await this.#keyIdOf(clinic),
      pendingWindowInDays: 7,
    });
    // Data keys already unwrapped stay usable in the engine's cache until dropped: here now,
    // in other instances' caches when they age out (they cannot be reached from here).
    encryptionOf(this.#dataSource).engine.clearCache();
    // AWS gives no date while a multi-Region key's replicas are being deleted.
    const deletionDate = result.deletionDate?.toISOString() ?? null;
    return { clinic, keyState: result.keyState, deletionDate };
  }

  @Post(":clinic/key/restore")
  @HttpCode(200)
  async restore(@Param("clinic") clinic: string): Promise<{ clinic: string; keyState: string }> {
    const keys = this.#keys;
    const keyId = await this.#keyIdOf(clinic);
    // Cancelling leaves the key Disabled (AWS semantics): enable it again.
    await keys.cancelKeyDeletion({ keyId });
    await keys.enableKey({ keyId });
    return { clinic, keyState: (await keys.describeKey({ keyId })).keyMetadata.keyState };
  }
}
