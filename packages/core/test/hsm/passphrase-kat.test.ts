/**
 * Known answers for passphrase root keys (docs/FORMAT.md §4.4): a fixed passphrase, salt and
 * parameters must always give the same root key and root key id, or every store opened with a
 * passphrase becomes unreadable. Each vector is checked three ways: through the public
 * `RootKeySource.fromPassphrase` on a store whose `root-key-kdf` setting is planted first, by
 * independent implementations of the KDF applied to the spec's input bytes, and (for the KDF
 * primitives themselves) against their RFC test vectors.
 */
import * as nodeCrypto from "node:crypto";
import { readFileSync } from "node:fs";
import { argon2id } from "@noble/hashes/argon2.js";
import { scrypt } from "@noble/hashes/scrypt.js";
import { describe, expect, it } from "vitest";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { createKms, MemoryKeyStore, RootKeyError } from "../../src/index.ts";

interface ScryptSetting {
  readonly kdf: "scrypt";
  readonly salt: string;
  readonly n: number;
  readonly r: number;
  readonly p: number;
}
interface Argon2idSetting {
  readonly kdf: "argon2id";
  readonly salt: string;
  readonly t: number;
  readonly m: number;
  readonly p: number;
}
interface PassphraseVector {
  readonly name: string;
  readonly passphrase: string;
  readonly passphraseNfcUtf8: string;
  readonly setting: ScryptSetting | Argon2idSetting;
  readonly rootKey: string;
  readonly rootKeyId: string;
}
const file = JSON.parse(
  readFileSync(new URL("./vectors/passphrase-root-key.json", import.meta.url), "utf8"),
) as {
  vectors: PassphraseVector[];
  rfc9106Argon2id: Record<"password" | "salt" | "secret" | "associatedData" | "tag", string> &
    Record<"t" | "m" | "p", number>;
  rfc7914Scrypt: Record<"password" | "salt" | "dk", string> & Record<"n" | "r" | "p", number>;
};

const hexOf = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");
const { createHmac, scryptSync } = nodeCrypto;
const rootKeyId = (rootKey: Uint8Array): string =>
  createHmac("sha256", rootKey)
    .update("kms/root-key-id/v1")
    .digest()
    .subarray(0, 8)
    .toString("hex");

/**
 * node:crypto's Argon2 (Node ≥ 24.7). Node 22 has none (a named import would fail to link there),
 * and @noble is then the only implementation at hand.
 */
const argon2Sync: typeof nodeCrypto.argon2Sync | undefined = (
  nodeCrypto as { argon2Sync?: typeof nodeCrypto.argon2Sync }
).argon2Sync;
const nodeArgon2 = argon2Sync !== undefined;

function nodeArgon2id(
  password: Uint8Array,
  salt: Uint8Array,
  params: { t: number; m: number; p: number },
  length: number,
  extra: { secret?: Uint8Array; associatedData?: Uint8Array } = {},
): Uint8Array {
  return new Uint8Array(
    argon2Sync!("argon2id", {
      message: password,
      nonce: salt,
      parallelism: params.p,
      tagLength: length,
      memory: params.m,
      passes: params.t,
      ...extra,
    }),
  );
}

describe("the KDF primitives the derivation uses, against their RFCs", () => {
  it("@noble/hashes argon2id (the library's argon2id) gives the RFC 9106 §5.3 tag", () => {
    const v = file.rfc9106Argon2id;
    const tag = argon2id(Buffer.from(v.password, "hex"), Buffer.from(v.salt, "hex"), {
      t: v.t,
      m: v.m,
      p: v.p,
      dkLen: 32,
      key: Buffer.from(v.secret, "hex"),
      personalization: Buffer.from(v.associatedData, "hex"),
    });
    expect(hexOf(tag)).toBe(v.tag);
  });

  it.runIf(nodeArgon2)("node:crypto argon2id gives the same RFC 9106 §5.3 tag", () => {
    const v = file.rfc9106Argon2id;
    const tag = nodeArgon2id(Buffer.from(v.password, "hex"), Buffer.from(v.salt, "hex"), v, 32, {
      secret: Buffer.from(v.secret, "hex"),
      associatedData: Buffer.from(v.associatedData, "hex"),
    });
    expect(hexOf(tag)).toBe(v.tag);
  });

  it("node:crypto scrypt (the library's scrypt) and @noble/hashes scrypt give RFC 7914 §12", () => {
    const v = file.rfc7914Scrypt;
    const options = { N: v.n, r: v.r, p: v.p };
    expect(scryptSync(v.password, v.salt, 64, options).toString("hex")).toBe(v.dk);
    expect(hexOf(scrypt(v.password, v.salt, { ...options, dkLen: 64 }))).toBe(v.dk);
  });
});

describe.each(file.vectors.map((v) => [v.name, v] as const))("%s", (_name, v) => {
  const { setting } = v;
  const salt = Buffer.from(setting.salt, "base64");
  // FORMAT §4.4: the bytes the KDF reads are UTF-8 of the NFC form, whatever form was given.
  const input = Buffer.from(v.passphraseNfcUtf8, "hex");

  it("the KDF input is UTF-8 of the NFC form of the passphrase", () => {
    expect(Buffer.from(v.passphrase.normalize("NFC"), "utf8").equals(input)).toBe(true);
    expect(salt.length).toBe(16);
  });

  it("fromPassphrase derives the known root key and createKms stores its id", async () => {
    const store = new MemoryKeyStore();
    await store.putSettingIfAbsent("root-key-kdf", JSON.stringify(setting));
    const source = RootKeySource.fromPassphrase(v.passphrase, { kdf: setting.kdf });
    let loaded = "";
    await createKms({
      store,
      rootKey: {
        description: source.description,
        load: async (s) => {
          const key = await source.load(s);
          loaded = hexOf(key);
          return key;
        },
      },
    });
    expect(loaded).toBe(v.rootKey);
    expect(await store.getSetting("root-key-id")).toBe(v.rootKeyId);
    expect(rootKeyId(Buffer.from(v.rootKey, "hex"))).toBe(v.rootKeyId);
  });

  it("independent implementations derive the same root key from the spec's bytes", () => {
    const derived: Uint8Array[] = [];
    if (setting.kdf === "scrypt") {
      const { n, r, p } = setting;
      derived.push(scryptSync(input, salt, 32, { N: n, r, p, maxmem: 256 * n * r }));
      derived.push(scrypt(input, salt, { N: n, r, p, dkLen: 32, maxmem: 256 * n * r }));
    } else {
      derived.push(argon2id(input, salt, { t: setting.t, m: setting.m, p: setting.p, dkLen: 32 }));
      if (nodeArgon2) derived.push(nodeArgon2id(input, salt, setting, 32));
    }
    for (const key of derived) expect(hexOf(key)).toBe(v.rootKey);
  });

  // Argon2id runs in JavaScript and takes seconds: the refusal is checked with scrypt only, as
  // it does not depend on the KDF.
  if (v.passphrase !== v.passphrase.normalize("NFC") || setting.kdf === "scrypt") {
    it("the NFC spelling of the text opens the same store; another text does not", async () => {
      const store = new MemoryKeyStore();
      await store.putSettingIfAbsent("root-key-kdf", JSON.stringify(setting));
      await store.putSettingIfAbsent("root-key-id", v.rootKeyId);
      const nfc = v.passphrase.normalize("NFC");
      if (nfc !== v.passphrase) {
        await expect(
          createKms({ store, rootKey: RootKeySource.fromPassphrase(nfc, { kdf: setting.kdf }) }),
        ).resolves.toBeDefined();
      }
      if (setting.kdf === "scrypt") {
        await expect(
          createKms({
            store,
            rootKey: RootKeySource.fromPassphrase(`${nfc}.`, { kdf: setting.kdf }),
          }),
        ).rejects.toBeInstanceOf(RootKeyError);
      }
    });
  }
});

describe("normalization is part of the format", () => {
  const nfd = file.vectors.find(
    (v) => v.setting.kdf === "scrypt" && v.passphrase !== v.passphrase.normalize("NFC"),
  )!;

  it("hashing the NFD bytes as given would derive another root key", () => {
    expect(nfd.passphrase).toBe(nfd.passphrase.normalize("NFD"));
    const { n, r, p } = nfd.setting as ScryptSetting;
    const salt = Buffer.from(nfd.setting.salt, "base64");
    const literal = scryptSync(Buffer.from(nfd.passphrase, "utf8"), salt, 32, {
      N: n,
      r,
      p,
      maxmem: 256 * n * r,
    });
    expect(hexOf(literal)).not.toBe(nfd.rootKey);
  });

  it("NFC, not NFKC: U+212B ANGSTROM SIGN is Å, but the ligature U+FB01 stays apart from fi", async () => {
    const setting = nfd.setting;
    const store = new MemoryKeyStore();
    await store.putSettingIfAbsent("root-key-kdf", JSON.stringify(setting));
    const load = async (passphrase: string) =>
      hexOf(await RootKeySource.fromPassphrase(passphrase, { kdf: setting.kdf }).load(store));
    const nfc = nfd.passphrase.normalize("NFC");
    expect(await load(nfc.replace("\u00C5", "\u212B"))).toBe(nfd.rootKey);
    expect(await load(`${nfc} \uFB01`)).not.toBe(await load(`${nfc} fi`));
  });
});
