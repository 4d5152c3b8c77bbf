import { statSync } from "node:fs";
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import {
  type DecryptPolicy,
  decryptFile,
  encryptFile,
  type FileProgress,
  KMS_PROVIDER_ID,
  KmsKeyring,
  RESERVED_CONTEXT_PREFIX,
} from "@kms/core";
import { createProgressBar } from "../progress-bar.ts";
import {
  booleanOption,
  contextOption,
  integerOption,
  requiredOption,
  stringsOption,
} from "./args.ts";
import { type Command, type CommandContext, printJson } from "./command.ts";
import { UsageError } from "./usage.ts";

const IO_OPTIONS = {
  in: { type: "string" },
  out: { type: "string" },
  context: { type: "string", multiple: true },
  progress: { type: "boolean" },
} as const;

function paths(ctx: CommandContext): { input: string; output: string } {
  const input = requiredOption(ctx.values, "in", ctx.command);
  const output = requiredOption(ctx.values, "out", ctx.command);
  const at = (p: string): string => (p === "-" ? p : resolve(ctx.io.cwd, p));
  const result = { input: at(input), output: at(output) };
  if (result.input !== "-" && (result.input === result.output || sameFile(result))) {
    throw new UsageError(`${ctx.command}: --in and --out name the same file`, ctx.command);
  }
  return result;
}

/**
 * Whether both paths reach one file through a symbolic or hard link. Comparing the strings alone
 * let `--in link --out target` replace the input with its own ciphertext (or plaintext).
 */
function sameFile({ input, output }: { input: string; output: string }): boolean {
  if (output === "-") return false;
  try {
    const a = statSync(input, { throwIfNoEntry: false });
    const b = statSync(output, { throwIfNoEntry: false });
    return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino;
  } catch {
    // Unreadable or not a path (ENOTDIR, EACCES): the transfer itself reports it.
    return false;
  }
}

/**
 * Runs core's file function with a progress bar, whose line ends whether the operation
 * succeeded or not. `-` stands for stdin or stdout.
 */
async function transfer<R>(
  ctx: CommandContext,
  input: string,
  output: string,
  run: (ends: {
    in: string | NodeJS.ReadableStream;
    out: string | NodeJS.WritableStream;
    onProgress: (progress: FileProgress) => void;
  }) => Promise<R>,
): Promise<R> {
  const flag = booleanOption(ctx.values, "progress");
  const bar = createProgressBar({
    label: ctx.command,
    unit: "bytes",
    output: ctx.io.stderr,
    show: flag === true ? "always" : flag === false ? "never" : "auto",
  });
  try {
    const result = await run({
      in: input === "-" ? ctx.io.stdin : input,
      out: output === "-" ? ctx.io.stdout : output,
      onProgress: bar.file,
    });
    bar.finish("done");
    return result;
  } catch (error) {
    bar.finish("failed");
    throw error;
  }
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path)).size;
}

const encrypt: Command = {
  options: { ...IO_OPTIONS, key: { type: "string" }, "frame-size": { type: "string" } },
  positionals: [],
  async run(ctx) {
    const key = requiredOption(ctx.values, "key", ctx.command);
    const { input, output } = paths(ctx);
    const context = contextOption(ctx.values, "context", ctx.command);
    const frameLength = integerOption(ctx.values, "frame-size", ctx.command);
    if (output === "-" && ctx.io.stdout.isTTY === true) {
      throw new UsageError("encrypt: refusing to write binary ciphertext to a terminal", "encrypt");
    }
    const kms = await ctx.kms();
    const keyring = new KmsKeyring({ kms, keyIds: [key], callOptions: ctx.callOptions });
    const { bytesRead } = await transfer(ctx, input, output, (ends) =>
      encryptFile({
        ...ends,
        keyring,
        ...(context === undefined ? {} : { context }),
        ...(frameLength === undefined ? {} : { frameLength }),
      }),
    );
    if (output !== "-") {
      printJson(ctx.io, {
        out: output,
        plaintextBytes: bytesRead,
        ciphertextBytes: await sizeOf(output),
      });
    }
  },
};

const decrypt: Command = {
  options: {
    ...IO_OPTIONS,
    "require-context": { type: "string", multiple: true },
    "allow-key": { type: "string", multiple: true },
    "max-frame-size": { type: "string" },
  },
  positionals: [],
  async run(ctx) {
    const { input, output } = paths(ctx);
    // --context is KMS Decrypt's exact match (a mismatch reads as a bad ciphertext);
    // --require-context only demands these pairs, and refuses with AccessDenied.
    const context = contextOption(ctx.values, "context", ctx.command);
    const required = contextOption(ctx.values, "require-context", ctx.command);
    const allowed = stringsOption(ctx.values, "allow-key");
    const maxFrameLength = integerOption(ctx.values, "max-frame-size", ctx.command);
    const kms = await ctx.kms();
    // The policy compares key ARNs. Each --allow-key (key id, ARN, alias name or alias ARN) is
    // resolved by the KMS now, so an alias counts as the key it names and a typo fails here
    // with NotFound instead of silently allowing nothing.
    const allowedKeyIds: string[] = [];
    for (const id of allowed) {
      allowedKeyIds.push((await kms.describeKey({ keyId: id }, ctx.callOptions)).keyMetadata.arn);
    }
    const policy: DecryptPolicy = {
      ...(allowed.length === 0 ? {} : { allowedKeyIds }),
      ...(required === undefined ? {} : { requiredEncryptionContext: required }),
      ...(maxFrameLength === undefined ? {} : { maxFrameLength }),
    };
    // Discovery: any KMS key may have made the copy; --allow-key narrows it through the policy.
    const keyring = new KmsKeyring({ kms, keyIds: [], callOptions: ctx.callOptions });
    const { bytesRead, info } = await transfer(ctx, input, output, (ends) =>
      decryptFile({
        ...ends,
        keyring,
        policy,
        ...(context === undefined ? {} : { context }),
      }),
    );
    if (output !== "-") {
      printJson(ctx.io, {
        out: output,
        ciphertextBytes: bytesRead,
        plaintextBytes: await sizeOf(output),
        messageId: Buffer.from(info.messageId).toString("hex"),
        keys: info.encryptedDataKeys
          .filter((edk) => edk.providerId === KMS_PROVIDER_ID)
          .map((edk) => edk.providerInfo),
        encryptionContext: Object.fromEntries(
          Object.entries(info.encryptionContext).filter(
            ([k]) => !k.startsWith(RESERVED_CONTEXT_PREFIX),
          ),
        ),
        frameLength: info.frameLength,
      });
    }
  },
};

export const DATA_COMMANDS: Readonly<Record<string, Command>> = { encrypt, decrypt };
