import { join } from "node:path";
import { isKmsError } from "@kms/core";
import { type Command, printJson } from "./command.ts";
import { listEverything } from "./key-commands.ts";
import { DATABASE_FILE } from "./open-kms.ts";

export const SEAL_COMMAND = "seal-unsealed-records";

/**
 * `kms seal-unsealed-records`: the one-time upgrade of a data dir written by a release without
 * record seals. Opening with `unsealedRecords: "seal"` seals every record that has no seal, as it
 * is now (each sealing is audited); listing every key and alias afterwards reads each record back
 * through its seal, so a record whose seal is present but wrong fails the command here instead of
 * in some later one.
 */
export const sealCommand: Command = {
  options: {},
  positionals: [],
  sealsUnsealedRecords: true,
  async run(ctx) {
    const { keys, aliases } = await listEverything(ctx);
    await printJson(ctx.io, {
      dataDir: ctx.dataDir,
      database: join(ctx.dataDir, DATABASE_FILE),
      verified: { keys: keys.length, aliases: aliases.length },
    });
  },
};

/**
 * Core refuses a record without a seal with a RootKeyError that tells library users to set
 * `unsealedRecords: "seal"`; a CLI user needs the command that does it instead. Matched on that
 * option name in the message because core marks the case no other way; a test pins it.
 */
export function isUnsealedRecordsError(error: unknown): boolean {
  return (
    isKmsError(error) && error.code === "RootKeyError" && error.message.includes("unsealedRecords")
  );
}

/** The line that tells a CLI user how to upgrade `dataDir`, for {@link isUnsealedRecordsError}. */
export function unsealedRecordsHint(dataDir: string): string {
  return (
    `if this data dir was written by a release without record seals, run "kms ${SEAL_COMMAND} ` +
    `--data-dir ${shellQuote(dataDir)}" once with the same root key; if it was not, its records ` +
    "were altered and must not be sealed"
  );
}

/** A path as one shell word, quoted only when it needs to be. */
function shellQuote(word: string): string {
  return /^[\w./:@%+=,-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}
