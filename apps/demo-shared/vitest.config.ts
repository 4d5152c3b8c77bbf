import { vitestPreset } from "@kms/tooling/vitest-preset";
import { defineConfig } from "vitest/config";

export default defineConfig(vitestPreset("demo-shared"));
