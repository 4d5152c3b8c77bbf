/**
 * Equality lookups during a migration (FORMAT §6.7): while the re-encryption job moves
 * deterministic values and blind indexes from key A to key B, or legacy plaintext to
 * ciphertext, a lookup must match every stored form a row may still hold — the current one, the
 * one under each previous key whose stable data key exists, and (legacy mode) the value itself.
 */
import { describe, expect, test } from "vitest";
import { DisabledError, KmsInternalError, NotFoundError, ValidationError } from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import {
  type BlindIndexSpec,
  FieldEncryptionEngine,
  type FieldEncryptionEngineOptions,
  type FieldSpec,
} from "./field-encryption-engine.ts";
import { mayCollateAsFieldCiphertextText, toFieldText } from "./field-format.ts";

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const INDEX: BlindIndexSpec = { type: "string", normalize: ["trim", "lowercase"] };
const at = (tenantId = "t1", field = "email"): FieldBinding => ({
  model: "User",
  field,
  context: { tenantId },
});
const indexAt = (tenantId = "t1") => at(tenantId, "emailIndex");
const idOf = (sealed: Uint8Array) => Buffer.from(sealed.subarray(1, 17)).toString("hex");

/** The in-process Kms, recording the key ids GenerateDataKey is asked for. */
function recording(kms: Kms): { kms: KmsLike; generated: string[] } {
  const generated: string[] = [];
  return {
    generated,
    kms: {
      encrypt: (r, o) => kms.encrypt(r, o),
      decrypt: (r, o) => kms.decrypt(r, o),
      generateDataKey: (r, o) => {
        generated.push(r.keyId);
        return kms.generateDataKey(r, o);
      },
      generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
      sign: (r, o) => kms.sign(r, o),
      verify: (r, o) => kms.verify(r, o),
      generateMac: (r, o) => kms.generateMac(r, o),
      verifyMac: (r, o) => kms.verifyMac(r, o),
      getPublicKey: (r, o) => kms.getPublicKey(r, o),
    },
  };
}

/** Values of tenant t1 written under key A; then engines on the same store. */
async function rotated() {
  const clock = new ManualClock();
  const kms = await createKms({ audit: false, clock });
  const keyA = (await kms.createKey()).keyMetadata.keyId;
  const keyB = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = (options: Partial<FieldEncryptionEngineOptions> = {}) => {
    const recorded = recording(kms);
    const made = new FieldEncryptionEngine({
      kms: recorded.kms,
      keyId: keyB,
      dataKeyStore: store,
      clock,
      ...options,
    });
    return Object.assign(made, { generated: recorded.generated });
  };
  const before = engine({ keyId: keyA });
  const underA = {
    email: await before.encryptText(at(), DET, "ann@x"),
    index: await before.blindIndex(indexAt(), INDEX, "ann@x"),
  };
  return { kms, clock, keyA, keyB, store, engine, underA };
}

describe("lookup forms under a previous key", () => {
  test("without previousKeyIds or legacy mode there is one form: the current one", async () => {
    const { engine, underA } = await rotated();
    const app = engine();
    const forms = await app.lookupFormsText(at(), DET, "ann@x");
    expect(forms).toEqual([await app.encryptText(at(), DET, "ann@x")]);
    expect(forms).not.toContain(underA.email);
    expect(await app.lookupForms(at(), DET, "ann@x")).toHaveLength(1);
    expect(await app.blindIndexForms(indexAt(), INDEX, " ANN@x")).toEqual([
      await app.blindIndex(indexAt(), INDEX, "ann@x"),
    ]);
  });

  test("the current form first, then the form under each previous key", async () => {
    const { engine, keyA, underA } = await rotated();
    const app = engine({ previousKeyIds: [keyA] });
    const current = await app.encryptText(at(), DET, "ann@x");
    expect(await app.lookupFormsText(at(), DET, "ann@x")).toEqual([current, underA.email]);
    const bytes = await app.lookupForms(at(), DET, "ann@x");
    expect(bytes.map(toFieldText)).toEqual([current, underA.email]);
    // Normalized as the index is: " ANN@x" is "ann@x".
    expect(await app.blindIndexForms(indexAt(), INDEX, " ANN@x")).toEqual([
      await app.blindIndex(indexAt(), INDEX, "ann@x"),
      underA.index,
    ]);
    // Another value's forms match none of ann's.
    const other = await app.lookupFormsText(at(), DET, "bob@x");
    expect(other).toHaveLength(2);
    expect(other).not.toContain(underA.email);
  });

  test("a previous key with no stable data key for the context adds nothing and creates nothing", async () => {
    const { engine, keyA, keyB, store } = await rotated();
    const app = engine({ previousKeyIds: [keyA] });
    const rows = store.size;
    // Tenant t2 never wrote under key A.
    expect(await app.lookupFormsText(at("t2"), DET, "ann@x")).toHaveLength(1);
    expect(await app.blindIndexForms(indexAt("t2"), INDEX, "ann@x")).toHaveLength(1);
    expect(app.generated).toEqual([keyB]); // t2's current stable key, nothing under A
    expect(store.size).toBe(rows + 1);
  });

  test("previousKeyIds as a function gets the key context; the current key id is skipped", async () => {
    const { engine, keyA, keyB, underA } = await rotated();
    const seen: EncryptionContext[] = [];
    const app = engine({
      previousKeyIds: (context) => {
        seen.push(context);
        return context.tenantId === "t1" ? [keyB, keyA, keyA] : [];
      },
    });
    expect(await app.lookupFormsText(at(), DET, "ann@x")).toEqual([
      await app.encryptText(at(), DET, "ann@x"),
      underA.email,
    ]);
    expect(seen[0]).toEqual({ tenantId: "t1" });
    // A field bound to its row too: previous keys are chosen by the key context only.
    const own: FieldBinding = {
      ...at(),
      context: { tenantId: "t1", id: "7" },
      keyContext: { tenantId: "t1" },
    };
    seen.length = 0;
    await app.lookupFormsText(own, DET, "ann@x");
    expect(seen).toEqual([{ tenantId: "t1" }]);
    expect(await app.lookupFormsText(at("t2"), DET, "ann@x")).toHaveLength(1);
  });

  test("after the job, an engine without previousKeyIds uses one form again", async () => {
    const { engine, keyA, underA } = await rotated();
    const during = engine({ previousKeyIds: [keyA] });
    expect(await during.lookupFormsText(at(), DET, "ann@x")).toContain(underA.email);
    const after = engine();
    expect(await after.lookupFormsText(at(), DET, "ann@x")).toEqual([
      await after.encryptText(at(), DET, "ann@x"),
    ]);
  });

  test("bad options and arguments are refused", async () => {
    const { engine } = await rotated();
    expect(() => engine({ previousKeyIds: [""] })).toThrow(ValidationError);
    expect(() => engine({ previousKeyIds: "k" as never })).toThrow(ValidationError);
    const broken = engine({ previousKeyIds: () => "k" as never });
    await expect(broken.lookupFormsText(at(), DET, "ann@x")).rejects.toThrow(/previousKeyIds/);
    await expect(broken.blindIndexForms(indexAt(), INDEX, "a")).rejects.toThrow(ValidationError);
    const app = engine();
    // A randomized field has no lookup forms: its ciphertexts match nothing.
    await expect(app.lookupFormsText(at(), { type: "string" }, "ann@x")).rejects.toThrow(
      /deterministic/,
    );
    await expect(app.lookupFormsText(at(), DET, 42)).rejects.toThrow(ValidationError);
  });

  test("a disabled previous key fails the lookup instead of leaving its rows unmatched", async () => {
    const { engine, kms, keyA } = await rotated();
    await kms.disableKey({ keyId: keyA });
    const app = engine({ previousKeyIds: [keyA] });
    await expect(app.lookupFormsText(at(), DET, "ann@x")).rejects.toBeInstanceOf(DisabledError);
    await expect(app.blindIndexForms(indexAt(), INDEX, "ann@x")).rejects.toBeInstanceOf(
      DisabledError,
    );
  });

  test("a previous key deleted for good is passed over: its values cannot be read or matched", async () => {
    const { engine, kms, clock, keyA } = await rotated();
    await kms.scheduleKeyDeletion({ keyId: keyA, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    await expect(kms.describeKey({ keyId: keyA })).rejects.toBeInstanceOf(NotFoundError);
    const app = engine({ previousKeyIds: [keyA] });
    expect(await app.lookupFormsText(at(), DET, "ann@x")).toHaveLength(1);
    expect(await app.blindIndexForms(indexAt(), INDEX, "ann@x")).toHaveLength(1);
  });

  test("a row planted under a previous key's stable id with another context is refused before any unwrap", async () => {
    const { keyA, keyB, store, underA, kms } = await rotated();
    const planted = new MemoryDataKeyStore();
    const row = await store.get(idOf(Buffer.from(underA.email.slice(5), "base64url")));
    expect(row?.purpose).toBe("stable");
    await planted.insert({
      ...(row as NonNullable<typeof row>),
      encryptionContext: { tenantId: "t9" },
    });
    const app = new FieldEncryptionEngine({
      kms,
      keyId: keyB,
      dataKeyStore: planted,
      previousKeyIds: [keyA],
    });
    await expect(app.lookupFormsText(at(), DET, "ann@x")).rejects.toBeInstanceOf(KmsInternalError);
  });
});

describe("legacy plaintext form", () => {
  async function legacyEngine(legacyPlaintext = true) {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    return new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
      legacyPlaintext,
    });
  }

  test("with legacyPlaintext the value itself comes last; without it there is none", async () => {
    const engine = await legacyEngine();
    const forms = await engine.lookupFormsText(at(), DET, "old@x");
    expect(forms).toEqual([await engine.encryptText(at(), DET, "old@x"), "old@x"]);
    const bytes = await engine.lookupForms(at(), DET, "old@x");
    expect(Buffer.from(bytes[1] as Uint8Array).toString()).toBe("old@x");
    // What a legacy row holds reads back as the value looked up.
    expect(await engine.decryptText(at(), DET, forms[1] as string)).toBe("old@x");
    const strict = await legacyEngine(false);
    expect(await strict.lookupFormsText(at(), DET, "old@x")).toHaveLength(1);
    expect(strict.legacyForm(at(), DET, "old@x", "text")).toBeUndefined();
  });

  test("each type has one spelling, read back as the value by the legacy path", async () => {
    const engine = await legacyEngine();
    const cases: [FieldSpec["type"], unknown, string][] = [
      ["number", 42.5, "42.5"],
      ["number", -0, "-0"],
      ["boolean", false, "false"],
      ["date", new Date(0), "1970-01-01T00:00:00.000Z"],
      ["bigint", 12n, "12"],
      ["decimal", "1.50", "1.50"],
      ["json", { a: [1, "x"] }, '{"a":[1,"x"]}'],
    ];
    for (const [type, value, text] of cases) {
      const spec: FieldSpec = { type, mode: "deterministic" };
      expect(engine.legacyForm(at(), spec, value, "text")).toBe(text);
      expect(await engine.decryptText(at(), spec, text)).toEqual(value);
      expect(
        Buffer.from(engine.legacyForm(at(), spec, value, "bytes") as Uint8Array).toString(),
      ).toBe(text);
    }
    const bytes: FieldSpec = { type: "bytes", mode: "deterministic" };
    expect(engine.legacyForm(at(), bytes, Uint8Array.of(1, 2), "bytes")).toEqual(
      Uint8Array.of(1, 2),
    );
    // Not UTF-8: no String column holds it as legacy text.
    expect(engine.legacyForm(at(), bytes, Uint8Array.of(0xff), "text")).toBeUndefined();
  });

  test("a form that would read as ciphertext is no legacy form", async () => {
    const engine = await legacyEngine();
    expect(engine.legacyForm(at(), DET, "kms1:AAAA", "text")).toBeUndefined();
    const header = new Uint8Array(40);
    header[0] = 0xc2;
    const bytes: FieldSpec = { type: "bytes", mode: "deterministic" };
    expect(engine.legacyForm(at(), bytes, header, "bytes")).toBeUndefined();
    expect(() => engine.legacyForm(at(), DET, 1, "text")).toThrow(ValidationError);
  });
});

describe("legacy forms under a case- or accent-insensitive collation", () => {
  test("the prefix in another case, width or accent is no legacy form: it could match a stored ciphertext", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const engine = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
      legacyPlaintext: true,
    });
    const stored = await engine.encryptText(at(), DET, "victim@x");
    const rest = stored.slice("kms1:".length);
    const spellings = [
      `KMS1:${rest}`,
      `Kms1:${rest}`,
      `kMs1:${rest}`,
      `\uff4b\uff4d\uff53\uff11\uff1a${rest}`, // fullwidth
      `\u212ams1:${rest}`, // Kelvin sign
      `km\u017f1:${rest}`, // long s
      `k\u200bms1:${rest}`, // zero-width space
      `\u0301kms1:${rest}`, // a leading combining accent
      `k\u0301ms1:${rest}`,
      `\u0000kms1:${rest}`,
    ];
    for (const probe of spellings) {
      expect(mayCollateAsFieldCiphertextText(probe), JSON.stringify(probe)).toBe(true);
      expect(engine.legacyForm(at(), DET, probe, "text"), JSON.stringify(probe)).toBeUndefined();
      const forms = await engine.lookupFormsText(at(), DET, probe);
      expect(forms).toHaveLength(1);
      expect(forms[0]?.startsWith("kms1:")).toBe(true);
    }
    // Ordinary values keep their legacy form, the k-words and non-ASCII ones included.
    for (const value of ["kms1", "kms2:x", "kate@x", "kms 1:x", "ğkms1:", "", "k"]) {
      expect(mayCollateAsFieldCiphertextText(value), value).toBe(false);
      expect(engine.legacyForm(at(), DET, value, "text")).toBe(value);
    }
    // Bytes columns compare bytes: the text "KMS1:…" there is an ordinary legacy value.
    expect(
      Buffer.from(engine.legacyForm(at(), DET, `KMS1:${rest}`, "bytes") as Uint8Array).toString(),
    ).toBe(`KMS1:${rest}`);
  });
});
