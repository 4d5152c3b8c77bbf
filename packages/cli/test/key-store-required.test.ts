// Only `kms init` creates a key store. Every other command, run on a data dir without one (a
// mistyped --data-dir, the default ./.kms on a fresh machine), used to create the dir and an
// empty kms.db and run against it: list-keys listed no keys, audit verify vouched for an empty
// trail, serve served an empty KMS. And an init that failed on its root key left the empty store
// (and the dirs it made) behind, for those commands to find.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE } from "../src/index.ts";
import { SYNOPSES } from "../src/internal/usage.ts";
import { initStore, run, workspace } from "./helpers.ts";

let ws: ReturnType<typeof workspace>;
beforeEach(() => {
  ws = workspace();
  writeFileSync(join(ws.dir, "data"), "plaintext");
  writeFileSync(join(ws.dir, "data.kms"), "not a message");
  writeFileSync(join(ws.dir, "policy.json"), "{}");
  writeFileSync(
    join(ws.dir, "credentials.json"),
    JSON.stringify({
      AKIAAPP0000000000001: {
        secretAccessKey: "s".repeat(40),
        principal: "arn:aws:iam::000000000000:role/app",
      },
    }),
    { mode: 0o600 },
  );
});
afterEach(() => ws.dispose());

const KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab";

/** A well-formed command line for every command but init: each opens the key store. */
const COMMANDS: Readonly<Record<string, readonly string[]>> = {
  "create-key": ["create-key"],
  "list-keys": ["list-keys"],
  "describe-key": ["describe-key", "alias/backups"],
  "create-alias": ["create-alias", "alias/backups", KEY_ID],
  "update-alias": ["update-alias", "alias/backups", KEY_ID],
  "delete-alias": ["delete-alias", "alias/backups"],
  "list-aliases": ["list-aliases"],
  "schedule-key-deletion": ["schedule-key-deletion", KEY_ID],
  "cancel-key-deletion": ["cancel-key-deletion", KEY_ID],
  "disable-key": ["disable-key", KEY_ID],
  "enable-key": ["enable-key", KEY_ID],
  "enable-key-rotation": ["enable-key-rotation", KEY_ID],
  "disable-key-rotation": ["disable-key-rotation", KEY_ID],
  "get-key-rotation-status": ["get-key-rotation-status", KEY_ID],
  "rotate-key": ["rotate-key", KEY_ID],
  "list-key-rotations": ["list-key-rotations", KEY_ID],
  "get-key-policy": ["get-key-policy", KEY_ID],
  "put-key-policy": ["put-key-policy", KEY_ID, "--policy", "policy.json"],
  "seal-unsealed-records": ["seal-unsealed-records"],
  "last-used": ["last-used", KEY_ID],
  "audit list": ["audit", "list"],
  "audit verify": ["audit", "verify"],
  encrypt: ["encrypt", "--key", "alias/backups", "--in", "data", "--out", "out.kms"],
  decrypt: ["decrypt", "--in", "data.kms", "--out", "out"],
  serve: ["serve", "--credentials", "credentials.json", "--port", "0"],
};

const refusal = (dataDir: string): string =>
  `KeyStoreNotFoundError: no key store in ${dataDir} (no kms.db there): run "kms init" to create one, or pass the right --data-dir (or KMS_DATA_DIR)\n`;

/** Every name under the workspace, so that a test sees anything a command left anywhere. */
function tree(): string[] {
  return readdirSync(ws.dir, { recursive: true, encoding: "utf8" }).sort();
}

describe("a data dir without a key store is refused, and nothing is created", () => {
  it("the table covers every command but init", () => {
    expect(Object.keys(COMMANDS).sort()).toEqual(
      Object.keys(SYNOPSES)
        .filter((name) => name !== "init")
        .sort(),
    );
  });

  it.each(Object.entries(COMMANDS))("%s, on the default ./.kms", async (_name, argv) => {
    const before = tree();
    const result = await run(argv, { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(EXIT_FAILED);
    expect(result.out).toBe("");
    expect(result.err).toBe(refusal(join(ws.dir, ".kms")));
    expect(tree()).toEqual(before);
  });

  it.each(Object.entries(COMMANDS))("%s, on a mistyped --data-dir", async (_name, argv) => {
    await initStore(ws, ["--data-dir", "data-dir"]);
    const before = tree();
    const result = await run(["--data-dir", "data-dri", ...argv], { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(EXIT_FAILED);
    expect(result.out).toBe("");
    expect(result.err).toBe(refusal(join(ws.dir, "data-dri")));
    expect(tree()).toEqual(before);
  });

  it("KMS_DATA_DIR naming a dir that exists but holds no kms.db: the dir is left empty", async () => {
    mkdirSync(join(ws.dir, "empty"), { mode: 0o700 });
    const env = { ...ws.env, KMS_DATA_DIR: "empty" };
    for (const argv of [["list-keys"], ["audit", "verify"]]) {
      const result = await run(argv, { cwd: ws.dir, env });
      expect(result.code).toBe(EXIT_FAILED);
      expect(result.err).toBe(refusal(join(ws.dir, "empty")));
      expect(readdirSync(join(ws.dir, "empty"))).toEqual([]);
    }
  });

  it("the missing store is reported before a missing root key, and no root key file is read", async () => {
    // A FIFO no one writes: reading it would hang the command.
    execFileSync("mkfifo", [join(ws.dir, "root.key")]);
    for (const [argv, env] of [
      [["list-keys"], {}],
      [["list-keys", "--root-key-file", "root.key"], {}],
    ] as const) {
      const result = await run(argv, { cwd: ws.dir, env });
      expect(result.code).toBe(EXIT_FAILED);
      expect(result.err).toBe(refusal(join(ws.dir, ".kms")));
    }
  });

  it("once kms init created it, the same commands run", async () => {
    await initStore(ws);
    const listed = await run(["list-keys"], { cwd: ws.dir, env: ws.env });
    expect(listed.code, listed.err).toBe(EXIT_OK);
    expect(JSON.parse(listed.out)).toEqual({ keys: [] });
    const verified = await run(["audit", "verify"], { cwd: ws.dir, env: ws.env });
    expect(verified.code, verified.err).toBe(EXIT_OK);
  });
});

describe("a kms init that fails leaves nothing it created behind", () => {
  it.each([
    [
      "a malformed KMS_ROOT_KEY",
      [],
      { KMS_ROOT_KEY: "abc" },
      /^RootKeyError: root key from environment variable KMS_ROOT_KEY must be 32 bytes/,
    ],
    [
      "a root key file that holds no key",
      ["--root-key-file", "junk.key"],
      {},
      /^RootKeyError: root key from file .*junk\.key must be 32 bytes/,
    ],
  ] as const)(
    "%s, on a fresh nested --data-dir: no dir, no kms.db",
    async (_name, extra, env, message) => {
      writeFileSync(join(ws.dir, "junk.key"), "not a key\n", { mode: 0o600 });
      const before = tree();
      const result = await run(["init", "--data-dir", "srv/kms/data", ...extra], {
        cwd: ws.dir,
        env,
      });
      expect(result.code).toBe(EXIT_FAILED);
      expect(result.out).toBe("");
      expect(result.err).toMatch(message);
      expect(tree()).toEqual(before);
    },
  );

  it("on an existing empty dir: the dir stays, empty, with its mode", async () => {
    const dataDir = join(ws.dir, "prepared");
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o750);
    const result = await run(["init", "--data-dir", dataDir], {
      cwd: ws.dir,
      env: { KMS_ROOT_KEY: "abc" },
    });
    expect(result.code).toBe(EXIT_FAILED);
    expect(readdirSync(dataDir)).toEqual([]);
    expect(statSync(dataDir).mode & 0o777).toBe(0o750);
  });

  it("another root key than an existing store's: the store is kept as it was", async () => {
    await initStore(ws);
    const created = await run(["create-key"], { cwd: ws.dir, env: ws.env });
    expect(created.code, created.err).toBe(EXIT_OK);
    const db = join(ws.dir, ".kms", "kms.db");
    const stored = readFileSync(db);
    const other = { KMS_ROOT_KEY: Buffer.alloc(32, 7).toString("hex") };
    const result = await run(["init"], { cwd: ws.dir, env: other });
    expect(result.code).toBe(EXIT_FAILED);
    expect(result.err).toMatch(/^RootKeyError: the root key .* is not the one/);
    expect(readdirSync(join(ws.dir, ".kms"))).toEqual(["kms.db"]);
    expect(readFileSync(db).equals(stored)).toBe(true);
    const listed = await run(["list-keys"], { cwd: ws.dir, env: ws.env });
    expect(JSON.parse(listed.out).keys).toHaveLength(1);
  });

  it("--dev-root-key on a store made under another key: the new dev key file is removed", async () => {
    await initStore(ws);
    const result = await run(["init", "--dev-root-key"], { cwd: ws.dir, env: {} });
    expect(result.code).toBe(EXIT_FAILED);
    expect(result.err).toMatch(/^RootKeyError: the root key .* is not the one/m);
    expect(readdirSync(join(ws.dir, ".kms"))).toEqual(["kms.db"]);
    // Left there, it would be every later command's root key, each failing the same way.
    const later = await run(["list-keys"], { cwd: ws.dir, env: {} });
    expect(later.code).toBe(EXIT_USAGE);
    expect(later.err).toMatch(/^kms: no root key/);
  });
});
