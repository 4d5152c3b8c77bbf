#!/usr/bin/env node
// The `kms` command: everything happens in runCli, so tests can run the same code in-process.
import { invalidUtf8Argument } from "./internal/raw-argv.ts";
import { usageText } from "./internal/usage.ts";
import { EXIT_OK, EXIT_USAGE, runCli } from "./run-cli.ts";

// A write to a pipe whose reader is gone also emits `error`, which with no listener ends the
// process with a stack trace and exit status 1. runCli listens while it runs; these cover the
// bin's own writes and errors that surface after runCli returned. The writes themselves still
// fail (stdout's fail the command; see runCli).
const ignoreWriteError = (): void => undefined;
process.stdout.on("error", ignoreWriteError);
process.stderr.on("error", ignoreWriteError);

const argv = process.argv.slice(2);
const undecodable = invalidUtf8Argument(argv);
if (undecodable !== undefined) {
  // runCli only sees the decoded strings, where the damage is no longer visible.
  process.stderr.write(
    `kms: argument ${undecodable} is not valid UTF-8 (it would be read as U+FFFD)\n\n${usageText()}`,
  );
  process.exitCode = EXIT_USAGE;
} else {
  // A command that reads `signal` (`kms serve`; `encrypt` and `decrypt` once they transfer data)
  // stops on the first SIGINT, SIGTERM or SIGHUP and then closes the KMS, flushing the audit
  // trail; a second signal ends the process at once. For every other command the signal is
  // raised again, so it ends the process as it always did. SIGHUP is the terminal or SSH session
  // going away mid-decrypt: left to its default, it killed the process with the verified
  // plaintext of an unfinished message in `<out>.<random>.partial`.
  const stop = new AbortController();
  let stoppable = false;
  let received: NodeJS.Signals | undefined;
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  // Every listener goes on the first signal, so that the second ends the process whichever it is
  // (SIGINT, then SIGTERM from a supervisor, was swallowed).
  const onSignal = (name: NodeJS.Signals): void => {
    for (const each of signals) process.off(each, onSignal);
    if (!stoppable) {
      process.kill(process.pid, name);
      return;
    }
    received = name;
    stop.abort();
  };
  for (const name of signals) process.on(name, onSignal);
  const code = await runCli(argv, {
    get signal() {
      stoppable = true;
      return stop.signal;
    },
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
  });
  process.exitCode = code;
  // Nothing is left to stop: a signal while the process winds down (a FIFO `--out` whose reader
  // never came holds it open) ends it at once, instead of aborting what already ended. The
  // listeners stay: one taken off here could lose a signal already caught but not yet handled.
  stoppable = false;
  // An encrypt or decrypt the signal stopped has removed its partial output: now it ends by
  // that signal (exit status 128 + n), as a command the signal ends at once does. `serve`
  // stopped cleanly exits 0: a signal is how it is meant to stop.
  if (received !== undefined && code !== EXIT_OK) process.kill(process.pid, received);
}
