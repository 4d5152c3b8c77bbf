/**
 * A data-key row is unwrapped only under a KMS key the engine is configured with (FORMAT §6.2):
 * the one `keyId` selects for the row's context, or one of `previousKeyIds`, named in the
 * Decrypt request so that the KMS refuses a wrapped key made under any other. Whoever writes
 * the application database can plant a row wrapping a data key they know under a KMS key the
 * application may decrypt with — another tenant's key, or a key of their own in the same
 * account — with a context that is a part of the victim's; such a row must open no value.
 */
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  DisabledError,
  InvalidCiphertextError,
  KmsInternalError,
  ValidationError,
} from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import type { CallOptions, DecryptRequest, EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { type ReencryptSource, reencryptFields } from "./reencrypt-job.ts";

const MODES = ["randomized", "deterministic"] as const;
const APP = "arn:aws:iam::000000000000:role/app";
const MALLORY = "arn:aws:iam::000000000000:user/mallory";
const victimOf = (tenant: string): FieldBinding => ({
  model: "Payout",
  field: "iban",
  context: { tenant },
});
const idOf = (stored: string) =>
  Buffer.from(stored.slice(5), "base64url").subarray(1, 17).toString("hex");

/** A KmsLike over `kms` that records every Decrypt request, acting as `principal` if given. */
function recording(kms: Kms, principal?: string) {
  const decrypts: DecryptRequest[] = [];
  const as = (o?: CallOptions): CallOptions | undefined =>
    principal === undefined ? o : { ...o, principal };
  const like = {
    encrypt: (r, o) => kms.encrypt(r, as(o)),
    decrypt: (r, o) => {
      decrypts.push(r);
      return kms.decrypt(r, as(o));
    },
    generateDataKey: (r, o) => kms.generateDataKey(r, as(o)),
  } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
  return { kms: like, decrypts };
}

/** One KMS key per tenant; tenant A's principal may use key A, and writes the database. */
async function perTenant() {
  const kms = await createKms({ audit: false });
  const keyA = (await kms.createKey()).keyMetadata.keyId;
  const keyB = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const select = (ctx: EncryptionContext) => (ctx.tenant === "A" ? keyA : keyB);
  const app = () => {
    const spy = recording(kms);
    return Object.assign(
      new FieldEncryptionEngine({ kms: spy.kms, dataKeyStore: store, keyId: select }),
      { decrypts: spy.decrypts },
    );
  };
  // The attacker's engine makes every data key under key A, whatever the context.
  const attacker = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: keyA });
  return { kms, keyA, keyB, store, app, attacker };
}

describe.each(MODES)("a row planted under another tenant's KMS key (%s)", (mode) => {
  const spec: FieldSpec = { type: "string", mode };

  it("opens no value of the victim tenant, on every read path", async () => {
    const t = await perTenant();
    const writer = t.app();
    const real = await writer.encryptText(victimOf("B"), spec, "DE00 victim account");
    const forged = await t.attacker.encryptText(victimOf("B"), spec, "GB99 attacker account");
    // The planted row holds B's context, and its wrapped key is A's.
    const row = (await t.store.get(idOf(forged))) as DataKeyRecord;
    expect(row.encryptionContext).toEqual({ tenant: "B" });
    expect(row.kmsKeyId.endsWith(t.keyA)).toBe(true);

    const reader = t.app();
    await expect(reader.decryptText(victimOf("B"), spec, forged)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await expect(
      reader.decryptMany([{ binding: victimOf("B"), spec, stored: forged }]),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(reader.inspect(forged, victimOf("B"))).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(await reader.decryptText(victimOf("B"), spec, real)).toBe("DE00 victim account");
    // Every unwrap named the key: the KMS, not the row, decided.
    expect(reader.decrypts.length).toBeGreaterThan(0);
    for (const request of reader.decrypts) expect(request.keyId).toBe(t.keyB);
  });

  it("keeps crypto-shredding: with B's key disabled no value of B reads, planted or real", async () => {
    const t = await perTenant();
    const real = await t.app().encryptText(victimOf("B"), spec, "DE00 victim account");
    const forged = await t.attacker.encryptText(victimOf("B"), spec, "GB99 attacker account");
    await t.kms.disableKey({ keyId: t.keyB });
    const reader = t.app();
    await expect(reader.decryptText(victimOf("B"), spec, real)).rejects.toBeInstanceOf(
      DisabledError,
    );
    await expect(reader.decryptText(victimOf("B"), spec, forged)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    // Tenant A's own values are untouched.
    const a = await t.app().encryptText(victimOf("A"), spec, "A's");
    expect(await reader.decryptText(victimOf("A"), spec, a)).toBe("A's");
  });
});

describe.each(MODES)("a row planted under the attacker's own new KMS key (%s)", (mode) => {
  it("opens no value, though the application may decrypt with that key", async () => {
    const kms = await createKms({ audit: false, principal: APP });
    // The application's key is the application's alone: Mallory may not use it.
    const policy = JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { AWS: APP }, Action: "kms:*", Resource: "*" }],
    });
    const appKey = (await kms.createKey({ policy, bypassPolicyLockoutSafetyCheck: true }))
      .keyMetadata.keyId;
    await expect(
      kms.generateDataKey({ keyId: appKey, keySpec: "AES_256" }, { principal: MALLORY }),
    ).rejects.toMatchObject({ code: "AccessDeniedException" });
    // Mallory's own key has the default policy: the whole account, the application too, uses it.
    const malloryKey = (await kms.createKey({}, { principal: MALLORY })).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const mallory = new FieldEncryptionEngine({
      kms: recording(kms, MALLORY).kms,
      dataKeyStore: store,
      keyId: malloryKey,
    });
    const spec: FieldSpec = { type: "string", mode };
    const binding = victimOf("B");
    const real = await new FieldEncryptionEngine({
      kms,
      dataKeyStore: store,
      keyId: appKey,
    }).encryptText(binding, spec, "DE00 victim");
    const forged = await mallory.encryptText(binding, spec, "GB99 mallory");
    // A fresh application engine (after a restart: nothing cached).
    const app = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: appKey });
    await expect(app.decryptText(binding, spec, forged)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(await app.decryptText(binding, spec, real)).toBe("DE00 victim");
  });
});

describe("a key selector that gives no key for a planted row's context", () => {
  it("selects none: the row is refused, never unwrapped without a KeyId", async () => {
    const kms = await createKms({ audit: false });
    const keyA = (await kms.createKey()).keyMetadata.keyId;
    const keys: Record<string, string> = { A: keyA, B: (await kms.createKey()).keyMetadata.keyId };
    const store = new MemoryDataKeyStore();
    // A's principal wraps a key under the empty context, a part of every value's context.
    const attacker = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: keyA });
    // Sealed for B's row, its data key wrapped under the empty context.
    const bound = await attacker.encryptText(
      { ...victimOf("B"), keyContext: {} },
      { type: "string" },
      "GB99 attacker",
    );
    expect((await store.get(idOf(bound)))?.encryptionContext).toEqual({});
    const spy = recording(kms);
    const app = new FieldEncryptionEngine({
      kms: spy.kms,
      dataKeyStore: store,
      keyId: (ctx) => keys[ctx.tenant as string] as string,
    });
    await expect(app.decryptText(victimOf("B"), { type: "string" }, bound)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(spy.decrypts).toEqual([]);
  });
});

/** An engine that moved from `oldKey` to `newKey`, and the values written under the old one. */
async function moved() {
  const kms = await createKms({ audit: false });
  const oldKey = (await kms.createKey()).keyMetadata.keyId;
  const newKey = (await kms.createKey()).keyMetadata.keyId;
  const oldArn = (await kms.describeKey({ keyId: oldKey })).keyMetadata.arn;
  const store = new MemoryDataKeyStore();
  const before = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: oldKey });
  const written = {
    randomized: await before.encryptText(victimOf("B"), { type: "string" }, "old r"),
    deterministic: await before.encryptText(
      victimOf("B"),
      { type: "string", mode: "deterministic" },
      "old d",
    ),
  };
  const engine = (previousKeyIds?: readonly string[], dataKeyStore: DataKeyStore = store) => {
    const spy = recording(kms);
    return Object.assign(
      new FieldEncryptionEngine({
        kms: spy.kms,
        dataKeyStore,
        keyId: newKey,
        ...(previousKeyIds === undefined ? {} : { previousKeyIds }),
      }),
      { decrypts: spy.decrypts },
    );
  };
  return { kms, oldKey, newKey, oldArn, store, written, engine };
}

describe.each(MODES)("values under a previous KMS key (%s)", (mode) => {
  const spec: FieldSpec = { type: "string", mode };
  const value = mode === "randomized" ? "old r" : "old d";

  it("read while the key is listed in previousKeyIds, and not once it is not", async () => {
    const m = await moved();
    const stored = m.written[mode];
    await expect(m.engine().decryptText(victimOf("B"), spec, stored)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    for (const listed of [[m.oldKey], [m.oldArn]]) {
      const engine = m.engine(listed);
      expect(await engine.decryptText(victimOf("B"), spec, stored)).toBe(value);
      // The row's column names the old key's ARN: it is tried first, one Decrypt in all.
      expect(engine.decrypts.map((r) => r.keyId)).toEqual(listed);
    }
    // As a function of the row's context, as keyId may be.
    const perContext = new FieldEncryptionEngine({
      kms: m.kms,
      dataKeyStore: m.store,
      keyId: m.newKey,
      previousKeyIds: (ctx) => (ctx.tenant === "B" ? [m.oldKey] : []),
    });
    expect(await perContext.decryptText(victimOf("B"), spec, stored)).toBe(value);
  });

  it("a row's column cannot make an unlisted key's row read, nor reorder into a read", async () => {
    const m = await moved();
    const stored = m.written[mode];
    const row = (await m.store.get(idOf(stored))) as DataKeyRecord;
    const forgedColumn = new MemoryDataKeyStore();
    const newArn = (await m.kms.describeKey({ keyId: m.newKey })).keyMetadata.arn;
    await forgedColumn.insert({ ...row, kmsKeyId: newArn });
    await expect(
      m.engine(undefined, forgedColumn).decryptText(victimOf("B"), spec, stored),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    // Listed, the column's lie only costs one refused Decrypt under the current key first.
    const engine = m.engine([m.oldKey], forgedColumn);
    expect(await engine.decryptText(victimOf("B"), spec, stored)).toBe(value);
    expect(engine.decrypts.map((r) => r.keyId)).toEqual([m.newKey, m.oldKey]);
  });
});

describe("values under the current KMS key", () => {
  it("cost one Decrypt, and its key material rotated (same key id) changes nothing", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId });
    const before = {
      r: await writer.encryptText(victimOf("B"), { type: "string" }, "r1"),
      d: await writer.encryptText(victimOf("B"), { type: "string", mode: "deterministic" }, "d1"),
    };
    await kms.rotateKeyOnDemand({ keyId });
    const after = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId });
    const r2 = await after.encryptText(victimOf("B"), { type: "string" }, "r2");
    const spy = recording(kms);
    const reader = new FieldEncryptionEngine({
      kms: spy.kms,
      dataKeyStore: store,
      keyId,
      previousKeyIds: [(await kms.createKey()).keyMetadata.keyId],
    });
    expect(await reader.decryptText(victimOf("B"), { type: "string" }, before.r)).toBe("r1");
    expect(await reader.decryptText(victimOf("B"), { type: "string" }, r2)).toBe("r2");
    expect(
      await reader.decryptText(victimOf("B"), { type: "string", mode: "deterministic" }, before.d),
    ).toBe("d1");
    // One Decrypt per data key, each under the current key: the previous one is never tried.
    expect(spy.decrypts.map((r) => r.keyId)).toEqual([keyId, keyId, keyId]);
  });

  it("previousKeyIds that give no key ids are refused", async () => {
    const m = await moved();
    const engine = new FieldEncryptionEngine({
      kms: m.kms,
      dataKeyStore: m.store,
      keyId: m.newKey,
      // A string, not a list of them: never taken as its characters.
      previousKeyIds: (() => m.oldKey) as unknown as () => readonly string[],
    });
    await expect(
      engine.decryptText(victimOf("B"), { type: "string" }, m.written.randomized),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

describe("an alias re-pointed to a new KMS key", () => {
  async function aliased() {
    const kms = await createKms({ audit: false });
    const oldKey = (await kms.createKey()).keyMetadata.keyId;
    const newKey = (await kms.createKey()).keyMetadata.keyId;
    const oldArn = (await kms.describeKey({ keyId: oldKey })).keyMetadata.arn;
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: oldKey });
    const store = new MemoryDataKeyStore();
    const engine = (previousKeyIds: readonly string[] = []) =>
      new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: "alias/app", previousKeyIds });
    const det: FieldSpec = { type: "string", mode: "deterministic" };
    const before = engine();
    const written = {
      r: await before.encryptText(victimOf("B"), { type: "string" }, "r"),
      d: await before.encryptText(victimOf("B"), det, "d"),
    };
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: newKey });
    return { kms, oldArn, store, engine, det, written };
  }

  it("reads the old key's rows only once that key is listed", async () => {
    const a = await aliased();
    const unlisted = a.engine();
    await expect(
      unlisted.decryptText(victimOf("B"), { type: "string" }, a.written.r),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(unlisted.decryptText(victimOf("B"), a.det, a.written.d)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    const listed = a.engine([a.oldArn]);
    expect(await listed.decryptText(victimOf("B"), { type: "string" }, a.written.r)).toBe("r");
    expect(await listed.decryptText(victimOf("B"), a.det, a.written.d)).toBe("d");
  });

  it("refuses deterministic writes until the old key is listed, without forking the stable key", async () => {
    const a = await aliased();
    const rows = a.store.size;
    // The stable row (derived from the alias) is the old key's: live, but not configured.
    await expect(a.engine().encryptText(victimOf("B"), a.det, "d")).rejects.toBeInstanceOf(
      KmsInternalError,
    );
    await expect(
      a.engine().blindIndex({ ...victimOf("B"), field: "ibanIndex" }, {}, "d"),
    ).rejects.toBeInstanceOf(KmsInternalError);
    expect(a.store.size).toBe(rows);
    // Listed, the same stable key serves: equal values, equal ciphertexts.
    expect(await a.engine([a.oldArn]).encryptText(victimOf("B"), a.det, "d")).toBe(a.written.d);
  });
});

describe("a stable row no configured key is the key of, its own key's state unknown", () => {
  const throttled = Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" });
  const denied = new AccessDeniedError("not allowed to use the row's key");
  const socket = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });

  it.each([
    ["an AWS SDK refusal", throttled],
    ["a KmsError", denied],
  ])(
    "is refused with the KMS's refusal as the cause (%s), not the advice for a live row",
    async (_, refusal) => {
      const a = await aliasedStable();
      const error = await a
        .engine(refusal)
        .encryptText(victimOf("B"), a.det, "d")
        .catch((e) => e);
      expect(error).toBeInstanceOf(KmsInternalError);
      expect((error as Error).cause).toBe(refusal);
      expect((error as Error).message).not.toContain("list the key it named before");
    },
  );

  it("passes on a failure that is no KMS answer as it is", async () => {
    const a = await aliasedStable();
    await expect(a.engine(socket).encryptText(victimOf("B"), a.det, "d")).rejects.toBe(socket);
  });

  it("still advises listing the key when its own key unwraps the row", async () => {
    const a = await aliasedStable();
    const error = await a
      .engine()
      .encryptText(victimOf("B"), a.det, "d")
      .catch((e) => e);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).cause).toBeUndefined();
    expect((error as Error).message).toContain("list the key it named before in previousKeyIds");
  });

  /** A stable row under a key the alias named before; the engine's probe Decrypt (no KeyId) fails with `probe`. */
  async function aliasedStable() {
    const kms = await createKms({ audit: false });
    const oldKey = (await kms.createKey()).keyMetadata.keyId;
    const newKey = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: oldKey });
    const store = new MemoryDataKeyStore();
    const det: FieldSpec = { type: "string", mode: "deterministic" };
    await new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: "alias/app" }).encryptText(
      victimOf("B"),
      det,
      "d",
    );
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: newKey });
    const engine = (probe?: unknown) => {
      const like = {
        encrypt: (r, o) => kms.encrypt(r, o),
        decrypt: (r, o) => {
          if (probe !== undefined && r.keyId === undefined) return Promise.reject(probe);
          return kms.decrypt(r, o);
        },
        generateDataKey: (r, o) => kms.generateDataKey(r, o),
      } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
      return new FieldEncryptionEngine({ kms: like, dataKeyStore: store, keyId: "alias/app" });
    };
    return { det, engine };
  }
});

describe("a live row planted at a context's stable data key id", () => {
  it("is refused for writing (KMSInternalException), not passed over for a new generation", async () => {
    const kms = await createKms({ audit: false });
    const appKey = (await kms.createKey()).keyMetadata.keyId;
    const otherKey = (await kms.createKey()).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const det: FieldSpec = { type: "string", mode: "deterministic" };
    // The attacker computes the id of (appKey, {tenant: B}) and plants a row there first, with
    // the right context, wrapping a key they know under another key the app may decrypt with.
    const app = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: appKey });
    const legit = new MemoryDataKeyStore();
    const probe = new FieldEncryptionEngine({ kms, dataKeyStore: legit, keyId: appKey });
    const id = idOf(await probe.encryptText(victimOf("B"), det, "x"));
    const planted = await kms.generateDataKey({
      keyId: otherKey,
      keySpec: "AES_256",
      encryptionContext: { tenant: "B" },
    });
    await store.insert({
      id,
      kmsKeyId: (await kms.describeKey({ keyId: appKey })).keyMetadata.arn,
      wrappedKey: planted.ciphertextBlob,
      encryptionContext: { tenant: "B" },
      purpose: "stable",
      createdAt: 0,
    });
    await expect(app.encryptText(victimOf("B"), det, "d")).rejects.toBeInstanceOf(KmsInternalError);
    expect(store.size).toBe(1);
  });
});

describe("reencryptFields", () => {
  it("moves rows from a previous key to the current one, by the KMS's answer, not the column", async () => {
    const m = await moved();
    const stored = m.written.randomized;
    const newArn = (await m.kms.describeKey({ keyId: m.newKey })).keyMetadata.arn;
    // The row's column claims the current key: only the KMS's answer shows it is the old one.
    const row = (await m.store.get(idOf(stored))) as DataKeyRecord;
    const lying = new MemoryDataKeyStore();
    await lying.insert({ ...row, kmsKeyId: newArn });
    const engine = m.engine([m.oldKey], lying);
    expect(await engine.inspect(stored)).toMatchObject({ kmsKeyId: newArn });
    expect(await engine.inspect(stored, victimOf("B"))).toMatchObject({ kmsKeyId: m.oldArn });
    const rows = [{ id: 1, iban: stored as string }];
    const source: ReencryptSource = {
      fetchBatch: async (cursor) =>
        cursor === undefined
          ? rows.map((r) => ({ cursor: r.id, context: { tenant: "B" }, values: { iban: r.iban } }))
          : [],
      compareAndSet: async (_row, next) => {
        (rows[0] as { iban: string }).iban = next.iban as string;
        return true;
      },
    };
    const fields = { iban: { type: "string", storage: "text" } } as const;
    expect((await reencryptFields({ engine, source, model: "Payout", fields })).reencrypted).toBe(
      1,
    );
    const rewritten = (rows[0] as { iban: string }).iban;
    expect(await engine.inspect(rewritten, victimOf("B"))).toMatchObject({ kmsKeyId: newArn });
    // Off the old key: an engine no longer listing it reads the moved value.
    expect(
      await m.engine([], lying).decryptText(victimOf("B"), { type: "string" }, rewritten),
    ).toBe("old r");
  });
});
