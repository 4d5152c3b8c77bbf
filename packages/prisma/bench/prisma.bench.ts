/**
 * `pnpm bench` for @kms/prisma. Every figure is a ratio to a baseline measured in the same
 * process: (1) the field engine on 32-byte strings beside raw node:crypto AES-256-GCM,
 * @47ng/cloak (the cipher prisma-field-encryption uses) and typeorm-encrypted's transformer;
 * (2) Prisma findMany of 10,000 rows with 3 encrypted columns beside the same rows in clear;
 * (3) createMany of 1,000 such rows beside the same rows in clear.
 */
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  randomBytes,
  randomFillSync,
} from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { decryptStringSync, encryptStringSync, generateKey, parseKeySync } from "@47ng/cloak";
import { createKms, FieldEncryptionEngine, MemoryDataKeyStore } from "@kms/core";
import {
  retainSqliteHandle as retain,
  retainSqliteStatements as retainSqliteHandles,
} from "@kms/keystore-sqlite";
import { compare } from "@kms/tooling/bench";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import Database from "better-sqlite3";
import { EncryptionTransformer } from "typeorm-encrypted";
import { fieldEncryption } from "../src/index.ts";
import { generateTestClient } from "../test/generate-client.ts";

const here = dirname(fileURLToPath(import.meta.url));
type Case = Parameters<typeof compare>[1];
type Result = Awaited<ReturnType<typeof compare>>[number];

/**
 * Several rounds of `compare`, keeping each case's best ops/s: on a shared 2-core machine other
 * processes steal time from whichever case runs at that moment, and the best round is the one
 * least disturbed.
 */
async function bestOf(title: string, baseline: Case, cases: readonly Case[]): Promise<Result[]> {
  const rounds = quick ? 1 : 3;
  const best = new Map<string, Result>();
  for (let round = 1; round <= rounds; round++) {
    for (const r of await compare(`${title} (round ${round}/${rounds})`, baseline, cases, {
      seconds: quick ? 0.2 : 0.5,
    })) {
      const previous = best.get(r.name);
      if (previous === undefined || r.opsPerSecond > previous.opsPerSecond) best.set(r.name, r);
    }
  }
  return [...best.values()];
}
const quick = process.env.KMS_BENCH_QUICK === "1";
const value = "0123456789abcdef0123456789abcdef"; // 32 bytes

// --- per-value cipher cost -------------------------------------------------------------------
const kms = await createKms();
const keyId = (await kms.createKey()).keyMetadata.keyId;
const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
const binding = { model: "User", field: "email", context: { tenantId: "t1" } };
const spec = { type: "string" } as const;
const engineText = await engine.encryptText(binding, spec, value);

const rawKey = createSecretKey(randomBytes(32));
const ivPool = new Uint8Array(12 * 4096);
let ivAt = ivPool.length;
function pooledIv(): Uint8Array {
  if (ivAt === ivPool.length) {
    randomFillSync(ivPool);
    ivAt = 0;
  }
  ivAt += 12;
  return ivPool.subarray(ivAt - 12, ivAt);
}
const plainBytes = Buffer.from(value);
function rawEncrypt(iv: Uint8Array): Buffer {
  const c = createCipheriv("aes-256-gcm", rawKey, iv);
  const body = c.update(plainBytes);
  c.final();
  return Buffer.concat([iv, body, c.getAuthTag()]);
}
const rawSealed = rawEncrypt(pooledIv());
function rawDecrypt(): Buffer {
  const d = createDecipheriv("aes-256-gcm", rawKey, rawSealed.subarray(0, 12));
  d.setAuthTag(rawSealed.subarray(rawSealed.length - 16));
  const out = d.update(rawSealed.subarray(12, rawSealed.length - 16));
  d.final();
  return out;
}

const cloakKey = parseKeySync(await generateKey());
const cloakText = encryptStringSync(value, cloakKey);
const typeormEncrypted = new EncryptionTransformer({
  key: randomBytes(32).toString("hex"),
  algorithm: "aes-256-gcm",
  ivLength: 16,
});
const typeormText = typeormEncrypted.to(value) as string;

const enc = await bestOf(
  "encrypt a 32-byte string",
  { name: "raw node:crypto AES-256-GCM (pooled IV)", run: () => rawEncrypt(pooledIv()) },
  [
    { name: "raw node:crypto, randomBytes(12) IV", run: () => rawEncrypt(randomBytes(12)) },
    { name: "@kms field engine encrypt (bytes)", run: () => engine.encrypt(binding, spec, value) },
    { name: "@kms field engine encryptText", run: () => engine.encryptText(binding, spec, value) },
    { name: "@47ng/cloak encryptStringSync", run: () => encryptStringSync(value, cloakKey) },
    { name: "typeorm-encrypted transformer.to", run: () => typeormEncrypted.to(value) },
  ],
);
const dec = await bestOf(
  "decrypt a 32-byte string",
  { name: "raw node:crypto AES-256-GCM", run: rawDecrypt },
  [
    {
      name: "@kms field engine decryptText",
      run: () => engine.decryptText(binding, spec, engineText),
    },
    { name: "@47ng/cloak decryptStringSync", run: () => decryptStringSync(cloakText, cloakKey) },
    { name: "typeorm-encrypted transformer.from", run: () => typeormEncrypted.from(typeormText) },
  ],
);

// Prisma queries return a lazy PrismaPromise (not a Promise instance): the harness only awaits
// real promises, so the Prisma cases wrap their query in an async function.

// --- Prisma findMany on SQLite -----------------------------------------------------------------
retainSqliteHandles();
generateTestClient(join(here, "prisma", "schema.prisma"), join(here, "generated"));
const { PrismaClient } = await import("./generated/client.ts");
const dir = mkdtempSync(join(tmpdir(), "kms-prisma-bench-"));
const file = join(dir, "bench.db");
const raw = new Database(file);
retain(raw);
raw.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
const base = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: `file:${file}` }) });
const schema = readFileSync(join(here, "prisma", "schema.prisma"), "utf8");
const prisma = base.$extends(fieldEncryption({ kms, keyId, schema }));
const ROWS = quick ? 1000 : 10_000;
const rows = Array.from({ length: ROWS }, (_, i) => ({
  tenantId: "t1",
  a: `alice-${i}@example.com`.padEnd(32, "."),
  b: `+1 555 ${String(i).padStart(6, "0")}`.padEnd(32, "."),
  c: `note ${i}`.padEnd(32, "."),
}));
await base.plain.createMany({ data: rows });
for (let i = 0; i < rows.length; i += 1000)
  await prisma.secret.createMany({ data: rows.slice(i, i + 1000) });
const check = await prisma.secret.findMany({ take: 1 });
if (check[0]?.a !== rows[0]?.a) throw new Error("benchmark rows did not round-trip");
const find = await bestOf(
  `Prisma findMany of ${ROWS.toLocaleString("en-US")} rows on SQLite`,
  { name: "3 columns in clear", run: async () => await base.plain.findMany() },
  [{ name: "3 encrypted columns (@kms/prisma)", run: async () => await prisma.secret.findMany() }],
);
// Writes: each call inserts the same 1,000 rows again (the tables grow; SQLite's insert cost
// barely moves with table size at this scale). The extension encrypts a copy of the arguments.
const batch = rows.slice(0, 1000);
const write = await bestOf(
  "Prisma createMany of 1,000 rows on SQLite",
  {
    name: "createMany, 3 columns in clear",
    run: async () => await base.plain.createMany({ data: batch }),
  },
  [
    {
      name: "createMany, 3 encrypted columns (@kms/prisma)",
      run: async () => await prisma.secret.createMany({ data: batch }),
    },
  ],
);
await base.$disconnect();
raw.close();
rmSync(dir, { recursive: true, force: true });

const ops = (results: typeof enc, name: string) =>
  results.find((r) => r.name === name)?.opsPerSecond ?? Number.NaN;
const r = (x: number) => x.toFixed(2);
console.log("\nBest of rounds");
for (const r of [...enc, ...dec, ...find, ...write])
  console.log(
    `  ${r.name.padEnd(44)} ${Math.round(r.opsPerSecond).toLocaleString("en-US").padStart(10)} ops/s`,
  );
console.log("\nTargets (issue 6)");
console.log(
  `  engine encrypt (bytes) / raw GCM pooled IV: ${r(ops(enc, "@kms field engine encrypt (bytes)") / ops(enc, "raw node:crypto AES-256-GCM (pooled IV)"))} (≥ 0.85)`,
);
console.log(
  `  engine encryptText / cloak:                ${r(ops(enc, "@kms field engine encryptText") / ops(enc, "@47ng/cloak encryptStringSync"))}× (≥ 2)`,
);
console.log(
  `  engine encryptText / typeorm-encrypted:    ${r(ops(enc, "@kms field engine encryptText") / ops(enc, "typeorm-encrypted transformer.to"))}× (≥ 2)`,
);
console.log(
  `  engine decryptText / cloak:                ${r(ops(dec, "@kms field engine decryptText") / ops(dec, "@47ng/cloak decryptStringSync"))}× (≥ 1.3)`,
);
console.log(
  `  engine decryptText / typeorm-encrypted:    ${r(ops(dec, "@kms field engine decryptText") / ops(dec, "typeorm-encrypted transformer.from"))}× (≥ 1.3)`,
);
const [plainFind, secretFind] = find;
console.log(
  `  encrypted findMany time / clear findMany:  ${r((plainFind?.opsPerSecond ?? 0) / (secretFind?.opsPerSecond ?? 1))}× (≤ 2)`,
);
const [plainWrite, secretWrite] = write;
console.log(
  `  encrypted createMany time / clear:         ${r((plainWrite?.opsPerSecond ?? 0) / (secretWrite?.opsPerSecond ?? 1))}× (no target)`,
);
