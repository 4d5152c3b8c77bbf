import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import type { CliOutput } from "../src/cli-io.ts";
import { runCli } from "../src/index.ts";

/** A Writable that keeps what it was given, optionally claiming to be a terminal. */
export class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  readonly isTTY: boolean;
  readonly columns = 120;

  constructor(tty = false) {
    super();
    this.isTTY = tty;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    callback();
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.bytes().toString("utf8");
  }
}

export interface RunResult {
  readonly code: number;
  readonly stdout: Buffer;
  readonly out: string;
  readonly err: string;
}

export interface RunOptions {
  readonly cwd: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly stdin?: Uint8Array;
  readonly ttyStderr?: boolean;
}

export async function run(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  const stdout = new Collector();
  const stderr = new Collector(options.ttyStderr === true);
  const stdin = Readable.from(options.stdin === undefined ? [] : [Buffer.from(options.stdin)], {
    objectMode: false,
  });
  const code = await runCli(argv, {
    stdout: stdout as CliOutput,
    stderr: stderr as CliOutput,
    stdin,
    env: options.env ?? {},
    cwd: options.cwd,
  });
  return { code, stdout: stdout.bytes(), out: stdout.text(), err: stderr.text() };
}

/** A temporary working directory and a fresh root key for it, removed by `dispose`. */
export function workspace(): {
  dir: string;
  rootKey: Buffer;
  env: Record<string, string>;
  dispose: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), "kms-cli-"));
  const rootKey = randomBytes(32);
  return {
    dir,
    rootKey,
    env: { KMS_ROOT_KEY: rootKey.toString("hex") },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A {@link workspace} whose default data dir (`.kms`) holds a key store under its root key, made
 * by `kms init`: every other command refuses a data dir without one.
 */
export async function initializedWorkspace(): Promise<ReturnType<typeof workspace>> {
  const ws = workspace();
  await initStore(ws);
  return ws;
}

/** `kms init` in the workspace's default data dir (or `extra`'s `--data-dir`), which must succeed. */
export async function initStore(
  ws: { readonly dir: string; readonly env: Readonly<Record<string, string>> },
  extra: readonly string[] = [],
): Promise<void> {
  const init = await run(["init", ...extra], { cwd: ws.dir, env: ws.env });
  if (init.code !== 0) throw new Error(`kms init exited ${init.code}: ${init.err}`);
}

/** Recognizable, incompressible plaintext of `size` bytes. */
export function plaintext(size: number, marker = "PLAINTEXT-MARKER"): Buffer {
  const head = Buffer.from(`${marker}-${randomBytes(8).toString("hex")}-`);
  const data = Buffer.concat([head, randomBytes(Math.max(0, size - head.length))]);
  return data.subarray(0, size);
}
