/** Round trips across frame boundaries for every API (docs/FORMAT.md §5.2, §5.5). */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createDecryptStream,
  createEncryptStream,
  decryptMessage,
  decryptTransformStream,
  encryptMessage,
  encryptTransformStream,
  type MessageSuite,
  ValidationError,
} from "../../src/index.ts";
import { aesKeyring, split, throughNode, throughWeb } from "./helpers.ts";

const keyring = aesKeyring();
const context = { tenant: "acme", purpose: "round-trip" };

function sizesAround(frame: number): number[] {
  return [0, 1, frame - 1, frame, frame + 1, 2 * frame, 2 * frame + 1, 7 * frame + 3];
}

const encrypters = {
  "one-shot": async (
    pt: Uint8Array,
    frameLength: number,
    suite: MessageSuite,
    chunks: number[],
  ) => {
    void chunks;
    return encryptMessage(pt, { keyring, encryptionContext: context, frameLength, suite });
  },
  "node stream": (pt: Uint8Array, frameLength: number, suite: MessageSuite, chunks: number[]) =>
    throughNode(
      createEncryptStream({ keyring, encryptionContext: context, frameLength, suite }),
      split(pt, chunks),
    ),
  "web stream": (pt: Uint8Array, frameLength: number, suite: MessageSuite, chunks: number[]) =>
    throughWeb(
      encryptTransformStream({ keyring, encryptionContext: context, frameLength, suite }),
      split(pt, chunks),
    ),
};

const decrypters = {
  "one-shot": async (m: Uint8Array, chunks: number[]) => {
    void chunks;
    return (await decryptMessage(m, { keyring, encryptionContext: context })).plaintext;
  },
  "node stream": (m: Uint8Array, chunks: number[]) =>
    throughNode(createDecryptStream({ keyring, encryptionContext: context }), split(m, chunks)),
  "web stream": (m: Uint8Array, chunks: number[]) =>
    throughWeb(decryptTransformStream({ keyring, encryptionContext: context }), split(m, chunks)),
};

describe.each(Object.keys(encrypters) as (keyof typeof encrypters)[])("encrypt: %s", (enc) => {
  describe.each(Object.keys(decrypters) as (keyof typeof decrypters)[])("decrypt: %s", (dec) => {
    it("round-trips sizes around frame boundaries with random chunking", async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 64 }),
          fc.integer({ min: 0, max: 7 }),
          fc.array(fc.nat({ max: 600 }), { maxLength: 12 }),
          fc.array(fc.nat({ max: 900 }), { maxLength: 12 }),
          async (frame, which, plainCuts, messageCuts) => {
            const size = sizesAround(frame)[which]!;
            const plaintext = randomBytes(size);
            const message = await encrypters[enc](
              plaintext,
              frame,
              "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
              plainCuts,
            );
            const back = await decrypters[dec](message, messageCuts);
            expect(Buffer.from(back).equals(plaintext)).toBe(true);
          },
        ),
        { numRuns: 40 },
      );
    });
  });
});

describe("encoding is independent of chunking", () => {
  it("one-shot and streamed messages of the same plaintext have the same frame structure", async () => {
    for (const size of sizesAround(16)) {
      const plaintext = randomBytes(size);
      const one = await encryptMessage(plaintext, { keyring, frameLength: 16 });
      const streamed = await throughNode(
        createEncryptStream({ keyring, frameLength: 16 }),
        split(plaintext, [1, 5, 16, 17, 40]),
      );
      expect(streamed.length).toBe(one.length);
    }
  });
});

describe.each([
  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
] as const)("signing suite %s", (suite) => {
  it("round-trips through every API", async () => {
    for (const size of sizesAround(32)) {
      const plaintext = randomBytes(size);
      for (const enc of Object.values(encrypters)) {
        const message = await enc(plaintext, 32, suite, [3, 50]);
        for (const dec of Object.values(decrypters)) {
          expect(Buffer.from(await dec(message, [7, 100, 101])).equals(plaintext)).toBe(true);
        }
      }
    }
  });

  it("exposes the public key in the context and hides it from the exact-context check", async () => {
    const message = await encryptMessage(randomBytes(10), {
      keyring,
      encryptionContext: context,
      suite,
    });
    const out = await decryptMessage(message, { keyring, encryptionContext: context });
    expect(out.suite).toBe(suite);
    expect(out.encryptionContext["kms-message:public-key"]).toMatch(/^[A-Za-z0-9+/]+=*$/);
  });
});

describe("web streams take Uint8Array chunks only", () => {
  const junk = [
    ["an ArrayBuffer", new Uint8Array([1, 2, 3]).buffer],
    ["a string", "abc"],
  ] as const;

  it.each(junk)(
    "the encrypt stream fails on %s instead of encrypting nothing",
    async (_n, chunk) => {
      await expect(
        throughWeb(encryptTransformStream({ keyring }), [chunk as unknown as Uint8Array]),
      ).rejects.toBeInstanceOf(ValidationError);
    },
  );

  it.each(junk)("the decrypt stream fails on %s with ValidationError", async (_n, chunk) => {
    const message = await encryptMessage(randomBytes(100), { keyring });
    // Before the header (the keyring is not called yet) and after it.
    for (const chunks of [[chunk], [message.subarray(0, message.length - 1), chunk]]) {
      await expect(
        throughWeb(decryptTransformStream({ keyring }), chunks as unknown as Uint8Array[]),
      ).rejects.toBeInstanceOf(ValidationError);
    }
  });
});

describe("defaults and header info", () => {
  it("uses 1 MiB frames for one-shot messages and reports the header", async () => {
    const plaintext = randomBytes(200_000);
    const message = await encryptMessage(plaintext, { keyring, encryptionContext: context });
    const out = await decryptMessage(message, { keyring });
    expect(out.frameLength).toBe(1_048_576);
    expect(out.suite).toBe("AES_256_GCM_HKDF_SHA512_COMMIT_KEY");
    expect(out.encryptionContext).toEqual(context);
    expect(out.messageId.length).toBe(32);
    expect(out.encryptedDataKeys).toEqual([{ providerId: "test", providerInfo: "k1" }]);
    // Overhead is the header plus 20 bytes per regular frame and 28 for the final one.
    expect(message.length - plaintext.length).toBeLessThan(400);
  });

  it("uses 64 KiB frames for streams, which hold one frame", async () => {
    const plaintext = randomBytes(200_000);
    const message = await throughNode(createEncryptStream({ keyring }), [plaintext]);
    const out = await decryptMessage(message, { keyring });
    expect(out.frameLength).toBe(65_536);
    expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
    // Three regular frames of 20 bytes' overhead and a final one of 28.
    const oneShot = await encryptMessage(plaintext, { keyring });
    expect(message.length - oneShot.length).toBe(3 * 20);
  });

  it("gives two encryptions of the same plaintext different message ids and bytes", async () => {
    const plaintext = randomBytes(100);
    const a = await encryptMessage(plaintext, { keyring });
    const b = await encryptMessage(plaintext, { keyring });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it("emits a 'header' event on the Node decrypt stream before plaintext", async () => {
    const message = await encryptMessage(randomBytes(100), { keyring, encryptionContext: context });
    const stream = createDecryptStream({ keyring });
    const events: string[] = [];
    stream.on("header", () => events.push("header"));
    stream.on("data", () => events.push("data"));
    await throughNode(stream, [message]);
    expect(events[0]).toBe("header");
  });
});
