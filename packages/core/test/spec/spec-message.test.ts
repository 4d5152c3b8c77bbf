/**
 * docs/FORMAT.md §5 re-implemented from the spec (spec-message.ts): it reads the frozen golden
 * messages and fresh ones from encryptMessage, and writes messages that decryptMessage must
 * accept — and refuse after any single-bit flip.
 */
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createKms,
  decryptMessage,
  type EncryptionContext,
  encryptMessage,
  InvalidCiphertextError,
  KmsKeyring,
  type MessageSuite,
  MultiKeyring,
  RawAesKeyring,
  RawRsaKeyring,
} from "../../src/index.ts";
import { SpecFormatError, specEncodeContext } from "./spec-context.ts";
import {
  SPEC_SUITE_NAMES,
  type SpecDecrypted,
  type SpecHeader,
  type SpecRawAesKey,
  specDecryptMessage,
  specEncryptMessage,
  specParseHeader,
  specUnwrapRawAes,
  specUnwrapRawRsa,
} from "./spec-message.ts";

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), "..", "golden", "messages-v1");

interface Vector {
  name: string;
  keys: ("aes" | "rsa")[];
  suite: MessageSuite;
  frameLength: number;
  encryptionContext?: EncryptionContext;
  plaintext: Uint8Array;
  message: Uint8Array;
}

const golden = JSON.parse(
  readFileSync(join(GOLDEN, "messages.json"), "utf8"),
  (_key, v: unknown) =>
    typeof v === "object" && v !== null && "$base64" in v
      ? new Uint8Array(Buffer.from((v as { $base64: string }).$base64, "base64"))
      : v,
) as {
  aes: { keyNamespace: string; keyName: string };
  rsa: { keyNamespace: string; keyName: string };
  vectors: Vector[];
};

const goldenAes: SpecRawAesKey = {
  ...golden.aes,
  wrappingKey: new Uint8Array(
    Buffer.from(readFileSync(join(GOLDEN, "aes-wrapping-key.hex"), "utf8").trim(), "hex"),
  ),
};
const goldenRsaPem = readFileSync(join(GOLDEN, "rsa-private-key.pem"), "utf8");

/** Tries every copy a raw AES key can open (§5.6.3: the first that opens). */
function withAes(key: SpecRawAesKey) {
  return (header: SpecHeader): Uint8Array => {
    for (const edk of header.edks) {
      if (edk.providerId === key.keyNamespace && edk.providerInfo === key.keyName) {
        return specUnwrapRawAes(edk, key, header);
      }
    }
    throw new SpecFormatError("no copy for this key");
  };
}

function withRsa(namespace: string, name: string, pem: string) {
  return (header: SpecHeader): Uint8Array => {
    const edk = header.edks.find((e) => e.providerId === namespace && e.providerInfo === name);
    if (edk === undefined) throw new SpecFormatError("no copy for this key");
    return specUnwrapRawRsa(edk, pem);
  };
}

/** §5.2: ⌈P/F⌉ − 1 regular frames and one final frame; L = 0 only for the empty payload. */
function expectCanonicalFraming(decrypted: SpecDecrypted, size: number) {
  const f = decrypted.header.frameLength;
  const frames = decrypted.body.frames;
  const regular = Math.max(0, Math.ceil(size / f) - 1);
  expect(frames.length).toBe(regular + 1);
  expect(frames.map((frame) => frame.seq)).toEqual(frames.map((_, i) => i + 1));
  expect(frames.at(-1)).toEqual({ seq: regular + 1, final: true, length: size - regular * f });
}

function expectSameContext(header: SpecHeader, context: EncryptionContext | undefined) {
  const visible = Object.fromEntries(
    Object.entries(header.context).filter(([key]) => !key.startsWith("kms-message:")),
  );
  expect(visible).toEqual(context ?? {});
}

describe("FORMAT §5 read with a spec-only decoder: golden messages v1", () => {
  it.each(golden.vectors.flatMap((v) => v.keys.map((k) => [v.name, k, v] as const)))(
    "%s, with the %s key",
    (_name, key, vector) => {
      const unwrap =
        key === "aes"
          ? withAes(goldenAes)
          : withRsa(golden.rsa.keyNamespace, golden.rsa.keyName, goldenRsaPem);
      const decrypted = specDecryptMessage(vector.message, unwrap);
      expect(hex(decrypted.plaintext)).toBe(hex(vector.plaintext));
      expect(SPEC_SUITE_NAMES[decrypted.header.suiteId]).toBe(vector.suite);
      expect(decrypted.header.frameLength).toBe(vector.frameLength);
      expect(decrypted.header.edks).toHaveLength(vector.keys.length);
      expectSameContext(decrypted.header, vector.encryptionContext);
      expectCanonicalFraming(decrypted, vector.plaintext.length);
      const signed = vector.suite !== "AES_256_GCM_HKDF_SHA512_COMMIT_KEY";
      expect("kms-message:public-key" in decrypted.header.context).toBe(signed);
    },
  );

  it("names the golden providers as §5.3 says", () => {
    const both = golden.vectors.find((v) => v.keys.length === 2);
    const header = specParseHeader(both?.message ?? new Uint8Array(0));
    const aes = header.edks.find((e) => e.providerInfo === golden.aes.keyName);
    const rsa = header.edks.find((e) => e.providerInfo === golden.rsa.keyName);
    expect(aes?.providerId).toBe(golden.aes.keyNamespace);
    expect(rsa?.providerId).toBe(golden.rsa.keyNamespace);
    expect(aes?.providerInfo).toBe(golden.aes.keyName);
    expect(aes?.ciphertext.length).toBe(12 + 32 + 16);
    expect(rsa?.providerInfo).toBe(golden.rsa.keyName);
    expect(rsa?.ciphertext.length).toBe(256);
  });
});

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

const freshKey: SpecRawAesKey = {
  keyNamespace: "spec/ns ✓",
  keyName: "wrapping-1",
  wrappingKey: new Uint8Array(Buffer.alloc(32, 7)),
};
const freshKeyring = new RawAesKeyring(freshKey);

const CONTEXTS: [string, EncryptionContext | undefined][] = [
  ["no context", undefined],
  ["ascii", { tenant: "acme", purpose: "spec" }],
  ["non-BMP and BMP keys", { "\u{10000}": "astral", "\uFFFF": "bmp", ключ: "значение 🔑" }],
];
const SUITES: [MessageSuite, number][] = [
  ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY", 1],
  ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384", 2],
  ["AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256", 3],
];

function payload(size: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (i * 31 + 7) & 0xff);
}

describe("FORMAT §5 read with a spec-only decoder: fresh messages from encryptMessage", () => {
  const frameLengths = [1, 7, 64, 4096];
  const cases = frameLengths.flatMap((f) =>
    [0, 1, f - 1, f, f + 1, 3 * f + 5]
      .filter((size, i, all) => size >= 0 && all.indexOf(size) === i)
      .map((size) => [f, size] as const),
  );

  describe.each(SUITES)("%s", (suite, suiteId) => {
    it.each(CONTEXTS)("%s, every size around the frame boundary", async (_name, context) => {
      for (const [frameLength, size] of cases) {
        const plaintext = payload(size);
        const message = await encryptMessage(plaintext, {
          keyring: freshKeyring,
          frameLength,
          suite,
          ...(context === undefined ? {} : { encryptionContext: context }),
        });
        const decrypted = specDecryptMessage(message, withAes(freshKey));
        expect(hex(decrypted.plaintext)).toBe(hex(plaintext));
        expect(decrypted.header.suiteId).toBe(suiteId);
        expect(decrypted.header.frameLength).toBe(frameLength);
        expectSameContext(decrypted.header, context);
        expectCanonicalFraming(decrypted, size);
      }
    });
  });

  it("uses the 1 MiB default frame for encryptMessage (§5.2.1)", async () => {
    const message = await encryptMessage(payload(3000), { keyring: freshKeyring });
    const decrypted = specDecryptMessage(message, withAes(freshKey));
    expect(decrypted.header.frameLength).toBe(1024 * 1024);
    expectCanonicalFraming(decrypted, 3000);
  });

  it("reads a raw RSA copy and a raw AES copy of one data key (§5.3)", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    const rsa = new RawRsaKeyring({
      keyNamespace: "rsa-ns",
      keyName: "rsa-1",
      publicKey: publicKey.export({ format: "pem", type: "spki" }).toString(),
      privateKey: pem,
    });
    const keyring = new MultiKeyring({ generator: freshKeyring, children: [rsa] });
    const plaintext = payload(200);
    const message = await encryptMessage(plaintext, {
      keyring,
      frameLength: 64,
      encryptionContext: { tenant: "acme" },
    });
    const viaRsa = specDecryptMessage(message, withRsa("rsa-ns", "rsa-1", pem));
    const viaAes = specDecryptMessage(message, withAes(freshKey));
    expect(hex(viaRsa.plaintext)).toBe(hex(plaintext));
    expect(hex(viaAes.plaintext)).toBe(hex(plaintext));
    expect(viaRsa.header.edks.map((e) => e.providerId)).toEqual([freshKey.keyNamespace, "rsa-ns"]);
  });

  it("reads a KMS copy by calling KMS Decrypt with the full context (§5.3)", async () => {
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    const plaintext = payload(100);
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms, keyIds: [keyMetadata.keyId] }),
      frameLength: 32,
      suite: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
      encryptionContext: { tenant: "acme" },
    });
    const header = specParseHeader(message);
    const [edk] = header.edks;
    expect(edk?.providerId).toBe("kms");
    expect(edk?.providerInfo).toBe(keyMetadata.arn);
    const { plaintext: dataKey } = await kms.decrypt({
      ciphertextBlob: edk?.ciphertext ?? new Uint8Array(0),
      encryptionContext: header.context,
      keyId: edk?.providerInfo ?? "",
    });
    const decrypted = specDecryptMessage(message, () => dataKey ?? new Uint8Array(0));
    expect(hex(decrypted.plaintext)).toBe(hex(plaintext));
    // Without the reserved public key the KMS refuses: the copy is bound to the full context.
    await expect(
      kms.decrypt({
        ciphertextBlob: edk?.ciphertext ?? new Uint8Array(0),
        encryptionContext: { tenant: "acme" },
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});

describe("FORMAT §5 written with a spec-only encoder, read by decryptMessage", () => {
  describe.each(SUITES)("%s", (suite, suiteId) => {
    it.each(CONTEXTS)("%s", async (_name, context) => {
      for (const [frameLength, size] of [
        [1, 0],
        [1, 3],
        [16, 15],
        [16, 16],
        [16, 17],
        [16, 53],
        [4096, 10_000],
      ] as const) {
        const plaintext = payload(size);
        const message = specEncryptMessage(plaintext, {
          key: freshKey,
          frameLength,
          suiteId,
          ...(context === undefined ? {} : { context }),
        });
        const out = await decryptMessage(message, {
          keyring: freshKeyring,
          ...(context === undefined ? {} : { encryptionContext: context }),
        });
        expect(hex(out.plaintext)).toBe(hex(plaintext));
        expect(out.suite).toBe(suite);
        expect(out.frameLength).toBe(frameLength);
        expect(hex(out.messageId)).toBe(hex(specParseHeader(message).messageId));
        // And the spec decoder agrees with its own encoder.
        expect(hex(specDecryptMessage(message, withAes(freshKey)).plaintext)).toBe(hex(plaintext));
      }
    });
  });

  it("is refused when a payload of exactly F bytes ends in an extra empty final frame (§5.2)", async () => {
    const plaintext = payload(32);
    const message = specEncryptMessage(plaintext, {
      key: freshKey,
      frameLength: 16,
      deviation: "empty-final-frame-after-full",
    });
    await expect(decryptMessage(message, { keyring: freshKeyring })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(() => specDecryptMessage(message, withAes(freshKey))).toThrow(SpecFormatError);
  });

  it.each([2, 3])("accepts a high-S signature (suite %i, §5.8)", async (suiteId) => {
    const plaintext = payload(40);
    const message = specEncryptMessage(plaintext, {
      key: freshKey,
      frameLength: 16,
      suiteId,
      deviation: "high-s",
    });
    const out = await decryptMessage(message, { keyring: freshKeyring });
    expect(hex(out.plaintext)).toBe(hex(plaintext));
  });

  it.each([2, 3])("writes low S (suite %i, §5.8)", async (suiteId) => {
    const order =
      suiteId === 2
        ? 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n
        : 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    for (let i = 0; i < 16; i++) {
      const message = await encryptMessage(payload(10), {
        keyring: freshKeyring,
        suite: SUITES[suiteId - 1]![0],
      });
      const decrypted = specDecryptMessage(message, withAes(freshKey));
      const signature = message.subarray(decrypted.body.end + 2);
      // DER: 30 len 02 rlen r 02 slen s
      const rLength = signature[3]!;
      const sLength = signature[5 + rLength]!;
      const s = BigInt(`0x${hex(signature.subarray(6 + rLength, 6 + rLength + sLength))}`);
      expect(s <= order / 2n).toBe(true);
    }
  });
});

describe("FORMAT §5: every single-bit flip of a spec-written message is refused", () => {
  const context = { tenant: "acme", ключ: "🔑" };

  it.each([
    ["unsigned, 3 frames + 5", 1, 53],
    ["unsigned, empty", 1, 0],
    ["ECDSA P-384, 2 frames + 1", 2, 33],
    ["ECDSA P-256, 1 frame", 3, 16],
  ] as const)("%s", async (_name, suiteId, size) => {
    const message = specEncryptMessage(payload(size), {
      key: freshKey,
      frameLength: 16,
      suiteId,
      context,
    });
    const { regions } = specDecryptMessage(message, withAes(freshKey));
    // The regions tile the whole message, so every bit below belongs to a named field.
    expect(regions[0]?.start).toBe(0);
    for (let i = 1; i < regions.length; i++) expect(regions[i]?.start).toBe(regions[i - 1]?.end);
    expect(regions.at(-1)?.end).toBe(message.length);
    const accepted: string[] = [];
    const otherErrors: string[] = [];
    for (const region of regions) {
      for (let byte = region.start; byte < region.end; byte++) {
        for (let bit = 0; bit < 8; bit++) {
          const flipped = new Uint8Array(message);
          flipped[byte] = flipped[byte]! ^ (1 << bit);
          const where = `${region.name} byte ${byte} bit ${bit}`;
          try {
            await decryptMessage(flipped, { keyring: freshKeyring });
            accepted.push(where);
          } catch (error) {
            // §5.7: a count above maxEncryptedDataKeys (16) is a policy refusal, not an invalid message.
            const count = (flipped[region.start]! << 8) | flipped[region.start + 1]!;
            const policyRefusal =
              error instanceof AccessDeniedError &&
              region.name === "edk count" &&
              count > 16 &&
              error.message.includes("encrypted data keys");
            if (!(error instanceof InvalidCiphertextError) && !policyRefusal) {
              otherErrors.push(`${where}: ${(error as Error).name}`);
            }
          }
          expect(() => specDecryptMessage(flipped, withAes(freshKey)), where).toThrow();
        }
      }
    }
    expect(accepted).toEqual([]);
    expect(otherErrors).toEqual([]);
  });

  it("refuses every truncation and a one-byte extension", async () => {
    const message = specEncryptMessage(payload(40), {
      key: freshKey,
      frameLength: 16,
      suiteId: 2,
      context,
    });
    for (let length = 0; length < message.length; length++) {
      await expect(
        decryptMessage(message.subarray(0, length), { keyring: freshKeyring }),
        `length ${length}`,
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
    }
    const extended = Uint8Array.from([...message, 0]);
    await expect(decryptMessage(extended, { keyring: freshKeyring })).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });
});

describe("FORMAT §5: header rules a conforming reader applies", () => {
  const read = (message: Uint8Array) => decryptMessage(message, { keyring: freshKeyring });
  const write = (options: Partial<Parameters<typeof specEncryptMessage>[1]>, size = 5) =>
    specEncryptMessage(payload(size), { key: freshKey, frameLength: 16, ...options });

  it("accepts F = 16 MiB and refuses F = 0 and F = 16 MiB + 1 as invalid (§5.2, §5.7)", async () => {
    const max = write({ frameLength: 16 * 1024 * 1024 });
    expect((await read(max)).frameLength).toBe(16 * 1024 * 1024);
    for (const frameLength of [0, 16 * 1024 * 1024 + 1]) {
      const message = write({ frameLength });
      await expect(read(message), `F = ${frameLength}`).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      expect(() => specParseHeader(message)).toThrow(SpecFormatError);
    }
  });

  it("refuses reserved context keys a suite does not define (§5.8)", async () => {
    const cases: [string, Partial<Parameters<typeof specEncryptMessage>[1]>][] = [
      ["another kms-message: key", { context: { "kms-message:other": "x" } }],
      ["a public key in an unsigned suite", { context: { "kms-message:public-key": "AAAA" } }],
      [
        "another kms-message: key beside a signer's key",
        { suiteId: 2, context: { "kms-message:zzz": "x" } },
      ],
    ];
    for (const [name, options] of cases) {
      const message = write(options);
      await expect(read(message), name).rejects.toBeInstanceOf(InvalidCiphertextError);
      expect(() => specParseHeader(message), name).toThrow(SpecFormatError);
    }
  });

  it("refuses a signing suite whose context lacks the public key (§5.8)", async () => {
    // A valid unsigned message relabelled as suite 2 fails anyway (the suite is in the HKDF
    // info and the header tag); this one is written consistently as suite 2 but without a key.
    const context = specEncodeContext({ tenant: "acme" });
    const message = write({ suiteId: 2, contextBytes: context });
    await expect(read(message)).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(() => specParseHeader(message)).toThrow(SpecFormatError);
  });

  it("refuses a context encoding over 8192 bytes even when its tags verify (§2.5, §5.2)", async () => {
    const value = new Uint8Array(8200).fill(0x76);
    const contextBytes = Uint8Array.from([
      0,
      1,
      0,
      1,
      0x6b,
      value.length >> 8,
      value.length & 0xff,
      ...value,
    ]);
    const message = write({ contextBytes });
    await expect(read(message)).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(() => specParseHeader(message)).toThrow(SpecFormatError);
  });

  it("refuses a copy whose provider id is not UTF-8, even one it would not open (§5.2)", async () => {
    const bad = Uint8Array.from([0xff, 0xfe]);
    const message = write({ extraCopies: [[bad, new Uint8Array([0x61]), new Uint8Array(60)]] });
    await expect(read(message)).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(() => specParseHeader(message)).toThrow(SpecFormatError);
  });

  it("refuses every other spelling of the signer's public key (§5.8)", async () => {
    type Point = { compressed: Uint8Array; uncompressed: Uint8Array };
    const base64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
    // Hybrid form (SEC 1 2.3.3): the uncompressed point behind 06/07, the parity of y.
    const hybrid = ({ uncompressed }: Point) =>
      base64(Uint8Array.from([6 | (uncompressed.at(-1)! & 1), ...uncompressed.subarray(1)]));
    // 49 bytes (P-384) end in "X==": the last character carries 4 bits that must be 0.
    const trailingBits = ({ compressed }: Point) => {
      const text = base64(compressed);
      const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      const last = alphabet[alphabet.indexOf(text.at(-3)!) | 1]!;
      return `${text.slice(0, -3)}${last}==`;
    };
    const spellings: [string, number[], (p: Point) => string][] = [
      ["unpadded base64", [2], (p) => base64(p.compressed).replace(/=+$/, "")],
      ["base64url", [2, 3], (p) => Buffer.from(p.compressed).toString("base64url")],
      ["a stray character", [2, 3], (p) => `${base64(p.compressed)}!`],
      [
        "a line break",
        [2, 3],
        (p) => `${base64(p.compressed).slice(0, 20)}\n${base64(p.compressed).slice(20)}`,
      ],
      ["non-zero padding bits", [2], trailingBits],
      ["an uncompressed point", [2, 3], (p) => base64(p.uncompressed)],
      ["a hybrid point", [2, 3], hybrid],
    ];
    for (const [name, suiteIds, spell] of spellings) {
      for (const suiteId of suiteIds) {
        // A random key's base64 may hold no "+" or "/", which base64url would leave alone.
        let message: Uint8Array | undefined;
        while (message === undefined) {
          let differs = false;
          const written = write({
            suiteId,
            publicKeyText: (p) => {
              const text = spell(p);
              differs = text !== base64(p.compressed);
              return text;
            },
          });
          if (differs) message = written;
        }
        const where = `${name}, suite ${suiteId}`;
        await expect(read(message), where).rejects.toBeInstanceOf(InvalidCiphertextError);
        expect(() => specDecryptMessage(message, withAes(freshKey)), where).toThrow(
          SpecFormatError,
        );
      }
    }
    // The canonical spelling, written the same way, decrypts: the refusals above are the rule.
    for (const suiteId of [2, 3]) {
      const message = write({ suiteId, publicKeyText: (p) => base64(p.compressed) });
      expect((await read(message)).plaintext.length).toBe(5);
    }
  });

  it("offers copies after the first one it cannot open (§5.6.3)", async () => {
    const message = write({
      extraCopies: [[new Uint8Array([0x61]), new Uint8Array([0x62]), new Uint8Array(60)]],
    });
    expect((await read(message)).encryptedDataKeys).toHaveLength(2);
  });
});
