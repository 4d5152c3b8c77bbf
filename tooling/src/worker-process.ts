import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

/**
 * A test worker in its own OS process, for races between processes. Protocol: the worker prints
 * "ready" once set up, starts on "go" from stdin (so every worker starts together), and prints
 * its JSON report as its last line before exiting 0.
 */
export interface WorkerProcess<Report> {
  /** Resolves on "ready", or when the worker ends early (so a crash is not a hang). */
  readonly ready: Promise<void>;
  go(): void;
  /** The last line as JSON; rejects with the exit status and stderr when it fails. */
  readonly result: Promise<Report>;
}

export function startWorkerProcess<Report>(
  script: string,
  args: readonly string[],
): WorkerProcess<Report> {
  const child = spawn(process.execPath, ["--no-warnings", script, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  let last = "";
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (line === "ready") onReady();
    else last = line;
  });
  const result = new Promise<Report>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve(JSON.parse(last) as Report);
      else reject(new Error(`worker exited with ${code ?? signal}: ${stderr}`));
    });
  });
  return {
    ready: Promise.race([ready, result.then(() => {})]),
    go: () => child.stdin.write("go\n"),
    result,
  };
}
