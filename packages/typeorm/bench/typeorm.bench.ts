/**
 * Save and find of 10,000 entities with 3 encrypted string columns on SQLite, against the
 * same entity unencrypted (the baseline) and typeorm-encrypted (one static AES-256-GCM key, no
 * key id, no AAD) in the same process. Run: `pnpm --filter @kms/typeorm bench`.
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
import { compare } from "@kms/tooling/bench";
import { Column, DataSource, Entity, PrimaryGeneratedColumn, type Repository } from "typeorm";
import { EncryptionTransformer } from "typeorm-encrypted";
import { EncryptedColumn, fieldEncryption } from "../src/index.ts";

retainSqliteHandles();

const N = 10_000;
const COLUMNS = ["email", "name", "address"] as const;

class PlainUser {}
class KmsUser {}
class LegacyEncryptedUser {}

function define(
  cls: new () => object,
  table: string,
  column: (property: string) => PropertyDecorator,
): void {
  Entity(table)(cls);
  PrimaryGeneratedColumn()(cls.prototype, "id");
  for (const property of COLUMNS) column(property)(cls.prototype, property);
}

const staticKey = new EncryptionTransformer({
  key: randomBytes(32).toString("hex"),
  algorithm: "aes-256-gcm",
  ivLength: 16,
});
define(PlainUser, "plain_users", () => Column({ type: "text" }));
define(KmsUser, "kms_users", () => EncryptedColumn());
define(LegacyEncryptedUser, "te_users", () => Column({ type: "text", transformer: staticKey }));

const kms = await createKms();
const keyId = (await kms.createKey()).keyMetadata.keyId;
const encryption = fieldEncryption({ kms, keyId });
const dir = mkdtempSync(join(tmpdir(), "kms-typeorm-bench-"));
const dataSource = new DataSource({
  type: "better-sqlite3",
  database: join(dir, "bench.db"),
  entities: [PlainUser, KmsUser, LegacyEncryptedUser, ...encryption.entities],
  subscribers: [encryption.subscriber],
  synchronize: true,
});
await dataSource.initialize();

function rows(): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (let i = 0; i < N; i++) {
    out.push({
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

const plain = dataSource.getRepository(PlainUser) as Repository<object>;
const kmsRepo = dataSource.getRepository(KmsUser) as Repository<object>;
const legacy = dataSource.getRepository(LegacyEncryptedUser) as Repository<object>;
const seconds = 0.1;

const save = await compare(
  `save ${N.toLocaleString("en-US")} entities (3 string columns), SQLite`,
  { name: "plaintext", run: () => saveAll(plain) },
  [
    { name: "@kms/typeorm (envelope, AAD-bound)", run: () => saveAll(kmsRepo) },
    { name: "typeorm-encrypted 0.8 (static key)", run: () => saveAll(legacy) },
  ],
  { seconds },
);
const find = await compare(
  `find ${N.toLocaleString("en-US")} entities (3 string columns), SQLite`,
  { name: "plaintext", run: () => findAll(plain) },
  [
    { name: "@kms/typeorm (envelope, AAD-bound)", run: () => findAll(kmsRepo) },
    { name: "typeorm-encrypted 0.8 (static key)", run: () => findAll(legacy) },
  ],
  { seconds },
);

// Time per op relative to plaintext (the README's ratios): >1 means slower.
for (const [title, results] of [
  ["save", save],
  ["find", find],
] as const) {
  const base = results[0]?.opsPerSecond ?? 1;
  for (const r of results.slice(1)) {
    console.log(
      `  ${title}: ${r.name} takes ${(base / r.opsPerSecond).toFixed(2)}× plaintext time`,
    );
  }
}
await dataSource.destroy();
rmSync(dir, { recursive: true, force: true });
