/**
 * Root key bytes in memory, found in review: `Buffer.from(text, "hex" | "base64")` decodes a
 * 32-byte key into Node's shared allocation pool, which every later `Buffer.allocUnsafe` of the
 * process hands out again, and nothing wiped it there; scrypt's output was copied and the
 * original left holding the passphrase root key.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { rotateRootKey } from "../../src/hsm/root-key-rotation.ts";
import { MemoryKeyStore } from "../../src/keystore/memory-key-store.ts";
import { createKms } from "../../src/kms.ts";

const scryptOutputs = vi.hoisted(() => [] as Uint8Array[]);
vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  return {
    ...actual,
    scryptSync: (...args: Parameters<typeof actual.scryptSync>) => {
      const out = actual.scryptSync(...args);
      scryptOutputs.push(out);
      return out;
    },
  };
});

const dir = mkdtempSync(join(tmpdir(), "kms-root-key-memory-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.restoreAllMocks();
});

/** The memory of Node's current Buffer pool. */
function currentPool(): Buffer {
  const probe = Buffer.allocUnsafe(1);
  return Buffer.from(probe.buffer);
}

/** A Buffer over `bytes` without copying them (Buffer.from(bytes) copies into the pool). */
function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Whether the pool holds `secret`. */
function poolHolds(secret: Uint8Array): boolean {
  return currentPool().includes(view(secret));
}

/** 32 random-looking bytes, made without touching the pool. */
function secretKey(seed: number): Uint8Array {
  return Uint8Array.from({ length: 32 }, (_, i) => (seed * 31 + i * 97 + 13) & 0xff);
}

/** Hex or base64 of `key` without a pooled copy of its bytes. */
function encode(key: Uint8Array, encoding: "hex" | "base64"): string {
  return view(key).toString(encoding);
}

/** Hex text to bytes, without Buffer.from (which would leave a copy in the pool). */
function fromHex(text: string): Uint8Array {
  return Uint8Array.from({ length: text.length / 2 }, (_, i) =>
    Number.parseInt(text.slice(2 * i, 2 * i + 2), 16),
  );
}

describe("no copy of the root key is left in Node's Buffer pool", () => {
  it.each(["hex", "base64"] as const)("fromEnv, %s", async (encoding) => {
    for (let round = 0; round < 8; round++) {
      const key = secretKey(round);
      const env = { KMS_ROOT_KEY: encode(key, encoding) };
      const loaded = await RootKeySource.fromEnv("KMS_ROOT_KEY", env).load(new MemoryKeyStore());
      expect(Buffer.from(loaded.buffer, loaded.byteOffset, 32).equals(view(key))).toBe(true);
      expect(poolHolds(key), `round ${round}`).toBe(false);
    }
  });

  it("fromFile", async () => {
    const key = secretKey(99);
    const path = join(dir, "root.key");
    writeFileSync(path, `${encode(key, "hex")}\n`, { mode: 0o600 });
    await RootKeySource.fromFile(path).load(new MemoryKeyStore());
    expect(poolHolds(key)).toBe(false);
  });

  it("devFile, creating the key", async () => {
    vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const path = join(dir, "dev.key");
    await RootKeySource.devFile(path).load(new MemoryKeyStore());
    const key = fromHex(readFileSync(path, "utf8").trim());
    expect(poolHolds(key)).toBe(false);
  });
});

describe("a passphrase root key", () => {
  it("is wiped where scrypt put it once the HSM has imported it", async () => {
    scryptOutputs.length = 0;
    const kms = await createKms({
      store: new MemoryKeyStore(),
      rootKey: RootKeySource.fromPassphrase("a long enough passphrase"),
      audit: false,
    });
    await kms.createKey({});
    expect(scryptOutputs).toHaveLength(1);
    expect(scryptOutputs[0]!.every((b) => b === 0)).toBe(true);
  });
});

/**
 * Found in review: createKms and rotateRootKey turned root keys given as bytes into
 * `RootKeySource.fromBytes` sources, whose private copy (kept for later loads) nothing wiped once
 * the store was open; and a custom source's key of the wrong length was refused unwiped.
 */
describe("root keys given as bytes leave no unwiped copy behind", () => {
  /** Every array `Uint8Array.from` makes while `run` runs that holds `key`'s bytes. */
  async function copiesMadeDuring(key: Uint8Array, run: () => Promise<unknown>) {
    const made: Uint8Array[] = [];
    const from = Uint8Array.from.bind(Uint8Array) as (source: ArrayLike<number>) => Uint8Array;
    vi.spyOn(Uint8Array, "from").mockImplementation(((source: ArrayLike<number>) => {
      const out = from(source);
      if (out.length === key.length && view(out).equals(view(key))) made.push(out);
      return out;
    }) as typeof Uint8Array.from);
    const outcome = await run().then(
      () => undefined,
      (error: unknown) => error,
    );
    vi.restoreAllMocks();
    return { made, outcome };
  }

  const zeroed = (copies: readonly Uint8Array[]) => copies.every((c) => c.every((b) => b === 0));

  it("createKms, root key and unwrap-only key", async () => {
    const root = secretKey(1);
    const other = secretKey(2);
    const store = new MemoryKeyStore();
    // The caller's buffers are the caller's to wipe: made before looking.
    const mine = { root: Uint8Array.from(root), other: Uint8Array.from(other) };
    const { made, outcome } = await copiesMadeDuring(root, () =>
      createKms({ store, rootKey: mine.root, unwrapRootKeys: [other], audit: false }),
    );
    expect(outcome).toBeUndefined();
    expect(made.length).toBeGreaterThan(0);
    expect(zeroed(made)).toBe(true);
    const second = await copiesMadeDuring(other, () =>
      createKms({ store, rootKey: root, unwrapRootKeys: [mine.other], audit: false }),
    );
    expect(second.made.length).toBeGreaterThan(0);
    expect(zeroed(second.made)).toBe(true);
  });

  it("createKms that fails after copying the key (a bad account)", async () => {
    const root = secretKey(3);
    const { made, outcome } = await copiesMadeDuring(root, () =>
      createKms({ rootKey: root, account: "12", audit: false }),
    );
    expect(outcome).toBeInstanceOf(Error);
    expect(zeroed(made)).toBe(true);
  });

  it("rotateRootKey, both keys", async () => {
    const from = secretKey(4);
    const to = secretKey(5);
    const store = new MemoryKeyStore();
    const kms = await createKms({ store, rootKey: from, audit: false });
    await kms.createKey({});
    const run = () => rotateRootKey({ store, from, to });
    const first = await copiesMadeDuring(from, run);
    expect(first.outcome).toBeUndefined();
    expect(first.made.length).toBeGreaterThan(0);
    expect(zeroed(first.made)).toBe(true);
    const again = await copiesMadeDuring(to, run);
    expect(again.outcome).toBeUndefined();
    expect(again.made.length).toBeGreaterThan(0);
    expect(zeroed(again.made)).toBe(true);
  });

  it.each([31, 33])("a custom source's %i-byte key is wiped as it is refused", async (length) => {
    const given: Uint8Array[] = [];
    const source = (): RootKeySource => ({
      description: "custom",
      load: async () => {
        const key = Uint8Array.from({ length }, (_, i) => 0x55 + i);
        given.push(key);
        return key;
      },
    });
    await expect(createKms({ rootKey: source(), audit: false })).rejects.toThrow(/32 bytes/);
    await expect(
      createKms({ rootKey: secretKey(6), unwrapRootKeys: [source()], audit: false }),
    ).rejects.toThrow(/32 bytes/);
    expect(given).toHaveLength(2);
    expect(zeroed(given)).toBe(true);
  });
});
