import { vitestPreset } from "@kms/tooling/vitest-preset";
import { defineConfig } from "vitest/config";

export default defineConfig(vitestPreset("cli", { setupFiles: ["test/setup.ts"] }));
