import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AlreadyExistsError,
  createKms,
  exportKeyStore,
  importKeyStore,
  MemoryKeyStore,
  ValidationError,
} from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const ROOT = new Uint8Array(32).fill(9);
const encoder = new TextEncoder();

describe.skipIf(target.skipReason !== undefined)("exportKeyStore / importKeyStore", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("carries keys, versions, aliases, tags and settings SQLite → PostgreSQL → memory; golden ciphertexts still decrypt", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kms-pg-snapshot-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const sqlite = SqliteKeyStore.open({ path: join(dir, "keys.db") });
    const source = await createKms({ store: sqlite, rootKey: ROOT });
    const golden: { blob: Uint8Array; text: string; context: Record<string, string> }[] = [];
    for (let i = 0; i < 3; i++) {
      const keyId = (await source.createKey({ description: `key ${i}` })).keyMetadata.keyId;
      await source.createAlias({ aliasName: `alias/app-${i}`, targetKeyId: keyId });
      await source.tagResource({ keyId, tags: [{ tagKey: "n", tagValue: String(i) }] });
      for (let v = 0; v <= i; v++) {
        const context = { row: `${i}-${v}` };
        const text = `plaintext ${i}.${v}`;
        const { ciphertextBlob } = await source.encrypt({
          keyId: `alias/app-${i}`,
          plaintext: encoder.encode(text),
          encryptionContext: context,
        });
        golden.push({ blob: ciphertextBlob, text, context });
        if (v < i) await source.rotateKeyOnDemand({ keyId });
      }
    }
    await source.disableKey({ keyId: (await source.listKeys()).keys[0]!.keyId });

    const fromSqlite = await exportKeyStore(sqlite);
    await source.close();
    // JSON-serializable: what is restored is what went through JSON text.
    const text = JSON.stringify(fromSqlite);
    expect(text).not.toContain("plaintext");

    const schema = randomSchema("snap");
    cleanups.push(() => dropSchema(schema));
    const postgres = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    await importKeyStore(postgres, JSON.parse(text));
    const fromPostgres = await exportKeyStore(postgres);
    // Revisions restart at 1 in the target store; everything else is identical.
    const withoutRevisions = (s: typeof fromSqlite) => ({
      ...s,
      keys: s.keys.map((k) => ({ ...k, revision: 0 })),
    });
    expect(withoutRevisions(fromPostgres)).toStrictEqual(withoutRevisions(fromSqlite));

    const memory = new MemoryKeyStore();
    await importKeyStore(memory, JSON.parse(JSON.stringify(fromPostgres)));
    expect(withoutRevisions(await exportKeyStore(memory))).toStrictEqual(
      withoutRevisions(fromSqlite),
    );

    for (const store of [postgres, memory]) {
      const kms = await createKms({ store, rootKey: ROOT });
      const disabled = (await kms.listKeys()).keys[0]!.keyId;
      await kms.enableKey({ keyId: disabled });
      for (const g of golden) {
        const { plaintext } = await kms.decrypt({
          ciphertextBlob: g.blob,
          encryptionContext: g.context,
        });
        expect(new TextDecoder().decode(plaintext)).toBe(g.text);
      }
      // The root key history came along: another root key is refused on the restored store.
      const other = new MemoryKeyStore();
      await importKeyStore(other, fromSqlite);
      await expect(
        createKms({ store: other, rootKey: new Uint8Array(32).fill(1) }),
      ).rejects.toThrow(/is not the one/);
    }
    await postgres.close();
  });

  it("refuses a non-empty target and malformed snapshots without writing anything", async () => {
    const source = new MemoryKeyStore();
    const kms = await createKms({ store: source, rootKey: ROOT });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const snapshot = await exportKeyStore(source);

    const schema = randomSchema("snap");
    cleanups.push(() => dropSchema(schema));
    const postgres = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    cleanups.push(() => postgres.close());
    await importKeyStore(postgres, snapshot);
    await expect(importKeyStore(postgres, snapshot)).rejects.toBeInstanceOf(AlreadyExistsError);

    const key = snapshot.keys[0]!;
    const version = key.versions[0]!;
    const junk: unknown[] = [
      null,
      "snapshot",
      { ...snapshot, format: "kms-keystore-snapshot/v2" },
      { ...snapshot, keys: "nope" },
      { ...snapshot, keys: [{ ...key, versions: [] }] },
      {
        ...snapshot,
        keys: [{ ...key, versions: [{ ...version, wrappedMaterial: "not base64!" }] }],
      },
      { ...snapshot, keys: [{ ...key, versions: [{ ...version, wrappedMaterial: 42 }] }] },
      { ...snapshot, keys: [{ ...key, currentVersion: 7 }] },
      { ...snapshot, keys: [key, key] },
      {
        ...snapshot,
        aliases: [{ aliasName: "alias/x", targetKeyId: "missing", createdAt: 1, updatedAt: 1 }],
      },
      { ...snapshot, settings: { "root-key-id": 5 } },
    ];
    for (const input of junk) {
      const empty = new MemoryKeyStore();
      await expect(importKeyStore(empty, input)).rejects.toBeInstanceOf(ValidationError);
      expect(await empty.listKeys({ limit: 1 })).toStrictEqual([]);
      expect(await empty.getSetting("root-key-id")).toBeUndefined();
    }
    expect((await postgres.getKey(keyId))?.versions[0]?.wrappedMaterial).toBeInstanceOf(Uint8Array);
  });
});
