import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { initStore, run, workspace } from "./helpers.ts";

let ws: ReturnType<typeof workspace>;
beforeEach(() => {
  ws = workspace();
});
afterEach(() => ws.dispose());

describe("usage errors exit 2 with the usage text", () => {
  it.each([
    ["no command", []],
    ["an unknown command", ["frobnicate"]],
    ["an unknown flag", ["list-keys", "--verbose"]],
    ["a flag of another command", ["create-key", "--in", "x"]],
    ["a missing value", ["encrypt", "--key"]],
    ["a missing required flag", ["encrypt", "--key", "k", "--in", "a"]],
    ["a missing positional", ["describe-key"]],
    ["an extra positional", ["disable-key", "a", "b"]],
    ["a context without =", ["encrypt", "--key", "k", "--in", "a", "--out", "b", "--context", "x"]],
    [
      "a repeated context key",
      ["decrypt", "--in", "a", "--out", "b", "--context", "x=1", "--context", "x=2"],
    ],
    ["a non-numeric --days", ["schedule-key-deletion", "k", "--days", "week"]],
    [
      "a non-numeric --max-frame-size",
      ["decrypt", "--in", "a", "--out", "b", "--max-frame-size", "1M"],
    ],
    [
      "a non-numeric --frame-size",
      ["encrypt", "--key", "k", "--in", "a", "--out", "b", "--frame-size", "4k"],
    ],
  ])("%s", async (_name, argv) => {
    const result = await run(argv, { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(2);
    expect(result.out).toBe("");
    expect(result.err).toMatch(/^kms: .+\n\nUsage: kms /);
    // Nothing was opened: a mistyped command does not create a key store.
    expect(existsSync(join(ws.dir, ".kms"))).toBe(false);
  });

  it("--help and help print the usage on stdout and exit 0", async () => {
    const global = await run(["--help"], { cwd: ws.dir });
    expect(global.code).toBe(0);
    expect(global.out).toContain("kms encrypt --key");
    const one = await run(["help", "decrypt"], { cwd: ws.dir });
    expect(one.out).toMatch(/^Usage: kms decrypt /);
    const flag = await run(["encrypt", "--help"], { cwd: ws.dir });
    expect(flag.out).toMatch(/^Usage: kms encrypt /);
  });
});

describe("root key", () => {
  it("without any source: a usage error naming the ways to give one", async () => {
    const init = await run(["init"], { cwd: ws.dir, env: {} });
    expect(init.code).toBe(2);
    expect(existsSync(join(ws.dir, ".kms"))).toBe(false);
    await initStore(ws);
    const result = await run(["list-keys"], { cwd: ws.dir, env: {} });
    for (const refused of [init, result]) {
      expect(refused.err).toContain("no root key");
      expect(refused.err).toContain("KMS_ROOT_KEY");
      expect(refused.err).toContain("--root-key-file");
      expect(refused.err).toContain("kms init --dev-root-key");
    }
    expect(result.code).toBe(2);
  });

  it("a malformed KMS_ROOT_KEY is RootKeyError, exit 1", async () => {
    await initStore(ws);
    const result = await run(["list-keys"], { cwd: ws.dir, env: { KMS_ROOT_KEY: "abc" } });
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/^RootKeyError: root key from environment variable KMS_ROOT_KEY/);
  });

  it("accepts base64 as well as hex, and --root-key-file over the environment", async () => {
    const b64 = { KMS_ROOT_KEY: ws.rootKey.toString("base64") };
    expect((await run(["init"], { cwd: ws.dir, env: b64 })).code).toBe(0);
    const created = await run(["create-key"], { cwd: ws.dir, env: b64 });
    expect(created.code).toBe(0);
    writeFileSync(join(ws.dir, "root.hex"), `${ws.rootKey.toString("hex")}\n`);
    const listed = await run(["list-keys", "--root-key-file", "root.hex"], {
      cwd: ws.dir,
      env: { KMS_ROOT_KEY: "not a key" },
    });
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.out).keys).toHaveLength(1);
  });

  it("another root key than the store's is refused (RootKeyError)", async () => {
    await initStore(ws);
    expect((await run(["create-key"], { cwd: ws.dir, env: ws.env })).code).toBe(0);
    const other = { KMS_ROOT_KEY: Buffer.alloc(32, 7).toString("hex") };
    const result = await run(["list-keys"], { cwd: ws.dir, env: other });
    expect(result.code).toBe(1);
    expect(result.err).toMatch(/^RootKeyError: the root key .* is not the one/);
  });

  it("init --dev-root-key writes a 0600 key file, warns loudly, and later commands use it", async () => {
    const init = await run(["init", "--dev-root-key"], { cwd: ws.dir, env: {} });
    expect(init.code).toBe(0);
    expect(init.err).toContain("DEVELOPMENT ROOT KEY — NOT FOR PRODUCTION");
    const keyFile = join(ws.dir, ".kms", "dev-root.key");
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(JSON.parse(init.out)).toMatchObject({
      dataDir: join(ws.dir, ".kms"),
      rootKey: `development key file ${keyFile}`,
    });
    const created = await run(["create-key"], { cwd: ws.dir, env: {} });
    expect(created.code).toBe(0);
    expect(created.err).toContain("DEVELOPMENT root key");
    // Running init again keeps the key (a new one would orphan every key in the store).
    const key = readFileSync(keyFile, "utf8");
    expect((await run(["init", "--dev-root-key"], { cwd: ws.dir, env: {} })).code).toBe(0);
    expect(readFileSync(keyFile, "utf8")).toBe(key);
  });

  it("init --dev-root-key next to a real root key is a usage error", async () => {
    const result = await run(["init", "--dev-root-key"], { cwd: ws.dir, env: ws.env });
    expect(result.code).toBe(2);
    expect(existsSync(join(ws.dir, ".kms", "dev-root.key"))).toBe(false);
  });

  it("--data-dir and KMS_DATA_DIR choose the store", async () => {
    const env = { ...ws.env, KMS_DATA_DIR: "from-env" };
    expect((await run(["init"], { cwd: ws.dir, env })).code).toBe(0);
    expect(existsSync(join(ws.dir, "from-env", "kms.db"))).toBe(true);
    expect((await run(["create-key"], { cwd: ws.dir, env })).code).toBe(0);
    expect((await run(["--data-dir", "flag", "init"], { cwd: ws.dir, env })).code).toBe(0);
    expect(existsSync(join(ws.dir, "flag", "kms.db"))).toBe(true);
  });
});

describe("key commands", () => {
  beforeEach(() => initStore(ws));

  it("create, alias, describe, list, schedule and cancel deletion", async () => {
    const opts = { cwd: ws.dir, env: ws.env };
    const created = await run(["create-key", "--description", "invoices"], opts);
    expect(created.code).toBe(0);
    const meta = JSON.parse(created.out);
    expect(meta).toMatchObject({ description: "invoices", keySpec: "SYMMETRIC_DEFAULT" });
    const hmac = await run(
      ["create-key", "--key-spec", "HMAC_256", "--key-usage", "GENERATE_VERIFY_MAC"],
      opts,
    );
    expect(JSON.parse(hmac.out)).toMatchObject({ keySpec: "HMAC_256" });
    const bad = await run(["create-key", "--key-spec", "AES_512"], opts);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^ValidationException: /);

    expect((await run(["create-alias", "alias/invoices", meta.keyId], opts)).code).toBe(0);
    const described = await run(["describe-key", "alias/invoices"], opts);
    expect(JSON.parse(described.out).keyId).toBe(meta.keyId);
    const listed = JSON.parse((await run(["list-keys"], opts)).out);
    expect(listed.keys).toHaveLength(2);
    expect(listed.keys).toContainEqual({
      keyId: meta.keyId,
      keyArn: meta.arn,
      aliases: ["alias/invoices"],
    });

    const tooSoon = await run(["schedule-key-deletion", meta.keyId, "--days", "3"], opts);
    expect(tooSoon.code).toBe(1);
    expect(tooSoon.err).toMatch(/^ValidationException: /);
    const scheduled = await run(["schedule-key-deletion", meta.keyId, "--days", "7"], opts);
    expect(JSON.parse(scheduled.out)).toMatchObject({
      keyState: "PendingDeletion",
      pendingWindowInDays: 7,
    });
    const cancelled = await run(["cancel-key-deletion", meta.keyId], opts);
    expect(JSON.parse(cancelled.out)).toEqual({ keyId: meta.keyId, keyState: "Disabled" });

    const missing = await run(["describe-key", "alias/nope"], opts);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^NotFoundException: /);
  });

  it("--principal is the caller of every call", async () => {
    const outsider = "arn:aws:iam::111122223333:user/mallory";
    const refused = await run(["create-key", "--principal", outsider], {
      cwd: ws.dir,
      env: ws.env,
    });
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^AccessDeniedException: /);
    const insider = "arn:aws:iam::000000000000:user/alice";
    const allowed = await run(["create-key", "--principal", insider], {
      cwd: ws.dir,
      env: ws.env,
    });
    expect(allowed.code).toBe(0);
  });
});
