import { constants, type Stats } from "node:fs";
import { open, readFile } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { ValidationError } from "@kms/core";
import {
  assertAllowedHost,
  createKmsServer,
  MIN_SECRET_ACCESS_KEY_LENGTH,
  type RefusedRequest,
  type ServerCredential,
} from "@kms/server";
import {
  booleanOption,
  integerOption,
  requiredOption,
  stringOption,
  stringsOption,
} from "./args.ts";
import { type Command, type CommandContext, writeOut } from "./command.ts";
import { UsageError } from "./usage.ts";

const SERVE_OPTIONS = {
  credentials: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "insecure-http": { type: "boolean" },
  "allowed-host": { type: "string", multiple: true },
} as const;

export const DEFAULT_SERVE_PORT = 4599;

/** A credentials file that cannot be used; the message never quotes the file's contents. */
export class CredentialsFileError extends Error {
  override readonly name = "CredentialsFileError";
}

/** What a file that is not a regular file is, for an error message. */
function fileKind(info: Stats): string {
  if (info.isDirectory()) return "a directory";
  if (info.isFIFO()) return "a FIFO";
  if (info.isCharacterDevice()) return "a character device";
  if (info.isBlockDevice()) return "a block device";
  if (info.isSocket()) return "a socket";
  return "a special file";
}

/**
 * Reads `{ "<access key id>": { "secretAccessKey": "…", "principal": "arn:…" } }`. The file
 * holds the secrets every client signs with, so one that others can read, or that another user
 * owns (and so can rewrite), is refused, as ssh refuses such a private key. The type, mode and
 * owner are the opened file's, so that the file checked is the file read: a stat of the path and
 * a second open of it could each find a different file.
 *
 * Only a regular file (or a symbolic link to one) is read. It is opened with O_NONBLOCK, which
 * a regular file's reads ignore, so that a FIFO without a writer does not hold the open (and the
 * command) forever; a FIFO, directory or device is then refused on its type before anything is
 * read from it: `/dev/zero` would never end, `/dev/tty` would wait for a typist.
 */
export async function readCredentialsFile(
  path: string,
): Promise<Readonly<Record<string, ServerCredential>>> {
  const cannotRead = (error: NodeJS.ErrnoException): never => {
    throw new CredentialsFileError(`cannot read the credentials file ${path} (${error.code})`);
  };
  // Windows has no O_NONBLOCK (undefined, so 0 here), nor FIFOs that an open would wait on.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK).catch(cannotRead);
  let text: string;
  try {
    const info = await handle.stat().catch(cannotRead);
    if (!info.isFile()) {
      throw new CredentialsFileError(
        `the credentials file ${path} is ${fileKind(info)}, not a regular file`,
      );
    }
    if (process.platform !== "win32" && (info.mode & 0o077) !== 0) {
      throw new CredentialsFileError(
        `the credentials file ${path} can be read by other users (mode ${(info.mode & 0o777).toString(8)}): chmod 600 it`,
      );
    }
    // As ssh's StrictModes: whoever owns the file can rewrite it, adding an access key of their
    // own with any principal, whatever its mode. Only the user running serve, or root, may.
    const uid = process.getuid?.();
    if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
      throw new CredentialsFileError(
        `the credentials file ${path} is owned by another user (uid ${info.uid}), who can add access keys to it: chown it to the user running kms serve`,
      );
    }
    text = await handle.readFile("utf8").catch(cannotRead);
  } finally {
    await handle.close().catch(() => undefined);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON.parse quotes the text around the error, which may be a secret.
    throw new CredentialsFileError(`the credentials file ${path} is not valid JSON`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CredentialsFileError(
      `the credentials file ${path} must hold an object of access key id → { secretAccessKey, principal }`,
    );
  }
  const credentials: Record<string, ServerCredential> = {};
  for (const [accessKeyId, entry] of Object.entries(parsed)) {
    if (!/^[A-Z0-9]{16,128}$/.test(accessKeyId)) {
      throw new CredentialsFileError(
        `${path}: access key ids are 16 to 128 upper-case letters and digits (AWS's form); one is not`,
      );
    }
    const { secretAccessKey, principal } = (entry ?? {}) as Record<string, unknown>;
    // The server's own bound, checked here first so that the error names the file.
    if (
      typeof secretAccessKey !== "string" ||
      secretAccessKey.length < MIN_SECRET_ACCESS_KEY_LENGTH
    ) {
      throw new CredentialsFileError(
        `${path}: the secretAccessKey of ${accessKeyId} must be a string of at least ${MIN_SECRET_ACCESS_KEY_LENGTH} characters`,
      );
    }
    if (typeof principal !== "string" || !principal.startsWith("arn:")) {
      throw new CredentialsFileError(
        `${path}: the principal of ${accessKeyId} must be an ARN (arn:aws:iam::<account>:role/<name>, …)`,
      );
    }
    credentials[accessKeyId] = { secretAccessKey, principal };
  }
  if (Object.keys(credentials).length === 0) {
    throw new CredentialsFileError(`the credentials file ${path} holds no access key`);
  }
  return credentials;
}

/** The TLS files' paths: both or neither. */
function tlsPaths(ctx: CommandContext): { cert: string; key: string } | undefined {
  const cert = stringOption(ctx.values, "tls-cert");
  const key = stringOption(ctx.values, "tls-key");
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined || key === undefined) {
    throw new UsageError("serve: --tls-cert and --tls-key go together", "serve");
  }
  return { cert: resolve(ctx.io.cwd, cert), key: resolve(ctx.io.cwd, key) };
}

/**
 * The `--allowed-host` values, each checked by the server's own rule: a bad one is a mistake in
 * the command line (exit 2, before any file is read), not the server's ValidationError naming
 * `allowedHosts[i]`, an option the user never wrote.
 */
function allowedHostsOption(ctx: CommandContext): string[] {
  const hosts = stringsOption(ctx.values, "allowed-host");
  for (const host of hosts) {
    try {
      assertAllowedHost(host, "--allowed-host");
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      throw new UsageError(`serve: ${error.message}`, "serve");
    }
  }
  return hosts;
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => {
      server.off("error", fail);
      done(server.address() as AddressInfo);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((done) => {
    // Requests in flight finish (each is bounded by the server's request timeout); idle
    // keep-alive connections would otherwise hold close() open until their clients hang up.
    server.close(() => done());
    server.closeIdleConnections();
  });
}

function aborted(signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return new Promise(() => undefined);
  if (signal.aborted) return Promise.resolve();
  return new Promise((done) => signal.addEventListener("abort", () => done(), { once: true }));
}

/**
 * `kms serve`: the data dir's KMS behind the AWS KMS JSON protocol (@kms/server), for the AWS
 * SDK and CLI; runs until the CLI's signal is aborted (SIGINT, SIGTERM or SIGHUP for the binary), then
 * stops accepting requests, finishes the ones in flight, and the KMS is closed by runCli.
 */
export const serveCommand: Command = {
  options: SERVE_OPTIONS,
  positionals: [],
  async run(ctx) {
    if (ctx.callOptions.principal !== undefined) {
      throw new UsageError(
        "serve: --principal does not apply: each access key in --credentials has its own principal",
        "serve",
      );
    }
    // The command line is checked whole before any file is read.
    const credentialsPath = resolve(ctx.io.cwd, requiredOption(ctx.values, "credentials", "serve"));
    const host = stringOption(ctx.values, "host") ?? "127.0.0.1";
    const port = integerOption(ctx.values, "port", "serve") ?? DEFAULT_SERVE_PORT;
    if (port > 65_535) throw new UsageError(`serve: --port ${port} is not a TCP port`, "serve");
    const tlsFiles = tlsPaths(ctx);
    const allowedHosts = allowedHostsOption(ctx);
    const credentials = await readCredentialsFile(credentialsPath);
    const tls =
      tlsFiles === undefined
        ? undefined
        : { cert: await readFile(tlsFiles.cert), key: await readFile(tlsFiles.key) };
    const kms = await ctx.kms();
    const { account, region } = kms.identity;
    for (const [accessKeyId, { principal }] of Object.entries(credentials)) {
      // Default key policies allow the KMS's own account and nobody else (docs/POLICY.md).
      if (principal.split(":")[4] !== account) {
        ctx.io.stderr.write(
          `kms: warning: the principal of ${accessKeyId} is not in this KMS's account ${account}: ` +
            "keys with the default policy allow it nothing\n",
        );
      }
    }
    const server = createKmsServer({
      kms,
      credentials,
      ...(tls === undefined ? {} : { tls }),
      ...(booleanOption(ctx.values, "insecure-http") === true ? { insecureHttp: true } : {}),
      ...(allowedHosts.length > 0 ? { allowedHosts } : {}),
      // The Kms audits every call it runs; a request refused before it (a bad signature, an
      // unknown access key, a malformed body) would otherwise leave no trace for the operator.
      onRefused: (refusal) => {
        ctx.io.stderr.write(`${refusedLine(refusal)}\n`);
      },
    });
    const address = await listen(server, port, host);
    const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
    try {
      await writeOut(
        ctx.io,
        `kms: serving the AWS KMS API at ${tls === undefined ? "http" : "https"}://${shown}:${address.port} ` +
          `(region ${region}, account ${account}, ${Object.keys(credentials).length} access keys)\n`,
      );
      // Read only here: reading it tells the binary that this command handles SIGINT itself.
      await aborted(ctx.io.signal);
    } finally {
      await close(server);
    }
  },
};

/**
 * One stderr line per refused request. JSON-quoted where the client chose the text (the access
 * key id, the message that may repeat it), so a crafted value cannot forge a second line.
 */
function refusedLine(refusal: RefusedRequest): string {
  const parts = [
    `kms: refused ${refusal.requestId}`,
    `${refusal.status} ${refusal.code}`,
    ...(refusal.operation === undefined ? [] : [refusal.operation]),
    ...(refusal.accessKeyId === undefined ? [] : [`key ${JSON.stringify(refusal.accessKeyId)}`]),
    ...(refusal.principal === undefined ? [] : [`as ${refusal.principal}`]),
    ...(refusal.sourceIp === undefined ? [] : [`from ${refusal.sourceIp}`]),
  ];
  return `${parts.join(" ")}: ${JSON.stringify(refusal.message)}`;
}
