import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { DisabledError, InvalidStateError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * Stable data keys (deterministic values, blind indexes) age like randomized ones: past the
 * cache's `maxAgeMs` they are unwrapped again through the KMS, so that disabling a KMS key or
 * scheduling its deletion crypto-shreds them in a running process too, and their bytes do not
 * stay in memory past their age.
 */

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };
const MAX_AGE = 60_000;

const at = (field: string, tenantId = "t1"): FieldBinding => ({
  model: "Patient",
  field,
  context: { tenantId },
});

async function withKms() {
  const clock = new ManualClock();
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({
    kms,
    keyId,
    dataKeyStore: new MemoryDataKeyStore(),
    clock,
    cache: { maxAgeMs: MAX_AGE },
  });
  return { clock, kms, keyId, engine };
}

const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** A KMS stand-in that counts its calls and keeps every plaintext key it hands out. */
function stubKms() {
  const wrapped = new Map<string, Uint8Array>();
  const unused = () => Promise.reject(new Error("not used by the field engine"));
  const stub = {
    generated: [] as Uint8Array[],
    unwrapped: [] as Uint8Array[],
    calls: { generateDataKey: 0, decrypt: 0 },
    /** The wrapped keys handed out, in order, as hex. */
    blobs: [] as string[],
    /** Awaited before each unwrap, with the wrapped key. */
    beforeDecrypt: undefined as ((blob: string) => Promise<void>) | undefined,
    kms: {
      generateDataKey: async () => {
        stub.calls.generateDataKey += 1;
        const plaintext = new Uint8Array(randomBytes(32));
        const ciphertextBlob = new Uint8Array(randomBytes(16));
        wrapped.set(hex(ciphertextBlob), plaintext.slice());
        stub.blobs.push(hex(ciphertextBlob));
        stub.generated.push(plaintext);
        return { keyId: "arn:stub", plaintext, ciphertextBlob };
      },
      decrypt: async (request: { ciphertextBlob: Uint8Array }) => {
        stub.calls.decrypt += 1;
        await stub.beforeDecrypt?.(hex(request.ciphertextBlob));
        const known = wrapped.get(hex(request.ciphertextBlob));
        if (known === undefined) throw new Error("unknown ciphertext");
        const plaintext = known.slice();
        stub.unwrapped.push(plaintext);
        return { keyId: "arn:stub", plaintext, encryptionAlgorithm: "SYMMETRIC_DEFAULT" };
      },
      encrypt: unused,
      generateDataKeyWithoutPlaintext: unused,
      sign: unused,
      verify: unused,
      generateMac: unused,
      verifyMac: unused,
      getPublicKey: unused,
    } as unknown as KmsLike,
  };
  return stub;
}

function stubEngine(store = new MemoryDataKeyStore()) {
  const stub = stubKms();
  const clock = new ManualClock();
  const engine = new FieldEncryptionEngine({
    kms: stub.kms,
    keyId: "k",
    dataKeyStore: store,
    clock,
    cache: { maxAgeMs: MAX_AGE },
  });
  return { stub, clock, engine, store };
}

describe("a disabled KMS key stops stable keys once maxAgeMs has passed", () => {
  // Found in review: randomized values stopped decrypting after the key was disabled, while
  // deterministic values and blind indexes kept working in the same process for ever.
  test("deterministic decrypt, deterministic encrypt and blind indexes fail like randomized reads", async () => {
    const { clock, kms, keyId, engine } = await withKms();
    const sealed = await engine.encryptText(at("ssn"), DET, "123-45-6789");
    const note = await engine.encryptText(at("note"), RANDOM, "note");
    const index = await engine.blindIndex(at("emailIdx"), {}, "a@x");
    await kms.disableKey({ keyId });

    // Within maxAgeMs the keys in memory serve, as randomized ones do.
    clock.advance(MAX_AGE - 1);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBe("123-45-6789");
    expect(await engine.encryptText(at("ssn"), DET, "123-45-6789")).toBe(sealed);
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x")).toBe(index);

    clock.advance(1);
    await expect(engine.decryptText(at("note"), RANDOM, note)).rejects.toBeInstanceOf(
      DisabledError,
    );
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBeUndefined();
    await expect(engine.decryptText(at("ssn"), DET, sealed)).rejects.toBeInstanceOf(DisabledError);
    await expect(engine.encryptText(at("ssn"), DET, "999-99-9999")).rejects.toBeInstanceOf(
      DisabledError,
    );
    await expect(engine.blindIndex(at("emailIdx"), {}, "a@x")).rejects.toBeInstanceOf(
      DisabledError,
    );
    await expect(
      engine.decryptMany([{ binding: at("ssn"), spec: DET, stored: sealed }]),
    ).rejects.toBeInstanceOf(DisabledError);

    // Enabled again, the same key is unwrapped again: equal values still encrypt equally.
    await kms.enableKey({ keyId });
    expect(await engine.encryptText(at("ssn"), DET, "123-45-6789")).toBe(sealed);
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x")).toBe(index);
  });

  test("a key pending deletion stops them too, and a clock set back expires them at once", async () => {
    const { clock, kms, keyId, engine } = await withKms();
    const sealed = await engine.encryptText(at("ssn"), DET, "v");
    clock.advance(-1);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBeUndefined();
    expect(await engine.decryptText(at("ssn"), DET, sealed)).toBe("v");
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    clock.advance(MAX_AGE);
    await expect(engine.blindIndex(at("ssn"), {}, "v")).rejects.toBeInstanceOf(InvalidStateError);
  });
});

describe("expired stable keys", () => {
  test("are unwrapped again (one KMS call) to the same key, and their old bytes zeroed", async () => {
    const { stub, clock, engine } = stubEngine();
    const sealed = await engine.encrypt(at("ssn"), DET, "v");
    const index = await engine.blindIndex(at("ssn"), {}, "v");
    const made = stub.generated[0] as Uint8Array;
    clock.advance(MAX_AGE);
    expect(await engine.encrypt(at("ssn"), DET, "v")).toEqual(sealed);
    expect(await engine.blindIndex(at("ssn"), {}, "v")).toBe(index);
    expect(await engine.decrypt(at("ssn"), DET, sealed)).toBe("v");
    expect(stub.calls).toEqual({ generateDataKey: 1, decrypt: 1 });
    expect(allZero(made)).toBe(true);
    expect(allZero(stub.unwrapped[0] as Uint8Array)).toBe(false);
  });

  test("are zeroed by the next use of any stable key, even if nobody asks for them again", async () => {
    const { stub, clock, engine } = stubEngine();
    await engine.encrypt(at("ssn", "t1"), DET, "v");
    const first = stub.generated[0] as Uint8Array;
    clock.advance(MAX_AGE);
    await engine.blindIndex(at("ssn", "t2"), {}, "v");
    expect(allZero(first)).toBe(true);
    expect(allZero(stub.generated[1] as Uint8Array)).toBe(false);
  });

  test("a use holding a key when it expires finishes with it; the key is zeroed after that use", async () => {
    const { stub, clock, engine, store } = stubEngine();
    const writer = new FieldEncryptionEngine({ kms: stub.kms, keyId: "k", dataKeyStore: store });
    const one = await writer.encryptText(at("ssn"), DET, "one");
    const two = await writer.encryptText(at("ssn"), DET, "two");
    const three = await writer.encryptText(at("ssn"), DET, "three");
    const random = await writer.encryptText(at("note"), RANDOM, "note");
    const [stableBlob, randomBlob] = stub.blobs as [string, string];
    // The reader's batch unwraps the stable key and holds it while it waits for the randomized
    // one; meanwhile the clock moves past maxAgeMs and another value of that key is read.
    let inner: unknown = "not read";
    let reloaded: Promise<unknown> | undefined;
    stub.beforeDecrypt = async (blob) => {
      if (blob !== randomBlob) return;
      stub.beforeDecrypt = undefined;
      // A macrotask: the stable key's unwrap (microtasks) is done and the batch holds it.
      await new Promise((resolve) => setTimeout(resolve, 0));
      clock.advance(MAX_AGE);
      inner = engine.decryptIfCached(at("ssn"), DET, three);
      reloaded = engine.decryptText(at("ssn"), DET, three);
    };
    const values = await engine.decryptMany([
      { binding: at("ssn"), spec: DET, stored: one },
      { binding: at("note"), spec: RANDOM, stored: random },
      { binding: at("ssn"), spec: DET, stored: two },
    ]);
    expect(values).toEqual(["one", "note", "two"]);
    // Expired for everyone else: the synchronous read missed, and the key was unwrapped again.
    expect(inner).toBeUndefined();
    expect(await reloaded).toBe("three");
    expect(stub.calls.decrypt).toBe(3);
    expect(stableBlob).not.toBe(randomBlob);
    const [held, , fresh] = stub.unwrapped as [Uint8Array, Uint8Array, Uint8Array];
    expect(allZero(held)).toBe(true);
    expect(allZero(fresh)).toBe(false);
    expect(engine.decryptIfCached(at("ssn"), DET, one)).toBe("one");
  });

  test("maxAgeMs holds to the millisecond on the synchronous read path", async () => {
    const { clock, engine } = stubEngine();
    const sealed = await engine.encryptText(at("ssn"), DET, "v");
    clock.advance(MAX_AGE - 1);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBe("v");
    clock.advance(1);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBeUndefined();
  });

  test("inside a transaction scope too", async () => {
    const { stub, clock, engine } = stubEngine();
    const scope = { transactionScope: "tx" };
    const sealed = await engine.encrypt(at("ssn"), DET, "v", scope);
    clock.advance(MAX_AGE);
    expect(await engine.encrypt(at("ssn"), DET, "v", scope)).toEqual(sealed);
    expect(stub.calls).toEqual({ generateDataKey: 1, decrypt: 1 });
    expect(allZero(stub.generated[0] as Uint8Array)).toBe(true);
    engine.endTransactionScope("tx", "commit");
    expect(await engine.decrypt(at("ssn"), DET, sealed)).toBe("v");
  });
});
