/**
 * Save and find of 10,000 entities with 3 encrypted string columns on SQLite, against the
 * same entity unencrypted (the baseline) and typeorm-encrypted (one static AES-256-GCM key, no
 * key id, no AAD) in the same process. Run: `pnpm --filter @kms/typeorm bench`.
 *
 * Every entity has a `tenantId` column, and ours binds its values to it (`fromRow`), as a
 * multi-tenant deployment does: each value's binding is then read from its row. Each operation
 * is first timed once, case after case, for scale; the ratios are then timed in alternating
 * slices (@kms/tooling/bench `interleaved`; each operation is one slice here), median
 * [quartiles] by the wall clock and by the main thread's CPU time, and "save ≤ 2×" is called met
 * only when the upper quartile of the time ratio is within it on both clocks. The find ratios are
 * also timed in steady state: 400 ms slices with no forced collection, each find paying for its
 * own garbage as in a long-running process.
 * KMS_BENCH_QUICK=1: 1,000 entities and 6 slice pairs (a smoke run); KMS_BENCH_SLICES sets the
 * pairs (default 40).
 *
 * Node runs this file with type stripping, which has no decorators: they are applied as the
 * plain functions they are (`Column(options)(prototype, property)`).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms } from "@kms/core";
import { retainSqliteStatements as retainSqliteHandles } from "@kms/keystore-sqlite";
import {
  type BenchCase,
  compare,
  formatInterleaved,
  INTERLEAVED_SLICES,
  interleaved,
  STEADY_STATE,
  verdict,
} from "@kms/tooling/bench";
import { Column, DataSource, Entity, PrimaryGeneratedColumn, type Repository } from "typeorm";
import { EncryptionTransformer } from "typeorm-encrypted";
import { EncryptedColumn, fieldEncryption } from "../src/index.ts";

retainSqliteHandles();

const quick = process.env.KMS_BENCH_QUICK === "1";
const N = quick ? 1000 : 10_000;
const COLUMNS = ["email", "name", "address"] as const;

class PlainUser {}
class KmsUser {}
class LegacyEncryptedUser {}
/** kms_users' rows copied as they are stored: reading them is TypeORM's share of a find. */
class StoredUser {}

function define(
  cls: new () => object,
  table: string,
  column: (property: string) => PropertyDecorator,
): void {
  Entity(table)(cls);
  PrimaryGeneratedColumn()(cls.prototype, "id");
  Column({ type: "text" })(cls.prototype, "tenantId");
  for (const property of COLUMNS) column(property)(cls.prototype, property);
}

const staticKey = new EncryptionTransformer({
  key: randomBytes(32).toString("hex"),
  algorithm: "aes-256-gcm",
  ivLength: 16,
});
define(PlainUser, "plain_users", () => Column({ type: "text" }));
define(KmsUser, "kms_users", () => EncryptedColumn({ context: { fromRow: ["tenantId"] } }));
define(LegacyEncryptedUser, "te_users", () => Column({ type: "text", transformer: staticKey }));
define(StoredUser, "stored_users", () => Column({ type: "text" }));

const kms = await createKms();
const keyId = (await kms.createKey()).keyMetadata.keyId;
const encryption = fieldEncryption({ kms, keyId });
const dir = mkdtempSync(join(tmpdir(), "kms-typeorm-bench-"));
const dataSource = new DataSource({
  type: "better-sqlite3",
  database: join(dir, "bench.db"),
  entities: [PlainUser, KmsUser, LegacyEncryptedUser, StoredUser, ...encryption.entities],
  subscribers: [encryption.subscriber],
  synchronize: true,
});
await dataSource.initialize();

function rows(): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (let i = 0; i < N; i++) {
    out.push({
      tenantId: "t1",
      email: `user${i}@example.com`,
      name: `User Number ${i}`,
      address: `${i} Long Street, Springfield, 12345`,
    });
  }
  return out;
}

async function saveAll(repo: Repository<object>): Promise<void> {
  await repo.clear();
  await repo.save(rows().map((r) => repo.create(r)));
}

async function findAll(repo: Repository<object>): Promise<void> {
  const found = (await repo.find()) as Record<string, string>[];
  if (found.length !== N || found[N - 1]?.email !== `user${N - 1}@example.com`) {
    throw new Error("find returned the wrong rows");
  }
}

/** A find of the stored rows, ciphertext and all, with nothing to decrypt. */
async function findStored(): Promise<void> {
  const found = (await stored.find()) as Record<string, string>[];
  if (found.length !== N || !found[N - 1]?.email?.startsWith("kms1:")) {
    throw new Error("find of the stored rows returned the wrong rows");
  }
}

const plain = dataSource.getRepository(PlainUser) as Repository<object>;
const stored = dataSource.getRepository(StoredUser) as Repository<object>;
const kmsRepo = dataSource.getRepository(KmsUser) as Repository<object>;
const legacy = dataSource.getRepository(LegacyEncryptedUser) as Repository<object>;
const seconds = 0.1;

const save = {
  plain: { name: "plaintext", run: () => saveAll(plain) },
  ours: { name: "@kms/typeorm (envelope, AAD-bound)", run: () => saveAll(kmsRepo) },
  legacy: { name: "typeorm-encrypted 0.8 (static key)", run: () => saveAll(legacy) },
} satisfies Record<string, BenchCase>;
const find = {
  plain: { name: "plaintext", run: () => findAll(plain) },
  ours: { name: "@kms/typeorm (envelope, AAD-bound)", run: () => findAll(kmsRepo) },
  legacy: { name: "typeorm-encrypted 0.8 (static key)", run: () => findAll(legacy) },
} satisfies Record<string, BenchCase>;

const findStoredCase: BenchCase = {
  name: "@kms/typeorm's rows read as stored, not decrypted",
  run: findStored,
};

const count = N.toLocaleString("en-US");
const onePass = {
  save: await compare(
    `save ${count} entities (tenantId + 3 string columns), SQLite: one pass (for scale)`,
    save.plain,
    [save.ours, save.legacy],
    { seconds },
  ),
  find: await (async () => {
    // The rows the last save left, copied as they are stored (the save bench ran first).
    await stored.clear();
    await dataSource.query(
      "INSERT INTO stored_users (id, tenantId, email, name, address) SELECT id, tenantId, email, name, address FROM kms_users",
    );
    return await compare(
      `find ${count} entities (tenantId + 3 string columns), SQLite: one pass (for scale)`,
      find.plain,
      [find.ours, find.legacy, findStoredCase],
      { seconds },
    );
  })(),
};
// Time per op relative to plaintext (the README's ratios): >1 means slower.
for (const [title, results] of Object.entries(onePass)) {
  const base = results[0]?.opsPerSecond ?? 1;
  for (const r of results.slice(1)) {
    console.log(
      `  ${title}: ${r.name} takes ${(base / r.opsPerSecond).toFixed(2)}× plaintext time (one pass)`,
    );
  }
}

// Plaintext speed over ours is ours' time in plaintext times; ours over theirs is how much
// faster ours is.
console.log(
  `\nInterleaved, ${INTERLEAVED_SLICES} slice pairs each (one operation a slice), median [quartiles]`,
);
type Ratio = Awaited<ReturnType<typeof interleaved>>;
const targets: [string, Ratio, string][] = [];
/** Prints a ratio as it is measured and keeps it for the Targets summary. */
function record(label: string, r: Ratio, goal: string): void {
  targets.push([label, r, goal]);
  console.log(`  ${label.padEnd(46)} ${formatInterleaved(r)}`);
}
for (const [op, cases, target] of [
  ["save", save, 2],
  ["find", find, 2],
] as const) {
  const time = await interleaved(cases.plain, cases.ours);
  record(
    `${op}: @kms/typeorm time / plaintext`,
    time,
    `≤ ${target}×: ${verdict(time, target, "atMost")}`,
  );
  record(
    `${op}: @kms/typeorm speed / typeorm-encrypted`,
    await interleaved(cases.ours, cases.legacy),
    "no target",
  );
}
// Context, no target: the share of a find that is TypeORM carrying the longer stored text.
record(
  "find: stored rows, not decrypted / plaintext",
  await interleaved(find.plain, findStoredCase),
  "context: the floor",
);
// The two find ratios without forced collections (STEADY_STATE): each find pays the collections
// of the garbage it makes, as in a long-running application.
const steady = await interleaved(find.plain, find.ours, STEADY_STATE);
record("find: time / plaintext, steady state", steady, `≤ 2×: ${verdict(steady, 2, "atMost")}`);
record(
  "find: floor, steady state",
  await interleaved(find.plain, findStoredCase, STEADY_STATE),
  "context: the floor, steady state",
);
console.log(
  "\nTargets (met = the upper quartile of the time ratio is within the target on both clocks)",
);
for (const [label, r, goal] of targets) {
  console.log(`  ${label.padEnd(46)} ${formatInterleaved(r)}  (${goal})`);
}
await dataSource.destroy();
rmSync(dir, { recursive: true, force: true });
