import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";

/** A liveness bound, not a speed target: a demo told to stop must stop, however slowly. */
export const STOP_BOUND_MS = 10_000;

export interface DemoExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A demo app running in a process of its own, as `pnpm … serve` runs it. */
export interface DemoProcess {
  readonly child: ChildProcessWithoutNullStreams;
  /** Everything printed so far. */
  readonly output: { stdout: string; stderr: string };
  readonly exited: Promise<DemoExit>;
}

/** What would point a demo at another database, KMS, clinic table or webhook receiver. */
const INHERITED = [
  "KMS_ENDPOINT",
  "KMS_ROOT_KEY",
  "DATABASE_URL",
  "DEMO_TENANTS",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "WEBHOOK_URL",
] as const;

/**
 * Runs `node <args>` in `cwd` with its data in `dataDir`, on a free port (`PORT=0`), and none of
 * the test runner's own {@link INHERITED} variables: only `env` sets them.
 */
export function startDemo(options: {
  readonly cwd: string;
  readonly args: readonly string[];
  readonly dataDir: string;
  readonly env?: Readonly<Record<string, string>>;
}): DemoProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, DEMO_DATA_DIR: options.dataDir, PORT: "0" };
  for (const name of INHERITED) delete env[name];
  const child = spawn(process.execPath, [...options.args], {
    cwd: options.cwd,
    env: { ...env, ...options.env },
  });
  const output = { stdout: "", stderr: "" };
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output.stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    output.stderr += chunk;
  });
  const exited = once(child, "exit").then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  return { child, output, exited };
}

/**
 * The origin the demo's start banner names (the first group of `banner`), once it is printed.
 * @throws Error with the demo's stderr when it exits first.
 */
export async function bannerOrigin(demo: DemoProcess, banner: RegExp): Promise<string> {
  for (;;) {
    const origin = banner.exec(demo.output.stdout)?.[1];
    if (origin !== undefined) return origin;
    const stopped = await Promise.race([
      demo.exited.then(() => true),
      once(demo.child.stdout, "data").then(() => false),
    ]);
    if (stopped) throw new Error(`the demo exited early:\n${demo.output.stderr}`);
  }
}

/** How the process ended, or "still running" after `ms` (then it is killed). */
export async function exitWithin(
  demo: DemoProcess,
  ms: number,
): Promise<DemoExit | "still running"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"still running">((resolve) => {
    timer = setTimeout(() => resolve("still running"), ms);
  });
  const result = await Promise.race([demo.exited, timeout]);
  clearTimeout(timer);
  if (result === "still running") demo.child.kill("SIGKILL");
  return result;
}

/**
 * Configuration mistakes both demos refuse at start, each with the environment that makes it and
 * the start of the one line they print. Every environment holds a secret ("hunter2") that the
 * line must not repeat.
 */
export const STARTUP_MISTAKES: readonly (readonly [
  mistake: string,
  env: Readonly<Record<string, string>>,
  message: string,
])[] = [
  [
    "a DATABASE_URL that is not PostgreSQL's",
    { DATABASE_URL: "mysql://root:hunter2@127.0.0.1/records" },
    "DATABASE_URL must be a postgres:// or postgresql:// URL; unset it to use SQLite",
  ],
  [
    "a PostgreSQL server that does not answer",
    { DATABASE_URL: "postgres://demo:hunter2@127.0.0.1:1/records" },
    "cannot connect to the PostgreSQL server of DATABASE_URL (127.0.0.1:1/records): ",
  ],
  [
    "a DEMO_TENANTS token too short to be safe",
    { DEMO_TENANTS: "clinic-a=hunter2" },
    "DEMO_TENANTS: the token of clinic-a: 16–256 characters",
  ],
  ["a PORT out of range", { PORT: "70000" }, "PORT must be an integer from 0 to 65535, got 70000"],
  [
    "a KMS_ROOT_KEY that is no key",
    { KMS_ROOT_KEY: "hunter2" },
    "root key from environment variable KMS_ROOT_KEY must be 32 bytes as 64 hex digits or base64",
  ],
];
