/** Headers that arrive in small pieces (docs/FORMAT.md §5.6): correct, and copied in linear time. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  decryptMessage,
  encryptMessage,
  InvalidCiphertextError,
  type Keyring,
} from "../../src/index.ts";
import { MessageDecryptor } from "../../src/message/decryptor.ts";
import { parseHeader } from "../../src/message/format.ts";
import { aesKeyring } from "./helpers.ts";

const PADDING_KEYS = 15;
const inner = aesKeyring();

/** Adds 15 unusable 64 KiB copies to every message: a header of about 1 MiB. */
const bulkyKeyring: Keyring = {
  identity: "bulky",
  async encryptDataKey(request) {
    const result = await inner.encryptDataKey(request);
    const padding = Array.from({ length: PADDING_KEYS }, (_, i) => ({
      providerId: "padding",
      providerInfo: `copy-${i}`,
      ciphertext: new Uint8Array(65_535).fill(i),
    }));
    return {
      dataKey: result.dataKey,
      encryptedDataKeys: [...result.encryptedDataKeys, ...padding],
    };
  },
  decryptDataKey: (request) => inner.decryptDataKey(request),
};

const context = { tenant: "acme" };

async function feed(
  decryptor: MessageDecryptor,
  message: Uint8Array,
  size: number,
): Promise<Uint8Array> {
  const parsed = parseHeader(message, 65_535);
  const headerLength = parsed.header === undefined ? 0 : parsed.length;
  const out: Uint8Array[] = [];
  // Header chunks come from one scratch buffer, overwritten after every call: the decryptor must
  // keep its own copy of a header it has not finished reading. (Body chunks are kept as views,
  // as documented, so they are fresh.)
  const scratch = new Uint8Array(size);
  for (let at = 0; at < message.length; at += size) {
    const piece = message.subarray(at, at + size);
    if (at + piece.length < headerLength) {
      scratch.set(piece);
      out.push(...(await decryptor.update(scratch.subarray(0, piece.length))));
      scratch.fill(0xee);
    } else {
      out.push(...(await decryptor.update(piece.slice())));
    }
  }
  decryptor.final();
  return new Uint8Array(Buffer.concat(out));
}

describe("a header in small chunks", () => {
  it("reports a lower bound of the bytes it needs, never past the header's end", async () => {
    const message = await encryptMessage(randomBytes(10), {
      keyring: aesKeyring(),
      encryptionContext: { tenant: "acme", region: "eu" },
    });
    const whole = parseHeader(message, 16);
    expect(whole.header).toBeDefined();
    const length = (whole as { length: number }).length;
    for (let cut = 0; cut < length; cut++) {
      const parsed = parseHeader(message.subarray(0, cut), 16);
      expect(parsed.header).toBeUndefined();
      const needed = (parsed as { needed: number }).needed;
      expect(needed).toBeGreaterThan(cut);
      expect(needed).toBeLessThanOrEqual(length);
    }
  });

  it("decrypts a 1 MiB header fed one byte at a time, from a reused buffer", async () => {
    const plaintext = randomBytes(3000);
    const message = await encryptMessage(plaintext, {
      keyring: bulkyKeyring,
      encryptionContext: context,
      frameLength: 1024,
    });
    expect(message.length).toBeGreaterThan(PADDING_KEYS * 65_535);
    // Re-concatenating the header for every chunk made this ~10^12 byte copies.
    const decryptor = new MessageDecryptor({ keyring: bulkyKeyring, encryptionContext: context });
    expect(await feed(decryptor, message, 1)).toEqual(new Uint8Array(plaintext));
    expect(decryptor.info?.encryptedDataKeys).toHaveLength(PADDING_KEYS + 1);
  }, 60_000);

  it("decrypts at every chunk size that splits the header differently", async () => {
    const plaintext = randomBytes(100);
    const message = await encryptMessage(plaintext, { keyring: inner, encryptionContext: context });
    for (const size of [1, 2, 3, 5, 7, 31, 64, 255, 256, 257, message.length]) {
      const decryptor = new MessageDecryptor({ keyring: inner, encryptionContext: context });
      expect(await feed(decryptor, message, size)).toEqual(new Uint8Array(plaintext));
    }
  });

  it("still refuses a tampered header byte and too many copies when they arrive in pieces", async () => {
    const message = await encryptMessage(randomBytes(100), {
      keyring: bulkyKeyring,
      encryptionContext: context,
    });
    const tampered = new Uint8Array(message);
    tampered[40_000] = tampered[40_000]! ^ 1;
    await expect(
      feed(
        new MessageDecryptor({ keyring: bulkyKeyring, encryptionContext: context }),
        tampered,
        997,
      ),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      feed(
        new MessageDecryptor({ keyring: bulkyKeyring, policy: { maxEncryptedDataKeys: 4 } }),
        message,
        13,
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(decryptMessage(message, { keyring: bulkyKeyring })).resolves.toBeDefined();
  });
});
