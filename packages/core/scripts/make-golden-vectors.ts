/**
 * Generates the golden vectors in test/golden/v1/: a fixed test-only root key, a snapshot of a
 * MemoryKeyStore, and ciphertexts with their plaintexts. Every later version of @kms/core must
 * still decrypt them (test/golden/golden-v1.test.ts), so they are generated once and committed.
 *
 *   node packages/core/scripts/make-golden-vectors.ts [--force]
 *
 * Refuses to overwrite existing vectors without --force: regenerating them hides format breaks,
 * which is exactly what they exist to catch. Read test/golden/README.md first.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms, type EncryptionContext, MemoryKeyStore } from "../src/index.ts";
import { ManualClock } from "../src/testing/manual-clock.ts";
import { toJson } from "./vector-json.ts";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "golden", "v1");
// Test-only root key: it protects nothing but these vectors. Never use it anywhere else.
const ROOT_KEY_HEX = "676f6c64656e2d766563746f72732d76312d746573742d6f6e6c792d6b65792e";

interface GoldenCiphertext {
  name: string;
  keyId: string;
  keyVersion: number;
  encryptionContext?: EncryptionContext;
  ciphertextBlob: Uint8Array;
  plaintext: Uint8Array;
}

async function main(): Promise<void> {
  const files = ["root-key.hex", "store.json", "ciphertexts.json"].map((f) => join(OUT, f));
  if (files.some((f) => existsSync(f)) && !process.argv.includes("--force")) {
    console.error(`golden vectors exist in ${OUT}; they must not be regenerated (see README.md)`);
    process.exit(1);
  }
  const store = new MemoryKeyStore();
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const kms = await createKms({
    store,
    clock,
    rootKey: new Uint8Array(Buffer.from(ROOT_KEY_HEX, "hex")),
  });
  const encoder = new TextEncoder();
  const out: GoldenCiphertext[] = [];
  const context = { tenant: "acme", purpose: "golden-vectors", ключ: "значение 🔑" };

  const rotated = (await kms.createKey({ description: "golden: rotated twice" })).keyMetadata;
  for (let version = 1; version <= 3; version++) {
    if (version > 1) {
      clock.advanceDays(1);
      await kms.rotateKeyOnDemand({ keyId: rotated.keyId });
    }
    for (const encryptionContext of [undefined, context]) {
      const plaintext = encoder.encode(
        `golden v1, key version ${version}, ${encryptionContext ? "with" : "without"} context`,
      );
      const { ciphertextBlob } = await kms.encrypt({
        keyId: rotated.keyId,
        plaintext,
        ...(encryptionContext ? { encryptionContext } : {}),
      });
      out.push({
        name: `rotated key v${version} ${encryptionContext ? "with" : "without"} context`,
        keyId: rotated.keyId,
        keyVersion: version,
        ...(encryptionContext ? { encryptionContext } : {}),
        ciphertextBlob,
        plaintext,
      });
    }
  }

  const aliased = (await kms.createKey({ description: "golden: aliased" })).keyMetadata;
  await kms.createAlias({ aliasName: "alias/golden", targetKeyId: aliased.keyId });
  const max = new Uint8Array(4096).map((_, i) => (i * 31 + 7) & 0xff);
  const viaAlias = await kms.encrypt({ keyId: "alias/golden", plaintext: max });
  out.push({
    name: "aliased key, 4096-byte plaintext, no context",
    keyId: aliased.keyId,
    keyVersion: 1,
    ciphertextBlob: viaAlias.ciphertextBlob,
    plaintext: max,
  });
  const dataKey = await kms.generateDataKey({
    keyId: rotated.keyId,
    keySpec: "AES_256",
    encryptionContext: { app: "golden", record: "42" },
  });
  out.push({
    name: "generateDataKey AES_256 under the rotated key with context",
    keyId: rotated.keyId,
    keyVersion: 3,
    encryptionContext: { app: "golden", record: "42" },
    ciphertextBlob: dataKey.ciphertextBlob,
    plaintext: dataKey.plaintext,
  });

  const snapshot = {
    format: "kms-golden-store/v1",
    keys: await store.listKeys({ limit: 1000 }),
    aliases: await store.listAliases({ limit: 1000 }),
    settings: { "root-key-id": await store.getSetting("root-key-id") },
  };
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, "root-key.hex"), `${ROOT_KEY_HEX}\n`);
  writeFileSync(join(OUT, "store.json"), toJson(snapshot));
  writeFileSync(join(OUT, "ciphertexts.json"), toJson(out));
  console.log(
    `wrote ${out.length} golden ciphertexts and a ${snapshot.keys.length}-key store to ${OUT}`,
  );
}

await main();
