/** A stream the CLI writes to: `process.stdout` / `process.stderr` or a test double. */
export type CliOutput = NodeJS.WritableStream & {
  readonly isTTY?: boolean;
  readonly columns?: number;
};

/** The process surroundings `runCli` uses instead of globals, so tests run it in-process. */
export interface CliIo {
  /** Results (JSON or short text), or the data for `--out -`. */
  readonly stdout: CliOutput;
  /** Diagnostics, warnings and the progress bar. */
  readonly stderr: CliOutput;
  /** The data for `--in -`. */
  readonly stdin: NodeJS.ReadableStream;
  /** Read for KMS_DATA_DIR and KMS_ROOT_KEY. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Relative paths resolve against it. */
  readonly cwd: string;
  /**
   * Stops a long-running command when aborted; the binary aborts it on SIGINT, SIGTERM and SIGHUP.
   * `serve` stops cleanly (exit 0); `encrypt` and `decrypt` fail (`Interrupted`, exit 1),
   * destroying their input stream (`stdin` for `--in -`) and removing their partial output file.
   * Without it, `serve` runs until the process ends.
   */
  readonly signal?: AbortSignal;
}
