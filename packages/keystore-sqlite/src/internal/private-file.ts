import { closeSync, existsSync, lstatSync, openSync } from "node:fs";
import { KmsInternalError } from "@kms/core";

/**
 * Creates `path` empty with mode 0600 unless something exists there, before SQLite opens it.
 *
 * SQLite creates a missing database with mode 0644 (less the umask), so any local user could
 * read every key's wrapped material, policy, grants and the audit trail; it gives the -wal and
 * -shm files the database file's mode, so creating the file private first makes all three
 * private. An empty file is a valid empty database to SQLite. A file that exists keeps the mode
 * its owner gave it. Other failures (a missing parent directory) are left for SQLite to report
 * when it opens the path, in the error the caller documents.
 *
 * A symbolic link to nothing is refused: O_EXCL does not follow it (so nothing is created
 * here), but SQLite would, creating the target wherever the link points with the default mode.
 * @throws KmsInternalError when `path` is a symbolic link whose target does not exist.
 */
export function createPrivateFile(path: string): void {
  if (path === ":memory:") return;
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST" && isDanglingLink(path)) {
      throw new KmsInternalError(
        `"path" ${path} is a symbolic link to a file that does not exist; SQLite would create the target with the default mode (0644 less the umask), not 0600: create the target first, or give its path`,
      );
    }
    return;
  }
  closeSync(fd);
}

function isDanglingLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink() && !existsSync(path);
  } catch {
    return false;
  }
}
