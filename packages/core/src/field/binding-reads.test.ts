import { describe, expect, test } from "vitest";
import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * The engine reads a binding (model, field, context and each context value) once per operation,
 * and everything it checks, encodes and caches comes from that one read: getters that answer
 * differently, or call back into the engine, can neither file one context's binding under
 * another's key nor make a call open another value's bytes (found in review).
 */

const STRING: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };

/** A clock that runs `hook` (once) when next read. */
class HookClock extends ManualClock {
  hook: (() => void) | undefined;
  override now(): number {
    const hook = this.hook;
    this.hook = undefined;
    hook?.();
    return super.now();
  }
}

async function setup(clock = new ManualClock()) {
  const kms = await createKms({ clock, audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId,
    clock,
    cache: { maxAgeMs: 60_000 },
  });
  return { engine };
}

const row = (rowId: string): FieldBinding => ({
  model: "M",
  field: "secret",
  context: { tenantId: "t1", rowId },
  keyContext: { tenantId: "t1" },
});

describe("a binding's context is read once", () => {
  // First in the file: the bug showed only until the first frozen context was met.
  test("a missing context is refused on reads, not taken as {}", async () => {
    const { engine } = await setup();
    const sealed = await engine.encryptText({ model: "M", field: "f", context: {} }, STRING, "v");
    const missing = { model: "M", field: "f", context: undefined } as unknown as FieldBinding;
    await expect(engine.decryptText(missing, STRING, sealed)).rejects.toThrow(ValidationError);
    expect(() => engine.decryptIfCached(missing, STRING, sealed)).toThrow(ValidationError);
  });

  test("a frozen context whose getter changes does not bind one row's values to another's", async () => {
    const { engine } = await setup();
    let current = "r1";
    const live = Object.freeze({
      tenantId: "t1",
      get rowId() {
        return current;
      },
    }) as EncryptionContext;
    const liveAt = (field: string): FieldBinding => ({
      model: "M",
      field,
      context: live,
      keyContext: { tenantId: "t1" },
    });
    await engine.encrypt(liveAt("x"), STRING, "warm");
    current = "r2";
    // Bound to the value the getter gives now: a frozen object with an accessor is not immutable.
    const live2 = await engine.encryptText(liveAt("secret"), STRING, "live r2");
    expect(await engine.decryptText(row("r2"), STRING, live2)).toBe("live r2");
    const sealed = await engine.encryptText(row("r1"), STRING, "row-1 secret");
    expect(await engine.decryptText(row("r1"), STRING, sealed)).toBe("row-1 secret");
    await expect(engine.decryptText(row("r2"), STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
  });

  test("an open context whose getter answers differently on each read poisons nothing", async () => {
    const { engine } = await setup();
    let n = 0;
    const flip = {
      tenantId: "t1",
      get rowId() {
        return n++ % 2 === 0 ? "r1" : "r2";
      },
    } as EncryptionContext;
    await engine
      .encrypt({ ...row("r1"), context: flip }, STRING, "x")
      .catch((error: unknown) => error);
    const sealed = await engine.encryptText(row("r1"), STRING, "row-1 secret");
    await expect(engine.decryptText(row("r2"), STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
  });
});

describe("caller code that re-enters the engine does not swap the value read", () => {
  const plain: FieldBinding = { model: "User", field: "email", context: { tenantId: "a" } };
  /** A binding whose context getter decrypts `other` on its second read. */
  const reentrant = (engine: FieldEncryptionEngine, other: string): FieldBinding => {
    let reads = 0;
    const context = { tenantId: "a" };
    return {
      model: "User",
      field: "email",
      get context() {
        if (++reads === 2) engine.decryptIfCached(plain, STRING, other);
        return context;
      },
    };
  };

  test("decryptIfCached: a context getter", async () => {
    const { engine } = await setup();
    const a = await engine.encryptText(plain, STRING, "value-A");
    const b = await engine.encryptText(plain, STRING, "value-B");
    expect(engine.decryptIfCached(reentrant(engine, b), STRING, a)).toBe("value-A");
  });

  test("decryptMany: a context getter", async () => {
    const { engine } = await setup();
    const a = await engine.encryptText(plain, STRING, "value-A");
    const b = await engine.encryptText(plain, STRING, "value-B");
    const binding = reentrant(engine, b);
    expect(await engine.decryptMany([{ binding, spec: STRING, stored: a }])).toEqual(["value-A"]);
  });

  test("deterministic: a clock read before the value's bytes are copied", async () => {
    const clock = new HookClock();
    const { engine } = await setup(clock);
    const ssn: FieldBinding = { model: "User", field: "ssn", context: { tenantId: "a" } };
    const a = await engine.encryptText(ssn, DET, "det-AAA");
    const b = await engine.encryptText(ssn, DET, "det-BBB");
    engine.decryptIfCached(ssn, DET, a);
    engine.decryptIfCached(ssn, DET, b);
    clock.hook = () => engine.decryptIfCached(ssn, DET, b);
    expect(engine.decryptIfCached(ssn, DET, a)).toBe("det-AAA");
  });

  test("randomized: a clock read while the key is looked up leaves the key memo right", async () => {
    const clock = new HookClock();
    const { engine } = await setup(clock);
    const at = (tenantId: string): FieldBinding => ({ ...plain, context: { tenantId } });
    // Two data keys (two tenants), values of one length.
    const a = await engine.encryptText(at("a"), STRING, "value-A");
    const b = await engine.encryptText(at("b"), STRING, "value-B");
    expect(engine.decryptIfCached(at("a"), STRING, a)).toBe("value-A");
    expect(engine.decryptIfCached(at("b"), STRING, b)).toBe("value-B");
    // A's key is looked up (the last key was B's) and the clock read then decrypts B.
    clock.hook = () => engine.decryptIfCached(at("b"), STRING, b);
    expect(engine.decryptIfCached(at("a"), STRING, a)).toBe("value-A");
    expect(engine.decryptIfCached(at("b"), STRING, b)).toBe("value-B");
  });

  test('a context key "__proto__" (from JSON) is bound like any other key', async () => {
    const { engine } = await setup();
    const context = (value: string): EncryptionContext =>
      JSON.parse(`{"tenantId":"t1","__proto__":"${value}"}`) as EncryptionContext;
    const binding = (value: string): FieldBinding => ({
      model: "M",
      field: "f",
      context: context(value),
    });
    const sealed = await engine.encryptText(binding("a"), STRING, "v");
    expect(await engine.decryptText(binding("a"), STRING, sealed)).toBe("v");
    await expect(engine.decryptText(binding("b"), STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
    await expect(
      engine.decryptText({ model: "M", field: "f", context: { tenantId: "t1" } }, STRING, sealed),
    ).rejects.toThrow(InvalidCiphertextError);
  });
});

/**
 * The engine answers a frozen binding it met among the last few with its earlier read (adapters
 * pass one per column and tenant). Only a binding that cannot read differently may be: each case
 * below changes what the same binding object reads, and the engine must bind the new answer.
 */
describe("a binding object met again", () => {
  const tenant = (tenantId: string) => Object.freeze({ tenantId });

  test("frozen, with a frozen context: answered as before, over many values", async () => {
    const { engine } = await setup();
    const binding = Object.freeze({ model: "M", field: "f", context: tenant("t1") });
    const other = Object.freeze({ model: "M", field: "g", context: tenant("t1") });
    const sealed = await engine.encryptText(binding, STRING, "v");
    const items = Array.from({ length: 40 }, (_, i) => ({
      binding: i % 2 === 0 ? binding : other,
      spec: STRING,
      stored: sealed,
    }));
    await expect(engine.decryptMany(items.slice(0, 1))).resolves.toEqual(["v"]);
    // The second item is the same value read as column g: refused, memo or not.
    await expect(engine.decryptMany(items)).rejects.toThrow(InvalidCiphertextError);
  });

  test("not frozen: a field changed since is bound", async () => {
    const { engine } = await setup();
    const binding = { model: "M", field: "f", context: tenant("t1") };
    const sealed = await engine.encryptText(binding, STRING, "v");
    expect(await engine.decryptText(binding, STRING, sealed)).toBe("v");
    binding.field = "g";
    await expect(engine.decryptText(binding, STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
  });

  test("frozen over a context that is not: a tenant changed since is bound", async () => {
    const { engine } = await setup();
    const context = { tenantId: "t1" };
    const binding = Object.freeze({ model: "M", field: "f", context });
    const sealed = await engine.encryptText(binding, STRING, "v");
    expect(await engine.decryptText(binding, STRING, sealed)).toBe("v");
    context.tenantId = "t2";
    await expect(engine.decryptText(binding, STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
  });

  test("frozen, with a context getter: each call binds what the getter answers", async () => {
    const { engine } = await setup();
    let current = tenant("t1");
    const binding = Object.freeze(
      Object.defineProperty({ model: "M", field: "f" }, "context", {
        get: () => current,
        enumerable: true,
      }),
    ) as FieldBinding;
    const sealed = await engine.encryptText(binding, STRING, "v");
    expect(await engine.decryptText(binding, STRING, sealed)).toBe("v");
    current = tenant("t2");
    await expect(engine.decryptText(binding, STRING, sealed)).rejects.toThrow(
      InvalidCiphertextError,
    );
  });

  test("frozen, with a keyContext getter: each write checks what the getter answers", async () => {
    const { engine } = await setup();
    let keyContext = tenant("t1");
    const binding = Object.freeze(
      Object.defineProperty(
        { model: "M", field: "f", context: Object.freeze({ tenantId: "t1", rowId: "r1" }) },
        "keyContext",
        { get: () => keyContext, enumerable: true },
      ),
    ) as FieldBinding;
    await engine.encryptText(binding, STRING, "v");
    keyContext = tenant("t2");
    await expect(engine.encryptText(binding, STRING, "v")).rejects.toThrow(ValidationError);
  });
});
