/**
 * GenerateDataKey and GenerateDataKeyWithoutPlaintext draw a data key's plaintext in the KMS's
 * memory. WithoutPlaintext never hands it out, so it is zeroed before the call returns; either
 * operation zeroes it when sealing it under the KMS key fails, as nobody receives it then.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { KmsInternalError } from "../../src/index.ts";
import { createKms, type Kms } from "../../src/kms.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

/** createKms with a symmetric key, the SoftwareHsm it opened, and the data keys drawn. */
async function setup(): Promise<{
  kms: Kms;
  hsm: SoftwareHsm;
  keyId: string;
  drawn: Uint8Array[];
}> {
  const open = vi.spyOn(SoftwareHsm, "open");
  const kms = await createKms({ audit: false });
  const hsm = (await open.mock.results[0]!.value) as SoftwareHsm;
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const drawn: Uint8Array[] = [];
  const getRandomValues = globalThis.crypto.getRandomValues.bind(globalThis.crypto);
  vi.spyOn(globalThis.crypto, "getRandomValues").mockImplementation(
    <T extends ArrayBufferView | null>(array: T): T => {
      const filled = getRandomValues(array as never) as T;
      if (filled instanceof Uint8Array) drawn.push(filled);
      return filled;
    },
  );
  return { kms, hsm, keyId, drawn };
}

const zeroed = (bytes: Uint8Array): boolean => bytes.every((b) => b === 0);

describe("data key plaintext in the KMS's memory", () => {
  it("WithoutPlaintext zeroes the key it sealed; GenerateDataKey hands the same bytes out", async () => {
    const { kms, keyId, drawn } = await setup();
    await kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256" });
    expect(drawn).toHaveLength(1);
    expect(drawn[0]).toHaveLength(32);
    expect(zeroed(drawn[0]!)).toBe(true);

    const { plaintext } = await kms.generateDataKey({ keyId, keySpec: "AES_256" });
    expect(drawn).toHaveLength(2);
    expect(drawn[1]).toBe(plaintext);
    expect(zeroed(plaintext)).toBe(false);
    await kms.close();
  });

  it.each(["generateDataKey", "generateDataKeyWithoutPlaintext"] as const)(
    "%s zeroes the key when sealing it fails",
    async (operation) => {
      const { kms, hsm, keyId, drawn } = await setup();
      vi.spyOn(hsm, "encryptToBlob").mockImplementation(() => {
        throw new KmsInternalError("the HSM failed");
      });
      await expect(kms[operation]({ keyId, numberOfBytes: 64 })).rejects.toThrow(KmsInternalError);
      expect(drawn).toHaveLength(1);
      expect(drawn[0]).toHaveLength(64);
      expect(zeroed(drawn[0]!)).toBe(true);
      vi.restoreAllMocks();
      await kms.close();
    },
  );
});
