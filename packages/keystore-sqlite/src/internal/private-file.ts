import { closeSync, openSync } from "node:fs";

/**
 * Creates `path` empty with mode 0600 unless something exists there, before SQLite opens it.
 *
 * SQLite creates a missing database with mode 0644 (less the umask), so any local user could
 * read every key's wrapped material, policy, grants and the audit trail; it gives the -wal and
 * -shm files the database file's mode, so creating the file private first makes all three
 * private. An empty file is a valid empty database to SQLite. A file that exists keeps the mode
 * its owner gave it. Other failures (a missing parent directory) are left for SQLite to report
 * when it opens the path, in the error the caller documents.
 */
export function createPrivateFile(path: string): void {
  if (path === ":memory:") return;
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch {
    return;
  }
  closeSync(fd);
}
