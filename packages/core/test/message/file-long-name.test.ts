/**
 * An `out` whose name is near the 255-byte limit of common file systems: valid itself, it must
 * be writable, so the temporary file beside it (`<out>.<12 hex>.partial`, 21 bytes longer) takes
 * a shortened name — in the same directory, still ending in `.partial`, cut at a character
 * boundary.
 */
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decryptFile, encryptFile } from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

let dir: string;
const keyring = aesKeyring();
// Several 64 KiB reads, so progress is reported while the temporary file exists.
const plaintext = randomBytes(256 * 1024);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-file-long-name-"));
  await writeFile(join(dir, "plain"), plaintext);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** The `.partial` names seen in `folder` each time progress was reported. */
function temporaries(folder: string): { names: Set<string>; onProgress: () => void } {
  const names = new Set<string>();
  return {
    names,
    onProgress: () => {
      for (const name of readdirSync(folder)) if (name.endsWith(".partial")) names.add(name);
    },
  };
}

describe.each([
  ["ASCII", `${"a".repeat(250)}.kms`, `${"a".repeat(250)}.out`],
  // Multi-byte characters (and UTF-16 surrogate pairs): a cut must not split one.
  ["2-byte UTF-8", `${"é".repeat(125)}.kms`, `${"é".repeat(125)}.out`],
  ["4-byte UTF-8", `${"😀".repeat(62)}.kms`, `${"😀".repeat(62)}.out`],
])("a %s name of over 250 bytes", (_kind, encrypted, decrypted) => {
  it("encryptFile and decryptFile write it, through a temporary name within the limit", async () => {
    expect(Buffer.byteLength(encrypted)).toBeGreaterThanOrEqual(252);
    expect(Buffer.byteLength(encrypted)).toBeLessThanOrEqual(255);
    const folder = await mkdtemp(join(dir, "case-"));
    const seen = temporaries(folder);
    await encryptFile({
      in: join(dir, "plain"),
      out: join(folder, encrypted),
      keyring,
      onProgress: seen.onProgress,
    });
    const result = await decryptFile({
      in: join(folder, encrypted),
      out: join(folder, decrypted),
      keyring,
      onProgress: seen.onProgress,
    });
    expect(result.bytesRead).toBeGreaterThan(plaintext.length);
    expect((await readFile(join(folder, decrypted))).equals(plaintext)).toBe(true);
    expect(seen.names.size).toBe(2);
    for (const name of seen.names) {
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
      expect(name).toMatch(/\.[0-9a-f]{12}\.partial$/);
      // Recognisable: the start of the output's name, whole characters only (a split pair
      // would not survive the round trip through UTF-8).
      const base = name.replace(/\.[0-9a-f]{12}\.partial$/, "");
      expect(base.length).toBeGreaterThan(100);
      expect(encrypted.startsWith(base)).toBe(true);
      expect(Buffer.from(base).toString()).toBe(base);
    }
    // Nothing left behind.
    expect(readdirSync(folder).sort()).toEqual([encrypted, decrypted].sort());
  });
});

it("a short name keeps the whole of it: `<out>.<12 hex>.partial`", async () => {
  const folder = await mkdtemp(join(dir, "case-"));
  const seen = temporaries(folder);
  await encryptFile({
    in: join(dir, "plain"),
    out: join(folder, "short.kms"),
    keyring,
    onProgress: seen.onProgress,
  });
  expect([...seen.names]).toEqual([expect.stringMatching(/^short\.kms\.[0-9a-f]{12}\.partial$/)]);
});
