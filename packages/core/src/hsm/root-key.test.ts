import { execFileSync } from "node:child_process";
import { randomBytes, scryptSync } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { RootKeyError } from "../errors.ts";
import { MemoryKeyStore } from "../keystore/memory-key-store.ts";
import { createKms } from "../kms.ts";
import { MAX_ROOT_KEY_FILE_BYTES, ROOT_KEY_LENGTH, RootKeySource } from "./root-key.ts";

const dir = mkdtempSync(join(tmpdir(), "kms-root-key-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ENV = "KMS_TEST_ROOT_KEY_VAR";
afterEach(() => {
  delete process.env[ENV];
  vi.restoreAllMocks();
});

/** Creates a store under `root`, encrypts one value, and returns what a reopen must decrypt. */
async function seededStore(root: Uint8Array) {
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: RootKeySource.fromBytes(root) });
  const { keyMetadata } = await kms.createKey();
  const plaintext = new TextEncoder().encode("reopen me");
  const { ciphertextBlob } = await kms.encrypt({ keyId: keyMetadata.keyId, plaintext });
  return { store, keyId: keyMetadata.keyId, ciphertextBlob, plaintext };
}

async function expectReopens(
  source: RootKeySource,
  seeded: Awaited<ReturnType<typeof seededStore>>,
) {
  const kms = await createKms({ store: seeded.store, rootKey: source });
  const { plaintext } = await kms.decrypt({ ciphertextBlob: seeded.ciphertextBlob });
  expect(Buffer.from(plaintext).equals(Buffer.from(seeded.plaintext))).toBe(true);
}

describe("RootKeySource.fromBytes", () => {
  it("rejects anything but 32 bytes with RootKeyError", () => {
    for (const length of [0, 16, 31, 33, 64]) {
      expect(() => RootKeySource.fromBytes(new Uint8Array(length))).toThrow(RootKeyError);
    }
    expect(() => RootKeySource.fromBytes("00".repeat(32) as unknown as Uint8Array)).toThrow(
      RootKeyError,
    );
  });

  it("copies the bytes, so wiping the caller's buffer does not change the key", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(Uint8Array.from(root));
    const mine = Uint8Array.from(root);
    const source = RootKeySource.fromBytes(mine);
    mine.fill(0);
    await expectReopens(source, seeded);
  });

  it("createKms accepts raw bytes too, and a wrong length is a RootKeyError", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    await createKms({ store: seeded.store, rootKey: Uint8Array.from(root) });
    await expect(createKms({ rootKey: new Uint8Array(31) })).rejects.toThrow(RootKeyError);
  });
});

describe("RootKeySource.fromEnv", () => {
  it("reads 64 hex digits (surrounding whitespace ignored)", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    process.env[ENV] = `  ${root.toString("hex").toUpperCase()}\n`;
    await expectReopens(RootKeySource.fromEnv(ENV), seeded);
  });

  it("reads base64", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    process.env[ENV] = root.toString("base64");
    await expectReopens(RootKeySource.fromEnv(ENV), seeded);
  });

  it("reads a given environment object instead of process.env", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    delete process.env[ENV];
    await expectReopens(RootKeySource.fromEnv(ENV, { [ENV]: root.toString("hex") }), seeded);
    await expect(createKms({ rootKey: RootKeySource.fromEnv(ENV, {}) })).rejects.toThrow(
      new RegExp(`${ENV} holds no root key`),
    );
  });

  it("a missing or empty variable is a RootKeyError naming the variable", async () => {
    await expect(createKms({ rootKey: RootKeySource.fromEnv(ENV) })).rejects.toThrow(
      new RegExp(`${ENV} holds no root key`),
    );
    process.env[ENV] = "";
    await expect(createKms({ rootKey: RootKeySource.fromEnv(ENV) })).rejects.toBeInstanceOf(
      RootKeyError,
    );
  });

  it.each([
    ["63 hex digits", "a".repeat(63)],
    ["65 hex digits", "a".repeat(65)],
    ["16 bytes of base64", Buffer.alloc(16, 7).toString("base64")],
    ["33 bytes of base64", Buffer.alloc(33, 7).toString("base64")],
    ["not an encoding at all", "correct horse battery staple"],
  ])("a malformed value (%s) is a RootKeyError that does not echo it", async (_, value) => {
    process.env[ENV] = value;
    const error = await createKms({ rootKey: RootKeySource.fromEnv(ENV) }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toContain(ENV);
    expect(error.message).not.toContain(value);
  });

  it("reads the variable when the store is opened, not when the source is made", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    const source = RootKeySource.fromEnv(ENV);
    process.env[ENV] = root.toString("hex");
    await expectReopens(source, seeded);
  });
});

describe("RootKeySource.fromFile", () => {
  it("reads hex or base64 from a file", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    const hexFile = join(dir, "root.hex");
    const b64File = join(dir, "root.b64");
    writeFileSync(hexFile, `${root.toString("hex")}\n`);
    writeFileSync(b64File, `${root.toString("base64")}\n`);
    await expectReopens(RootKeySource.fromFile(hexFile), seeded);
    await expectReopens(RootKeySource.fromFile(b64File), seeded);
  });

  it("a missing file or malformed content is a RootKeyError", async () => {
    const missing = join(dir, "does-not-exist");
    const error = await createKms({ rootKey: RootKeySource.fromFile(missing) }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toContain(missing);
    const bad = join(dir, "bad.key");
    writeFileSync(bad, "abcd\n");
    await expect(createKms({ rootKey: RootKeySource.fromFile(bad) })).rejects.toBeInstanceOf(
      RootKeyError,
    );
  });
});

describe("RootKeySource.fromFile: bounded read", () => {
  const posix = process.platform !== "win32";

  it("reads a key with whitespace around it up to the bound, and refuses one byte more", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    const hex = root.toString("hex");
    const atBound = join(dir, "at-bound.key");
    writeFileSync(atBound, `${hex}\n${" ".repeat(MAX_ROOT_KEY_FILE_BYTES - hex.length - 1)}`);
    expect(statSync(atBound).size).toBe(MAX_ROOT_KEY_FILE_BYTES);
    await expectReopens(RootKeySource.fromFile(atBound), seeded);

    // The key in it is valid; the file is refused for its length alone.
    const over = join(dir, "over-bound.key");
    writeFileSync(over, `${hex}\n${" ".repeat(MAX_ROOT_KEY_FILE_BYTES - hex.length)}`);
    const error = await createKms({ rootKey: RootKeySource.fromFile(over) }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toBe(
      `root key file ${over} holds more than 1024 bytes: it must hold only 64 hex digits or base64 of 32 bytes`,
    );
  });

  it.runIf(existsSync("/dev/zero"))(
    "refuses a directory or device by what it is, before reading it (/dev/zero never ends)",
    async () => {
      for (const [path, kind] of [
        ["/dev/zero", "a character device"],
        ["/dev/null", "a character device"],
        [dir, "a directory"],
      ]) {
        const error = await createKms({ rootKey: RootKeySource.fromFile(path as string) }).catch(
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(RootKeyError);
        expect((error as Error).message).toBe(
          `root key file ${path} is ${kind}, not a regular file or FIFO: put the key in a file (mode 0600)`,
        );
      }
    },
  );

  it.runIf(posix)(
    "onSharedMode hears of a key file open to others, once the key is read",
    async () => {
      const root = randomBytes(ROOT_KEY_LENGTH);
      const seeded = await seededStore(root);
      const shared = join(dir, "shared.key");
      writeFileSync(shared, `${root.toString("hex")}\n`, { mode: 0o640 });
      chmodSync(shared, 0o640);
      const modes: number[] = [];
      await expectReopens(
        RootKeySource.fromFile(shared, { onSharedMode: (mode) => modes.push(mode & 0o777) }),
        seeded,
      );
      expect(modes).toEqual([0o640]);
      const broken = join(dir, "shared-broken.key");
      writeFileSync(broken, "not a key\n", { mode: 0o644 });
      chmodSync(broken, 0o644);
      const heard: number[] = [];
      await expect(
        createKms({
          rootKey: RootKeySource.fromFile(broken, { onSharedMode: (m) => heard.push(m) }),
        }),
      ).rejects.toBeInstanceOf(RootKeyError);
      expect(heard).toEqual([]);
      chmodSync(shared, 0o600);
      await expectReopens(
        RootKeySource.fromFile(shared, { onSharedMode: (mode) => modes.push(mode) }),
        seeded,
      );
      expect(modes).toEqual([0o640]);
    },
  );

  it.runIf(posix)("reads a FIFO (a process substitution) to its end", async () => {
    const root = randomBytes(ROOT_KEY_LENGTH);
    const seeded = await seededStore(root);
    const fifo = join(dir, "root.fifo");
    execFileSync("mkfifo", [fifo]);
    await Promise.all([
      expectReopens(RootKeySource.fromFile(fifo), seeded),
      writeFile(fifo, `${root.toString("hex")}\n`),
    ]);
  });

  it.runIf(posix)(
    "requirePrivateMode refuses a key file others can read; off by default",
    async () => {
      const root = randomBytes(ROOT_KEY_LENGTH);
      const seeded = await seededStore(root);
      const file = join(dir, "shared.key");
      writeFileSync(file, root.toString("hex"));
      chmodSync(file, 0o644);
      await expectReopens(RootKeySource.fromFile(file), seeded);
      const error = await createKms({
        store: seeded.store,
        rootKey: RootKeySource.fromFile(file, { requirePrivateMode: true }),
      }).catch((e) => e);
      expect(error).toBeInstanceOf(RootKeyError);
      expect(error.message).toBe(
        `root key file ${file} is open to other users (mode 644): chmod 600 it`,
      );
      chmodSync(file, 0o600);
      await expectReopens(RootKeySource.fromFile(file, { requirePrivateMode: true }), seeded);
    },
  );
});

describe.each(["scrypt", "argon2id"] as const)("RootKeySource.fromPassphrase (%s)", (kdf) => {
  const passphrase = "a long enough passphrase";

  it("reopens the same store with the same passphrase; the salt lives in the store", async () => {
    const store = new MemoryKeyStore();
    const first = await createKms({
      store,
      rootKey: RootKeySource.fromPassphrase(passphrase, { kdf }),
    });
    const { keyMetadata } = await first.createKey();
    const plaintext = new TextEncoder().encode("passphrase-protected");
    const { ciphertextBlob } = await first.encrypt({ keyId: keyMetadata.keyId, plaintext });

    const settings = JSON.parse((await store.getSetting("root-key-kdf"))!) as {
      kdf: string;
      salt: string;
    };
    expect(settings.kdf).toBe(kdf);
    expect(Buffer.from(settings.salt, "base64")).toHaveLength(16);

    // The stored parameters win over the options of a later source.
    const other = kdf === "scrypt" ? "argon2id" : "scrypt";
    const second = await createKms({
      store,
      rootKey: RootKeySource.fromPassphrase(passphrase, { kdf: other }),
    });
    const opened = await second.decrypt({ ciphertextBlob });
    expect(new TextDecoder().decode(opened.plaintext)).toBe("passphrase-protected");
    expect(await store.getSetting("root-key-kdf")).toBe(JSON.stringify(settings));
  });

  it("a wrong passphrase is a RootKeyError reporting the root key mismatch", async () => {
    const store = new MemoryKeyStore();
    await createKms({ store, rootKey: RootKeySource.fromPassphrase(passphrase, { kdf }) });
    const error = await createKms({
      store,
      rootKey: RootKeySource.fromPassphrase(`${passphrase}!`, { kdf }),
    }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toMatch(/is not the one key store memory was created with/);
    expect(error.message).not.toContain(passphrase);
  });

  it("two stores get different salts, so one passphrase gives different root keys", async () => {
    const a = new MemoryKeyStore();
    const b = new MemoryKeyStore();
    await createKms({ store: a, rootKey: RootKeySource.fromPassphrase(passphrase, { kdf }) });
    await createKms({ store: b, rootKey: RootKeySource.fromPassphrase(passphrase, { kdf }) });
    expect(await a.getSetting("root-key-kdf")).not.toBe(await b.getSetting("root-key-kdf"));
    expect(await a.getSetting("root-key-id")).not.toBe(await b.getSetting("root-key-id"));
  });
});

describe("RootKeySource.fromPassphrase input checks", () => {
  it("rejects passphrases shorter than 12 characters", () => {
    expect(() => RootKeySource.fromPassphrase("short")).toThrow(RootKeyError);
    expect(() => RootKeySource.fromPassphrase(12345678901234 as unknown as string)).toThrow(
      RootKeyError,
    );
  });
});

describe("RootKeySource.fromPassphrase: stored parameters (FORMAT §4 item 4)", () => {
  const passphrase = "a long enough passphrase";
  const salt = Buffer.alloc(16, 1).toString("base64");

  // The setting is not sealed: a store writer can plant it before the store's first use, and
  // the stored parameters win over the source's. Weaker ones would make the passphrase cheap to
  // guess offline (the stored root key id checks each guess); huge ones would exhaust the host.
  const refused: readonly (readonly [string, string, RegExp])[] = [
    [
      "weak scrypt N",
      JSON.stringify({ kdf: "scrypt", salt, n: 1024, r: 8, p: 1 }),
      /"n" expected an integer 131072–1048576, got 1024/,
    ],
    [
      "weak scrypt r",
      JSON.stringify({ kdf: "scrypt", salt, n: 2 ** 17, r: 1, p: 1 }),
      /"r" expected an integer 8–32, got 1/,
    ],
    [
      "weak argon2id",
      JSON.stringify({ kdf: "argon2id", salt, t: 1, m: 8, p: 1 }),
      /"t" expected an integer 3–16, got 1/,
    ],
    [
      "weak argon2id memory",
      JSON.stringify({ kdf: "argon2id", salt, t: 3, m: 1024, p: 1 }),
      /"m" expected an integer 65536–1048576, got 1024/,
    ],
    [
      "another KDF",
      JSON.stringify({ kdf: "pbkdf2", salt }),
      /"kdf" expected "scrypt" or "argon2id", got "pbkdf2"/,
    ],
    ["no KDF", JSON.stringify({ salt }), /"kdf" expected/],
    ["not JSON", "{kdf: scrypt}", /is not JSON/],
    ["a JSON array", "[]", /is not a JSON object/],
    [
      "scrypt N not a power of two",
      JSON.stringify({ kdf: "scrypt", salt, n: 2 ** 17 + 1 }),
      /"n" expected a power of two/,
    ],
    [
      "scrypt over 1 GiB",
      JSON.stringify({ kdf: "scrypt", salt, n: 2 ** 20, r: 16 }),
      /over 1073741824/,
    ],
    [
      "argon2id with endless passes",
      JSON.stringify({ kdf: "argon2id", salt, t: 1e9 }),
      /"t" expected an integer 3–16/,
    ],
    [
      "a fractional p",
      JSON.stringify({ kdf: "scrypt", salt, p: 1.5 }),
      /"p" expected an integer 1–16, got 1.5/,
    ],
    [
      "a short salt",
      JSON.stringify({ kdf: "scrypt", salt: "AAAAAAAAAAA=" }),
      /"salt" expected 16–64 bytes, got 8/,
    ],
    [
      "a salt that is not base64",
      JSON.stringify({ kdf: "scrypt", salt: "not base64!" }),
      /"salt" expected base64/,
    ],
    ["no salt", JSON.stringify({ kdf: "scrypt" }), /"salt" expected base64/],
  ];

  it.each(refused)(
    "%s is a RootKeyError naming the setting, before any derivation",
    async (_, text, rule) => {
      const store = new MemoryKeyStore();
      await store.putSettingIfAbsent("root-key-kdf", text);
      const error = await RootKeySource.fromPassphrase(passphrase)
        .load(store)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RootKeyError);
      expect((error as Error).message).toMatch(/^setting root-key-kdf of key store memory /);
      expect((error as Error).message).toMatch(rule);
      expect((error as Error).message).not.toContain(passphrase);
    },
  );

  it("parameters at the floors this library writes, or above, are used as stored", async () => {
    const store = new MemoryKeyStore();
    await store.putSettingIfAbsent(
      "root-key-kdf",
      JSON.stringify({ kdf: "scrypt", salt, n: 2 ** 18 }),
    );
    const key = await RootKeySource.fromPassphrase(passphrase).load(store);
    const expected = scryptSync(passphrase, Buffer.alloc(16, 1), 32, {
      N: 2 ** 18,
      r: 8,
      p: 1,
      maxmem: 2 ** 29,
    });
    expect(Buffer.from(key).equals(expected)).toBe(true);
  });
});

describe("RootKeySource.devFile", () => {
  it("creates a 0600 key file once, warns about it, and reuses it", async () => {
    const path = join(dir, "nested", "dev-root.key");
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const store = new MemoryKeyStore();
    const first = await createKms({ store, rootKey: RootKeySource.devFile(path) });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toContain(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const text = readFileSync(path, "utf8");
    expect(text.trim()).toMatch(/^[0-9a-f]{64}$/);

    const { keyMetadata } = await first.createKey();
    const { ciphertextBlob } = await first.encrypt({
      keyId: keyMetadata.keyId,
      plaintext: new Uint8Array([1, 2, 3]),
    });
    const second = await createKms({ store, rootKey: RootKeySource.devFile(path) });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(readFileSync(path, "utf8")).toBe(text);
    expect([...(await second.decrypt({ ciphertextBlob })).plaintext]).toEqual([1, 2, 3]);
  });
});

describe("RootKeySource.devFile: bounded read", () => {
  it("refuses an existing key file longer than the bound, even with a valid key in it", async () => {
    const path = join(dir, "long-dev.key");
    writeFileSync(path, `${randomBytes(ROOT_KEY_LENGTH).toString("hex")}${"\n".repeat(2000)}`);
    await expect(createKms({ rootKey: RootKeySource.devFile(path) })).rejects.toThrow(
      /holds more than 1024 bytes/,
    );
  });
});

describe("root key checked against the store", () => {
  it("opening a store with a different root key is a RootKeyError", async () => {
    const seeded = await seededStore(randomBytes(ROOT_KEY_LENGTH));
    const error = await createKms({
      store: seeded.store,
      rootKey: RootKeySource.fromBytes(randomBytes(ROOT_KEY_LENGTH)),
    }).catch((e) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect(error.message).toMatch(/is not the one key store memory was created with/);
  });

  it("a source returning the wrong length is a RootKeyError", async () => {
    const source: RootKeySource = { description: "broken", load: async () => new Uint8Array(16) };
    await expect(createKms({ rootKey: source })).rejects.toThrow(/broken must be 32 bytes/);
  });

  it("a durable store without a root key is a RootKeyError", async () => {
    // createKms defaults to an ephemeral root key only for a MemoryKeyStore instance; a store
    // that is not one (here: one that hides its prototype) must be given a root key.
    const store = new Proxy(new MemoryKeyStore(), { getPrototypeOf: () => Object.prototype });
    await expect(createKms({ store })).rejects.toThrow(/is durable and needs a root key/);
  });
});
