import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { Transform } from "node:stream";
import {
  createDecryptStream,
  createEncryptStream,
  type DecryptPolicy,
  decryptFile,
  encryptFile,
  KMS_PROVIDER_ID,
  KmsKeyring,
  type MessageInfo,
} from "@kms/core";
import { createProgressBar, type ProgressBar } from "../progress-bar.ts";
import {
  booleanOption,
  contextOption,
  integerOption,
  requiredOption,
  stringsOption,
} from "./args.ts";
import { type Command, type CommandContext, printJson } from "./command.ts";
import { streamThrough } from "./transfer.ts";
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
  if (result.input !== "-" && result.input === result.output) {
    throw new UsageError(`${ctx.command}: --in and --out name the same file`, ctx.command);
  }
  return result;
}

async function progressBar(ctx: CommandContext, input: string): Promise<ProgressBar> {
  const flag = booleanOption(ctx.values, "progress");
  // A missing input file is reported by the operation itself, with its path.
  const total =
    input === "-"
      ? undefined
      : await stat(input).then(
          (s) => s.size,
          () => undefined,
        );
  return createProgressBar({
    label: ctx.command,
    ...(total === undefined ? {} : { total }),
    unit: "bytes",
    output: ctx.io.stderr,
    show: flag === true ? "always" : flag === false ? "never" : "auto",
  });
}

/**
 * Moves the data with a progress bar: core's file function when both ends are files, else its
 * stream through stdin/stdout. The bar's line ends whether the operation succeeded or not.
 * Returns the bytes read.
 */
async function transfer(
  ctx: CommandContext,
  input: string,
  output: string,
  viaFiles: (onProgress: ProgressBar["file"]) => Promise<{ readonly bytesRead: number }>,
  viaStream: () => Transform,
): Promise<number> {
  const bar = await progressBar(ctx, input);
  try {
    const bytesRead =
      input !== "-" && output !== "-"
        ? (await viaFiles(bar.file)).bytesRead
        : await streamThrough(ctx.io, input, output, viaStream(), bar.update);
    bar.finish("done");
    return bytesRead;
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
    const options = {
      keyring,
      ...(frameLength === undefined ? {} : { frameLength }),
    };
    const bytesRead = await transfer(
      ctx,
      input,
      output,
      (onProgress) =>
        encryptFile({
          ...options,
          ...(context === undefined ? {} : { context }),
          in: input,
          out: output,
          onProgress,
        }),
      () =>
        createEncryptStream({
          ...options,
          ...(context === undefined ? {} : { encryptionContext: context }),
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
  },
  positionals: [],
  async run(ctx) {
    const { input, output } = paths(ctx);
    // --context is KMS Decrypt's exact match (a mismatch reads as a bad ciphertext);
    // --require-context only demands these pairs, and refuses with AccessDenied.
    const context = contextOption(ctx.values, "context", ctx.command);
    const required = contextOption(ctx.values, "require-context", ctx.command);
    const allowed = stringsOption(ctx.values, "allow-key");
    const kms = await ctx.kms();
    // The policy compares key ids and ARNs, so aliases are resolved to the key they name now.
    const allowedKeyIds: string[] = [];
    for (const id of allowed) {
      allowedKeyIds.push(
        id.startsWith("alias/") || id.includes(":alias/")
          ? (await kms.describeKey({ keyId: id }, ctx.callOptions)).keyMetadata.arn
          : id,
      );
    }
    const policy: DecryptPolicy = {
      ...(allowed.length === 0 ? {} : { allowedKeyIds }),
      ...(required === undefined ? {} : { requiredEncryptionContext: required }),
    };
    // Discovery: any KMS key may have made the copy; --allow-key narrows it through the policy.
    const keyring = new KmsKeyring({ kms, keyIds: [], callOptions: ctx.callOptions });
    let info: MessageInfo | undefined;
    const options = {
      keyring,
      policy,
      onHeader: (header: MessageInfo) => {
        info = header;
      },
    };
    const bytesRead = await transfer(
      ctx,
      input,
      output,
      (onProgress) =>
        decryptFile({
          ...options,
          ...(context === undefined ? {} : { context }),
          in: input,
          out: output,
          onProgress,
        }),
      () =>
        createDecryptStream({
          ...options,
          ...(context === undefined ? {} : { encryptionContext: context }),
        }),
    );
    if (output !== "-" && info !== undefined) {
      printJson(ctx.io, {
        out: output,
        ciphertextBytes: bytesRead,
        plaintextBytes: await sizeOf(output),
        messageId: Buffer.from(info.messageId).toString("hex"),
        keys: info.encryptedDataKeys
          .filter((edk) => edk.providerId === KMS_PROVIDER_ID)
          .map((edk) => edk.providerInfo),
        encryptionContext: Object.fromEntries(
          Object.entries(info.encryptionContext).filter(([k]) => !k.startsWith("kms-message:")),
        ),
        frameLength: info.frameLength,
      });
    }
  },
};

export const DATA_COMMANDS: Readonly<Record<string, Command>> = { encrypt, decrypt };
