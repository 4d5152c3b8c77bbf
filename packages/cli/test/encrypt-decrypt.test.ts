import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initializedWorkspace, plaintext, type RunResult, run } from "./helpers.ts";

const ws = await initializedWorkspace();
const opts = { cwd: ws.dir, env: ws.env };
let keyId: string;
let otherKeyId: string;

beforeAll(async () => {
  const created = await run(["create-key", "--description", "files"], opts);
  expect(created.code).toBe(0);
  keyId = JSON.parse(created.out).keyId;
  otherKeyId = JSON.parse((await run(["create-key"], opts)).out).keyId;
  expect((await run(["create-alias", "alias/files", keyId], opts)).code).toBe(0);
});
afterAll(() => ws.dispose());

function leftovers(): string[] {
  return readdirSync(ws.dir).filter((name) => name.endsWith(".partial"));
}

/** Runs a command that must fail with exit 1 and `error` on stderr, leaving nothing at `--out`. */
async function refused(argv: string[], error: RegExp, stdin?: Buffer): Promise<RunResult> {
  const result = await run(argv, stdin === undefined ? opts : { ...opts, stdin });
  expect(result.code).toBe(1);
  expect(result.err).toMatch(error);
  expect(existsSync(join(ws.dir, argv[argv.indexOf("--out") + 1] as string))).toBe(false);
  return result;
}

describe("encrypt → decrypt round trip", () => {
  const context = ["--context", "purpose=test", "--context", "size=x=y"];

  // Frame size 1024: empty, one byte, one short of a frame, exact frames, one past.
  it.each([0, 1, 1023, 1024, 1025, 2048, 3073])("%i bytes", async (size) => {
    const data = plaintext(size);
    writeFileSync(join(ws.dir, `p${size}`), data);
    const enc = await run(
      [
        "encrypt",
        "--key",
        "alias/files",
        "--in",
        `p${size}`,
        "--out",
        `p${size}.kms`,
        ...context,
        "--frame-size",
        "1024",
      ],
      opts,
    );
    expect(enc.err).toBe("");
    expect(enc.code).toBe(0);
    expect(JSON.parse(enc.out)).toMatchObject({ plaintextBytes: size });
    const sealed = readFileSync(join(ws.dir, `p${size}.kms`));
    if (size > 20) expect(sealed.includes(data.subarray(0, 20))).toBe(false);

    const dec = await run(
      ["decrypt", "--in", `p${size}.kms`, "--out", `p${size}.out`, ...context],
      opts,
    );
    expect(dec.code).toBe(0);
    const info = JSON.parse(dec.out);
    expect(info).toMatchObject({
      plaintextBytes: size,
      ciphertextBytes: sealed.length,
      frameLength: 1024,
      encryptionContext: { purpose: "test", size: "x=y" },
    });
    expect(info.keys).toEqual([expect.stringMatching(new RegExp(`:key/${keyId}$`))]);
    expect(readFileSync(join(ws.dir, `p${size}.out`)).equals(data)).toBe(true);
  });

  it("streams stdin to stdout both ways", async () => {
    const data = plaintext(5000);
    const enc = await run(
      ["encrypt", "--key", keyId, "--in", "-", "--out", "-", "--frame-size", "1024"],
      { ...opts, stdin: data },
    );
    expect(enc.code).toBe(0);
    expect(enc.stdout.includes(data.subarray(0, 30))).toBe(false);
    const dec = await run(["decrypt", "--in", "-", "--out", "-"], { ...opts, stdin: enc.stdout });
    expect(dec.code).toBe(0);
    expect(dec.stdout.equals(data)).toBe(true);
  });

  it("reads stdin into a file and a file to stdout", async () => {
    const data = plaintext(3000);
    const enc = await run(["encrypt", "--key", keyId, "--in", "-", "--out", "s.kms"], {
      ...opts,
      stdin: data,
    });
    expect(enc.code).toBe(0);
    expect(JSON.parse(enc.out)).toMatchObject({ plaintextBytes: 3000 });
    const dec = await run(["decrypt", "--in", "s.kms", "--out", "-"], opts);
    expect(dec.code).toBe(0);
    expect(dec.stdout.equals(data)).toBe(true);
  });
});

describe("decrypt refusals", () => {
  const sealed = "secret.kms";
  beforeAll(async () => {
    writeFileSync(join(ws.dir, "secret"), plaintext(4000));
    const enc = await run(["encrypt", "--key", keyId, "--in", "secret", "--out", sealed], opts);
    expect(enc.code).toBe(0);
    // Adding the context afterwards would change nothing: encrypt a second one with context.
    const withContext = await run(
      ["encrypt", "--key", keyId, "--in", "secret", "--out", "ctx.kms", "--context", "tenant=a"],
      opts,
    );
    expect(withContext.code).toBe(0);
  });

  it("a wrong --context is InvalidCiphertextException, exit 1, no output file", async () => {
    const dec = await refused(
      ["decrypt", "--in", "ctx.kms", "--out", "wrong.out", "--context", "tenant=b"],
      /^InvalidCiphertextException: /,
    );
    expect(dec.out).toBe("");
    expect(leftovers()).toEqual([]);
  });

  it("a missing --context pair is the same failure (exact match, as KMS Decrypt)", async () => {
    await refused(
      ["decrypt", "--in", "ctx.kms", "--out", "wrong.out", "--context", "other=a"],
      /^InvalidCiphertextException: /,
    );
  });

  it("a wrong --context on stdin → file leaves no output file either", async () => {
    await refused(
      ["decrypt", "--in", "-", "--out", "wrong.out", "--context", "tenant=b"],
      /^InvalidCiphertextException: /,
      readFileSync(join(ws.dir, "ctx.kms")),
    );
    expect(leftovers()).toEqual([]);
  });

  it("--max-frame-size below the message's frame length is AccessDeniedException", async () => {
    await refused(
      ["decrypt", "--in", sealed, "--out", "big.out", "--max-frame-size", "65535"],
      /^AccessDeniedException: the message's frames are 65536 bytes; the decrypt policy allows at most 65535\n$/,
    );
    const ok = await run(
      ["decrypt", "--in", sealed, "--out", "big.out", "--max-frame-size", "65536"],
      opts,
    );
    expect(ok.code).toBe(0);
    expect(readFileSync(join(ws.dir, "big.out")).equals(readFileSync(join(ws.dir, "secret")))).toBe(
      true,
    );
  });

  it("a tampered message is InvalidCiphertextException and leaves nothing", async () => {
    const bytes = readFileSync(join(ws.dir, sealed));
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 1;
    writeFileSync(join(ws.dir, "tampered.kms"), bytes);
    await refused(
      ["decrypt", "--in", "tampered.kms", "--out", "tampered.out"],
      /^InvalidCiphertextException: /,
    );
    expect(leftovers()).toEqual([]);
  });

  it("--require-context refuses a message without the pair (AccessDeniedException)", async () => {
    await refused(
      ["decrypt", "--in", "ctx.kms", "--out", "req.out", "--require-context", "tenant=b"],
      /^AccessDeniedException: .*encryption context key "tenant"/,
    );
    const ok = await run(
      ["decrypt", "--in", "ctx.kms", "--out", "req.out", "--require-context", "tenant=a"],
      opts,
    );
    expect(ok.code).toBe(0);
  });

  const decryptAllowing = (...keys: string[]) =>
    run(
      [
        "decrypt",
        "--in",
        sealed,
        "--out",
        "allow.out",
        "--force",
        ...keys.flatMap((k) => ["--allow-key", k]),
      ],
      opts,
    );

  it("--allow-key with another key is refused with AccessDeniedException", async () => {
    const dec = await decryptAllowing(otherKeyId);
    expect(dec.code).toBe(1);
    expect(dec.err).toBe(
      "AccessDeniedException: none of the message's encrypted data keys is under a key the decrypt policy allows\n",
    );
    expect(existsSync(join(ws.dir, "allow.out"))).toBe(false);
  });

  it("--allow-key naming no key fails with NotFoundException before reading the message", async () => {
    const dec = await decryptAllowing("alias/typo", keyId);
    expect(dec.code).toBe(1);
    expect(dec.err).toMatch(/^NotFoundException: .*alias\/typo/);
    expect(existsSync(join(ws.dir, "allow.out"))).toBe(false);
  });

  it("--allow-key accepts the key by id, ARN or alias", async () => {
    const arn = JSON.parse((await run(["describe-key", keyId], opts)).out).arn as string;
    for (const allowed of [keyId, arn, "alias/files"]) {
      const dec = await decryptAllowing(otherKeyId, allowed);
      expect(dec.code).toBe(0);
    }
  });

  // Encrypt names the reason; decrypt stays generic, because the keyring tries every copy of
  // the data key and reports only that none opened (core's no-oracle rule).
  it("a disabled key fails encrypt (DisabledException) and decrypt until enabled again", async () => {
    const disabled = await run(["disable-key", keyId], opts);
    expect(disabled.code).toBe(0);
    expect(JSON.parse(disabled.out)).toEqual({ keyId, keyState: "Disabled" });
    await refused(
      ["encrypt", "--key", keyId, "--in", "secret", "--out", "d.kms"],
      /^DisabledException: /,
    );
    await refused(["decrypt", "--in", sealed, "--out", "d.out"], /^InvalidCiphertextException: /);
    expect(leftovers()).toEqual([]);

    expect((await run(["enable-key", keyId], opts)).code).toBe(0);
    expect((await run(["decrypt", "--in", sealed, "--out", "d.out"], opts)).code).toBe(0);
  });

  it("a missing input file fails with exit 1 and names it", async () => {
    const dec = await run(["decrypt", "--in", "nope.kms", "--out", "x.out"], opts);
    expect(dec.code).toBe(1);
    expect(dec.err).toMatch(/ENOENT.*nope\.kms/);
  });

  it("refuses to read and replace the same file", async () => {
    const dec = await run(["decrypt", "--in", sealed, "--out", `./${sealed}`], opts);
    expect(dec.code).toBe(2);
    expect(readFileSync(join(ws.dir, sealed)).length).toBeGreaterThan(0);
  });
});
