import {
  createKms,
  type Kms,
  NotFoundError,
  type StoredAlias,
  type StoredKey,
  ValidationError,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { storedKey } from "./fixtures/stored-key.ts";

const ROOT = new Uint8Array(32).fill(9);

const key = (keyId: string): StoredKey => storedKey(keyId);

function alias(aliasName: string, targetKeyId = "k-a"): StoredAlias {
  return { aliasName, targetKeyId, createdAt: 1, updatedAt: 1 };
}

/** PostgreSQL rejects U+0000 in text (22021); UTF-8 turns a lone surrogate into U+FFFD. */
const UNSTORABLE = ["\u0000", "a\u0000b", "\ud800", "a\udc00b"];
const WITH_NUL = UNSTORABLE.filter((text) => text.includes("\u0000"));

describe.skipIf(target.skipReason !== undefined)(
  "PostgresKeyStore and text a text column cannot hold",
  () => {
    let store: PostgresKeyStore;
    let schema: string;
    beforeEach(async () => {
      schema = randomSchema("text");
      store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    });
    afterEach(async () => {
      await store.close();
      await dropSchema(schema);
    });

    describe("through the Kms", () => {
      let kms: Kms;
      beforeEach(async () => {
        kms = await createKms({ store, rootKey: ROOT });
        const { keyId } = (await kms.createKey()).keyMetadata;
        await kms.createAlias({ aliasName: "alias/a", targetKeyId: keyId });
      });

      it("refuses a description holding U+0000 with ValidationException naming it, storing nothing", async () => {
        const created = kms.createKey({ description: "card\u0000number" });
        await expect(created).rejects.toBeInstanceOf(ValidationError);
        await expect(created).rejects.toThrow(/"description".*U\+0000/);
        const { keyId } = (await kms.createKey({ description: "ok" })).keyMetadata;
        const updated = kms.updateKeyDescription({ keyId, description: "\u0000" });
        await expect(updated).rejects.toBeInstanceOf(ValidationError);
        expect((await kms.describeKey({ keyId })).keyMetadata.description).toBe("ok");
        expect((await kms.listKeys()).keys).toHaveLength(2);
      });

      it("answers NotFoundException for an alias name holding U+0000", async () => {
        await expect(kms.describeKey({ keyId: "alias/a\u0000" })).rejects.toBeInstanceOf(
          NotFoundError,
        );
        await expect(
          kms.encrypt({ keyId: "alias/\u0000", plaintext: new Uint8Array(1) }),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it("pages from a marker that decodes to text holding U+0000 as any store would", async () => {
        // A marker is base64url of "<listing>\0<last id>"; a last id of "\0" sorts before every
        // id, so the page is the first one.
        const marker = (listing: string): string =>
          Buffer.from(`${listing}\0\0`).toString("base64url");
        const all = await kms.listKeys();
        expect(all.keys).toHaveLength(1);
        expect(await kms.listKeys({ marker: marker("listKeys") })).toStrictEqual(all);
        expect(await kms.listAliases({ marker: marker("listAliases") })).toStrictEqual(
          await kms.listAliases(),
        );
      });
    });

    describe("used directly", () => {
      beforeEach(async () => {
        await store.createKey(key("k-a"));
        await store.createAlias(alias("alias/a"));
      });

      it.each(WITH_NUL)("reads of %j find nothing, without a database error", async (text) => {
        expect(await store.getKey(text)).toBeUndefined();
        expect(await store.getAlias(text)).toBeUndefined();
        expect(await store.getSetting(text)).toBeUndefined();
        expect(await store.listAliases({ limit: 10, targetKeyId: text })).toStrictEqual([]);
      });

      it.each(WITH_NUL)("writes to the missing record %j are NotFoundError", async (text) => {
        await expect(store.updateKey({ ...key(text), revision: 2 })).rejects.toBeInstanceOf(
          NotFoundError,
        );
        await expect(store.deleteKey(text, 1)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.updateAlias(text, "k-a", 2)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.deleteAlias(text)).rejects.toBeInstanceOf(NotFoundError);
      });

      it("a lookup with a lone surrogate does not find the record named with U+FFFD", async () => {
        await store.createKey(key("k-\ufffd"));
        await store.createAlias(alias("alias/\ufffd"));
        expect(await store.getKey("k-\ud800")).toBeUndefined();
        expect(await store.getAlias("alias/\udfff")).toBeUndefined();
        expect((await store.getKey("k-\ufffd"))?.keyId).toBe("k-\ufffd");
      });

      it("an after bound holding U+0000 pages as the code-unit order says", async () => {
        await store.createKey(key("k-b"));
        await store.createKey(key("k-c"));
        const ids = async (after: string) =>
          (await store.listKeys({ after, limit: 10 })).map((k) => k.keyId);
        expect(await ids("k-b\u0000zz")).toStrictEqual(["k-c"]);
        expect(await ids("\u0000")).toStrictEqual(["k-a", "k-b", "k-c"]);
        await store.createAlias(alias("alias/b"));
        const names = (await store.listAliases({ after: "alias/a\u0000", limit: 10 })).map(
          (a) => a.aliasName,
        );
        expect(names).toStrictEqual(["alias/b"]);
      });

      const keyFields: [string, (text: string) => StoredKey][] = [
        ["keyId", (text) => key(text)],
        ["description", (text) => ({ ...key("k-new"), description: text })],
        ["policy", (text) => ({ ...key("k-new"), policy: text })],
        ["seal", (text) => ({ ...key("k-new"), seal: text })],
        [
          "versions[0].keyMaterialId",
          (text) => ({
            ...key("k-new"),
            versions: [{ ...key("").versions[0]!, keyMaterialId: text }],
          }),
        ],
      ];
      describe.each(keyFields)("a key whose %s cannot be stored", (field, make) => {
        it.each(UNSTORABLE)(
          "%j: createKey and updateKey refuse it, naming the field",
          async (text) => {
            const record = make(text);
            const pattern = new RegExp(`"${field.replace(/[[\]]/g, "\\$&")}" cannot be stored`);
            await expect(store.createKey(record)).rejects.toBeInstanceOf(ValidationError);
            await expect(store.createKey(record)).rejects.toThrow(pattern);
            expect(await store.listKeys({ limit: 10 })).toHaveLength(1);
            if (field === "keyId") return;
            await expect(
              store.updateKey({ ...record, keyId: "k-a", revision: 2 }),
            ).rejects.toBeInstanceOf(ValidationError);
            expect(await store.getKey("k-a")).toStrictEqual(key("k-a"));
          },
        );
      });

      it.each(UNSTORABLE)(
        "aliases and settings holding %j are refused with ValidationError",
        async (text) => {
          await expect(store.createAlias(alias(`alias/${text}`))).rejects.toThrow(/"aliasName"/);
          await expect(store.createAlias(alias("alias/b", text))).rejects.toThrow(/"targetKeyId"/);
          await expect(store.createAlias({ ...alias("alias/b"), seal: text })).rejects.toThrow(
            /"seal"/,
          );
          await expect(store.updateAlias("alias/a", text, 2)).rejects.toThrow(/"targetKeyId"/);
          await expect(store.putSettingIfAbsent(text, "v")).rejects.toThrow(/"name"/);
          await expect(store.putSettingIfAbsent("s", text)).rejects.toBeInstanceOf(ValidationError);
          expect(await store.listAliases({ limit: 10 })).toStrictEqual([alias("alias/a")]);
          expect(await store.getSetting("s")).toBeUndefined();
        },
      );
    });
  },
);
