/**
 * Root-key rotation: re-wraps every piece of key material in a store under a new root key while
 * other instances keep serving requests. Each key is rewritten by compare-and-set, like any
 * other key update, so a rotation never loses a concurrent change and a concurrent change never
 * undoes a re-wrap. Progress is checkpointed in store settings, so an interrupted rotation
 * resumes where it stopped.
 *
 * Procedure for a fleet of instances (see docs in the store READMEs):
 * 1. (optional, for zero failed unwraps) restart instances with `unwrapRootKeys: [new]`;
 * 2. restart instances with `rootKey: new, unwrapRootKeys: [old]` (the first one records the
 *    new key as the old one's successor; new material is wrapped under the new key from then on);
 * 3. run `rotateRootKey({ store, from: old, to: new })`;
 * 4. drop `unwrapRootKeys`: the old key is retired and the store refuses it from then on.
 *
 * Record seals (docs/FORMAT.md §4.1) move with the material: each record is verified under the
 * root key its seal names and re-sealed under the new one in the same write.
 */
import { KeyStoreConflictError, NotFoundError, RootKeyError, ValidationError } from "../errors.ts";
import { retryOnConflict } from "../internal/compare-and-set.ts";
import type { KeyStore, StoredKey, StoredKeyVersion } from "../keystore/key-store.ts";
import { sealRootKeyId } from "../keystore/record-seal.ts";
import {
  assertSealedStore,
  SealedKeyStore,
  sealUnsealedRecords,
  type UnsealedRecordsMode,
} from "../keystore/sealed-key-store.ts";
import { type RootKeySource, TransientRootKeys } from "./root-key.ts";
import { ROOT_KEY_SETTINGS, SoftwareHsm, wrappingRootKeyId } from "./software-hsm.ts";

export interface RootKeyRotationProgress {
  /** Keys handled so far (re-wrapped, already under the new key, or gone meanwhile). */
  readonly done: number;
  /** Keys in the store when the rotation (or this resumed run) started. */
  readonly total: number;
}

export interface RotateRootKeyOptions {
  readonly store: KeyStore;
  /** The root key being replaced. */
  readonly from: RootKeySource | Uint8Array;
  /** The new root key. */
  readonly to: RootKeySource | Uint8Array;
  /**
   * Called after each key. Throwing from it stops the rotation (the last completed page stays
   * checkpointed), which is also how tests interrupt one.
   */
  readonly onProgress?: (progress: RootKeyRotationProgress) => void;
  /**
   * Keys per checkpoint; a resumed rotation redoes at most one page (re-wrapping a key that is
   * already under the new key is skipped, so redoing is harmless).
   * @defaultValue 100
   */
  readonly pageSize?: number;
  /**
   * Records without a record seal, as in `KmsOptions.unsealedRecords`: `"refuse"` (default)
   * fails before anything is written; `"seal"` seals them first (under the new root key).
   */
  readonly unsealedRecords?: UnsealedRecordsMode;
}

export interface RootKeyRotationResult {
  readonly fromRootKeyId: string;
  readonly toRootKeyId: string;
  /** Keys in the store at the start of this run. */
  readonly keys: number;
  /** Key records rewritten by this run. */
  readonly rewrittenKeys: number;
  /** Key versions re-wrapped by this run. */
  readonly rewrappedVersions: number;
  /** Whether this run continued from a checkpoint left by an earlier, interrupted one. */
  readonly resumed: boolean;
}

function checkpointName(toId: string, page: number): string {
  return `root-key-rotation/${toId}/page/${page}`;
}

async function* pages(
  store: KeyStore,
  pageSize: number,
  after: string | undefined,
): AsyncGenerator<readonly StoredKey[]> {
  let cursor = after;
  for (;;) {
    const page = await store.listKeys({
      limit: pageSize,
      ...(cursor === undefined ? {} : { after: cursor }),
    });
    if (page.length === 0) return;
    yield page;
    if (page.length < pageSize) return;
    cursor = page[page.length - 1]!.keyId;
  }
}

/**
 * Re-wraps one key's versions under the HSM's root key by compare-and-set, re-reading on
 * conflict; `store` is the sealed view, so the record is verified on read and re-sealed under
 * the new root key on write. Returns how many versions it re-wrapped (0 when the key was
 * already done or is gone; a key whose material was done but whose seal was not is rewritten).
 */
function rewrapKey(
  hsm: SoftwareHsm,
  store: SealedKeyStore,
  keyId: string,
): Promise<{ rewritten: boolean; versions: number }> {
  return retryOnConflict(
    async () => {
      const current = await store.getKey(keyId);
      if (current === undefined) return { rewritten: false, versions: 0 };
      let changed = 0;
      const versions = current.versions.map((v): StoredKeyVersion => {
        const rewrapped = hsm.rewrapMaterial({
          keyId,
          version: v.version,
          wrappedMaterial: v.wrappedMaterial,
        });
        if (rewrapped === undefined) return v;
        changed++;
        return { ...v, wrappedMaterial: rewrapped };
      });
      if (changed === 0 && sealRootKeyId(current.seal) === hsm.rootKeyId) {
        return { rewritten: false, versions: 0 };
      }
      try {
        await store.updateKey({ ...current, versions, revision: current.revision + 1 });
        return { rewritten: true, versions: changed };
      } catch (error) {
        if (error instanceof NotFoundError) return { rewritten: false, versions: 0 };
        throw error;
      }
    },
    {
      exhausted: (cause) =>
        new KeyStoreConflictError(`key ${keyId} is being changed too often to re-wrap; run again`, {
          cause,
        }),
    },
  );
}

/**
 * Re-wraps all key material in `store` from root key `from` to root key `to`, online and
 * resumably, then retires `from` (instances opened with it as their root key are refused) with
 * a setting sealed under `from` (docs/FORMAT.md §4.2). Safe to run again: a finished rotation
 * finds nothing left to do, and seals the retirement if an earlier release recorded it plain.
 *
 * Run it once every instance wraps under `to` (step 2 of the procedure above); a last sweep
 * re-wraps material that instances still on `from` created during the run.
 *
 * @throws RootKeyError when `to` is neither the store's root key nor the declared successor of
 * `from`, material is wrapped under a root key that is neither, a record fails its seal, or the
 * store holds unsealed records and `unsealedRecords` is not `"seal"`, or the retirement setting
 * of `from` holds a value that does not verify (planted). ValidationError for a bad
 * pageSize. KeyStoreConflictError when a key changes too often to re-wrap. Whatever
 * `onProgress` throws.
 */
export async function rotateRootKey(options: RotateRootKeyOptions): Promise<RootKeyRotationResult> {
  const { store } = options;
  const pageSize = options.pageSize ?? 100;
  if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
    throw new ValidationError(`"pageSize" expected an integer 1–1000, got ${String(pageSize)}`);
  }
  const unsealed = options.unsealedRecords === undefined ? "refuse" : options.unsealedRecords;
  if (unsealed !== "refuse" && unsealed !== "seal") {
    throw new ValidationError(
      `"unsealedRecords" expected "refuse" or "seal", got ${String(options.unsealedRecords)}`,
    );
  }
  // Opening with `to` as the root key and `from` for unwrapping declares `to` the successor of
  // `from` if no instance has yet, and refuses a `to` that the store's history does not allow.
  // Root keys given as bytes are copied for the open only, and the copies wiped after it.
  const transient = new TransientRootKeys();
  let hsm: SoftwareHsm;
  try {
    hsm = await SoftwareHsm.open(transient.source(options.to), store, {
      unwrapRootKeys: [transient.source(options.from)],
    });
  } finally {
    transient.wipe();
  }
  // The HSM holds both root keys: released (and its caches with them) however the run ends.
  try {
    return await rotateUnder(hsm, options, pageSize, unsealed);
  } finally {
    hsm.close();
  }
}

/** rotateRootKey once the HSM holding `to` (root key) and `from` (unwrap-only) is open. */
async function rotateUnder(
  hsm: SoftwareHsm,
  options: RotateRootKeyOptions,
  pageSize: number,
  unsealed: UnsealedRecordsMode,
): Promise<RootKeyRotationResult> {
  const { store, onProgress } = options;
  const toId = hsm.rootKeyId;
  // A finished rotation has retired `from`, and the HSM then no longer holds it: running again
  // finds nothing left to do. A record put back under `from` (a forgery, or a write by an
  // instance still on `from`) is refused like on any read, never re-sealed as genuine.
  const fromId = hsm.unwrapRootKeyIds[0] ?? hsm.retiredUnwrapRootKeyIds[0]!;
  if (fromId === toId) throw new RootKeyError("from and to are the same root key");
  const successor = await store.getSetting(ROOT_KEY_SETTINGS.successor(fromId));
  if (successor !== toId) {
    throw new RootKeyError(
      `root key ${toId} is not the successor of root key ${fromId} in key store ${store.description}`,
    );
  }
  const sealed = new SealedKeyStore(store, hsm);
  if (unsealed === "seal") await sealUnsealedRecords(store, sealed);
  else await assertSealedStore(store, (keyId) => `key ${keyId}`);

  // Resume after the last completed page.
  let page = 0;
  let after: string | undefined;
  for (;;) {
    const done = await store.getSetting(checkpointName(toId, page));
    if (done === undefined) break;
    after = done;
    page++;
  }
  const resumed = page > 0;

  let total = 0;
  let done = 0;
  for await (const keys of pages(store, 1000, undefined)) {
    total += keys.length;
    if (after !== undefined) done += keys.filter((k) => k.keyId <= after).length;
  }

  let rewrittenKeys = 0;
  let rewrappedVersions = 0;
  const rewrap = async (keyId: string): Promise<void> => {
    const { rewritten, versions } = await rewrapKey(hsm, sealed, keyId);
    if (rewritten) rewrittenKeys++;
    rewrappedVersions += versions;
  };

  for await (const keys of pages(store, pageSize, after)) {
    for (const key of keys) {
      await rewrap(key.keyId);
      done++;
      onProgress?.({ done, total: Math.max(total, done) });
    }
    await store.putSettingIfAbsent(checkpointName(toId, page), keys[keys.length - 1]!.keyId);
    page++;
  }

  // Last sweep over everything: keys created behind the checkpoint, or material wrapped under
  // `from` by an instance that had not switched yet. Reads only, unless something is left.
  for await (const keys of pages(store, 1000, undefined)) {
    for (const key of keys) {
      const stale =
        sealRootKeyId(key.seal) !== toId ||
        key.versions.some((v) => wrappingRootKeyId(v.wrappedMaterial) !== toId);
      if (stale) await rewrap(key.keyId);
    }
  }
  // Aliases hold no material, only a seal: re-seal those still under another root key.
  for (let cursor: string | undefined; ; ) {
    const page = await store.listAliases({
      limit: 1000,
      ...(cursor === undefined ? {} : { after: cursor }),
    });
    for (const alias of page) {
      if (sealRootKeyId(alias.seal) !== toId) await sealed.resealAlias(alias.aliasName);
    }
    if (page.length < 1000) break;
    cursor = page[page.length - 1]!.aliasName;
  }
  await hsm.recordRetirement(store, fromId, toId);
  return {
    fromRootKeyId: fromId,
    toRootKeyId: toId,
    keys: total,
    rewrittenKeys,
    rewrappedVersions,
    resumed,
  };
}
