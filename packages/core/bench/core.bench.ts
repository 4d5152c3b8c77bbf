/**
 * `pnpm bench` for @kms/core's symmetric operations: ops/s through the full facade beside raw
 * node:crypto AES-256-GCM measured in the same process (fresh random IV per call, as a caller
 * of node:crypto would do, with the key imported once as a KeyObject).
 */
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import { compare } from "@kms/tooling/bench";
import { createKms, type Kms } from "../src/index.ts";

function rawSeal(key: KeyObject, plaintext: Uint8Array): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = cipher.update(plaintext);
  cipher.final();
  return Buffer.concat([iv, body, cipher.getAuthTag()]);
}

function rawOpen(key: KeyObject, sealed: Buffer): Buffer {
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const body = decipher.update(sealed.subarray(12, sealed.length - 16));
  decipher.final();
  return body;
}

export async function symmetricBench(kms: Kms, label: string): Promise<void> {
  const { keyMetadata } = await kms.createKey();
  const keyId = keyMetadata.keyId;
  // The fastest raw usage: a KeyObject imported once, so the baseline is not handicapped.
  const rawKey = createSecretKey(randomBytes(32));
  const context = { tenant: "acme", table: "patients" };
  for (const size of [32, 1024, 4096]) {
    const plaintext = randomBytes(size);
    const blob = (await kms.encrypt({ keyId, plaintext, encryptionContext: context }))
      .ciphertextBlob;
    const sealed = rawSeal(rawKey, plaintext);
    await compare(
      `encrypt ${size} B (${label})`,
      { name: "node:crypto AES-256-GCM seal", run: () => rawSeal(rawKey, plaintext), bytes: size },
      [
        {
          name: "kms.encrypt, with context",
          run: () => kms.encrypt({ keyId, plaintext, encryptionContext: context }),
          bytes: size,
        },
      ],
    );
    await compare(
      `decrypt ${size} B (${label})`,
      { name: "node:crypto AES-256-GCM open", run: () => rawOpen(rawKey, sealed), bytes: size },
      [
        {
          name: "kms.decrypt, with context",
          run: () => kms.decrypt({ ciphertextBlob: blob, encryptionContext: context }),
          bytes: size,
        },
      ],
    );
  }
  const key32 = randomBytes(32);
  await compare(
    `generateDataKey AES_256 (${label})`,
    { name: "node:crypto randomBytes(32) + seal", run: () => rawSeal(rawKey, randomBytes(32)) },
    [
      {
        name: "kms.generateDataKey",
        run: () => kms.generateDataKey({ keyId, keySpec: "AES_256", encryptionContext: context }),
      },
      { name: "node:crypto seal of a fixed key", run: () => rawSeal(rawKey, key32) },
    ],
  );
}

if (import.meta.main) {
  // The default Kms keeps a hash-chained audit trail in memory; `audit: false` shows what the
  // rest of the facade (validation, authorization, key state, HSM) costs on its own.
  await symmetricBench(await createKms({ audit: false }), "memory store, audit: false");
  await symmetricBench(await createKms(), "memory store, default in-memory audit trail");
}
