/**
 * Record seals (docs/FORMAT.md §4.1) against a store writer without the root key: every edit of
 * a sealed key or alias record is refused with a RootKeyError before the KMS acts on it, and the
 * seal itself has exactly one valid spelling. The store is a plain MemoryKeyStore the test
 * writes to directly, as a writer with database access would.
 *
 * Upgrade of unsealed stores, root-key rotation and snapshots: record-seal-lifecycle.test.ts.
 */
import { createHmac, hkdfSync } from "node:crypto";
import { inspect, isDeepStrictEqual } from "node:util";
import {
  createKms,
  type Kms,
  MemoryKeyStore,
  type RootKeyError,
  RootKeySource,
  type StoredAlias,
  type StoredKey,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import {
  canonicalAliasRecord,
  canonicalKeyRecord,
  parseSeal,
} from "../../src/keystore/record-seal.ts";
import { SealedKeyStore } from "../../src/keystore/sealed-key-store.ts";
import { refusal, rootKeyIdOf } from "./seal-test-support.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i);
const MALLORY = "arn:aws:iam::111122223333:user/mallory";
const plaintext = new TextEncoder().encode("sealed records");

// ---- an independent implementation of FORMAT §4.1, node:crypto only ----

function sealKeyOf(root: Uint8Array): Buffer {
  return Buffer.from(hkdfSync("sha256", root, new Uint8Array(0), "kms/record-seal/v1", 32));
}

function referenceSeal(
  root: Uint8Array,
  kind: "key" | "alias",
  counter: number,
  canonical: string,
): string {
  const mac = createHmac("sha256", sealKeyOf(root))
    .update(`kms/record-seal/v1|${kind}|${counter}|${canonical}`, "utf8")
    .digest();
  return `s1.${rootKeyIdOf(root)}.${counter}.${mac.toString("base64url")}`;
}

async function hsmFor(root: Uint8Array): Promise<SoftwareHsm> {
  return SoftwareHsm.open(RootKeySource.fromBytes(Uint8Array.from(root)), new MemoryKeyStore());
}

// ---- store-writer helpers ----

function omit<T extends object, K extends keyof T>(value: T, ...names: K[]): Omit<T, K> {
  const copy = { ...value };
  for (const name of names) delete copy[name];
  return copy;
}

/** Rewrites a key record in the store, keeping its seal, as a writer without the root key can. */
async function edit(
  store: MemoryKeyStore,
  keyId: string,
  change: (key: StoredKey) => StoredKey,
): Promise<StoredKey> {
  const current = (await store.getKey(keyId))!;
  await store.updateKey({ ...change(current), revision: current.revision + 1 });
  return (await store.getKey(keyId))!;
}

/** Puts `record` back as the key's current record (any seal it carries included). */
async function putBack(store: MemoryKeyStore, record: StoredKey): Promise<void> {
  await edit(store, record.keyId, () => record);
}

interface Fixture {
  readonly store: MemoryKeyStore;
  readonly kms: Kms;
  readonly clock: ManualClock;
  /** Ids and ARNs of: a key with every optional field set, a disabled key, a key pending
   * deletion, an ECC signing key, and a bystander nobody edits. */
  readonly keys: Readonly<Record<KeyName, { readonly keyId: string; readonly arn: string }>>;
  /** Ciphertext of `plaintext` under the bystander. */
  readonly bystanderBlob: Uint8Array;
}

type KeyName = "full" | "disabled" | "pending" | "signing" | "bystander";

const ADMIN_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    {
      Sid: "Admin",
      Effect: "Allow",
      Principal: { AWS: "arn:aws:iam::000000000000:root" },
      Action: "kms:*",
      Resource: "*",
    },
  ],
});

async function fixture(): Promise<Fixture> {
  const store = new MemoryKeyStore();
  const clock = new ManualClock();
  const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
  const create = async (request: Parameters<Kms["createKey"]>[0]) => {
    const { keyId, arn } = (await kms.createKey(request)).keyMetadata;
    return { keyId, arn };
  };
  const full = await create({
    description: "full",
    tags: [{ tagKey: "team", tagValue: "payments" }],
  });
  await kms.enableKeyRotation({ keyId: full.keyId, rotationPeriodInDays: 90 });
  await kms.rotateKeyOnDemand({ keyId: full.keyId });
  await kms.putKeyPolicy({ keyId: full.keyId, policy: ADMIN_POLICY });
  await kms.createGrant({
    keyId: full.keyId,
    granteePrincipal: "arn:aws:iam::000000000000:role/worker",
    operations: ["Decrypt"],
    constraints: { encryptionContextSubset: { tenant: "acme" } },
  });
  const disabled = await create({ description: "disabled" });
  await kms.disableKey({ keyId: disabled.keyId });
  const pending = await create({ description: "pending" });
  await kms.scheduleKeyDeletion({ keyId: pending.keyId, pendingWindowInDays: 7 });
  const signing = await create({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" });
  await kms.getPublicKey({ keyId: signing.keyId });
  const bystander = await create({ description: "bystander" });
  await kms.createAlias({ aliasName: "alias/full", targetKeyId: full.keyId });
  await kms.createAlias({ aliasName: "alias/bystander", targetKeyId: bystander.keyId });
  const { ciphertextBlob } = await kms.encrypt({ keyId: bystander.keyId, plaintext });
  return {
    store,
    kms,
    clock,
    keys: { full, disabled, pending, signing, bystander },
    bystanderBlob: ciphertextBlob,
  };
}

/** The bystander's key and alias still work in the same Kms. */
async function expectBystanderWorks(f: Fixture): Promise<void> {
  const { plaintext: out } = await f.kms.decrypt({ ciphertextBlob: f.bystanderBlob });
  expect(Buffer.from(out).equals(Buffer.from(plaintext))).toBe(true);
  await f.kms.encrypt({ keyId: "alias/bystander", plaintext });
}

// ---- known answers ----

const VECTOR_ROOT = Uint8Array.from({ length: 32 }, (_, i) => i);

const VECTOR_KEY: StoredKey = {
  keyId: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0",
  revision: 3,
  createdAt: 1767225600000,
  description: "vector",
  keySpec: "SYMMETRIC_DEFAULT",
  keyUsage: "ENCRYPT_DECRYPT",
  origin: "AWS_KMS",
  multiRegion: false,
  keyState: "Enabled",
  rotation: {
    enabled: true,
    periodInDays: 365,
    nextRotationAt: 1798761600000,
    onDemandRotations: 0,
  },
  tags: [{ tagKey: "team", tagValue: "payments" }],
  grants: [],
  versions: [
    {
      version: 1,
      createdAt: 1767225600000,
      keyMaterialId: "ab".repeat(32),
      wrappedMaterial: Uint8Array.of(0, 1, 2, 3, 4),
    },
  ],
  currentVersion: 1,
};

/** By hand from FORMAT §4.1: sorted names, `revision` and empty `grants` left out, bytes base64. */
const VECTOR_KEY_CANONICAL =
  '{"createdAt":1767225600000,"currentVersion":1,"description":"vector",' +
  '"keyId":"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0","keySpec":"SYMMETRIC_DEFAULT",' +
  '"keyState":"Enabled","keyUsage":"ENCRYPT_DECRYPT","multiRegion":false,"origin":"AWS_KMS",' +
  '"rotation":{"enabled":true,"nextRotationAt":1798761600000,"onDemandRotations":0,' +
  '"periodInDays":365},"tags":[{"tagKey":"team","tagValue":"payments"}],' +
  '"versions":[{"createdAt":1767225600000,"keyMaterialId":"' +
  "ab".repeat(32) +
  '","version":1,"wrappedMaterial":"AAECAwQ="}]}';

const VECTOR_KEY_SEAL = "s1.d5b9671aed4cd28a.7.n4kQbWKqt3SlU1PUau8l27LNAYLz6qvfty-vqg5Gh7Q";

const VECTOR_ALIAS: StoredAlias = {
  aliasName: "alias/vector",
  targetKeyId: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0",
  createdAt: 1767225600000,
  updatedAt: 1767312000000,
};

const VECTOR_ALIAS_CANONICAL =
  '{"aliasName":"alias/vector","createdAt":1767225600000,' +
  '"targetKeyId":"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0","updatedAt":1767312000000}';

const VECTOR_ALIAS_SEAL = "s1.d5b9671aed4cd28a.2.d6zkRwntqdFmHyyPrkr_3V_TXP3evXR9LBhg1Tr1G8g";

describe("known answers (FORMAT §4.1)", () => {
  it("canonical key record: sorted names, undefined and revision left out, bytes base64", () => {
    expect(canonicalKeyRecord(VECTOR_KEY)).toBe(VECTOR_KEY_CANONICAL);
    // Normalizations: grants [] ≡ absent, an undefined property ≡ absent, input order and
    // properties StoredKey does not declare do not matter, nor do revision and seal.
    const variants: StoredKey[] = [
      omit(VECTOR_KEY, "grants"),
      { ...VECTOR_KEY, policy: undefined } as unknown as StoredKey,
      Object.fromEntries(Object.entries(VECTOR_KEY).reverse()) as unknown as StoredKey,
      { ...VECTOR_KEY, extra: "ignored" } as unknown as StoredKey,
      { ...VECTOR_KEY, revision: 99, seal: "s1.anything" },
    ];
    for (const variant of variants) expect(canonicalKeyRecord(variant)).toBe(VECTOR_KEY_CANONICAL);
  });

  it("canonical key record: optional fields, grants and public keys when present", () => {
    const record: StoredKey = {
      ...VECTOR_KEY,
      policy: '{"Version":"2012-10-17"}',
      deletionDate: 5,
      pendingWindowInDays: 7,
      grants: [
        {
          grantId: "g1",
          granteePrincipal: "p",
          issuingPrincipal: "i",
          operations: ["Decrypt", "Encrypt"],
          constraints: { encryptionContextEquals: { b: "2", a: "1" } },
          createdAt: 9,
        },
      ],
      versions: [
        { ...VECTOR_KEY.versions[0]!, publicKey: Uint8Array.of(0xff), rotationType: "ON_DEMAND" },
      ],
    };
    const canonical = canonicalKeyRecord(record);
    expect(canonical).toContain(
      '"grants":[{"constraints":{"encryptionContextEquals":{"a":"1","b":"2"}},"createdAt":9,' +
        '"grantId":"g1","granteePrincipal":"p","issuingPrincipal":"i",' +
        '"operations":["Decrypt","Encrypt"]}]',
    );
    expect(canonical).toContain('"policy":"{\\"Version\\":\\"2012-10-17\\"}"');
    expect(canonical).toContain('"deletionDate":5,"description"');
    expect(canonical).toContain('"pendingWindowInDays":7,"policy"');
    expect(canonical).toContain(
      '"publicKey":"/w==","rotationType":"ON_DEMAND","version":1,"wrappedMaterial":"AAECAwQ="',
    );
  });

  it("canonical alias record: every field but seal, sorted", () => {
    expect(canonicalAliasRecord(VECTOR_ALIAS)).toBe(VECTOR_ALIAS_CANONICAL);
    expect(canonicalAliasRecord({ ...VECTOR_ALIAS, seal: "x" })).toBe(VECTOR_ALIAS_CANONICAL);
  });

  it("seals equal the reference computation and the pinned strings", async () => {
    const sealed = new SealedKeyStore(new MemoryKeyStore(), await hsmFor(VECTOR_ROOT));
    const keySeal = sealed.sealKey(VECTOR_KEY, 7).seal;
    const aliasSeal = sealed.sealAlias(VECTOR_ALIAS, 2).seal;
    expect(keySeal).toBe(referenceSeal(VECTOR_ROOT, "key", 7, VECTOR_KEY_CANONICAL));
    expect(aliasSeal).toBe(referenceSeal(VECTOR_ROOT, "alias", 2, VECTOR_ALIAS_CANONICAL));
    expect(keySeal).toBe(VECTOR_KEY_SEAL);
    expect(aliasSeal).toBe(VECTOR_ALIAS_SEAL);
  });

  it("a store holding the reference seals is read; one flipped MAC bit is refused", async () => {
    const raw = new MemoryKeyStore();
    const sealed = new SealedKeyStore(raw, await hsmFor(VECTOR_ROOT));
    await raw.createKey({ ...VECTOR_KEY, seal: VECTOR_KEY_SEAL });
    await raw.createAlias({ ...VECTOR_ALIAS, seal: VECTOR_ALIAS_SEAL });
    expect((await sealed.getKey(VECTOR_KEY.keyId))?.description).toBe("vector");
    expect((await sealed.getAlias(VECTOR_ALIAS.aliasName))?.targetKeyId).toBe(VECTOR_KEY.keyId);

    const parsed = parseSeal(VECTOR_KEY_SEAL)!;
    const mac = Buffer.from(parsed.mac);
    mac[31]! ^= 0x01;
    const flipped = `s1.${parsed.rootKeyId}.7.${mac.toString("base64url")}`;
    await putBack(raw, { ...VECTOR_KEY, seal: flipped });
    const error = await refusal(sealed.getKey(VECTOR_KEY.keyId));
    expect(error.message).toContain("does not match its record seal");
  });
});

// ---- edits by a store writer ----

type Mutation = readonly [name: string, key: KeyName, change: (key: StoredKey) => StoredKey];

const WIDE_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    ...JSON.parse(ADMIN_POLICY).Statement,
    {
      Sid: "Mallory",
      Effect: "Allow",
      Principal: { AWS: MALLORY },
      Action: "kms:*",
      Resource: "*",
    },
  ],
});

const MUTATIONS: readonly Mutation[] = [
  ["keyState Disabled → Enabled", "disabled", (k) => ({ ...k, keyState: "Enabled" })],
  ["deletionDate removed", "pending", (k) => omit(k, "deletionDate")],
  [
    "deletion cancelled (state, date and window)",
    "pending",
    (k) => ({ ...omit(k, "deletionDate", "pendingWindowInDays"), keyState: "Enabled" }),
  ],
  ["deletionDate moved", "pending", (k) => ({ ...k, deletionDate: k.deletionDate! + 1 })],
  ["pendingWindowInDays changed", "pending", (k) => ({ ...k, pendingWindowInDays: 30 })],
  ["policy widened", "full", (k) => ({ ...k, policy: WIDE_POLICY })],
  ["policy removed (the default policy is wider)", "full", (k) => omit(k, "policy")],
  [
    "grant added",
    "full",
    (k) => ({
      ...k,
      grants: [
        ...(k.grants ?? []),
        {
          grantId: "f".repeat(64),
          granteePrincipal: MALLORY,
          issuingPrincipal: "arn:aws:iam::000000000000:root",
          operations: ["Decrypt", "Encrypt"],
          createdAt: k.createdAt,
        },
      ],
    }),
  ],
  [
    "grant widened to every context",
    "full",
    (k) => ({ ...k, grants: k.grants!.map((g) => omit(g, "constraints")) }),
  ],
  ["grant removed", "full", (k) => omit(k, "grants")],
  ["tag added", "full", (k) => ({ ...k, tags: [...k.tags, { tagKey: "x", tagValue: "y" }] })],
  ["tag value changed", "full", (k) => ({ ...k, tags: [{ tagKey: "team", tagValue: "ops" }] })],
  ["description", "full", (k) => ({ ...k, description: "edited" })],
  ["rotation disabled", "full", (k) => ({ ...k, rotation: { ...k.rotation, enabled: false } })],
  ["rotation period", "full", (k) => ({ ...k, rotation: { ...k.rotation, periodInDays: 2560 } })],
  [
    "next rotation postponed",
    "full",
    (k) => ({ ...k, rotation: { ...k.rotation, nextRotationAt: k.rotation.nextRotationAt! * 2 } }),
  ],
  [
    "on-demand rotation count reset",
    "full",
    (k) => ({ ...k, rotation: { ...k.rotation, onDemandRotations: 0 } }),
  ],
  [
    "wrappedMaterial of two versions swapped",
    "full",
    (k) => ({
      ...k,
      versions: [
        { ...k.versions[0]!, wrappedMaterial: k.versions[1]!.wrappedMaterial },
        { ...k.versions[1]!, wrappedMaterial: k.versions[0]!.wrappedMaterial },
      ],
    }),
  ],
  [
    "keyMaterialId changed",
    "full",
    (k) => ({
      ...k,
      versions: [{ ...k.versions[0]!, keyMaterialId: "0".repeat(64) }, k.versions[1]!],
    }),
  ],
  [
    "rotationType removed",
    "full",
    (k) => ({ ...k, versions: [k.versions[0]!, omit(k.versions[1]!, "rotationType")] }),
  ],
  ["currentVersion rolled back", "full", (k) => ({ ...k, currentVersion: 1 })],
  [
    "latest version dropped",
    "full",
    (k) => ({ ...k, versions: [k.versions[0]!], currentVersion: 1 }),
  ],
  ["oldest version dropped", "full", (k) => ({ ...k, versions: [k.versions[1]!] })],
  ["createdAt", "full", (k) => ({ ...k, createdAt: k.createdAt - 1 })],
  ["multiRegion", "full", (k) => ({ ...k, multiRegion: true })],
  ["origin", "full", (k) => ({ ...k, origin: "EXTERNAL" })],
  ["keySpec", "signing", (k) => ({ ...k, keySpec: "ECC_NIST_P384" })],
  ["keyUsage", "full", (k) => ({ ...k, keyUsage: "GENERATE_VERIFY_MAC" })],
  [
    "publicKey replaced",
    "signing",
    (k) => ({
      ...k,
      versions: [
        {
          ...k.versions[0]!,
          publicKey: k.versions[0]!.publicKey!.map((b, i) => (i === 40 ? b ^ 1 : b)),
        },
      ],
    }),
  ],
  [
    "publicKey removed",
    "signing",
    (k) => ({ ...k, versions: [omit(k.versions[0]!, "publicKey")] }),
  ],
];

/** The operation the edit would unlock, run as the edit's beneficiary. */
function use(f: Fixture, name: KeyName): Promise<unknown> {
  const { keyId } = f.keys[name];
  if (name === "signing") {
    return f.kms.sign({ keyId, message: plaintext, signingAlgorithm: "ECDSA_SHA_256" });
  }
  return f.kms.encrypt({ keyId, plaintext }, { principal: MALLORY });
}

describe("a key record edited in the store is refused on its next use", () => {
  it.each(MUTATIONS)("%s", async (_name, target, change) => {
    const f = await fixture();
    const { keyId, arn } = f.keys[target];
    const edited = await edit(f.store, keyId, change);

    for (const action of [
      f.kms.describeKey({ keyId }),
      use(f, target),
      f.kms.enableKey({ keyId }),
      f.kms.cancelKeyDeletion({ keyId }),
      f.kms.tagResource({ keyId, tags: [{ tagKey: "after", tagValue: "edit" }] }),
      f.kms.listKeys(),
    ]) {
      const error = await refusal(action);
      expect(error.message).toContain(arn);
      expect(error.message).toContain("in key store memory");
    }
    if (target === "full") await refusal(f.kms.encrypt({ keyId: "alias/full", plaintext }));
    // Nothing was written on the edited record's behalf: not even a fresh seal over the edit.
    expect(await f.store.getKey(keyId)).toBe(edited);
    await expectBystanderWorks(f);
  });

  it("a widened policy and an added grant give the grantee nothing, not even an error of its own", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const blob = (await f.kms.encrypt({ keyId, plaintext })).ciphertextBlob;
    // Before: Mallory is denied.
    await expect(f.kms.decrypt({ ciphertextBlob: blob }, { principal: MALLORY })).rejects.toThrow(
      /not authorized/,
    );
    await edit(f.store, keyId, MUTATIONS.find(([n]) => n === "policy widened")![2]);
    await refusal(f.kms.decrypt({ ciphertextBlob: blob }, { principal: MALLORY }));
    await refusal(f.kms.generateDataKey({ keyId, keySpec: "AES_256" }, { principal: MALLORY }));
  });

  it("any single-field edit is refused (property)", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const original = (await f.store.getKey(keyId))!;
    const text = fc.string({ maxLength: 12, unit: "binary" });
    const time = fc.integer({ min: 0, max: 2 ** 48 });
    const edits: fc.Arbitrary<(k: StoredKey) => StoredKey>[] = [
      text.map((description) => (k) => ({ ...k, description })),
      time.map((createdAt) => (k) => ({ ...k, createdAt })),
      fc
        .constantFrom("Enabled", "Disabled", "PendingDeletion", "PendingImport", "Unavailable")
        .map((keyState) => (k) => ({ ...k, keyState }) as StoredKey),
      fc.boolean().map((multiRegion) => (k) => ({ ...k, multiRegion })),
      fc
        .option(time, { nil: undefined })
        .map((d) => (k) => (d === undefined ? omit(k, "deletionDate") : { ...k, deletionDate: d })),
      fc.integer({ min: 7, max: 30 }).map((w) => (k) => ({ ...k, pendingWindowInDays: w })),
      fc
        .option(text, { nil: undefined })
        .map((p) => (k) => (p === undefined ? omit(k, "policy") : { ...k, policy: p })),
      fc
        .array(fc.record({ tagKey: text, tagValue: text }), { maxLength: 3 })
        .map((tags) => (k) => ({
          ...k,
          tags,
        })),
      fc
        .record({
          enabled: fc.boolean(),
          periodInDays: fc.integer({ min: 90, max: 2560 }),
          onDemandRotations: fc.integer({ min: 0, max: 25 }),
        })
        .map((rotation) => (k) => ({ ...k, rotation: { ...k.rotation, ...rotation } })),
      fc.integer({ min: 0, max: 5 }).map((currentVersion) => (k) => ({ ...k, currentVersion })),
      fc
        .tuple(fc.nat(1), fc.nat(68), fc.integer({ min: 1, max: 255 }))
        .map(([v, byte, xor]) => (k) => ({
          ...k,
          versions: k.versions.map((version, i) =>
            i === v
              ? {
                  ...version,
                  wrappedMaterial: version.wrappedMaterial.map((b, j) =>
                    j === byte ? b ^ xor : b,
                  ),
                }
              : version,
          ),
        })),
      fc.tuple(fc.nat(1), time).map(([v, createdAt]) => (k) => ({
        ...k,
        versions: k.versions.map((version, i) => (i === v ? { ...version, createdAt } : version)),
      })),
      fc
        .subarray(["Encrypt", "Decrypt", "GenerateDataKey", "ReEncryptFrom", "CreateGrant"], {
          minLength: 1,
        })
        .map((operations) => (k) => ({
          ...k,
          grants: k.grants!.map((g) => ({ ...g, operations })),
        })),
      fc.string({ minLength: 1, maxLength: 8 }).map((principal) => (k) => ({
        ...k,
        grants: k.grants!.map((g) => ({ ...g, granteePrincipal: principal })),
      })),
    ];
    await fc.assert(
      fc.asyncProperty(fc.oneof(...edits), async (change) => {
        const changed = change(original);
        const same = (a: StoredKey) => ({ ...a, revision: 0, seal: "" });
        fc.pre(!isDeepStrictEqual(same(changed), same(original)));
        await edit(f.store, keyId, change);
        try {
          const error = await refusal(f.kms.describeKey({ keyId }));
          expect(error.message).toContain(f.keys.full.arn);
        } finally {
          await putBack(f.store, original);
        }
      }),
      { numRuns: 200 },
    );
    // Put back as it was sealed, the record is accepted again.
    await f.kms.encrypt({ keyId, plaintext });
  });

  it("a revision change alone is not refused (the seal does not cover revision)", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    for (let i = 0; i < 3; i++) await edit(f.store, keyId, (k) => k);
    expect((await f.store.getKey(keyId))!.revision).toBeGreaterThan(3);
    await f.kms.encrypt({ keyId, plaintext });
    // …and the KMS's own next write builds on the bumped revision.
    await f.kms.updateKeyDescription({ keyId, description: "after bumps" });
    const fresh = await createKms({ store: f.store, rootKey: Uint8Array.from(ROOT) });
    expect((await fresh.describeKey({ keyId })).keyMetadata.description).toBe("after bumps");
  });
});

describe("records the store hands out as the same object", () => {
  /**
   * A store that keeps one mutable object per key and returns it on every read, as a caching
   * store that does not freeze would. `open` builds a KMS on it.
   */
  async function mutableStore() {
    const held = new Map<string, StoredKey>();
    class MutableStore extends MemoryKeyStore {
      override async getKey(keyId: string): Promise<StoredKey | undefined> {
        const fresh = await super.getKey(keyId);
        if (fresh === undefined) return undefined;
        const kept = held.get(keyId);
        if (kept === undefined || kept.seal !== fresh.seal) {
          held.set(keyId, { ...fresh, versions: [...fresh.versions] });
        }
        return held.get(keyId);
      }
    }
    const store = new MutableStore();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const { keyId } = (await kms.createKey({})).keyMetadata;
    await kms.encrypt({ keyId, plaintext });
    return {
      kms,
      keyId,
      record: () => held.get(keyId) as { -readonly [K in keyof StoredKey]: StoredKey[K] },
    };
  }

  it("a record that is not frozen is checked again on every read: an edit in place is refused", async () => {
    const { kms, keyId, record } = await mutableStore();
    record().keyState = "Disabled";
    await refusal(kms.encrypt({ keyId, plaintext }));
    record().keyState = "Enabled";
    await kms.encrypt({ keyId, plaintext });
    record().versions = [];
    await refusal(kms.describeKey({ keyId }));
  });

  it("a frozen record verified once stays accepted; a new object with other fields is checked", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const first = await f.store.getKey(keyId);
    expect(Object.isFrozen(first)).toBe(true);
    await f.kms.encrypt({ keyId, plaintext });
    await f.kms.encrypt({ keyId, plaintext });
    expect(await f.store.getKey(keyId)).toBe(first);
    await edit(f.store, keyId, (k) => ({ ...k, description: "edited in the store" }));
    await refusal(f.kms.encrypt({ keyId, plaintext }));
  });
});

describe("aliases", () => {
  it("an alias repointed in the store is refused, by name and in listings", async () => {
    const f = await fixture();
    const alias = (await f.store.getAlias("alias/full"))!;
    // The writer keeps the old seal: the record now says bystander but is sealed for full.
    await f.store.updateAlias("alias/full", f.keys.bystander.keyId, alias.updatedAt, alias.seal);
    for (const action of [
      f.kms.encrypt({ keyId: "alias/full", plaintext }),
      f.kms.describeKey({ keyId: "alias/full" }),
      f.kms.listAliases(),
    ]) {
      const error = await refusal(action);
      expect(error.message).toContain("alias alias/full in key store memory");
      expect(error.message).toContain("does not match its record seal");
    }
    await expectBystanderWorks(f);
  });

  it("an alias created by the store writer, without a seal, is refused", async () => {
    const f = await fixture();
    await f.store.createAlias({
      aliasName: "alias/planted",
      targetKeyId: f.keys.full.keyId,
      createdAt: f.clock.now(),
      updatedAt: f.clock.now(),
    });
    const error = await refusal(f.kms.encrypt({ keyId: "alias/planted", plaintext }));
    expect(error.message).toContain("alias alias/planted in key store memory has no record seal");
    await expectBystanderWorks(f);
  });

  it("an alias's own older sealed record (its previous target) is refused in the same process", async () => {
    const f = await fixture();
    const before = (await f.store.getAlias("alias/full"))!;
    await f.kms.encrypt({ keyId: "alias/full", plaintext });
    await f.kms.updateAlias({ aliasName: "alias/full", targetKeyId: f.keys.bystander.keyId });
    await f.store.updateAlias(before.aliasName, before.targetKeyId, before.updatedAt, before.seal);
    const error = await refusal(f.kms.encrypt({ keyId: "alias/full", plaintext }));
    expect(error.message).toContain("alias alias/full");
    expect(error.message).toContain("rolled back");
    // A fresh process has no floor and accepts it (FORMAT §4.1, "What seals do not protect").
    const fresh = await createKms({ store: f.store, rootKey: Uint8Array.from(ROOT) });
    const { keyId } = await fresh.encrypt({ keyId: "alias/full", plaintext });
    expect(keyId).toBe(f.keys.full.arn);
  });

  it("an alias deleted and created again (by another instance) is not mistaken for a rollback", async () => {
    const f = await fixture();
    await f.kms.updateAlias({ aliasName: "alias/full", targetKeyId: f.keys.bystander.keyId });
    await f.kms.encrypt({ keyId: "alias/full", plaintext });
    const other = await createKms({
      store: f.store,
      rootKey: Uint8Array.from(ROOT),
      clock: f.clock,
    });
    await other.deleteAlias({ aliasName: "alias/full" });
    f.clock.advance(1);
    await other.createAlias({ aliasName: "alias/full", targetKeyId: f.keys.full.keyId });
    const { keyId } = await f.kms.encrypt({ keyId: "alias/full", plaintext });
    expect(keyId).toBe(f.keys.full.arn);
  });

  it("an alias's seal copied onto another alias is refused", async () => {
    const f = await fixture();
    const full = (await f.store.getAlias("alias/full"))!;
    await f.store.createAlias({ ...full, aliasName: "alias/copy" });
    await refusal(f.kms.encrypt({ keyId: "alias/copy", plaintext }));
  });
});

// ---- the seal itself ----

describe("malformed seals are refused, even when they carry the right MAC", () => {
  const variants: readonly [string, (seal: string) => string][] = [
    ["wrong prefix", (s) => `s2${s.slice(2)}`],
    ["uppercase prefix", (s) => `S${s.slice(1)}`],
    [
      "uppercase root key id",
      (s) => s.replace(/^s1\.([0-9a-f]+)/, (_m, id: string) => `s1.${id.toUpperCase()}`),
    ],
    ["leading zero in the counter", (s) => s.replace(/^(s1\.[0-9a-f]+\.)/, "$10")],
    ["counter zero", (s) => s.replace(/^(s1\.[0-9a-f]+\.)\d+/, "$10")],
    [
      "non-canonical base64url (unused low bits set)",
      (s) => {
        const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const last = alphabet.indexOf(s[s.length - 1]!);
        return s.slice(0, -1) + alphabet[last ^ 0b01]!;
      },
    ],
    ["padded base64url", (s) => `${s}=`],
    ["standard base64 character in the MAC", (s) => `${s.slice(0, -1)}+`],
    [
      "31-byte MAC",
      (s) => {
        const parsed = parseSeal(s)!;
        return `s1.${parsed.rootKeyId}.${parsed.counter}.${Buffer.from(parsed.mac.subarray(0, 31)).toString("base64url")}`;
      },
    ],
    [
      "33-byte MAC",
      (s) => {
        const parsed = parseSeal(s)!;
        const longer = Buffer.concat([parsed.mac, Buffer.of(0)]);
        return `s1.${parsed.rootKeyId}.${parsed.counter}.${longer.toString("base64url")}`;
      },
    ],
    ["trailing newline", (s) => `${s}\n`],
    ["leading space", (s) => ` ${s}`],
    ["empty", () => ""],
    ["MAC missing", (s) => s.slice(0, s.lastIndexOf(".") + 1)],
  ];

  it.each(variants)("%s", async (_name, respell) => {
    const f = await fixture();
    const { keyId, arn } = f.keys.full;
    const before = (await f.store.getKey(keyId))!;
    const respelled = respell(before.seal!);
    expect(respelled).not.toBe(before.seal);
    await edit(f.store, keyId, (k) => ({ ...k, seal: respelled }));
    const error = await refusal(f.kms.encrypt({ keyId, plaintext }));
    expect(error.message).toContain(arn);
    expect(error.message).toContain("has a malformed record seal");
  });

  it("the variants that keep the MAC bytes are refused as malformed, not by the MAC", async () => {
    const seal = (await (await fixture()).store.listKeys({ limit: 1 }))[0]!.seal!;
    for (const [name, respell] of variants) {
      expect(parseSeal(respell(seal)), name).toBeUndefined();
    }
    expect(parseSeal(seal)).toBeDefined();
  });

  it("a key record without a seal is refused, naming the upgrade option", async () => {
    const f = await fixture();
    const { keyId, arn } = f.keys.full;
    await edit(f.store, keyId, (k) => omit(k, "seal"));
    const error = await refusal(f.kms.encrypt({ keyId, plaintext }));
    expect(error.message).toContain(`key ${arn} in key store memory has no record seal`);
    expect(error.message).toContain('unsealedRecords: "seal"');
  });

  it("a seal moved from one key to another is refused", async () => {
    const f = await fixture();
    const donor = (await f.store.getKey(f.keys.bystander.keyId))!;
    await edit(f.store, f.keys.full.keyId, (k) => ({ ...k, seal: donor.seal! }));
    const error = await refusal(f.kms.describeKey({ keyId: f.keys.full.keyId }));
    expect(error.message).toContain(f.keys.full.arn);
    expect(error.message).toContain("does not match its record seal");
  });

  it("a key record with an alias's seal, or an alias with a key's, is refused", async () => {
    const f = await fixture();
    // Same store, same root key: only the kind in the MAC input tells these apart.
    const aliasSeal = (await f.store.getAlias("alias/full"))!.seal!;
    await edit(f.store, f.keys.full.keyId, (k) => ({ ...k, seal: aliasSeal }));
    await refusal(f.kms.describeKey({ keyId: f.keys.full.keyId }));
    const keySeal = (await f.store.getKey(f.keys.bystander.keyId))!.seal!;
    const alias = (await f.store.getAlias("alias/bystander"))!;
    await f.store.updateAlias(alias.aliasName, alias.targetKeyId, alias.updatedAt, keySeal);
    await refusal(f.kms.encrypt({ keyId: "alias/bystander", plaintext }));
  });

  it("a valid seal with its counter changed is refused (the counter is under the MAC)", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const seal = (await f.store.getKey(keyId))!.seal!;
    const parsed = parseSeal(seal)!;
    const bumped = `s1.${parsed.rootKeyId}.${parsed.counter + 1}.${Buffer.from(parsed.mac).toString("base64url")}`;
    await edit(f.store, keyId, (k) => ({ ...k, seal: bumped }));
    const error = await refusal(f.kms.encrypt({ keyId, plaintext }));
    expect(error.message).toContain("does not match its record seal");
  });

  it("a seal under a root key the KMS does not hold is refused, naming that root key", async () => {
    const f = await fixture();
    const { keyId, arn } = f.keys.full;
    const other = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
    const foreign = new SealedKeyStore(new MemoryKeyStore(), await hsmFor(other));
    await edit(f.store, keyId, (k) => foreign.sealKey({ ...k, keyState: "Disabled" }, 99));
    const error = await refusal(f.kms.encrypt({ keyId, plaintext }));
    expect(error.message).toContain(arn);
    expect(error.message).toContain(
      `is sealed under root key ${rootKeyIdOf(other)}, which this KMS does not hold`,
    );
  });
});

describe("rollback to an older sealed record of the same key", () => {
  it("is refused in the same process, naming the rollback", async () => {
    const f = await fixture();
    const { keyId, arn } = f.keys.full;
    const enabled = (await f.store.getKey(keyId))!;
    await f.kms.disableKey({ keyId });
    await putBack(f.store, enabled);
    const error = await refusal(f.kms.encrypt({ keyId, plaintext }));
    expect(error.message).toContain(arn);
    expect(error.message).toContain("rolled back");
    // The rollback was not taken as the new state: a retry is refused again.
    await refusal(f.kms.describeKey({ keyId }));
    await expectBystanderWorks(f);
  });

  it("is refused for a rollback to the record read before, even without a write in between", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const old = (await f.store.getKey(keyId))!;
    // A write by another instance on the same store, then read by this one.
    const other = await createKms({ store: f.store, rootKey: Uint8Array.from(ROOT) });
    await other.updateKeyDescription({ keyId, description: "newer" });
    await f.kms.describeKey({ keyId });
    await putBack(f.store, old);
    expect((await refusal(f.kms.describeKey({ keyId }))).message).toContain("rolled back");
  });

  it("LIMIT: a fresh process (new createKms on the same store) accepts the older record", async () => {
    const f = await fixture();
    const { keyId } = f.keys.full;
    const enabled = (await f.store.getKey(keyId))!;
    await f.kms.disableKey({ keyId });
    await putBack(f.store, enabled);
    // No counter survives a restart: the older, validly sealed record is indistinguishable
    // from the current one (FORMAT §4.1, "What seals do not protect").
    const restarted = await createKms({ store: f.store, rootKey: Uint8Array.from(ROOT) });
    await expect(restarted.encrypt({ keyId, plaintext })).resolves.toBeDefined();
  });
});

describe("refusals carry no key material", () => {
  it("messages, inspect() and JSON of every refusal kind hold no root key, MAC key or material", async () => {
    const f = await fixture();
    const errors: RootKeyError[] = [];
    const record = (await f.store.getKey(f.keys.full.keyId))!;
    const collect = async (action: Promise<unknown>) => errors.push(await refusal(action));

    await edit(f.store, f.keys.full.keyId, (k) => ({ ...k, description: "edited" }));
    await collect(f.kms.encrypt({ keyId: f.keys.full.keyId, plaintext }));
    await edit(f.store, f.keys.full.keyId, (k) => ({ ...k, seal: `${k.seal!}x` }));
    await collect(f.kms.encrypt({ keyId: f.keys.full.keyId, plaintext }));
    await edit(f.store, f.keys.full.keyId, (k) => omit(k, "seal"));
    await collect(f.kms.encrypt({ keyId: f.keys.full.keyId, plaintext }));
    const foreign = new SealedKeyStore(
      new MemoryKeyStore(),
      await hsmFor(new Uint8Array(32).fill(7)),
    );
    await edit(f.store, f.keys.full.keyId, (k) => foreign.sealKey(k, 1));
    await collect(f.kms.encrypt({ keyId: f.keys.full.keyId, plaintext }));
    const signing = (await f.store.getKey(f.keys.signing.keyId))!;
    await f.kms.tagResource({
      keyId: f.keys.signing.keyId,
      tags: [{ tagKey: "a", tagValue: "b" }],
    });
    await putBack(f.store, signing);
    await collect(f.kms.getPublicKey({ keyId: f.keys.signing.keyId }));
    const alias = (await f.store.getAlias("alias/bystander"))!;
    await f.store.updateAlias(alias.aliasName, f.keys.full.keyId, alias.updatedAt, alias.seal);
    await collect(f.kms.encrypt({ keyId: "alias/bystander", plaintext }));
    const unsealed = new MemoryKeyStore();
    await unsealed.createKey(omit(record, "seal"));
    await collect(createKms({ store: unsealed, rootKey: Uint8Array.from(ROOT) }));
    expect(errors).toHaveLength(7);

    const secrets = [
      ROOT,
      sealKeyOf(ROOT),
      ...record.versions.map((v) => v.wrappedMaterial),
      ...signing.versions.map((v) => v.wrappedMaterial),
    ];
    const forms = secrets.flatMap((s) => {
      const b = Buffer.from(s);
      return [
        b.toString("base64"),
        b.toString("base64url"),
        b.toString("hex"),
        b.subarray(0, 12).toString("base64"),
        b.subarray(0, 12).toString("base64url"),
        b.subarray(0, 12).toString("hex"),
        b.subarray(-12).toString("base64"),
        b.subarray(-12).toString("hex"),
      ];
    });
    for (const error of errors) {
      for (const text of [error.message, inspect(error), JSON.stringify(error)]) {
        for (const form of forms) expect(text).not.toContain(form);
      }
    }
  });
});
