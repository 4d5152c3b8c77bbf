import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

/**
 * Workspace packages export their `src/*.ts`, which Node 24 runs by stripping types. That covers
 * @kms/core, @kms/typeorm, @kms/http-signatures and @kms/keystore-sqlite, but not @kms/nestjs:
 * its source uses decorators, which type stripping cannot run. This hook sends imports of it to
 * its compiled `dist/` (built by `turbo run build`, as `pnpm start` does), i.e. exactly what the
 * published package's `publishConfig.exports` points at.
 */
const DECORATED = /\/packages\/(nestjs)\/src\/(.+)\.ts$/;

export function useBuiltDecoratedPackages(): void {
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const resolved = nextResolve(specifier, context);
      const match = DECORATED.exec(resolved.url);
      if (match === null) return resolved;
      const built = resolved.url.replace(DECORATED, "/packages/$1/dist/$2.js");
      if (!existsSync(fileURLToPath(built))) {
        throw new Error(
          `${specifier} is not built (${fileURLToPath(built)} is missing): ` +
            `run \`pnpm --filter @kms/demo-nest-typeorm start\`, which builds it first`,
        );
      }
      return { ...resolved, url: pathToFileURL(fileURLToPath(built)).href, format: "module" };
    },
  });
}
