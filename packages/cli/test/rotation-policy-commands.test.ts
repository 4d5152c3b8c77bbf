import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { MAX_KEY_POLICY_BYTES } from "@kms/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { CliOutput } from "../src/cli-io.ts";
import { runCli } from "../src/index.ts";
import { policyDocument } from "../src/internal/policy-commands.ts";
import { Collector, initializedWorkspace, type RunResult, run, type workspace } from "./helpers.ts";

let ws: ReturnType<typeof workspace>;
beforeEach(async () => {
  ws = await initializedWorkspace();
});
afterEach(() => ws.dispose());

function kms(argv: readonly string[], stdin?: Uint8Array): Promise<RunResult> {
  return run(argv, { cwd: ws.dir, env: ws.env, ...(stdin === undefined ? {} : { stdin }) });
}

async function ok(argv: readonly string[], stdin?: Uint8Array): Promise<unknown> {
  const result = await kms(argv, stdin);
  expect(result.err, argv.join(" ")).toBe("");
  expect(result.code, argv.join(" ")).toBe(0);
  return JSON.parse(result.out);
}

async function failed(argv: readonly string[], error: RegExp, stdin?: Uint8Array): Promise<void> {
  const result = await kms(argv, stdin);
  expect(result.code, argv.join(" ")).toBe(1);
  expect(result.out, argv.join(" ")).toBe("");
  expect(result.err, argv.join(" ")).toMatch(error);
}

async function createKey(...argv: string[]): Promise<{ keyId: string; arn: string }> {
  return (await ok(["create-key", ...argv])) as { keyId: string; arn: string };
}

const ACCOUNT = "000000000000";
const ROOT = `arn:aws:iam::${ACCOUNT}:root`;
const ALICE = `arn:aws:iam::${ACCOUNT}:user/alice`;
const UNKNOWN_KEY = "1234abcd-12ab-34cd-56ef-1234567890ab";

/** The account may do everything, except `alice`, who may do nothing with the key. */
const DENY_ALICE = {
  Version: "2012-10-17",
  Id: "deny-alice",
  Statement: [
    { Sid: "Account", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
    { Sid: "NotAlice", Effect: "Deny", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" },
  ],
};

function writePolicy(name: string, document: unknown): string {
  writeFileSync(join(ws.dir, name), JSON.stringify(document));
  return name;
}

describe("usage errors exit 2 before opening the store", () => {
  it.each([
    ["enable-key-rotation without a key", ["enable-key-rotation"]],
    ["a non-numeric --period-days", ["enable-key-rotation", "k", "--period-days", "ninety"]],
    ["a fractional --period-days", ["enable-key-rotation", "k", "--period-days", "90.5"]],
    ["an empty --period-days", ["enable-key-rotation", "k", "--period-days="]],
    ["disable-key-rotation without a key", ["disable-key-rotation"]],
    ["get-key-rotation-status without a key", ["get-key-rotation-status"]],
    ["rotate-key without a key", ["rotate-key"]],
    ["rotate-key with two keys", ["rotate-key", "a", "b"]],
    ["list-key-rotations without a key", ["list-key-rotations"]],
    ["get-key-policy without a key", ["get-key-policy"]],
    ["put-key-policy without --policy", ["put-key-policy", "k"]],
    ["put-key-policy without a key", ["put-key-policy", "--policy", "p.json"]],
    [
      "put-key-policy with a value for the lockout flag",
      ["put-key-policy", "k", "--policy", "p.json", "--bypass-policy-lockout-safety-check=yes"],
    ],
    [
      "put-key-policy with --policy twice",
      ["put-key-policy", "k", "--policy", "a", "--policy", "b"],
    ],
    ["list-aliases with a positional", ["list-aliases", "alias/a"]],
    ["update-alias without a key", ["update-alias", "alias/a"]],
    ["delete-alias without an alias", ["delete-alias"]],
    ["delete-alias with two aliases", ["delete-alias", "alias/a", "alias/b"]],
  ])("%s", async (_name, argv) => {
    // Run on a data dir with no store: a store lookup would fail otherwise, exit 1.
    const result = await kms(["--data-dir", "none", ...argv]);
    expect(result.code).toBe(2);
    expect(result.out).toBe("");
    expect(result.err).toMatch(new RegExp(`^kms: .+\\n\\nUsage: kms ${argv[0]} `));
    expect(existsSync(join(ws.dir, "none"))).toBe(false);
  });

  it("each command has a usage line", async () => {
    const help = await kms(["help"]);
    for (const command of [
      "enable-key-rotation",
      "disable-key-rotation",
      "get-key-rotation-status",
      "rotate-key",
      "list-key-rotations",
      "get-key-policy",
      "put-key-policy",
      "list-aliases",
      "update-alias",
      "delete-alias",
    ]) {
      expect(help.out).toContain(`  kms ${command} `);
    }
  });
});

describe("key rotation", () => {
  it("enable, status, disable: the schedule the KMS keeps", async () => {
    const { arn, keyId } = await createKey();
    expect(await ok(["get-key-rotation-status", arn])).toEqual({
      keyRotationEnabled: false,
      keyId: arn,
    });

    const before = Date.now();
    const enabled = (await ok(["enable-key-rotation", arn, "--period-days", "90"])) as {
      nextRotationDate: string;
    };
    expect(enabled).toEqual({
      keyRotationEnabled: true,
      keyId: arn,
      rotationPeriodInDays: 90,
      nextRotationDate: expect.any(String),
    });
    const next = Date.parse(enabled.nextRotationDate) - before;
    expect(next).toBeGreaterThanOrEqual(90 * 86_400_000);
    expect(next).toBeLessThan(91 * 86_400_000);
    expect(await ok(["get-key-rotation-status", keyId])).toEqual(enabled);

    // The KMS checks the range; the schedule stays as it was.
    await failed(["enable-key-rotation", keyId, "--period-days", "30"], /^ValidationException: /);
    expect(await ok(["get-key-rotation-status", keyId])).toEqual(enabled);

    expect(await ok(["enable-key-rotation", keyId])).toMatchObject({ rotationPeriodInDays: 365 });
    expect(await ok(["disable-key-rotation", keyId])).toEqual({
      keyRotationEnabled: false,
      keyId: arn,
    });
    expect(await ok(["get-key-rotation-status", keyId])).toEqual({
      keyRotationEnabled: false,
      keyId: arn,
    });
  });

  it("rotate-key adds key material: one more rotation, and describe-key names it current", async () => {
    const { arn, keyId } = await createKey();
    const original = (await ok(["describe-key", keyId])) as { currentKeyMaterialId: string };
    expect(await ok(["list-key-rotations", arn])).toEqual({ rotations: [] });

    expect(await ok(["rotate-key", arn])).toEqual({ keyId: arn });
    const first = (await ok(["list-key-rotations", keyId])) as {
      rotations: { keyMaterialId: string }[];
    };
    expect(first.rotations).toEqual([
      {
        keyId: arn,
        keyMaterialId: expect.any(String),
        rotationDate: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        rotationType: "ON_DEMAND",
      },
    ]);
    const material = first.rotations[0]?.keyMaterialId;
    expect(material).not.toBe(original.currentKeyMaterialId);
    expect(await ok(["describe-key", keyId])).toMatchObject({ currentKeyMaterialId: material });

    await ok(["rotate-key", keyId]);
    const second = (await ok(["list-key-rotations", keyId])) as { rotations: unknown[] };
    expect(second.rotations).toHaveLength(2);
    expect(second.rotations[0]).toEqual(first.rotations[0]);
  });

  it("a key that does not rotate: UnsupportedOperationException, exit 1", async () => {
    const { keyId } = await createKey(
      "--key-spec",
      "HMAC_256",
      "--key-usage",
      "GENERATE_VERIFY_MAC",
    );
    for (const command of ["get-key-rotation-status", "enable-key-rotation", "rotate-key"]) {
      await failed([command, keyId], /^UnsupportedOperationException: /);
    }
  });
});

describe("key policies", () => {
  it("get-key-policy prints the default policy as a pretty-printed document", async () => {
    const { keyId } = await createKey();
    const result = await kms(["get-key-policy", keyId]);
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/^\{\n {2}"Version": "2012-10-17",\n/);
    expect(JSON.parse(result.out)).toEqual({
      Version: "2012-10-17",
      Id: "key-default-1",
      Statement: [expect.objectContaining({ Principal: { AWS: ROOT }, Action: "kms:*" })],
    });
  });

  it("put-key-policy from a file: get-key-policy returns it and the KMS enforces it", async () => {
    const { arn, keyId } = await createKey();
    await ok(["create-alias", "alias/guarded", keyId]);
    await ok(["describe-key", "alias/guarded", "--principal", ALICE]);

    const file = writePolicy("policy.json", DENY_ALICE);
    expect(await ok(["put-key-policy", arn, "--policy", file])).toEqual({
      keyId: arn,
      policyName: "default",
    });
    expect(await ok(["get-key-policy", keyId])).toEqual(DENY_ALICE);
    await failed(
      ["describe-key", "alias/guarded", "--principal", ALICE],
      /^AccessDeniedException: /,
    );
    await ok(["describe-key", "alias/guarded"]);
  });

  it("put-key-policy --policy - reads the document from stdin", async () => {
    const { keyId } = await createKey();
    const document = { ...DENY_ALICE, Id: "from-stdin" };
    const stdin = Buffer.from(JSON.stringify(document));
    await ok(["put-key-policy", keyId, "--policy", "-"], stdin);
    expect(await ok(["get-key-policy", keyId])).toEqual(document);
    // A byte-order mark, as some editors write, is not part of the document.
    const marked = { ...document, Id: "with-bom" };
    const bom = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from(JSON.stringify(marked)),
    ]);
    await ok(["put-key-policy", keyId, "--policy", "-"], bom);
    expect(await ok(["get-key-policy", keyId])).toEqual(marked);
  });

  it("the KMS's refusals surface by name, exit 1, and leave the policy as it was", async () => {
    const { keyId } = await createKey();
    const before = await ok(["get-key-policy", keyId]);
    writeFileSync(join(ws.dir, "not-json.txt"), "Allow everyone everything");
    await failed(
      ["put-key-policy", keyId, "--policy", "not-json.txt"],
      /^MalformedPolicyDocumentException: policy document: \$ is not valid JSON\n$/,
    );
    await failed(
      ["put-key-policy", keyId, "--policy", "-"],
      /^MalformedPolicyDocumentException: /,
      Buffer.from("{"),
    );
    // Lockout check: the caller (the account) could not change this policy again.
    const onlyAlice = writePolicy("only-alice.json", {
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" }],
    });
    await failed(
      ["put-key-policy", keyId, "--policy", onlyAlice],
      /^MalformedPolicyDocumentException: .*will not allow you/,
    );
    await failed(["put-key-policy", keyId, "--policy", "missing.json"], /^Error: ENOENT: /);
    writeFileSync(join(ws.dir, "latin1.json"), Buffer.from('{"Id":"caf\xe9"}', "latin1"));
    await failed(
      ["put-key-policy", keyId, "--policy", "latin1.json"],
      /^Error: put-key-policy: the policy in latin1.json is not UTF-8 text\n$/,
    );
    expect(await ok(["get-key-policy", keyId])).toEqual(before);
  });

  it("--bypass-policy-lockout-safety-check sets a policy that locks the caller out, as AWS's flag", async () => {
    const { keyId } = await createKey();
    const onlyAlice = writePolicy("only-alice.json", {
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" }],
    });
    expect(
      await ok([
        "put-key-policy",
        keyId,
        "--policy",
        onlyAlice,
        "--bypass-policy-lockout-safety-check",
      ]),
    ).toEqual({ keyId, policyName: "default" });
    // The account that set it can no longer read or change it; Alice can.
    await failed(["get-key-policy", keyId], /^AccessDeniedException: /);
    expect(await ok(["get-key-policy", keyId, "--principal", ALICE])).toMatchObject({
      Statement: [{ Principal: { AWS: ALICE } }],
    });
  });

  it("stops reading a policy past the KMS's size limit and lets the KMS refuse it", async () => {
    const { keyId } = await createKey();
    // 4 MiB of stdin, 4 KiB at a time; the command needs only the first 32 KiB to know.
    let pulled = 0;
    const stdin = Readable.from(
      (function* () {
        for (let i = 0; i < 1024; i += 1) {
          pulled += 4096;
          yield Buffer.alloc(4096, "x");
        }
      })(),
    );
    const stderr = new Collector();
    const code = await runCli(["put-key-policy", keyId, "--policy", "-"], {
      stdout: new Collector() as CliOutput,
      stderr: stderr as CliOutput,
      stdin,
      env: ws.env,
      cwd: ws.dir,
    });
    expect(code).toBe(1);
    expect(stderr.text()).toBe(
      `MalformedPolicyDocumentException: policy document: $ must be at most ${MAX_KEY_POLICY_BYTES} bytes\n`,
    );
    expect(pulled).toBeLessThan(1024 * 1024);
  });

  it("a policy the KMS holds that is not JSON is printed as it is, as a JSON string", () => {
    expect(policyDocument("not { json")).toBe("not { json");
    expect(policyDocument('{"Version":"2012-10-17"}')).toEqual({ Version: "2012-10-17" });
  });
});

describe("aliases", () => {
  it("list, update and delete aliases", async () => {
    const a = await createKey();
    const b = await createKey();
    await ok(["create-alias", "alias/a", a.keyId]);
    await ok(["create-alias", "alias/b", b.keyId]);

    const all = (await ok(["list-aliases"])) as { aliases: Record<string, unknown>[] };
    expect(all.aliases).toEqual([
      {
        aliasName: "alias/a",
        aliasArn: `arn:aws:kms:local:${ACCOUNT}:alias/a`,
        targetKeyId: a.keyId,
        creationDate: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
        lastUpdatedDate: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
      },
      expect.objectContaining({ aliasName: "alias/b", targetKeyId: b.keyId }),
    ]);
    const names = async (key: string) =>
      (
        (await ok(["list-aliases", "--key", key])) as { aliases: { aliasName: string }[] }
      ).aliases.map((alias) => alias.aliasName);
    expect(await names(a.keyId)).toEqual(["alias/a"]);
    expect(await names("alias/b")).toEqual(["alias/b"]);
    expect(await names(b.arn)).toEqual(["alias/b"]);

    expect(await ok(["update-alias", "alias/a", b.keyId])).toEqual({
      aliasName: "alias/a",
      targetKeyId: b.keyId,
    });
    expect(await ok(["describe-key", "alias/a"])).toMatchObject({ keyId: b.keyId });
    expect(await names("alias/b")).toEqual(["alias/a", "alias/b"]);
    expect(await names(a.keyId)).toEqual([]);

    // An alias only moves to a key of the same spec and usage, so code using it keeps working.
    const mac = await createKey("--key-spec", "HMAC_256", "--key-usage", "GENERATE_VERIFY_MAC");
    await failed(["update-alias", "alias/a", mac.keyId], /^ValidationException: /);
    await failed(["update-alias", "alias/a", "alias/b"], /^ValidationException: .*not an alias/);

    expect(await ok(["delete-alias", "alias/a"])).toEqual({ aliasName: "alias/a" });
    await failed(["describe-key", "alias/a"], /^NotFoundException: /);
    await failed(["delete-alias", "alias/a"], /^NotFoundException: /);
    expect(await names("alias/b")).toEqual(["alias/b"]);
    await ok(["describe-key", b.keyId]);
  });
});

describe("an unknown key or alias is NotFoundException, exit 1", () => {
  it.each([
    ["enable-key-rotation", UNKNOWN_KEY],
    ["disable-key-rotation", "alias/nope"],
    ["get-key-rotation-status", UNKNOWN_KEY],
    ["rotate-key", "alias/nope"],
    ["list-key-rotations", UNKNOWN_KEY],
    ["get-key-policy", "alias/nope"],
    ["put-key-policy", UNKNOWN_KEY, "--policy", "policy.json"],
    ["list-aliases", "--key", "alias/nope"],
    ["list-aliases", "--key", UNKNOWN_KEY],
    ["update-alias", "alias/nope", "KEY"],
    ["update-alias", "alias/a", UNKNOWN_KEY],
    ["delete-alias", "alias/nope"],
  ])("%s %s", async (...argv) => {
    const { keyId } = await createKey();
    await ok(["create-alias", "alias/a", keyId]);
    writePolicy("policy.json", DENY_ALICE);
    await failed(
      argv.map((arg) => (arg === "KEY" ? keyId : arg)),
      /^NotFoundException: /,
    );
    // Nothing moved.
    expect(await ok(["describe-key", "alias/a"])).toMatchObject({ keyId });
  });
});

describe("the rotation and policy commands take a key id or key ARN, as AWS: an alias is NotFoundException, exit 1", () => {
  const ALIAS_ARN = `arn:aws:kms:local:${ACCOUNT}:alias/k`;
  it.each([
    ["enable-key-rotation", "enableKeyRotation", "alias/k"],
    ["disable-key-rotation", "disableKeyRotation", ALIAS_ARN],
    ["get-key-rotation-status", "getKeyRotationStatus", "alias/k"],
    ["rotate-key", "rotateKeyOnDemand", ALIAS_ARN],
    ["list-key-rotations", "listKeyRotations", "alias/k"],
    ["get-key-policy", "getKeyPolicy", ALIAS_ARN],
    ["put-key-policy", "putKeyPolicy", "alias/k", "--policy", "policy.json"],
  ])("%s %s", async (command, operation, alias, ...rest) => {
    const { keyId } = await createKey();
    await ok(["create-alias", "alias/k", keyId]);
    writePolicy("policy.json", { ...DENY_ALICE, Id: "never-put" });
    await failed(
      [command, alias, ...rest],
      new RegExp(
        `^NotFoundException: Invalid keyId ${alias}: ${operation} takes a key id or key ARN, not an alias\n`,
      ),
    );
    // Nothing changed; the same command on the key id works.
    expect(await ok(["list-key-rotations", keyId])).toEqual({ rotations: [] });
    expect(await ok(["get-key-rotation-status", keyId])).toMatchObject({
      keyRotationEnabled: false,
    });
    expect(await ok(["get-key-policy", keyId])).not.toMatchObject({ Id: "never-put" });
    expect(await ok([command, keyId, ...rest])).toBeDefined();
  });
});

describe("--principal is the caller of every call", () => {
  it.each([
    ["enable-key-rotation", "KEY"],
    ["disable-key-rotation", "KEY"],
    ["get-key-rotation-status", "KEY"],
    ["rotate-key", "KEY"],
    ["list-key-rotations", "KEY"],
    ["get-key-policy", "KEY"],
    ["put-key-policy", "KEY", "--policy", "policy.json"],
    ["list-aliases", "--key", "alias/k"],
    ["update-alias", "alias/k", "OTHER"],
    ["delete-alias", "alias/k"],
  ])("%s %s", async (...argv) => {
    const { keyId } = await createKey();
    const other = await createKey();
    await ok(["create-alias", "alias/k", keyId]);
    await ok(["put-key-policy", keyId, "--policy", writePolicy("policy.json", DENY_ALICE)]);
    const args = argv.map((arg) => (arg === "OTHER" ? other.keyId : arg === "KEY" ? keyId : arg));
    await failed([...args, "--principal", ALICE], /^AccessDeniedException: /);
    // Nothing changed: no rotation or schedule, and the alias still names the key.
    expect(await ok(["list-key-rotations", keyId])).toEqual({ rotations: [] });
    expect(await ok(["get-key-rotation-status", keyId])).toMatchObject({
      keyRotationEnabled: false,
    });
    expect(await ok(["describe-key", "alias/k"])).toMatchObject({ keyId });
    expect(await ok(["get-key-policy", keyId])).toEqual(DENY_ALICE);
  });
});
