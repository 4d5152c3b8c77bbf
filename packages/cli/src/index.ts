export type { CliIo, CliOutput } from "./cli-io.ts";
export {
  createProgressBar,
  type ProgressBar,
  type ProgressBarOptions,
  type ProgressOutput,
} from "./progress-bar.ts";
export { EXIT_AUDIT_BROKEN, EXIT_FAILED, EXIT_OK, EXIT_USAGE, runCli } from "./run-cli.ts";
