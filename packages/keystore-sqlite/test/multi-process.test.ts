import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";
import { makeKey } from "./fixtures/keys.ts";

const WORKER = fileURLToPath(new URL("./fixtures/increment-worker.ts", import.meta.url));

interface Worker {
  ready: Promise<void>;
  go(): void;
  result: Promise<{ done: number; conflicts: number }>;
}

function startWorker(path: string, keyId: string, count: number): Worker {
  const child = spawn(process.execPath, ["--no-warnings", WORKER, path, keyId, String(count)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const lines = createInterface({ input: child.stdout });
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  let last = "";
  lines.on("line", (line) => {
    if (line === "ready") onReady();
    else last = line;
  });
  const result = new Promise<{ done: number; conflicts: number }>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve(JSON.parse(last) as { done: number; conflicts: number });
      else reject(new Error(`worker exited with ${code ?? signal}: ${stderr}`));
    });
  });
  // Surface a crash before "ready" instead of waiting forever for it.
  return {
    ready: Promise.race([ready, result.then(() => {})]),
    go: () => child.stdin.write("go\n"),
    result,
  };
}

describe("SqliteKeyStore across processes", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-sqlite-mp-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("loses no compare-and-set increment when two processes race on one key", async () => {
    const path = join(dir, "keys.db");
    const store = SqliteKeyStore.open({ path });
    await store.createKey(makeKey("k-shared"));
    expect((await store.getKey("k-shared"))?.revision).toBe(1);

    const perProcess = 150;
    const workers = [
      startWorker(path, "k-shared", perProcess),
      startWorker(path, "k-shared", perProcess),
    ];
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const results = await Promise.all(workers.map((w) => w.result));

    const total = perProcess * workers.length;
    // The parent's connection cached revision 1; data_version makes it see the children's work.
    const final = await store.getKey("k-shared");
    expect(final?.revision).toBe(1 + total);
    expect(final?.rotation.onDemandRotations).toBe(total);
    expect(results.map((r) => r.done)).toStrictEqual([perProcess, perProcess]);
    // Conflicts show that the processes really interleaved, so the count above means something.
    expect(results.reduce((sum, r) => sum + r.conflicts, 0)).toBeGreaterThan(0);
    await store.close();
  }, 120_000);
});
