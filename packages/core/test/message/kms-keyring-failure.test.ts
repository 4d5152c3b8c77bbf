/**
 * KmsKeyring.encryptDataKey with several keys: when a later key's Encrypt fails, a data key the
 * keyring generated itself is zeroed before the error goes on (nobody else holds it, and it will
 * never protect anything); a key the caller brought (a MultiKeyring's) is left to the caller.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  DisabledError,
  encryptMessage,
  type Kms,
  KmsKeyring,
  type KmsLike,
} from "../../src/index.ts";

let kms: Kms;
let enabled: string;
let disabled: string;
beforeAll(async () => {
  kms = await createKms();
  enabled = (await kms.createKey()).keyMetadata.keyId;
  disabled = (await kms.createKey()).keyMetadata.keyId;
  await kms.disableKey({ keyId: disabled });
});

/** The KMS, keeping every plaintext data key GenerateDataKey returned. */
function recording(): { client: KmsLike; generated: Uint8Array[] } {
  const generated: Uint8Array[] = [];
  const client = {
    generateDataKey: async (...args: Parameters<Kms["generateDataKey"]>) => {
      const result = await kms.generateDataKey(...args);
      generated.push(result.plaintext);
      return result;
    },
    encrypt: (...args: Parameters<Kms["encrypt"]>) => kms.encrypt(...args),
    decrypt: (...args: Parameters<Kms["decrypt"]>) => kms.decrypt(...args),
  } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
  return { client, generated };
}

describe("KmsKeyring when a later Encrypt fails", () => {
  it("zeroes the data key it generated", async () => {
    const { client, generated } = recording();
    const keyring = new KmsKeyring({ kms: client, keyIds: [enabled, disabled] });
    await expect(encryptMessage(new Uint8Array(1), { keyring })).rejects.toBeInstanceOf(
      DisabledError,
    );
    expect(generated).toHaveLength(1);
    expect(generated[0]!.every((byte) => byte === 0)).toBe(true);
  });

  it("leaves a data key the request brought alone", async () => {
    const keyring = new KmsKeyring({ kms, keyIds: [enabled, disabled] });
    const dataKey = new Uint8Array(32).fill(9);
    await expect(
      keyring.encryptDataKey({ encryptionContext: {}, suiteId: 1, dataKey }),
    ).rejects.toBeInstanceOf(DisabledError);
    expect(dataKey.every((byte) => byte === 9)).toBe(true);
  });

  it("still returns the generated key when every Encrypt succeeds", async () => {
    const { client, generated } = recording();
    const other = (await kms.createKey()).keyMetadata.keyId;
    const keyring = new KmsKeyring({ kms: client, keyIds: [enabled, other] });
    const result = await keyring.encryptDataKey({ encryptionContext: {}, suiteId: 1 });
    expect(result.dataKey).toBe(generated[0]);
    expect(result.dataKey.some((byte) => byte !== 0)).toBe(true);
    expect(result.encryptedDataKeys).toHaveLength(2);
  });
});
