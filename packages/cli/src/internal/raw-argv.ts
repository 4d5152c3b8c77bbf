import { isUtf8 } from "node:buffer";
import { readFileSync } from "node:fs";

/**
 * The 1-based position of the first argument whose bytes on the command line are not UTF-8, or
 * undefined. Node decodes the process's arguments as UTF-8 and turns every invalid byte into
 * U+FFFD, so `--out $'caf\xe9'` would write a file named `caf\ufffd` and `--context k=$'\xff'`
 * would equal `k=$'\xfe'`; only the raw bytes show it. Linux exposes them in /proc/self/cmdline;
 * elsewhere (or when it cannot be read) nothing is checked.
 */
export function invalidUtf8Argument(argv: readonly string[]): number | undefined {
  if (process.platform !== "linux" || argv.length === 0) return undefined;
  let cmdline: Buffer;
  try {
    cmdline = readFileSync("/proc/self/cmdline");
  } catch {
    return undefined;
  }
  // NUL-terminated entries; the script's arguments are the last ones, after node's own.
  const entries: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < cmdline.length; i += 1) {
    if (cmdline[i] === 0) {
      entries.push(cmdline.subarray(start, i));
      start = i + 1;
    }
  }
  const raw = entries.slice(-argv.length);
  if (raw.length !== argv.length) return undefined;
  for (let i = 0; i < argv.length; i += 1) {
    // Only bytes that are not UTF-8 count: anything that rewrites the process title also
    // rewrites /proc/self/cmdline, and must not turn valid arguments into usage errors.
    const bytes = raw[i] as Buffer;
    if (!isUtf8(bytes) && !Buffer.from(argv[i] as string, "utf8").equals(bytes)) return i + 1;
  }
  return undefined;
}
