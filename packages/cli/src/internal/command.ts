import type { ParseArgsOptionsConfig } from "node:util";
import type { CallOptions, Kms } from "@kms/core";
import type { CliIo } from "../cli-io.ts";
import type { ParsedValues } from "./args.ts";

export interface CommandContext {
  readonly io: CliIo;
  readonly command: string;
  readonly values: ParsedValues;
  readonly positionals: readonly string[];
  readonly dataDir: string;
  /** `--principal`, passed to every KMS call. */
  readonly callOptions: CallOptions;
  /** Opens the KMS once (resolving the root key); runCli closes it. */
  readonly kms: () => Promise<Kms>;
}

export interface Command {
  readonly options: ParseArgsOptionsConfig;
  /** Names of the positional arguments, all required. */
  readonly positionals: readonly string[];
  /**
   * Open the KMS with `unsealedRecords: "seal"`. Only the upgrade command sets it: in any
   * command run routinely it would also seal records whose seals someone stripped.
   */
  readonly sealsUnsealedRecords?: boolean;
  run(ctx: CommandContext): Promise<void>;
}

/** Prints `value` as pretty JSON on stdout; see {@link writeOut}. */
export function printJson(io: CliIo, value: unknown): Promise<void> {
  return writeOut(io, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Writes `text` to stdout and resolves once the stream has taken it, or rejects with the
 * stream's error, so output that could not be written (the reader went away: EPIPE; a full disk:
 * ENOSPC) fails the command, exit 1, instead of crashing the process or exiting 0. Waiting for
 * each write also keeps a long listing from piling up in memory when the reader is slower.
 */
export function writeOut(io: CliIo, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    io.stdout.write(text, (error) => (error ? reject(error) : resolve()));
  });
}
