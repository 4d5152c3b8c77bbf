/**
 * `node src/main.ts serve` as `pnpm … serve` runs it, in a process of its own: the published
 * demo tokens, loopback only, a clean stop on SIGINT and SIGTERM, and configuration mistakes
 * reported in one line.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { DEMO_TENANT_TOKENS } from "../src/tenants.ts";

const appRoot = join(dirname(fileURLToPath(import.meta.url)), "..");
/** A liveness bound, not a speed target: the process must stop, however slowly. */
const STOP_BOUND_MS = 10_000;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "demo-express-prisma-serve-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Demo {
  readonly child: ChildProcessWithoutNullStreams;
  readonly output: { stdout: string; stderr: string };
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The demo's environment: nothing inherited that would point it elsewhere. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env, DEMO_DATA_DIR: dir, PORT: "0" };
  for (const name of [
    "KMS_ENDPOINT",
    "KMS_ROOT_KEY",
    "DATABASE_URL",
    "DEMO_TENANTS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
  ]) {
    delete base[name];
  }
  return { ...base, ...extra };
}

function start(extra: Record<string, string> = {}): Demo {
  const child = spawn(process.execPath, ["src/main.ts", "serve"], {
    cwd: appRoot,
    env: env(extra),
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

/** The origin the banner names, once it is printed. */
async function origin(demo: Demo): Promise<string> {
  for (;;) {
    const match = /^patient records API on (http:\/\/127\.0\.0\.1:\d+) /m.exec(demo.output.stdout);
    if (match?.[1] !== undefined) return match[1];
    const stopped = await Promise.race([
      demo.exited.then(() => true),
      once(demo.child.stdout, "data").then(() => false),
    ]);
    if (stopped) throw new Error(`serve exited early:\n${demo.output.stderr}`);
  }
}

/** How the process ended, or "still running" after the liveness bound (then it is killed). */
async function exitWithin(demo: Demo, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"still running">((resolve) => {
    timer = setTimeout(() => resolve("still running"), ms);
  });
  const result = await Promise.race([demo.exited, timeout]);
  clearTimeout(timer);
  if (result === "still running") demo.child.kill("SIGKILL");
  return result;
}

describe("`serve`", () => {
  test.each(["SIGTERM", "SIGINT"] as const)(
    "on %s closes the server, the database and the KMS and exits 0",
    async (signal) => {
      const demo = start();
      const base = await origin(demo);
      const token = DEMO_TENANT_TOKENS["clinic-a"] as string;
      // The banner shows how to authenticate, with the published tokens.
      expect(demo.output.stdout).toContain(`-H 'authorization: Bearer ${token}'`);
      const created = await fetch(`${base}/patients`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ ssn: "123-45-6789", name: "Ann" }),
      });
      expect(created.status).toBe(201);
      // fetch keeps that connection open: stopping must not wait for it.
      const refused = await fetch(`${base}/patients`, { headers: { "x-tenant-id": "clinic-a" } });
      expect(refused.status).toBe(401);

      demo.child.kill(signal);
      expect(await exitWithin(demo, STOP_BOUND_MS)).toEqual({ code: 0, signal: null });
      expect(demo.output.stdout).toMatch(new RegExp(`^${signal}: stopping\\nstopped\\n$`, "m"));
      expect(demo.output.stderr).not.toMatch(/\n\s+at /);
      // The data outlives the process: a second run reads Ann back.
      const again = start();
      const next = await origin(again);
      const read = await fetch(`${next}/patients`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(await read.json()).toEqual([
        { id: 1, ssn: "123-45-6789", name: "Ann", note: null, vitals: null },
      ]);
      again.child.kill("SIGTERM");
      expect(await exitWithin(again, STOP_BOUND_MS)).toEqual({ code: 0, signal: null });
    },
  );

  test("DEMO_TENANTS replaces the published tokens, which it does not print", async () => {
    const token = "own-token-of-clinic-x-0123456789";
    const demo = start({ DEMO_TENANTS: `clinic-x=${token}` });
    const base = await origin(demo);
    expect(demo.output.stdout).toContain("Clinics: clinic-x (tokens from DEMO_TENANTS)");
    expect(demo.output.stdout).not.toContain(token);
    const published = `Bearer ${DEMO_TENANT_TOKENS["clinic-a"]}`;
    expect(
      (await fetch(`${base}/patients`, { headers: { authorization: published } })).status,
    ).toBe(401);
    const own = await fetch(`${base}/patients`, { headers: { authorization: `Bearer ${token}` } });
    expect(own.status).toBe(200);
    demo.child.kill("SIGTERM");
    expect(await exitWithin(demo, STOP_BOUND_MS)).toEqual({ code: 0, signal: null });
  });

  const mistakes: [string, Record<string, string>, string][] = [
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
    [
      "a PORT out of range",
      { PORT: "70000" },
      "PORT must be an integer from 0 to 65535, got 70000",
    ],
  ];
  test.each(mistakes)(
    "%s stops the start with one line, no stack and no secret",
    async (_, extra, message) => {
      const demo = start(extra);
      expect(await exitWithin(demo, STOP_BOUND_MS)).toEqual({ code: 1, signal: null });
      expect(demo.output.stderr).toContain(message);
      expect(demo.output.stderr).not.toMatch(/\n\s+at /);
      expect(demo.output.stderr).not.toContain("hunter2");
      expect(demo.output.stdout).toBe("");
    },
  );
});
