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
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { EncryptionContext } from "../src/index.ts";
import { goldenKms, refuseToOverwrite, writeGoldenStore } from "./golden-store.ts";

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
  refuseToOverwrite(OUT, ["root-key.hex", "store.json", "ciphertexts.json"]);
  const { kms, store, clock } = await goldenKms(ROOT_KEY_HEX);
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

  const keyCount = await writeGoldenStore(OUT, ROOT_KEY_HEX, store, "ciphertexts.json", out);
  console.log(`wrote ${out.length} golden ciphertexts and a ${keyCount}-key store to ${OUT}`);
}

await main();
