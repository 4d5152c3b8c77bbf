import { createCipheriv, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { gcmOpen, gcmSeal, gcmSealInto, importAesKey } from "./aes-gcm.ts";

// The blob path feeds the header and the encoded context to GCM as two AAD updates instead of
// concatenating them; these tests pin that this equals one AAD of the concatenation.
describe("AAD in two updates", () => {
  const raw = randomBytes(32);
  const iv = randomBytes(12);
  const header = randomBytes(22);
  const context = encodeEncryptionContext({ tenant: "acme", table: "patients" });
  const plaintext = randomBytes(100);

  it("produces the same ciphertext and tag as one concatenated AAD (OpenSSL reference)", () => {
    const reference = createCipheriv("aes-256-gcm", raw, iv);
    reference.setAAD(Buffer.concat([header, context]));
    const expected = Buffer.concat([
      reference.update(plaintext),
      reference.final(),
      reference.getAuthTag(),
    ]);
    const out = new Uint8Array(plaintext.length + 16);
    gcmSealInto(importAesKey(Uint8Array.from(raw)), iv, header, plaintext, out, 0, context);
    expect(Buffer.from(out).equals(expected)).toBe(true);
  });

  it("opens only with the same split, and rejects a moved boundary's content change", () => {
    const key = importAesKey(Uint8Array.from(raw));
    const sealed = gcmSeal(key, iv, Buffer.concat([header, context]), plaintext);
    const ct = sealed.subarray(0, plaintext.length);
    const tag = sealed.subarray(plaintext.length);
    expect(gcmOpen(key, iv, header, ct, tag, context)).toEqual(new Uint8Array(plaintext));
    const otherContext = encodeEncryptionContext({ tenant: "acmf", table: "patients" });
    expect(gcmOpen(key, iv, header, ct, tag, otherContext)).toBeUndefined();
  });
});

describe("canonical context order", () => {
  it("sorts keys by UTF-8 bytes, not UTF-16 code units", () => {
    // U+FF5E sorts after U+1F600 in UTF-16 code units (0xFF5E > 0xD83D) but before it in UTF-8
    // bytes (EF BD 9E < F0 9F 98 80).
    const encoded = encodeEncryptionContext({ "\u{1F600}": "a", "\uFF5E": "b" });
    const firstKeyLength = (encoded[2]! << 8) | encoded[3]!;
    expect(Buffer.from(encoded.subarray(4, 4 + firstKeyLength)).toString("utf8")).toBe("\uFF5E");
  });
});
