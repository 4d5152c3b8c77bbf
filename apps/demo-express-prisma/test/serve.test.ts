/**
 * `node src/main.ts serve` as `pnpm … serve` runs it, in a process of its own: the published
 * demo tokens, loopback only, a clean stop on SIGINT and SIGTERM, and configuration mistakes
 * reported in one line.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms, RootKeySource } from "@kms/core";
import { DEMO_TENANT_TOKENS } from "@kms/demo-shared";
import {
  bannerOrigin,
  type DemoProcess,
  exitWithin,
  STARTUP_MISTAKES,
  STOP_BOUND_MS,
  startDemo,
} from "@kms/demo-shared/testing";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

const appRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "demo-express-prisma-serve-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function start(env: Readonly<Record<string, string>> = {}): DemoProcess {
  return startDemo({ cwd: appRoot, args: ["src/main.ts", "serve"], dataDir: dir, env });
}

/** The origin the banner names, once it is printed. */
function origin(demo: DemoProcess): Promise<string> {
  return bannerOrigin(demo, /^patient records API on (http:\/\/127\.0\.0\.1:\d+) /m);
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
      const { id } = (await created.json()) as { id: string };
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
        { id, ssn: "123-45-6789", name: "Ann", note: null, vitals: null },
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

  test("a KMS_ROOT_KEY other than the key store's stops the start with one line", async () => {
    const created = randomBytes(32);
    const store = SqliteKeyStore.open({ path: join(dir, "kms.db") });
    await (await createKms({ store, rootKey: RootKeySource.fromBytes(created) })).close();
    const demo = start({ KMS_ROOT_KEY: randomBytes(32).toString("hex") });
    expect(await exitWithin(demo, STOP_BOUND_MS)).toEqual({ code: 1, signal: null });
    expect(demo.output.stderr).toMatch(
      /^the root key from environment variable KMS_ROOT_KEY \(id \w+\) is not the one key store .* was created with \(id \w+\)\n$/,
    );
    expect(demo.output.stdout).toBe("");
    // The right key still opens it.
    const again = start({ KMS_ROOT_KEY: created.toString("hex") });
    await origin(again);
    again.child.kill("SIGTERM");
    expect(await exitWithin(again, STOP_BOUND_MS)).toEqual({ code: 0, signal: null });
  });

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
