/**
 * A data key is handed out only to values whose context holds the context it is wrapped under
 * (FORMAT §6.2) — when it is already cached too, whoever cached it. These tests ask the data-key
 * layer itself: the engine checks the key again when it opens a value, which would mask a key
 * handed out wrongly here (and `withExistingStable`, the lookup path, has no such later check).
 */
import { describe, expect, it } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import { InvalidCiphertextError, KmsInternalError } from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import { bindingOf, contextKey, encodeBinding, holdsKeyContext } from "./binding.ts";
import type { DataKeyRecord, DataKeyStore } from "./data-key-store.ts";
import { type AdmitsKeyContext, FieldDataKeys } from "./field-data-keys.ts";
import { bytesOfHex, FORMAT_RANDOMIZED, RANDOMIZED_OVERHEAD } from "./field-format.ts";

const A: EncryptionContext = Object.freeze({ tenantId: "a" });
const B: EncryptionContext = Object.freeze({ tenantId: "b" });
/** Data-key rows an engine keeps read (MAX_RECORDS in field-data-keys.ts). */
const KEPT_ROWS = 4096;

/** What the engine asks for values of `contexts` (one value, or a decryptMany batch). */
const admitsOf =
  (...contexts: EncryptionContext[]): AdmitsKeyContext =>
  (keyContext) =>
    contexts.every((context) => holdsKeyContext(context, keyContext));

const encodedBinding = (context: EncryptionContext) =>
  encodeBinding(bindingOf({ model: "Invoice", field: "iban", context }, false));

/** A randomized value naming data key `id` (only its header is read before the key is found). */
function valueUnder(id: string): Uint8Array {
  const bytes = new Uint8Array(RANDOMIZED_OVERHEAD + 8);
  bytes[0] = FORMAT_RANDOMIZED;
  bytes.set(bytesOfHex(id), 1);
  return bytes;
}

/** A data-key table that whoever writes the database rewrites at will, and whose reads it holds. */
class Table implements DataKeyStore {
  readonly rows = new Map<string, DataKeyRecord>();
  /** Called as an insert begins. */
  onInsert: ((row: DataKeyRecord) => void) | undefined;
  readonly #held = new Map<string, Promise<DataKeyRecord | undefined>>();

  async insert(row: DataKeyRecord): Promise<DataKeyRecord> {
    this.onInsert?.(row);
    const existing = this.rows.get(row.id);
    if (existing !== undefined) return existing;
    this.rows.set(row.id, row);
    return row;
  }

  get(id: string): Promise<DataKeyRecord | undefined> {
    const held = this.#held.get(id);
    if (held === undefined) return Promise.resolve(this.rows.get(id));
    this.#held.delete(id);
    return held;
  }

  /** The next read of `id` answers `row`, once `release` is called. */
  holdNextGet(id: string, row: DataKeyRecord): () => void {
    let release: () => void = () => {};
    this.#held.set(id, new Promise((resolve) => (release = () => resolve(row))));
    return release;
  }
}

/** The KMS, with Decrypt held until `open()` once `hold()` was called. */
function holding(kms: Kms) {
  let gate: Promise<void> | undefined;
  let open: () => void = () => {};
  let started: () => void = () => {};
  const decryptStarted = new Promise<void>((resolve) => (started = resolve));
  const wrapped = {
    generateDataKey: (r, o) => kms.generateDataKey(r, o),
    decrypt: async (r, o) => {
      started();
      if (gate !== undefined) await gate;
      return kms.decrypt(r, o);
    },
  } as Pick<KmsLike, "generateDataKey" | "decrypt"> as KmsLike;
  return {
    kms: wrapped,
    decryptStarted,
    hold: () => (gate = new Promise((resolve) => (open = resolve))),
    open: () => open(),
  };
}

async function setup() {
  const real = await createKms({ audit: false });
  const keyId = (await real.createKey()).keyMetadata.keyId;
  const gated = holding(real);
  const table = new Table();
  const clock = new ManualClock();
  const newKeys = () =>
    new FieldDataKeys({
      kms: gated.kms,
      store: table,
      keyId: () => keyId,
      clock,
      cache: new DataKeyCache({ maxAgeMs: 60_000, clock }),
    });
  /** A stable row under `id` wrapping a key made under `context` (whose KMS rights allow it). */
  const rowUnder = async (id: string, context: EncryptionContext): Promise<DataKeyRecord> => {
    const made = await real.generateDataKey({
      keyId,
      keySpec: "AES_256",
      encryptionContext: context,
    });
    return {
      id,
      kmsKeyId: made.keyId,
      wrappedKey: made.ciphertextBlob,
      encryptionContext: context,
      purpose: "stable",
      createdAt: 0,
    };
  };
  return { keyId, table, gated, newKeys, rowUnder };
}

type Setup = Awaited<ReturnType<typeof setup>>;
/** A way tenant A's key gets into the cache of the engine that then serves tenant B's value. */
type Source = [string, (t: Setup) => Promise<{ keys: FieldDataKeys; id: string }>];

const RANDOMIZED_SOURCES: Source[] = [
  [
    "A's read",
    async (t) => {
      const { id } = await t.newKeys().materialsFor(A, contextKey(A), 1);
      const keys = t.newKeys();
      await keys.readKey(id, admitsOf(A));
      return { keys, id };
    },
  ],
  [
    "A's write",
    async (t) => {
      const keys = t.newKeys();
      return { keys, id: (await keys.materialsFor(A, contextKey(A), 1)).id };
    },
  ],
  [
    "A's write inside a transaction",
    async (t) => {
      const keys = t.newKeys();
      return { keys, id: (await keys.materialsFor(A, contextKey(A), 1, "tx")).id };
    },
  ],
  [
    "A's write in a committed transaction",
    async (t) => {
      const keys = t.newKeys();
      const { id } = await keys.materialsFor(A, contextKey(A), 1, "tx");
      keys.endScope("tx", true);
      return { keys, id };
    },
  ],
];

const STABLE_SOURCES: Source[] = [
  [
    "A's read",
    async (t) => {
      const { id } = await t.newKeys().stableForScope(A, contextKey(A));
      const keys = t.newKeys();
      await keys.stableForId(id, admitsOf(A));
      return { keys, id };
    },
  ],
  [
    "A's write",
    async (t) => {
      const keys = t.newKeys();
      return { keys, id: (await keys.stableForScope(A, contextKey(A))).id };
    },
  ],
  [
    "A's write in a committed transaction",
    async (t) => {
      const keys = t.newKeys();
      const { id } = await keys.stableForScope(A, contextKey(A), "tx");
      keys.endScope("tx", true);
      // The commit hands the key to the engine once its (settled) load is awaited.
      await new Promise((resolve) => setImmediate(resolve));
      return { keys, id };
    },
  ],
];

describe.each(RANDOMIZED_SOURCES)("a randomized data key cached by %s", (_, cacheForA) => {
  it("is not handed to tenant B's value by readKey, alone or in a batch", async () => {
    const { keys, id } = await cacheForA(await setup());
    await expect(keys.readKey(id, admitsOf(B))).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(keys.readKey(id, admitsOf(A, B))).rejects.toBeInstanceOf(InvalidCiphertextError);
    // Still A's, and served from the cache.
    expect(await keys.readKey(id, admitsOf(A))).toBe(
      keys.cachedReadKeyOf(valueUnder(id), encodedBinding(A), A),
    );
  });

  it("is not handed to tenant B's value by cachedReadKeyOf (the synchronous path)", async () => {
    const { keys, id } = await cacheForA(await setup());
    const forged = valueUnder(id);
    expect(keys.cachedReadKeyOf(forged, encodedBinding(A), A)).toBeDefined();
    expect(() => keys.cachedReadKeyOf(forged, encodedBinding(B), B)).toThrow(
      InvalidCiphertextError,
    );
    // Not through the remembered last key either, nor once it was handed to A again.
    expect(keys.cachedReadKeyOf(forged, encodedBinding(A), A)).toBeDefined();
    expect(() => keys.cachedReadKeyOf(forged, encodedBinding(B), B)).toThrow(
      InvalidCiphertextError,
    );
  });
});

describe.each(STABLE_SOURCES)("a stable data key cached by %s", (_, cacheForA) => {
  it("is not handed to tenant B's value by stableForId, alone or in a batch", async () => {
    const { keys, id } = await cacheForA(await setup());
    await expect(keys.stableForId(id, admitsOf(B))).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(keys.stableForId(id, admitsOf(A, B))).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(await keys.stableForId(id, admitsOf(A))).toBe(keys.cachedStable(id, A));
  });

  it("is not handed to tenant B's value by cachedStable (the synchronous path)", async () => {
    const { keys, id } = await cacheForA(await setup());
    expect(keys.cachedStable(id, A)).toBeDefined();
    expect(() => keys.cachedStable(id, B)).toThrow(InvalidCiphertextError);
  });
});

describe("a key cached for tenant A while tenant B's read was under way", () => {
  it("readKey: A's key, cached while B read a row under its id that said B", async () => {
    const t = await setup();
    const keys = t.newKeys();
    let refused: Promise<unknown> = Promise.resolve();
    let release: () => void = () => {};
    t.table.onInsert = (row) => {
      t.table.onInsert = undefined;
      // By the time B's read of the row returns, the table says the row is B's.
      release = t.table.holdNextGet(row.id, { ...row, encryptionContext: B });
      refused = keys.readKey(row.id, admitsOf(B));
    };
    await keys.materialsFor(A, contextKey(A), 1);
    release();
    await expect(refused).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  it("stableForId: A's key, made while B read a row under its id that said B", async () => {
    const t = await setup();
    const keys = t.newKeys();
    const id = keys.stableIdOf(A, contextKey(A));
    const release = t.table.holdNextGet(id, await t.rowUnder(id, B));
    const refused = keys.stableForId(id, admitsOf(B));
    const own = await keys.stableForScope(A, contextKey(A));
    release();
    await expect(refused).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(await keys.stableForId(id, admitsOf(A))).toBe(own);
  });

  it("stableForId: A's key, made while B's unwrap of a row that said B was in flight", async () => {
    const t = await setup();
    const keys = t.newKeys();
    const id = keys.stableIdOf(A, contextKey(A));
    // B reads a row planted under A's stable id, wrapped under B's context (B's rights allow it).
    const release = t.table.holdNextGet(id, await t.rowUnder(id, B));
    t.gated.hold();
    const refused = keys.stableForId(id, admitsOf(B));
    // A second value of B's joins that unwrap.
    const joined = keys.stableForId(id, admitsOf(B));
    release();
    await t.gated.decryptStarted;
    // The table holds no row there: A makes its stable key, which the engine now holds.
    const own = await keys.stableForScope(A, contextKey(A));
    t.gated.open();
    await expect(refused).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(joined).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(await keys.stableForId(id, admitsOf(A))).toBe(own);
  });
});

describe("lookups under a previous KMS key (withExistingStable)", () => {
  it("never match with a key cached under the scope's id from a row of another context", async () => {
    const t = await setup();
    const keys = t.newKeys();
    const id = keys.stableIdOf(A, contextKey(A));
    // A row planted under A's stable id, wrapped under B's context with a key B's rights made:
    // B's read of a value naming it is admitted, and the engine holds that key under A's id.
    t.table.rows.set(id, await t.rowUnder(id, B));
    const planted = await keys.stableForId(id, admitsOf(B));
    // The row is put back as A's, and the engine reads it afresh (its kept rows moved on).
    t.table.rows.set(id, await t.rowUnder(id, A));
    await Promise.all(Array.from({ length: KEPT_ROWS }, (_, n) => keys.record(hexId(n))));

    const used: unknown[] = [];
    const lookup = keys.withExistingStable(t.keyId, A, contextKey(A), (stable) => {
      used.push(stable);
      return "matched";
    });
    await expect(lookup).rejects.toBeInstanceOf(KmsInternalError);
    expect(used).not.toContain(planted);
  });
});

function hexId(n: number): string {
  return n.toString(16).padStart(32, "0");
}
