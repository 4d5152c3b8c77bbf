/**
 * Envelope messages written by format version 1 (docs/FORMAT.md §5) must decrypt forever.
 * Never regenerate the files this reads: see README.md in this folder.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  decryptMessage,
  type EncryptionContext,
  InvalidCiphertextError,
  type Keyring,
  type MessageSuite,
  RawAesKeyring,
  RawRsaKeyring,
} from "../../src/index.ts";

const DIR = join(dirname(fileURLToPath(import.meta.url)), "messages-v1");

interface Vector {
  name: string;
  keys: ("aes" | "rsa")[];
  suite: MessageSuite;
  frameLength: number;
  encryptionContext?: EncryptionContext;
  plaintext: Uint8Array;
  message: Uint8Array;
}

interface Names {
  keyNamespace: string;
  keyName: string;
}

const file = JSON.parse(readFileSync(join(DIR, "messages.json"), "utf8"), (_key, v: unknown) =>
  typeof v === "object" && v !== null && "$base64" in v
    ? new Uint8Array(Buffer.from((v as { $base64: string }).$base64, "base64"))
    : v,
) as { format: string; aes: Names; rsa: Names; vectors: Vector[] };

const keyrings: Record<"aes" | "rsa", Keyring> = {
  aes: new RawAesKeyring({
    ...file.aes,
    wrappingKey: new Uint8Array(
      Buffer.from(readFileSync(join(DIR, "aes-wrapping-key.hex"), "utf8").trim(), "hex"),
    ),
  }),
  rsa: new RawRsaKeyring({
    ...file.rsa,
    privateKey: readFileSync(join(DIR, "rsa-private-key.pem"), "utf8"),
  }),
};

/** Changes the last byte of the stored context (header offset 37.., §5.2), keeping it valid UTF-8. */
function withChangedContextByte(message: Uint8Array): Uint8Array {
  const copy = new Uint8Array(message);
  const contextLength = (copy[35]! << 8) | copy[36]!;
  const last = 37 + contextLength - 1;
  // The last value ends in "🔑" (4-byte UTF-8): flip a bit that keeps the code point valid.
  copy[last] = copy[last]! ^ 0x01;
  return copy;
}

describe("golden envelope messages, format v1", () => {
  it("holds the expected set of vectors", () => {
    expect(file.format).toBe("kms-golden-messages/v1");
    expect(file.vectors.length).toBe(16);
    expect(file.vectors.some((v) => v.keys.length === 2)).toBe(true);
    expect(file.vectors.some((v) => v.suite !== "AES_256_GCM_HKDF_SHA512_COMMIT_KEY")).toBe(true);
  });

  describe.each(file.vectors)("$name", (vector) => {
    it.each(vector.keys)("decrypts with the %s key alone to the expected plaintext", async (k) => {
      const out = await decryptMessage(vector.message, {
        keyring: keyrings[k],
        ...(vector.encryptionContext === undefined
          ? {}
          : { encryptionContext: vector.encryptionContext }),
      });
      expect(Buffer.from(out.plaintext).equals(Buffer.from(vector.plaintext))).toBe(true);
      expect(out.suite).toBe(vector.suite);
      expect(out.frameLength).toBe(vector.frameLength);
      expect(out.encryptedDataKeys).toHaveLength(vector.keys.length);
    });

    it("rejects a changed expected context and a changed stored context", async () => {
      const keyring = keyrings[vector.keys[0]!];
      const changed = { ...(vector.encryptionContext ?? {}), tenant: "someone-else" };
      await expect(
        decryptMessage(vector.message, { keyring, encryptionContext: changed }),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
      if (vector.encryptionContext !== undefined) {
        await expect(
          decryptMessage(withChangedContextByte(vector.message), { keyring }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
      }
    });
  });
});
