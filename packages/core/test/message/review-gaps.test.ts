/**
 * Gaps found in review of the message format and keyrings (docs/FORMAT.md §5.3, §5.6–§5.8):
 * key-name allow-lists, ECDSA malleability, weak RSA keys, header limits checked as the header
 * arrives, and custom keyrings that throw or return junk.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createDecryptStream,
  createEncryptStream,
  decryptMessage,
  encryptMessage,
  InvalidCiphertextError,
  type Keyring,
  KmsInternalError,
  MultiKeyring,
  RawAesKeyring,
  RawRsaKeyring,
  ValidationError,
} from "../../src/index.ts";
import { MessageDecryptor } from "../../src/message/decryptor.ts";
import { FINAL_FRAME_MARKER, parseHeader } from "../../src/message/format.ts";
import { aesKeyring, concat, throughNode } from "./helpers.ts";

const P256 = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256";
const P384 = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384";
const ORDER = {
  [P256]: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  [P384]:
    0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
} as const;

describe("allowedKeyNames compares (namespace, name) pairs, not joined strings (§5.7)", () => {
  const wrappingKey = randomBytes(32);
  // Both join to "a/b/c".
  const nsAB = new RawAesKeyring({ keyNamespace: "a/b", keyName: "c", wrappingKey });
  const nsA = new RawAesKeyring({ keyNamespace: "a", keyName: "b/c", wrappingKey });
  const plaintext = randomBytes(50);

  it("a string is split at its first '/': it never names the other pair", async () => {
    const underAB = await encryptMessage(plaintext, { keyring: nsAB });
    const underA = await encryptMessage(plaintext, { keyring: nsA });
    const policy = { allowedKeyNames: ["a/b/c"] };
    await expect(decryptMessage(underAB, { keyring: nsAB, policy })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    const ok = await decryptMessage(underA, { keyring: nsA, policy });
    expect(Buffer.from(ok.plaintext).equals(plaintext)).toBe(true);
  });

  it("an object names exactly one pair, including a namespace that holds '/'", async () => {
    const underAB = await encryptMessage(plaintext, { keyring: nsAB });
    const underA = await encryptMessage(plaintext, { keyring: nsA });
    const policy = { allowedKeyNames: [{ keyNamespace: "a/b", keyName: "c" }] };
    const ok = await decryptMessage(underAB, { keyring: nsAB, policy });
    expect(Buffer.from(ok.plaintext).equals(plaintext)).toBe(true);
    await expect(decryptMessage(underA, { keyring: nsA, policy })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  it("a multi-keyring holding both keys is offered only the allowed copy", async () => {
    const both = new MultiKeyring({ generator: nsAB, children: [nsA] });
    const message = await encryptMessage(plaintext, { keyring: both });
    let offered: string[] = [];
    const spy: Keyring = {
      identity: "spy",
      encryptDataKey: (r) => both.encryptDataKey(r),
      decryptDataKey: (r) => {
        offered = r.encryptedDataKeys.map((e) => `${e.providerId}|${e.providerInfo}`);
        return both.decryptDataKey(r);
      },
    };
    await decryptMessage(message, { keyring: spy, policy: { allowedKeyNames: ["a/b/c"] } });
    expect(offered).toEqual(["a|b/c"]);
  });

  it.each([
    ["a string without '/'", ["abc"]],
    ["an empty namespace", ["/abc"]],
    ["an empty name", ["abc/"]],
    ["an object without keyName", [{ keyNamespace: "a" }]],
    ["a number", [1]],
  ])("refuses %s with ValidationError", async (_name, allowedKeyNames) => {
    const message = await encryptMessage(plaintext, { keyring: nsA });
    const policy = { allowedKeyNames } as unknown as { allowedKeyNames: string[] };
    await expect(decryptMessage(message, { keyring: nsA, policy })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });
});

/** Offset of the signature footer: walks the frames after the header. */
function signatureAt(message: Uint8Array): number {
  const parsed = parseHeader(message, 0xffff);
  if (parsed.header === undefined) throw new Error("not a whole header");
  const view = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
  let at = parsed.length;
  while (view.readUInt32BE(at) !== FINAL_FRAME_MARKER) at += 4 + parsed.header.frameLength + 16;
  return at + 12 + view.readUInt32BE(at + 8) + 16;
}

/** (r, s) of a DER signature (short-form lengths: every curve here). */
function parseDer(der: Uint8Array): { r: bigint; s: bigint } {
  expect(der[0]).toBe(0x30);
  expect(der[1]).toBe(der.length - 2);
  const int = (at: number): [bigint, number] => {
    expect(der[at]).toBe(0x02);
    const n = der[at + 1]!;
    const bytes = der.subarray(at + 2, at + 2 + n);
    // Minimal: no superfluous leading zero.
    if (n > 1) expect(bytes[0] === 0 && bytes[1]! < 0x80).toBe(false);
    return [BigInt(`0x${Buffer.from(bytes).toString("hex")}`), at + 2 + n];
  };
  const [r, next] = int(2);
  const [s, end] = int(next);
  expect(end).toBe(der.length);
  return { r, s };
}

function derInt(value: bigint, pad = 0): Buffer {
  let hex = value.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  let bytes = Buffer.from(hex, "hex");
  if (bytes[0]! >= 0x80) bytes = Buffer.concat([Buffer.alloc(1), bytes]);
  bytes = Buffer.concat([Buffer.alloc(pad), bytes]);
  return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

function withSignature(message: Uint8Array, der: Uint8Array): Uint8Array {
  const at = signatureAt(message);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(der.length);
  return concat([message.subarray(0, at), length, der]);
}

function signatureOf(message: Uint8Array): { r: bigint; s: bigint } {
  return parseDer(message.subarray(signatureAt(message) + 2));
}

describe("ECDSA signatures: low S written, high S still read (§5.8)", () => {
  const keyring = aesKeyring();

  it.each([P256, P384] as const)(
    "every %s signature we write has s ≤ n/2 (one-shot and stream)",
    async (suite) => {
      // node:crypto alone gives high S half the time: 2 × 16 messages all low by chance is 2^-32.
      for (let i = 0; i < 16; i++) {
        const oneShot = await encryptMessage(randomBytes(40), { keyring, suite, frameLength: 16 });
        const streamed = await throughNode(
          createEncryptStream({ keyring, suite, frameLength: 16 }),
          [randomBytes(40)],
        );
        for (const message of [oneShot, streamed]) {
          const { s } = signatureOf(message);
          expect(s <= ORDER[suite] >> 1n).toBe(true);
          await expect(decryptMessage(message, { keyring })).resolves.toBeDefined();
        }
      }
    },
  );

  const DIR = join(dirname(fileURLToPath(import.meta.url)), "../golden/messages-v1");
  const golden = JSON.parse(readFileSync(join(DIR, "messages.json"), "utf8")) as {
    aes: { keyNamespace: string; keyName: string };
    vectors: { suite: string; message: { $base64: string }; plaintext: { $base64: string } }[];
  };
  const goldenKeyring = new RawAesKeyring({
    ...golden.aes,
    wrappingKey: Buffer.from(readFileSync(join(DIR, "aes-wrapping-key.hex"), "utf8").trim(), "hex"),
  });
  const vector = golden.vectors.find((v) => v.suite === P384)!;
  const goldenMessage = new Uint8Array(Buffer.from(vector.message.$base64, "base64"));
  const goldenPlaintext = Buffer.from(vector.plaintext.$base64, "base64");

  it("a golden v1 message signed with high S still decrypts, and so does its low-S twin", async () => {
    // Why decryption cannot require low S: messages written before normalisation carry high S
    // half the time, and this frozen one does.
    const { r, s } = signatureOf(goldenMessage);
    expect(s > ORDER[P384] >> 1n).toBe(true);
    const original = await decryptMessage(goldenMessage, { keyring: goldenKeyring });
    expect(Buffer.from(original.plaintext).equals(goldenPlaintext)).toBe(true);
    // The malleated twin: other bytes, same signer, same header, same plaintext (harmless, §5.8).
    const low = ORDER[P384] - s;
    const twin = withSignature(
      goldenMessage,
      (() => {
        const body = Buffer.concat([derInt(r), derInt(low)]);
        return Buffer.concat([Buffer.from([0x30, body.length]), body]);
      })(),
    );
    expect(Buffer.from(twin).equals(Buffer.from(goldenMessage))).toBe(false);
    const out = await decryptMessage(twin, { keyring: goldenKeyring });
    expect(Buffer.from(out.plaintext).equals(goldenPlaintext)).toBe(true);
    expect(Buffer.from(out.messageId).equals(Buffer.from(original.messageId))).toBe(true);
    expect(out.encryptionContext).toEqual(original.encryptionContext);
  });

  it("no other encoding of a signature is accepted (DER must be minimal)", async () => {
    const message = await encryptMessage(randomBytes(40), { keyring, suite: P256 });
    const { r, s } = signatureOf(message);
    const seq = (body: Buffer, longForm = false): Buffer =>
      Buffer.concat([
        Buffer.from(longForm ? [0x30, 0x81, body.length] : [0x30, body.length]),
        body,
      ]);
    const variants = [
      seq(Buffer.concat([derInt(r, 1), derInt(s)])), // superfluous leading zero in r
      seq(Buffer.concat([derInt(r), derInt(s, 1)])), // … in s
      seq(Buffer.concat([derInt(r), derInt(s)]), true), // long-form sequence length
      Buffer.concat([seq(Buffer.concat([derInt(r), derInt(s)])), Buffer.alloc(1)]), // trailing byte
    ];
    expect(await decryptMessage(message, { keyring })).toBeDefined();
    for (const der of variants) {
      await expect(decryptMessage(withSignature(message, der), { keyring })).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });
});

describe("RawRsaKeyring refuses weak wrapping keys at construction (§5.3)", () => {
  const good = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = good.publicKey.export({ format: "jwk" });
  const withExponent = (e: bigint): KeyObject => {
    const hex = e.toString(16);
    const bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
    return createPublicKey({ format: "jwk", key: { ...jwk, e: bytes.toString("base64url") } });
  };
  const names = { keyNamespace: "escrow", keyName: "rsa" };

  it.each([
    ["e = 1 (the OAEP encoding, and so the data key, in the clear)", 1n],
    ["e = 3", 3n],
    ["an even e (no private key inverts it)", 65_538n],
    ["e ≥ 2^256", 2n ** 256n + 1n],
  ])("%s", (_name, e) => {
    expect(() => new RawRsaKeyring({ ...names, publicKey: withExponent(e) })).toThrow(
      /"publicKey" must have an odd public exponent from 65537/,
    );
  });

  it("a private key with e = 3, and moduli under 2048 bits", () => {
    const small = generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: 3 });
    expect(() => new RawRsaKeyring({ ...names, privateKey: small.privateKey })).toThrow(
      /"privateKey" must have an odd public exponent/,
    );
    const short = generateKeyPairSync("rsa", { modulusLength: 1024 });
    expect(() => new RawRsaKeyring({ ...names, publicKey: short.publicKey })).toThrow(
      /"publicKey" must have a modulus of at least 2048 bits, got 1024/,
    );
    expect(() => new RawRsaKeyring({ ...names, privateKey: short.privateKey })).toThrow(
      ValidationError,
    );
  });

  it("accepts e = 65537 and larger odd exponents", async () => {
    const keyring = new RawRsaKeyring({ ...names, publicKey: withExponent(65_537n) });
    await expect(encryptMessage(randomBytes(10), { keyring })).resolves.toBeDefined();
    const other = generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: 65_539 });
    const pair = new RawRsaKeyring({ ...names, privateKey: other.privateKey });
    const message = await encryptMessage(randomBytes(10), { keyring: pair });
    await expect(decryptMessage(message, { keyring: pair })).resolves.toBeDefined();
  });
});

describe("header rules apply as soon as their field arrives (§5.6)", () => {
  const inner = aesKeyring();
  /** Adds 15 unusable 64 KiB copies: a header of about 1 MiB, after the context. */
  const bulky: Keyring = {
    identity: "bulky",
    async encryptDataKey(request) {
      const result = await inner.encryptDataKey(request);
      const padding = Array.from({ length: 15 }, (_, i) => ({
        providerId: "padding",
        providerInfo: `copy-${i}`,
        ciphertext: new Uint8Array(65_535),
      }));
      return { ...result, encryptedDataKeys: [...result.encryptedDataKeys, ...padding] };
    },
    decryptDataKey: (request) => inner.decryptDataKey(request),
  };

  /** Feeds 4 KiB chunks until the decryptor throws; returns the bytes fed and the error. */
  async function refusedAfter(
    message: Uint8Array,
    options: Omit<ConstructorParameters<typeof MessageDecryptor>[0], "keyring">,
  ): Promise<{ fed: number; error: unknown }> {
    const decryptor = new MessageDecryptor({ keyring: bulky, ...options });
    for (let at = 0; at < message.length; at += 4096) {
      try {
        await decryptor.update(message.slice(at, at + 4096));
      } catch (error) {
        return { fed: Math.min(at + 4096, message.length), error };
      }
    }
    throw new Error("never refused");
  }

  it.each([
    [
      "a wrong expected context",
      { encryptionContext: { tenant: "globex" } },
      InvalidCiphertextError,
    ],
    [
      "a required context pair missing",
      { policy: { requiredEncryptionContext: { tenant: "globex" } } },
      AccessDeniedError,
    ],
    ["a required signature", { policy: { signature: "required" as const } }, AccessDeniedError],
    ["too many copies", { policy: { maxEncryptedDataKeys: 2 } }, AccessDeniedError],
  ])("%s: refused within the first chunk of a 1 MiB header", async (_name, options, type) => {
    const message = await encryptMessage(randomBytes(10), {
      keyring: bulky,
      encryptionContext: { tenant: "acme" },
    });
    expect(message.length).toBeGreaterThan(15 * 65_535);
    const { fed, error } = await refusedAfter(message, options);
    expect(error).toBeInstanceOf(type);
    expect(fed).toBe(4096);
    // And the same refusal one-shot.
    await expect(decryptMessage(message, { keyring: bulky, ...options })).rejects.toBeInstanceOf(
      type,
    );
  });

  it("a header of many copies fed in tiny chunks is parsed in linear time", async () => {
    const COPIES = 3000;
    const many: Keyring = {
      identity: "many",
      async encryptDataKey(request) {
        const result = await inner.encryptDataKey(request);
        const padding = Array.from({ length: COPIES - 1 }, () => ({
          providerId: "p",
          providerInfo: "",
          ciphertext: new Uint8Array(0),
        }));
        return { ...result, encryptedDataKeys: [...result.encryptedDataKeys, ...padding] };
      },
      decryptDataKey: (request) => inner.decryptDataKey(request),
    };
    const plaintext = randomBytes(100);
    const message = await encryptMessage(plaintext, { keyring: many });
    const decryptor = new MessageDecryptor({
      keyring: many,
      policy: { maxEncryptedDataKeys: 0xffff },
    });
    // Length fields read: each is read a bounded number of times, however the header is cut.
    // Re-walking them all on every call read ~(3 × COPIES)² / 2, ~4 × 10^7 here.
    const getUint16 = DataView.prototype.getUint16;
    let reads = 0;
    DataView.prototype.getUint16 = function (this: DataView, offset: number, little?: boolean) {
      reads++;
      return getUint16.call(this, offset, little);
    };
    const out: Uint8Array[] = [];
    try {
      for (let at = 0; at < message.length; at += 3) {
        out.push(...(await decryptor.update(message.slice(at, at + 3))));
      }
    } finally {
      DataView.prototype.getUint16 = getUint16;
    }
    decryptor.final();
    expect(reads).toBeLessThan(10 * 3 * COPIES);
    expect(Buffer.from(concat(out)).equals(plaintext)).toBe(true);
  }, 120_000);
});

describe("custom keyrings: errors keep the contract, bad data keys are refused and zeroed", () => {
  const inner = aesKeyring();
  const plaintext = randomBytes(100);
  const throwing = (value: unknown): Keyring => ({
    identity: "throwing",
    encryptDataKey: () => Promise.reject(value),
    decryptDataKey: () => Promise.reject(value),
  });

  it.each([
    ["a TypeError", new TypeError("boom")],
    ["a string", "boom"],
    ["undefined", undefined],
  ])("%s thrown becomes KmsInternalError with it as the cause", async (_name, thrown) => {
    const message = await encryptMessage(plaintext, { keyring: inner });
    const keyring = throwing(thrown);
    for (const attempt of [
      encryptMessage(plaintext, { keyring }),
      decryptMessage(message, { keyring }),
      throughNode(createDecryptStream({ keyring }), [message]),
      throughNode(createEncryptStream({ keyring }), [plaintext]),
    ]) {
      const error = await attempt.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(KmsInternalError);
      expect((error as KmsInternalError).cause).toBe(thrown);
      expect((error as KmsInternalError).clientFault).toBe(false);
    }
  });

  it("a KmsError thrown by a keyring is passed on as it is", async () => {
    const denied = new AccessDeniedError("not yours");
    const message = await encryptMessage(plaintext, { keyring: inner });
    await expect(decryptMessage(message, { keyring: throwing(denied) })).rejects.toBe(denied);
    await expect(encryptMessage(plaintext, { keyring: throwing(denied) })).rejects.toBe(denied);
  });

  it.each([31, 33, 0])("decrypt: a %i-byte data key is refused and zeroed", async (length) => {
    const message = await encryptMessage(plaintext, { keyring: inner });
    const returned = new Uint8Array(length).fill(0xab);
    const keyring: Keyring = {
      identity: "short",
      encryptDataKey: (r) => inner.encryptDataKey(r),
      decryptDataKey: async () => returned,
    };
    await expect(decryptMessage(message, { keyring })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(returned.every((b) => b === 0)).toBe(true);
  });

  it("decrypt: a data key that is not bytes (a 32-character string) is refused", async () => {
    const message = await encryptMessage(plaintext, { keyring: inner });
    const keyring = {
      identity: "string",
      encryptDataKey: (r: Parameters<Keyring["encryptDataKey"]>[0]) => inner.encryptDataKey(r),
      decryptDataKey: async () => "k".repeat(32),
    } as unknown as Keyring;
    await expect(decryptMessage(message, { keyring })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  it("encrypt: a 16-byte data key is refused and zeroed", async () => {
    const returned = new Uint8Array(16).fill(0xab);
    const keyring: Keyring = {
      identity: "short",
      encryptDataKey: async (r) => ({
        dataKey: returned,
        encryptedDataKeys: (await inner.encryptDataKey(r)).encryptedDataKeys,
      }),
      decryptDataKey: (r) => inner.decryptDataKey(r),
    };
    await expect(encryptMessage(plaintext, { keyring })).rejects.toThrow(
      /the keyring must return a 32-byte data key/,
    );
    expect(returned.every((b) => b === 0)).toBe(true);
  });

  it.each([
    [
      "a non-string provider id",
      { providerId: 7, providerInfo: "x", ciphertext: new Uint8Array(1) },
    ],
    ["a ciphertext that is not bytes", { providerId: "p", providerInfo: "x", ciphertext: "abc" }],
    ["null", null],
    [
      "a lone surrogate in the provider info",
      { providerId: "p", providerInfo: "\ud800", ciphertext: new Uint8Array(1) },
    ],
  ])(
    "encrypt: %s among the copies is a ValidationError, and the data key is zeroed",
    async (_n, edk) => {
      let dataKey: Uint8Array | undefined;
      const keyring = {
        identity: "junk",
        encryptDataKey: async (r: Parameters<Keyring["encryptDataKey"]>[0]) => {
          const result = await inner.encryptDataKey(r);
          dataKey = result.dataKey;
          return { dataKey: result.dataKey, encryptedDataKeys: [...result.encryptedDataKeys, edk] };
        },
        decryptDataKey: (r: Parameters<Keyring["decryptDataKey"]>[0]) => inner.decryptDataKey(r),
      } as Keyring;
      await expect(encryptMessage(plaintext, { keyring })).rejects.toBeInstanceOf(ValidationError);
      expect(dataKey?.every((b) => b === 0)).toBe(true);
    },
  );

  it("raw keyrings refuse names with lone surrogates (they could not open their own copies)", () => {
    for (const names of [
      { keyNamespace: "ns", keyName: "a\ud800" },
      { keyNamespace: "\udc00", keyName: "a" },
    ]) {
      expect(() => new RawAesKeyring({ ...names, wrappingKey: randomBytes(32) })).toThrow(
        /well-formed Unicode/,
      );
    }
  });
});

describe("MultiKeyring with misbehaving children", () => {
  const plaintext = randomBytes(100);

  it("decrypt: a child's wrong-length key is zeroed and the next child still opens", async () => {
    const good = aesKeyring("good");
    const message = await encryptMessage(plaintext, { keyring: good });
    const returned = new Uint8Array(16).fill(0xab);
    const bogus: Keyring = {
      identity: "bogus",
      encryptDataKey: (r) => good.encryptDataKey(r),
      decryptDataKey: async () => returned,
    };
    const out = await decryptMessage(message, {
      keyring: new MultiKeyring({ children: [bogus, good] }),
    });
    expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
    expect(returned.every((b) => b === 0)).toBe(true);
  });

  it("encrypt: a child that wraps a key of its own is refused, and the generated key zeroed", async () => {
    let generated: Uint8Array | undefined;
    const generator = aesKeyring("gen");
    const spyGenerator: Keyring = {
      identity: "gen",
      encryptDataKey: async (r) => {
        const result = await generator.encryptDataKey(r);
        generated = result.dataKey;
        return result;
      },
      decryptDataKey: (r) => generator.decryptDataKey(r),
    };
    const stray = aesKeyring("stray");
    const ignoresKey: Keyring = {
      identity: "ignores",
      // Drops request.dataKey: wraps a fresh key that is not the message's.
      encryptDataKey: ({ dataKey: _dropped, ...rest }) => stray.encryptDataKey(rest),
      decryptDataKey: (r) => stray.decryptDataKey(r),
    };
    const keyring = new MultiKeyring({ generator: spyGenerator, children: [ignoresKey] });
    await expect(encryptMessage(plaintext, { keyring })).rejects.toThrow(
      /child returned another data key/,
    );
    expect(generated?.every((b) => b === 0)).toBe(true);
  });

  it("encrypt: a child that throws leaves no generated key behind", async () => {
    let generated: Uint8Array | undefined;
    const generator = aesKeyring("gen");
    const keyring = new MultiKeyring({
      generator: {
        identity: "gen",
        encryptDataKey: async (r) => {
          const result = await generator.encryptDataKey(r);
          generated = result.dataKey;
          return result;
        },
        decryptDataKey: (r) => generator.decryptDataKey(r),
      },
      children: [
        {
          identity: "down",
          encryptDataKey: () => Promise.reject(new Error("down")),
          decryptDataKey: async () => undefined,
        },
      ],
    });
    await expect(encryptMessage(plaintext, { keyring })).rejects.toBeInstanceOf(KmsInternalError);
    expect(generated?.every((b) => b === 0)).toBe(true);
  });

  it("encrypt: children given the key return it (raw AES, raw RSA): no refusal", async () => {
    const rsa = new RawRsaKeyring({
      keyNamespace: "escrow",
      keyName: "rsa",
      privateKey: generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey,
    });
    const keyring = new MultiKeyring({
      generator: aesKeyring("a"),
      children: [aesKeyring("b"), rsa],
    });
    const message = await encryptMessage(plaintext, { keyring });
    const out = await decryptMessage(message, { keyring: rsa });
    expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
  });
});
