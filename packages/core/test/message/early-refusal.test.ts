/**
 * Refusals that must come before work or memory is spent: option shapes before any keyring
 * call, unfit keyring output before it is cached, header fields as soon as they are read
 * (docs/FORMAT.md §5.6).
 */
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createDecryptStream,
  DataKeyCache,
  decryptFile,
  decryptMessage,
  decryptTransformStream,
  encryptMessage,
  InvalidCiphertextError,
  type Keyring,
  ValidationError,
} from "../../src/index.ts";
import { parseHeader } from "../../src/message/format.ts";
import { aesKeyring } from "./helpers.ts";

const keyring = aesKeyring();
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Writes `bytes` to a decrypt stream; resolves to its error, or undefined while it waits. */
async function streamVerdict(
  bytes: Uint8Array,
  options: Parameters<typeof createDecryptStream>[0],
): Promise<unknown> {
  const stream = createDecryptStream(options);
  let failure: unknown;
  stream.on("error", (error) => {
    failure = error;
  });
  stream.write(bytes);
  await settle();
  stream.destroy();
  return failure;
}

describe("options of the wrong shape are ValidationErrors naming the option", () => {
  const junk: readonly unknown[] = [null, 1, "cache", {}, [], { take: () => undefined }];
  const counting = (): { keyring: Keyring; calls: () => number } => {
    let calls = 0;
    return {
      keyring: {
        identity: keyring.identity,
        encryptDataKey: (request) => {
          calls += 1;
          return keyring.encryptDataKey(request);
        },
        decryptDataKey: (request) => {
          calls += 1;
          return keyring.decryptDataKey(request);
        },
      },
      calls: () => calls,
    };
  };

  it.each(junk.map((value) => ({ value })))(
    "dataKeyCache $value: encrypt and decrypt, before the keyring is called",
    async ({ value }) => {
      const message = await encryptMessage(new Uint8Array(8), { keyring });
      const probe = counting();
      const options = { keyring: probe.keyring, dataKeyCache: value } as never;
      await expect(encryptMessage(new Uint8Array(8), options)).rejects.toThrow(ValidationError);
      await expect(encryptMessage(new Uint8Array(8), options)).rejects.toThrow(/"dataKeyCache"/);
      await expect(decryptMessage(message, options)).rejects.toThrow(/"dataKeyCache"/);
      expect(() => createDecryptStream(options)).toThrow(/"dataKeyCache"/);
      expect(() => decryptTransformStream(options)).toThrow(/"dataKeyCache"/);
      expect(probe.calls()).toBe(0);
    },
  );

  it.each(junk.filter((value) => value !== null).map((value) => ({ value })))(
    "onHeader $value: refused when the decryptor is made, not thrown as a TypeError later",
    async ({ value }) => {
      const message = await encryptMessage(new Uint8Array(8), { keyring });
      const options = { keyring, onHeader: value } as never;
      await expect(decryptMessage(message, options)).rejects.toThrow(/"onHeader"/);
      expect(() => createDecryptStream(options)).toThrow(ValidationError);
      expect(() => createDecryptStream(options)).toThrow(/"onHeader"/);
      expect(() => decryptTransformStream(options)).toThrow(/"onHeader"/);
    },
  );

  it("decryptFile onHeader 1: a ValidationError, not a TypeError from its own wrapper", async () => {
    const message = await encryptMessage(new Uint8Array(8), { keyring });
    const out = new Writable({ write: (_chunk, _encoding, callback) => callback() });
    const options = { in: Readable.from([Buffer.from(message)]), out, keyring, onHeader: 1 };
    await expect(decryptFile(options as never)).rejects.toThrow(/"onHeader"/);
  });

  it("createDecryptStream of a non-object names the options", () => {
    expect(() => createDecryptStream(1 as never)).toThrow(/"options" expected an object/);
  });
});

describe("keyring output that can never fit a header is refused before it is cached", () => {
  it.each([
    ["a ciphertext", { ciphertext: new Uint8Array(0x10000) }],
    ["a provider info", { providerInfo: "i".repeat(0x10000) }],
    ["a provider id", { providerId: "é".repeat(0x8000) }],
  ])("%s over 65535 bytes", async (_name, oversized) => {
    let dataKey: Uint8Array | undefined;
    const oversizing: Keyring = {
      identity: "oversizing",
      encryptDataKey: async () => {
        dataKey = randomBytes(32);
        const copy = { providerId: "p", providerInfo: "i", ciphertext: new Uint8Array(60) };
        return { dataKey, encryptedDataKeys: [{ ...copy, ...oversized }] };
      },
      decryptDataKey: async () => undefined,
    };
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    await expect(
      encryptMessage(new Uint8Array(8), { keyring: oversizing, dataKeyCache: cache }),
    ).rejects.toThrow(/65535 bytes/);
    expect(cache.size).toBe(0);
    expect(dataKey!.every((byte) => byte === 0)).toBe(true);
  });
});

describe("header fields are checked as soon as they are read (FORMAT §5.6)", () => {
  /** Format version, suite 0x0001, a message id, then the context length field. */
  const upToContextLength = (length: number): Uint8Array => {
    const bytes = Buffer.alloc(37);
    bytes[0] = 0x01;
    bytes.writeUInt16BE(0x0001, 1);
    randomBytes(32).copy(bytes, 3);
    bytes.writeUInt16BE(length, 35);
    return bytes;
  };

  it("a context length over 8192 is refused at its length field (§2.5, §5.2)", async () => {
    expect(await streamVerdict(upToContextLength(8193), { keyring })).toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(await streamVerdict(upToContextLength(0xffff), { keyring })).toBeInstanceOf(
      InvalidCiphertextError,
    );
    // 8192 bytes may follow: the stream waits for them.
    expect(await streamVerdict(upToContextLength(8192), { keyring })).toBeUndefined();
  });

  it("maxFrameLength refuses a header whose frame-length field has arrived, not 48 bytes later", async () => {
    const message = await encryptMessage(new Uint8Array(8), { keyring, frameLength: 4096 });
    const parsed = parseHeader(message, 16);
    if (parsed.header === undefined) throw new Error("no header");
    // Frame length (4), commitment (32), tag (16) end the header.
    const throughFrameLength = message.subarray(0, parsed.length - 48);
    expect(Buffer.from(throughFrameLength.subarray(-4)).readUInt32BE(0)).toBe(4096);
    const refused = { keyring, policy: { maxFrameLength: 1024 } };
    expect(await streamVerdict(throughFrameLength, refused)).toBeInstanceOf(AccessDeniedError);
    // One byte short of the field, nothing to decide yet.
    expect(await streamVerdict(throughFrameLength.subarray(0, -1), refused)).toBeUndefined();
    // Allowed, the stream waits for the commitment and tag.
    const allowed = { keyring, policy: { maxFrameLength: 4096 } };
    expect(await streamVerdict(throughFrameLength, allowed)).toBeUndefined();
  });

  it("a frame length of 0 is refused at its field too", async () => {
    const message = await encryptMessage(new Uint8Array(8), { keyring, frameLength: 4096 });
    const parsed = parseHeader(message, 16);
    if (parsed.header === undefined) throw new Error("no header");
    const bytes = Buffer.from(message.subarray(0, parsed.length - 48));
    bytes.writeUInt32BE(0, bytes.length - 4);
    expect(await streamVerdict(bytes, { keyring })).toBeInstanceOf(InvalidCiphertextError);
  });
});
