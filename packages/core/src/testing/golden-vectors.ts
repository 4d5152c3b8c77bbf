import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidCiphertextError, RootKeyError } from "../errors.ts";
import type { KeyStore, StoredAlias, StoredKey } from "../keystore/key-store.ts";
import { createKms, type Kms } from "../kms.ts";
import type { EncryptionContext } from "../types.ts";
import type { OpenedKeyStore } from "./key-store-conformance.ts";

/**
 * Golden vectors v1 (test/golden/v1, shipped with the package): a store snapshot, its root key
 * and ciphertexts that every release must still decrypt, on every key store. Never regenerate
 * them; a new format gets a new folder.
 */
export interface GoldenCiphertext {
  readonly name: string;
  readonly keyId: string;
  readonly keyVersion: number;
  readonly encryptionContext?: EncryptionContext;
  readonly ciphertextBlob: Uint8Array;
  readonly plaintext: Uint8Array;
}

export interface GoldenStore {
  readonly format: string;
  readonly keys: StoredKey[];
  readonly aliases: StoredAlias[];
  readonly settings: Record<string, string>;
}

// src/testing and dist/testing both sit two levels below the package root.
const GOLDEN = new URL("../../test/golden/v1/", import.meta.url);

function readGolden<T>(name: string): T {
  const text = readFileSync(new URL(name, GOLDEN), "utf8");
  return JSON.parse(text, (_key, value: unknown) => {
    if (typeof value === "object" && value !== null && "$base64" in value) {
      return new Uint8Array(Buffer.from(String(value.$base64), "base64"));
    }
    return value;
  }) as T;
}

export function goldenVectorsV1(): {
  snapshot: GoldenStore;
  ciphertexts: GoldenCiphertext[];
  rootKey: Uint8Array;
} {
  const hex = readFileSync(new URL("root-key.hex", GOLDEN), "utf8").trim();
  return {
    snapshot: readGolden<GoldenStore>("store.json"),
    ciphertexts: readGolden<GoldenCiphertext[]>("ciphertexts.json"),
    rootKey: new Uint8Array(Buffer.from(hex, "hex")),
  };
}

/** Writes the snapshot into an empty store through the KeyStore interface alone. */
export async function loadGoldenSnapshot(store: KeyStore, snapshot: GoldenStore): Promise<void> {
  for (const [name, value] of Object.entries(snapshot.settings)) {
    await store.putSettingIfAbsent(name, value);
  }
  for (const key of snapshot.keys) {
    const first = key.versions[0]!;
    await store.createKey({
      ...key,
      revision: 1,
      versions: [first],
      currentVersion: first.version,
    });
    if (key.versions.length > 1 || key.revision > 1) await store.updateKey({ ...key, revision: 2 });
  }
  for (const alias of snapshot.aliases) await store.createAlias(alias);
}

function changedContexts(context: EncryptionContext | undefined): EncryptionContext[] {
  if (context === undefined || Object.keys(context).length === 0) return [{ golden: "v1" }];
  const [firstKey, ...rest] = Object.keys(context);
  return [
    { ...context, [firstKey!]: `${context[firstKey!]}x` },
    Object.fromEntries(rest.map((k) => [k, context[k]!])),
    { ...context, extra: "pair" },
    {},
  ];
}

/**
 * Checks that the golden v1 ciphertexts decrypt on a store: `open` must return an empty store
 * each time it is called.
 */
export function describeGoldenVectors(name: string, open: () => Promise<OpenedKeyStore>): void {
  const { snapshot, ciphertexts, rootKey } = goldenVectorsV1();

  describe(`golden vectors v1 on ${name}`, () => {
    let kms: Kms;
    const cleanups: (() => Promise<void>)[] = [];

    async function openLoaded(): Promise<KeyStore> {
      const opened = await open();
      if (opened.cleanup !== undefined) cleanups.push(opened.cleanup);
      await loadGoldenSnapshot(opened.store, snapshot);
      return opened.store;
    }

    beforeAll(async () => {
      // v1 predates record seals (FORMAT §4.1): its records are sealed once, as on an upgrade.
      kms = await createKms({ store: await openLoaded(), rootKey, unsealedRecords: "seal" });
    });
    afterAll(async () => {
      for (const cleanup of cleanups) await cleanup();
    });

    it("cover a twice-rotated key (all three versions, with and without context) and a data key", () => {
      expect(snapshot.format).toBe("kms-golden-store/v1");
      const rotated = snapshot.keys.find((k) => k.versions.length === 3);
      expect(rotated).toBeDefined();
      for (const version of [1, 2, 3]) {
        const at = ciphertexts.filter(
          (c) => c.keyId === rotated!.keyId && c.keyVersion === version,
        );
        expect(at.some((c) => c.encryptionContext === undefined)).toBe(true);
        expect(at.some((c) => c.encryptionContext !== undefined)).toBe(true);
      }
      expect(ciphertexts.some((c) => c.name.startsWith("generateDataKey"))).toBe(true);
    });

    describe.each(ciphertexts)("$name", (golden) => {
      it("still decrypts to its plaintext, from the version it names", async () => {
        const keyRecord = snapshot.keys.find((k) => k.keyId === golden.keyId)!;
        const version = keyRecord.versions.find((v) => v.version === golden.keyVersion)!;
        const result = await kms.decrypt({
          ciphertextBlob: golden.ciphertextBlob,
          ...(golden.encryptionContext ? { encryptionContext: golden.encryptionContext } : {}),
        });
        expect(Buffer.from(result.plaintext).equals(Buffer.from(golden.plaintext))).toBe(true);
        expect(result.keyId).toMatch(new RegExp(`:key/${golden.keyId}$`));
        expect(result.keyMaterialId).toBe(version.keyMaterialId);
        // FORMAT §3: the blob header names the key id and version.
        expect(Buffer.from(golden.ciphertextBlob.subarray(2, 18)).toString("hex")).toBe(
          golden.keyId.replaceAll("-", ""),
        );
        expect(Buffer.from(golden.ciphertextBlob).readUInt32BE(18)).toBe(golden.keyVersion);
      });

      it("fails with any changed encryption context", async () => {
        for (const encryptionContext of changedContexts(golden.encryptionContext)) {
          await expect(
            kms.decrypt({ ciphertextBlob: golden.ciphertextBlob, encryptionContext }),
          ).rejects.toBeInstanceOf(InvalidCiphertextError);
        }
      });
    });

    it("re-encrypts an old-version ciphertext under the current version", async () => {
      const old = ciphertexts.find((c) => c.keyVersion === 1 && c.encryptionContext !== undefined)!;
      const { ciphertextBlob } = await kms.reEncrypt({
        ciphertextBlob: old.ciphertextBlob,
        sourceEncryptionContext: old.encryptionContext!,
        destinationKeyId: old.keyId,
      });
      expect(Buffer.from(ciphertextBlob).readUInt32BE(18)).toBe(3);
      const { plaintext } = await kms.decrypt({ ciphertextBlob });
      expect(Buffer.from(plaintext).equals(Buffer.from(old.plaintext))).toBe(true);
    });

    it("the aliases in the snapshot resolve", async () => {
      const aliased = ciphertexts.find((c) => c.name.startsWith("aliased"))!;
      await expect(
        kms.decrypt({ ciphertextBlob: aliased.ciphertextBlob, keyId: "alias/golden" }),
      ).resolves.toBeDefined();
    });

    it("an unsealed v1 store is refused without unsealedRecords, naming the option", async () => {
      const opening = createKms({ store: await openLoaded(), rootKey });
      await expect(opening).rejects.toBeInstanceOf(RootKeyError);
      await expect(opening).rejects.toThrow(/unsealedRecords: "seal"/);
    });

    it("once sealed, the v1 store opens and decrypts without unsealedRecords", async () => {
      const store = await openLoaded();
      await createKms({ store, rootKey, unsealedRecords: "seal" });
      const reopened = await createKms({ store, rootKey });
      const aliased = ciphertexts.find((c) => c.name.startsWith("aliased"))!;
      const { plaintext } = await reopened.decrypt({
        ciphertextBlob: aliased.ciphertextBlob,
        keyId: "alias/golden",
      });
      expect(Buffer.from(plaintext).equals(Buffer.from(aliased.plaintext))).toBe(true);
    });

    it("the snapshot refuses a different root key", async () => {
      const other = new Uint8Array(32).fill(7);
      await expect(createKms({ store: await openLoaded(), rootKey: other })).rejects.toThrow(
        /is not the one key store/,
      );
    });
  });
}
