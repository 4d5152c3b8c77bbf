import { inspect } from "node:util";
import { createKms, type Kms, KmsError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

/** A plaintext that would be recognisable in any rendering of an error. */
const SECRET = "Tr0ub4dor&3-correct-horse-battery-staple";
const SECRET_BYTES = new TextEncoder().encode(SECRET);

/** Every form in which the plaintext could leak into a string. */
const LEAK_FORMS = [
  SECRET,
  "correct-horse-battery-staple",
  Buffer.from(SECRET_BYTES).toString("hex"),
  Buffer.from(SECRET_BYTES).toString("base64"),
  Buffer.from(SECRET_BYTES).toString("base64url"),
  Array.from(SECRET_BYTES.subarray(0, 12)).join(","),
  Array.from(SECRET_BYTES.subarray(0, 12)).join(", "),
];

let clock: ManualClock;
let kms: Kms;
let keyId: string;
let otherKeyId: string;
let ciphertextBlob: Uint8Array;

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
  keyId = (await kms.createKey()).keyMetadata.keyId;
  otherKeyId = (await kms.createKey()).keyMetadata.keyId;
  ({ ciphertextBlob } = await kms.encrypt({
    keyId,
    plaintext: SECRET_BYTES,
    encryptionContext: { purpose: "hygiene" },
  }));
});

const tampered = () => {
  const copy = Uint8Array.from(ciphertextBlob);
  copy[copy.length - 5]! ^= 0x40;
  return copy;
};

/** Failing calls that had the secret in hand (as plaintext or inside the ciphertext). */
const FAILURES: Record<string, () => Promise<unknown>> = {
  "decrypt with a wrong context": () =>
    kms.decrypt({ ciphertextBlob, encryptionContext: { purpose: "other" } }),
  "decrypt with no context": () => kms.decrypt({ ciphertextBlob }),
  "decrypt with the wrong key": () =>
    kms.decrypt({ ciphertextBlob, keyId: otherKeyId, encryptionContext: { purpose: "hygiene" } }),
  "decrypt of a tampered blob": () =>
    kms.decrypt({ ciphertextBlob: tampered(), encryptionContext: { purpose: "hygiene" } }),
  "decrypt of a truncated blob": () =>
    kms.decrypt({ ciphertextBlob: ciphertextBlob.subarray(0, ciphertextBlob.length - 1) }),
  "decrypt under a disabled key": async () => {
    await kms.disableKey({ keyId });
    return kms.decrypt({ ciphertextBlob, encryptionContext: { purpose: "hygiene" } });
  },
  "decrypt under a key pending deletion": async () => {
    await kms.scheduleKeyDeletion({ keyId });
    return kms.decrypt({ ciphertextBlob, encryptionContext: { purpose: "hygiene" } });
  },
  "decrypt under a destroyed key": async () => {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advanceDays(7);
    return kms.decrypt({ ciphertextBlob, encryptionContext: { purpose: "hygiene" } });
  },
  "reEncrypt with a wrong source context": () =>
    kms.reEncrypt({ ciphertextBlob, destinationKeyId: otherKeyId }),
  "reEncrypt to a disabled destination": async () => {
    await kms.disableKey({ keyId: otherKeyId });
    return kms.reEncrypt({
      ciphertextBlob,
      sourceEncryptionContext: { purpose: "hygiene" },
      destinationKeyId: otherKeyId,
    });
  },
  "reEncrypt with an invalid destination context": () =>
    kms.reEncrypt({
      ciphertextBlob,
      sourceEncryptionContext: { purpose: "hygiene" },
      destinationKeyId: otherKeyId,
      destinationEncryptionContext: { bad: 1 } as never,
    }),
  "encrypt under a disabled key": async () => {
    await kms.disableKey({ keyId });
    return kms.encrypt({ keyId, plaintext: SECRET_BYTES });
  },
  "encrypt under an unknown key": () =>
    kms.encrypt({ keyId: "00000000-0000-4000-8000-000000000000", plaintext: SECRET_BYTES }),
  "encrypt of too much plaintext": () => {
    const big = new Uint8Array(4097);
    for (let i = 0; i + SECRET_BYTES.length <= big.length; i += SECRET_BYTES.length) {
      big.set(SECRET_BYTES, i);
    }
    return kms.encrypt({ keyId, plaintext: big });
  },
  "encrypt of the plaintext as a string": () =>
    kms.encrypt({ keyId, plaintext: SECRET as unknown as Uint8Array }),
  "encrypt of the plaintext as an array": () =>
    kms.encrypt({ keyId, plaintext: Array.from(SECRET_BYTES) as unknown as Uint8Array }),
  "encrypt with a bad algorithm": () =>
    kms.encrypt({ keyId, plaintext: SECRET_BYTES, encryptionAlgorithm: "RSAES_OAEP_SHA_1" }),
  "decrypt with the plaintext as the blob": () => kms.decrypt({ ciphertextBlob: SECRET_BYTES }),
  "generateRandom with the plaintext as the size": () =>
    kms.generateRandom({ numberOfBytes: SECRET as unknown as number }),
};

describe("errors never contain plaintext", () => {
  test.each(Object.keys(FAILURES))("%s", async (name) => {
    const error = await FAILURES[name]!().then(
      () => {
        throw new Error(`${name} was expected to fail`);
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(KmsError);
    const renderings = [
      (error as Error).message,
      String(error),
      (error as Error).stack ?? "",
      JSON.stringify(error),
      inspect(error, { depth: 10, showHidden: true }),
    ];
    for (const rendering of renderings) {
      for (const form of LEAK_FORMS) expect(rendering).not.toContain(form);
    }
  });

  test("the check can fail: a rendering that holds the plaintext is detected", () => {
    const leaky = new Error(`oops ${Buffer.from(SECRET_BYTES).toString("hex")}`);
    expect(LEAK_FORMS.some((form) => inspect(leaky).includes(form))).toBe(true);
  });

  test("decryption failures are generic: context, key and tampering give one message", async () => {
    const messages = new Set<string>();
    for (const name of [
      "decrypt with a wrong context",
      "decrypt with no context",
      "decrypt of a tampered blob",
      "decrypt of a truncated blob",
    ]) {
      const error = (await FAILURES[name]!().catch((e: unknown) => e)) as KmsError;
      expect(error.code).toBe("InvalidCiphertextException");
      messages.add(error.message);
    }
    expect(messages.size).toBe(1);
  });
});
