import type { FileProgress, ReencryptCheckpoint } from "@kms/core";

/** Where a progress bar writes: `process.stderr` or any stream with `write`. */
export interface ProgressOutput {
  write(text: string): unknown;
  /** True on a terminal: the bar redraws one line in place. */
  readonly isTTY?: boolean;
  /** Terminal width; the bar drops its graphic when the line would not fit. */
  readonly columns?: number;
}

export interface ProgressBarOptions {
  /** Printed before the figures, e.g. `encrypt` or `reencrypt patient`. */
  readonly label: string;
  /** Expected total (bytes or rows); with it the bar shows a percentage and an ETA. */
  readonly total?: number;
  readonly unit: "bytes" | "rows";
  /** Default `process.stderr`. */
  readonly output?: ProgressOutput;
  /**
   * "auto" (default): redraw on a terminal, print nothing otherwise. "always": also print plain
   * lines when the output is not a terminal (at most one per second, plus a final line), for CI
   * logs. "never": print nothing.
   */
  readonly show?: "auto" | "always" | "never";
  /** Clock in milliseconds, for tests; default `performance.now`. */
  readonly now?: () => number;
}

export interface ProgressBar {
  /** Records `done` units of work (cumulative), and a new total when it became known. */
  readonly update: (done: number, total?: number) => void;
  /** An `onProgress` for `encryptFile` / `decryptFile`. */
  readonly file: (progress: FileProgress) => void;
  /**
   * An `onProgress` for `reencryptFields` and the ORM adapters' re-encryption jobs: counts
   * scanned rows and shows how many were re-encrypted or conflicted.
   */
  readonly checkpoint: (checkpoint: ReencryptCheckpoint) => void;
  /** Prints the final line ("done" or "failed") and ends the terminal line; later calls do nothing. */
  readonly finish: (outcome?: "done" | "failed") => void;
}

// A 64 KiB chunk arrives every few microseconds on a fast disk: redrawing each one would cost
// more than the encryption. Ten redraws a second look continuous.
const TTY_INTERVAL_MS = 100;
const LINE_INTERVAL_MS = 1000;
const BAR_WIDTH = 24;

/**
 * A progress display for long operations, on stderr by default. On a terminal it redraws one
 * line with `\r` (bar, percent, amount, rate, ETA when the total is known); elsewhere it stays
 * silent unless `show: "always"`, then prints at most one line per second and a final line.
 * @throws TypeError when `label` is empty or `unit` is not "bytes" or "rows".
 */
export function createProgressBar(options: ProgressBarOptions): ProgressBar {
  if (typeof options.label !== "string" || options.label.length === 0) {
    throw new TypeError('"label" expected a non-empty string');
  }
  if (options.unit !== "bytes" && options.unit !== "rows") {
    throw new TypeError(`"unit" expected "bytes" or "rows", got ${String(options.unit)}`);
  }
  const output = options.output ?? process.stderr;
  const now = options.now ?? (() => performance.now());
  const show = options.show ?? "auto";
  const tty = output.isTTY === true;
  const mode = show === "never" ? "off" : tty ? "tty" : show === "always" ? "lines" : "off";
  const { label, unit } = options;
  const started = now();
  const interval = mode === "tty" ? TTY_INTERVAL_MS : LINE_INTERVAL_MS;
  let total = options.total;
  let done = 0;
  let extra = "";
  // A terminal gets its first frame at once, a log its first line after a full interval.
  let lastWrite = mode === "tty" ? Number.NEGATIVE_INFINITY : started;
  let finished = false;

  const figures = (): string => {
    const elapsed = (now() - started) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const parts: string[] = [];
    if (total !== undefined) {
      parts.push(`${percent(done, total)}%`, `${amount(done, unit)} / ${amount(total, unit)}`);
    } else {
      parts.push(amount(done, unit));
    }
    if (rate > 0) parts.push(`${amount(rate, unit)}/s`);
    if (total !== undefined && rate > 0 && done < total) {
      parts.push(`ETA ${duration((total - done) / rate)}`);
    }
    if (extra !== "") parts.push(extra);
    return parts.join("  ");
  };

  const ttyLine = (): string => {
    const text = figures();
    const withBar =
      total === undefined ? `${label}  ${text}` : `${label} ${graphic(done, total)} ${text}`;
    const columns = output.columns;
    // Wider than the terminal, the line wraps and `\r` no longer returns to its start.
    let line = withBar;
    if (columns !== undefined && columns > 1 && line.length >= columns) {
      line = `${label}  ${text}`.slice(0, columns - 1);
    }
    return `\r${line}\x1b[K`;
  };

  const update = (value: number, newTotal?: number): void => {
    done = value;
    if (newTotal !== undefined) total = newTotal;
    if (finished || mode === "off") return;
    const t = now();
    if (t - lastWrite < interval) return;
    lastWrite = t;
    output.write(mode === "tty" ? ttyLine() : `${label}: ${figures()}\n`);
  };

  return {
    update,
    file: (progress) => update(progress.bytesRead, progress.totalBytes),
    checkpoint: (checkpoint) => {
      extra = `re-encrypted ${checkpoint.reencrypted}, conflicts ${checkpoint.conflicts}`;
      update(checkpoint.scanned);
    },
    finish: (outcome = "done") => {
      if (finished) return;
      finished = true;
      if (mode === "off") return;
      const seconds = duration((now() - started) / 1000);
      const summary =
        outcome === "done"
          ? `done, ${amount(done, unit)} in ${seconds}${extra === "" ? "" : `, ${extra}`}`
          : `failed after ${amount(done, unit)}`;
      // On a terminal the final state replaces the bar (`\r` is harmless when none was drawn),
      // so a log of the terminal keeps one line per run.
      output.write(mode === "tty" ? `\r${label}: ${summary}\x1b[K\n` : `${label}: ${summary}\n`);
    },
  };
}

function percent(done: number, total: number): number {
  if (total <= 0) return 100;
  return Math.min(100, Math.floor((done / total) * 100));
}

function graphic(done: number, total: number): string {
  const filled =
    total <= 0 ? BAR_WIDTH : Math.min(BAR_WIDTH, Math.floor((done / total) * BAR_WIDTH));
  return `[${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}]`;
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"] as const;

function amount(value: number, unit: "bytes" | "rows"): string {
  if (unit === "rows") return `${Math.round(value)} rows`;
  let scaled = value;
  let index = 0;
  while (scaled >= 1024 && index < BYTE_UNITS.length - 1) {
    scaled /= 1024;
    index += 1;
  }
  return index === 0 ? `${Math.round(scaled)} B` : `${scaled.toFixed(1)} ${BYTE_UNITS[index]}`;
}

function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
