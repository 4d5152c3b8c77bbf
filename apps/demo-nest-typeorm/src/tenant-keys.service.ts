import { KmsService } from "@kms/nestjs";
import { Inject, Injectable } from "@nestjs/common";
import { ensureKey } from "./kms.ts";

/** One KMS key per clinic, so scheduling its deletion crypto-shreds that clinic's rows only. */
export function tenantKeyAlias(tenant: string): string {
  return `alias/demo-clinic/${tenant}`;
}

/** Creates each clinic's KMS key before its first value is written or looked up. */
@Injectable()
export class TenantKeys {
  readonly #kms: KmsService;
  /** In flight or done: concurrent first requests of one clinic create one key. */
  readonly #known = new Map<string, Promise<string>>();

  constructor(@Inject(KmsService) kms: KmsService) {
    this.#kms = kms;
  }

  ensure(tenant: string): Promise<string> {
    let keyId = this.#known.get(tenant);
    if (keyId === undefined) {
      const kms = this.#kms.core;
      keyId = ensureKey(kms, tenantKeyAlias(tenant), () =>
        kms.createKey({ description: `patient records of clinic ${tenant}` }),
      );
      keyId.catch(() => this.#known.delete(tenant));
      this.#known.set(tenant, keyId);
    }
    return keyId;
  }
}
