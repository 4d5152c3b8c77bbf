import { existsSync, lstatSync, mkdirSync, rmdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createKms, type Kms, type KmsOptions, RootKeySource } from "@kms/core";
import { SqliteAuditSink, SqliteKeyStore } from "@kms/keystore-sqlite";
import type { CliIo } from "../cli-io.ts";
import { oneLine } from "./one-line.ts";
import { rootKeyFromFile } from "./root-key-file.ts";
import { UsageError } from "./usage.ts";

export const ROOT_KEY_ENV = "KMS_ROOT_KEY";
/** Written by `kms init --dev-root-key`; its name says what it is to anyone listing the dir. */
export const DEV_ROOT_KEY_FILE = "dev-root.key";
/** The key store and its audit trail, in the data dir. */
export const DATABASE_FILE = "kms.db";

export function dataDirOf(io: CliIo, flag: string | undefined): string {
  const dir = flag ?? io.env.KMS_DATA_DIR;
  return resolve(io.cwd, dir === undefined || dir === "" ? ".kms" : dir);
}

/**
 * The root key source, in order: `--root-key-file`, KMS_ROOT_KEY, the development key file a
 * `kms init --dev-root-key` left in the data dir (announced on stderr each time).
 * @throws UsageError when there is none.
 */
export function resolveRootKey(
  io: CliIo,
  dataDir: string,
  rootKeyFile: string | undefined,
): RootKeySource {
  if (rootKeyFile !== undefined) return rootKeyFromFile(io, resolve(io.cwd, rootKeyFile));
  const fromEnv = io.env[ROOT_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return RootKeySource.fromEnv(ROOT_KEY_ENV, io.env);
  const devFile = join(dataDir, DEV_ROOT_KEY_FILE);
  if (existsSync(devFile)) {
    io.stderr.write(`kms: using the DEVELOPMENT root key ${devFile} (not for production)\n`);
    return RootKeySource.devFile(devFile);
  }
  throw new UsageError(
    `no root key: set ${ROOT_KEY_ENV} (64 hex digits or base64 of 32 bytes), pass --root-key-file <path>, or run "kms init --dev-root-key" for a development key`,
  );
}

/**
 * Warns, one stderr line each, about the data dir or `kms.db` when another user can change them:
 * writable by group or others, or owned by someone other than this user or root. Whoever can
 * write the directory can delete `kms.db` (every key gone; once someone runs `kms init` again,
 * the new, empty store's `audit verify` vouches for zero events) or put an older copy back (keys
 * since deleted restored, the trail cut short); whoever can write `kms.db` can rewrite the trail
 * and its recorded head. `mkdir`'s mode 0700 applies only to a directory it creates. A warning
 * rather than a refusal, as for a root key file open to others: a data dir shared by an
 * operators' group keeps working the day it upgrades.
 */
function warnIfOthersCanWrite(io: CliIo, dataDir: string, database: string): void {
  if (process.platform === "win32") return;
  const uid = process.getuid?.();
  for (const [what, path] of [
    ["data dir", dataDir],
    ["key store", database],
  ] as const) {
    const info = statSync(path, { throwIfNoEntry: false });
    if (info === undefined) continue;
    const mode = (info.mode & 0o777).toString(8);
    if ((info.mode & 0o022) !== 0) {
      io.stderr.write(
        `kms: warning: ${what} ${oneLine(path)} is writable by group or other users (mode ${mode}): they can replace or delete the keys and the audit trail; chmod ${what === "data dir" ? "700" : "600"} it\n`,
      );
    } else if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
      io.stderr.write(
        `kms: warning: ${what} ${oneLine(path)} is owned by another user (uid ${info.uid}), who can replace or delete the keys and the audit trail; chown it\n`,
      );
    }
  }
}

/** No key store in the data dir: a mistyped `--data-dir`, or one never initialized. */
export class KeyStoreNotFoundError extends Error {
  override readonly name = "KeyStoreNotFoundError";
}

/**
 * `<dataDir>/kms.db`, which must exist. Every command but `kms init` runs against an existing
 * store: opening a missing one would create it empty, so that a mistyped `--data-dir` would list
 * no keys, `audit verify` vouch for a trail of zero events and `serve` serve an empty KMS. Looked
 * up with lstat, so that a symbolic link to nothing reaches the key store, which names it as one.
 * @throws KeyStoreNotFoundError when there is nothing at that path.
 */
function existingDatabase(dataDir: string): string {
  const path = join(dataDir, DATABASE_FILE);
  if (lstatSync(path, { throwIfNoEntry: false }) === undefined) {
    throw new KeyStoreNotFoundError(
      `no key store in ${dataDir} (no ${DATABASE_FILE} there): run "kms init" to create one, or pass the right --data-dir (or KMS_DATA_DIR)`,
    );
  }
  return path;
}

/**
 * Opens the KMS on the data dir's existing `kms.db`, with the audit trail in the same file so
 * every CLI call leaves a durable, hash-chained record. The root key is resolved only once the
 * store is found: on a mistyped `--data-dir` the missing store is the mistake to report, and a
 * root key source is not asked for (a key file not opened) for a store that is not there.
 * `unsealedRecords` stays at core's default ("refuse") for every command but
 * `kms seal-unsealed-records`.
 * @throws KeyStoreNotFoundError when the data dir holds no `kms.db`; nothing is created.
 */
export async function openKms(
  io: CliIo,
  dataDir: string,
  rootKey: () => RootKeySource,
  options: Pick<KmsOptions, "unsealedRecords"> = {},
): Promise<Kms> {
  const path = existingDatabase(dataDir);
  return openDatabase(io, dataDir, path, rootKey(), options);
}

/**
 * `kms init`: opens the data dir's key store, creating the dir (mode 0700) and `kms.db` as
 * needed. A failed init (a malformed or wrong root key, most often) removes what it created —
 * the directories, `kms.db` with its SQLite side files, and a development root key file the
 * source wrote — so that it leaves no empty store behind for a later command to run against, nor
 * a development key that later commands would pick up and fail with. Only what was absent when
 * it started is removed, directories only while empty, and the side files only with a `kms.db`
 * it created: those of an existing store may be another process's (a `kms serve`'s) live WAL.
 */
export async function openOrCreateKms(
  io: CliIo,
  dataDir: string,
  rootKey: RootKeySource,
): Promise<Kms> {
  const path = join(dataDir, DATABASE_FILE);
  const absent = (file: string): boolean =>
    lstatSync(file, { throwIfNoEntry: false }) === undefined;
  const created = [
    ...(absent(path) ? [path, `${path}-wal`, `${path}-shm`, `${path}-journal`] : []),
    ...[join(dataDir, DEV_ROOT_KEY_FILE)].filter(absent),
  ];
  const firstCreatedDir = mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    return await openDatabase(io, dataDir, path, rootKey, {});
  } catch (error) {
    for (const file of created) {
      try {
        rmSync(file, { force: true });
      } catch {
        // The open's own failure is the one to report, not a failure to tidy up after it.
      }
    }
    if (firstCreatedDir !== undefined) removeEmptyDirs(dataDir, firstCreatedDir);
    throw error;
  }
}

/** `dir`, then each parent up to and including `top`, while each is empty. */
function removeEmptyDirs(dir: string, top: string): void {
  for (let current = dir; ; current = dirname(current)) {
    try {
      rmdirSync(current);
    } catch {
      return;
    }
    if (current === top || dirname(current) === current) return;
  }
}

async function openDatabase(
  io: CliIo,
  dataDir: string,
  path: string,
  rootKey: RootKeySource,
  options: Pick<KmsOptions, "unsealedRecords">,
): Promise<Kms> {
  warnIfOthersCanWrite(io, dataDir, path);
  const store = SqliteKeyStore.open({ path });
  let audit: SqliteAuditSink | undefined;
  try {
    audit = new SqliteAuditSink({ path });
    return await createKms({ store, rootKey, audit, ...options });
  } catch (error) {
    await audit?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw error;
  }
}
