import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, RootKeySource } from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { afterAll, describe, expect, it } from "vitest";
import { walkthrough } from "../src/walkthrough.ts";

/** The event count that step 10 prints: the whole trail in keys.db, all runs so far. */
function trailLength(line: string | undefined): number {
  const match = /the audit trail in .*keys\.db: (\d+) event\(s\), hash chain intact; /.exec(
    line ?? "",
  );
  if (match === null) throw new Error(`not an intact audit trail: ${line}`);
  return Number(match[1]);
}

describe("demo walkthrough", () => {
  const folder = mkdtempSync(join(tmpdir(), "kms-demo-"));
  let firstTrail = 0;
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it("walks a key through its life and refuses what it must", async () => {
    const lines: string[] = [];
    await walkthrough(folder, (line) => lines.push(line));
    expect(lines).toHaveLength(11);
    expect(lines[4]).toContain('decrypted the pre-rotation ciphertext: "123-45-6789"');
    expect(lines[5]).toContain("InvalidCiphertextException");
    expect(lines[6]).toContain("DisabledException");
    expect(lines[8]).toContain("the key is Disabled");
    expect(lines.join("\n")).not.toContain("UNEXPECTED");
    // Both refusals above are in the trail, with their codes.
    expect(lines[10]).toMatch(
      /this key's refused calls: Decrypt InvalidCiphertextException, Decrypt DisabledException$/,
    );
    firstTrail = trailLength(lines[10]);
    expect(firstTrail).toBeGreaterThan(10);
  });

  it("reopens the same store with the same development root key", async () => {
    const lines: string[] = [];
    await walkthrough(folder, (line) => lines.push(line));
    expect(lines[9]).toContain("holds 2 key(s)");
    // The trail is kept in keys.db: the second run's calls extend the first run's chain.
    expect(trailLength(lines[10])).toBe(2 * firstTrail);
  });

  it("leaves no plaintext in the key store file, audit trail included", () => {
    const files = ["keys.db", "keys.db-wal"].map((name) => join(folder, name));
    const bytes = Buffer.concat(files.filter((f) => existsSync(f)).map((f) => readFileSync(f)));
    // The scan works: what is stored in the clear (a key's description, a context) is found.
    expect(bytes.includes(Buffer.from("patient records"))).toBe(true);
    expect(bytes.includes(Buffer.from('"tenant":"acme"'))).toBe(true);
    expect(bytes.includes(Buffer.from("123-45-6789"))).toBe(false);
  });
});

describe("demo walkthrough on a store of many keys", () => {
  const folder = mkdtempSync(join(tmpdir(), "kms-demo-many-"));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  // listKeys answers 100 keys a page by default: a count of one page would stop at 100 after
  // the hundredth run of the demo.
  it("counts every key in the store, not one page of them", async () => {
    const store = SqliteKeyStore.open({ path: join(folder, "keys.db") });
    const kms = await createKms({
      store,
      rootKey: RootKeySource.devFile(join(folder, "root.key")),
    });
    try {
      for (let i = 0; i < 100; i++) await kms.createKey();
    } finally {
      await kms.close();
    }
    const lines: string[] = [];
    await walkthrough(folder, (line) => lines.push(line));
    expect(lines[9]).toContain("holds 101 key(s)");
  });
});
