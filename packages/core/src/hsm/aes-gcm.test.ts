import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ValidationError } from "../errors.ts";
import {
  GCM_IV_LENGTH,
  GCM_TAG_LENGTH,
  gcmOpen,
  gcmOpenFrom,
  gcmSeal,
  gcmSealInto,
  gcmSealWithFreshIv,
  importAesKey,
} from "./aes-gcm.ts";

// Known-answer tests: test/vectors/README.md names the source of every vector.
interface EncryptVector {
  readonly name: string;
  readonly key: string;
  readonly iv: string;
  readonly aad: string;
  readonly pt: string;
  readonly ct: string;
  readonly tag: string;
}

interface DecryptVector {
  readonly name: string;
  readonly key: string;
  readonly iv: string;
  readonly aad: string;
  readonly ct: string;
  readonly tag: string;
  readonly pt?: string;
  readonly fail?: true;
}

const vectors = JSON.parse(
  readFileSync(new URL("../../test/vectors/aes-256-gcm.json", import.meta.url), "utf8"),
) as { encrypt: EncryptVector[]; decrypt: DecryptVector[] };

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("AES-256-GCM known answers (NIST / McGrew–Viega)", () => {
  it("loads a non-trivial vector set with FAIL cases", () => {
    expect(vectors.encrypt.length).toBeGreaterThanOrEqual(16);
    expect(vectors.decrypt.filter((v) => v.fail).length).toBeGreaterThanOrEqual(5);
    expect(vectors.decrypt.filter((v) => !v.fail).length).toBeGreaterThanOrEqual(5);
    expect(vectors.encrypt.some((v) => v.pt === "" && v.aad === "")).toBe(true);
    expect(vectors.encrypt.some((v) => v.pt === "" && v.aad !== "")).toBe(true);
  });

  describe.each(vectors.encrypt)("encrypt: $name", (v) => {
    it("gcmSeal yields ciphertext || tag", () => {
      const sealed = gcmSeal(importAesKey(hex(v.key)), hex(v.iv), hex(v.aad), hex(v.pt));
      expect(toHex(sealed)).toBe(v.ct + v.tag);
    });

    it("gcmSealInto writes ciphertext || tag at an offset and touches nothing else", () => {
      const pt = hex(v.pt);
      const out = new Uint8Array(7 + pt.length + GCM_TAG_LENGTH + 5).fill(0xa5);
      gcmSealInto(importAesKey(hex(v.key)), hex(v.iv), hex(v.aad), pt, out, 7);
      expect(toHex(out.subarray(7, 7 + pt.length + GCM_TAG_LENGTH))).toBe(v.ct + v.tag);
      expect([...out.subarray(0, 7), ...out.subarray(7 + pt.length + GCM_TAG_LENGTH)]).toEqual(
        new Array(12).fill(0xa5),
      );
    });

    it("gcmOpenFrom reads IV || ciphertext || tag at an offset, and rejects a flipped tag bit", () => {
      const key = importAesKey(hex(v.key));
      const sealed = hex(`a5a5a5${v.iv}${v.ct}${v.tag}`);
      const opened = gcmOpenFrom(key, hex(v.aad), sealed, 3);
      expect(opened && toHex(opened)).toBe(v.pt);
      sealed[sealed.length - 1]! ^= 0x01;
      expect(gcmOpenFrom(key, hex(v.aad), sealed, 3)).toBeUndefined();
    });

    it("gcmOpen recovers the plaintext and rejects a flipped tag bit", () => {
      const key = importAesKey(hex(v.key));
      const opened = gcmOpen(key, hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag));
      expect(opened && toHex(opened)).toBe(v.pt);
      const badTag = hex(v.tag);
      badTag[15]! ^= 0x01;
      expect(gcmOpen(key, hex(v.iv), hex(v.aad), hex(v.ct), badTag)).toBeUndefined();
    });
  });

  describe.each(vectors.decrypt)("decrypt: $name", (v) => {
    it(v.fail ? "fails authentication (returns undefined)" : "authenticates and decrypts", () => {
      const opened = gcmOpen(
        importAesKey(hex(v.key)),
        hex(v.iv),
        hex(v.aad),
        hex(v.ct),
        hex(v.tag),
      );
      if (v.fail) expect(opened).toBeUndefined();
      else expect(opened && toHex(opened)).toBe(v.pt);
      const from = gcmOpenFrom(importAesKey(hex(v.key)), hex(v.aad), hex(v.iv + v.ct + v.tag), 0);
      if (v.fail) expect(from).toBeUndefined();
      else expect(from && toHex(from)).toBe(v.pt);
    });
  });
});

describe("gcmSealWithFreshIv", () => {
  const v = vectors.encrypt.find((e) => e.pt.length >= 64 && e.aad !== "")!;

  it("writes IV || ciphertext || tag at an offset, touches nothing else, and opens", () => {
    const key = importAesKey(hex(v.key));
    const pt = hex(v.pt);
    const size = GCM_IV_LENGTH + pt.length + GCM_TAG_LENGTH;
    const out = new Uint8Array(5 + size + 3).fill(0xa5);
    gcmSealWithFreshIv(key, hex(v.aad), pt, out, 5);
    expect([...out.subarray(0, 5), ...out.subarray(5 + size)]).toEqual(new Array(8).fill(0xa5));
    const iv = out.subarray(5, 5 + GCM_IV_LENGTH);
    const opened = gcmOpen(
      key,
      iv,
      hex(v.aad),
      out.subarray(5 + GCM_IV_LENGTH, 5 + size - GCM_TAG_LENGTH),
      out.subarray(5 + size - GCM_TAG_LENGTH, 5 + size),
    );
    expect(opened && toHex(opened)).toBe(v.pt);
    expect(gcmOpenFrom(key, hex(v.aad), out.subarray(0, 5 + size), 5)).toEqual(Buffer.from(pt));
  });

  it("draws a new IV every call, across refills of the random pool", () => {
    const key = importAesKey(hex(v.key));
    const ivs = new Set<string>();
    const out = new Uint8Array(GCM_IV_LENGTH + 1 + GCM_TAG_LENGTH);
    // 16 KiB pools of 12-byte IVs: 4000 draws cross two refills.
    for (let i = 0; i < 4000; i++) {
      gcmSealWithFreshIv(key, new Uint8Array(0), Uint8Array.of(i & 0xff), out, 0);
      ivs.add(toHex(out.subarray(0, GCM_IV_LENGTH)));
    }
    expect(ivs.size).toBe(4000);
    expect(ivs.has("00".repeat(GCM_IV_LENGTH))).toBe(false);
  });

  it("gcmOpenFrom refuses input shorter than an IV and a tag", () => {
    const key = importAesKey(hex(v.key));
    expect(gcmOpenFrom(key, new Uint8Array(0), new Uint8Array(27), 0)).toBeUndefined();
    expect(gcmOpenFrom(key, new Uint8Array(0), new Uint8Array(30), 3)).toBeUndefined();
  });
});

describe("AES-GCM parameter checks", () => {
  const v = vectors.encrypt.find((e) => e.pt.length >= 64 && e.aad !== "")!;

  it("importAesKey accepts only 32 bytes and wipes the caller's copy", () => {
    expect(() => importAesKey(new Uint8Array(16))).toThrow(ValidationError);
    expect(() => importAesKey(new Uint8Array(33))).toThrow(ValidationError);
    const raw = hex(v.key);
    importAesKey(raw);
    expect(raw.every((b) => b === 0)).toBe(true);
  });

  it("rejects IVs other than 96 bits (McGrew–Viega cases 17/18 use 64- and 480-bit IVs)", () => {
    const key = importAesKey(hex(v.key));
    for (const length of [8, 11, 13, 16, 60]) {
      expect(() => gcmSeal(key, new Uint8Array(length), hex(v.aad), hex(v.pt))).toThrow(
        ValidationError,
      );
      expect(
        gcmOpen(key, new Uint8Array(length), hex(v.aad), hex(v.ct), hex(v.tag)),
      ).toBeUndefined();
    }
  });

  it("rejects truncated tags instead of verifying a prefix", () => {
    const key = importAesKey(hex(v.key));
    for (const length of [0, 4, 8, 12, 15]) {
      expect(
        gcmOpen(key, hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag).subarray(0, length)),
      ).toBeUndefined();
    }
  });

  it("fails when the AAD, IV, ciphertext or key differ by one bit", () => {
    const flip = (s: string, bit: number): Uint8Array => {
      const b = hex(s);
      b[bit >> 3]! ^= 1 << (bit & 7);
      return b;
    };
    const key = importAesKey(hex(v.key));
    expect(gcmOpen(key, hex(v.iv), flip(v.aad, 3), hex(v.ct), hex(v.tag))).toBeUndefined();
    expect(gcmOpen(key, flip(v.iv, 90), hex(v.aad), hex(v.ct), hex(v.tag))).toBeUndefined();
    expect(gcmOpen(key, hex(v.iv), hex(v.aad), flip(v.ct, 200), hex(v.tag))).toBeUndefined();
    const otherKey = importAesKey(flip(v.key, 0));
    expect(gcmOpen(otherKey, hex(v.iv), hex(v.aad), hex(v.ct), hex(v.tag))).toBeUndefined();
  });
});
