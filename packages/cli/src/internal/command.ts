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

export function printJson(io: CliIo, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
