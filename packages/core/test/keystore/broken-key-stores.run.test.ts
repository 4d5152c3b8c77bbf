/**
 * Runs the conformance suite against every deliberately broken store; each is meant to fail.
 * conformance-catches-broken-stores.test.ts runs this file in a child vitest with
 * KMS_BROKEN_KEY_STORES=1 and checks how. By hand: KMS_BROKEN_KEY_STORES=1
 * KMS_BROKEN_KEY_STORE=<name> pnpm exec vitest run test/keystore/broken-key-stores.run.test.ts
 */
import { describeKeyStoreConformance } from "@kms/core/testing";
import { it } from "vitest";
import { brokenKeyStores } from "./broken-key-stores.ts";

const only = process.env.KMS_BROKEN_KEY_STORE;

if (process.env.KMS_BROKEN_KEY_STORES === "1") {
  for (const broken of brokenKeyStores) {
    if (only !== undefined && only !== broken.name) continue;
    describeKeyStoreConformance(broken.name, async () => ({ store: broken.open() }));
  }
} else {
  it.skip("runs inside conformance-catches-broken-stores.test.ts only", () => {});
}
