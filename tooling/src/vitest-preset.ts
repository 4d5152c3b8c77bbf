import type { ViteUserConfig } from "vitest/config";

/** Shared settings for every package's vitest project. */
export function vitestPreset(name: string, overrides: ViteUserConfig["test"] = {}): ViteUserConfig {
  return {
    // Decorator metadata for TypeORM entities and NestJS DI, without SWC.
    oxc: { decorator: { legacy: true, emitDecoratorMetadata: true } },
    test: {
      name,
      include: ["src/**/*.test.ts", "test/**/*.test.ts"],
      testTimeout: 30_000,
      hookTimeout: 60_000,
      ...overrides,
    },
  } as ViteUserConfig;
}
