/**
 * Generates the envelope-message golden vectors in test/golden/messages-v1/ (docs/FORMAT.md §5):
 * a fixed test-only raw AES wrapping key, a test-only raw RSA key, and messages with their
 * plaintexts — sizes around the frame boundary with and without a context, a signed suite, and a
 * message with two encrypted data keys. Every later version of @kms/core must still decrypt them
 * (test/golden/messages-v1.test.ts), so they are generated once and committed.
 *
 *   node packages/core/scripts/make-message-vectors.ts [--force]
 *
 * Refuses to overwrite existing vectors without --force: regenerating them hides format breaks,
 * which is exactly what they exist to catch. Read test/golden/README.md first.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type EncryptionContext,
  encryptMessage,
  type Keyring,
  type MessageSuite,
  MultiKeyring,
  RawAesKeyring,
  RawRsaKeyring,
} from "../src/index.ts";
import { toJson } from "./vector-json.ts";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "golden", "messages-v1");
// Test-only wrapping key ("golden-message-vectors-v1-test!!"): it protects nothing but these
// vectors. Never use it, or the RSA key written beside it, anywhere else.
const AES_KEY_HEX = "676f6c64656e2d6d6573736167652d766563746f72732d76312d746573742121";
const AES_NAMES = { keyNamespace: "golden", keyName: "aes-1" } as const;
const RSA_NAMES = { keyNamespace: "golden", keyName: "rsa-1" } as const;
/** Small frames keep the files small while still crossing frame boundaries. */
const FRAME = 64;

export interface MessageVector {
  name: string;
  /** Which keys hold a copy of the data key: each alone must decrypt the message. */
  keys: ("aes" | "rsa")[];
  suite: MessageSuite;
  frameLength: number;
  encryptionContext?: EncryptionContext;
  plaintext: Uint8Array;
  message: Uint8Array;
}

function bytes(length: number, seed: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);
}

async function main(): Promise<void> {
  const files = ["aes-wrapping-key.hex", "rsa-private-key.pem", "messages.json"].map((f) =>
    join(OUT, f),
  );
  if (files.some((f) => existsSync(f)) && !process.argv.includes("--force")) {
    console.error(`golden vectors exist in ${OUT}; they must not be regenerated (see README.md)`);
    process.exit(1);
  }
  const aes = new RawAesKeyring({
    ...AES_NAMES,
    wrappingKey: new Uint8Array(Buffer.from(AES_KEY_HEX, "hex")),
  });
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const rsaPem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const rsa = new RawRsaKeyring({ ...RSA_NAMES, privateKey: rsaPem });
  const both = new MultiKeyring({ generator: aes, children: [rsa] });
  const keyrings: Record<string, Keyring> = { aes, rsa, "aes+rsa": both };
  const context = { tenant: "acme", purpose: "golden-messages", ключ: "значение 🔑" };

  const out: MessageVector[] = [];
  const add = async (
    name: string,
    keys: MessageVector["keys"],
    size: number,
    options: { context?: EncryptionContext; suite?: MessageSuite; frameLength?: number } = {},
  ): Promise<void> => {
    const suite = options.suite ?? "AES_256_GCM_HKDF_SHA512_COMMIT_KEY";
    const frameLength = options.frameLength ?? FRAME;
    const plaintext = bytes(size, out.length);
    const message = await encryptMessage(plaintext, {
      keyring: keyrings[keys.join("+")]!,
      suite,
      frameLength,
      ...(options.context === undefined ? {} : { encryptionContext: options.context }),
    });
    out.push({
      name,
      keys,
      suite,
      frameLength,
      ...(options.context === undefined ? {} : { encryptionContext: options.context }),
      plaintext,
      message,
    });
  };

  const sizes: [string, number][] = [
    ["empty", 0],
    ["1 byte", 1],
    ["frame - 1", FRAME - 1],
    ["frame", FRAME],
    ["frame + 1", FRAME + 1],
    ["3 frames + 5", 3 * FRAME + 5],
  ];
  for (const [label, size] of sizes) {
    await add(`aes, ${label}, no context`, ["aes"], size);
    await add(`aes, ${label}, with context`, ["aes"], size, { context });
  }
  await add("rsa, frame + 1, with context", ["rsa"], FRAME + 1, { context });
  await add(
    "aes + rsa (two encrypted data keys), 2 frames + 3, with context",
    ["aes", "rsa"],
    131,
    {
      context,
    },
  );
  await add("aes, ECDSA P-384 signed, 2 frames + 7, with context", ["aes"], 2 * FRAME + 7, {
    context,
    suite: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
  });
  await add("aes, default frame length (64 KiB), 1000 bytes, with context", ["aes"], 1000, {
    context,
    frameLength: 64 * 1024,
  });

  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, "aes-wrapping-key.hex"), `${AES_KEY_HEX}\n`);
  writeFileSync(join(OUT, "rsa-private-key.pem"), rsaPem);
  writeFileSync(
    join(OUT, "messages.json"),
    toJson({ format: "kms-golden-messages/v1", aes: AES_NAMES, rsa: RSA_NAMES, vectors: out }),
  );
  console.log(`wrote ${out.length} golden messages to ${OUT}`);
}

await main();
