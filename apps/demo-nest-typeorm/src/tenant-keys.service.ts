import type { TenantDirectory } from "@kms/demo-shared";
import { Inject, Injectable } from "@nestjs/common";
import type { DemoConfig } from "./config.ts";
import { type DemoKms, ensureKey, type KeyAdmin } from "./kms.ts";
import { DEMO_CONFIG, DEMO_KMS } from "./tokens.ts";

/** One KMS key per clinic, so scheduling its deletion crypto-shreds that clinic's rows only. */
export function tenantKeyAlias(tenant: string): string {
  return `alias/demo-clinic/${tenant}`;
}

/**
 * Creates each clinic's KMS key before its first value is written or looked up, for the
 * configured clinics only: DemoAuthGuard admits no other, and this holds even if a route
 * forgot the guard.
 */
@Injectable()
export class TenantKeys {
  readonly #keys: KeyAdmin;
  readonly #tenants: TenantDirectory;
  /** In flight or done: concurrent first requests of one clinic create one key. */
  readonly #known = new Map<string, Promise<string>>();

  constructor(@Inject(DEMO_KMS) kms: DemoKms, @Inject(DEMO_CONFIG) config: DemoConfig) {
    this.#keys = kms.keys;
    this.#tenants = config.tenants;
  }

  /** @throws Error for a clinic outside DEMO_TENANTS (a wiring mistake: answered 500). */
  ensure(tenant: string): Promise<string> {
    if (!this.#tenants.tenants.includes(tenant)) {
      return Promise.reject(new Error(`no KMS key is made for ${tenant}: not a configured clinic`));
    }
    let keyId = this.#known.get(tenant);
    if (keyId === undefined) {
      const keys = this.#keys;
      keyId = ensureKey(keys, tenantKeyAlias(tenant), () =>
        keys.createKey({ description: `patient records of clinic ${tenant}` }),
      );
      keyId.catch(() => this.#known.delete(tenant));
      this.#known.set(tenant, keyId);
    }
    return keyId;
  }
}
