/**
 * The field encryption engine on a 32-byte string under a cached data key, beside raw
 * node:crypto AES-256-GCM in the same process (key imported once, IVs sliced from a pooled
 * randomFillSync buffer, as the engine does). On a shared 2-core machine one run is noise, so
 * the cases are interleaved over several rounds and each ratio is reported as its median.
 * The bytes forms are the like-for-like comparison with the baseline, which opens bytes (and
 * authenticates no AAD, where the engine binds every value to its model, field and context);
 * the text forms add the decoding of the `kms1:` text.
 * `node bench/field.bench.ts` (KMS_BENCH_ROUNDS, default 7; KMS_BENCH_ONLY=encrypt or decrypt;
 * KMS_BENCH_QUICK=1 for a smoke run).
 */
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  randomBytes,
  randomFillSync,
} from "node:crypto";
import { compare } from "@kms/tooling/bench";
import { createKms, FieldEncryptionEngine, MemoryDataKeyStore } from "../src/index.ts";

const quick = process.env.KMS_BENCH_QUICK === "1";
const rounds = quick ? 1 : Number(process.env.KMS_BENCH_ROUNDS ?? 7);
const only = process.env.KMS_BENCH_ONLY;
const value = "0123456789abcdef0123456789abcdef"; // 32 bytes

const kms = await createKms({ audit: false });
const keyId = (await kms.createKey()).keyMetadata.keyId;
const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
const binding = { model: "User", field: "email", context: { tenantId: "t1" } };
const spec = { type: "string" } as const;
const engineText = await engine.encryptText(binding, spec, value);
const engineBytes = await engine.encrypt(binding, spec, value);

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

type Case = Parameters<typeof compare>[2][number];

/**
 * Measures each case right after its own baseline run, `rounds` times over, and prints each
 * case's median ratio: a slow spell of the machine then hits a case and the baseline it is
 * divided by alike, instead of skewing every case against one early baseline figure.
 */
async function medianOf(title: string, baseline: Case, cases: readonly Case[]): Promise<void> {
  const ratios = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const c of cases) {
      const [base, result] = await compare(`${title} (round ${round}/${rounds})`, baseline, [c], {
        seconds: quick ? 0.1 : 0.3,
      });
      if (base !== undefined && result !== undefined) {
        ratios.get(c.name)?.push(result.opsPerSecond / base.opsPerSecond);
      }
    }
  }
  console.log(`\n${title}: median over ${rounds} rounds, ratio to ${baseline.name}`);
  for (const [name, list] of ratios) {
    list.sort((a, b) => a - b);
    const median = list[Math.floor(list.length / 2)] ?? Number.NaN;
    const spread = `${(list[0] ?? 0).toFixed(3)}–${(list[list.length - 1] ?? 0).toFixed(3)}`;
    console.log(`  ${name.padEnd(44)} ${median.toFixed(3)}  (range ${spread})`);
  }
}

if (only !== "decrypt") {
  await medianOf(
    "field engine: encrypt a 32-byte string",
    { name: "raw node:crypto AES-256-GCM (pooled IV)", run: () => rawEncrypt(pooledIv()) },
    [
      { name: "engine.encrypt (bytes)", run: () => engine.encrypt(binding, spec, value) },
      { name: "engine.encryptText", run: () => engine.encryptText(binding, spec, value) },
      {
        name: "engine.encryptIfCached (sync)",
        run: () => engine.encryptIfCached(binding, spec, value),
      },
    ],
  );
}
if (only !== "encrypt") {
  await medianOf(
    "field engine: decrypt a 32-byte string",
    { name: "raw node:crypto AES-256-GCM", run: rawDecrypt },
    [
      { name: "engine.decrypt (bytes)", run: () => engine.decrypt(binding, spec, engineBytes) },
      {
        name: "engine.decryptIfCached (bytes, sync)",
        run: () => engine.decryptIfCached(binding, spec, engineBytes),
      },
      { name: "engine.decryptText", run: () => engine.decryptText(binding, spec, engineText) },
      {
        name: "engine.decryptIfCached (sync)",
        run: () => engine.decryptIfCached(binding, spec, engineText),
      },
    ],
  );
}
