/**
 * `pnpm bench` for the SQLite store: the same symmetric cases as @kms/core's bench (ratios to
 * raw node:crypto in the same process), on file-backed stores in a temporary folder, in the same
 * two groups as core's: `audit: false`, then the default in-memory audit trail. Each group's
 * label names its audit setting, so a line here compares with the core line of the same label.
 * What the SQLite store adds per call on a cached key is its freshness check, one
 * `PRAGMA data_version` (a read transaction: a few µs), which lets a key another process
 * disabled, rotated or deleted take effect on the very next call (see the README's cache section).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, type KmsOptions } from "@kms/core";
import { compare } from "@kms/tooling/bench";
import { symmetricBench } from "../../core/bench/core.bench.ts";
import { SqliteKeyStore } from "../src/index.ts";

const folder = mkdtempSync(join(tmpdir(), "kms-sqlite-bench-"));
/** A Kms on a store of its own file, so that the two groups share no cache or WAL. */
const openKms = (file: string, options: Pick<KmsOptions, "audit"> = {}) =>
  createKms({
    store: SqliteKeyStore.open({ path: join(folder, file) }),
    rootKey: new Uint8Array(32).fill(7),
    ...options,
  });
try {
  const unaudited = await openKms("keys-unaudited.db", { audit: false });
  await symmetricBench(unaudited, "SQLite store, audit: false");
  await unaudited.close();
  const kms = await openKms("keys.db");
  await symmetricBench(kms, "SQLite store, default in-memory audit trail");
  const memory = await createKms();
  await compare(
    "createKey (durable write per key)",
    { name: "memory store createKey", run: () => memory.createKey() },
    [{ name: "SQLite store createKey", run: () => kms.createKey() }],
  );
  await kms.close();
} finally {
  rmSync(folder, { recursive: true, force: true });
}
