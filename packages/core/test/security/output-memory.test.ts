import { randomBytes } from "node:crypto";
import {
  createKms,
  encryptMessage,
  FieldEncryptionEngine,
  MemoryDataKeyStore,
  RawAesKeyring,
} from "@kms/core";
import { describe, expect, test } from "vitest";

/**
 * What encryption returns must not share memory with anything but other ciphertext: a caller
 * who stores or sends `result.buffer` (a common slip with typed arrays) would otherwise ship
 * whatever else lived in Node's shared Buffer pool — such as the plaintext itself, which
 * `Buffer.from(string)` puts there.
 */
describe("ciphertext outputs own their memory", () => {
  const secret = () => `top secret ${randomBytes(8).toString("hex")}`;

  test("encryptMessage (small messages come from a pool)", async () => {
    const keyring = new RawAesKeyring({
      keyNamespace: "ns",
      keyName: "k",
      wrappingKey: randomBytes(32),
    });
    for (let i = 0; i < 50; i++) {
      const text = secret();
      const plaintext = Buffer.from(text); // lands in Node's pool
      const message = await encryptMessage(plaintext, { keyring });
      const whole = Buffer.from(message.buffer);
      expect(whole.includes(text), `round ${i}`).toBe(false);
    }
  });

  test("field engine values", async () => {
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    const engine = new FieldEncryptionEngine({
      kms,
      keyId: keyMetadata.keyId,
      dataKeyStore: new MemoryDataKeyStore(),
    });
    const binding = { model: "User", field: "email", context: {} };
    for (let i = 0; i < 50; i++) {
      const text = secret();
      const pooled = Buffer.from(text);
      const sealed = await engine.encrypt(binding, { type: "string" }, text);
      expect(Buffer.from(sealed.buffer).includes(text), `round ${i}`).toBe(false);
      expect(pooled.length).toBeGreaterThan(0);
    }
  });
});
