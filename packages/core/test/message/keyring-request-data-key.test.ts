/**
 * A keyring's `encryptDataKey` is public (`Keyring` is how callers compose keyrings of their
 * own), so it checks the data key a request brings before wrapping it (docs/FORMAT.md §5.3: the
 * data key is 32 bytes). Wrapped as it came, a key of another length gave a copy that never
 * opens, found out only when the copy is needed; and a refused request must leave no key it
 * generated behind.
 */
import { generateKeyPairSync } from "node:crypto";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  createKms,
  type Keyring,
  KmsKeyring,
  MultiKeyring,
  RawRsaKeyring,
  ValidationError,
} from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

/** Every buffer the library's CSPRNG handed out, to see whether a data key was generated. */
const drawn = vi.hoisted(() => [] as Uint8Array[]);
vi.mock("../../src/hsm/random.ts", async (original) => {
  const real = await original<typeof import("../../src/hsm/random.ts")>();
  return {
    ...real,
    randomBytes: (length: number): Uint8Array => {
      const bytes = real.randomBytes(length);
      drawn.push(bytes);
      return bytes;
    },
  };
});

afterEach(() => {
  drawn.length = 0;
});

const context = { tenant: "acme" };
const keyrings: [string, () => Keyring][] = [];

beforeAll(async () => {
  const kms = await createKms();
  const { keyId } = (await kms.createKey()).keyMetadata;
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  keyrings.push(
    ["RawAesKeyring", () => aesKeyring()],
    [
      "RawRsaKeyring",
      () => new RawRsaKeyring({ keyNamespace: "test", keyName: "rsa", privateKey }),
    ],
    ["KmsKeyring", () => new KmsKeyring({ kms, keyIds: [keyId] })],
    ["MultiKeyring without a generator", () => new MultiKeyring({ children: [aesKeyring()] })],
  );
});

describe("encryptDataKey refuses a request's data key that is not 32 bytes (§5.3)", () => {
  it.each([
    ["16 bytes", new Uint8Array(16).fill(7)],
    ["48 bytes", new Uint8Array(48).fill(7)],
    ["empty", new Uint8Array(0)],
    ["a 32-character string", "k".repeat(32)],
  ])("%s, in every keyring", async (_name, dataKey) => {
    for (const [name, make] of keyrings) {
      const request = { encryptionContext: context, suiteId: 1, dataKey } as never;
      await expect(make().encryptDataKey(request), name).rejects.toThrow(ValidationError);
      await expect(make().encryptDataKey(request), name).rejects.toThrow(/"dataKey"/);
    }
  });

  it("a 32-byte key is wrapped as before, and its copy opens to it", async () => {
    for (const [name, make] of keyrings) {
      const keyring = make();
      const dataKey = new Uint8Array(32).fill(9);
      const wrapped = await keyring.encryptDataKey({
        encryptionContext: context,
        suiteId: 1,
        dataKey,
      });
      expect(wrapped.dataKey, name).toBe(dataKey);
      const opened = await keyring.decryptDataKey({
        encryptionContext: context,
        suiteId: 1,
        encryptedDataKeys: wrapped.encryptedDataKeys,
      });
      expect(opened && Buffer.from(opened).equals(Buffer.from(dataKey)), name).toBe(true);
    }
  });
});

describe("RawAesKeyring.encryptDataKey with a malformed context", () => {
  it("refuses before generating a data key, so none is left in memory unzeroed", async () => {
    const keyring = aesKeyring();
    drawn.length = 0;
    await expect(
      keyring.encryptDataKey({ encryptionContext: { tenant: 1 } as never, suiteId: 1 }),
    ).rejects.toThrow(ValidationError);
    const keys = drawn.filter((bytes) => bytes.length === 32);
    expect(keys.every((key) => key.every((byte) => byte === 0))).toBe(true);
  });

  it("the same call with a good context does generate one (the spy sees it)", async () => {
    const keyring = aesKeyring();
    drawn.length = 0;
    const { dataKey } = await keyring.encryptDataKey({ encryptionContext: context, suiteId: 1 });
    expect(drawn.some((bytes) => bytes === dataKey)).toBe(true);
  });
});
