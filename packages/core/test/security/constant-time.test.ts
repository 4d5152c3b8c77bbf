/**
 * Comparisons of MACs, tags and seals go through node:crypto's timingSafeEqual over the whole
 * value. Swapping one for `===`, `Buffer.equals` or an early-exit loop keeps every functional
 * test green (the input is refused either way), so these tests watch the primitive itself: each
 * drives a public path with a value wrong in its first byte, where an early exit would return at
 * once, and checks that the refusal came from a full-length constant-time compare.
 *
 * The operands are copied when the compare runs: the code under test wipes some of them (data
 * keys) right after.
 */
import { createHmac, hkdfSync, randomBytes } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";

const compares = vi.hoisted(() => [] as Array<[Uint8Array, Uint8Array]>);

vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  const copy = (view: NodeJS.ArrayBufferView): Uint8Array =>
    new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compares.push([copy(a), copy(b)]);
      return real.timingSafeEqual(a, b);
    },
  };
});

// The field engine's deterministic mode leaves its tag check to @noble/ciphers' AES-SIV, whose
// compare (utils.js equalBytes: an XOR accumulated over every byte, no early exit) cannot be
// watched from here: noble is loaded outside vitest's module graph. What can be watched is that
// a tampered value reaches noble's decrypt whole and is refused there, not by a compare of the
// engine's own.
const sivDecrypts = vi.hoisted(() => [] as Array<{ input: Uint8Array; refused: boolean }>);

vi.mock("@noble/ciphers/aes.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/ciphers/aes.js")>();
  const aessiv = (...args: Parameters<typeof real.aessiv>): ReturnType<typeof real.aessiv> => {
    const cipher = real.aessiv(...args);
    const decrypt: typeof cipher.decrypt = (ciphertext) => {
      const call = { input: Uint8Array.from(ciphertext), refused: true };
      sivDecrypts.push(call);
      const plaintext = cipher.decrypt(ciphertext);
      call.refused = false;
      return plaintext;
    };
    return { ...cipher, decrypt };
  };
  return { ...real, aessiv: Object.assign(aessiv, real.aessiv) };
});

const {
  createKms,
  decryptMessage,
  encryptMessage,
  InvalidCiphertextError,
  InvalidMacError,
  InvalidSignatureError,
  DETERMINISTIC_OVERHEAD,
  FieldEncryptionEngine,
  MemoryDataKeyStore,
  MemoryKeyStore,
  MultiKeyring,
  RawAesKeyring,
  RootKeyError,
  ValidationError,
} = await import("../../src/index.ts");
const { rootKeyIdOf } = await import("./seal-test-support.ts");
type Keyring = import("../../src/index.ts").Keyring;

afterEach(() => {
  compares.length = 0;
  sivDecrypts.length = 0;
  vi.restoreAllMocks();
});

/** `value` with its first byte changed: an early-exit compare would stop there. */
function firstByteFlipped(value: Uint8Array): Uint8Array {
  const wrong = Uint8Array.from(value);
  wrong[0] = (wrong[0] as number) ^ 0x01;
  return wrong;
}

async function rejection(action: Promise<unknown>): Promise<unknown> {
  return action.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe("VerifyMac", () => {
  it.each([
    ["HMAC_256", "HMAC_SHA_256", 32],
    ["HMAC_512", "HMAC_SHA_512", 64],
  ] as const)(
    "%s: a MAC wrong in its first byte is refused after a full-length timingSafeEqual",
    async (keySpec, macAlgorithm, length) => {
      const kms = await createKms();
      const { keyId } = (await kms.createKey({ keySpec, keyUsage: "GENERATE_VERIFY_MAC" }))
        .keyMetadata;
      const message = new TextEncoder().encode("transfer 100 to alice");
      const { mac } = await kms.generateMac({ keyId, message, macAlgorithm });
      const wrong = firstByteFlipped(mac);
      compares.length = 0;

      const error = await rejection(kms.verifyMac({ keyId, message, macAlgorithm, mac: wrong }));

      expect(error).toBeInstanceOf(InvalidMacError);
      expect(compares).toEqual([[Uint8Array.from(mac), wrong]]);
      expect(mac.length).toBe(length);
    },
  );
});

describe("Verify of an RSA PKCS#1 v1.5 signature over a DIGEST", () => {
  // RFC 8017 §9.2 note 1: the DER DigestInfo prefix of SHA-256.
  const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

  it("a digest wrong in its first byte is refused after a timingSafeEqual over the whole DigestInfo", async () => {
    // Not a secret: anyone with the public key recovers the same bytes. Pinned all the same,
    // as the code's choice for every signature compare it makes itself.
    const kms = await createKms();
    const { keyId } = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata;
    const digest = randomBytes(32);
    const signingAlgorithm = "RSASSA_PKCS1_V1_5_SHA_256";
    const { signature } = await kms.sign({
      keyId,
      message: digest,
      messageType: "DIGEST",
      signingAlgorithm,
    });
    const wrong = firstByteFlipped(digest);
    compares.length = 0;

    const error = await rejection(
      kms.verify({ keyId, message: wrong, messageType: "DIGEST", signingAlgorithm, signature }),
    );

    expect(error).toBeInstanceOf(InvalidSignatureError);
    expect(compares).toEqual([
      [
        new Uint8Array(Buffer.concat([SHA256_DIGEST_INFO, digest])),
        new Uint8Array(Buffer.concat([SHA256_DIGEST_INFO, wrong])),
      ],
    ]);
  });
});

describe("record seals (FORMAT §4.1)", () => {
  it("a key record whose seal MAC is wrong in its first byte is refused after a full-length timingSafeEqual", async () => {
    const store = new MemoryKeyStore();
    const rootKey = randomBytes(32);
    const writer = await createKms({ store, rootKey: Uint8Array.from(rootKey) });
    const { keyId } = (await writer.createKey({})).keyMetadata;
    const stored = (await store.getKey(keyId))!;
    const [prefix, mac] = splitSeal(stored.seal!);
    const wrong = firstByteFlipped(mac);
    await store.updateKey({
      ...stored,
      seal: `${prefix}.${Buffer.from(wrong).toString("base64url")}`,
      revision: stored.revision + 1,
    });
    const reader = await createKms({ store, rootKey: Uint8Array.from(rootKey) });
    compares.length = 0;

    const error = await rejection(reader.describeKey({ keyId }));

    expect(error).toBeInstanceOf(RootKeyError);
    expect((error as Error).message).toContain("does not match its record seal");
    expect(compares).toContainEqual([mac, wrong]);
    expect(mac.length).toBe(32);
  });

  /** `s1.<root key id>.<counter>` and the MAC of a seal. */
  function splitSeal(seal: string): [string, Uint8Array] {
    const dot = seal.lastIndexOf(".");
    return [seal.slice(0, dot), new Uint8Array(Buffer.from(seal.slice(dot + 1), "base64url"))];
  }
});

describe("sealed root-key retirements (FORMAT §4.2)", () => {
  /** A MemoryKeyStore whose settings table the test writes directly, as a store writer can. */
  class EditableSettingsStore extends MemoryKeyStore {
    readonly settings = new Map<string, string>();

    override async getSetting(name: string): Promise<string | undefined> {
      return this.settings.get(name);
    }

    override async putSettingIfAbsent(name: string, value: string): Promise<string> {
      const existing = this.settings.get(name);
      if (existing !== undefined) return existing;
      this.settings.set(name, value);
      return value;
    }
  }

  it("a retirement whose MAC is wrong in its first byte retires nothing, after a full-length timingSafeEqual", async () => {
    const warnings: string[] = [];
    vi.spyOn(process, "emitWarning").mockImplementation(((message: string | Error) => {
      warnings.push(String(message));
    }) as typeof process.emitWarning);
    const live = Uint8Array.from({ length: 32 }, (_, i) => i);
    const foreignId = rootKeyIdOf(Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i));
    const liveId = rootKeyIdOf(live);
    const store = new EditableSettingsStore();
    await createKms({ store, rootKey: Uint8Array.from(live) });
    // Genuine under the live key (computed from FORMAT §4.1 item 2 and §4.2), then altered in
    // its first byte: only the MAC compare stands between it and a retired live root key.
    const sealKey = Buffer.from(
      hkdfSync("sha256", live, new Uint8Array(0), "kms/record-seal/v1", 32),
    );
    const mac = new Uint8Array(
      createHmac("sha256", sealKey)
        .update(`kms/root-key-retirement/v1|${liveId}|${foreignId}`)
        .digest(),
    );
    const wrong = firstByteFlipped(mac);
    store.settings.set(`root-key-successor/${liveId}`, foreignId);
    store.settings.set(
      `root-key-retirement/${liveId}`,
      `r1.${foreignId}.${Buffer.from(wrong).toString("base64url")}`,
    );
    compares.length = 0;

    const reopened = await createKms({ store, rootKey: Uint8Array.from(live) });

    await reopened.createKey({});
    expect(warnings.join("\n")).toContain("does not verify under the root key it retires");
    expect(compares).toContainEqual([mac, wrong]);
  });
});

describe("message decryption (FORMAT §5.2, §5.4)", () => {
  const keyring = new RawAesKeyring({
    keyNamespace: "constant-time",
    keyName: "aes-1",
    wrappingKey: randomBytes(32),
  });
  const plaintext = randomBytes(100);

  /** Offset of the 32-byte key commitment, which the 16-byte header tag follows (§5.2). */
  function commitmentOffset(message: Uint8Array): number {
    const bytes = Buffer.from(message);
    expect(bytes.readUInt16BE(1)).toBe(0x0001); // committing suite without a signature
    let at = 37 + bytes.readUInt16BE(35);
    expect(bytes.readUInt16BE(at)).toBe(1); // one encrypted data key
    at += 2;
    for (let field = 0; field < 3; field++) at += 2 + bytes.readUInt16BE(at);
    return at + 4;
  }

  it("a commitment wrong in its first byte is refused after a timingSafeEqual over all 32 bytes", async () => {
    const message = await encryptMessage(plaintext, { keyring });
    const at = commitmentOffset(message);
    const commitment = message.slice(at, at + 32);
    const tampered = Uint8Array.from(message);
    tampered.set(firstByteFlipped(commitment), at);
    compares.length = 0;

    const error = await rejection(decryptMessage(tampered, { keyring }));

    expect(error).toBeInstanceOf(InvalidCiphertextError);
    expect(compares).toEqual([[commitment, firstByteFlipped(commitment)]]);
  });

  it("a header tag wrong in its first byte is refused after a timingSafeEqual over all 16 bytes", async () => {
    const message = await encryptMessage(plaintext, { keyring });
    const at = commitmentOffset(message) + 32;
    const tag = message.slice(at, at + 16);
    const tampered = Uint8Array.from(message);
    tampered.set(firstByteFlipped(tag), at);
    const commitment = message.slice(at - 32, at);
    compares.length = 0;

    const error = await rejection(decryptMessage(tampered, { keyring }));

    expect(error).toBeInstanceOf(InvalidCiphertextError);
    expect(compares).toEqual([
      [commitment, commitment],
      [tag, firstByteFlipped(tag)],
    ]);
  });
});

describe("MultiKeyring", () => {
  it("a child returning a data key wrong in its first byte is refused after a full-length timingSafeEqual", async () => {
    const given: Uint8Array[] = [];
    const careless: Keyring = {
      identity: "careless",
      encryptDataKey: async (request) => {
        given.push(Uint8Array.from(request.dataKey!));
        return { dataKey: firstByteFlipped(request.dataKey!), encryptedDataKeys: [] };
      },
      decryptDataKey: async () => undefined,
    };
    const generator = new RawAesKeyring({
      keyNamespace: "constant-time",
      keyName: "generator",
      wrappingKey: randomBytes(32),
    });
    const multi = new MultiKeyring({ generator, children: [careless] });

    const error = await rejection(encryptMessage(randomBytes(10), { keyring: multi }));

    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toContain("another data key");
    expect(given).toHaveLength(1);
    const dataKey = given[0]!;
    expect(compares).toEqual([[firstByteFlipped(dataKey), dataKey]]);
    expect(dataKey.length).toBe(32);
  });
});

describe("field engine, deterministic mode (FORMAT §6.1)", () => {
  it("a value whose SIV is wrong in its first byte is refused by noble's AES-SIV, given all of it", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey({})).keyMetadata;
    const engine = new FieldEncryptionEngine({
      kms,
      dataKeyStore: new MemoryDataKeyStore(),
      keyId,
    });
    const binding = { model: "Patient", field: "ssn", context: { tenantId: "a" } };
    const spec = { type: "string", mode: "deterministic" } as const;
    const stored = await engine.encrypt(binding, spec, "078-05-1120");
    // 0xC2 || data key id (16), then the 16-byte SIV: the overhead less the SIV and type tag.
    const sivAt = DETERMINISTIC_OVERHEAD - 16 - 1;
    const tampered = Uint8Array.from(stored);
    tampered[sivAt] = (tampered[sivAt] as number) ^ 0x01;
    sivDecrypts.length = 0;

    const error = await rejection(engine.decrypt(binding, spec, tampered));

    expect(error).toBeInstanceOf(InvalidCiphertextError);
    expect(sivDecrypts).toEqual([{ input: tampered.slice(sivAt), refused: true }]);
  });
});
