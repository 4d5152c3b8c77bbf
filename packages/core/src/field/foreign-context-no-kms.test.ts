/**
 * A value copied from another tenant's row (FORMAT §6.2.3) fails with the one generic error
 * before the KMS is asked for anything under that tenant's key: no Decrypt of its data key, on
 * any path, and so no answer from which the reader could learn in what state that key is
 * (enabled, disabled, pending deletion, deleted), and no use of it on the reader's request.
 */
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError, KmsInternalError } from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { fromFieldText } from "./field-format.ts";
import { reencryptFields } from "./reencrypt-job.ts";

const RANDOM: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };
const at = (clinic: string, field = "ssn"): FieldBinding => ({
  model: "Patient",
  field,
  context: { clinic },
});

/** The in-process Kms, with every Decrypt's encryption context written down. */
function spying(kms: Kms): { kms: KmsLike; decrypts: EncryptionContext[] } {
  const decrypts: EncryptionContext[] = [];
  return {
    decrypts,
    kms: {
      encrypt: (r, o) => kms.encrypt(r, o),
      decrypt: (r, o) => {
        decrypts.push({ ...r.encryptionContext });
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

/** What a caller (or an HTTP adapter mapping it) can see of an error. */
function seen(error: unknown): unknown {
  const e = error as Error & { code?: unknown };
  return { kind: e.constructor.name, code: e.code, message: e.message, cause: e.cause };
}

async function failure(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return seen(error);
  }
  throw new Error("expected a failure");
}

/** Clinics A and B, each with its own KMS key, and B's values (text and bytes, both modes). */
async function clinics() {
  const clock = new ManualClock();
  const kms = await createKms({ audit: false, clock });
  const keyA = (await kms.createKey()).keyMetadata.keyId;
  const keyB = (await kms.createKey()).keyMetadata.keyId;
  const keyId = (context: EncryptionContext) => (context.clinic === "A" ? keyA : keyB);
  const store = new MemoryDataKeyStore();
  const writer = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store, clock });
  const ofB = {
    randomizedText: await writer.encryptText(at("B"), RANDOM, "b's secret"),
    randomizedBytes: await writer.encrypt(at("B"), RANDOM, "b's secret"),
    deterministicText: await writer.encryptText(at("B"), DET, "b's secret"),
    deterministicBytes: await writer.encrypt(at("B"), DET, "b's secret"),
  };
  const ownA = await writer.encryptText(at("A"), RANDOM, "a's secret");
  /** A reader engine as after a restart: nothing cached. */
  const reader = (dataKeyStore = store) => {
    const spy = spying(kms);
    const engine = new FieldEncryptionEngine({ kms: spy.kms, keyId, dataKeyStore, clock });
    return { engine, decrypts: spy.decrypts };
  };
  return { clock, kms, keyA, keyB, keyId, store, ofB, ownA, reader };
}

/** B's key in each state a reader must not be able to tell apart. */
const STATES = ["enabled", "disabled", "pending deletion", "deleted"] as const;

async function enter(
  state: (typeof STATES)[number],
  { kms, keyB, clock }: Awaited<ReturnType<typeof clinics>>,
): Promise<void> {
  if (state === "disabled") await kms.disableKey({ keyId: keyB });
  if (state === "pending deletion") {
    await kms.enableKey({ keyId: keyB });
    await kms.scheduleKeyDeletion({ keyId: keyB, pendingWindowInDays: 7 });
  }
  if (state === "deleted") {
    clock.advanceDays(8);
    // The first use past the window destroys the key.
    await expect(kms.describeKey({ keyId: keyB })).rejects.toMatchObject({
      code: "NotFoundException",
    });
  }
}

describe("a value of another context is refused before any KMS call", () => {
  test("on every read path, alike in every state of the other context's key", async () => {
    const s = await clinics();
    const outcomes = new Map<string, unknown[]>();
    const note = (path: string, outcome: unknown) => {
      outcomes.set(path, [...(outcomes.get(path) ?? []), outcome]);
    };
    for (const state of STATES) {
      await enter(state, s);
      const { engine, decrypts } = s.reader();
      const { ofB } = s;
      note(
        "decryptText randomized",
        await failure(() => engine.decryptText(at("A"), RANDOM, ofB.randomizedText)),
      );
      note(
        "decrypt randomized",
        await failure(() => engine.decrypt(at("A"), RANDOM, ofB.randomizedBytes)),
      );
      note(
        "decryptText deterministic",
        await failure(() => engine.decryptText(at("A"), DET, ofB.deterministicText)),
      );
      note(
        "decrypt deterministic",
        await failure(() => engine.decrypt(at("A"), DET, ofB.deterministicBytes)),
      );
      note(
        "decryptMany",
        await failure(() =>
          engine.decryptMany([
            { binding: at("A"), spec: RANDOM, stored: ofB.randomizedText },
            { binding: at("A"), spec: DET, stored: ofB.deterministicBytes },
          ]),
        ),
      );
      // Under the row's key context only, with the row's id bound besides.
      const rowOfA: FieldBinding = {
        ...at("A"),
        context: { clinic: "A", recordId: "7" },
        keyContext: { clinic: "A" },
      };
      note(
        "decryptText with a key context",
        await failure(() => engine.decryptText(rowOfA, RANDOM, ofB.randomizedText)),
      );
      expect(decrypts, state).toEqual([]);

      // A batch mixing A's own value with B's: only A's data key is ever unwrapped.
      note(
        "decryptMany with an own value",
        await failure(() =>
          engine.decryptMany([
            { binding: at("A"), spec: RANDOM, stored: s.ownA },
            { binding: at("A"), spec: RANDOM, stored: ofB.randomizedText },
            { binding: at("A"), spec: DET, stored: ofB.deterministicText },
          ]),
        ),
      );
      expect(
        decrypts.filter((c) => c.clinic !== "A"),
        state,
      ).toEqual([]);

      // The rotation job reads a row of A holding B's values.
      for (const [field, spec] of [
        ["secret", RANDOM],
        ["secretDet", DET],
      ] as const) {
        const stored = field === "secret" ? ofB.randomizedText : ofB.deterministicText;
        note(
          `reencryptFields ${field}`,
          await failure(() =>
            reencryptFields({
              engine,
              model: "Patient",
              fields: { [field]: { ...spec, storage: "text" } },
              source: {
                fetchBatch: async (cursor) =>
                  cursor === undefined
                    ? [{ cursor: 1, context: { clinic: "A" }, values: { [field]: stored } }]
                    : [],
                compareAndSet: async () => true,
              },
            }),
          ),
        );
      }
      expect(
        decrypts.filter((c) => c.clinic !== "A"),
        state,
      ).toEqual([]);
    }
    const generic = seen(new InvalidCiphertextError("field value is not valid ciphertext"));
    for (const [path, seenInStates] of outcomes) {
      expect(seenInStates, path).toEqual(STATES.map(() => generic));
    }
  });

  test("a reader holding the other context's key unwrapped refuses the same way", async () => {
    const s = await clinics();
    const { engine, decrypts } = s.reader();
    // B's request reads B's values: their keys are now cached in the shared engine.
    expect(await engine.decryptText(at("B"), RANDOM, s.ofB.randomizedText)).toBe("b's secret");
    expect(await engine.decryptText(at("B"), DET, s.ofB.deterministicText)).toBe("b's secret");
    const unwraps = decrypts.length;
    const cached = [
      await failure(() => engine.decryptText(at("A"), RANDOM, s.ofB.randomizedText)),
      await failure(() => engine.decryptText(at("A"), DET, s.ofB.deterministicText)),
    ];
    // And once B's key is gone from the cache and from the KMS, as before.
    engine.clearCache();
    await enter("pending deletion", s);
    const uncached = [
      await failure(() => engine.decryptText(at("A"), RANDOM, s.ofB.randomizedText)),
      await failure(() => engine.decryptText(at("A"), DET, s.ofB.deterministicText)),
    ];
    expect(uncached).toEqual(cached);
    expect(decrypts.length).toBe(unwraps);
  });

  test("a reader waiting on the other context's unwrap in flight does not join it", async () => {
    const s = await clinics();
    await enter("pending deletion", s);
    const { engine, decrypts } = s.reader();
    // B's own read is in flight (and will fail: B's key is pending deletion) when A's copy
    // of the same value asks for the same data key.
    const own = engine.decryptText(at("B"), RANDOM, s.ofB.randomizedText);
    const copied = engine.decryptText(at("A"), RANDOM, s.ofB.randomizedText);
    const ownDet = engine.decryptText(at("B"), DET, s.ofB.deterministicText);
    const copiedDet = engine.decryptText(at("A"), DET, s.ofB.deterministicText);
    await expect(own).rejects.toMatchObject({ code: "KMSInvalidStateException" });
    await expect(ownDet).rejects.toMatchObject({ code: "KMSInvalidStateException" });
    const generic = seen(new InvalidCiphertextError("field value is not valid ciphertext"));
    expect(await failure(() => copied)).toEqual(generic);
    expect(await failure(() => copiedDet)).toEqual(generic);
    // B's two reads asked once each; A's asked nothing.
    expect(decrypts).toEqual([{ clinic: "B" }, { clinic: "B" }]);
  });

  test("a stable-key row planted under another context is refused for writing without unwrapping it", async () => {
    const s = await clinics();
    // Whoever writes the data-key table copies B's stable row to the id of A's stable key.
    const planted = new MemoryDataKeyStore();
    const idOfB = Buffer.from(fromFieldText(s.ofB.deterministicText).subarray(1, 17)).toString(
      "hex",
    );
    const rowOfB = await s.store.get(idOfB);
    const { stableDataKeyId: idOfA } = await s
      .reader()
      .engine.currentKeys({ clinic: "A" }, { loadStableKey: false });
    await planted.insert({ ...(rowOfB as NonNullable<typeof rowOfB>), id: idOfA });
    const outcomes: unknown[] = [];
    for (const state of STATES) {
      await enter(state, s);
      const { engine, decrypts } = s.reader(planted);
      outcomes.push(
        await failure(() => engine.encrypt(at("A"), DET, "x")),
        await failure(() => engine.blindIndex(at("A", "ssnIndex"), {}, "x")),
        await failure(() => engine.encrypt(at("A"), DET, "x", { transactionScope: "tx" })),
        await failure(() =>
          engine.blindIndex(at("A", "ssnIndex"), {}, "x", { transactionScope: "tx" }),
        ),
      );
      expect(decrypts, state).toEqual([]);
    }
    const refused = seen(
      new KmsInternalError(
        "the data-key row stored under this context's stable data key id is wrapped under another context",
      ),
    );
    expect(outcomes).toEqual(outcomes.map(() => refused));
  });
});
