/**
 * Every truncation, frame reorder, frame duplication, header bit flip, body bit flip, wrong key
 * and wrong context fails with InvalidCiphertextError and releases no plaintext of the damaged
 * frame or later ones (docs/FORMAT.md §5.6).
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createDecryptStream,
  createKms,
  decryptMessage,
  decryptTransformStream,
  encryptMessage,
  InvalidCiphertextError,
  type Keyring,
  KmsKeyring,
  type MessageSuite,
} from "../../src/index.ts";
import { aesKeyring, concat, split, throughNode, throughWeb } from "./helpers.ts";

const keyring = aesKeyring();
const context = { tenant: "acme", table: "exports" };
const FRAME = 16;
const PLAINTEXT = randomBytes(FRAME * 4 + 5); // 4 regular frames and a 5-byte final frame

const REGULAR = 4 + FRAME + 16;
const FINAL = 12 + 5 + 16;

interface Layout {
  message: Uint8Array;
  headerLength: number;
  /** Offset of regular frame i (0-based). */
  frame: (i: number) => number;
  finalAt: number;
  signatureAt: number;
}

async function layout(suite: MessageSuite = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"): Promise<Layout> {
  const message = await encryptMessage(PLAINTEXT, {
    keyring,
    encryptionContext: context,
    frameLength: FRAME,
    suite,
  });
  const signed = suite !== "AES_256_GCM_HKDF_SHA512_COMMIT_KEY";
  // Body length is known from the plaintext; the signature footer is u16 length + DER.
  let signatureLength = 0;
  if (signed) {
    // The footer's length prefix sits right after the final frame; find it from the end.
    for (let n = 60; n < 140; n++) {
      const at = message.length - 2 - n;
      if (((message[at]! << 8) | message[at + 1]!) === n) {
        signatureLength = 2 + n;
        break;
      }
    }
  }
  const bodyStart = message.length - signatureLength - FINAL - 4 * REGULAR;
  return {
    message,
    headerLength: bodyStart,
    frame: (i) => bodyStart + i * REGULAR,
    finalAt: bodyStart + 4 * REGULAR,
    signatureAt: message.length - signatureLength,
  };
}

async function expectInvalid(
  message: Uint8Array,
  options: Partial<Parameters<typeof decryptMessage>[1]> = {},
): Promise<void> {
  await expect(
    decryptMessage(message, { keyring, encryptionContext: context, ...options }),
  ).rejects.toBeInstanceOf(InvalidCiphertextError);
}

/** Streams `message` and returns the plaintext released before the stream failed. */
async function streamedUntilFailure(message: Uint8Array, chunks: number[]): Promise<Uint8Array> {
  const stream = createDecryptStream({ keyring, encryptionContext: context });
  const released: Uint8Array[] = [];
  stream.on("data", (d: Uint8Array) => released.push(d));
  await expect(throughNode(stream, split(message, chunks))).rejects.toBeInstanceOf(
    InvalidCiphertextError,
  );
  return concat(released);
}

describe("the untampered message", () => {
  it("decrypts (so the failures below are caused by the tampering)", async () => {
    const { message } = await layout();
    const out = await decryptMessage(message, { keyring, encryptionContext: context });
    expect(Buffer.from(out.plaintext).equals(PLAINTEXT)).toBe(true);
  });
});

describe.each([
  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
] as const)("%s", (suite) => {
  it("rejects every truncation (one-shot, every length)", async () => {
    const { message } = await layout(suite);
    for (let length = 0; length < message.length; length++) {
      await expectInvalid(message.subarray(0, length));
    }
  });

  it("rejects truncations sampled in every region (Node and web streams)", async () => {
    const l = await layout(suite);
    const cuts = [
      0,
      1,
      l.headerLength - 1,
      l.headerLength,
      l.headerLength + 2,
      l.frame(1) - 1,
      l.frame(1),
      l.frame(2) + 10,
      l.finalAt,
      l.finalAt + 12,
      l.signatureAt - 1,
      l.signatureAt,
      l.message.length - 1,
    ].filter((n) => n >= 0 && n < l.message.length);
    for (const length of cuts) {
      const truncated = l.message.subarray(0, length);
      const released = await streamedUntilFailure(truncated, [3, 40]);
      if (length >= l.finalAt + FINAL) {
        // Cut inside the signature: every frame verified and was released (§5.6).
        expect(Buffer.from(released).equals(PLAINTEXT)).toBe(true);
      } else {
        // Only whole verified frames ever come out, and never the final one.
        expect(released.length % FRAME).toBe(0);
        expect(released.length).toBeLessThan(PLAINTEXT.length);
      }
      await expect(
        throughWeb(decryptTransformStream({ keyring, encryptionContext: context }), [truncated]),
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
    }
  });

  it("rejects trailing bytes after the message", async () => {
    const { message } = await layout(suite);
    await expectInvalid(concat([message, new Uint8Array([0])]));
    await expectInvalid(concat([message, message]));
  });

  it("rejects reordered frames", async () => {
    const l = await layout(suite);
    const m = l.message;
    const swapped = concat([
      m.subarray(0, l.frame(1)),
      m.subarray(l.frame(2), l.frame(3)),
      m.subarray(l.frame(1), l.frame(2)),
      m.subarray(l.frame(3)),
    ]);
    await expectInvalid(swapped);
    // Frame 0 is released if it arrived in an earlier chunk than the failure; never more.
    expect((await streamedUntilFailure(swapped, [])).length).toBe(0);
    const released = await streamedUntilFailure(swapped, [l.frame(1)]);
    expect(Buffer.from(released).equals(PLAINTEXT.subarray(0, FRAME))).toBe(true);
  });

  it("rejects duplicated and dropped frames", async () => {
    const l = await layout(suite);
    const m = l.message;
    const duplicated = concat([
      m.subarray(0, l.frame(2)),
      m.subarray(l.frame(1), l.frame(2)),
      m.subarray(l.frame(2)),
    ]);
    await expectInvalid(duplicated);
    const dropped = concat([m.subarray(0, l.frame(1)), m.subarray(l.frame(2))]);
    await expectInvalid(dropped);
    // Ending at a regular frame by cutting the final one out entirely.
    await expectInvalid(concat([m.subarray(0, l.finalAt), m.subarray(l.signatureAt)]));
  });

  it("rejects a frame's sequence number renumbered to hide a dropped frame", async () => {
    const l = await layout(suite);
    const m = l.message;
    const renumbered = concat([m.subarray(0, l.frame(1)), m.subarray(l.frame(2))]);
    new DataView(renumbered.buffer).setUint32(l.frame(1), 2);
    await expectInvalid(renumbered);
  });

  it("rejects every single-bit flip in the header", async () => {
    const { message, headerLength } = await layout(suite);
    for (let byte = 0; byte < headerLength; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = message.slice();
        flipped[byte]! ^= 1 << bit;
        // A flipped key count may exceed the default policy limit (AccessDenied, tested apart).
        await expectInvalid(flipped, { policy: { maxEncryptedDataKeys: 65_535 } });
      }
    }
  }, 60_000);

  it("rejects a bit flip in every byte of the body, releasing nothing from that frame on", async () => {
    const l = await layout(suite);
    for (let byte = l.headerLength; byte < l.message.length; byte++) {
      const flipped = l.message.slice();
      flipped[byte]! ^= 0x01;
      await expectInvalid(flipped);
      if ((byte - l.headerLength) % 7 === 0) {
        const released = await streamedUntilFailure(flipped, [byte]);
        const damagedFrame = Math.floor((byte - l.headerLength) / REGULAR);
        const limit = byte >= l.signatureAt ? PLAINTEXT.length : Math.min(damagedFrame, 4) * FRAME;
        expect(released.length).toBeLessThanOrEqual(limit);
        expect(Buffer.from(released).equals(PLAINTEXT.subarray(0, released.length))).toBe(true);
      }
    }
  });

  it("rejects the wrong expected context: changed value, missing pair, extra pair", async () => {
    const { message } = await layout(suite);
    await expectInvalid(message, { encryptionContext: { ...context, tenant: "globex" } });
    await expectInvalid(message, { encryptionContext: { tenant: "acme" } });
    await expectInvalid(message, { encryptionContext: { ...context, extra: "x" } });
    await expectInvalid(message, { encryptionContext: {} });
  });

  it("rejects a keyring that holds none of the data keys", async () => {
    const { message } = await layout(suite);
    await expectInvalid(message, { keyring: aesKeyring("k1") }); // same name, other key bytes
    await expectInvalid(message, { keyring: aesKeyring("k2") });
  });
});

describe("signatures", () => {
  it("rejects a tampered, truncated or missing signature", async () => {
    const l = await layout("AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384");
    for (let byte = l.signatureAt; byte < l.message.length; byte++) {
      const flipped = l.message.slice();
      flipped[byte]! ^= 0x80;
      await expectInvalid(flipped);
    }
    await expectInvalid(l.message.subarray(0, l.signatureAt));
  });

  it("rejects a message re-signed with another key (the public key is bound to the data key)", async () => {
    const a = await layout("AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384");
    const b = await layout("AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384");
    await expectInvalid(
      concat([a.message.subarray(0, a.signatureAt), b.message.subarray(b.signatureAt)]),
    );
  });

  it("in a stream, reports the bad signature only at the end, after releasing verified frames", async () => {
    const l = await layout("AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384");
    const flipped = l.message.slice();
    flipped[flipped.length - 1]! ^= 0x01;
    const released = await streamedUntilFailure(flipped, [l.signatureAt]);
    // The documented unauthenticated-release rule: GCM-verified frames are out already.
    expect(Buffer.from(released).equals(PLAINTEXT)).toBe(true);
  });
});

describe("junk input", () => {
  it.each([
    ["empty", new Uint8Array(0)],
    ["one byte", new Uint8Array([1])],
    ["random bytes", randomBytes(300)],
    ["zeros", new Uint8Array(300)],
    ["wrong version", new Uint8Array([0x02, 0, 1, ...randomBytes(200)])],
    ["unknown suite", new Uint8Array([0x01, 0x04, 0x78, ...randomBytes(200)])],
  ])("rejects %s with InvalidCiphertextError", async (_name, bytes) => {
    await expectInvalid(bytes);
  });

  it("rejects a symmetric KMS ciphertext blob", async () => {
    const kms = await createKms();
    const { keyMetadata } = await kms.createKey();
    const { ciphertextBlob } = await kms.encrypt({
      keyId: keyMetadata.keyId,
      plaintext: new Uint8Array(32),
    });
    await expectInvalid(ciphertextBlob, {
      keyring: new KmsKeyring({ kms, keyIds: [keyMetadata.keyId] }),
    });
  });

  it("refuses input after a failure", async () => {
    const { message } = await layout();
    const flipped = message.slice();
    flipped[flipped.length - 1]! ^= 1;
    const stream = createDecryptStream({ keyring });
    await expect(throughNode(stream, [flipped])).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("reports a policy limit on the key count as AccessDeniedError, before unwrapping", async () => {
    const { message } = await layout();
    await expect(
      decryptMessage(message, { keyring, policy: { maxEncryptedDataKeys: 1 } }),
    ).resolves.toBeDefined();
    const many = await encryptMessage(PLAINTEXT, {
      keyring: new (await import("../../src/index.ts")).MultiKeyring({
        generator: keyring,
        children: [aesKeyring("a"), aesKeyring("b")],
      }),
    });
    await expect(
      decryptMessage(many, { keyring, policy: { maxEncryptedDataKeys: 2 } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  it("refuses frames longer than the policy's maxFrameLength before unwrapping or buffering", async () => {
    let unwraps = 0;
    const counting: Keyring = {
      identity: keyring.identity,
      encryptDataKey: keyring.encryptDataKey.bind(keyring),
      decryptDataKey: (...args: Parameters<typeof keyring.decryptDataKey>) => {
        unwraps++;
        return keyring.decryptDataKey(...args);
      },
    };
    const plaintext = randomBytes(70_000);
    const message = await encryptMessage(plaintext, { keyring }); // one 1 MiB-long frame
    const policy = { maxFrameLength: 65_536 };
    await expect(decryptMessage(message, { keyring: counting, policy })).rejects.toThrow(
      /frames are 1048576 bytes; the decrypt policy allows at most 65536/,
    );
    await expect(
      throughNode(createDecryptStream({ keyring: counting, policy }), [message]),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect(unwraps).toBe(0);
    const out = await decryptMessage(message, {
      keyring: counting,
      policy: { maxFrameLength: 1_048_576 },
    });
    expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
    expect(unwraps).toBe(1);
  });

  it.each([0, 1.5, 16 * 1024 * 1024 + 1, Number.NaN])(
    "rejects maxFrameLength %s as a validation error",
    async (maxFrameLength) => {
      const { message } = await layout();
      await expect(
        decryptMessage(message, { keyring, policy: { maxFrameLength } }),
      ).rejects.toThrow(/"policy.maxFrameLength" must be an integer/);
    },
  );
});
