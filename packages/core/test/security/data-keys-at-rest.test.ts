import { createHmac, hkdfSync } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKms,
  type DataKeyRecord,
  type DataKeyStore,
  type DecryptRequest,
  type DecryptResponse,
  type EncryptionContext,
  type FieldBinding,
  FieldEncryptionEngine,
  type GenerateDataKeyRequest,
  type GenerateDataKeyResponse,
  type Kms,
  type KmsLike,
  MemoryDataKeyStore,
  type ReencryptSource,
  reencryptFields,
  type StoredFieldValue,
} from "../../src/index.ts";

/*
 * The data-key table (what @kms/prisma and @kms/typeorm keep as kms_data_keys, FORMAT §6.1)
 * holds data keys wrapped by the KMS, never in the clear. The KMS below is wrapped so that the
 * test keeps a copy of every plaintext data key it hands the field engine, on generation and on
 * unwrap; the engine then writes and reads values of several fields, modes and contexts, data
 * keys roll over, the KMS key rotates and a re-encryption job moves every value to another KMS
 * key. No record the engine ever gave the store, nor the store's contents, nor a stored value,
 * may hold any 16 bytes of a captured key, nor of the keys derived from them (FORMAT §6.4).
 * Core has no file-backed data-key store (the ORM adapters own theirs), so the records are
 * scanned as objects and in every serialized form an adapter could write them.
 */

/** A plaintext key the KMS handed out, or one the engine derives from it. */
interface CapturedKey {
  readonly name: string;
  readonly bytes: Buffer;
}

const captured: CapturedKey[] = [];

/** A KmsLike that copies every plaintext data key before the engine sees (and wipes) it. */
class CapturingKms implements KmsLike {
  readonly #kms: Kms;
  calls = { generateDataKey: 0, decrypt: 0 };

  constructor(kms: Kms) {
    this.#kms = kms;
  }

  async generateDataKey(
    request: GenerateDataKeyRequest,
    options?: Parameters<KmsLike["generateDataKey"]>[1],
  ): Promise<GenerateDataKeyResponse> {
    const response = await this.#kms.generateDataKey(request, options);
    this.calls.generateDataKey += 1;
    captured.push({
      name: `generated #${captured.length}`,
      bytes: Buffer.from(response.plaintext),
    });
    return response;
  }

  async decrypt(
    request: DecryptRequest,
    options?: Parameters<KmsLike["decrypt"]>[1],
  ): Promise<DecryptResponse> {
    const response = await this.#kms.decrypt(request, options);
    this.calls.decrypt += 1;
    captured.push({
      name: `unwrapped #${captured.length}`,
      bytes: Buffer.from(response.plaintext),
    });
    return response;
  }

  encrypt: KmsLike["encrypt"] = (r, o) => this.#kms.encrypt(r, o);
  generateDataKeyWithoutPlaintext: KmsLike["generateDataKeyWithoutPlaintext"] = (r, o) =>
    this.#kms.generateDataKeyWithoutPlaintext(r, o);
  sign: KmsLike["sign"] = (r, o) => this.#kms.sign(r, o);
  verify: KmsLike["verify"] = (r, o) => this.#kms.verify(r, o);
  generateMac: KmsLike["generateMac"] = (r, o) => this.#kms.generateMac(r, o);
  verifyMac: KmsLike["verifyMac"] = (r, o) => this.#kms.verifyMac(r, o);
  getPublicKey: KmsLike["getPublicKey"] = (r, o) => this.#kms.getPublicKey(r, o);
}

/** The store the engine writes to, keeping a copy of every record it was ever given. */
class RecordingStore implements DataKeyStore {
  readonly inner = new MemoryDataKeyStore();
  readonly given: DataKeyRecord[] = [];
  readonly ids = new Set<string>();

  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    this.given.push({
      ...record,
      wrappedKey: record.wrappedKey.slice(),
      encryptionContext: { ...record.encryptionContext },
    });
    this.ids.add(record.id);
    return this.inner.insert(record);
  }

  get(id: string): Promise<DataKeyRecord | undefined> {
    return this.inner.get(id);
  }
}

// ---------------------------------------------------------------------------------------------
// What the scan looks for, and where.

const WINDOW = 16;

/** Every 16-byte window of every key, found by its first four bytes. */
class KeyWindows {
  readonly #byPrefix = new Map<number, { name: string; window: Buffer }[]>();

  constructor(keys: readonly CapturedKey[]) {
    for (const key of keys) {
      for (let at = 0; at + WINDOW <= key.bytes.length; at++) {
        const window = key.bytes.subarray(at, at + WINDOW);
        const list = this.#byPrefix.get(window.readUInt32BE(0)) ?? [];
        list.push({ name: key.name, window });
        this.#byPrefix.set(window.readUInt32BE(0), list);
      }
    }
  }

  /** The names of the keys a window of which lies in `haystack`. */
  findIn(haystack: Buffer): string[] {
    const found = new Set<string>();
    for (let at = 0; at + WINDOW <= haystack.length; at++) {
      const here = haystack.subarray(at, at + WINDOW);
      for (const c of this.#byPrefix.get(haystack.readUInt32BE(at)) ?? []) {
        if (c.window.equals(here)) found.add(c.name);
      }
    }
    return [...found];
  }
}

/**
 * The bytes a text could carry: itself as a binary string, its hex runs (at both parities), its
 * base64 and base64url runs (at each alignment), and decimal byte lists (a Uint8Array as JSON).
 */
function decodings(text: string): Buffer[] {
  const out = [Buffer.from(text, "latin1")];
  for (const [run] of text.matchAll(/[0-9a-f]{32,}/gi)) {
    out.push(Buffer.from(run, "hex"), Buffer.from(run.slice(1), "hex"));
  }
  for (const [run] of text.matchAll(/[A-Za-z0-9+/_-]{20,}/g)) {
    const standard = run.replace(/-/g, "+").replace(/_/g, "/");
    for (let shift = 0; shift < 4; shift++) out.push(Buffer.from(standard.slice(shift), "base64"));
  }
  for (const [run] of text.matchAll(/(?:"\d+":)?\d{1,3}(?:,(?:"\d+":)?\d{1,3}){15,}/g)) {
    out.push(Buffer.from(run.split(",").map((item) => Number(item.replace(/^"\d+":/, "")))));
  }
  return out;
}

/** The names of the captured keys that `text` or `bytes` hold any 16 bytes of. */
function keysIn(where: { text?: string; bytes?: Uint8Array }): string[] {
  const haystacks = [
    ...(where.text === undefined ? [] : decodings(where.text)),
    ...(where.bytes === undefined ? [] : [Buffer.from(where.bytes)]),
  ];
  return [...new Set(haystacks.flatMap((h) => windows.findIn(h)))];
}

/** The forms an adapter could write a record in: each byte field as bytes, hex, base64(url). */
function serializations(record: DataKeyRecord): string[] {
  const as = (encode: (bytes: Uint8Array) => unknown) =>
    JSON.stringify(record, (_k, v: unknown) => (v instanceof Uint8Array ? encode(v) : v));
  return [
    JSON.stringify(record),
    as((b) => Buffer.from(b).toString("hex")),
    as((b) => Buffer.from(b).toString("base64")),
    as((b) => Buffer.from(b).toString("base64url")),
    as((b) => [...b]),
  ];
}

function leaksOfRecord(record: DataKeyRecord): string[] {
  return [
    ...keysIn({ bytes: record.wrappedKey }),
    ...serializations(record).flatMap((text) => keysIn({ text })),
  ];
}

// ---------------------------------------------------------------------------------------------
// Keys the engine derives from a stable data key (FORMAT §6.4.3, §6.4.4), for every binding used.

function contextEncoding(context: EncryptionContext): Buffer {
  const keys = Object.keys(context).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  if (keys.length === 0) return Buffer.alloc(0);
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const text = (s: string) => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);
  return Buffer.concat([u16(keys.length), ...keys.flatMap((k) => [text(k), text(context[k]!)])]);
}

function bindingEncoding(model: string, field: string, context: EncryptionContext): Buffer {
  const short = (s: string) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
  return Buffer.concat([short(model), short(field), contextEncoding(context)]);
}

const hkdf = (ikm: Buffer, salt: string, info: Buffer, length: number) =>
  Buffer.from(hkdfSync("sha256", ikm, salt, info, length));

/** Bindings the engine derived keys for: [model, field, context, kind]. */
const derivedFor: [string, string, EncryptionContext, "deterministic" | "blind index"][] = [];

function derivedKeys(): CapturedKey[] {
  return captured.flatMap((key) =>
    derivedFor.map(([model, field, context, kind]) => ({
      name: `${kind} key of ${model}.${field} ${JSON.stringify(context)} from ${key.name}`,
      bytes:
        kind === "deterministic"
          ? hkdf(key.bytes, "kms1 deterministic", bindingEncoding(model, field, context), 64)
          : hkdf(key.bytes, "kms1 blind index", bindingEncoding(model, field, context), 32),
    })),
  );
}

let derived: CapturedKey[] = [];
let windows: KeyWindows;

// ---------------------------------------------------------------------------------------------

const MODEL = "Patient";
const TENANTS = ["acme", "globex", "initech"] as const;
const SSN = { type: "string" } as const;
const EMAIL = { type: "string", mode: "deterministic" } as const;
const SCAN = { type: "bytes" } as const;
const EMAIL_INDEX = { bytes: 16, normalize: ["lowercase"] } as const;

interface Row {
  id: number;
  tenant: string;
  ssn: StoredFieldValue;
  email: StoredFieldValue;
  scan: StoredFieldValue;
}

let store: RecordingStore;
let capturing: CapturingKms;
const rows: Row[] = [];
const indexes: string[] = [];
let reencrypted = 0;

const binding = (tenant: string, field: string): FieldBinding => ({
  model: MODEL,
  field,
  context: { tenantId: tenant },
});

beforeAll(async () => {
  const kms = await createKms();
  const keyA = (await kms.createKey({ description: "A" })).keyMetadata.keyId;
  const keyB = (await kms.createKey({ description: "B" })).keyMetadata.keyId;
  const perTenant = (context: EncryptionContext) => (context.tenantId === "globex" ? keyB : keyA);
  capturing = new CapturingKms(kms);
  store = new RecordingStore();
  // One KMS key per tenant at first; a few values per randomized data key, so that keys roll.
  const engine = new FieldEncryptionEngine({
    kms: capturing,
    dataKeyStore: store,
    keyId: perTenant,
    cache: { maxValues: 3 },
  });
  for (const [i, tenant] of [...TENANTS, ...TENANTS, ...TENANTS, ...TENANTS].entries()) {
    const email = `Person${i % 5}@${tenant}.example`;
    rows.push({
      id: i + 1,
      tenant,
      ssn: await engine.encryptText(binding(tenant, "ssn"), SSN, `123-45-${1000 + i}`),
      email: await engine.encryptText(binding(tenant, "email"), EMAIL, email),
      scan: await engine.encrypt(binding(tenant, "scan"), SCAN, new Uint8Array(64).fill(i)),
    });
    indexes.push(await engine.blindIndex(binding(tenant, "emailIndex"), EMAIL_INDEX, email));
  }
  for (const tenant of TENANTS) {
    derivedFor.push([MODEL, "email", { tenantId: tenant }, "deterministic"]);
    derivedFor.push([MODEL, "emailIndex", { tenantId: tenant }, "blind index"]);
  }

  // A fresh engine reads everything back through the KMS, one by one and in a batch.
  const reader = new FieldEncryptionEngine({
    kms: capturing,
    dataKeyStore: store,
    keyId: perTenant,
  });
  for (const row of rows) {
    await reader.decryptText(binding(row.tenant, "ssn"), SSN, row.ssn as string);
    await reader.decryptText(binding(row.tenant, "email"), EMAIL, row.email as string);
  }
  reader.clearCache();
  await reader.decryptMany(
    rows.map((row) => ({ binding: binding(row.tenant, "scan"), spec: SCAN, stored: row.scan! })),
  );

  // The KMS key rotates, then a job moves every value of every tenant to key B.
  await kms.rotateKeyOnDemand({ keyId: keyA });
  const mover = new FieldEncryptionEngine({
    kms: capturing,
    dataKeyStore: store,
    keyId: keyB,
    previousKeyIds: [keyA],
  });
  const source: ReencryptSource = {
    async fetchBatch(cursor, limit) {
      return rows
        .filter((r) => cursor === undefined || r.id > Number(cursor))
        .slice(0, limit)
        .map((r) => ({
          cursor: r.id,
          context: { tenantId: r.tenant },
          values: { ssn: r.ssn, email: r.email, scan: r.scan },
        }));
    },
    async compareAndSet(row, next) {
      const stored = rows.find((r) => r.id === row.cursor)!;
      stored.ssn = next.ssn ?? null;
      stored.email = next.email ?? null;
      stored.scan = next.scan ?? null;
      return true;
    },
  };
  ({ reencrypted } = await reencryptFields({
    engine: mover,
    source,
    model: MODEL,
    fields: {
      ssn: { ...SSN, storage: "text" },
      email: { ...EMAIL, storage: "text" },
      scan: { ...SCAN, storage: "bytes" },
    },
    // Every value, also those already under key B: each is rewritten under a fresh data key.
    shouldReencrypt: () => true,
    batchSize: 5,
  }));
  for (const tenant of TENANTS) {
    indexes.push(await mover.blindIndex(binding(tenant, "emailIndex"), EMAIL_INDEX, "x@y.z"));
  }
  derived = derivedKeys();
  windows = new KeyWindows([...captured, ...derived]);
  if (process.env.DUMP)
    console.log(
      capturing.calls,
      store.given.map((r) => r.purpose).join(","),
      captured.length,
      derived.length,
    );
}, 60_000);

describe("the data-key table never holds a plaintext data key", () => {
  it("the test captured the data keys of every path: generation, unwrap, rotation, move", () => {
    expect(reencrypted).toBe(rows.length);
    const count = (purpose: DataKeyRecord["purpose"]) =>
      store.given.filter((r) => r.purpose === purpose).length;
    // One stable key per KMS key and tenant: three, then acme's and initech's under key B.
    expect(count("stable")).toBe(5);
    // At most three values per randomized key: at least three keys per tenant and KMS key.
    expect(count("randomized")).toBeGreaterThanOrEqual(9);
    expect(capturing.calls.decrypt).toBeGreaterThanOrEqual(10);
    expect(captured).toHaveLength(capturing.calls.generateDataKey + capturing.calls.decrypt);
    expect(captured.every((k) => k.bytes.length === 32)).toBe(true);
    expect(store.given.length).toBe(capturing.calls.generateDataKey);
    expect(new Set(store.given.map((r) => r.kmsKeyId)).size).toBe(2);
  });

  it("self-check: the derived keys are the engine's (a blind index recomputed from one)", () => {
    const [first] = indexes;
    const email = "Person0@acme.example".toLowerCase();
    const input = Buffer.concat([Buffer.from([1]), Buffer.from(email)]);
    const candidates = derived.filter((k) =>
      k.name.startsWith(`blind index key of ${MODEL}.emailIndex {"tenantId":"acme"}`),
    );
    const recomputed = candidates.map((k) =>
      createHmac("sha256", k.bytes).update(input).digest().subarray(0, 16).toString("base64url"),
    );
    expect(recomputed).toContain(first);
  });

  it("self-check: the scan finds a captured key in any field and any serialized form", () => {
    const key = captured[3]!.bytes;
    const record = store.given[0]!;
    const planted: [string, DataKeyRecord][] = [
      ["wrapped key is the key", { ...record, wrappedKey: Uint8Array.from(key) }],
      [
        "wrapped key holds part of it",
        { ...record, wrappedKey: Buffer.concat([record.wrappedKey, key.subarray(5, 25)]) },
      ],
      ["id is its hex", { ...record, id: key.subarray(0, 16).toString("hex") }],
      [
        "context holds its base64url",
        { ...record, encryptionContext: { tenantId: key.subarray(1).toString("base64url") } },
      ],
      ["kmsKeyId holds its base64", { ...record, kmsKeyId: `arn:${key.toString("base64")}` }],
    ];
    for (const [how, bad] of planted) expect(leaksOfRecord(bad), how).not.toEqual([]);
    const deterministicKey = derived.find((k) => k.name.startsWith("deterministic"))!.bytes;
    expect(keysIn({ text: deterministicKey.subarray(40).toString("hex") })).not.toEqual([]);
  });

  it("no record the engine gave the store holds a data key or a key derived from one", () => {
    expect(store.given.flatMap(leaksOfRecord)).toEqual([]);
  });

  it("no record the store holds now does either, read back by id", async () => {
    expect(store.ids.size).toBe(store.given.length);
    for (const id of store.ids) {
      const record = (await store.get(id))!;
      expect(record, id).toBeDefined();
      expect(leaksOfRecord(record), id).toEqual([]);
    }
  });

  it("no stored value or blind index holds one either", () => {
    for (const row of rows) {
      for (const value of [row.ssn, row.email, row.scan]) {
        expect(
          typeof value === "string" ? keysIn({ text: value }) : keysIn({ bytes: value! }),
        ).toEqual([]);
      }
    }
    expect(indexes.flatMap((index) => keysIn({ text: index }))).toEqual([]);
  });
});
