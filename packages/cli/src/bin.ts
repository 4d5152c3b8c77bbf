#!/usr/bin/env node
// The `kms` command: everything happens in runCli, so tests can run the same code in-process.
import { runCli } from "./run-cli.ts";

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  cwd: process.cwd(),
});
