/**
 * The behaviour every KeyStore must show, written once and run by each store package against
 * itself (MemoryKeyStore, SQLite, PostgreSQL...). MemoryKeyStore is the reference: a store that
 * passes here can replace it under the facade without the facade noticing.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AlreadyExistsError, KeyStoreConflictError, NotFoundError } from "../errors.ts";
import type { KeyStore, StoredAlias, StoredKey, StoredKeyVersion } from "../keystore/key-store.ts";

/** What `open` hands the suite: a fresh, empty store and how to dispose of its backing. */
export interface OpenedKeyStore {
  readonly store: KeyStore;
  /** Runs after `store.close()`, e.g. to delete a temporary database file. */
  readonly cleanup?: () => Promise<void>;
}

type Mutable<T> = { -readonly [P in keyof T]: T[P] };

/** What a caller that ignores `readonly` can write to (a record's bytes it can write anyway). */
type DeepMutable<T> = T extends Uint8Array
  ? T
  : T extends readonly (infer U)[]
    ? DeepMutable<U>[]
    : T extends object
      ? { -readonly [P in keyof T]: DeepMutable<T[P]> }
      : T;

const T0 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z: ms precision must survive.
const DAY = 86_400_000;

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

/** Every byte value, framed by NULs, so text encodings or C-string handling corrupt it. */
function allByteValues(): Uint8Array {
  return Uint8Array.from([0x00, 0x00, ...Array.from({ length: 256 }, (_, i) => i), 0xff, 0x00]);
}

function patterned(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 131 + seed * 17 + 7) & 0xff);
}

function version(n: number, overrides: Partial<Mutable<StoredKeyVersion>> = {}): StoredKeyVersion {
  return {
    version: n,
    createdAt: T0 + n * DAY,
    keyMaterialId: `${n.toString(16).padStart(2, "0")}${"ab".repeat(31)}`,
    wrappedMaterial: patterned(60, n),
    ...overrides,
  };
}

function makeKey(keyId: string, overrides: Partial<Mutable<StoredKey>> = {}): StoredKey {
  return {
    keyId,
    revision: 1,
    createdAt: T0,
    description: "",
    keySpec: "SYMMETRIC_DEFAULT",
    keyUsage: "ENCRYPT_DECRYPT",
    origin: "AWS_KMS",
    multiRegion: false,
    keyState: "Enabled",
    rotation: { enabled: false, periodInDays: 365, onDemandRotations: 0 },
    tags: [],
    versions: [version(1)],
    currentVersion: 1,
    ...overrides,
  };
}

/** The next revision of `key` with `changes` applied, as the facade would write it. */
function next(key: StoredKey, changes: Partial<Mutable<StoredKey>> = {}): StoredKey {
  return { ...key, ...changes, revision: key.revision + 1 };
}

function omit<T extends object, K extends keyof T>(value: T, ...names: K[]): Omit<T, K> {
  const copy: Partial<T> = { ...value };
  for (const name of names) delete copy[name];
  return copy as Omit<T, K>;
}

function makeAlias(aliasName: string, targetKeyId: string, at = T0): StoredAlias {
  return { aliasName, targetKeyId, createdAt: at, updatedAt: at };
}

/**
 * A structural copy where bytes become `{ bytes: [...] }` and undefined-valued properties are
 * kept, so toStrictEqual tells a Uint8Array from base64 text and an absent field from one
 * stored as undefined/null.
 */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: Array.from(value) };
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function expectSameKey(actual: StoredKey | undefined, expected: StoredKey): void {
  expect(actual).toBeDefined();
  expect(plain(actual)).toStrictEqual(plain(expected));
}

function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeInstanceOf(Uint8Array);
  expect(actual?.byteLength).toBe(expected.byteLength);
  expect(Array.from(actual ?? [])).toStrictEqual(Array.from(expected));
}

function ids(keys: readonly StoredKey[]): string[] {
  return keys.map((k) => k.keyId);
}

function names(aliases: readonly StoredAlias[]): string[] {
  return aliases.map((a) => a.aliasName);
}

/** JavaScript's `<` on strings: UTF-16 code units, the order every listing uses. */
function byCodeUnit(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The page a listing of `sorted` must return for `after` and `limit`. */
function expectedPage(
  sorted: readonly string[],
  after: string | undefined,
  limit: number,
): string[] {
  return sorted.filter((id) => after === undefined || id > after).slice(0, limit);
}

/** Waits for a timer, so a store that writes in several round trips is caught between them. */
function nextTick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Runs a change a frozen record refuses (TypeError in strict mode); other errors escape. */
function attempt(change: () => void): void {
  try {
    change();
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
}

/** Tries to change every part of a key record in place, except its bytes. */
function scribbleOnKey(record: StoredKey): void {
  const key = record as DeepMutable<StoredKey>;
  attempt(() => {
    key.description = "scribbled";
  });
  attempt(() => {
    key.revision += 100;
  });
  attempt(() => {
    key.rotation.onDemandRotations += 100;
  });
  attempt(() => {
    key.tags.push({ tagKey: "scribbled", tagValue: "scribbled" });
  });
  attempt(() => {
    if (key.tags[0] !== undefined) key.tags[0].tagValue = "scribbled";
  });
  attempt(() => {
    if (key.versions[0] !== undefined) key.versions[0].keyMaterialId = "scribbled";
  });
  attempt(() => {
    key.versions.reverse();
  });
  attempt(() => {
    key.grants?.[0]?.operations.push("ScheduleKeyDeletion");
  });
  attempt(() => {
    const subset = key.grants?.[0]?.constraints?.encryptionContextSubset;
    if (subset !== undefined) subset.tenant = "scribbled";
  });
}

/** Overwrites the bytes of every version of a record. */
function scribbleOnBytes(record: StoredKey): void {
  for (const v of record.versions) {
    v.wrappedMaterial.fill(0x5a);
    v.publicKey?.fill(0x5a);
  }
}

function scribbleOnAlias(record: StoredAlias): void {
  const alias = record as Mutable<StoredAlias>;
  attempt(() => {
    alias.targetKeyId = "scribbled";
  });
  attempt(() => {
    alias.updatedAt += 100;
  });
  attempt(() => {
    alias.seal = "scribbled";
  });
}

/** Settles every promise, then counts outcomes, so no rejection is left unobserved. */
async function outcomes(promises: readonly Promise<unknown>[]): Promise<{
  fulfilled: number[];
  rejected: { index: number; reason: unknown }[];
}> {
  const settled = await Promise.allSettled(promises);
  const fulfilled: number[] = [];
  const rejected: { index: number; reason: unknown }[] = [];
  settled.forEach((result, index) => {
    if (result.status === "fulfilled") fulfilled.push(index);
    else rejected.push({ index, reason: result.reason });
  });
  return { fulfilled, rejected };
}

/**
 * Registers a vitest suite that checks a KeyStore implementation against the contract in
 * key-store.ts. Each test gets a fresh, empty store from `open` and closes it afterwards.
 *
 * @example
 * describeKeyStoreConformance("SqliteKeyStore", async () => {
 *   const dir = await mkdtemp(join(tmpdir(), "kms-"));
 *   const store = SqliteKeyStore.open({ path: join(dir, "keys.db") });
 *   return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
 * });
 *
 * @param name - Shown in the suite title.
 * @param open - Creates a new, empty store; called once per test.
 * @throws Nothing itself; failures are reported as vitest test failures.
 */
export function describeKeyStoreConformance(
  name: string,
  open: () => Promise<OpenedKeyStore>,
): void {
  describe(`KeyStore conformance: ${name}`, () => {
    let store: KeyStore;
    let cleanup: (() => Promise<void>) | undefined;

    beforeEach(async () => {
      const opened = await open();
      store = opened.store;
      cleanup = opened.cleanup;
    });

    afterEach(async () => {
      try {
        await store.close();
      } finally {
        await cleanup?.();
      }
    });

    it("has a description", () => {
      expect(typeof store.description).toBe("string");
      expect(store.description.length).toBeGreaterThan(0);
    });

    describe("keys: create / get", () => {
      it("returns undefined for a key that does not exist", async () => {
        expect(await store.getKey("1234abcd-0000-0000-0000-000000000000")).toBeUndefined();
      });

      it("returns exactly the record that was created", async () => {
        const key = makeKey("k-1", {
          description: "orders table — ключ 🔑",
          tags: [
            { tagKey: "team", tagValue: "payments" },
            { tagKey: "empty", tagValue: "" },
          ],
        });
        await store.createKey(key);
        expectSameKey(await store.getKey("k-1"), key);
      });

      it("keeps every scalar field exactly, including large epoch milliseconds", async () => {
        const key = makeKey("k-scalars", {
          createdAt: 4_102_444_800_999,
          keySpec: "ECC_NIST_P256",
          keyUsage: "SIGN_VERIFY",
          origin: "EXTERNAL",
          multiRegion: true,
          keyState: "Disabled",
          rotation: { enabled: true, periodInDays: 2560, onDemandRotations: 10 },
          currentVersion: 1,
        });
        await store.createKey(key);
        expectSameKey(await store.getKey("k-scalars"), key);
      });

      it("rejects a duplicate key id with AlreadyExistsError and keeps the original", async () => {
        const original = makeKey("k-dup", { description: "first" });
        await store.createKey(original);
        await expect(
          store.createKey(makeKey("k-dup", { description: "second" })),
        ).rejects.toBeInstanceOf(AlreadyExistsError);
        expectSameKey(await store.getKey("k-dup"), original);
      });

      it("treats key ids as case-sensitive", async () => {
        await store.createKey(makeKey("k-case", { description: "lower" }));
        await store.createKey(makeKey("K-CASE", { description: "upper" }));
        expect((await store.getKey("k-case"))?.description).toBe("lower");
        expect((await store.getKey("K-CASE"))?.description).toBe("upper");
      });
    });

    describe("keys: list", () => {
      it("returns an empty page for an empty store", async () => {
        expect(await store.listKeys({ limit: 10 })).toStrictEqual([]);
      });

      it("orders keys by keyId whatever the insertion order", async () => {
        const order = ["k-05", "k-01", "k-07", "k-03", "k-02", "k-06", "k-04"];
        for (const id of order) await store.createKey(makeKey(id));
        expect(ids(await store.listKeys({ limit: 100 }))).toStrictEqual([...order].sort());
      });

      it("orders by code unit (binary), not by locale", async () => {
        const order = ["b", "B", "a-1", "a_1", "A", "a1", "a"];
        for (const id of order) await store.createKey(makeKey(id));
        const expected = [...order].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
        expect(ids(await store.listKeys({ limit: 100 }))).toStrictEqual(expected);
      });

      it("pages with after (exclusive) and limit until the end", async () => {
        const all = Array.from({ length: 7 }, (_, i) => `k-${i}`);
        for (const id of [...all].reverse()) await store.createKey(makeKey(id));

        const seen: string[] = [];
        let after: string | undefined;
        let pages = 0;
        for (;;) {
          const page = await store.listKeys(
            after === undefined ? { limit: 3 } : { after, limit: 3 },
          );
          if (page.length === 0) break;
          // A store whose pages repeat their bound never returns an empty page.
          if (pages > all.length) throw new Error(`paging did not end: ${seen.join(" ")}`);
          expect(page.length).toBeLessThanOrEqual(3);
          seen.push(...ids(page));
          after = page[page.length - 1]!.keyId;
          pages++;
        }
        expect(seen).toStrictEqual(all);
        expect(pages).toBe(3);
      });

      it("starts after a bound that is not itself a key id", async () => {
        for (const id of ["k-a", "k-c", "k-e"]) await store.createKey(makeKey(id));
        expect(ids(await store.listKeys({ after: "k-b", limit: 10 }))).toStrictEqual([
          "k-c",
          "k-e",
        ]);
        expect(ids(await store.listKeys({ after: "k-e", limit: 10 }))).toStrictEqual([]);
        expect(ids(await store.listKeys({ after: "", limit: 10 }))).toStrictEqual([
          "k-a",
          "k-c",
          "k-e",
        ]);
        expect(ids(await store.listKeys({ limit: 1 }))).toStrictEqual(["k-a"]);
        expect(await store.listKeys({ limit: 0 })).toStrictEqual([]);
        await store.createAlias(makeAlias("alias/zero", "k-a"));
        expect(await store.listAliases({ limit: 0 })).toStrictEqual([]);
      });

      it("fills every page unless the listing ended, from any bound", async () => {
        // Callers stop at the first page shorter than its limit (ListKeys, snapshots, the
        // maintenance sweep), so a short page hides every key after it. Mixed case and
        // punctuation catch a bound compared in another order than the listing's.
        const all = ["k-1", "K-2", "k_3", "k-3", "k.4", "k4", "kA", "ka"].sort(byCodeUnit);
        for (const id of [...all].reverse()) await store.createKey(makeKey(id));
        for (const after of [undefined, "", ...all, "k-2", "kz"]) {
          for (let limit = 1; limit <= all.length + 1; limit++) {
            const page = await store.listKeys(after === undefined ? { limit } : { after, limit });
            expect(ids(page), `listKeys after ${String(after)}, limit ${limit}`).toStrictEqual(
              expectedPage(all, after, limit),
            );
          }
        }
      });

      it("lists full records, not summaries", async () => {
        const key = makeKey("k-full", {
          description: "full",
          policy: '{"Version":"2012-10-17"}',
          versions: [version(1), version(2, { rotationType: "ON_DEMAND" })],
          currentVersion: 2,
        });
        await store.createKey(key);
        const [listed] = await store.listKeys({ limit: 1 });
        expectSameKey(listed, key);
      });

      it("reflects updates and deletions", async () => {
        const a = makeKey("k-a");
        await store.createKey(a);
        await store.createKey(makeKey("k-b"));
        const a2 = next(a, { description: "changed" });
        await store.updateKey(a2);
        await store.deleteKey("k-b", 1);
        const listed = await store.listKeys({ limit: 10 });
        expect(ids(listed)).toStrictEqual(["k-a"]);
        expectSameKey(listed[0], a2);
      });
    });

    describe("keys: updateKey compare-and-set", () => {
      it("replaces the record when revision is the stored revision + 1", async () => {
        const key = makeKey("k-u");
        await store.createKey(key);
        const v2 = next(key, { description: "two", keyState: "Disabled" });
        await store.updateKey(v2);
        expectSameKey(await store.getKey("k-u"), v2);
        const v3 = next(v2, {
          keyState: "Enabled",
          versions: [...v2.versions, version(2, { rotationType: "ON_DEMAND" })],
          currentVersion: 2,
          rotation: { ...v2.rotation, onDemandRotations: 1 },
        });
        await store.updateKey(v3);
        expectSameKey(await store.getKey("k-u"), v3);
      });

      it("rejects a stale revision with KeyStoreConflictError and keeps the stored record", async () => {
        const key = makeKey("k-stale");
        await store.createKey(key);
        const winner = next(key, { description: "winner" });
        await store.updateKey(winner);
        // Another writer read revision 1 too and now tries to write its own revision 2.
        await expect(store.updateKey(next(key, { description: "loser" }))).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        expectSameKey(await store.getKey("k-stale"), winner);
      });

      it("rejects a revision that skips ahead or repeats the stored one", async () => {
        const key = makeKey("k-skip");
        await store.createKey(key);
        await expect(store.updateKey({ ...key, revision: 3 })).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        await expect(store.updateKey({ ...key, revision: 1 })).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        expectSameKey(await store.getKey("k-skip"), key);
      });

      it("rejects an update of a key that does not exist with NotFoundError", async () => {
        await expect(store.updateKey(makeKey("k-missing", { revision: 2 }))).rejects.toBeInstanceOf(
          NotFoundError,
        );
        expect(await store.getKey("k-missing")).toBeUndefined();
      });

      it("rejects an update of a deleted key with NotFoundError", async () => {
        const key = makeKey("k-gone");
        await store.createKey(key);
        await store.deleteKey("k-gone", 1);
        await expect(store.updateKey(next(key))).rejects.toBeInstanceOf(NotFoundError);
      });

      it("leaves other keys alone", async () => {
        const a = makeKey("k-a", { description: "a" });
        const b = makeKey("k-b", { description: "b" });
        await store.createKey(a);
        await store.createKey(b);
        await store.updateKey(next(a, { description: "a2" }));
        expectSameKey(await store.getKey("k-b"), b);
      });
    });

    describe("keys: deleteKey", () => {
      it("removes the key when the revision matches", async () => {
        const key = makeKey("k-del");
        await store.createKey(key);
        const v2 = next(key, { keyState: "PendingDeletion" });
        await store.updateKey(v2);
        await store.deleteKey("k-del", 2);
        expect(await store.getKey("k-del")).toBeUndefined();
        expect(await store.listKeys({ limit: 10 })).toStrictEqual([]);
      });

      it("rejects a stale revision with KeyStoreConflictError and keeps the key", async () => {
        const key = makeKey("k-del");
        await store.createKey(key);
        const v2 = next(key, { keyState: "PendingDeletion" });
        await store.updateKey(v2);
        await expect(store.deleteKey("k-del", 1)).rejects.toBeInstanceOf(KeyStoreConflictError);
        await expect(store.deleteKey("k-del", 3)).rejects.toBeInstanceOf(KeyStoreConflictError);
        expectSameKey(await store.getKey("k-del"), v2);
      });

      it("rejects deleting a missing key with NotFoundError", async () => {
        await expect(store.deleteKey("k-missing", 1)).rejects.toBeInstanceOf(NotFoundError);
      });

      it("deletes every alias that targets the key and no other alias", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias(makeAlias("alias/a-1", "k-a"));
        await store.createAlias(makeAlias("alias/a-2", "k-a"));
        await store.createAlias(makeAlias("alias/b-1", "k-b"));
        await store.deleteKey("k-a", 1);
        expect(await store.getAlias("alias/a-1")).toBeUndefined();
        expect(await store.getAlias("alias/a-2")).toBeUndefined();
        expect(names(await store.listAliases({ limit: 10 }))).toStrictEqual(["alias/b-1"]);
        expect(await store.listAliases({ limit: 10, targetKeyId: "k-a" })).toStrictEqual([]);
      });

      it("removes the key and its aliases in one step: no reader sees an alias outlive its key", async () => {
        // A store that deletes the key, then its aliases in another request, leaves a window
        // (or, if it fails between, for good) in which an alias names a key that is gone.
        await store.createKey(makeKey("k-a"));
        const aliasNames = ["alias/a-1", "alias/a-2", "alias/a-3"];
        for (const n of aliasNames) await store.createAlias(makeAlias(n, "k-a"));
        let settled = false;
        const deleting = Promise.allSettled([store.deleteKey("k-a", 1)]).then(([result]) => {
          settled = true;
          return result;
        });
        const torn: string[] = [];
        for (let last = false; !last; ) {
          last = settled;
          // The key first: once it reads as gone, no alias may still point to it.
          const key = await store.getKey("k-a");
          const listed = names(await store.listAliases({ limit: 10, targetKeyId: "k-a" }));
          const got = await Promise.all(aliasNames.map((n) => store.getAlias(n)));
          const left = [...listed, ...got.flatMap((a) => (a === undefined ? [] : [a.aliasName]))];
          if (key === undefined && left.length > 0) torn.push(left.join(" "));
          await nextTick();
        }
        expect((await deleting)?.status).toBe("fulfilled");
        expect(torn).toStrictEqual([]);
      });

      it("keeps the aliases when the delete loses the race", async () => {
        const key = makeKey("k-a");
        await store.createKey(key);
        await store.createAlias(makeAlias("alias/keep", "k-a"));
        await store.updateKey(next(key));
        await expect(store.deleteKey("k-a", 1)).rejects.toBeInstanceOf(KeyStoreConflictError);
        expect(await store.getAlias("alias/keep")).toBeDefined();
      });

      it("frees the key id for a later createKey", async () => {
        await store.createKey(makeKey("k-reuse", { description: "old" }));
        await store.deleteKey("k-reuse", 1);
        const fresh = makeKey("k-reuse", { description: "new" });
        await store.createKey(fresh);
        expectSameKey(await store.getKey("k-reuse"), fresh);
      });
    });

    describe("records belong to the store: changing one in place changes nothing stored", () => {
      const rich = (): StoredKey =>
        makeKey("k-own", {
          description: "own",
          tags: [{ tagKey: "team", tagValue: "payments" }],
          policy: '{"Version":"2012-10-17"}',
          rotation: { enabled: true, periodInDays: 90, nextRotationAt: T0, onDemandRotations: 1 },
          grants: [
            {
              grantId: "g".repeat(64),
              granteePrincipal: "arn:aws:iam::111122223333:user/alice",
              issuingPrincipal: "arn:aws:iam::111122223333:root",
              operations: ["Encrypt"],
              constraints: { encryptionContextSubset: { tenant: "t1" } },
              createdAt: T0,
            },
          ],
          versions: [version(1, { publicKey: bytes(0x30, 0x01) }), version(2)],
          currentVersion: 2,
          seal: "v1.own",
        });

      it("keeps what was written when the caller then changes the record it passed", async () => {
        // A store that keeps the caller's objects or bytes rather than copies changes whenever
        // the caller reuses them: no write, no compare-and-set, and a record that no longer
        // matches its seal.
        const key = rich();
        const written = structuredClone(key);
        await store.createKey(key);
        scribbleOnKey(key);
        scribbleOnBytes(key);
        expectSameKey(await store.getKey("k-own"), written);

        const update = structuredClone(next(written, { description: "two" }));
        const updated = structuredClone(update);
        await store.updateKey(update);
        scribbleOnKey(update);
        scribbleOnBytes(update);
        expectSameKey(await store.getKey("k-own"), updated);
        expectSameKey((await store.listKeys({ limit: 1 }))[0], updated);

        const alias: StoredAlias = { ...makeAlias("alias/own", "k-own"), seal: "v1.alias" };
        await store.createAlias(alias);
        scribbleOnAlias(alias);
        const stored = { ...makeAlias("alias/own", "k-own"), seal: "v1.alias" };
        expect(await store.getAlias("alias/own")).toStrictEqual(stored);
        expect(await store.listAliases({ limit: 1 })).toStrictEqual([stored]);
      });

      it("hands out records a caller cannot change in place (frozen, or a copy per read)", async () => {
        // The bytes of a version are the exception: they cannot be frozen (see KeyStore).
        const key = rich();
        await store.createKey(key);
        const alias: StoredAlias = { ...makeAlias("alias/own", "k-own"), seal: "v1.alias" };
        await store.createAlias(alias);
        for (let round = 0; round < 2; round++) {
          const got = await store.getKey("k-own");
          if (got !== undefined) scribbleOnKey(got);
          for (const listed of await store.listKeys({ limit: 10 })) scribbleOnKey(listed);
          const gotAlias = await store.getAlias("alias/own");
          if (gotAlias !== undefined) scribbleOnAlias(gotAlias);
          for (const listed of await store.listAliases({ limit: 10 })) scribbleOnAlias(listed);
          for (const listed of await store.listAliases({ limit: 10, targetKeyId: "k-own" })) {
            scribbleOnAlias(listed);
          }
        }
        expectSameKey(await store.getKey("k-own"), key);
        expectSameKey((await store.listKeys({ limit: 10 }))[0], key);
        expect(await store.getAlias("alias/own")).toStrictEqual(alias);
        expect(await store.listAliases({ limit: 10, targetKeyId: "k-own" })).toStrictEqual([alias]);
      });
    });

    describe("binary fields round-trip byte-exact", () => {
      it("keeps wrappedMaterial and publicKey with every byte value, 0x00 and 0xff included", async () => {
        const key = makeKey("k-bin", {
          keySpec: "ECC_NIST_P256",
          keyUsage: "SIGN_VERIFY",
          versions: [
            version(1, {
              wrappedMaterial: allByteValues(),
              publicKey: bytes(0x00, 0xff, 0x30, 0x59, 0x00, 0x00, 0xff, 0xfe, 0x00),
            }),
          ],
        });
        await store.createKey(key);
        const stored = await store.getKey("k-bin");
        expectBytes(stored?.versions[0]?.wrappedMaterial, allByteValues());
        expectBytes(
          stored?.versions[0]?.publicKey,
          bytes(0x00, 0xff, 0x30, 0x59, 0x00, 0x00, 0xff, 0xfe, 0x00),
        );
        expectSameKey(stored, key);
      });

      it("keeps material that is all zeros, all 0xff, a single byte, or invalid UTF-8", async () => {
        const materials = [
          new Uint8Array(32),
          new Uint8Array(32).fill(0xff),
          bytes(0x00),
          bytes(0xff),
          bytes(0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc),
        ];
        const key = makeKey("k-edge", {
          versions: materials.map((m, i) => version(i + 1, { wrappedMaterial: m })),
          currentVersion: materials.length,
        });
        await store.createKey(key);
        const stored = await store.getKey("k-edge");
        materials.forEach((m, i) => {
          expectBytes(stored?.versions[i]?.wrappedMaterial, m);
        });
      });

      it("stores only the viewed bytes of a Uint8Array that is a window on a larger buffer", async () => {
        const backing = patterned(64, 9);
        const view = new Uint8Array(backing.buffer, 5, 20);
        const publicView = new Uint8Array(backing.buffer, 40, 7);
        const key = makeKey("k-view", {
          versions: [version(1, { wrappedMaterial: view, publicKey: publicView })],
        });
        await store.createKey(key);
        const stored = await store.getKey("k-view");
        expectBytes(stored?.versions[0]?.wrappedMaterial, backing.slice(5, 25));
        expectBytes(stored?.versions[0]?.publicKey, backing.slice(40, 47));
      });

      it("keeps large material (ML-DSA-87 sized keys)", async () => {
        const key = makeKey("k-large", {
          keySpec: "ML_DSA_87",
          keyUsage: "SIGN_VERIFY",
          versions: [
            version(1, { wrappedMaterial: patterned(4_936, 3), publicKey: patterned(2_614, 4) }),
          ],
        });
        await store.createKey(key);
        expectSameKey(await store.getKey("k-large"), key);
      });

      it("tells an empty publicKey from an absent one", async () => {
        const key = makeKey("k-pub", {
          versions: [
            version(1, { publicKey: new Uint8Array(0) }),
            version(2),
            version(3, { publicKey: bytes(0x00) }),
          ],
          currentVersion: 3,
        });
        await store.createKey(key);
        const stored = await store.getKey("k-pub");
        expect(stored?.versions[0]).toHaveProperty("publicKey");
        expectBytes(stored?.versions[0]?.publicKey, new Uint8Array(0));
        expect(stored?.versions[1]).not.toHaveProperty("publicKey");
        expectBytes(stored?.versions[2]?.publicKey, bytes(0x00));
        expectSameKey(stored, key);
      });

      it("keeps many versions in ascending order", async () => {
        const versions = Array.from({ length: 40 }, (_, i) =>
          version(i + 1, i === 0 ? {} : { rotationType: i % 3 === 0 ? "ON_DEMAND" : "AUTOMATIC" }),
        );
        const key = makeKey("k-many", { versions, currentVersion: 40 });
        await store.createKey(key);
        const stored = await store.getKey("k-many");
        expect(stored?.versions.map((v) => v.version)).toStrictEqual(
          Array.from({ length: 40 }, (_, i) => i + 1),
        );
        expectSameKey(stored, key);
      });
    });

    describe("optional fields round-trip: absent stays absent, present stays present", () => {
      const full = (): StoredKey =>
        makeKey("k-opt", {
          keyState: "PendingDeletion",
          deletionDate: T0 + 30 * DAY,
          pendingWindowInDays: 30,
          policy: '{"Version":"2012-10-17","Statement":[]}',
          rotation: {
            enabled: true,
            periodInDays: 90,
            nextRotationAt: T0 + 90 * DAY,
            onDemandRotations: 1,
          },
          versions: [
            version(1, { publicKey: bytes(0x04, 0x00, 0xff) }),
            version(2, { rotationType: "AUTOMATIC" }),
            version(3, { rotationType: "ON_DEMAND" }),
          ],
          currentVersion: 3,
        });

      it("keeps every optional field when present", async () => {
        const key = full();
        await store.createKey(key);
        const stored = await store.getKey("k-opt");
        expect(stored?.deletionDate).toBe(T0 + 30 * DAY);
        expect(stored?.pendingWindowInDays).toBe(30);
        expect(stored?.policy).toBe('{"Version":"2012-10-17","Statement":[]}');
        expect(stored?.rotation.nextRotationAt).toBe(T0 + 90 * DAY);
        expect(stored?.versions.map((v) => v.rotationType)).toStrictEqual([
          undefined,
          "AUTOMATIC",
          "ON_DEMAND",
        ]);
        expectSameKey(stored, key);
      });

      it("omits every optional field when absent (no undefined or null properties)", async () => {
        const key = makeKey("k-bare");
        await store.createKey(key);
        const stored = await store.getKey("k-bare");
        expect(stored).not.toHaveProperty("deletionDate");
        expect(stored).not.toHaveProperty("pendingWindowInDays");
        expect(stored).not.toHaveProperty("policy");
        expect(stored?.rotation).not.toHaveProperty("nextRotationAt");
        expect(stored?.versions[0]).not.toHaveProperty("rotationType");
        expect(stored?.versions[0]).not.toHaveProperty("publicKey");
        expectSameKey(stored, key);
      });

      it("keeps an empty policy and an empty description as empty strings", async () => {
        const key = makeKey("k-empty", { policy: "", description: "" });
        await store.createKey(key);
        const stored = await store.getKey("k-empty");
        expect(stored?.policy).toBe("");
        expect(stored?.description).toBe("");
        expectSameKey(stored, key);
      });

      it("removes optional fields that an update leaves out", async () => {
        const key = full();
        await store.createKey(key);
        // CancelKeyDeletion + DisableKeyRotation + a policy reset, as one new revision.
        const cleared = next(
          omit(key, "deletionDate", "pendingWindowInDays", "policy") as StoredKey,
          {
            keyState: "Disabled",
            rotation: { enabled: false, periodInDays: 90, onDemandRotations: 1 },
          },
        );
        await store.updateKey(cleared);
        const stored = await store.getKey("k-opt");
        expect(stored).not.toHaveProperty("deletionDate");
        expect(stored).not.toHaveProperty("pendingWindowInDays");
        expect(stored).not.toHaveProperty("policy");
        expect(stored?.rotation).not.toHaveProperty("nextRotationAt");
        expectSameKey(stored, cleared);
      });

      it("adds optional fields that an update sets", async () => {
        const key = makeKey("k-opt");
        await store.createKey(key);
        const withAll = next(full());
        await store.updateKey(withAll);
        expectSameKey(await store.getKey("k-opt"), withAll);
      });

      it("round-trips grants, and an update that drops one removes it", async () => {
        const grant = (grantId: string) => ({
          grantId,
          name: "app",
          granteePrincipal: "arn:aws:iam::111122223333:user/alice",
          retiringPrincipal: "arn:aws:iam::111122223333:root",
          issuingPrincipal: "arn:aws:iam::000000000000:root",
          operations: ["Encrypt", "Decrypt"],
          constraints: { encryptionContextSubset: { tenant: "t1", ünï: "ç" } },
          createdAt: T0,
        });
        const key = makeKey("k-grants", { grants: [grant("a".repeat(64)), grant("b".repeat(64))] });
        await store.createKey(key);
        expectSameKey(await store.getKey("k-grants"), key);
        const fewer = next(key, { grants: [grant("b".repeat(64))] });
        await store.updateKey(fewer);
        expectSameKey(await store.getKey("k-grants"), fewer);
        expect((await store.getKey("k-grants"))?.grants?.map((g) => g.grantId)).toStrictEqual([
          "b".repeat(64),
        ]);
      });
    });

    describe("aliases", () => {
      it("returns undefined for an alias that does not exist", async () => {
        expect(await store.getAlias("alias/none")).toBeUndefined();
      });

      it("creates and reads back an alias exactly", async () => {
        await store.createKey(makeKey("k-a"));
        const alias = {
          aliasName: "alias/app/orders",
          targetKeyId: "k-a",
          createdAt: T0,
          updatedAt: T0 + 5,
        };
        await store.createAlias(alias);
        expect(await store.getAlias("alias/app/orders")).toStrictEqual(alias);
      });

      it("rejects a taken alias name with AlreadyExistsError and keeps the original", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias(makeAlias("alias/x", "k-a"));
        await expect(store.createAlias(makeAlias("alias/x", "k-b", T0 + 1))).rejects.toBeInstanceOf(
          AlreadyExistsError,
        );
        expect(await store.getAlias("alias/x")).toStrictEqual(makeAlias("alias/x", "k-a"));
      });

      it("updates the target and updatedAt, keeping createdAt", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias(makeAlias("alias/x", "k-a"));
        await store.updateAlias("alias/x", "k-b", T0 + DAY);
        expect(await store.getAlias("alias/x")).toStrictEqual({
          aliasName: "alias/x",
          targetKeyId: "k-b",
          createdAt: T0,
          updatedAt: T0 + DAY,
        });
        expect(names(await store.listAliases({ limit: 10, targetKeyId: "k-a" }))).toStrictEqual([]);
        expect(names(await store.listAliases({ limit: 10, targetKeyId: "k-b" }))).toStrictEqual([
          "alias/x",
        ]);
      });

      it("rejects updating a missing alias with NotFoundError", async () => {
        await expect(store.updateAlias("alias/none", "k-a", T0)).rejects.toBeInstanceOf(
          NotFoundError,
        );
        expect(await store.getAlias("alias/none")).toBeUndefined();
      });

      it("deletes an alias, and rejects deleting a missing one with NotFoundError", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createAlias(makeAlias("alias/x", "k-a"));
        await store.deleteAlias("alias/x");
        expect(await store.getAlias("alias/x")).toBeUndefined();
        await expect(store.deleteAlias("alias/x")).rejects.toBeInstanceOf(NotFoundError);
        // Deleting an alias never touches its key.
        expect(await store.getKey("k-a")).toBeDefined();
      });

      it("frees the name of a deleted alias", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createAlias(makeAlias("alias/x", "k-a"));
        await store.deleteAlias("alias/x");
        await store.createAlias(makeAlias("alias/x", "k-a", T0 + 1));
        expect(await store.getAlias("alias/x")).toStrictEqual(makeAlias("alias/x", "k-a", T0 + 1));
      });

      it("lists aliases ordered by name (binary order), optionally filtered by target", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        const spec: [string, string][] = [
          ["alias/b", "k-a"],
          ["alias/B", "k-b"],
          ["alias/a_1", "k-a"],
          ["alias/a-1", "k-b"],
          ["alias/a/1", "k-a"],
          ["alias/A", "k-a"],
          ["alias/a1", "k-b"],
        ];
        for (const [aliasName, target] of spec)
          await store.createAlias(makeAlias(aliasName, target));
        const sorted = (xs: string[]): string[] =>
          [...xs].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
        expect(names(await store.listAliases({ limit: 100 }))).toStrictEqual(
          sorted(spec.map(([n]) => n)),
        );
        expect(names(await store.listAliases({ limit: 100, targetKeyId: "k-a" }))).toStrictEqual(
          sorted(spec.filter(([, t]) => t === "k-a").map(([n]) => n)),
        );
        expect(await store.listAliases({ limit: 100, targetKeyId: "k-none" })).toStrictEqual([]);
      });

      it("pages aliases with after and limit, with and without a target filter", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        const all = Array.from({ length: 9 }, (_, i) => `alias/n-${i}`);
        for (const [i, n] of [...all].reverse().entries()) {
          await store.createAlias(makeAlias(n, i % 2 === 0 ? "k-a" : "k-b"));
        }
        const walk = async (targetKeyId?: string): Promise<string[]> => {
          const seen: string[] = [];
          let after: string | undefined;
          for (;;) {
            const page = await store.listAliases({
              limit: 2,
              ...(after === undefined ? {} : { after }),
              ...(targetKeyId === undefined ? {} : { targetKeyId }),
            });
            if (page.length === 0) return seen;
            if (seen.length > all.length) throw new Error(`paging did not end: ${seen.join(" ")}`);
            expect(page.length).toBeLessThanOrEqual(2);
            if (targetKeyId !== undefined) {
              for (const a of page) expect(a.targetKeyId).toBe(targetKeyId);
            }
            seen.push(...names(page));
            after = page[page.length - 1]!.aliasName;
          }
        };
        expect(await walk()).toStrictEqual(all);
        const ofA = (await store.listAliases({ limit: 100, targetKeyId: "k-a" })).map(
          (a) => a.aliasName,
        );
        expect(await walk("k-a")).toStrictEqual(ofA);
        expect(await walk("k-b")).toStrictEqual(all.filter((n) => !ofA.includes(n)));
        expect(ofA.length + (await walk("k-b")).length).toBe(all.length);
        expect(names(await store.listAliases({ after: "alias/n-6", limit: 100 }))).toStrictEqual([
          "alias/n-7",
          "alias/n-8",
        ]);
      });

      it("fills every alias page unless the listing ended, with and without a target filter", async () => {
        // kms:ResourceAliases reads a key's aliases page by page and stops at a short page: a
        // store that filters by target after applying the limit (DynamoDB's Limit with a
        // FilterExpression) returns short or empty pages while aliases remain, and a policy's
        // Deny on an alias past one goes unseen. Runs of one target make such pages empty.
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        const spec: [string, string][] = [
          ["alias/p-0", "k-b"],
          ["alias/p-1", "k-b"],
          ["alias/P-2", "k-b"],
          ["alias/p-3", "k-a"],
          ["alias/p_4", "k-b"],
          ["alias/p-5", "k-b"],
          ["alias/p-6", "k-b"],
          ["alias/p.7", "k-a"],
          ["alias/p-8", "k-a"],
          ["alias/p-9", "k-b"],
        ];
        for (const [aliasName, target] of [...spec].reverse()) {
          await store.createAlias(makeAlias(aliasName, target));
        }
        const all = spec.map(([n]) => n).sort(byCodeUnit);
        for (const targetKeyId of [undefined, "k-a", "k-b"]) {
          const listed = spec
            .filter(([, t]) => targetKeyId === undefined || t === targetKeyId)
            .map(([n]) => n)
            .sort(byCodeUnit);
          for (const after of [undefined, ...all, "alias/p-35"]) {
            for (let limit = 1; limit <= 4; limit++) {
              const page = await store.listAliases({
                limit,
                ...(after === undefined ? {} : { after }),
                ...(targetKeyId === undefined ? {} : { targetKeyId }),
              });
              expect(
                names(page),
                `listAliases target ${String(targetKeyId)}, after ${String(after)}, limit ${limit}`,
              ).toStrictEqual(expectedPage(listed, after, limit));
            }
          }
        }
      });
    });

    describe("integrity seals: kept verbatim, absent stays absent", () => {
      // Seals are opaque to stores; these look like what the Kms writes, plus the extremes of
      // the contract (every printable ASCII character, the 256-character maximum).
      const SEAL_A = `v1.${"0123456789abcdef".repeat(4)}`;
      const SEAL_B = `v1.${"fedcba9876543210".repeat(4)}`;
      const SEAL_LONGEST = Array.from({ length: 256 }, (_, i) =>
        String.fromCharCode(0x20 + (i % 95)),
      ).join("");

      it("round-trips a key's seal through createKey, getKey and listKeys", async () => {
        const key = makeKey("k-sealed", { seal: SEAL_A });
        const longest = makeKey("k-sealed-long", { seal: SEAL_LONGEST });
        await store.createKey(key);
        await store.createKey(longest);
        expect((await store.getKey("k-sealed"))?.seal).toBe(SEAL_A);
        expectSameKey(await store.getKey("k-sealed"), key);
        expect((await store.getKey("k-sealed-long"))?.seal).toBe(SEAL_LONGEST);
        const listed = await store.listKeys({ limit: 10 });
        expect(listed.map((k) => k.seal)).toStrictEqual([SEAL_A, SEAL_LONGEST]);
        expectSameKey(listed[0], key);
        expectSameKey(listed[1], longest);
      });

      it("leaves a key without a seal without one (no undefined or null property)", async () => {
        await store.createKey(makeKey("k-bare"));
        await store.createKey(makeKey("k-sealed", { seal: SEAL_A }));
        expect(await store.getKey("k-bare")).not.toHaveProperty("seal");
        const listed = await store.listKeys({ limit: 10 });
        expect(listed[0]?.keyId).toBe("k-bare");
        expect(listed[0]).not.toHaveProperty("seal");
        expect(listed[1]?.seal).toBe(SEAL_A);
      });

      it("keeps an empty seal as an empty string, apart from an absent one", async () => {
        await store.createKey(makeKey("k-empty-seal", { seal: "" }));
        const stored = await store.getKey("k-empty-seal");
        expect(stored).toHaveProperty("seal", "");
      });

      it("replaces, adds and removes a key's seal with updateKey", async () => {
        const key = makeKey("k-u", { seal: SEAL_A });
        await store.createKey(key);
        expect((await store.getKey("k-u"))?.seal).toBe(SEAL_A);

        const resealed = next(key, { description: "two", seal: SEAL_B });
        await store.updateKey(resealed);
        expect((await store.getKey("k-u"))?.seal).toBe(SEAL_B);
        expectSameKey((await store.listKeys({ limit: 1 }))[0], resealed);

        const unsealed = next(omit(resealed, "seal") as StoredKey);
        await store.updateKey(unsealed);
        expect(await store.getKey("k-u")).not.toHaveProperty("seal");
        expect((await store.listKeys({ limit: 1 }))[0]).not.toHaveProperty("seal");

        // A record from before seals existed gains one on its next write.
        const sealedAgain = next(unsealed, { seal: SEAL_A });
        await store.updateKey(sealedAgain);
        expectSameKey(await store.getKey("k-u"), sealedAgain);
      });

      it("keeps the stored seal when an update loses the compare-and-set", async () => {
        const key = makeKey("k-cas", { seal: SEAL_A });
        await store.createKey(key);
        const winner = next(key, { seal: SEAL_B });
        await store.updateKey(winner);
        await expect(store.updateKey(next(key, { seal: SEAL_LONGEST }))).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        await expect(store.updateKey(next(omit(key, "seal") as StoredKey))).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        expectSameKey(await store.getKey("k-cas"), winner);
      });

      it("round-trips an alias's seal through createAlias, getAlias and listAliases", async () => {
        await store.createKey(makeKey("k-a"));
        const sealed: StoredAlias = { ...makeAlias("alias/sealed", "k-a"), seal: SEAL_A };
        const longest: StoredAlias = {
          ...makeAlias("alias/sealed-long", "k-a"),
          seal: SEAL_LONGEST,
        };
        await store.createAlias(sealed);
        await store.createAlias(longest);
        await store.createAlias(makeAlias("alias/unsealed", "k-a"));
        expect(await store.getAlias("alias/sealed")).toStrictEqual(sealed);
        expect(await store.getAlias("alias/sealed-long")).toStrictEqual(longest);
        expect(await store.getAlias("alias/unsealed")).toStrictEqual(
          makeAlias("alias/unsealed", "k-a"),
        );
        expect(await store.getAlias("alias/unsealed")).not.toHaveProperty("seal");
        const expected = [sealed, longest, makeAlias("alias/unsealed", "k-a")];
        expect(await store.listAliases({ limit: 10 })).toStrictEqual(expected);
        expect(await store.listAliases({ limit: 10, targetKeyId: "k-a" })).toStrictEqual(expected);
        expect(await store.listAliases({ after: "alias/sealed", limit: 1 })).toStrictEqual([
          longest,
        ]);
      });

      it("replaces an alias's seal with the one updateAlias gives, and clears it when none is given", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias({ ...makeAlias("alias/x", "k-a"), seal: SEAL_A });
        await store.createAlias({ ...makeAlias("alias/other", "k-a"), seal: SEAL_A });
        // Read first, so a store that caches aliases has the old record cached.
        expect((await store.getAlias("alias/x"))?.seal).toBe(SEAL_A);

        await store.updateAlias("alias/x", "k-b", T0 + DAY, SEAL_B);
        const resealed = {
          aliasName: "alias/x",
          targetKeyId: "k-b",
          createdAt: T0,
          updatedAt: T0 + DAY,
          seal: SEAL_B,
        };
        expect(await store.getAlias("alias/x")).toStrictEqual(resealed);
        expect(await store.listAliases({ limit: 10, targetKeyId: "k-b" })).toStrictEqual([
          resealed,
        ]);

        await store.updateAlias("alias/x", "k-a", T0 + 2 * DAY);
        const cleared = makeAlias("alias/x", "k-a");
        const expectedCleared = { ...cleared, updatedAt: T0 + 2 * DAY };
        expect(await store.getAlias("alias/x")).toStrictEqual(expectedCleared);
        expect(await store.getAlias("alias/x")).not.toHaveProperty("seal");
        expect(await store.listAliases({ after: "alias/other", limit: 10 })).toStrictEqual([
          expectedCleared,
        ]);

        // An alias from before seals existed gains one on its next update.
        await store.updateAlias("alias/x", "k-b", T0 + 3 * DAY, SEAL_LONGEST);
        expect((await store.getAlias("alias/x"))?.seal).toBe(SEAL_LONGEST);

        // Updating one alias never touches another's seal.
        expect((await store.getAlias("alias/other"))?.seal).toBe(SEAL_A);
      });

      it("updates an alias only while its stored seal is expectedSeal (compare-and-set)", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias({ ...makeAlias("alias/x", "k-a"), seal: SEAL_A });
        // Read first, so a store that caches aliases has the old record cached.
        expect((await store.getAlias("alias/x"))?.seal).toBe(SEAL_A);

        await store.updateAlias("alias/x", "k-b", T0 + DAY, SEAL_B, SEAL_A);
        expect(await store.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-b", seal: SEAL_B });

        // A write based on the older read (seal A) loses, and changes nothing.
        await expect(
          store.updateAlias("alias/x", "k-a", T0 + 2 * DAY, SEAL_LONGEST, SEAL_A),
        ).rejects.toBeInstanceOf(KeyStoreConflictError);
        // null expects an alias stored without a seal; this one has one.
        await expect(
          store.updateAlias("alias/x", "k-a", T0 + 2 * DAY, SEAL_LONGEST, null),
        ).rejects.toBeInstanceOf(KeyStoreConflictError);
        expect(await store.getAlias("alias/x")).toMatchObject({
          targetKeyId: "k-b",
          updatedAt: T0 + DAY,
          seal: SEAL_B,
        });

        await store.updateAlias("alias/x", "k-a", T0 + 3 * DAY, undefined, SEAL_B);
        await store.updateAlias("alias/x", "k-b", T0 + 4 * DAY, SEAL_A, null);
        expect(await store.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-b", seal: SEAL_A });
        await expect(
          store.updateAlias("alias/none", "k-a", T0, SEAL_A, SEAL_B),
        ).rejects.toBeInstanceOf(NotFoundError);
      });

      it("deletes an alias only while its stored seal is expectedSeal (compare-and-set)", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createKey(makeKey("k-b"));
        await store.createAlias({ ...makeAlias("alias/x", "k-a"), seal: SEAL_A });
        // Read first, so a store that caches aliases has the record cached.
        expect((await store.getAlias("alias/x"))?.seal).toBe(SEAL_A);

        // A delete based on another record loses, and deletes nothing.
        await expect(store.deleteAlias("alias/x", SEAL_B)).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        // null expects an alias stored without a seal; this one has one.
        await expect(store.deleteAlias("alias/x", null)).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        expect(await store.getAlias("alias/x")).toStrictEqual({
          ...makeAlias("alias/x", "k-a"),
          seal: SEAL_A,
        });

        // Another writer moves the alias: a delete based on the record read before it loses.
        await store.updateAlias("alias/x", "k-b", T0 + DAY, SEAL_B, SEAL_A);
        await expect(store.deleteAlias("alias/x", SEAL_A)).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        const moved = { ...makeAlias("alias/x", "k-b"), updatedAt: T0 + DAY, seal: SEAL_B };
        expect(await store.getAlias("alias/x")).toStrictEqual(moved);
        expect(await store.listAliases({ limit: 10, targetKeyId: "k-b" })).toStrictEqual([moved]);

        await store.deleteAlias("alias/x", SEAL_B);
        expect(await store.getAlias("alias/x")).toBeUndefined();
        expect(await store.listAliases({ limit: 10 })).toStrictEqual([]);
        await expect(store.deleteAlias("alias/x", SEAL_B)).rejects.toBeInstanceOf(NotFoundError);
        await expect(store.deleteAlias("alias/none", null)).rejects.toBeInstanceOf(NotFoundError);

        // null matches an alias stored without a seal, and only that.
        await store.createAlias(makeAlias("alias/bare", "k-a"));
        await expect(store.deleteAlias("alias/bare", SEAL_A)).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        expect(await store.getAlias("alias/bare")).toStrictEqual(makeAlias("alias/bare", "k-a"));
        await store.deleteAlias("alias/bare", null);
        expect(await store.getAlias("alias/bare")).toBeUndefined();
        // Deleting an alias never touches its key.
        expect(await store.getKey("k-a")).toBeDefined();
        expect(await store.getKey("k-b")).toBeDefined();
      });

      it("keeps an empty alias seal apart from an absent one, also as expectedSeal", async () => {
        await store.createKey(makeKey("k-a"));
        await store.createAlias({ ...makeAlias("alias/e", "k-a"), seal: "" });
        expect(await store.getAlias("alias/e")).toHaveProperty("seal", "");
        // null expects an alias stored without a seal; this one has the empty one.
        await expect(
          store.updateAlias("alias/e", "k-a", T0 + DAY, SEAL_A, null),
        ).rejects.toBeInstanceOf(KeyStoreConflictError);
        await expect(store.deleteAlias("alias/e", null)).rejects.toBeInstanceOf(
          KeyStoreConflictError,
        );
        await store.updateAlias("alias/e", "k-a", T0 + DAY, "", "");
        expect(await store.getAlias("alias/e")).toStrictEqual({
          ...makeAlias("alias/e", "k-a"),
          updatedAt: T0 + DAY,
          seal: "",
        });
        await store.deleteAlias("alias/e", "");
        expect(await store.getAlias("alias/e")).toBeUndefined();
      });

      it("creates nothing when updateAlias with a seal names a missing alias", async () => {
        await expect(store.updateAlias("alias/none", "k-a", T0, SEAL_A)).rejects.toBeInstanceOf(
          NotFoundError,
        );
        expect(await store.getAlias("alias/none")).toBeUndefined();
        expect(await store.listAliases({ limit: 10 })).toStrictEqual([]);
      });
    });

    describe("settings", () => {
      it("returns undefined for a setting never written", async () => {
        expect(await store.getSetting("root-key-check")).toBeUndefined();
      });

      it("keeps the first value written: first writer wins", async () => {
        expect(await store.putSettingIfAbsent("root-key-check", "first")).toBe("first");
        expect(await store.putSettingIfAbsent("root-key-check", "second")).toBe("first");
        expect(await store.getSetting("root-key-check")).toBe("first");
      });

      it("keeps settings apart by name and keeps values exactly", async () => {
        const value = `{"v":1,"text":"ü 🔑 ${"x".repeat(2_000)}"}`;
        await store.putSettingIfAbsent("a", value);
        await store.putSettingIfAbsent("b", "");
        expect(await store.getSetting("a")).toBe(value);
        expect(await store.getSetting("b")).toBe("");
        expect(await store.putSettingIfAbsent("b", "later")).toBe("");
      });

      it("agrees on one value when writers race", async () => {
        const results = await Promise.all(
          Array.from({ length: 8 }, (_, i) => store.putSettingIfAbsent("race", `value-${i}`)),
        );
        const stored = await store.getSetting("race");
        expect(stored).toMatch(/^value-\d$/);
        for (const r of results) expect(r).toBe(stored);
      });
    });

    describe("concurrency", () => {
      it("lets exactly one of N parallel updates with the same expected revision win", async () => {
        const key = makeKey("k-race");
        await store.createKey(key);
        const attempts = Array.from({ length: 8 }, (_, i) =>
          next(key, { description: `writer-${i}` }),
        );
        const { fulfilled, rejected } = await outcomes(attempts.map((a) => store.updateKey(a)));
        expect(fulfilled).toHaveLength(1);
        expect(rejected).toHaveLength(attempts.length - 1);
        for (const r of rejected) expect(r.reason).toBeInstanceOf(KeyStoreConflictError);
        expectSameKey(await store.getKey("k-race"), attempts[fulfilled[0]!]!);
      });

      it("lets exactly one of N parallel creates of one key id win", async () => {
        const attempts = Array.from({ length: 6 }, (_, i) =>
          makeKey("k-create-race", { description: `creator-${i}` }),
        );
        const { fulfilled, rejected } = await outcomes(attempts.map((a) => store.createKey(a)));
        expect(fulfilled).toHaveLength(1);
        for (const r of rejected) expect(r.reason).toBeInstanceOf(AlreadyExistsError);
        expectSameKey(await store.getKey("k-create-race"), attempts[fulfilled[0]!]!);
      });

      it("lets exactly one of a racing update and delete at one revision win", async () => {
        const key = makeKey("k-ud");
        await store.createKey(key);
        await store.createAlias(makeAlias("alias/ud", "k-ud"));
        const { fulfilled, rejected } = await outcomes([
          store.updateKey(next(key, { description: "updated" })),
          store.deleteKey("k-ud", 1),
        ]);
        expect(fulfilled).toHaveLength(1);
        expect(rejected).toHaveLength(1);
        if (fulfilled[0] === 0) {
          expect(rejected[0]?.reason).toBeInstanceOf(KeyStoreConflictError);
          expect((await store.getKey("k-ud"))?.description).toBe("updated");
          expect(await store.getAlias("alias/ud")).toBeDefined();
        } else {
          const reason = rejected[0]?.reason;
          expect(reason instanceof KeyStoreConflictError || reason instanceof NotFoundError).toBe(
            true,
          );
          expect(await store.getKey("k-ud")).toBeUndefined();
          expect(await store.getAlias("alias/ud")).toBeUndefined();
        }
      });

      it("lets exactly one of racing alias updates and a delete with one expected seal win", async () => {
        const seal = `v1.${"0123456789abcdef".repeat(4)}`;
        await store.createKey(makeKey("k-a"));
        await store.createAlias({ ...makeAlias("alias/race", "k-a"), seal });
        const writers = 6;
        const updates = Array.from({ length: writers }, (_, i) =>
          store.updateAlias("alias/race", `k-${i}`, T0 + 1 + i, `seal-${i}`, seal),
        );
        const { fulfilled, rejected } = await outcomes([
          ...updates,
          store.deleteAlias("alias/race", seal),
        ]);
        expect(fulfilled).toHaveLength(1);
        expect(rejected).toHaveLength(writers);
        const winner = fulfilled[0]!;
        const stored = await store.getAlias("alias/race");
        if (winner === writers) {
          // The delete won: updates that came after it find no alias.
          for (const r of rejected) {
            const reason = r.reason;
            expect(reason instanceof KeyStoreConflictError || reason instanceof NotFoundError).toBe(
              true,
            );
          }
          expect(stored).toBeUndefined();
        } else {
          for (const r of rejected) expect(r.reason).toBeInstanceOf(KeyStoreConflictError);
          expect(stored).toStrictEqual({
            ...makeAlias("alias/race", `k-${winner}`),
            updatedAt: T0 + 1 + winner,
            seal: `seal-${winner}`,
          });
        }
      });

      it("loses no update when writers re-read and retry on conflict", async () => {
        await store.createKey(makeKey("k-counter"));
        const writers = 5;
        const incrementsEach = 10;
        const writer = async (): Promise<void> => {
          for (let done = 0; done < incrementsEach; ) {
            const current = await store.getKey("k-counter");
            if (current === undefined) throw new Error("k-counter vanished");
            try {
              await store.updateKey(
                next(current, {
                  rotation: {
                    ...current.rotation,
                    onDemandRotations: current.rotation.onDemandRotations + 1,
                  },
                }),
              );
              done++;
            } catch (error) {
              if (!(error instanceof KeyStoreConflictError)) throw error;
            }
          }
        };
        await Promise.all(Array.from({ length: writers }, writer));
        const final = await store.getKey("k-counter");
        expect(final?.revision).toBe(1 + writers * incrementsEach);
        expect(final?.rotation.onDemandRotations).toBe(writers * incrementsEach);
      });
    });
  });
}
