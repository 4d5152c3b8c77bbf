import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { plaintext, type RunResult, run, workspace } from "./helpers.ts";

const ws = workspace();
afterAll(() => ws.dispose());

it("the data dir's kms.db and the command output never hold plaintext or the root key", async () => {
  const opts = { cwd: ws.dir, env: ws.env };
  const outputs: RunResult[] = [];
  const step = async (argv: string[], extra: { stdin?: Buffer; ttyStderr?: boolean } = {}) => {
    const result = await run(argv, { ...opts, ...extra });
    outputs.push(result);
    return result;
  };
  const data = plaintext(300_000, "TOP-SECRET-PAYLOAD");
  writeFileSync(join(ws.dir, "data"), data);

  const { keyId } = JSON.parse((await step(["create-key", "--description", "scan"])).out);
  await step(["create-alias", "alias/scan", keyId]);
  await step(["list-keys"]);
  await step(["describe-key", "alias/scan"]);
  await step([
    "encrypt",
    "--key",
    "alias/scan",
    "--in",
    "data",
    "--out",
    "data.kms",
    "--context",
    "t=1",
    "--progress",
  ]);
  await step(["encrypt", "--key", keyId, "--in", "-", "--out", "pipe.kms"], { stdin: data });
  await step(["decrypt", "--in", "data.kms", "--out", "data.out", "--context", "t=1"], {
    ttyStderr: true,
  });
  await step(["decrypt", "--in", "data.kms", "--out", "bad.out", "--context", "t=2"]);
  await step([
    "decrypt",
    "--in",
    "pipe.kms",
    "--out",
    "bad.out",
    "--allow-key",
    "00000000-0000-0000-0000-000000000000",
  ]);
  await step(["disable-key", keyId]);
  await step(["encrypt", "--key", keyId, "--in", "data", "--out", "x.kms"]);
  await step(["decrypt", "--in", "data.kms", "--out", "bad.out"]);
  expect(outputs.map((o) => o.code)).toEqual([0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1]);
  expect(readFileSync(join(ws.dir, "data.out")).equals(data)).toBe(true);

  const store = Buffer.concat(
    ["kms.db", "kms.db-wal", "kms.db-shm"]
      .map((name) => join(ws.dir, ".kms", name))
      .filter((path) => existsSync(path))
      .map((path) => readFileSync(path)),
  );
  // The scan would be empty proof if nothing was recorded: the audit trail is in the same file.
  expect(store.includes(Buffer.from("GenerateDataKey"))).toBe(true);
  expect(store.includes(Buffer.from(keyId))).toBe(true);

  const printed = Buffer.concat(outputs.flatMap((o) => [o.stdout, Buffer.from(o.err)]));
  const secrets: [string, Buffer][] = [
    ["plaintext marker", Buffer.from("TOP-SECRET-PAYLOAD")],
    ["plaintext middle", data.subarray(150_000, 150_032)],
    ["root key bytes", ws.rootKey],
    ["root key hex", Buffer.from(ws.rootKey.toString("hex"))],
    ["root key HEX", Buffer.from(ws.rootKey.toString("hex").toUpperCase())],
    ["root key base64", Buffer.from(ws.rootKey.toString("base64"))],
  ];
  for (const [name, secret] of secrets) {
    expect(store.includes(secret), `${name} in kms.db`).toBe(false);
    expect(printed.includes(secret), `${name} in output`).toBe(false);
  }
});
