import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * Found in review: the engine aged the keys it holds beside the cache (the remembered read key,
 * stable keys) by readings it took itself, so a clock moved forward and then set back shrank their
 * ages by the step: a key 59 s old read as 1 s old after a 58 s step, and served 58 s past
 * `maxAgeMs`. The cache's own rule now holds for them: a reading earlier than the last one (any
 * user's, or NaN) retires every cached key; values go on opening by unwrapping again.
 */

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };
const MAX_AGE = 60_000;
const at = (field: string): FieldBinding => ({ model: "Patient", field, context: { t: "1" } });

/** A KMS stand-in that counts the calls the engine makes. */
function countingKms() {
  const wrapped = new Map<string, Uint8Array>();
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
  const calls = { generateDataKey: 0, decrypt: 0 };
  const kms = {
    generateDataKey: async () => {
      calls.generateDataKey += 1;
      const plaintext = new Uint8Array(randomBytes(32));
      const ciphertextBlob = new Uint8Array(randomBytes(16));
      wrapped.set(hex(ciphertextBlob), plaintext.slice());
      return { keyId: "arn:stub", plaintext, ciphertextBlob };
    },
    decrypt: async (request: { ciphertextBlob: Uint8Array }) => {
      calls.decrypt += 1;
      const known = wrapped.get(hex(request.ciphertextBlob));
      if (known === undefined) throw new Error("unknown ciphertext");
      return {
        keyId: "arn:stub",
        plaintext: known.slice(),
        encryptionAlgorithm: "SYMMETRIC_DEFAULT",
      };
    },
  } as unknown as KmsLike;
  return { kms, calls };
}

function setup(shared?: DataKeyCache, clock = new ManualClock(0)) {
  const { kms, calls } = countingKms();
  const engine = new FieldEncryptionEngine({
    kms,
    keyId: "k",
    dataKeyStore: new MemoryDataKeyStore(),
    clock,
    ...(shared === undefined ? { cache: { maxAgeMs: MAX_AGE } } : { dataKeyCache: shared }),
  });
  return { engine, clock, calls };
}

describe("a clock moved forward, then set back to before the key's expiry", () => {
  test("retires the stable key: deterministic values open again by unwrapping it anew", async () => {
    const { engine, clock, calls } = setup();
    const sealed = await engine.encryptText(at("ssn"), DET, "123-45-6789");
    clock.advance(MAX_AGE - 1000);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBe("123-45-6789");
    // Set back 58 s: counted from this reading the key would be 1 s old and serve 59 s more.
    clock.advance(-(MAX_AGE - 2000));
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBeUndefined();
    expect(calls.decrypt).toBe(0);
    expect(await engine.decryptText(at("ssn"), DET, sealed)).toBe("123-45-6789");
    expect(calls.decrypt).toBe(1);
    // The same key, unwrapped again: equal values still encrypt equally.
    expect(await engine.encryptText(at("ssn"), DET, "123-45-6789")).toBe(sealed);
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBe("123-45-6789");
  });

  test("retires the stable key behind blind indexes", async () => {
    const { engine, clock, calls } = setup();
    const index = await engine.blindIndex(at("emailIdx"), {}, "a@x");
    clock.advance(MAX_AGE - 1000);
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x")).toBe(index);
    clock.advance(-(MAX_AGE - 2000));
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x")).toBe(index);
    expect(calls.decrypt).toBe(1);
  });

  test("retires a stable key held for a transaction scope", async () => {
    const { engine, clock, calls } = setup();
    const scoped = { transactionScope: "tx" };
    const index = await engine.blindIndex(at("emailIdx"), {}, "a@x", scoped);
    clock.advance(MAX_AGE - 1000);
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x", scoped)).toBe(index);
    clock.advance(-(MAX_AGE - 2000));
    expect(await engine.blindIndex(at("emailIdx"), {}, "a@x", scoped)).toBe(index);
    expect(calls.decrypt).toBe(1);
  });

  test("retires the remembered read key: the value opens by unwrapping its key again", async () => {
    const { engine, clock, calls } = setup();
    const sealed = await engine.encryptText(at("note"), RANDOM, "v");
    clock.advance(MAX_AGE - 1000);
    expect(engine.decryptIfCached(at("note"), RANDOM, sealed)).toBe("v");
    expect(engine.decryptIfCached(at("note"), RANDOM, sealed)).toBe("v");
    clock.advance(-(MAX_AGE - 2000));
    expect(engine.decryptIfCached(at("note"), RANDOM, sealed)).toBeUndefined();
    expect(
      await engine.decryptMany([{ binding: at("note"), spec: RANDOM, stored: sealed }]),
    ).toEqual(["v"]);
    expect(calls.decrypt).toBe(1);
  });

  test("retires the write key when only the read shortcut saw the later time", async () => {
    const { engine, clock, calls } = setup();
    const sealed = await engine.encryptText(at("note"), RANDOM, "v");
    expect(engine.decryptIfCached(at("note"), RANDOM, sealed)).toBe("v");
    clock.advance(MAX_AGE - 1000);
    // Served by the remembered read key, without a cache lookup.
    expect(engine.decryptIfCached(at("note"), RANDOM, sealed)).toBe("v");
    clock.advance(-(MAX_AGE - 2000));
    await engine.encryptText(at("note"), RANDOM, "w");
    expect(calls.generateDataKey).toBe(2);
  });

  test("in a shared cache, a later reading by the message layer retires the engine's stable key", async () => {
    const clock = new ManualClock(0);
    const shared = new DataKeyCache({ maxAgeMs: MAX_AGE, clock });
    const { engine } = setup(shared, clock);
    const sealed = await engine.encryptText(at("ssn"), DET, "v");
    clock.advance(MAX_AGE - 1000);
    shared.take("message key", { messages: 1, bytes: 1 });
    clock.advance(-(MAX_AGE - 2000));
    expect(engine.decryptIfCached(at("ssn"), DET, sealed)).toBeUndefined();
    expect(await engine.decryptText(at("ssn"), DET, sealed)).toBe("v");
  });

  test("a clock reading NaN retires every key, and keys made after it serve again", async () => {
    const { engine, clock, calls } = setup();
    const det = await engine.encryptText(at("ssn"), DET, "d");
    const rnd = await engine.encryptText(at("note"), RANDOM, "r");
    clock.set(Number.NaN);
    expect(engine.decryptIfCached(at("ssn"), DET, det)).toBeUndefined();
    expect(engine.decryptIfCached(at("note"), RANDOM, rnd)).toBeUndefined();
    clock.set(1000);
    expect(await engine.decryptText(at("ssn"), DET, det)).toBe("d");
    expect(await engine.decryptText(at("note"), RANDOM, rnd)).toBe("r");
    expect(calls.decrypt).toBe(2);
    expect(engine.decryptIfCached(at("ssn"), DET, det)).toBe("d");
    expect(engine.decryptIfCached(at("note"), RANDOM, rnd)).toBe("r");
  });
});
