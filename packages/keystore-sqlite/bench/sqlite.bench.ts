/**
 * `pnpm bench` for the SQLite store: the same symmetric cases as @kms/core's bench (ratios to
 * raw node:crypto in the same process), on a file-backed store in a temporary folder.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms } from "@kms/core";
import { compare } from "@kms/tooling/bench";
import { symmetricBench } from "../../core/bench/core.bench.ts";
import { SqliteKeyStore } from "../src/index.ts";

const folder = mkdtempSync(join(tmpdir(), "kms-sqlite-bench-"));
try {
  const store = SqliteKeyStore.open({ path: join(folder, "keys.db") });
  const kms = await createKms({ store, rootKey: new Uint8Array(32).fill(7) });
  await symmetricBench(kms, "SQLite store");
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
