/**
 * UTF-8 encoders turn every lone surrogate into U+FFFD, so "\ud800", "\udfff" and "\ufffd"
 * would be one and the same encryption context: a ciphertext bound to one tenant would decrypt
 * for another. Contexts (KMS operations, envelope messages, field bindings) and string field
 * values must be well-formed Unicode; anything else is a ValidationError before any crypto.
 */
import { describe, expect, test } from "vitest";
import {
  createKms,
  encryptMessage,
  FieldEncryptionEngine,
  MemoryDataKeyStore,
  ValidationError,
} from "../../src/index.ts";
import { aesKeyring } from "../message/helpers.ts";

const LONE = ["\ud800", "\udfff", "a\udc00b", "\ud83d"];

describe("lone surrogates are refused, never folded onto U+FFFD", () => {
  test.each(LONE)("KMS Encrypt with a context value %j", async (value) => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    const plaintext = new Uint8Array([1, 2, 3]);
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: value } }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { [value]: "x" } }),
    ).rejects.toThrow(/well-formed Unicode/);
    // A well-formed context beside it still works, and "\ufffd" itself is an ordinary value.
    const sealed = await kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "\ufffd" } });
    await expect(
      kms.decrypt({ ciphertextBlob: sealed.ciphertextBlob, encryptionContext: { tenant: value } }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test.each(LONE)("an envelope message with a context value %j", async (value) => {
    await expect(
      encryptMessage(new Uint8Array(4), { keyring: aesKeyring(), encryptionContext: { t: value } }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test.each(LONE)("a field binding or string value containing %j", async (value) => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    const engine = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
    });
    const spec = { type: "string" } as const;
    const ok = { model: "User", field: "name", context: { tenant: "a" } };
    await expect(
      engine.encrypt({ ...ok, context: { tenant: value } }, spec, "x"),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(engine.encrypt({ ...ok, model: value }, spec, "x")).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(engine.encrypt({ ...ok, field: value }, spec, "x")).rejects.toBeInstanceOf(
      ValidationError,
    );
    // The message names the field, never the value.
    const refused = engine.encrypt(ok, spec, `secret${value}`);
    await expect(refused).rejects.toThrow(/"name" string values must be well-formed Unicode/);
    await expect(refused).rejects.not.toThrow(/secret/);
  });

  test.each(LONE)(
    "names the key store persists: tags, descriptions, grantees (%j)",
    async (value) => {
      // Stores write UTF-8: these would come back from the database as another name.
      const kms = await createKms();
      const { keyId } = (await kms.createKey()).keyMetadata;
      await expect(
        kms.tagResource({ keyId, tags: [{ tagKey: `team${value}`, tagValue: "a" }] }),
      ).rejects.toThrow(/well-formed Unicode/);
      await expect(
        kms.tagResource({ keyId, tags: [{ tagKey: "team", tagValue: value }] }),
      ).rejects.toThrow(/well-formed Unicode/);
      await expect(kms.createKey({ description: value })).rejects.toBeInstanceOf(ValidationError);
      await expect(
        kms.createGrant({
          keyId,
          granteePrincipal: `user-${value}`,
          operations: ["Encrypt"],
        }),
      ).rejects.toBeInstanceOf(ValidationError);
      expect((await kms.listResourceTags({ keyId })).tags).toEqual([]);
    },
  );
});
