import { vitestPreset } from "@kms/tooling/vitest-preset";
import { defineConfig } from "vitest/config";

// Only the broken stores' conformance runs, which fail by design: kept out of the package's run.
export default defineConfig(
  vitestPreset("core-broken-key-stores", { include: ["test/keystore/broken-key-stores.suite.ts"] }),
);
