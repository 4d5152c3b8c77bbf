/**
 * Runs the conformance suite against every deliberately broken store; each is meant to fail.
 * conformance-catches-broken-stores.test.ts runs this file in a child vitest (its own config,
 * since the file is not a `*.test.ts` of the package's run) and checks how. By hand:
 * KMS_BROKEN_KEY_STORE=<name> pnpm exec vitest run --config test/keystore/broken-key-stores.vitest.config.ts
 */
import { describeKeyStoreConformance } from "@kms/core/testing";
import { brokenKeyStores } from "./broken-key-stores.ts";

const only = process.env.KMS_BROKEN_KEY_STORE;

for (const broken of brokenKeyStores) {
  if (only !== undefined && only !== broken.name) continue;
  describeKeyStoreConformance(broken.name, async () => ({ store: broken.open() }));
}
