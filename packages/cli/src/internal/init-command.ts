import { existsSync } from "node:fs";
import { join } from "node:path";
import { RootKeySource } from "@kms/core";
import { booleanOption, stringOption } from "./args.ts";
import { type Command, printJson } from "./command.ts";
import {
  DATABASE_FILE,
  DEV_ROOT_KEY_FILE,
  openOrCreateKms,
  ROOT_KEY_ENV,
  resolveRootKey,
} from "./open-kms.ts";
import { UsageError } from "./usage.ts";

/**
 * `kms init`: creates the data dir and its key store under the configured root key, or with
 * `--dev-root-key` a development root key file beside the store. The one command that creates a
 * store; on failure it leaves nothing it created behind.
 */
export const initCommand: Command = {
  options: { "dev-root-key": { type: "boolean" } },
  positionals: [],
  async run(ctx) {
    const { io, dataDir } = ctx;
    const rootKeyFile = stringOption(ctx.values, "root-key-file");
    let source: RootKeySource;
    if (booleanOption(ctx.values, "dev-root-key") === true) {
      const fromEnv = io.env[ROOT_KEY_ENV];
      if (rootKeyFile !== undefined || (fromEnv !== undefined && fromEnv !== "")) {
        throw new UsageError(
          `init: --dev-root-key would be ignored next to --root-key-file or ${ROOT_KEY_ENV}; drop one`,
          "init",
        );
      }
      const path = join(dataDir, DEV_ROOT_KEY_FILE);
      const existed = existsSync(path);
      io.stderr.write(
        [
          "",
          "  !!! DEVELOPMENT ROOT KEY — NOT FOR PRODUCTION !!!",
          `  ${existed ? "Using the existing" : "Creating a"} root key in plain text at ${path},`,
          "  beside the keys it protects: anyone who can read this directory can decrypt",
          "  every key and everything encrypted under them. In production set KMS_ROOT_KEY",
          "  or pass --root-key-file <path> (a mounted secret) instead.",
          "",
          "",
        ].join("\n"),
      );
      source = RootKeySource.devFile(path);
    } else {
      source = resolveRootKey(io, dataDir, rootKeyFile);
    }
    const kms = await openOrCreateKms(io, dataDir, source);
    await kms.close();
    await printJson(io, {
      dataDir,
      database: join(dataDir, DATABASE_FILE),
      rootKey: source.description,
    });
  },
};
