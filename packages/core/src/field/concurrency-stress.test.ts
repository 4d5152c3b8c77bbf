import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { FORMAT_RANDOMIZED } from "./field-format.ts";

/**
 * Many value operations at once on one engine while clearCache() and retireDataKeys() land at
 * random points, with a KMS and a data-key store that answer after random delays so that loads,
 * evictions and clears interleave. Every value written must read back, and must read back in a
 * fresh engine: a value sealed under a zeroed stable key (or one derived from it) would still
 * open in the engine that made it only if the same zeroed key served both, and never in a
 * fresh one. Deterministic values and blind indexes must equal what a fresh engine computes.
 */

const RANDOM: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };

/** Mulberry32: a seeded generator, so a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Yields to the event loop 0–3 times (macrotask or microtask), as the random generator says. */
function jitter(random: () => number): Promise<void> {
  const turns = Math.floor(random() * 4);
  let p = Promise.resolve();
  for (let i = 0; i < turns; i++) {
    p = p.then(
      () =>
        new Promise<void>((resolve) => {
          if (random() < 0.5) setImmediate(resolve);
          else queueMicrotask(resolve);
        }),
    );
  }
  return p;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/**
 * A KMS stand-in: wraps nothing, answers late. Hands out a new buffer per call, as the engine
 * owns (and zeroes) what it gets.
 */
function slowKms(random: () => number, handedOut: Uint8Array[]): KmsLike {
  const wrapped = new Map<string, Uint8Array>();
  const unused = () => Promise.reject(new Error("not used by the field engine"));
  return {
    generateDataKey: async () => {
      await jitter(random);
      const plaintext = new Uint8Array(randomBytes(32));
      const ciphertextBlob = new Uint8Array(randomBytes(16));
      wrapped.set(hex(ciphertextBlob), plaintext.slice());
      handedOut.push(plaintext);
      return { keyId: "arn:stub", plaintext, ciphertextBlob };
    },
    decrypt: async (request) => {
      await jitter(random);
      const known = wrapped.get(hex(request.ciphertextBlob));
      if (known === undefined) throw new Error("unknown ciphertext");
      const plaintext = known.slice();
      handedOut.push(plaintext);
      return { keyId: "arn:stub", plaintext, encryptionAlgorithm: "SYMMETRIC_DEFAULT" };
    },
    encrypt: unused,
    generateDataKeyWithoutPlaintext: unused,
    sign: unused,
    verify: unused,
    generateMac: unused,
    verifyMac: unused,
    getPublicKey: unused,
  };
}

function slowStore(inner: MemoryDataKeyStore, random: () => number): DataKeyStore {
  return {
    insert: async (record: DataKeyRecord) => {
      await jitter(random);
      return inner.insert(record);
    },
    get: async (id: string) => {
      await jitter(random);
      return inner.get(id);
    },
  };
}

const sameTenant = (w: Written, context: EncryptionContext) =>
  w.binding.context.tenantId === context.tenantId;

type Written =
  | { kind: "value"; binding: FieldBinding; spec: FieldSpec; value: string; stored: Uint8Array }
  | { kind: "text"; binding: FieldBinding; spec: FieldSpec; value: string; stored: string }
  | { kind: "index"; binding: FieldBinding; value: string; index: string };

interface RunOptions {
  readonly operations: number;
  readonly tenants: number;
  readonly fields: number;
  /** Chance that an operation is a clearCache(), and again a retireDataKeys(). */
  readonly clearRate: number;
}

async function run(seed: number, options: RunOptions) {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const handedOut: Uint8Array[] = [];
  const kms = slowKms(random, handedOut);
  const memory = new MemoryDataKeyStore();
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: slowStore(memory, random),
    keyId: "k",
    // Small limits: write keys roll every few values, read keys are evicted all the time.
    cache: { maxValues: 3, maxDecryptKeys: 2 },
  });
  const written: Written[] = [];
  const failures: string[] = [];
  const check = (label: string, got: unknown, want: unknown) => {
    if (got !== want) failures.push(`${label}: got ${String(got)}, want ${want}`);
  };
  const tenants = Array.from({ length: options.tenants }, (_, i) => `t${i}`);
  const fields = Array.from({ length: options.fields }, (_, i) => `f${i}`);
  /** A binding whose field getter clears the cache at its `at`th read. */
  const clearing = (field: string, context: EncryptionContext, at: number): FieldBinding => {
    let reads = 0;
    return {
      model: "User",
      get field() {
        if (reads++ === at) engine.clearCache();
        return field;
      },
      context,
    };
  };
  const bindingOf = (): FieldBinding => {
    const field = pick(fields);
    const context = { tenantId: pick(tenants) };
    const roll = random();
    if (roll < 0.05) return clearing(field, context, Math.floor(random() * 4));
    if (roll < 0.1) {
      // A getter that, while this operation uses the tenant's stable key, opens another value
      // under that key whose own getter clears the cache: the inner use returns first.
      const inner = written.findLast(
        (w) => w.kind !== "index" && w.spec.mode === "deterministic" && sameTenant(w, context),
      ) as Exclude<Written, { kind: "index" }> | undefined;
      let reads = 0;
      const at = Math.floor(random() * 5);
      return {
        model: "User",
        get field() {
          if (reads++ === at && inner !== undefined) {
            const binding = clearing(inner.binding.field, inner.binding.context, 1);
            const got = engine.decryptIfCached(binding, inner.spec, inner.stored);
            if (got !== undefined) check("re-entrant decryptIfCached", got, inner.value);
          }
          return field;
        },
        context,
      };
    }
    return { model: "User", field, context };
  };
  const scopes: string[] = [];
  /** When each data key id was first retired, on a counter of operations. */
  const retiredAt = new Map<string, number>();
  let tick = 0;
  /** A randomized value written by a write that began after its data key was retired. */
  const checkNotRetired = (label: string, began: number, stored: Uint8Array | string) => {
    const bytes = typeof stored === "string" ? fromText(stored) : stored;
    if (bytes[0] !== FORMAT_RANDOMIZED) return;
    const at = retiredAt.get(hex(bytes.subarray(1, 17)));
    if (at !== undefined && at < began) failures.push(`${label}: sealed under a retired key`);
  };

  const operation = async (n: number): Promise<void> => {
    await jitter(random);
    const roll = random();
    const binding = bindingOf();
    const spec = random() < 0.4 ? DET : RANDOM;
    const value = `v${n % 7}`;
    if (roll < options.clearRate) {
      engine.clearCache();
      return;
    }
    if (roll < 2 * options.clearRate) {
      const ids = written
        .filter((w) => w.kind !== "index")
        .slice(-5)
        .map((w) => hex((w.kind === "value" ? w.stored : fromText(w.stored)).subarray(1, 17)));
      engine.retireDataKeys(ids);
      for (const id of ids) if (!retiredAt.has(id)) retiredAt.set(id, ++tick);
      return;
    }
    if (roll < 2 * options.clearRate + 0.03) {
      // The store keeps every row: a rollback here only makes the engine drop what it holds.
      const scope = scopes.pop();
      if (scope !== undefined) {
        engine.endTransactionScope(scope, random() < 0.7 ? "commit" : "rollback");
      }
      return;
    }
    if (roll < 2 * options.clearRate + 0.35) {
      let transactionScope: string | undefined;
      if (random() < 0.2) {
        transactionScope = `tx${n % 3}`;
        scopes.push(transactionScope);
      }
      const options = transactionScope === undefined ? undefined : { transactionScope };
      const began = ++tick;
      if (random() < 0.5) {
        const stored = await engine.encrypt(binding, spec, value, options);
        checkNotRetired(`encrypt ${n}`, began, stored);
        written.push({ kind: "value", binding, spec, value, stored });
        check(`own decrypt ${n}`, await engine.decrypt(binding, spec, stored), value);
      } else {
        const stored = await engine.encryptText(binding, spec, value, options);
        checkNotRetired(`encryptText ${n}`, began, stored);
        written.push({ kind: "text", binding, spec, value, stored });
        check(`own decryptText ${n}`, await engine.decryptText(binding, spec, stored), value);
      }
      return;
    }
    if (roll < 2 * options.clearRate + 0.45) {
      const sealed = engine.encryptIfCached(binding, spec, value);
      if (sealed !== undefined) {
        checkNotRetired(`encryptIfCached ${n}`, tick, sealed);
        written.push({ kind: "value", binding, spec, value, stored: sealed });
        const back = engine.decryptIfCached(binding, spec, sealed);
        if (back !== undefined) check(`decryptIfCached ${n}`, back, value);
      }
      return;
    }
    if (roll < 2 * options.clearRate + 0.55) {
      const index = await engine.blindIndex(binding, {}, value);
      written.push({ kind: "index", binding, value, index });
      return;
    }
    // Reads of what was written so far, one by one or as a batch.
    const sample = written.filter((w) => w.kind !== "index").slice(-8) as Exclude<
      Written,
      { kind: "index" }
    >[];
    if (sample.length === 0) return;
    if (random() < 0.5) {
      const items = sample.map((w) => ({ binding: w.binding, spec: w.spec, stored: w.stored }));
      const values = await engine.decryptMany(items);
      for (const [i, w] of sample.entries()) check(`decryptMany ${n}.${i}`, values[i], w.value);
    } else {
      const w = pick(sample);
      const got =
        w.kind === "value"
          ? await engine.decrypt(w.binding, w.spec, w.stored)
          : await engine.decryptText(w.binding, w.spec, w.stored);
      check(`decrypt ${n}`, got, w.value);
    }
  };

  await Promise.all(Array.from({ length: options.operations }, (_, n) => operation(n)));
  for (const scope of scopes) engine.endTransactionScope(scope, "commit");
  // Nothing runs any more: after a clear, no plaintext data key the engine got is left unzeroed.
  await new Promise((resolve) => setImmediate(resolve));
  engine.clearCache();
  const kept = handedOut.filter((key) => key.some((b) => b !== 0)).length;
  check("plaintext keys left after clearCache", kept, 0);

  // A fresh engine over the same rows reads everything back and computes the same values.
  const fresh = new FieldEncryptionEngine({ kms, dataKeyStore: memory, keyId: "k" });
  for (const [i, w] of written.entries()) {
    if (w.kind === "index") {
      check(`fresh index ${i}`, await fresh.blindIndex(w.binding, {}, w.value), w.index);
      continue;
    }
    const got =
      w.kind === "value"
        ? await fresh.decrypt(w.binding, w.spec, w.stored).catch((e: Error) => e.message)
        : await fresh.decryptText(w.binding, w.spec, w.stored).catch((e: Error) => e.message);
    check(`fresh decrypt ${i} (${w.spec.mode ?? "randomized"})`, got, w.value);
    if (w.spec.mode === "deterministic") {
      const again = await fresh.encrypt(w.binding, w.spec, w.value);
      const stored = w.kind === "value" ? w.stored : fromText(w.stored);
      check(`fresh deterministic ${i}`, hex(again), hex(stored));
    }
  }
  return { failures, written: written.length };
}

function fromText(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text.slice("kms1:".length), "base64url"));
}

describe("concurrent value operations with random clearCache and retireDataKeys", () => {
  test.each(Array.from({ length: 12 }, (_, i) => i + 1))(
    "seed %i: every value round-trips, in a fresh engine too",
    async (seed) => {
      const { failures, written } = await run(seed, {
        operations: 600,
        tenants: 4,
        fields: 3,
        clearRate: 0.05,
      });
      expect(written).toBeGreaterThan(100);
      expect(failures).toStrictEqual([]);
    },
  );

  // More stable keys than the engine keeps (4096) and more subkeys than one stable key keeps
  // (4096), so evictions race with uses: the paths that zero keys a use may still hold. In
  // every run, not by hand only; KMS_STRESS=1 runs them longer.
  const evictionOperations = process.env.KMS_STRESS === "1" ? 30_000 : 12_000;
  test.each([
    ["stable keys evicted", { tenants: 5000, fields: 2 }],
    ["subkeys evicted", { tenants: 1, fields: 5000 }],
  ] as const)("%s", { timeout: 60_000 }, async (_, shape) => {
    const { failures } = await run(1, {
      operations: evictionOperations,
      clearRate: 0.0005,
      ...shape,
    });
    expect(failures).toStrictEqual([]);
  });
});
