/**
 * importKeyStore checks a whole snapshot before it writes anything (found in adversarial review:
 * fields it did not check reached the store, which refused them halfway through the import, or
 * kept them as records no later read could use).
 */
import { describe, expect, it } from "vitest";
import { AlreadyExistsError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KeyStore, StoredAlias, StoredKey } from "./key-store.ts";
import { MemoryKeyStore } from "./memory-key-store.ts";
import { exportKeyStore, importKeyStore, type KeyStoreSnapshot } from "./snapshot.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x71 + i);

type Json = Record<string, unknown>;

/** A snapshot of two keys (one with a grant and a tag) and an alias, as plain JSON. */
async function snapshot(): Promise<{ keys: Json[]; aliases: Json[] } & Json> {
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), audit: false });
  const first = (await kms.createKey()).keyMetadata.keyId;
  const second = (await kms.createKey({ tags: [{ tagKey: "team", tagValue: "blue" }] })).keyMetadata
    .keyId;
  await kms.createGrant({
    keyId: second,
    granteePrincipal: "arn:aws:iam::111122223333:user/alice",
    operations: ["Decrypt"],
  });
  await kms.createAlias({ aliasName: "alias/first", targetKeyId: first });
  const exported: KeyStoreSnapshot = await exportKeyStore(store);
  return JSON.parse(JSON.stringify(exported));
}

/** A store that refuses what SQLite's STRICT tables refuse: a non-integer where one belongs. */
class StrictStore extends MemoryKeyStore {
  override async createKey(key: StoredKey): Promise<void> {
    for (const n of [key.createdAt, key.rotation.periodInDays, key.currentVersion]) {
      if (!Number.isSafeInteger(n)) throw new Error("SQLITE_CONSTRAINT_DATATYPE");
    }
    await super.createKey(key);
  }
}

async function isEmpty(store: KeyStore): Promise<boolean> {
  return (
    (await store.listKeys({ limit: 1 })).length === 0 &&
    (await store.listAliases({ limit: 1 })).length === 0
  );
}

describe("importKeyStore refuses before writing anything", () => {
  const edits: readonly [string, (s: Awaited<ReturnType<typeof snapshot>>) => void][] = [
    [
      "a creation date that is text",
      (s) => {
        s.keys[1]!.createdAt = "yesterday";
      },
    ],
    [
      "a rotation period that is text",
      (s) => {
        (s.keys[1]!.rotation as Json).periodInDays = "365";
      },
    ],
    [
      "rotation settings without a flag",
      (s) => {
        delete (s.keys[1]!.rotation as Json).enabled;
      },
    ],
    [
      "multiRegion that is not a boolean",
      (s) => {
        s.keys[1]!.multiRegion = "false";
      },
    ],
    [
      "a deletion date that is text",
      (s) => {
        s.keys[1]!.deletionDate = "soon";
      },
    ],
    [
      "a tag without a value",
      (s) => {
        s.keys[1]!.tags = [{ tagKey: "team" }];
      },
    ],
    [
      "a tag that is not an object",
      (s) => {
        s.keys[1]!.tags = ["team=blue"];
      },
    ],
    [
      "a policy that is not text",
      (s) => {
        s.keys[1]!.policy = { Statement: [] };
      },
    ],
    [
      "grants that are not a list of grants",
      (s) => {
        s.keys[1]!.grants = [{ grantId: 1 }];
      },
    ],
    [
      "a version given twice",
      (s) => {
        const versions = s.keys[1]!.versions as Json[];
        versions.push({ ...versions[0]! });
      },
    ],
    [
      "a rotation type that is not text",
      (s) => {
        (s.keys[1]!.versions as Json[])[0]!.rotationType = 1;
      },
    ],
    [
      "an alias given twice",
      (s) => {
        s.aliases.push({ ...s.aliases[0]! });
      },
    ],
  ];

  for (const [name, edit] of edits) {
    it(`${name}: ValidationError, the target left empty`, async () => {
      const s = await snapshot();
      edit(s);
      const target = new StrictStore();
      const error = await importKeyStore(target, s).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect(String((error as Error).message)).toMatch(/^snapshot (keys|aliases)\[/);
      expect(await isEmpty(target)).toBe(true);
    });
  }

  it("a valid snapshot still imports whole, and then only into an empty store", async () => {
    const s = await snapshot();
    const target = new StrictStore();
    await importKeyStore(target, s);
    expect(await target.listKeys({ limit: 10 })).toHaveLength(2);
    expect(await target.listAliases({ limit: 10 })).toHaveLength(1);
    await expect(importKeyStore(target, s)).rejects.toBeInstanceOf(AlreadyExistsError);
    const kms = await createKms({ store: target, rootKey: Uint8Array.from(ROOT), audit: false });
    const granted = s.keys.find((k) => Array.isArray(k.grants))!.keyId as string;
    expect((await kms.listGrants({ keyId: granted })).grants).toHaveLength(1);
  });

  it("members a record does not declare are not carried into the store", async () => {
    const s = await snapshot();
    s.keys[0]!.injected = "x";
    (s.keys[0]!.versions as Json[])[0]!.plaintextMaterial = "AAAA";
    s.aliases[0]!.extra = true;
    const target = new MemoryKeyStore();
    await importKeyStore(target, s);
    const key = (await target.getKey(s.keys[0]!.keyId as string)) as StoredKey & Json;
    expect(key).not.toHaveProperty("injected");
    expect(key.versions[0]).not.toHaveProperty("plaintextMaterial");
    const alias = (await target.getAlias("alias/first")) as StoredAlias & Json;
    expect(alias).not.toHaveProperty("extra");
  });
});
