/**
 * docs/FORMAT.md §6 re-implemented from the spec (spec-field.ts, spec-aes-siv.ts): values the
 * FieldEncryptionEngine writes are opened with the data key obtained as the spec says (the
 * data-key table's wrapped key, decrypted by the KMS under the stored context), and values the
 * spec-only writer makes are opened by the engine.
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { aessiv } from "@noble/ciphers/aes.js";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  type DataKeyRecord,
  type EncryptionContext,
  FieldEncryptionEngine,
  type FieldSpec,
  type FieldValue,
  InvalidCiphertextError,
  type Kms,
  MemoryDataKeyStore,
  ValidationError,
} from "../../src/index.ts";
import { ManualClock } from "../../src/testing/index.ts";
import { sivOpen, sivSeal } from "./spec-aes-siv.ts";
import { concat, SpecFormatError, specEncodeContext } from "./spec-context.ts";
import {
  type SpecNormalization,
  type SpecTypedValue,
  specBinding,
  specBlindIndex,
  specBlindIndexKey,
  specDecodePayload,
  specEncodePayload,
  specFromFieldText,
  specOpenFieldValue,
  specParseFieldValue,
  specSealFieldValue,
  specStableDataKeyId,
  specToFieldText,
} from "./spec-field.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const fromHex = (text: string) => new Uint8Array(Buffer.from(text.replace(/\s/g, ""), "hex"));

describe("RFC 5297 AES-SIV used by the spec reader", () => {
  it("reproduces the RFC's deterministic vector (A.1)", () => {
    const key = fromHex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
    const ad = fromHex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
    const plaintext = fromHex("11223344 55667788 99aabbcc ddee");
    const sealed = sivSeal(key, [ad], plaintext);
    expect(hex(sealed)).toBe("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c");
    expect(hex(sivOpen(key, [ad], sealed))).toBe(hex(plaintext));
  });

  it("agrees with @noble/ciphers for 512-bit keys and two associated data", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        fc.uint8Array({ maxLength: 40 }),
        fc.uint8Array({ maxLength: 40 }),
        fc.uint8Array({ maxLength: 70 }),
        (key, a, b, plaintext) => {
          const theirs = aessiv(key, a, b).encrypt(plaintext);
          expect(hex(sivSeal(key, [a, b], plaintext))).toBe(hex(theirs));
        },
      ),
      { numRuns: 200 },
    );
  });
});

interface Setup {
  kms: Kms;
  keyId: string;
  store: MemoryDataKeyStore;
  engine: FieldEncryptionEngine;
}

async function setup(): Promise<Setup> {
  const kms = await createKms();
  const { keyMetadata } = await kms.createKey();
  const store = new MemoryDataKeyStore();
  const engine = new FieldEncryptionEngine({ kms, keyId: keyMetadata.keyId, dataKeyStore: store });
  return { kms, keyId: keyMetadata.keyId, store, engine };
}

interface At {
  model: string;
  field: string;
  context: EncryptionContext;
  keyContext?: EncryptionContext;
}

/** §6.1.2: the data-key table row, unwrapped by the KMS under the context stored with it. */
async function dataKeyOf(
  s: Setup,
  id: string,
): Promise<{ record: DataKeyRecord; key: Uint8Array }> {
  const record = await s.store.get(id);
  if (record === undefined) throw new SpecFormatError(`no data key ${id}`);
  const { plaintext } = await s.kms.decrypt({
    ciphertextBlob: record.wrappedKey,
    encryptionContext: record.encryptionContext,
    keyId: record.kmsKeyId,
  });
  return { record, key: plaintext ?? new Uint8Array(0) };
}

async function specOpen(s: Setup, at: At, stored: string | Uint8Array) {
  const bytes = typeof stored === "string" ? specFromFieldText(stored) : stored;
  const value = specParseFieldValue(bytes);
  const { record, key } = await dataKeyOf(s, value.dataKeyId);
  // §6.2: the value's context must hold every pair of the data key's stored context.
  for (const [name, v] of Object.entries(record.encryptionContext)) {
    if (at.context[name] !== v) throw new SpecFormatError("data key of another context");
  }
  const plaintext = specOpenFieldValue(value, key, specBinding(at.model, at.field, at.context));
  return { value, record, plaintext, typed: specDecodePayload(plaintext) };
}

const VALUES: [FieldSpec["type"], FieldValue, string][] = [
  ["string", "héllo 🔑", `01${hex(Buffer.from("héllo 🔑"))}`],
  ["string", "", "01"],
  ["bytes", Uint8Array.from([0, 1, 0xc1, 0xff]), "020001c1ff"],
  ["number", 1.5, "033ff8000000000000"],
  ["number", -0, "038000000000000000"],
  ["number", Number.NaN, "037ff8000000000000"],
  ["number", -Infinity, "03fff0000000000000"],
  ["boolean", true, "0401"],
  ["boolean", false, "0400"],
  ["date", new Date(1_700_000_000_123), "054278bcfe5687b000"],
  [
    "bigint",
    -123456789012345678901234567890n,
    `06${hex(Buffer.from("-123456789012345678901234567890"))}`,
  ],
  ["decimal", "-12.50e+3", `07${hex(Buffer.from("-12.50e+3"))}`],
  ["decimal", ".5", `07${hex(Buffer.from(".5"))}`],
  ["json", { a: [1, "x", null], b: true }, `08${hex(Buffer.from('{"a":[1,"x",null],"b":true}'))}`],
];

describe("FORMAT §6 read with a spec-only decoder: values from FieldEncryptionEngine", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });
  const at: At = { model: "Patient", field: "ssn", context: { tenantId: "clinic-1", ключ: "🔑" } };

  describe.each(["randomized", "deterministic"] as const)("%s", (mode) => {
    it.each(VALUES)("%s %o", async (type, value, payloadHex) => {
      const spec: FieldSpec = { type, mode };
      const bytes = await s.engine.encrypt(at, spec, value);
      const text = await s.engine.encryptText(at, spec, value);
      for (const stored of [bytes, text]) {
        const opened = await specOpen(s, at, stored);
        expect(hex(opened.plaintext)).toBe(payloadHex);
        expect(opened.typed.type).toBe(type);
        expect(opened.typed.value).toEqual(value);
        expect(opened.value.mode).toBe(mode);
      }
      // §6.1: 46 / 34 bytes of overhead, counting the type tag.
      const overhead = mode === "randomized" ? 46 : 34;
      expect(bytes.length).toBe(overhead + payloadHex.length / 2 - 1);
      expect(bytes[0]).toBe(mode === "randomized" ? 0xc1 : 0xc2);
      // §6.1.5: the text form is kms1: + base64url of the same layout.
      expect(specParseFieldValue(specFromFieldText(text)).dataKeyId).toBe(
        specParseFieldValue(bytes).dataKeyId,
      );
      if (mode === "deterministic") expect(text).toBe(specToFieldText(bytes));
    });
  });

  it("stores randomized data keys under random ids and stable ones under §6.1.3's id", async () => {
    const random = specParseFieldValue(await s.engine.encrypt(at, { type: "string" }, "x"));
    const stable = specParseFieldValue(
      await s.engine.encrypt(at, { type: "string", mode: "deterministic" }, "x"),
    );
    expect(stable.dataKeyId).toBe(specStableDataKeyId(s.keyId, at.context));
    expect(random.dataKeyId).not.toBe(stable.dataKeyId);
    const randomRow = await dataKeyOf(s, random.dataKeyId);
    const stableRow = await dataKeyOf(s, stable.dataKeyId);
    expect(randomRow.record.purpose).toBe("randomized");
    expect(stableRow.record.purpose).toBe("stable");
    for (const row of [randomRow, stableRow]) {
      expect(row.record.encryptionContext).toEqual(at.context);
      expect(row.record.kmsKeyId).toMatch(/^arn:aws:kms:[^:]+:\d{12}:key\//);
      expect(row.record.kmsKeyId.endsWith(s.keyId)).toBe(true);
      expect(row.key.length).toBe(32);
      // §6.1 "Why a data-key table": an 82-byte §3 blob for a 32-byte key.
      expect(row.record.wrappedKey.length).toBe(82);
    }
  });

  it("binds the whole context but wraps the data key under the key context (§6.2)", async () => {
    const rowAt: At = {
      model: "Patient",
      field: "ssn",
      context: { tenantId: "clinic-1", recordId: "r-17" },
      keyContext: { tenantId: "clinic-1" },
    };
    for (const mode of ["randomized", "deterministic"] as const) {
      const stored = await s.engine.encrypt(rowAt, { type: "string", mode }, "v");
      const opened = await specOpen(s, rowAt, stored);
      expect(opened.typed.value).toBe("v");
      expect(opened.record.encryptionContext).toEqual({ tenantId: "clinic-1" });
      if (mode === "deterministic") {
        expect(opened.value.dataKeyId).toBe(specStableDataKeyId(s.keyId, { tenantId: "clinic-1" }));
      }
      // The binding, not the key context, is the AAD: without recordId it does not open.
      await expect(
        specOpen(s, { ...rowAt, context: { tenantId: "clinic-1", recordId: "r-18" } }, stored),
      ).rejects.toThrow(SpecFormatError);
    }
  });

  it("derives stable ids from the key id as configured, an alias staying an alias (§6.1.3)", async () => {
    await s.kms.createAlias({ aliasName: "alias/spec-field", targetKeyId: s.keyId });
    const engine = new FieldEncryptionEngine({
      kms: s.kms,
      keyId: "alias/spec-field",
      dataKeyStore: s.store,
    });
    const stored = await engine.encrypt(at, { type: "string", mode: "deterministic" }, "v");
    const id = specParseFieldValue(stored).dataKeyId;
    expect(id).toBe(specStableDataKeyId("alias/spec-field", at.context));
    expect(id).not.toBe(specStableDataKeyId(s.keyId, at.context));
    expect((await specOpen(s, at, stored)).typed.value).toBe("v");
  });

  it("hashes the key id's UTF-8 length and bytes, then the §2 context (§6.1.3)", () => {
    const keyId = "alias/ключ";
    const context = { b: "2", a: "" };
    const manual = concat(
      Buffer.from("kms1 stable data key"),
      Uint8Array.from([0, Buffer.byteLength(keyId)]),
      Buffer.from(keyId),
      specEncodeContext(context),
    );
    expect(specStableDataKeyId(keyId, context)).toBe(
      createHash("sha256").update(manual).digest().subarray(0, 16).toString("hex"),
    );
  });

  it("follows a stable key whose KMS key was deleted with generation 1 (§6.1.3, §6.4.5)", async () => {
    const clock = new ManualClock();
    const kms = await createKms({ audit: false, clock });
    const first = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/spec-generation", targetKeyId: first });
    const store = new MemoryDataKeyStore();
    const engine = () =>
      new FieldEncryptionEngine({
        kms,
        keyId: "alias/spec-generation",
        dataKeyStore: store,
        clock,
      });
    const spec: FieldSpec = { type: "string", mode: "deterministic" };
    const before = specParseFieldValue(await engine().encrypt(at, spec, "v"));
    expect(before.dataKeyId).toBe(specStableDataKeyId("alias/spec-generation", at.context));
    await kms.scheduleKeyDeletion({ keyId: first, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const next = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/spec-generation", targetKeyId: next });
    const after = specParseFieldValue(await engine().encrypt(at, spec, "v"));
    expect(after.dataKeyId).toBe(specStableDataKeyId("alias/spec-generation", at.context, 1));
    // Generation 1 appends u32 1 to generation 0's input.
    const keyId = Buffer.from("alias/spec-generation");
    const manual = concat(
      Buffer.from("kms1 stable data key"),
      Uint8Array.from([0, keyId.length]),
      keyId,
      specEncodeContext(at.context),
      Uint8Array.from([0, 0, 0, 1]),
    );
    expect(after.dataKeyId).toBe(
      createHash("sha256").update(manual).digest().subarray(0, 16).toString("hex"),
    );
    expect((await store.get(after.dataKeyId))?.kmsKeyId.endsWith(next)).toBe(true);
  });

  it("rebuilds the binding of §6.2 byte for byte", () => {
    expect(hex(specBinding("M", "fé", { b: "2", a: "" }))).toBe(
      `014d 03 66c3a9 0002 0001 61 0000 0001 62 0001 32`.replace(/\s/g, ""),
    );
    expect(() => specBinding("", "f", {})).toThrow(SpecFormatError);
    expect(() => specBinding("m".repeat(256), "f", {})).toThrow(SpecFormatError);
  });
});

describe("FORMAT §6.5 blind indexes recomputed from the spec", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });
  const context = { tenantId: "clinic-1" };

  async function specIndexKey(
    field: string,
    at: { context: EncryptionContext; keyContext?: EncryptionContext },
  ) {
    const id = specStableDataKeyId(s.keyId, at.keyContext ?? at.context);
    const { key } = await dataKeyOf(s, id);
    return specBlindIndexKey(key, specBinding("User", field, at.context));
  }

  const strings: [string, readonly SpecNormalization[], number][] = [
    [" Alice@Example.COM ", ["trim", "lowercase"], 16],
    [" Alice@Example.COM ", [], 4],
    ["ＡＢＣ　", ["nfkc", "trim", "lowercase"], 32],
    ["ℌello", ["nfkc", "lowercase"], 16],
    ["ℌello", ["lowercase", "nfkc"], 16],
    ["", ["trim"], 16],
    ["\uFEFF\u00A0 x \u3000\n", ["trim"], 16],
    ["İSTANBUL ẞ", ["lowercase"], 16],
  ];

  it.each(strings)("string %j with %j, %i bytes", async (value, normalize, bytes) => {
    const at = { model: "User", field: "emailIndex", context };
    const theirs = await s.engine.blindIndex(at, { bytes, normalize }, value);
    const ours = specBlindIndex(await specIndexKey("emailIndex", at), value, normalize, bytes);
    expect(theirs).toBe(ours);
    expect(Buffer.from(theirs, "base64url").length).toBe(bytes);
  });

  it("normalizes nothing without a list, and applies a normalize function to strings", async () => {
    const at = { model: "User", field: "emailIndex", context };
    const key = await specIndexKey("emailIndex", at);
    expect(await s.engine.blindIndex(at, {}, " A ")).toBe(specBlindIndex(key, " A ", []));
    const fn = (value: string) => value.replace(/-/g, "");
    expect(await s.engine.blindIndex(at, { normalize: fn }, "1-2-3")).toBe(
      specBlindIndex(key, "123", []),
    );
  });

  it("refuses a string with a lone surrogate, also one a normalize function makes", async () => {
    const at = { model: "User", field: "emailIndex", context };
    await expect(s.engine.blindIndex(at, {}, "a\uD800")).rejects.toBeInstanceOf(ValidationError);
    await expect(
      s.engine.blindIndex(at, { normalize: () => "\uDC00" }, "a"),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it("indexes JSON members in the value's own order (§6.5)", async () => {
    const at = { model: "User", field: "prefsIndex", context };
    const ab = await s.engine.blindIndex(at, {}, { a: 1, b: 2 });
    const ba = await s.engine.blindIndex(at, {}, { b: 2, a: 1 });
    expect(ab).not.toBe(ba);
    expect(ba).toBe(specBlindIndex(await specIndexKey("prefsIndex", at), { b: 2, a: 1 }, []));
  });

  // FORMAT §6.5: these once shared the index of the value their JSON text stands for (the
  // second of each pair, which still indexes); they are refused instead.
  it.each([
    ["{ a: undefined }", { a: undefined }, {}, /undefined at \$\.<member 1>/],
    ["[undefined]", [undefined], [null], /undefined at \$\[0\]/],
    ["a Map", new Map([["k", "v"]]), {}, /an instance of Map/],
    ["a Set", new Set([1]), {}, /an instance of Set/],
    ["a Uint8Array", Uint8Array.from([1]), { "0": 1 }, /an instance of Uint8Array/],
    [
      "an object with toJSON",
      { secret: 1, toJSON: () => ({ other: 2 }) },
      { other: 2 },
      /a toJSON\(\) method/,
    ],
    [
      "a class instance",
      new (class Point {
        x = 1;
      })(),
      { x: 1 },
      /an instance of Point/,
    ],
  ] as const)(
    "refuses %s, which JSON writes as another value",
    async (_n, value, twin, message) => {
      const at = { model: "User", field: "anyIndex", context };
      await expect(s.engine.blindIndex(at, {}, value)).rejects.toThrow(ValidationError);
      await expect(s.engine.blindIndex(at, {}, value)).rejects.toThrow(message);
      expect(await s.engine.blindIndex(at, {}, twin)).toBe(
        specBlindIndex(await specIndexKey("anyIndex", at), twin, []),
      );
    },
  );

  it("applies normalizations in the order the spec lists them in, not a fixed order", async () => {
    // NFKC maps ℌ to H; lowercase does not touch ℌ. So the order changes the index.
    const at = { model: "User", field: "emailIndex", context };
    const a = await s.engine.blindIndex(at, { normalize: ["nfkc", "lowercase"] }, "ℌ");
    const b = await s.engine.blindIndex(at, { normalize: ["lowercase", "nfkc"] }, "ℌ");
    expect(a).not.toBe(b);
    expect(a).toBe(await s.engine.blindIndex(at, { normalize: [] }, "h"));
  });

  it.each([
    ["number", 42],
    ["negative zero", -0],
    ["boolean", false],
    ["object", { b: 1, a: [true, "x"] }],
    ["array", [1, 2]],
    ["date", new Date(0)],
  ] as const)("non-string value: %s", async (_name, value) => {
    const at = { model: "User", field: "ageIndex", context };
    const theirs = await s.engine.blindIndex(at, {}, value);
    expect(theirs).toBe(specBlindIndex(await specIndexKey("ageIndex", at), value, []));
  });

  it("keys the index on the whole binding but the stable key on the key context", async () => {
    const at = {
      model: "User",
      field: "emailIndex",
      context: { tenantId: "clinic-1", region: "eu" },
      keyContext: { tenantId: "clinic-1" },
    };
    const theirs = await s.engine.blindIndex(at, {}, "a@x.io");
    expect(theirs).toBe(specBlindIndex(await specIndexKey("emailIndex", at), "a@x.io", []));
  });
});

describe("FORMAT §6 written with a spec-only encoder, read by FieldEncryptionEngine", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setup();
  });
  const at: At = { model: "Order", field: "note", context: { tenantId: "t-1" } };

  async function insertKey(
    id: string,
    purpose: "randomized" | "stable",
    keyContext: EncryptionContext,
  ) {
    const generated = await s.kms.generateDataKey({
      keyId: s.keyId,
      keySpec: "AES_256",
      encryptionContext: keyContext,
    });
    await s.store.insert({
      id,
      kmsKeyId: generated.keyId,
      wrappedKey: generated.ciphertextBlob,
      encryptionContext: keyContext,
      purpose,
      createdAt: Date.now(),
    });
    return generated.plaintext;
  }

  const typed: SpecTypedValue[] = [
    { type: "string", value: "spec ✓" },
    { type: "bytes", value: Uint8Array.from([9, 8, 7]) },
    { type: "number", value: -0 },
    { type: "boolean", value: true },
    { type: "date", value: new Date(86_400_000) },
    { type: "bigint", value: 2n ** 70n },
    { type: "decimal", value: "1.e5" },
    { type: "json", value: [{ a: "b" }] },
  ];

  it.each(typed)("randomized $type", async (t) => {
    const id = hex(new Uint8Array(randomBytes(16)));
    const key = await insertKey(id, "randomized", at.context);
    const sealed = specSealFieldValue(
      "randomized",
      id,
      key,
      specBinding(at.model, at.field, at.context),
      specEncodePayload(t),
      new Uint8Array(randomBytes(12)),
    );
    expect(await s.engine.decrypt(at, { type: t.type }, sealed)).toEqual(t.value);
    expect(await s.engine.decryptText(at, { type: t.type }, specToFieldText(sealed))).toEqual(
      t.value,
    );
    // Another field, model or context: refused.
    for (const other of [
      { ...at, field: "other" },
      { ...at, model: "Other" },
      { ...at, context: { tenantId: "t-2" } },
    ]) {
      await expect(s.engine.decrypt(other, { type: t.type }, sealed)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });

  it("deterministic values: the engine reads ours and writes the same bytes", async () => {
    const id = specStableDataKeyId(s.keyId, at.context);
    const key = await insertKey(id, "stable", at.context);
    for (const t of typed) {
      const sealed = specSealFieldValue(
        "deterministic",
        id,
        key,
        specBinding(at.model, at.field, at.context),
        specEncodePayload(t),
        new Uint8Array(0),
      );
      expect(await s.engine.decrypt(at, { type: t.type, mode: "deterministic" }, sealed)).toEqual(
        t.value,
      );
      const theirs = await s.engine.encrypt(at, { type: t.type, mode: "deterministic" }, t.value);
      expect(hex(theirs)).toBe(hex(sealed));
    }
  });

  it("refuses every single-bit flip of a value", async () => {
    const id = hex(new Uint8Array(randomBytes(16)));
    const key = await insertKey(id, "randomized", at.context);
    const binding = specBinding(at.model, at.field, at.context);
    const values = [
      specSealFieldValue(
        "randomized",
        id,
        key,
        binding,
        specEncodePayload(typed[0]!),
        new Uint8Array(randomBytes(12)),
      ),
      await s.engine.encrypt(at, { type: "string", mode: "deterministic" }, "spec ✓"),
    ];
    for (const sealed of values) {
      const mode = sealed[0] === 0xc1 ? "randomized" : "deterministic";
      for (let bit = 0; bit < sealed.length * 8; bit++) {
        const flipped = new Uint8Array(sealed);
        flipped[bit >> 3] = flipped[bit >> 3]! ^ (1 << (bit & 7));
        await expect(
          s.engine.decrypt(at, { type: "string", mode }, flipped),
          `${mode} bit ${bit}`,
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
      }
    }
  });

  it("decodes only the canonical text spelling (§6.1.5)", async () => {
    const text = await s.engine.encryptText(at, { type: "string", mode: "deterministic" }, "abc");
    const body = text.slice(5);
    expect(body.length % 4).not.toBe(0); // so that padding and trailing bits exist to test
    const last = body.at(-1) ?? "A";
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const sibling = alphabet[alphabet.indexOf(last) ^ 1] ?? "A";
    const variants = [
      `${text}${"=".repeat(4 - (body.length % 4))}`,
      `${text} `,
      `kms1:${body.slice(0, -1)}${sibling}`,
      `kms1:${body.replace(/-/g, "+").replace(/_/g, "/")}`,
      `KMS1:${body}`,
    ].filter((variant) => variant !== text);
    for (const variant of variants) {
      await expect(
        s.engine.decryptText(at, { type: "string", mode: "deterministic" }, variant),
        variant,
      ).rejects.toBeInstanceOf(InvalidCiphertextError);
      expect(() => specFromFieldText(variant), variant).toThrow(SpecFormatError);
    }
  });
});

describe("FORMAT §6.3 payloads: what a writer spells and what the reader refuses", () => {
  let s: Setup;
  let id: string;
  let key: Uint8Array;
  beforeAll(async () => {
    s = await setup();
    const generated = await s.kms.generateDataKey({ keyId: s.keyId, keySpec: "AES_256" });
    id = hex(new Uint8Array(randomBytes(16)));
    key = generated.plaintext;
    await s.store.insert({
      id,
      kmsKeyId: generated.keyId,
      wrappedKey: generated.ciphertextBlob,
      encryptionContext: {},
      purpose: "randomized",
      createdAt: 0,
    });
  });
  const at: At = { model: "M", field: "f", context: {} };
  const seal = (payloadHex: string) =>
    specSealFieldValue(
      "randomized",
      id,
      key,
      specBinding("M", "f", {}),
      fromHex(payloadHex),
      new Uint8Array(randomBytes(12)),
    );
  const text = (t: string) => hex(Buffer.from(t));

  it.each([
    ["empty plaintext", "string", ""],
    ["unknown tag", "string", "09"],
    ["tag of another type", "string", "0400"],
    ["number of 7 bytes", "number", `03${"00".repeat(7)}`],
    ["number of 9 bytes", "number", `03${"00".repeat(9)}`],
    ["date of 1 byte", "date", "0500"],
    ["boolean 02", "boolean", "0402"],
    ["boolean of 2 bytes", "boolean", "040001"],
    ["empty boolean", "boolean", "04"],
    ["bigint 1.5", "bigint", `06${text("1.5")}`],
    ["bigint invalid UTF-8", "bigint", "06ff"],
    ["json not JSON", "json", `08${text("{bad")}`],
    ["empty json", "json", "08"],
  ] as const)("refuses %s", async (_name, type, payloadHex) => {
    await expect(s.engine.decrypt(at, { type }, seal(payloadHex))).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  it.each([
    ["string with invalid UTF-8", "string", "0141ff", "A\uFFFD"],
    ["decimal outside the grammar", "decimal", `07${text("1e")}`, "1e"],
    ["empty decimal", "decimal", "07", ""],
    ["bigint +5", "bigint", `06${text("+5")}`, 5n],
    ["bigint 007", "bigint", `06${text("007")}`, 7n],
    ["bigint 0x10", "bigint", `06${text("0x10")}`, 16n],
    ["bigint with a space", "bigint", `06${text(" 5")}`, 5n],
    ["empty bigint", "bigint", "06", 0n],
    ["non-canonical NaN", "number", "037ff0000000000001", Number.NaN],
  ] as const)("reads %s leniently, as documented", async (_name, type, payloadHex, expected) => {
    expect(await s.engine.decrypt(at, { type }, seal(payloadHex))).toEqual(expected);
  });

  it("reads a NaN date payload as an invalid Date", async () => {
    const value = await s.engine.decrypt(at, { type: "date" }, seal("057ff8000000000000"));
    expect(value).toBeInstanceOf(Date);
    expect(Number.isNaN((value as Date).getTime())).toBe(true);
  });

  it.each([
    ["bigint", 7n, `06${text("7")}`],
    ["bigint", -70n, `06${text("-70")}`],
    ["decimal", 1e21, `07${text("1e+21")}`],
    ["decimal", -0, `07${text("0")}`],
    ["decimal", "00.50", `07${text("00.50")}`],
    ["json", { b: 1, a: 2 }, `08${text('{"b":1,"a":2}')}`],
  ] as const)("writes %s %o as the spec spells it", async (type, value, payloadHex) => {
    const stored = await s.engine.encrypt(at, { type }, value);
    expect(hex((await specOpen(s, at, stored)).plaintext)).toBe(payloadHex);
  });

  it.each([
    ["decimal", Number.POSITIVE_INFINITY],
    ["decimal", Number.NaN],
    ["decimal", "1e"],
    ["decimal", "+1"],
    ["date", new Date(Number.NaN)],
    ["string", "\uD800"],
  ] as const)("refuses to write %s %o", async (type, value) => {
    await expect(s.engine.encrypt(at, { type }, value)).rejects.toBeInstanceOf(ValidationError);
  });

  it.each([
    ["empty model", { ...at, model: "" }],
    ["model of 256 bytes", { ...at, model: "é".repeat(128) }],
    ["empty field", { ...at, field: "" }],
    ["field with a lone surrogate", { ...at, field: "f\uDC00" }],
  ])("refuses a binding: %s (§6.2)", async (_name, binding) => {
    await expect(s.engine.encrypt(binding, { type: "string" }, "x")).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  it("accepts names of exactly 255 UTF-8 bytes (§6.2)", async () => {
    const binding = { ...at, model: `${"é".repeat(127)}x`, field: "f".repeat(255) };
    const stored = await s.engine.encrypt(binding, { type: "string" }, "x");
    expect((await specOpen(s, binding, stored)).typed.value).toBe("x");
  });
});
