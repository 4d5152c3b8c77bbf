/**
 * FORMAT §6.4.5: the stable data key of a context whose KMS key was deleted for good (and whose
 * alias now names a new key) is replaced by the next generation, so that the tenant can write
 * deterministic values and blind indexes again; the values under the old one stay unreadable.
 * A key disabled or pending deletion (both undoable) is never passed over.
 */
import { describe, expect, test } from "vitest";
import {
  DisabledError,
  InvalidCiphertextError,
  InvalidStateError,
  NotFoundError,
} from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { FieldBinding } from "./binding.ts";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };
const ALIAS = "alias/clinic-x";
const at = (field = "ssn"): FieldBinding => ({ model: "Patient", field, context: { clinic: "x" } });
const idOf = (sealed: Uint8Array) => Buffer.from(sealed.subarray(1, 17)).toString("hex");

/** The in-process Kms, counting its Decrypt calls. */
function counting(kms: Kms): { kms: KmsLike; calls: { decrypt: number } } {
  const calls = { decrypt: 0 };
  return {
    calls,
    kms: {
      encrypt: (r, o) => kms.encrypt(r, o),
      decrypt: (r, o) => {
        calls.decrypt += 1;
        return kms.decrypt(r, o);
      },
      generateDataKey: (r, o) => kms.generateDataKey(r, o),
      generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
      sign: (r, o) => kms.sign(r, o),
      verify: (r, o) => kms.verify(r, o),
      generateMac: (r, o) => kms.generateMac(r, o),
      verifyMac: (r, o) => kms.verifyMac(r, o),
      getPublicKey: (r, o) => kms.getPublicKey(r, o),
    },
  };
}

/**
 * A clinic whose key (behind ALIAS) wrote deterministic values and blind indexes. With
 * `listFirst`, its engines list that key in `previousKeyIds`, as they must to read under it
 * once the alias names another key.
 */
async function onboarded(listFirst = false) {
  const clock = new ManualClock();
  const kms = await createKms({ audit: false, clock });
  const first = (await kms.createKey()).keyMetadata.keyId;
  await kms.createAlias({ aliasName: ALIAS, targetKeyId: first });
  const store = new MemoryDataKeyStore();
  const engine = (dataKeyStore: DataKeyStore = store) => {
    const counted = counting(kms);
    const made = new FieldEncryptionEngine({
      kms: counted.kms,
      keyId: ALIAS,
      previousKeyIds: () => (listFirst ? [first] : []),
      dataKeyStore,
      clock,
      cache: { maxAgeMs: 60_000 },
    });
    return Object.assign(made, { calls: counted.calls });
  };
  const before = engine();
  const old = {
    deterministic: await before.encrypt(at(), DET, "123-45-6789"),
    index: await before.blindIndex(at("ssnIndex"), {}, "123-45-6789"),
    randomized: await before.encrypt(at(), RANDOM, "123-45-6789"),
  };
  const oldRow = (await store.get(idOf(old.deterministic))) as DataKeyRecord;
  /** Schedules deletion of the clinic's key and lets the 7-day window pass. */
  const shred = async () => {
    await kms.scheduleKeyDeletion({ keyId: first, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    await expect(kms.describeKey({ keyId: first })).rejects.toBeInstanceOf(NotFoundError);
  };
  /** Points the alias at a new key (creating the alias again if the deletion took it). */
  const reonboard = async () => {
    const next = (await kms.createKey()).keyMetadata.keyId;
    try {
      await kms.createAlias({ aliasName: ALIAS, targetKeyId: next });
    } catch {
      await kms.updateAlias({ aliasName: ALIAS, targetKeyId: next });
    }
    return next;
  };
  return { clock, kms, first, store, engine, before, old, oldRow, shred, reonboard };
}

describe("a stable data key whose KMS key was deleted", () => {
  test("is replaced once the alias names a new key: writes work, old values stay refused", async () => {
    const s = await onboarded();
    await s.shred();
    const next = await s.reonboard();
    // The engine that wrote before (its keys aged out meanwhile) and one started afresh.
    for (const engine of [s.before, s.engine()]) {
      const sealed = await engine.encrypt(at(), DET, "123-45-6789");
      expect(idOf(sealed)).not.toBe(idOf(s.old.deterministic));
      expect(await engine.decrypt(at(), DET, sealed)).toBe("123-45-6789");
      const index = await engine.blindIndex(at("ssnIndex"), {}, "123-45-6789");
      expect(index).not.toBe(s.old.index);
      // Crypto-shredded: the values sealed under the old stable key, or its data keys, stay so.
      await expect(engine.decrypt(at(), DET, s.old.deterministic)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      await expect(engine.decrypt(at(), RANDOM, s.old.randomized)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
    // Every engine lands on the same new stable key (equal values, equal ciphertexts), wrapped
    // under the new KMS key; the old row is left as it was.
    const a = await s.before.encrypt(at(), DET, "v");
    const b = await s.engine().encrypt(at(), DET, "v");
    expect(a).toEqual(b);
    const row = (await s.store.get(idOf(a))) as DataKeyRecord;
    expect(row.kmsKeyId.endsWith(next)).toBe(true);
    expect(row.purpose).toBe("stable");
    expect(row.encryptionContext).toEqual({ clinic: "x" });
    expect(await s.store.get(s.oldRow.id)).toEqual(s.oldRow);
  });

  test("passes the dead row over without asking the KMS again once it found it dead", async () => {
    const s = await onboarded();
    await s.shred();
    await s.reonboard();
    const engine = s.engine();
    await engine.encrypt(at(), DET, "v");
    // The dead row under the alias (refused: another key's), then without a KeyId (its key is gone).
    expect(engine.calls.decrypt).toBe(2);
    s.clock.advance(60_000);
    await engine.encrypt(at(), DET, "v");
    // Aged out: only the new row is unwrapped again.
    expect(engine.calls.decrypt).toBe(3);
  });

  test("says what happened when no new key is there to replace it", async () => {
    const s = await onboarded();
    await s.shred();
    const engine = s.engine();
    // The alias went with the key, or names nothing that exists: the KMS's NotFound, not the
    // error of a tampered value.
    await expect(engine.encrypt(at(), DET, "v")).rejects.toBeInstanceOf(NotFoundError);
    await expect(engine.blindIndex(at("ssnIndex"), {}, "v")).rejects.toBeInstanceOf(NotFoundError);
    expect(s.store.size).toBe(2);
  });

  test("two engines replacing it at once agree on one new row", async () => {
    const s = await onboarded();
    await s.shred();
    await s.reonboard();
    // Both generate their new key before either inserts: the store's insert-if-absent decides.
    let waiting: (() => void)[] = [];
    const inserts: DataKeyRecord[] = [];
    const racing: DataKeyStore = {
      get: (id) => s.store.get(id),
      insert: async (record) => {
        inserts.push(record);
        if (waiting.length === 0) {
          await new Promise<void>((resolve) => waiting.push(resolve));
        } else {
          for (const go of waiting) go();
          waiting = [];
        }
        return s.store.insert(record);
      },
    };
    const [one, two] = [s.engine(racing), s.engine(racing)];
    const [a, b, indexA, indexB] = await Promise.all([
      one.encrypt(at(), DET, "v"),
      two.encrypt(at(), DET, "v"),
      one.blindIndex(at("ssnIndex"), {}, "v"),
      two.blindIndex(at("ssnIndex"), {}, "v"),
    ]);
    expect(inserts.length).toBe(2);
    expect(inserts[0]?.id).toBe(inserts[1]?.id);
    expect(a).toEqual(b);
    expect(indexA).toBe(indexB);
    expect(await one.decrypt(at(), DET, b)).toBe("v");
    expect(await two.decrypt(at(), DET, a)).toBe("v");
    // The old row and one new one.
    expect(s.store.size).toBe(3);
  });

  test("is replaced inside a transaction scope too", async () => {
    const s = await onboarded();
    await s.shred();
    await s.reonboard();
    const engine = s.engine();
    const inTx = await engine.encrypt(at(), DET, "v", { transactionScope: "tx1" });
    engine.endTransactionScope("tx1", "commit");
    expect(await engine.encrypt(at(), DET, "v")).toEqual(inTx);
    expect(idOf(inTx)).not.toBe(idOf(s.old.deterministic));
  });
});

describe("a stable data key whose KMS key can still come back", () => {
  test.each([
    ["disabled", DisabledError],
    ["pending deletion", InvalidStateError],
  ] as const)(
    "is not replaced while its key is %s, even with the alias moved",
    async (state, error) => {
      // The key the alias named before is listed: it is the row's, and its state is the answer.
      const s = await onboarded(true);
      if (state === "disabled") await s.kms.disableKey({ keyId: s.first });
      else await s.kms.scheduleKeyDeletion({ keyId: s.first, pendingWindowInDays: 7 });
      await s.reonboard();
      s.clock.advance(60_000);
      for (const engine of [s.before, s.engine()]) {
        await expect(engine.encrypt(at(), DET, "123-45-6789")).rejects.toBeInstanceOf(error);
        await expect(engine.blindIndex(at("ssnIndex"), {}, "123-45-6789")).rejects.toBeInstanceOf(
          error,
        );
      }
      // Nothing was made in its place: the stable row and the randomized one.
      expect(s.store.size).toBe(2);
      // Undone, the same key serves again.
      if (state === "disabled") await s.kms.enableKey({ keyId: s.first });
      else await s.kms.cancelKeyDeletion({ keyId: s.first });
      await s.kms.enableKey({ keyId: s.first });
      expect(await s.engine().encrypt(at(), DET, "123-45-6789")).toEqual(s.old.deterministic);
      expect(await s.engine().blindIndex(at("ssnIndex"), {}, "123-45-6789")).toBe(s.old.index);
    },
  );

  test("a broken row under the key still selected is not replaced", async () => {
    const s = await onboarded();
    const broken = new MemoryDataKeyStore();
    const wrappedKey = s.oldRow.wrappedKey.slice();
    const last = wrappedKey.length - 1;
    wrappedKey[last] = (wrappedKey[last] as number) ^ 1;
    await broken.insert({ ...s.oldRow, wrappedKey });
    const engine = s.engine(broken);
    await expect(engine.encrypt(at(), DET, "v")).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(broken.size).toBe(1);
  });
});
