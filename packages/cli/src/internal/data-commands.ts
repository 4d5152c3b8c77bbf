import { createReadStream, createWriteStream, statSync } from "node:fs";
import { readlink, realpath, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
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

/** Thrown into a transfer that `io.signal` stopped (SIGINT or SIGTERM, for the bin). */
class InterruptedError extends Error {
  override readonly name = "Interrupted";
}

/** The ends of a transfer as core's file functions take them. */
interface Ends {
  readonly in: NodeJS.ReadableStream;
  readonly out: string | NodeJS.WritableStream;
  readonly onProgress: (progress: FileProgress) => void;
}

/**
 * Whether `--out` is written through like `-` rather than replaced: an existing FIFO, device or
 * socket (`/dev/null`, a named pipe, `>(…)`, `/dev/stdout` on a pipe or terminal), or a name for
 * one of this process's file descriptors (`/dev/stdout`, `/dev/fd/3`), whatever it is open on.
 * The temporary file and rename that make a regular `--out` appear whole would put a file where
 * the FIFO or device node was, its reader waiting in vain, and with stdout redirected to a file
 * would replace the `/dev/stdout` link itself: as root, for every process after.
 */
async function writesThrough(path: string): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (info !== undefined && !info.isFile() && !info.isDirectory()) return true;
  return isDescriptorLink(path);
}

/** `/proc/<pid>/fd`, `/proc/<pid>/task/<tid>/fd`: where `/dev/fd` and `/proc/self/fd` lead. */
const DESCRIPTOR_DIR = /^\/proc\/\d+(?:\/task\/\d+)?\/fd$/;

/** Whether `path`, or a symbolic link it leads through, is an entry of a /proc `fd` directory. */
async function isDescriptorLink(path: string): Promise<boolean> {
  let current = path;
  // Each hop is one symbolic link; the kernel gives up after 40, /dev/stdout takes one.
  for (let hops = 0; hops < 40; hops += 1) {
    const dir = await realpath(dirname(current)).catch(() => undefined);
    if (dir !== undefined && DESCRIPTOR_DIR.test(dir)) return true;
    const target = await readlink(current).catch(() => undefined);
    if (target === undefined) return false;
    current = resolve(dirname(current), target);
  }
  return false;
}

/**
 * Runs core's file function with a progress bar, whose line ends whether the operation succeeded
 * or not; `-` stands for stdin or stdout. Resolves to its result and the bytes now at `--out`,
 * or undefined when `--out` was written as a stream (`-`, or see {@link writesThrough}).
 *
 * The input is opened here, not by core: core takes a path's size from `stat`, which is 0 for a
 * FIFO, `/dev/stdin` or `<(…)`, so encrypt refused their first byte as past the declared
 * plaintext length; and a stream of its own is what lets `io.signal` stop the transfer. Core
 * then removes the partial output file, instead of leaving `<out>.<random>.partial` (on decrypt,
 * verified plaintext of a message never finished) behind as the killed process did.
 */
async function transfer<R>(
  ctx: CommandContext,
  input: string,
  output: string,
  run: (ends: Ends) => Promise<R>,
): Promise<{ result: R; outputBytes: number | undefined }> {
  // Read only here: reading it tells the binary that this command handles SIGINT itself.
  const signal = ctx.io.signal;
  const total =
    input === "-" ? undefined : await stat(input).then((s) => (s.isFile() ? s.size : undefined));
  const special = output !== "-" && (await writesThrough(output));
  const where = output === "-" || special ? "" : "; --out was left as it was";
  const interrupted = new InterruptedError(
    `${ctx.command}: stopped before the end of the input${where}`,
  );
  if (signal?.aborted === true) throw interrupted;
  const flag = booleanOption(ctx.values, "progress");
  const bar = createProgressBar({
    label: ctx.command,
    unit: "bytes",
    output: ctx.io.stderr,
    show: flag === true ? "always" : flag === false ? "never" : "auto",
  });
  // Created together with nothing awaited before core pipes them, which reports their errors.
  const source: NodeJS.ReadableStream = input === "-" ? ctx.io.stdin : createReadStream(input);
  // Appending, never truncating: through /dev/stdout to a file, after what the file holds.
  const sink = special ? createWriteStream(output, { flags: "a" }) : undefined;
  // Core's pipeline then fails with this error, and removes its temporary file.
  const stop = (): void => void (source as Readable).destroy(interrupted);
  const ignore = (): void => undefined;
  source.on("error", ignore);
  signal?.addEventListener("abort", stop, { once: true });
  try {
    const result = await run({
      in: source,
      out: output === "-" ? ctx.io.stdout : (sink ?? output),
      onProgress: (progress) => bar.update(progress.bytesRead, total),
    });
    if (sink !== undefined) {
      // Core leaves a stream it was given open; this one is ours to close.
      sink.end();
      await finished(sink);
    }
    bar.finish("done");
    // What goes through a stream may be what the process's stdout is: no summary after it.
    const outputBytes = output === "-" || special ? undefined : (await stat(output)).size;
    return { result, outputBytes };
  } catch (error) {
    sink?.destroy();
    bar.finish("failed");
    throw error;
  } finally {
    signal?.removeEventListener("abort", stop);
    source.off("error", ignore);
  }
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
    const { result, outputBytes } = await transfer(ctx, input, output, (ends) =>
      encryptFile({
        ...ends,
        keyring,
        ...(context === undefined ? {} : { context }),
        ...(frameLength === undefined ? {} : { frameLength }),
      }),
    );
    if (outputBytes !== undefined) {
      await printJson(ctx.io, {
        out: output,
        plaintextBytes: result.bytesRead,
        ciphertextBytes: outputBytes,
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
    const { result, outputBytes } = await transfer(ctx, input, output, (ends) =>
      decryptFile({
        ...ends,
        keyring,
        policy,
        ...(context === undefined ? {} : { context }),
      }),
    );
    if (outputBytes !== undefined) {
      const { bytesRead, info } = result;
      await printJson(ctx.io, {
        out: output,
        ciphertextBytes: bytesRead,
        plaintextBytes: outputBytes,
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
