import { RootKeySource } from "@kms/core";
import type { CliIo } from "../cli-io.ts";
import { oneLine } from "./one-line.ts";

/**
 * `--root-key-file <path>`: core's `RootKeySource.fromFile` (a regular file or a FIFO such as
 * `<(…)`; directories, sockets and devices refused before anything is read), plus ssh's warning
 * for a private key open to group or other users (mode & 0077), once, on stderr. The key is still
 * used (ssh would ignore it): refusing would stop every command of a deployment whose secret is
 * mounted 0640 the day it upgrades. Core calls back only once the key was read, so a file that
 * holds no key fails with its one line.
 */
export function rootKeyFromFile(io: CliIo, path: string): RootKeySource {
  let warned = false;
  return RootKeySource.fromFile(path, {
    onSharedMode(mode) {
      if (warned) return;
      warned = true;
      io.stderr.write(
        `kms: warning: root key file ${oneLine(path)} is open to group or other users (mode ${(mode & 0o777).toString(8)}): chmod 600 it\n`,
      );
    },
  });
}
