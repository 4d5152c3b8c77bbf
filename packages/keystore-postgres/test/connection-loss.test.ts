import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const WORKER = fileURLToPath(new URL("./fixtures/terminated-worker.ts", import.meta.url));

/** The migrations' advisory lock (migrations.ts): class, then the schema name's hash. */
const MIGRATION_LOCK_CLASS = 0x6b6d_7301;

type Mode = "store" | "audit" | "open";

describe.skipIf(target.skipReason !== undefined)("a backend terminated mid-transaction", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /**
   * Starts the worker, holds the lock its call waits for, terminates the worker's backend once
   * it waits for that lock, lets go of the lock and has the worker call again.
   */
  async function terminateWhileWaiting(mode: Mode) {
    const schema = randomSchema("lost");
    cleanups.push(() => dropSchema(schema));
    // Created beforehand so the lock holder has rows to lock; the worker then opens a current
    // schema, except in "open" mode, where it waits in the migrations for the advisory lock.
    await (await PostgresKeyStore.open({ connectionString: target.url!, schema })).close();

    const url = new URL(target.url!);
    url.searchParams.set("application_name", schema);
    const child = spawn(process.execPath, ["--no-warnings", WORKER, url.href, schema, mode], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = once(child, "close") as Promise<[number | null, NodeJS.Signals | null]>;
    cleanups.push(async () => {
      if (child.exitCode === null) child.kill();
    });
    const lines: string[] = [];
    const waiters: { line: string; resolve: () => void }[] = [];
    createInterface({ input: child.stdout }).on("line", (line) => {
      lines.push(line);
      for (const w of waiters.filter((w) => w.line === line)) w.resolve();
    });
    const printed = (line: string): Promise<void> =>
      lines.includes(line)
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((resolve) => waiters.push({ line, resolve })),
            exited.then(([code, signal]) => {
              throw new Error(`worker exited with ${code ?? signal} before "${line}": ${stderr}`);
            }),
          ]);

    await printed("ready");
    // Taken once the worker is set up: its createKey and that call's audit event write too.
    const holder = new pg.Client({ connectionString: target.url! });
    await holder.connect();
    cleanups.push(() => holder.end());
    await holder.query("BEGIN");
    if (mode === "open") {
      await holder.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [
        MIGRATION_LOCK_CLASS,
        schema,
      ]);
    } else {
      const table = mode === "store" ? "kms_changes" : "kms_audit_head";
      await holder.query(`SELECT * FROM "${schema}".${table} FOR UPDATE`);
    }

    child.stdin.write("go\n");
    await printed("waiting");
    // The worker's backend, once it is queued behind the holder's lock. Looked up from another
    // session: one inside a transaction sees pg_stat_activity as it was when it first looked.
    const admin = new pg.Client({ connectionString: target.url! });
    await admin.connect();
    cleanups.push(() => admin.end());
    let terminated = 0;
    for (let tries = 0; terminated === 0 && tries < 200; tries++) {
      const { rowCount } = await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [schema],
      );
      terminated = rowCount ?? 0;
      if (terminated === 0) await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(terminated).toBe(1);

    await printed("failed");
    await holder.query("ROLLBACK");
    child.stdin.write("go\n");
    const [code, signal] = await exited;
    return { code, signal, stderr, report: lines.at(-1) };
  }

  it.each([
    ["a key write", "store", "tagged"],
    ["an audit append", "audit", "encrypted"],
    ["the migrations at open", "open", "opened"],
  ] as const)(
    "fails %s with KMSInternalException; the process lives on and the next call works",
    async (_, mode, done) => {
      const { code, signal, stderr, report } = await terminateWhileWaiting(mode);
      // pg emits 'error' on a checked-out client whose connection ends; unheard, the process died
      // of an uncaught "Connection terminated unexpectedly".
      expect({ code, signal, stderr: stderr.includes("terminated unexpectedly") }).toEqual({
        code: 0,
        signal: null,
        stderr: false,
      });
      const { first, second } = JSON.parse(report!) as { first: string; second: string };
      expect(first).toMatch(/57P01/);
      expect(second).toBe(done);
    },
  );
});
