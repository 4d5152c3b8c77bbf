import { createDecipheriv, createHmac, randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { parseBlob } from "../envelope/ciphertext-blob.ts";
import { InvalidCiphertextError, RootKeyError } from "../errors.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import { MemoryKeyStore } from "../keystore/memory-key-store.ts";
import { SealedKeyStore } from "../keystore/sealed-key-store.ts";
import { createKms } from "../kms.ts";
import { RootKeySource } from "./root-key.ts";
import { SoftwareHsm } from "./software-hsm.ts";

const encoder = new TextEncoder();

/** Unwraps per docs/FORMAT.md §4 with node:crypto only, independently of SoftwareHsm. */
function unwrapIndependently(root: Uint8Array, keyId: string, version: number, w: Uint8Array) {
  expect(w[0]).toBe(0x01);
  const rootKeyId = createHmac("sha256", root).update("kms/root-key-id/v1").digest().subarray(0, 8);
  expect(Buffer.from(w.subarray(1, 9)).equals(rootKeyId)).toBe(true);
  expect(w.length).toBe(1 + 8 + 12 + 32 + 16);
  const decipher = createDecipheriv("aes-256-gcm", root, w.subarray(9, 21));
  decipher.setAAD(encoder.encode(`kms/wrap/v1|${keyId}|${version}`));
  decipher.setAuthTag(w.subarray(w.length - 16));
  return new Uint8Array(
    Buffer.concat([decipher.update(w.subarray(21, w.length - 16)), decipher.final()]),
  );
}

async function twoKeys() {
  const root = randomBytes(32);
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: Uint8Array.from(root) });
  const a = (await kms.createKey()).keyMetadata.keyId;
  const b = (await kms.createKey()).keyMetadata.keyId;
  const plaintext = encoder.encode("secret under b");
  const { ciphertextBlob } = await kms.encrypt({ keyId: b, plaintext });
  return { root, store, kms, a, b, ciphertextBlob, plaintext };
}

/**
 * Swaps one version's wrapped material and seals the record again with the root key, as only a
 * writer holding the root key could: without that, the record seal (FORMAT §4.1) refuses the
 * edit before any unwrap, and these tests would not reach the wrap AAD (§4 item 2) they check.
 */
async function replaceVersion(
  store: MemoryKeyStore,
  root: Uint8Array,
  keyId: string,
  index: number,
  wrapped: Uint8Array,
) {
  const sealed = new SealedKeyStore(
    store,
    await SoftwareHsm.open(RootKeySource.fromBytes(Uint8Array.from(root)), store),
  );
  const key = (await store.getKey(keyId))!;
  const versions = key.versions.map((v, i) =>
    i === index ? { ...v, wrappedMaterial: wrapped } : v,
  );
  const updated: StoredKey = { ...key, revision: key.revision + 1, versions };
  await sealed.updateKey(updated);
}

describe("SoftwareHsm serialization", () => {
  it("toJSON and inspect show the root key id only, never key bytes", async () => {
    const root = randomBytes(32);
    const store = new MemoryKeyStore();
    const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), store);
    const rootKeyId = createHmac("sha256", root).update("kms/root-key-id/v1").digest();
    expect(hsm.rootKeyId).toBe(rootKeyId.subarray(0, 8).toString("hex"));
    expect(await store.getSetting("root-key-id")).toBe(hsm.rootKeyId);
    // Populate the unwrapped-material cache so that any leak of it would show.
    const material = randomBytes(32);
    const wrapped = hsm.wrapMaterial(
      "00000000-0000-4000-8000-000000000001",
      1,
      Uint8Array.from(material),
    );
    hsm.encryptToBlob(
      { keyId: "00000000-0000-4000-8000-000000000001", version: 1, wrappedMaterial: wrapped },
      new Uint8Array([1]),
      new Uint8Array(0),
    );
    const renderings = [
      JSON.stringify(hsm),
      inspect(hsm),
      inspect(hsm, { showHidden: true, depth: Number.POSITIVE_INFINITY }),
      String(hsm),
      JSON.stringify({ ...hsm }),
    ];
    expect(JSON.parse(renderings[0]!)).toEqual({ rootKeyId: hsm.rootKeyId });
    for (const text of renderings) {
      for (const secret of [root, material]) {
        expect(text).not.toContain(secret.toString("hex"));
        expect(text).not.toContain(secret.toString("base64"));
        expect(text).not.toContain(secret.subarray(0, 6).join(", "));
      }
    }
  });
});

describe("wrapped key material (docs/FORMAT.md §4)", () => {
  it("is AES-256-GCM under the root key with the documented header and AAD", async () => {
    const { root, store, b } = await twoKeys();
    const record = (await store.getKey(b))!;
    const version = record.versions[0]!;
    const material = unwrapIndependently(root, b, version.version, version.wrappedMaterial);
    expect(material).toHaveLength(32);
  });

  it("material copied into another key's record fails to unwrap (error, not garbage)", async () => {
    const { root, store, a, b, ciphertextBlob } = await twoKeys();
    const fromA = (await store.getKey(a))!.versions[0]!.wrappedMaterial;
    await replaceVersion(store, root, b, 0, fromA);
    // A fresh Kms: the first one has b's material cached from encrypt.
    const fresh = await createKms({ store, rootKey: Uint8Array.from(root) });
    const error = await fresh.decrypt({ ciphertextBlob }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toMatch(/fails to unwrap/);
    // Encrypting under b must fail the same way rather than use a's material.
    await expect(
      fresh.encrypt({ keyId: b, plaintext: new Uint8Array([1]) }),
    ).rejects.toBeInstanceOf(RootKeyError);
  });

  it("material moved to another version of the same key fails to unwrap", async () => {
    const { root, store, kms, b } = await twoKeys();
    await kms.rotateKeyOnDemand({ keyId: b });
    const plaintext = encoder.encode("under v2");
    const { ciphertextBlob } = await kms.encrypt({ keyId: b, plaintext });
    const v1 = (await store.getKey(b))!.versions[0]!.wrappedMaterial;
    await replaceVersion(store, root, b, 1, v1);
    const fresh = await createKms({ store, rootKey: Uint8Array.from(root) });
    await expect(fresh.decrypt({ ciphertextBlob })).rejects.toBeInstanceOf(RootKeyError);
  });

  it("a flipped bit anywhere in the wrapped material fails to unwrap", async () => {
    const { root, store, b, ciphertextBlob } = await twoKeys();
    const original = (await store.getKey(b))!.versions[0]!.wrappedMaterial;
    for (const bit of [0, 8, 70, 9 * 8 + 3, 21 * 8 + 100, original.length * 8 - 1]) {
      const tampered = Uint8Array.from(original);
      tampered[bit >> 3]! ^= 1 << (bit & 7);
      await replaceVersion(store, root, b, 0, tampered);
      const fresh = await createKms({ store, rootKey: Uint8Array.from(root) });
      await expect(fresh.decrypt({ ciphertextBlob })).rejects.toBeInstanceOf(RootKeyError);
    }
    await replaceVersion(store, root, b, 0, original);
    const fresh = await createKms({ store, rootKey: Uint8Array.from(root) });
    await expect(fresh.decrypt({ ciphertextBlob })).resolves.toBeDefined();
  });

  it("material wrapped under another root key is reported as such", async () => {
    const { root, store, b, ciphertextBlob } = await twoKeys();
    const other = await SoftwareHsm.open(
      RootKeySource.fromBytes(randomBytes(32)),
      new MemoryKeyStore(),
    );
    await replaceVersion(store, root, b, 0, other.wrapMaterial(b, 1, randomBytes(32)));
    const fresh = await createKms({ store, rootKey: Uint8Array.from(root) });
    await expect(fresh.decrypt({ ciphertextBlob })).rejects.toThrow(
      /wrapped under another root key/,
    );
  });

  it("decrypting with the wrong key material is InvalidCiphertext, not garbage", async () => {
    const root = randomBytes(32);
    const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), new MemoryKeyStore());
    const keyId = "00000000-0000-4000-8000-000000000002";
    const right = hsm.wrapMaterial(keyId, 1, randomBytes(32));
    const wrong = hsm.wrapMaterial(keyId, 2, randomBytes(32));
    const blob = hsm.encryptToBlob(
      { keyId, version: 1, wrappedMaterial: right },
      encoder.encode("x"),
      new Uint8Array(0),
    );
    expect(() =>
      hsm.decryptBlob(
        { keyId, version: 2, wrappedMaterial: wrong },
        parseBlob(blob),
        new Uint8Array(0),
      ),
    ).toThrow(InvalidCiphertextError);
  });
});
