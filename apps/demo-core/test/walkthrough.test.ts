import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { walkthrough } from "../src/walkthrough.ts";

describe("demo walkthrough", () => {
  const folder = mkdtempSync(join(tmpdir(), "kms-demo-"));
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it("walks a key through its life and refuses what it must", async () => {
    const lines: string[] = [];
    await walkthrough(folder, (line) => lines.push(line));
    expect(lines).toHaveLength(10);
    expect(lines[4]).toContain('decrypted the pre-rotation ciphertext: "123-45-6789"');
    expect(lines[5]).toContain("InvalidCiphertextException");
    expect(lines[6]).toContain("DisabledException");
    expect(lines[8]).toContain("the key is Disabled");
    expect(lines.join("\n")).not.toContain("UNEXPECTED");
  });

  it("reopens the same store with the same development root key", async () => {
    const lines: string[] = [];
    await walkthrough(folder, (line) => lines.push(line));
    expect(lines[9]).toContain("holds 2 key(s)");
  });

  it("leaves no plaintext in the key store file", () => {
    const bytes = readFileSync(join(folder, "keys.db"));
    expect(bytes.includes(Buffer.from("123-45-6789"))).toBe(false);
  });
});
