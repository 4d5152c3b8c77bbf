/**
 * Adversarial review of the message format (docs/FORMAT.md §5): inputs an attacker or a careless
 * caller controls — chunking of the body, the shape of the encryption context, the format's own
 * reserved context keys — and keyring identities that a shared DataKeyCache keys entries by.
 */
import { createCipheriv, randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { encodeEncryptionContext } from "../../src/envelope/encryption-context.ts";
import {
  createDecryptStream,
  createEncryptStream,
  DataKeyCache,
  decryptMessage,
  decryptTransformStream,
  encryptMessage,
  encryptTransformStream,
  InvalidCiphertextError,
  type Keyring,
  MultiKeyring,
  ValidationError,
} from "../../src/index.ts";
import { ByteQueue } from "../../src/message/byte-queue.ts";
import { MessageDecryptor } from "../../src/message/decryptor.ts";
import {
  deriveMessageKey,
  encodeHeader,
  FINAL_FRAME_MARKER,
  KIND_FINAL,
  newFrameAad,
  PUBLIC_KEY_CONTEXT_KEY,
  SUITES,
  setFrameAad,
} from "../../src/message/format.ts";
import { generateSigningKey, newSigner, signatureFooter } from "../../src/message/signature.ts";
import { aesKeyring, throughNode, throughWeb } from "./helpers.ts";

describe("a body that arrives in tiny chunks (pre-authentication cost)", () => {
  it("the queue coalesces small chunks instead of keeping one view per chunk", () => {
    const queue = new ByteQueue();
    const bytes = randomBytes(200_000);
    for (let i = 0; i < bytes.length; i++) queue.push(bytes.subarray(i, i + 1));
    expect(queue.length).toBe(bytes.length);
    // One view per byte was ~200 bytes of heap per byte pushed (1 MiB frame: ~240 MB), and
    // consuming them shifted an array of them per chunk: quadratic in the frame length.
    expect(queue.segments).toBeLessThanOrEqual(Math.ceil(bytes.length / 4096) + 1);
    expect(Buffer.from(queue.take(100_001)).equals(bytes.subarray(0, 100_001))).toBe(true);
    expect(queue.peekUint32(0)).toBe(bytes.readUInt32BE(100_001));
    expect(Buffer.from(queue.take(99_999)).equals(bytes.subarray(100_001))).toBe(true);
    expect(queue.length).toBe(0);
    expect(queue.segments).toBe(0);
  });

  it("the queue keeps large chunks as views and mixes them with coalesced ones in order", () => {
    const queue = new ByteQueue();
    const parts = [1, 5000, 3, 2, 4096, 4095, 1, 70_000, 7].map((n) => randomBytes(n));
    for (const part of parts) queue.push(part);
    const all = Buffer.concat(parts);
    const out: Buffer[] = [];
    for (const n of [3, 5001, 4097, 1, 4095, 10_000, 60_000, 7])
      out.push(Buffer.from(queue.take(n)));
    expect(Buffer.concat(out).equals(all.subarray(0, all.length - 1))).toBe(true);
    expect(queue.length).toBe(1);
    // A run inside one large chunk is still handed out without a copy.
    const big = randomBytes(8192);
    queue.push(big);
    queue.take(1);
    const view = queue.take(4096);
    expect(view.buffer).toBe(big.buffer);
  });

  it("a small chunk is copied, so the caller may reuse its buffer at once", () => {
    const queue = new ByteQueue();
    const scratch = new Uint8Array([1, 2, 3]);
    queue.push(scratch);
    scratch.fill(9);
    expect([...queue.take(3)]).toEqual([1, 2, 3]);
  });

  it("decrypts a 1 MiB frame fed one byte at a time", async () => {
    const keyring = aesKeyring();
    const plaintext = randomBytes(1 << 20);
    const message = await encryptMessage(plaintext, { keyring, frameLength: 1 << 20 });
    const decryptor = new MessageDecryptor({ keyring });
    const out: Uint8Array[] = [];
    for (let at = 0; at < message.length; at++) {
      const chunk = message.slice(at, at + 1);
      out.push(...(decryptor.updateSync(chunk) ?? (await decryptor.update(chunk))));
    }
    decryptor.final();
    expect(Buffer.concat(out).equals(plaintext)).toBe(true);
  }, 60_000);
});

describe("encrypt refuses an encryption context that is not a plain object of strings", () => {
  class Tenant {
    tenant = "acme";
  }
  const shapes: [string, unknown][] = [
    ["a Map", new Map([["tenant", "acme"]])],
    ["a string", "acme"],
    ["an array", ["acme"]],
    ["a class instance", new Tenant()],
    ["null", null],
  ];

  it.each(shapes)("%s (instead of binding no context, or index keys)", async (_name, shape) => {
    let calls = 0;
    const inner = aesKeyring();
    const keyring: Keyring = {
      identity: inner.identity,
      encryptDataKey: (request) => {
        calls++;
        return inner.encryptDataKey(request);
      },
      decryptDataKey: (request) => inner.decryptDataKey(request),
    };
    const options = { keyring, encryptionContext: shape as Record<string, string> };
    const error = /"encryptionContext" expected an object of string pairs/;
    await expect(encryptMessage(randomBytes(10), options)).rejects.toThrow(error);
    await expect(encryptMessage(randomBytes(10), options)).rejects.toBeInstanceOf(ValidationError);
    await expect(throughNode(createEncryptStream(options), [randomBytes(10)])).rejects.toThrow(
      error,
    );
    await expect(throughWeb(encryptTransformStream(options), [randomBytes(10)])).rejects.toThrow(
      error,
    );
    expect(calls).toBe(0);
  });

  it("still accepts plain and null-prototype objects", async () => {
    const keyring = aesKeyring();
    const bare = Object.assign(Object.create(null) as Record<string, string>, { tenant: "acme" });
    for (const encryptionContext of [{ tenant: "acme" }, bare]) {
      const message = await encryptMessage(randomBytes(10), { keyring, encryptionContext });
      const out = await decryptMessage(message, { keyring, encryptionContext: { tenant: "acme" } });
      expect(out.encryptionContext).toEqual({ tenant: "acme" });
    }
  });
});

/**
 * A message with any context, made the way the encryptor would (right key schedule, tags and,
 * for signing suites, a valid signature by the key `publicKey` names): only the reserved keys
 * differ from what the encryptor can write.
 */
async function craft(
  context: Record<string, string>,
  suiteId: number,
): Promise<{ message: Uint8Array; keyring: Keyring; unwraps: () => number }> {
  const inner = aesKeyring();
  let unwraps = 0;
  const keyring: Keyring = {
    identity: inner.identity,
    encryptDataKey: (request) => inner.encryptDataKey(request),
    decryptDataKey: (request) => {
      unwraps++;
      return inner.decryptDataKey(request);
    },
  };
  const suite = SUITES.find((s) => s.id === suiteId)!;
  const signing = suite.signature === undefined ? undefined : generateSigningKey(suite.signature);
  const full = { ...context };
  if (signing !== undefined && !("omit-public-key" in context)) {
    full[PUBLIC_KEY_CONTEXT_KEY] = signing.publicKey;
  }
  delete full["omit-public-key"];
  const { dataKey, encryptedDataKeys } = await inner.encryptDataKey({
    encryptionContext: full,
    suiteId,
  });
  const messageId = randomBytes(32);
  const { key, commitment } = deriveMessageKey(dataKey, messageId, suite);
  const header = encodeHeader(
    {
      suite,
      messageId,
      encryptionContextBytes: encodeEncryptionContext(full),
      encryptedDataKeys,
      frameLength: 64,
      commitment,
    },
    key,
  );
  const plaintext = Buffer.from("hello");
  const iv = Buffer.alloc(12);
  iv.writeUInt32BE(1, 8);
  const aad = newFrameAad(messageId);
  setFrameAad(aad, KIND_FINAL, 1, plaintext.length);
  const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: 16 });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const prefix = Buffer.alloc(12);
  prefix.writeUInt32BE(FINAL_FRAME_MARKER, 0);
  prefix.writeUInt32BE(1, 4);
  prefix.writeUInt32BE(plaintext.length, 8);
  const body = Buffer.concat([header, prefix, ciphertext, cipher.getAuthTag()]);
  if (signing === undefined || suite.signature === undefined) {
    return { message: body, keyring, unwraps: () => unwraps };
  }
  const signer = newSigner(suite.signature);
  signer.update(body);
  const footer = signatureFooter({ signer, key: signing.privateKey, spec: suite.signature });
  const message = Buffer.concat([body, footer]);
  return { message, keyring, unwraps: () => unwraps };
}

describe("reserved context keys (kms-message:) are the format's own (FORMAT §5.8)", () => {
  it("the crafting helper makes messages that decrypt (so the refusals below are the rule)", async () => {
    for (const suiteId of [1, 2, 3]) {
      const { message, keyring } = await craft({ tenant: "acme" }, suiteId);
      const out = await decryptMessage(message, { keyring, encryptionContext: { tenant: "acme" } });
      expect(Buffer.from(out.plaintext).toString()).toBe("hello");
    }
  });

  it.each([
    ["an unsigned message claiming a signer's public key", { [PUBLIC_KEY_CONTEXT_KEY]: "AAAA" }, 1],
    ["an unsigned message with another reserved key", { "kms-message:signed": "yes" }, 1],
    ["a signed message with another reserved key", { "kms-message:signed": "yes" }, 2],
    ["a signed message without its public key", { "omit-public-key": "" }, 3],
  ])("refuses %s, before any unwrap", async (_name, reserved, suiteId) => {
    const { message, keyring, unwraps } = await craft({ tenant: "acme", ...reserved }, suiteId);
    // The exact-context check ignores reserved keys, so it cannot be what refuses these.
    await expect(
      decryptMessage(message, { keyring, encryptionContext: { tenant: "acme" } }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      throughNode(createDecryptStream({ keyring }), [
        message.subarray(0, 10),
        message.subarray(10),
      ]),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(unwraps()).toBe(0);
  });
});

describe("MultiKeyring identity", () => {
  const named = (identity: string): Keyring => {
    const inner = aesKeyring(identity);
    return {
      identity,
      encryptDataKey: (r) => inner.encryptDataKey(r),
      decryptDataKey: (r) => inner.decryptDataKey(r),
    };
  };

  it("differs for different children, whatever characters their identities hold", () => {
    const pairs: [MultiKeyring, MultiKeyring][] = [
      [
        new MultiKeyring({ generator: named("a"), children: [named("b")] }),
        new MultiKeyring({ generator: named("a,b") }),
      ],
      [
        new MultiKeyring({ generator: named("a"), children: [named("b")] }),
        new MultiKeyring({ children: [named("a"), named("b")] }),
      ],
      [
        new MultiKeyring({ generator: named("x"), children: [named("a),multi(b")] }),
        new MultiKeyring({ generator: named("x"), children: [named("a"), named("b")] }),
      ],
    ];
    for (const [one, other] of pairs) expect(one.identity).not.toBe(other.identity);
    expect(new MultiKeyring({ generator: named("a"), children: [named("b")] }).identity).toBe(
      new MultiKeyring({ generator: named("a"), children: [named("b")] }).identity,
    );
  });

  it("so a shared cache never hands one multi-keyring the copies another one made", async () => {
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const ab = named("a,b");
    const a = named("a");
    const b = named("b");
    const one = new MultiKeyring({ generator: ab });
    const two = new MultiKeyring({ generator: a, children: [b] });
    const options = { dataKeyCache: cache, encryptionContext: { tenant: "acme" } };
    await encryptMessage(randomBytes(10), { ...options, keyring: one });
    const message = await encryptMessage(randomBytes(10), { ...options, keyring: two });
    // Made by `two`, the message must open with `b` alone (it carries b's copy, not a,b's).
    await expect(decryptMessage(message, { keyring: b })).resolves.toBeDefined();
  });
});

describe("a decrypt stream torn down while its keyring is busy", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** A keyring whose unwrap waits for `release()`. */
  function gated(): { keyring: Keyring; release: () => void } {
    const inner = aesKeyring();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const keyring: Keyring = {
      identity: inner.identity,
      encryptDataKey: (request) => inner.encryptDataKey(request),
      decryptDataKey: async (request) => {
        await gate;
        return inner.decryptDataKey(request);
      },
    };
    return { keyring, release };
  }

  /** What every MessageDecryptor.update call returned: plaintext nobody may be left holding. */
  function spyOnUpdates(): () => Promise<Uint8Array[]> {
    const spy = vi.spyOn(MessageDecryptor.prototype, "update");
    return async () => {
      const parts: Uint8Array[] = [];
      for (const result of spy.mock.results) {
        parts.push(...(await (result.value as Promise<Uint8Array[]>).catch(() => [])));
      }
      return parts;
    };
  }

  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
  const secret = Buffer.alloc(5000, 0x5a);

  it("node: destroyed, it decrypts none of the frames behind the header", async () => {
    const { keyring, release } = gated();
    const message = await encryptMessage(secret, { keyring, frameLength: 1024 });
    const produced = spyOnUpdates();
    const stream = createDecryptStream({ keyring });
    const data: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => data.push(chunk));
    stream.on("error", () => {});
    stream.write(message);
    await settle();
    stream.destroy();
    release();
    await settle();
    const parts = await produced();
    expect(parts.filter((part) => part.some((byte) => byte !== 0))).toEqual([]);
    expect(data).toEqual([]);
  });

  it("web: cancelled, it decrypts none of the frames behind the header", async () => {
    const { keyring, release } = gated();
    const message = await encryptMessage(secret, { keyring, frameLength: 1024 });
    const produced = spyOnUpdates();
    const stream = decryptTransformStream({ keyring });
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const read = reader.read();
    const written = writer.write(message).catch((error: unknown) => error);
    await settle();
    await reader.cancel(new Error("client went away"));
    release();
    expect(await read).toEqual({ done: true, value: undefined });
    await written;
    await settle();
    const parts = await produced();
    expect(parts.filter((part) => part.some((byte) => byte !== 0))).toEqual([]);
  });

  it("a stream that finished is unaffected by its automatic destroy", async () => {
    const keyring = aesKeyring();
    const message = await encryptMessage(secret, { keyring, frameLength: 1024 });
    const stream = createDecryptStream({ keyring });
    const headers: unknown[] = [];
    stream.on("header", (info) => headers.push(info));
    expect(Buffer.from(await throughNode(stream, [message])).equals(secret)).toBe(true);
    expect(headers).toHaveLength(1);
  });
});
