// The README's Example, run as written through runCli (in a temporary directory, with the
// key id the first command printed, and stdin/stdout standing in for the pg_dump/psql pipe),
// so the documentation cannot rot.
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { EXIT_OK } from "../src/index.ts";
import { run, workspace } from "./helpers.ts";

const ws = workspace();
const opts = { cwd: ws.dir, env: ws.env };
afterAll(() => ws.dispose());

it("creates a key and alias, and round-trips a file and a pipe under a context", async () => {
  const created = await run(["create-key", "--description", "backups"], opts);
  expect(created.code).toBe(EXIT_OK);
  const key = JSON.parse(created.out) as { keyId: string; description: string };
  expect(key.description).toBe("backups");

  expect((await run(["create-alias", "alias/backups", key.keyId], opts)).code).toBe(EXIT_OK);

  const dump = randomBytes(200_000);
  writeFileSync(join(ws.dir, "db.dump"), dump);
  const encrypted = await run(
    "encrypt --key alias/backups --in db.dump --out db.dump.kms --context purpose=backup".split(
      " ",
    ),
    opts,
  );
  expect(encrypted.code).toBe(EXIT_OK);
  expect(JSON.parse(encrypted.out)).toMatchObject({ plaintextBytes: dump.length });

  const decrypt =
    "decrypt --in db.dump.kms --out db.restored --context purpose=backup --allow-key alias/backups";
  const decrypted = await run(decrypt.split(" "), opts);
  expect(decrypted.code).toBe(EXIT_OK);
  expect(JSON.parse(decrypted.out)).toMatchObject({ encryptionContext: { purpose: "backup" } });
  expect(readFileSync(join(ws.dir, "db.restored")).equals(dump)).toBe(true);

  const sql = new TextEncoder().encode("CREATE TABLE t (id int);\n");
  const sealed = await run("encrypt --key alias/backups --in - --out -".split(" "), {
    ...opts,
    stdin: sql,
  });
  expect(sealed.code).toBe(EXIT_OK);
  const opened = await run("decrypt --in - --out -".split(" "), { ...opts, stdin: sealed.stdout });
  expect(opened.code).toBe(EXIT_OK);
  expect(opened.out).toBe("CREATE TABLE t (id int);\n");
});

it("refuses to decrypt under another context", async () => {
  const wrong = await run(
    "decrypt --in db.dump.kms --out other --context purpose=restore".split(" "),
    opts,
  );
  expect(wrong.code).toBe(1);
  expect(wrong.err).toMatch(/^InvalidCiphertextException: /);
});
