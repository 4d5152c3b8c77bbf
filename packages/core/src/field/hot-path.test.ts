import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import {
  bindingOf,
  contextKey,
  encodeBinding as encodeBound,
  type FieldBinding,
} from "./binding.ts";

/** The binding encoding of `binding` as an operation reads it. */
const encodeBinding = (binding: FieldBinding): Uint8Array => encodeBound(bindingOf(binding, false));

import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { fromFieldText, readFieldText } from "./field-format.ts";
import { encodeFieldValueShared } from "./value-codec.ts";

/**
 * The per-value shortcuts of the engine (remembered context keys and binding encodings, shared
 * scratch buffers, one clock read per batch) must never change what a value decrypts to or is
 * bound to.
 */

const STRING: FieldSpec = { type: "string" };

/** A clock that counts its reads. */
class CountingClock extends ManualClock {
  reads = 0;
  override now(): number {
    this.reads += 1;
    return super.now();
  }
}

async function setup(
  options: { keyId?: (id: string) => (context: EncryptionContext) => string } = {},
) {
  const clock = new CountingClock();
  const kms = await createKms({ clock, audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId: options.keyId?.(keyId) ?? keyId,
    clock,
    cache: { maxAgeMs: 60_000 },
  });
  return { engine, clock };
}

describe("context keys and binding encodings", () => {
  test("a context changed in place between calls gets the key of its new pairs", () => {
    const context: Record<string, string> = { tenantId: "a" };
    const first = contextKey(context);
    context.tenantId = "b";
    expect(contextKey(context)).toBe(contextKey({ tenantId: "b" }));
    context.region = "eu";
    expect(contextKey(context)).toBe(contextKey({ region: "eu", tenantId: "b" }));
    delete context.region;
    expect(contextKey(context)).not.toBe(first);
    // Same pairs, another insertion order: one key.
    expect(contextKey({ x: "1", y: "2" })).toBe(contextKey({ y: "2", x: "1" }));
    expect(() => contextKey({ tenantId: 1 } as unknown as EncryptionContext)).toThrow(
      /"context" value for key "tenantId" must be a string/,
    );
  });

  test("bindings changed in place encode their new model, field and context", () => {
    const frozen = Object.freeze({ tenantId: "a" });
    const binding: { model: string; field: string; context: EncryptionContext } = {
      model: "User",
      field: "email",
      context: frozen,
    };
    const email = encodeBinding(binding);
    binding.field = "phone";
    const phone = encodeBinding(binding);
    expect(phone).not.toEqual(email);
    expect(phone).toEqual(
      encodeBinding({ model: "User", field: "phone", context: { tenantId: "a" } }),
    );
    binding.context = { tenantId: "b" };
    const open = encodeBinding(binding);
    (binding.context as Record<string, string>).tenantId = "c";
    expect(encodeBinding(binding)).not.toEqual(open);
    expect(encodeBinding(binding)).toEqual(
      encodeBinding({ model: "User", field: "phone", context: Object.freeze({ tenantId: "c" }) }),
    );
    expect(() => encodeBinding({ model: "", field: "f", context: {} })).toThrow(/"model"/);
  });

  test("a context found open, then changed or frozen, encodes its pairs at the time", () => {
    const expected = (tenantId: string) =>
      encodeBinding({ model: "User", field: "email", context: { tenantId, other: "x" } }).slice();
    // Computed first: encoding other contexts in between would reset what encodeBinding keeps.
    const [a, b, c] = [expected("a"), expected("b"), expected("c")];
    const context: Record<string, string> = { tenantId: "a", other: "x" };
    const binding = { model: "User", field: "email", context };
    expect(encodeBinding(binding)).toEqual(a);
    context.tenantId = "b";
    expect(encodeBinding(binding)).toEqual(b);
    Object.freeze(context);
    expect(encodeBinding(binding)).toEqual(b);
    const frozen = Object.freeze({ tenantId: "c", other: "x" });
    expect(encodeBinding({ ...binding, context: frozen })).toEqual(c);
    expect(encodeBinding(binding)).toEqual(b);
  });

  test("a value written after its context object changed is bound to the new context", async () => {
    const { engine } = await setup();
    const context: Record<string, string> = { tenantId: "a" };
    const binding = { model: "User", field: "email", context };
    await engine.encrypt(binding, STRING, "warm");
    context.tenantId = "b";
    const sealed = await engine.encrypt(binding, STRING, "for b");
    const b = { model: "User", field: "email", context: { tenantId: "b" } };
    const a = { model: "User", field: "email", context: { tenantId: "a" } };
    expect(await engine.decrypt(b, STRING, sealed)).toBe("for b");
    await expect(engine.decrypt(a, STRING, sealed)).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});

describe("shared scratch buffers", () => {
  test("readFieldText accepts and decodes exactly what fromFieldText does", () => {
    const alphabet = [..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ é"];
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 120 }).map((s) => `kms1:${s}`),
          fc
            .uint8Array({ maxLength: 90 })
            .map((b) => `kms1:${Buffer.from(b).toString("base64url")}`),
        ),
        (text) => {
          let expected: Uint8Array | undefined;
          try {
            expected = fromFieldText(text);
          } catch (error) {
            expect(error).toBeInstanceOf(InvalidCiphertextError);
          }
          if (expected === undefined) {
            expect(() => readFieldText(text)).toThrow(InvalidCiphertextError);
          } else {
            expect(readFieldText(text)).toEqual(expected);
          }
        },
      ),
    );
    const long = Buffer.alloc(5000, 7);
    expect(readFieldText(`kms1:${long.toString("base64url")}`)).toEqual(new Uint8Array(long));
  });

  test("a binding getter that decrypts another text does not swap the values", async () => {
    const { engine } = await setup();
    const plain = { model: "User", field: "email", context: { tenantId: "a" } };
    const outer = await engine.encryptText(plain, STRING, "outer-1");
    const inner = await engine.encryptText(plain, STRING, "inner-2");
    let innerValue: unknown;
    let armed = true;
    const reentrant = {
      get model() {
        if (armed) {
          armed = false;
          innerValue = engine.decryptIfCached(plain, STRING, inner);
        }
        return "User";
      },
      field: "email",
      context: { tenantId: "a" },
    } as FieldBinding;
    expect(engine.decryptIfCached(reentrant, STRING, outer)).toBe("outer-1");
    expect(innerValue).toBe("inner-2");
  });

  test("a binding getter whose own read is refused halfway does not change this value", async () => {
    const { engine } = await setup();
    const plain = { model: "User", field: "email", context: { tenantId: "a" } };
    const outer = await engine.encryptText(plain, STRING, "outer-1");
    // As long as `outer`, refused at its last character: decoded over the outer bytes first.
    const refused = `${outer.slice(0, -1)}*`;
    let nestedError: unknown;
    let armed = true;
    const reentrant = {
      get model() {
        if (armed) {
          armed = false;
          try {
            engine.decryptIfCached(plain, STRING, refused);
          } catch (error) {
            nestedError = error;
          }
        }
        return "User";
      },
      field: "email",
      context: { tenantId: "a" },
    } as FieldBinding;
    expect(engine.decryptIfCached(reentrant, STRING, outer)).toBe("outer-1");
    expect(nestedError).toBeInstanceOf(InvalidCiphertextError);
  });

  test("a key selector that encrypts another value does not change this one", async () => {
    let nested: (() => void) | undefined;
    const { engine } = await setup({
      keyId: (id) => () => {
        const run = nested;
        nested = undefined;
        run?.();
        return id;
      },
    });
    const binding = { model: "User", field: "email", context: { tenantId: "a" } };
    await engine.encrypt(binding, STRING, "warm");
    let innerSealed: Uint8Array | undefined;
    nested = () => {
      innerSealed = engine.encryptIfCached(binding, STRING, "inner-2");
    };
    const outerSealed = engine.encryptIfCached(binding, STRING, "outer-1");
    expect(innerSealed).toBeInstanceOf(Uint8Array);
    expect(await engine.decrypt(binding, STRING, outerSealed as Uint8Array)).toBe("outer-1");
    expect(await engine.decrypt(binding, STRING, innerSealed as Uint8Array)).toBe("inner-2");
  });

  test("a write that fails after encoding leaves no plaintext in the shared buffer", async () => {
    const { engine } = await setup();
    const context = { tenantId: "a" };
    await engine.encrypt({ model: "User", field: "email", context }, STRING, "warm");
    // The data key is cached for the context, so the value is encoded before the binding fails.
    expect(() =>
      engine.encryptIfCached({ model: "", field: "email", context }, STRING, "secret-value"),
    ).toThrow(/"model" must be a non-empty string/);
    const view = encodeFieldValueShared("f", "string", "");
    const scratch = new Uint8Array(view.buffer, view.byteOffset, 16);
    expect([...scratch.subarray(1)]).toEqual(new Array(15).fill(0));
  });
});

describe("decryptMany", () => {
  test("reads the clock once per batch of cached values, and still ages keys out", async () => {
    const { engine, clock } = await setup();
    const binding = { model: "User", field: "email", context: { tenantId: "a" } };
    const items = [];
    for (let i = 0; i < 50; i++) {
      items.push({
        binding,
        spec: STRING,
        stored: await engine.encryptText(binding, STRING, `v${i}`),
      });
    }
    clock.reads = 0;
    const values = await engine.decryptMany(items);
    expect(values).toEqual(items.map((_, i) => `v${i}`));
    expect(clock.reads).toBeLessThanOrEqual(2);
    // Past maxAgeMs the remembered read key is not used: the batch misses and reloads it.
    clock.advance(60_000);
    expect(engine.decryptIfCached(binding, STRING, items[0]?.stored as string)).toBeUndefined();
    expect(await engine.decryptMany(items)).toEqual(values);
  });
});

describe("the remembered read key", () => {
  // Found in review: the shortcut checked only that a key was younger than maxAgeMs, so after the
  // clock was set back it served the key for as long as the step, where the cache itself counts
  // a key "loaded after now" as expired (DataKeyCache: a wall clock set back must not stretch an
  // entry's life by the size of the step).
  test("is not used after the clock is set back, as the cache would not use it", async () => {
    const { engine, clock } = await setup();
    const binding = { model: "User", field: "email", context: { tenantId: "a" } };
    const stored = await engine.encryptText(binding, STRING, "v");
    expect(engine.decryptIfCached(binding, STRING, stored)).toBe("v");
    clock.advance(-10 * 60_000);
    expect(engine.decryptIfCached(binding, STRING, stored)).toBeUndefined();
    expect(await engine.decryptText(binding, STRING, stored)).toBe("v");
    expect(engine.decryptIfCached(binding, STRING, stored)).toBe("v");
  });
});
