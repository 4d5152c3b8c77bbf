import { parseArgs } from "node:util";
import { isKmsError, type Kms } from "@kms/core";
import type { CliIo } from "./cli-io.ts";
import { checkOptionTokens, checkWellFormed, stringOption } from "./internal/args.ts";
import {
  AUDIT_COMMANDS,
  AUDIT_GROUP,
  AuditChainBrokenError,
  LAST_USED_COMMANDS,
} from "./internal/audit-commands.ts";
import { type Command, type CommandContext, writeOut } from "./internal/command.ts";
import { DATA_COMMANDS } from "./internal/data-commands.ts";
import { initCommand } from "./internal/init-command.ts";
import { KEY_COMMANDS } from "./internal/key-commands.ts";
import { oneLine } from "./internal/one-line.ts";
import { dataDirOf, openKms, resolveRootKey } from "./internal/open-kms.ts";
import { POLICY_COMMANDS } from "./internal/policy-commands.ts";
import { ROTATION_COMMANDS } from "./internal/rotation-commands.ts";
import {
  isUnsealedRecordsError,
  SEAL_COMMAND,
  sealCommand,
  unsealedRecordsHint,
} from "./internal/seal-command.ts";
import { serveCommand } from "./internal/serve-command.ts";
import { UsageError, usageText } from "./internal/usage.ts";

const COMMANDS: Readonly<Record<string, Command>> = {
  init: initCommand,
  ...KEY_COMMANDS,
  ...ROTATION_COMMANDS,
  ...POLICY_COMMANDS,
  ...DATA_COMMANDS,
  [SEAL_COMMAND]: sealCommand,
  serve: serveCommand,
  ...LAST_USED_COMMANDS,
  // Subcommands are keyed by their full name, as the usage text and error messages show it.
  ...Object.fromEntries(
    Object.entries(AUDIT_COMMANDS).map(([name, command]) => [`${AUDIT_GROUP} ${name}`, command]),
  ),
};

/** The command of that name; undefined for any other, `toString` and `__proto__` included. */
const commandNamed = (name: string): Command | undefined =>
  Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;

/** Commands that take a subcommand, e.g. `kms audit list`. */
const GROUPS: ReadonlySet<string> = new Set([AUDIT_GROUP]);

const GLOBAL_OPTIONS = {
  "data-dir": { type: "string" },
  "root-key-file": { type: "string" },
  principal: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Global flags whose value is the next argument, so it is not taken for the command. */
const GLOBAL_VALUE_FLAGS: readonly string[] = Object.entries(GLOBAL_OPTIONS)
  .filter(([, option]) => option.type === "string")
  .map(([name]) => `--${name}`);

/**
 * Exit codes: success, a failed operation, a mistake on the command line, and an audit trail
 * whose hash chain does not hold (`kms audit verify`), kept apart from failing to check it.
 */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_AUDIT_BROKEN = 3;

/**
 * Runs one `kms` command line (`argv` without the node and script paths) and returns its exit
 * code: 0 success; 1 the operation failed (`<AwsExceptionName>: <message>` on stderr); 2 a
 * usage error (unknown command or flag, missing argument, no root key) with the usage text.
 * Never throws; never writes key material or data keys.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  // A failed write is also emitted as an `error` event, which with no listener ends the process
  // with a stack trace (`kms list-keys | head -c 1`). Stdout's failures reach the command through
  // its writes (writeOut) and fail it; stderr's are dropped, as there is nowhere left to say so.
  const ignore = (): void => undefined;
  io.stdout.on("error", ignore);
  io.stderr.on("error", ignore);
  try {
    return await runAndClose(argv, io);
  } finally {
    // The event follows the write's callback by a tick or two: it must still find the listener.
    await new Promise((resolve) => setImmediate(resolve));
    io.stdout.off("error", ignore);
    io.stderr.off("error", ignore);
  }
}

async function runAndClose(argv: readonly string[], io: CliIo): Promise<number> {
  const opened: { kms?: Promise<Kms> } = {};
  const code = await execute(argv, io, opened);
  if (opened.kms === undefined) return code;
  try {
    // Closing flushes the audit trail: a call whose event was not written did not succeed.
    await opened.kms.then(
      (kms) => kms.close(),
      () => undefined,
    );
    return code;
  } catch (error) {
    return Math.max(code, report(io, error, undefined));
  }
}

async function execute(
  argv: readonly string[],
  io: CliIo,
  opened: { kms?: Promise<Kms> },
): Promise<number> {
  let command: string | undefined;
  let dataDir: string | undefined;
  try {
    checkWellFormed(argv);
    const at = commandIndex(argv);
    command = at === -1 ? undefined : argv[at];
    if (command === "help" || (command === undefined && wantsHelp(argv))) {
      // A flag after `help` (`kms help --help`) asks for the global usage, as it always did.
      const next = at === -1 ? undefined : argv[at + 1];
      const topic = next?.startsWith("-") === true ? undefined : next;
      const sub = topic !== undefined && GROUPS.has(topic) ? argv[at + 2] : undefined;
      // An unknown topic is an unknown command, exit 2, as everywhere else; usageText would
      // fall back to the global usage and the exit status say all was well.
      const known = (name: string): boolean =>
        name === "help" || GROUPS.has(name) || commandNamed(name) !== undefined;
      if (topic !== undefined && !known(topic)) {
        throw new UsageError(`help: unknown command "${topic}"`);
      }
      if (sub !== undefined && commandNamed(`${topic} ${sub}`) === undefined) {
        throw new UsageError(`${topic}: unknown subcommand "${sub}"`, topic);
      }
      await writeOut(io, usageText(sub === undefined ? topic : `${topic} ${sub}`));
      return EXIT_OK;
    }
    if (command === undefined) throw new UsageError("no command given");
    let subAt = -1;
    if (GROUPS.has(command)) {
      const group = command;
      const rest = commandIndex(argv.slice(at + 1));
      if (rest === -1) {
        if (wantsHelp(argv)) {
          await writeOut(io, usageText(group));
          return EXIT_OK;
        }
        throw new UsageError(`${group}: missing subcommand`, group);
      }
      subAt = at + 1 + rest;
      command = `${group} ${argv[subAt]}`;
      if (commandNamed(command) === undefined) {
        throw new UsageError(`${group}: unknown subcommand "${argv[subAt]}"`, group);
      }
    }
    const definition = commandNamed(command);
    if (definition === undefined) throw new UsageError(`unknown command "${command}"`);
    const options = { ...GLOBAL_OPTIONS, ...definition.options };
    const parsed = parseArgs({
      args: argv.filter((_, i) => i !== at && i !== subAt),
      options,
      allowPositionals: true,
      allowNegative: true,
      strict: true,
      tokens: true,
    });
    if (parsed.values.help === true) {
      await writeOut(io, usageText(command));
      return EXIT_OK;
    }
    checkOptionTokens(parsed.tokens, options, command);
    const expected = definition.positionals;
    if (parsed.positionals.length !== expected.length) {
      throw new UsageError(
        parsed.positionals.length < expected.length
          ? `${command}: missing <${expected[parsed.positionals.length]}>`
          : `${command}: unexpected argument "${parsed.positionals[expected.length]}"`,
        command,
      );
    }
    const values = parsed.values;
    const dir = dataDirOf(io, stringOption(values, "data-dir"));
    dataDir = dir;
    const principal = stringOption(values, "principal");
    const ctx: CommandContext = {
      io,
      command,
      values,
      positionals: parsed.positionals,
      dataDir: dir,
      callOptions: principal === undefined ? {} : { principal },
      kms: () => {
        opened.kms ??= (async () =>
          openKms(
            io,
            dir,
            () => resolveRootKey(io, dir, stringOption(values, "root-key-file")),
            definition.sealsUnsealedRecords === true ? { unsealedRecords: "seal" } : {},
          ))();
        return opened.kms;
      },
    };
    await definition.run(ctx);
    return EXIT_OK;
  } catch (error) {
    return report(io, error, command, dataDir);
  }
}

/** The first argument that is neither an option nor the value of a global string option. */
function commandIndex(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    if (arg === "--") return i + 1 < argv.length ? i + 1 : -1;
    if (GLOBAL_VALUE_FLAGS.includes(arg)) {
      i += 1;
      continue;
    }
    if (!arg.startsWith("-") || arg === "-") return i;
  }
  return -1;
}

function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes("--help") || argv.includes("-h");
}

function report(io: CliIo, error: unknown, command: string | undefined, dataDir?: string): number {
  if (error instanceof AuditChainBrokenError) {
    io.stderr.write(`${error.name}: ${oneLine(error.message)}\n`);
    return EXIT_AUDIT_BROKEN;
  }
  if (error instanceof UsageError) {
    io.stderr.write(`kms: ${oneLine(error.message)}\n\n${usageText(error.command)}`);
    return EXIT_USAGE;
  }
  // parseArgs' own errors (unknown flag, missing value) are usage errors too.
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
    // Its hints ("Did you forget…", "To specify…") come on lines of their own.
    const message = (error as Error).message.split("\n").join(" ");
    io.stderr.write(`kms: ${oneLine(message)}\n\n${usageText(command)}`);
    return EXIT_USAGE;
  }
  if (isKmsError(error)) {
    io.stderr.write(`${error.awsExceptionName}: ${oneLine(error.message)}\n`);
    // An internal failure's detail is in its cause (a store or file-system error).
    if (error.awsExceptionName === "KMSInternalException" && error.cause instanceof Error) {
      io.stderr.write(`  caused by ${error.cause.name}: ${oneLine(error.cause.message)}\n`);
    }
    if (dataDir !== undefined && isUnsealedRecordsError(error)) {
      io.stderr.write(`  ${oneLine(unsealedRecordsHint(dataDir))}\n`);
    }
    return EXIT_FAILED;
  }
  if (error instanceof Error) {
    io.stderr.write(`${error.name}: ${oneLine(error.message)}\n`);
    return EXIT_FAILED;
  }
  io.stderr.write(`Error: ${oneLine(String(error))}\n`);
  return EXIT_FAILED;
}
