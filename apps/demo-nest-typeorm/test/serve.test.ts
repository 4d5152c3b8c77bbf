/**
 * `node dist/main.js` as `pnpm … start` and `serve` run it, in a process of its own: the published
 * demo tokens, a clean stop on SIGINT and SIGTERM, and configuration mistakes reported in one
 * line. The app is compiled first, as `start` does.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEMO_TENANT_TOKENS } from "@kms/demo-shared";
import {
  bannerOrigin,
  type DemoProcess,
  exitWithin,
  STARTUP_MISTAKES,
  STOP_BOUND_MS,
  startDemo,
} from "@kms/demo-shared/testing";
import { afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";

const appRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

beforeAll(() => {
  execFileSync(join(appRoot, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.build.json"], {
    cwd: appRoot,
  });
}, 120_000);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "demo-nest-typeorm-serve-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function start(env: Readonly<Record<string, string>> = {}): DemoProcess {
  return startDemo({ cwd: appRoot, args: ["dist/main.js"], dataDir: dir, env });
}

/** The origin the banner names, once it is printed. */
function origin(demo: DemoProcess): Promise<string> {
  return bannerOrigin(demo, /^demo-nest-typeorm listening on (http:\/\/127\.0\.0\.1:\d+):/m);
}

describe("`node dist/main.js`", () => {
  test.each(["SIGTERM", "SIGINT"] as const)(
    "on %s closes the server, TypeORM and the KMS and exits 0",
    async (signal) => {
      const demo = start();
      const base = await origin(demo);
      const token = DEMO_TENANT_TOKENS["clinic-a"] as string;
      expect(demo.output.stdout).toContain(`-H 'authorization: Bearer ${token}'`);
      // Also delivers the signed webhook to this very server, over a kept-alive connection.
      const created = await fetch(`${base}/patients`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ ssn: "123-45-6789", name: "Ada Lovelace" }),
      });
      expect(created.status).toBe(201);
      expect(await created.json()).toMatchObject({ webhook: { receiptVerified: true } });

      demo.child.kill(signal);
      expect(await exitWithin(demo, STOP_BOUND_MS)).toEqual({ code: 0, signal: null });
      expect(demo.output.stdout).toMatch(new RegExp(`^${signal}: stopping$`, "m"));
      expect(demo.output.stderr).not.toMatch(/\n\s+at /);
    },
  );

  // A PostgreSQL server that does not answer used to take some 30 s of retries, each logged with
  // its stack.
  test.each(STARTUP_MISTAKES)(
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
