/**
 * `pnpm bench` for @kms/prisma. Every figure is a ratio to a baseline measured in the same
 * process: (1) the field engine on rows of three 32-byte strings beside raw node:crypto
 * AES-256-GCM, @47ng/cloak (the cipher prisma-field-encryption uses) and typeorm-encrypted's
 * transformer, encrypt and decrypt; (2) Prisma findMany of 10,000 rows with 3 encrypted columns
 * beside the same rows in clear; (3) createMany of 1,000 such rows beside the same rows in clear.
 *
 * Cipher cases handle a row per operation, as an ORM does: the engine gets a context object
 * built for that row and a binding built per value (one binding object passed to every call hit
 * the engine's single-entry memos; that shape is kept as one line, named as such), and every
 * other case also handles three values per operation. Figures are per value.
 *
 * Each group is first timed once, case after case, for scale only. The target ratios are then
 * timed in alternating 50 ms slices, each after an untimed full collection (@kms/tooling/bench
 * `interleaved`): median [quartiles] of the per-pair ratios, by the wall clock and by the main
 * thread's CPU time. A target is "met" only when the lower quartile (for a time ratio, the upper
 * one) clears it on both clocks. The findMany ratios are also timed in steady state: 400 ms
 * slices with no forced collection, each query paying for its own garbage as in a long-running
 * process (the forced collections let a slice of three or four clear queries run without any).
 * KMS_BENCH_SLICES (default 40) sets the slice pairs per ratio;
 * KMS_BENCH_QUICK=1 is a smoke run (1,000 rows, 6 slice pairs).
 */
import { createSecretKey, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { decryptStringSync, encryptStringSync, generateKey, parseKeySync } from "@47ng/cloak";
import { createKms, type FieldBinding, FieldEncryptionEngine, MemoryDataKeyStore } from "@kms/core";
import {
  retainSqliteHandle as retain,
  retainSqliteStatements as retainSqliteHandles,
} from "@kms/keystore-sqlite";
import {
  type BenchCase,
  compare,
  createIvPool,
  FIELD_NAMES as FIELDS,
  formatInterleaved,
  INTERLEAVED_SLICES,
  type InterleavedRatio,
  interleaved,
  openAesGcm,
  FIELD_ROW as ROW,
  STEADY_STATE,
  sealAesGcm,
  storeFieldRows,
  verdict,
} from "@kms/tooling/bench";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import Database from "better-sqlite3";
import { EncryptionTransformer } from "typeorm-encrypted";
import { fieldEncryption } from "../src/index.ts";
import { generateTestClient } from "../test/generate-client.ts";

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.env.KMS_BENCH_QUICK === "1";
const seconds = quick ? 0.2 : 0.5;

// --- per-value cipher cost, a row of three 32-byte strings -------------------------------------
const VALUES = FIELDS.map((f) => ROW[f]);
/** Stored rows each decrypt case walks in turn. */
const STORED = 64;

const kms = await createKms();
const keyId = (await kms.createKey()).keyMetadata.keyId;
const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
const spec = { type: "string" } as const;
const bind = (field: string, context: { tenantId: string }): FieldBinding => ({
  model: "User",
  field,
  context,
});

const rawKey = createSecretKey(randomBytes(32));
/** The same key as bytes, as cloak and typeorm-encrypted hand it to node:crypto on every call. */
const rawKeyBytes = rawKey.export();
const pooledIv = createIvPool();
const plain = VALUES.map((v) => Buffer.from(v));

const cloakKey = parseKeySync(await generateKey());
const typeormEncrypted = new EncryptionTransformer({
  key: randomBytes(32).toString("hex"),
  algorithm: "aes-256-gcm",
  ivLength: 16,
});

// Stored rows, each case's own, walked in turn.
const rawRows = Array.from({ length: STORED }, () =>
  plain.map((p) => sealAesGcm(rawKey, pooledIv(), p)),
);
const cloakRows = Array.from({ length: STORED }, () =>
  VALUES.map((v) => encryptStringSync(v, cloakKey)),
);
const typeormRows = Array.from({ length: STORED }, () =>
  VALUES.map((v) => typeormEncrypted.to(v) as string),
);
const engineRows = await storeFieldRows(STORED, {
  bytes: (f, context) => engine.encrypt(bind(f, context), spec, ROW[f]),
  text: (f, context) => engine.encryptText(bind(f, context), spec, ROW[f]),
});
const oneBinding = bind("email", { tenantId: "t1" });
const oneText = await engine.encryptText(oneBinding, spec, ROW.email);
let at = 0;
/** The next stored row of `rows`: one counter for all, each case walks its own rows. */
const next = <T>(rows: readonly T[]): T => rows[at++ % STORED] as T;

/** Three values per operation, one call each. */
function three(name: string, value: (i: number) => unknown): BenchCase {
  return {
    name,
    values: 3,
    run: () => {
      value(0);
      value(1);
      value(2);
    },
  };
}
/** A row: a context built for it, a binding per value, each value awaited in turn. */
function engineRow(
  name: string,
  value: (binding: FieldBinding, i: number, row: number) => Promise<unknown>,
): BenchCase {
  return {
    name,
    values: 3,
    run: async () => {
      const row = at++ % STORED;
      const context = { tenantId: "t1" };
      await value(bind("email", context), 0, row);
      await value(bind("ssn", context), 1, row);
      await value(bind("note", context), 2, row);
    },
  };
}
const v = (i: number): string => VALUES[i] as string;

const rawSeal = three("raw node:crypto AES-256-GCM (pooled IV)", (i) =>
  sealAesGcm(rawKey, pooledIv(), plain[i] as Buffer),
);
const rawSealRandomIv = three("raw node:crypto, randomBytes(12) IV", (i) =>
  sealAesGcm(rawKey, randomBytes(12), plain[i] as Buffer),
);
const rawSealAsPeers = three("raw node:crypto, Buffer key + randomBytes IV per call", (i) =>
  sealAesGcm(rawKeyBytes, randomBytes(12), plain[i] as Buffer),
);
const engineEncrypt = engineRow("@kms field engine encrypt (bytes), row", (b, i) =>
  engine.encrypt(b, spec, v(i)),
);
const engineEncryptText = engineRow("@kms field engine encryptText, row", (b, i) =>
  engine.encryptText(b, spec, v(i)),
);
const engineEncryptOneBinding: BenchCase = {
  name: "@kms encryptText, one binding object reused",
  values: 3,
  run: async () => {
    await engine.encryptText(oneBinding, spec, ROW.email);
    await engine.encryptText(oneBinding, spec, ROW.email);
    await engine.encryptText(oneBinding, spec, ROW.email);
  },
};
const cloakEncrypt = three("@47ng/cloak encryptStringSync", (i) =>
  encryptStringSync(v(i), cloakKey),
);
const typeormTo = three("typeorm-encrypted transformer.to", (i) => typeormEncrypted.to(v(i)));

/** Three stored values of the next row, one call each. */
function threeStored<T>(name: string, rows: readonly T[][], open: (stored: T) => unknown) {
  return {
    name,
    values: 3,
    run: () => {
      const row = next(rows);
      open(row[0] as T);
      open(row[1] as T);
      open(row[2] as T);
    },
  } satisfies BenchCase;
}
const rawOpen = threeStored("raw node:crypto AES-256-GCM", rawRows, (s) => openAesGcm(rawKey, s));
const rawOpenAsPeers = threeStored("raw node:crypto, Buffer key per call", rawRows, (s) =>
  openAesGcm(rawKeyBytes, s),
);
const engineDecrypt = engineRow("@kms field engine decrypt (bytes), row", (b, i, row) =>
  engine.decrypt(b, spec, engineRows[row]?.bytes[i] as Uint8Array),
);
const engineDecryptText = engineRow("@kms field engine decryptText, row", (b, i, row) =>
  engine.decryptText(b, spec, engineRows[row]?.text[i] as string),
);
const engineDecryptOneBinding: BenchCase = {
  name: "@kms decryptText, one binding object reused",
  values: 3,
  run: async () => {
    await engine.decryptText(oneBinding, spec, oneText);
    await engine.decryptText(oneBinding, spec, oneText);
    await engine.decryptText(oneBinding, spec, oneText);
  },
};
const cloakDecrypt = threeStored("@47ng/cloak decryptStringSync", cloakRows, (s) =>
  decryptStringSync(s, cloakKey),
);
const typeormFrom = threeStored("typeorm-encrypted transformer.from", typeormRows, (s) =>
  typeormEncrypted.from(s),
);

// Every case works, and the engine's rows decrypt to what was stored, before anything is timed.
for (const c of [engineEncrypt, engineEncryptText, engineDecrypt, engineDecryptText]) await c.run();
for (const [i, f] of FIELDS.entries()) {
  const row = engineRows[0];
  const context = { tenantId: "t1" };
  if (
    (await engine.decrypt(bind(f, context), spec, row?.bytes[i] as Uint8Array)) !== ROW[f] ||
    (await engine.decryptText(bind(f, context), spec, row?.text[i] as string)) !== ROW[f] ||
    decryptStringSync(cloakRows[0]?.[i] as string, cloakKey) !== ROW[f] ||
    typeormEncrypted.from(typeormRows[0]?.[i] as string) !== ROW[f]
  ) {
    throw new Error(`${f} did not round-trip`);
  }
}

await compare(
  "encrypt a row of three 32-byte strings: one pass, values/s (for scale; ratios below)",
  rawSeal,
  [
    rawSealRandomIv,
    rawSealAsPeers,
    engineEncrypt,
    engineEncryptText,
    engineEncryptOneBinding,
    cloakEncrypt,
    typeormTo,
  ],
  { seconds },
);
await compare(
  "decrypt a row of three 32-byte strings: one pass, values/s (for scale; ratios below)",
  rawOpen,
  [
    rawOpenAsPeers,
    engineDecrypt,
    engineDecryptText,
    engineDecryptOneBinding,
    cloakDecrypt,
    typeormFrom,
  ],
  { seconds },
);

interface Ratio {
  readonly label: string;
  readonly ratio: InterleavedRatio;
  /** `[target, "atLeast" | "atMost"]`, or why there is none. */
  readonly target: readonly [number, "atLeast" | "atMost"] | string;
}
const ratios: Ratio[] = [];
async function ratio(
  label: string,
  a: BenchCase,
  b: BenchCase,
  target: Ratio["target"],
  options?: Parameters<typeof interleaved>[2],
): Promise<void> {
  const r = await interleaved(a, b, options);
  ratios.push({ label, ratio: r, target });
  console.log(`  ${label.padEnd(56)} ${formatInterleaved(r)}`);
}
console.log(`\nPer value, ${INTERLEAVED_SLICES} interleaved slice pairs each, median [quartiles]`);
await ratio("engine encrypt (bytes) / raw GCM pooled IV", engineEncrypt, rawSeal, [
  0.85,
  "atLeast",
]);
await ratio("engine encryptText / cloak", engineEncryptText, cloakEncrypt, [2, "atLeast"]);
await ratio("engine encryptText / typeorm-encrypted", engineEncryptText, typeormTo, [2, "atLeast"]);
await ratio("engine decryptText / cloak", engineDecryptText, cloakDecrypt, [1.3, "atLeast"]);
await ratio("engine decryptText / typeorm-encrypted", engineDecryptText, typeormFrom, [
  1.3,
  "atLeast",
]);
await ratio("engine decrypt (bytes) / raw GCM", engineDecrypt, rawOpen, "no target");
await ratio("engine decryptText / raw GCM", engineDecryptText, rawOpen, "no target");
await ratio(
  "raw, Buffer key + randomBytes IV / raw pooled IV",
  rawSealAsPeers,
  rawSeal,
  "context: the peers' way of calling node:crypto",
);
await ratio(
  "cloak encrypt / raw, Buffer key + randomBytes IV",
  cloakEncrypt,
  rawSealAsPeers,
  "context: cloak against its own floor",
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
const clearFind: BenchCase = {
  name: "3 columns in clear",
  run: async () => await base.plain.findMany(),
};
const secretFind: BenchCase = {
  name: "3 encrypted columns (@kms/prisma)",
  run: async () => await prisma.secret.findMany(),
};
// The same encrypted rows read by the client without the extension: the stored text is ~3.4
// times the length of the clear text, and Prisma's cost of carrying it is no decryption's.
const storedFind: BenchCase = {
  name: "3 encrypted columns read as stored, not decrypted",
  run: async () => await base.secret.findMany(),
};
await compare(
  `Prisma findMany of ${ROWS.toLocaleString("en-US")} rows on SQLite: one pass (for scale)`,
  clearFind,
  [secretFind, storedFind],
  { seconds },
);
// Writes: each call inserts the same 1,000 rows again (the tables grow; SQLite's insert cost
// barely moves with table size at this scale). The extension encrypts a copy of the arguments.
const batch = rows.slice(0, 1000);
const clearWrite: BenchCase = {
  name: "createMany, 3 columns in clear",
  run: async () => await base.plain.createMany({ data: batch }),
};
const secretWrite: BenchCase = {
  name: "createMany, 3 encrypted columns (@kms/prisma)",
  run: async () => await prisma.secret.createMany({ data: batch }),
};
await compare(
  "Prisma createMany of 1,000 rows on SQLite: one pass (for scale)",
  clearWrite,
  [secretWrite],
  { seconds },
);
console.log(`\nQueries, ${INTERLEAVED_SLICES} interleaved slice pairs each, median [quartiles]`);
// Clear speed over encrypted speed: the time the encrypted query takes, in clear query times.
await ratio("encrypted findMany time / clear findMany", clearFind, secretFind, [2, "atMost"]);
await ratio(
  "stored rows, not decrypted, time / clear findMany",
  clearFind,
  storedFind,
  "context: the floor of reading ciphertext",
);
// The same two without forced collections (see STEADY_STATE): each query pays the collections
// of the garbage it makes, as in a long-running application.
await ratio(
  "encrypted findMany time / clear, steady state",
  clearFind,
  secretFind,
  [2, "atMost"],
  STEADY_STATE,
);
await ratio(
  "stored rows, not decrypted, time / clear, steady state",
  clearFind,
  storedFind,
  "context: the floor, steady state",
  STEADY_STATE,
);
await ratio("encrypted createMany time / clear", clearWrite, secretWrite, "no target");
await base.$disconnect();
raw.close();
rmSync(dir, { recursive: true, force: true });

console.log(
  "\nTargets (issue 6; met = the lower quartile clears the target on both clocks, for a time ratio the upper one)",
);
for (const { label, ratio: r, target } of ratios) {
  const goal =
    typeof target === "string"
      ? `(${target})`
      : `(${target[1] === "atLeast" ? "≥" : "≤"} ${target[0]}: ${verdict(r, target[0], target[1])})`;
  console.log(`  ${label.padEnd(56)} ${formatInterleaved(r)}  ${goal}`);
}
