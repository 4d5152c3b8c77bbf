import {
  close,
  closeSync,
  constants,
  createWriteStream,
  fstat,
  fstatSync,
  open,
  type Stats,
  statSync,
  write,
  writeFile,
  writev,
} from "node:fs";
import { lstat, readlink, realpath, stat } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { isatty } from "node:tty";
import {
  AlreadyExistsError,
  type DecryptPolicy,
  decryptFile,
  encryptFile,
  type FileProgress,
  type FileResult,
  KMS_PROVIDER_ID,
  KmsKeyring,
  partialOutputsOf,
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
import { oneLine } from "./one-line.ts";
import { UsageError } from "./usage.ts";

const IO_OPTIONS = {
  in: { type: "string" },
  out: { type: "string" },
  context: { type: "string", multiple: true },
  progress: { type: "boolean" },
  force: { type: "boolean" },
} as const;

function paths(ctx: CommandContext): { input: string; output: string } {
  const input = requiredOption(ctx.values, "in", ctx.command);
  const output = requiredOption(ctx.values, "out", ctx.command);
  const at = (p: string): string => (p === "-" ? p : resolve(ctx.io.cwd, p));
  // Resolving drops a trailing slash: `--out backups/` (a directory meant) wrote a file `backups`.
  if (output !== "-" && (output.endsWith("/") || output.endsWith(sep))) {
    const directory = statSync(at(output), { throwIfNoEntry: false })?.isDirectory() === true;
    throw new UsageError(
      `${ctx.command}: --out ${output} ${directory ? "is a directory" : "ends in a slash, which names a directory"}: --out names the file to write`,
      ctx.command,
    );
  }
  const result = { input: at(input), output: at(output) };
  if ((result.input !== "-" && result.input === result.output) || sameFile(ctx, result)) {
    throw new UsageError(`${ctx.command}: --in and --out name the same file`, ctx.command);
  }
  return result;
}

/**
 * Whether both ends reach one file, whatever names them: a symbolic or hard link, a stdout
 * redirected onto the input (`--out -`, `/dev/stdout`), a stdin redirected from the output
 * (`--in -`). Comparing the strings alone let `--in link --out target` replace the input with its
 * own ciphertext (or plaintext); `kms decrypt --in x.kms --out - >> x.kms` append the plaintext
 * to the message it was reading (as `cat f >> f`, which cat refuses); and `kms encrypt --in -
 * --out - < f >> f` read its own output without end.
 */
function sameFile(
  ctx: CommandContext,
  { input, output }: { input: string; output: string },
): boolean {
  try {
    const a = input === "-" ? stdinFile(ctx) : statSync(input, { throwIfNoEntry: false });
    if (a === undefined) return false;
    const b =
      output === "-" ? descriptorStats(ctx.io.stdout) : statSync(output, { throwIfNoEntry: false });
    return b !== undefined && a.dev === b.dev && a.ino === b.ino;
  } catch {
    // Unreadable or not a path (ENOTDIR, EACCES): the transfer itself reports it.
    return false;
  }
}

/**
 * What stdin is open on when it is a regular file or a disk (`< f`). A terminal or a socket is
 * stdin and stdout at once in ordinary use (typing at the command; `socat`), and writing it
 * does not change what is read.
 */
function stdinFile(ctx: CommandContext): Stats | undefined {
  const info = descriptorStats(ctx.io.stdin);
  return info?.isFile() === true || info?.isBlockDevice() === true ? info : undefined;
}

/** What a process stream (`io.stdin`, `io.stdout`) is open on, when it is one on a descriptor. */
function descriptorStats(stream: object): Stats | undefined {
  const fd = (stream as { readonly fd?: unknown }).fd;
  return typeof fd === "number" ? fstatSync(fd) : undefined;
}

/**
 * Open for appending, never creating. `fs.open`, and so a write stream, takes numeric flags; the
 * types only admit the string forms, none of which appends without O_CREAT.
 */
const APPEND_EXISTING = (constants.O_WRONLY |
  constants.O_APPEND |
  // A terminal opened by name must not become the controlling terminal of a process without one.
  (constants.O_NOCTTY ?? 0)) as unknown as string;

/** Thrown into a transfer that `io.signal` stopped (SIGINT, SIGTERM or SIGHUP, for the bin). */
class InterruptedError extends Error {
  override readonly name = "Interrupted";
}

/**
 * How `--out` is written when it is not replaced: see {@link writesThrough}. `found` is what was
 * at `path` when it was looked at (device and inode), undefined when nothing could be stat'ed.
 */
type Through =
  | { readonly fd: number }
  | { readonly path: string; readonly found: Stats | undefined };

/** Both ends of a transfer, checked before the KMS is opened. */
interface Files {
  readonly input: string;
  readonly output: string;
  /** Undefined for `-` and for a file core replaces. */
  readonly through: Through | undefined;
}

/**
 * `--in` and `--out`, checked against the file system before any KMS call. A file core would
 * replace at `--out` (a regular file, or a symbolic link, dangling or not) needs `--force`:
 * `kms decrypt --in backup.kms --out app.db` silently replaced the live database with the
 * backup. A directory is left to the rename to refuse (EISDIR), as `--force` cannot help there.
 * A file that appears at `--out` during the transfer is refused by core (`overwrite: false`).
 */
async function transferFiles(
  ctx: CommandContext,
  { input, output }: { input: string; output: string },
): Promise<Files> {
  // Core checks the input too, but only after the FIFO at `--out` has been opened, which waits for
  // a reader: with none, a missing `--in` held the process until one came.
  if (input !== "-") await stat(input);
  const through = output === "-" ? undefined : await writesThrough(output);
  if (output !== "-" && through === undefined && !forced(ctx)) {
    const existing = await lstat(output).catch(() => undefined);
    if (existing !== undefined && !existing.isDirectory()) throw outputExists(ctx, output);
  }
  if (output !== "-" && through === undefined) {
    for (const path of await partialOutputsOf(output)) {
      ctx.io.stderr.write(
        `kms: warning: ${oneLine(path)} was left by an encrypt or decrypt that did not finish (killed, or still running): it may hold plaintext; remove it\n`,
      );
    }
  }
  return { input, output, through };
}

const forced = (ctx: CommandContext): boolean => booleanOption(ctx.values, "force") === true;

const outputExists = (ctx: CommandContext, output: string): UsageError =>
  new UsageError(`${ctx.command}: --out ${output} exists: pass --force to replace it`, ctx.command);

/** The ends of a transfer as core's file functions take them. */
interface Ends {
  readonly in: string | NodeJS.ReadableStream;
  readonly out: string | NodeJS.WritableStream;
  readonly onProgress: (progress: FileProgress) => void;
  readonly signal?: AbortSignal;
  /** False without `--force`: a file that appeared at `--out` since the start is not replaced. */
  readonly overwrite: boolean;
}

/**
 * How `--out` is written through like `-` rather than replaced: an existing FIFO, device or
 * socket (`/dev/null`, a named pipe, `>(…)`, `/dev/stdout` on a pipe or terminal; a socket
 * refuses the open, ENXIO), or a name for one of the process's file descriptors (`/dev/stdout`,
 * `/dev/fd/3`), whatever it is open on.
 * The temporary file and rename that make a regular `--out` appear whole would put a file where
 * the FIFO or device node was, its reader waiting in vain, and with stdout redirected to a file
 * would replace the `/dev/stdout` link itself: as root, for every process after.
 *
 * `{ fd }`: this process's stdin, stdout or stderr open on a regular file, written through that
 * descriptor, at its offset, as the shell's own writes to it are (`{ …; kms decrypt --out
 * /dev/stdout; echo end; } > log`: opened anew, appending, `end` overwrote the first bytes).
 * `{ path }`: anything else, opened anew, appending. Undefined: a regular file or a new path,
 * for core to replace.
 */
async function writesThrough(path: string): Promise<Through | undefined> {
  const info = await stat(path).catch(() => undefined);
  const descriptor = await descriptorOf(path);
  // Only 0–2 are surely the caller's: a higher one may be the key store's database, which plaintext
  // written at the descriptor's offset (0: SQLite writes by position) would overwrite.
  if (descriptor?.pid === process.pid && descriptor.fd <= 2 && info?.isFile() === true) {
    return { fd: descriptor.fd };
  }
  const special = info !== undefined && !info.isFile() && !info.isDirectory();
  return special || descriptor !== undefined ? { path, found: info } : undefined;
}

/** `/proc/<pid>/fd/<n>`, `/proc/<pid>/task/<tid>/fd/<n>`: where `/dev/fd/<n>` leads on Linux. */
const DESCRIPTOR = /^\/proc\/(\d+)(?:\/task\/\d+)?\/fd\/(\d+)$/;

/** The process and descriptor whose /proc entry `path` is, or a symbolic link it leads through. */
async function descriptorOf(path: string): Promise<{ pid: number; fd: number } | undefined> {
  let current = path;
  // Each hop is one symbolic link; the kernel gives up after 40, /dev/stdout takes one.
  for (let hops = 0; hops < 40; hops += 1) {
    const dir = await realpath(dirname(current)).catch(() => undefined);
    if (dir === undefined) return undefined;
    const match = DESCRIPTOR.exec(join(dir, basename(current)));
    if (match !== null) return { pid: Number(match[1]), fd: Number(match[2]) };
    const target = await readlink(current).catch(() => undefined);
    if (target === undefined) return undefined;
    // Relative to the directory the link really is in, as the kernel reads it (`..` included).
    current = resolve(dir, target);
  }
  return undefined;
}

/**
 * Runs core's file function with a progress bar, whose line ends whether the operation succeeded
 * or not; `-` stands for stdin or stdout. Resolves to its result and the bytes now at `--out`,
 * or undefined when `--out` was written as a stream (`-`, or see {@link writesThrough}), once
 * everything written there was taken. `io.signal` stops it: core then removes the partial output
 * file, instead of leaving `<out>.<random>.partial` (on decrypt, verified plaintext of a message
 * never finished) behind as the killed process did; one it cannot remove is named on stderr.
 * `binary`: the output (ciphertext) is refused on a terminal, by whatever name it is reached.
 */
async function transfer<R extends FileResult>(
  ctx: CommandContext,
  { input, output, through }: Files,
  { binary }: { readonly binary: boolean },
  run: (ends: Ends) => Promise<R>,
): Promise<{ result: R; outputBytes: number | undefined }> {
  // A device is opened now, before the signal is read (a signal while a device holds the open
  // ends the process as before the transfer): whether the output is a terminal is a property of
  // the descriptor, not of its name (`/dev/stdout`, `/proc/self/fd/1`, `/dev/tty`, `/dev/pts/3`).
  const device =
    through !== undefined && "path" in through && through.found?.isCharacterDevice() === true
      ? await openDevice(through.path, through.found, replaced(ctx, through.path))
      : undefined;
  // A regular file or a FIFO (the rest of what is written through) is never a terminal.
  const terminal =
    output === "-" ? ctx.io.stdout.isTTY === true : device !== undefined && isatty(device);
  if (terminal && binary) {
    if (device !== undefined) closeSync(device);
    throw refusingTerminal(ctx);
  }
  // Read only here: reading it tells the binary that this command handles SIGINT itself.
  const signal = ctx.io.signal;
  // A file `--out`, which core writes beside and moves into place (rather than a stream).
  const placed = output !== "-" && through === undefined;
  const where = placed ? "; --out was left as it was" : "";
  const interrupted = new InterruptedError(
    `${ctx.command}: stopped before the end of the input${where}`,
  );
  const stopped = (): boolean => signal?.aborted === true;
  if (stopped()) {
    if (device !== undefined) closeSync(device);
    throw interrupted;
  }
  // Core rejects with the reason of the signal it is given, having named in it a partial output
  // it could not remove: that reason is the error this command fails with.
  const stop = new AbortController();
  const forward = (): void => stop.abort(interrupted);
  signal?.addEventListener("abort", forward, { once: true });
  const flag = booleanOption(ctx.values, "progress");
  // Data going to a terminal shares the screen with the bar, whose redraws (`\r…\x1b[K`) would
  // erase the line of text they land on: only `--progress` draws it then.
  const bar = createProgressBar({
    label: ctx.command,
    unit: "bytes",
    output: ctx.io.stderr,
    show: flag === true ? "always" : flag === false || terminal ? "never" : "auto",
  });
  // A stream of our own on a path written through, for the CLI to end once core is done with it
  // (core writes into a stream it is given, waiting for each write's callback, and leaves it open).
  // Opened without O_CREAT: a FIFO or device that is gone by the open must not become a new
  // regular file (mode 0666 less the umask) that plaintext is streamed into frame by frame.
  const sink =
    through === undefined
      ? undefined
      : "fd" in through
        ? new Writable({
            write: (chunk: Buffer, _encoding, done) => writeFile(through.fd, chunk, done),
          })
        : device !== undefined
          ? createWriteStream(through.path, { fd: device })
          : createWriteStream(through.path, {
              flags: APPEND_EXISTING,
              fs: openingOnly(through.found, replaced(ctx, through.path)),
            });
  // An open that fails before core pipes into it (ENXIO: a socket) is reported from `errored`.
  const ignore = (): void => undefined;
  sink?.on("error", ignore);
  try {
    const result = await run({
      in: input === "-" ? ctx.io.stdin : input,
      out: output === "-" ? ctx.io.stdout : (sink ?? output),
      onProgress: bar.file,
      ...(signal === undefined ? {} : { signal: stop.signal }),
      overwrite: forced(ctx),
    });
    if (sink !== undefined) {
      // Core leaves a stream it was given open; this one is ours to close.
      sink.end();
      await finished(sink, signal === undefined ? {} : { signal: stop.signal });
    }
    bar.finish("done");
    if (result.leftover !== undefined) {
      ctx.io.stderr.write(
        `kms: warning: --out was written, but its temporary file ${oneLine(result.leftover)} could not be removed: a second name for the output; remove it\n`,
      );
    }
    // What goes through a stream may be what the process's stdout is: no summary after it.
    const streamed = output === "-" || sink !== undefined;
    const outputBytes = streamed ? undefined : (await stat(output)).size;
    return { result, outputBytes };
  } catch (error) {
    sink?.destroy();
    bar.finish("failed");
    if (stopped()) throw interrupted;
    // What core refuses a file `--out` with when one appeared there during the transfer.
    if (placed && error instanceof AlreadyExistsError) {
      const refused = outputExists(ctx, output);
      const left = (error as { readonly leftover?: unknown }).leftover;
      if (typeof left !== "string") throw refused;
      throw new UsageError(
        `${refused.message}; the temporary file ${left} could not be removed: it holds the output; remove it`,
        ctx.command,
      );
    }
    throw sink?.errored ?? error;
  } finally {
    signal?.removeEventListener("abort", forward);
  }
}

/**
 * Opens the device at `path` for writing (appending, never creating), failing with `changed`
 * if what is opened is not the file found at the start: see {@link openingOnly}.
 */
function openDevice(path: string, found: Stats, changed: Error): Promise<number> {
  return new Promise((resolve, reject) => {
    openingOnly(found, changed).open(
      path,
      APPEND_EXISTING as unknown as number,
      0o666,
      (error, fd) => (error === null ? resolve(fd as number) : reject(error)),
    );
  });
}

/**
 * What the write-through stream opens `--out` with: the file system's calls, but an open whose
 * descriptor is not the file found at the start (another device and inode) is closed and fails
 * with `changed`, before a byte is written. Between the look and the open, a FIFO or device at
 * `--out` could be replaced by a regular file or a symbolic link to one, which the open (no
 * O_CREAT, but following links) would then have appended the output to: plaintext, for a
 * decrypt, added to whatever file the link named.
 */
function openingOnly(found: Pick<Stats, "dev" | "ino"> | undefined, changed: Error) {
  return {
    open(
      path: string,
      flags: number,
      mode: number,
      done: (error: Error | null, fd?: number) => void,
    ): void {
      open(path, flags, mode, (error, fd) => {
        if (error !== null) return done(error);
        fstat(fd, (statError, info) => {
          const same = statError === null && found?.dev === info.dev && found.ino === info.ino;
          if (same) return done(null, fd);
          close(fd, () => done(statError ?? changed));
        });
      });
    },
    write,
    writev,
    close,
  };
}

const refusingTerminal = (ctx: CommandContext): UsageError =>
  new UsageError(`${ctx.command}: refusing to write binary ciphertext to a terminal`, ctx.command);

const replaced = (ctx: CommandContext, output: string): Error =>
  new Error(
    `${ctx.command}: --out ${output} was replaced while the command ran (it is no longer the file found at the start): nothing was written to it`,
  );

const encrypt: Command = {
  options: { ...IO_OPTIONS, key: { type: "string" }, "frame-size": { type: "string" } },
  positionals: [],
  async run(ctx) {
    const key = requiredOption(ctx.values, "key", ctx.command);
    const named = paths(ctx);
    const context = contextOption(ctx.values, "context", ctx.command);
    const frameLength = integerOption(ctx.values, "frame-size", ctx.command);
    // Refused before the KMS is opened; an `--out` device is checked once opened (see transfer).
    if (named.output === "-" && ctx.io.stdout.isTTY === true) throw refusingTerminal(ctx);
    const files = await transferFiles(ctx, named);
    const kms = await ctx.kms();
    const keyring = new KmsKeyring({ kms, keyIds: [key], callOptions: ctx.callOptions });
    const { result, outputBytes } = await transfer(ctx, files, { binary: true }, (ends) =>
      encryptFile({
        ...ends,
        keyring,
        ...(context === undefined ? {} : { context }),
        ...(frameLength === undefined ? {} : { frameLength }),
      }),
    );
    if (outputBytes !== undefined) {
      await printJson(ctx.io, {
        out: files.output,
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
    const named = paths(ctx);
    // --context is KMS Decrypt's exact match (a mismatch reads as a bad ciphertext);
    // --require-context only demands these pairs, and refuses with AccessDenied.
    const context = contextOption(ctx.values, "context", ctx.command);
    const required = contextOption(ctx.values, "require-context", ctx.command);
    const allowed = stringsOption(ctx.values, "allow-key");
    const maxFrameLength = integerOption(ctx.values, "max-frame-size", ctx.command);
    const files = await transferFiles(ctx, named);
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
    const { result, outputBytes } = await transfer(ctx, files, { binary: false }, (ends) =>
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
        out: files.output,
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
