/**
 * Backup and restore of a whole key store as plain JSON, between stores of any kind (memory,
 * SQLite, PostgreSQL). Key material stays wrapped under the root key: a snapshot is as
 * sensitive as the store itself, no more, and is useless without the root key.
 */
import { AlreadyExistsError, ValidationError } from "../errors.ts";
import { ROOT_KEY_SETTINGS, rootKeyHistory } from "../hsm/software-hsm.ts";
import type {
  KeyStore,
  StoredAlias,
  StoredKey,
  StoredKeyVersion,
  StoredRotationSettings,
} from "./key-store.ts";
import { isGrants } from "./stored-json.ts";

export const SNAPSHOT_FORMAT = "kms-keystore-snapshot/v1";

/** A key version with its bytes as base64. */
export interface KeyVersionSnapshot
  extends Omit<StoredKeyVersion, "wrappedMaterial" | "publicKey"> {
  readonly wrappedMaterial: string;
  readonly publicKey?: string;
}

export interface KeySnapshot extends Omit<StoredKey, "versions"> {
  readonly versions: readonly KeyVersionSnapshot[];
}

/** Everything a KeyStore holds, JSON-serializable (`JSON.stringify` / `JSON.parse` safe). */
export interface KeyStoreSnapshot {
  readonly format: typeof SNAPSHOT_FORMAT;
  /** Store settings: the root key id, history and retirements, passphrase KDF parameters. */
  readonly settings: Readonly<Record<string, string>>;
  readonly keys: readonly KeySnapshot[];
  readonly aliases: readonly StoredAlias[];
}

/** Settings a snapshot carries besides the root key history. */
const PLAIN_SETTINGS = ["root-key-kdf"];

const PAGE = 100;

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/**
 * Reads every key, alias and known setting of `store` into a snapshot. Take it while no other
 * writer is active for a consistent copy: pages are read one after another, not in one
 * transaction.
 * @throws Whatever the store throws.
 */
export async function exportKeyStore(store: KeyStore): Promise<KeyStoreSnapshot> {
  const settings: Record<string, string> = {};
  const history = await rootKeyHistory(store);
  if (history.length > 0) settings[ROOT_KEY_SETTINGS.first] = history[0]!;
  for (let i = 0; i + 1 < history.length; i++) {
    settings[ROOT_KEY_SETTINGS.successor(history[i]!)] = history[i + 1]!;
  }
  for (const id of history) {
    // Verbatim, sealed or not: a restored store judges its retirements as the original does.
    for (const name of [ROOT_KEY_SETTINGS.retirement(id), ROOT_KEY_SETTINGS.retired(id)]) {
      const value = await store.getSetting(name);
      if (value !== undefined) settings[name] = value;
    }
  }
  for (const name of PLAIN_SETTINGS) {
    const value = await store.getSetting(name);
    if (value !== undefined) settings[name] = value;
  }

  const keys: KeySnapshot[] = [];
  for (let after: string | undefined; ; ) {
    const page = await store.listKeys({ limit: PAGE, ...(after === undefined ? {} : { after }) });
    for (const key of page) {
      keys.push({
        ...key,
        versions: key.versions.map(({ wrappedMaterial, publicKey, ...rest }) => ({
          ...rest,
          wrappedMaterial: base64(wrappedMaterial),
          ...(publicKey === undefined ? {} : { publicKey: base64(publicKey) }),
        })),
      });
    }
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.keyId;
  }

  const aliases: StoredAlias[] = [];
  for (let after: string | undefined; ; ) {
    const page = await store.listAliases({
      limit: PAGE,
      ...(after === undefined ? {} : { after }),
    });
    aliases.push(...page.map((a) => ({ ...a })));
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.aliasName;
  }
  // A plain JSON round trip drops undefined-valued properties and any prototype.
  return JSON.parse(JSON.stringify({ format: SNAPSHOT_FORMAT, settings, keys, aliases }));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fail(path: string, rule: string): never {
  throw new ValidationError(`snapshot ${path} ${rule}`);
}

function str(value: unknown, path: string): string {
  if (typeof value !== "string") fail(path, "expected a string");
  return value;
}

function int(value: unknown, path: string): number {
  if (!Number.isSafeInteger(value)) fail(path, "expected an integer");
  return value as number;
}

function bool(value: unknown, path: string): boolean {
  if (typeof value !== "boolean") fail(path, "expected a boolean");
  return value;
}

/** `{ [name]: check(value) }`, or `{}` when the value is absent. */
function optional<K extends string, T>(
  name: K,
  value: unknown,
  check: (value: unknown) => T,
): { [P in K]?: T } {
  return (value === undefined ? {} : { [name]: check(value) }) as { [P in K]?: T };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bytesFrom(value: unknown, path: string): Uint8Array {
  const text = str(value, path);
  if (!BASE64.test(text)) fail(path, "expected standard base64");
  return new Uint8Array(Buffer.from(text, "base64"));
}

function parseVersion(value: unknown, path: string): StoredKeyVersion {
  if (!isRecord(value)) fail(path, "expected an object");
  return {
    version: int(value.version, `${path}.version`),
    createdAt: int(value.createdAt, `${path}.createdAt`),
    ...optional("rotationType", value.rotationType, (v) => str(v, `${path}.rotationType`)),
    keyMaterialId: str(value.keyMaterialId, `${path}.keyMaterialId`),
    wrappedMaterial: bytesFrom(value.wrappedMaterial, `${path}.wrappedMaterial`),
    ...optional("publicKey", value.publicKey, (v) => bytesFrom(v, `${path}.publicKey`)),
  } as StoredKeyVersion;
}

function parseRotation(value: unknown, path: string): StoredRotationSettings {
  if (!isRecord(value)) fail(path, "expected an object");
  return {
    enabled: bool(value.enabled, `${path}.enabled`),
    periodInDays: int(value.periodInDays, `${path}.periodInDays`),
    ...optional("nextRotationAt", value.nextRotationAt, (v) => int(v, `${path}.nextRotationAt`)),
    onDemandRotations: int(value.onDemandRotations, `${path}.onDemandRotations`),
  };
}

function parseTags(value: unknown, path: string): StoredKey["tags"] {
  if (!Array.isArray(value)) fail(path, "expected an array");
  return value.map((tag, i) => {
    if (!isRecord(tag)) fail(`${path}[${i}]`, "expected an object");
    return {
      tagKey: str(tag.tagKey, `${path}[${i}].tagKey`),
      tagValue: str(tag.tagValue, `${path}[${i}].tagValue`),
    };
  });
}

/**
 * Every field of a key record, checked for its type, and only those fields: the whole snapshot
 * is checked before anything is written, so a record a store cannot hold (a date that is text,
 * which SQLite's STRICT tables refuse) fails the import before its first key rather than
 * after some of them, leaving a store that is neither empty nor whole.
 */
function parseKey(value: unknown, path: string): StoredKey {
  if (!isRecord(value)) fail(path, "expected an object");
  if (!Array.isArray(value.versions) || value.versions.length === 0) {
    fail(`${path}.versions`, "expected a non-empty array");
  }
  const versions = value.versions.map((v, i) => parseVersion(v, `${path}.versions[${i}]`));
  if (new Set(versions.map((v) => v.version)).size !== versions.length) {
    fail(`${path}.versions`, "holds a version twice");
  }
  const currentVersion = int(value.currentVersion, `${path}.currentVersion`);
  if (!versions.some((v) => v.version === currentVersion)) {
    fail(`${path}.currentVersion`, "names no version of the key");
  }
  if (value.grants !== undefined && !isGrants(value.grants)) {
    fail(`${path}.grants`, "expected a list of grants");
  }
  return {
    keyId: str(value.keyId, `${path}.keyId`),
    revision: int(value.revision, `${path}.revision`),
    createdAt: int(value.createdAt, `${path}.createdAt`),
    description: str(value.description, `${path}.description`),
    keySpec: str(value.keySpec, `${path}.keySpec`) as StoredKey["keySpec"],
    keyUsage: str(value.keyUsage, `${path}.keyUsage`) as StoredKey["keyUsage"],
    origin: str(value.origin, `${path}.origin`) as StoredKey["origin"],
    multiRegion: bool(value.multiRegion, `${path}.multiRegion`),
    keyState: str(value.keyState, `${path}.keyState`) as StoredKey["keyState"],
    ...optional("deletionDate", value.deletionDate, (v) => int(v, `${path}.deletionDate`)),
    ...optional("pendingWindowInDays", value.pendingWindowInDays, (v) =>
      int(v, `${path}.pendingWindowInDays`),
    ),
    rotation: parseRotation(value.rotation, `${path}.rotation`),
    tags: parseTags(value.tags, `${path}.tags`),
    ...optional("policy", value.policy, (v) => str(v, `${path}.policy`)),
    ...(value.grants === undefined ? {} : { grants: value.grants }),
    versions,
    currentVersion,
    ...optionalSeal(value.seal, `${path}.seal`),
  };
}

/** Seals travel verbatim (FORMAT §4.1): checked only for being text, verified when opened. */
function optionalSeal(value: unknown, path: string): { seal?: string } {
  return value === undefined ? {} : { seal: str(value, path) };
}

function parseAlias(value: unknown, path: string): StoredAlias {
  if (!isRecord(value)) fail(path, "expected an object");
  return {
    aliasName: str(value.aliasName, `${path}.aliasName`),
    targetKeyId: str(value.targetKeyId, `${path}.targetKeyId`),
    createdAt: int(value.createdAt, `${path}.createdAt`),
    updatedAt: int(value.updatedAt, `${path}.updatedAt`),
    ...optionalSeal(value.seal, `${path}.seal`),
  };
}

/**
 * Restores a snapshot into an empty store of any kind. Open the KMS on the target afterwards
 * with the same root key: the snapshot carries the root key history, so any other key is
 * refused as it would be on the original store. Record seals are restored verbatim (they do not
 * cover `revision`, which restarts at 1), so a record edited in the snapshot is refused when
 * the KMS reads it.
 *
 * @throws ValidationError when `snapshot` is malformed (checked before anything is written),
 * AlreadyExistsError when the target store already holds keys, aliases or a different root key
 * id; whatever the store throws.
 */
export async function importKeyStore(store: KeyStore, snapshot: unknown): Promise<void> {
  if (!isRecord(snapshot)) fail("", "expected an object");
  if (snapshot.format !== SNAPSHOT_FORMAT) fail("format", `expected "${SNAPSHOT_FORMAT}"`);
  if (!isRecord(snapshot.settings)) fail("settings", "expected an object");
  if (!Array.isArray(snapshot.keys)) fail("keys", "expected an array");
  if (!Array.isArray(snapshot.aliases)) fail("aliases", "expected an array");
  const settings = Object.entries(snapshot.settings).map(
    ([name, value]) => [name, str(value, `settings.${name}`)] as const,
  );
  const keys = snapshot.keys.map((k, i) => parseKey(k, `keys[${i}]`));
  const aliases = snapshot.aliases.map((a, i) => parseAlias(a, `aliases[${i}]`));
  const keyIds = new Set(keys.map((k) => k.keyId));
  if (keyIds.size !== keys.length) fail("keys", "holds a key id twice");
  const aliasNames = new Set<string>();
  for (const [i, alias] of aliases.entries()) {
    if (!keyIds.has(alias.targetKeyId)) fail(`aliases[${i}].targetKeyId`, "names no key");
    if (aliasNames.has(alias.aliasName)) fail(`aliases[${i}].aliasName`, "is given twice");
    aliasNames.add(alias.aliasName);
  }

  if (
    (await store.listKeys({ limit: 1 })).length > 0 ||
    (await store.listAliases({ limit: 1 })).length > 0
  ) {
    throw new AlreadyExistsError(`key store ${store.description} is not empty`);
  }
  for (const [name, value] of settings) {
    const stored = await store.putSettingIfAbsent(name, value);
    if (stored !== value) {
      throw new AlreadyExistsError(
        `key store ${store.description} already has setting ${name} with another value`,
      );
    }
  }
  // createKey takes revision 1: revisions only order writes within one store.
  for (const key of keys) await store.createKey({ ...key, revision: 1 });
  for (const alias of aliases) await store.createAlias(alias);
}
