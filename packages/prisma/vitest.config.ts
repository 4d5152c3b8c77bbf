import { vitestPreset } from "@kms/tooling/vitest-preset";
import { defineConfig } from "vitest/config";

export default defineConfig(vitestPreset("prisma", { globalSetup: ["test/generate-client.ts"] }));
