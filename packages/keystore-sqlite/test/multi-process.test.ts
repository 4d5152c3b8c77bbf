import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startWorkerProcess } from "@kms/tooling/worker-process";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";
import { makeKey } from "./fixtures/keys.ts";

const WORKER = fileURLToPath(new URL("./fixtures/increment-worker.ts", import.meta.url));

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
      startWorkerProcess<{ done: number; conflicts: number }>(WORKER, [
        path,
        "k-shared",
        String(perProcess),
      ]),
      startWorkerProcess<{ done: number; conflicts: number }>(WORKER, [
        path,
        "k-shared",
        String(perProcess),
      ]),
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
