import { Inject, Injectable } from "@nestjs/common";
import { type DemoKms, ensureKey, type KeyAdmin } from "./kms.ts";
import { DEMO_KMS } from "./tokens.ts";

/** One KMS key per clinic, so scheduling its deletion crypto-shreds that clinic's rows only. */
export function tenantKeyAlias(tenant: string): string {
  return `alias/demo-clinic/${tenant}`;
}

/** Creates each clinic's KMS key before its first value is written or looked up. */
@Injectable()
export class TenantKeys {
  readonly #keys: KeyAdmin;
  /** In flight or done: concurrent first requests of one clinic create one key. */
  readonly #known = new Map<string, Promise<string>>();

  constructor(@Inject(DEMO_KMS) kms: DemoKms) {
    this.#keys = kms.keys;
  }

  ensure(tenant: string): Promise<string> {
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
