// Files another local user can change: a credentials file they own (they can add an access key
// of their own), and a data dir or kms.db they can write (they can delete every key, or put an
// older kms.db back with its shorter audit trail). Mode bits alone did not show the first, and
// only a directory `mkdir` created got mode 0700.
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CredentialsFileError, readCredentialsFile } from "../src/internal/serve-command.ts";
import { initializedWorkspace, run, type workspace } from "./helpers.ts";

/** chown to another user needs root; as anyone else such a file could not be read anyway. */
const asRoot = process.getuid?.() === 0;
const NOBODY = 65_534;

let ws: ReturnType<typeof workspace>;
beforeEach(async () => {
  ws = await initializedWorkspace();
});
afterEach(() => {
  ws.dispose();
});

describe("a credentials file owned by another user", () => {
  const write = (name: string): string => {
    const path = join(ws.dir, name);
    writeFileSync(
      path,
      JSON.stringify({
        AKIAPLANTED00000001: {
          secretAccessKey: "s".repeat(40),
          principal: "arn:aws:iam::000000000000:root",
        },
      }),
    );
    chmodSync(path, 0o600);
    return path;
  };

  it.skipIf(!asRoot)("is refused, even at mode 600, naming the owner", async () => {
    const path = write("credentials.json");
    chownSync(path, NOBODY, NOBODY);
    const error = await readCredentialsFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CredentialsFileError);
    expect((error as Error).message).toBe(
      `the credentials file ${path} is owned by another user (uid ${NOBODY}), who can add access keys to it: chown it to the user running kms serve`,
    );
  });

  it.skipIf(!asRoot)("kms serve exits 1 before it listens", async () => {
    const path = write("credentials.json");
    chownSync(path, NOBODY, NOBODY);
    const result = await run(["serve", "--credentials", path, "--port", "0"], {
      cwd: ws.dir,
      env: ws.env,
    });
    expect(result.code).toBe(1);
    expect(result.out).toBe("");
    expect(result.err).toMatch(/^CredentialsFileError: .* is owned by another user/);
  });

  it("one of this user's own is read", async () => {
    const path = write("own.json");
    expect(Object.keys(await readCredentialsFile(path))).toEqual(["AKIAPLANTED00000001"]);
  });
});

describe("a data dir or kms.db others can write", () => {
  const listKeys = (dataDir: string) =>
    run(["list-keys", "--data-dir", dataDir], { cwd: ws.dir, env: ws.env });
  const init = (dataDir: string) =>
    run(["init", "--data-dir", dataDir], { cwd: ws.dir, env: ws.env });

  it.each([0o777, 0o775, 0o770, 0o1777].map((mode) => [mode.toString(8), mode] as const))(
    "data dir mode %s: one warning line on stderr; the command still runs, its JSON intact",
    async (_name, mode) => {
      const dataDir = join(ws.dir, "shared");
      expect((await init(dataDir)).code).toBe(0);
      chmodSync(dataDir, mode);
      const result = await listKeys(dataDir);
      expect(result.code).toBe(0);
      expect(JSON.parse(result.out)).toEqual({ keys: [] });
      expect(result.err).toBe(
        `kms: warning: data dir ${dataDir} is writable by group or other users (mode ${(mode & 0o777).toString(8)}): they can replace or delete the keys and the audit trail; chmod 700 it\n`,
      );
    },
  );

  it("kms.db writable by others: warned about", async () => {
    const dataDir = join(ws.dir, "data");
    expect((await init(dataDir)).err).toBe("");
    chmodSync(join(dataDir, "kms.db"), 0o666);
    const result = await listKeys(dataDir);
    expect(result.code).toBe(0);
    expect(result.err).toBe(
      `kms: warning: key store ${join(dataDir, "kms.db")} is writable by group or other users (mode 666): they can replace or delete the keys and the audit trail; chmod 600 it\n`,
    );
  });

  it.skipIf(!asRoot)("a data dir owned by another user: warned about", async () => {
    const dataDir = join(ws.dir, "theirs");
    expect((await init(dataDir)).code).toBe(0);
    chownSync(dataDir, NOBODY, NOBODY);
    const result = await listKeys(dataDir);
    expect(result.code).toBe(0);
    expect(result.err).toBe(
      `kms: warning: data dir ${dataDir} is owned by another user (uid ${NOBODY}), who can replace or delete the keys and the audit trail; chown it\n`,
    );
  });

  it("a data dir created by the command, or one of mode 700: no warning", async () => {
    const created = await init(join(ws.dir, "new"));
    expect(created.err).toBe("");
    const own = join(ws.dir, "own");
    mkdirSync(own);
    chmodSync(own, 0o700);
    expect((await init(own)).err).toBe("");
    expect((await listKeys(own)).err).toBe("");
  });
});
