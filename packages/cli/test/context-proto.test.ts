/**
 * `--context` and `--require-context` keep every pair as given, `__proto__=…` too. Assigned into
 * a plain object, that key sets the prototype instead, and the pair was silently dropped: the
 * message carried no context, and a required pair was not required.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
let keyId: string;

beforeAll(async () => {
  keyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  writeFileSync(join(ws.dir, "plain"), "hello");
  writeFileSync(join(ws.dir, "plain2"), "hello");
  const encrypted = await run(
    ["encrypt", "--key", keyId, "--in", "plain", "--out", "proto.kms"].concat([
      "--context",
      "__proto__=tenant-a",
      "--context",
      "constructor=x",
    ]),
    opts,
  );
  expect(encrypted.code).toBe(0);
  const bare = await run(["encrypt", "--key", keyId, "--in", "plain2", "--out", "bare.kms"], opts);
  expect(bare.code).toBe(0);
});
afterAll(() => ws.dispose());

describe("a __proto__ pair", () => {
  it("--context on encrypt puts it in the message", async () => {
    const result = await run(["decrypt", "--in", "proto.kms", "--out", "p1"], opts);
    expect(result.code).toBe(0);
    const context = JSON.parse(result.out).encryptionContext;
    expect(Object.entries(context)).toEqual([
      ["__proto__", "tenant-a"],
      ["constructor", "x"],
    ]);
  });

  it("--context on decrypt is matched exactly, that pair included", async () => {
    const exact = ["--context", "__proto__=tenant-a", "--context", "constructor=x"];
    expect((await run(["decrypt", "--in", "proto.kms", "--out", "p2", ...exact], opts)).code).toBe(
      0,
    );
    const wrong = ["--context", "__proto__=tenant-b", "--context", "constructor=x"];
    const refused = await run(["decrypt", "--in", "proto.kms", "--out", "p3", ...wrong], opts);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^InvalidCiphertextException/);
    // Without it the context is {constructor: x}, not the message's.
    const partial = await run(
      ["decrypt", "--in", "proto.kms", "--out", "p4", "--context", "constructor=x"],
      opts,
    );
    expect(partial.code).toBe(1);
  });

  it("--require-context refuses a message without it, and accepts one with it", async () => {
    const missing = await run(
      ["decrypt", "--in", "bare.kms", "--out", "p5", "--require-context", "__proto__=tenant-b"],
      opts,
    );
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^AccessDeniedException: .*"__proto__"/);
    const other = await run(
      ["decrypt", "--in", "proto.kms", "--out", "p6", "--require-context", "__proto__=tenant-b"],
      opts,
    );
    expect(other.code).toBe(1);
    expect(other.err).toMatch(/^AccessDeniedException/);
    const present = await run(
      ["decrypt", "--in", "proto.kms", "--out", "p7", "--require-context", "__proto__=tenant-a"],
      opts,
    );
    expect(present.code).toBe(0);
  });

  it("given twice is refused like any other key", async () => {
    const twice = await run(
      ["decrypt", "--in", "proto.kms", "--out", "p8"].concat([
        "--require-context",
        "__proto__=a",
        "--require-context",
        "__proto__=b",
      ]),
      opts,
    );
    expect(twice.code).toBe(2);
    expect(twice.err).toMatch(/names "__proto__" twice/);
  });
});
