import { createHmac, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { hmacSha256, takesText } from "./hmac-sha256.ts";

const hex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "hex"));

describe("hmacSha256", () => {
  // RFC 4231 §4.2 (test case 1), §4.3 (2) and §4.7 (6: a key longer than the block).
  it.each([
    {
      key: hex("0b".repeat(20)),
      data: new TextEncoder().encode("Hi There"),
      mac: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    },
    {
      key: new TextEncoder().encode("Jefe"),
      data: new TextEncoder().encode("what do ya want for nothing?"),
      mac: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    },
    {
      key: hex("aa".repeat(131)),
      data: new TextEncoder().encode("Test Using Larger Than Block-Size Key - Hash Key First"),
      mac: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    },
  ])("matches RFC 4231 vector $mac", ({ key, data, mac }) => {
    expect(Buffer.from(hmacSha256(key).mac(data)).toString("hex")).toBe(mac);
    expect(hmacSha256(key).matches(data, hex(mac))).toBe(true);
  });

  it("agrees with createHmac for keys and messages around the block and scratch sizes", () => {
    for (const keyLength of [32, 63, 64, 65, 200]) {
      const key = randomBytes(keyLength);
      const hmac = hmacSha256(key);
      for (const length of [0, 1, 300, 1983, 1984, 1985, 5000, 1]) {
        const message = randomBytes(length);
        const expected = createHmac("sha256", key).update(message).digest();
        expect(Buffer.from(hmac.mac(message)).equals(expected)).toBe(true);
        expect(hmac.matches(message, expected)).toBe(true);
      }
    }
  });

  it("MACs text as its UTF-8 bytes, short or past the scratch buffer", () => {
    const key = randomBytes(32);
    const hmac = hmacSha256(key);
    for (const text of [
      "",
      "a",
      '"@method": GET',
      "é€𝄞".repeat(200),
      "x".repeat(1984),
      "y".repeat(5000),
    ]) {
      const expected = createHmac("sha256", key).update(text, "utf8").digest();
      expect(Buffer.from(hmac.mac(text)).equals(expected)).toBe(true);
      expect(hmac.matches(text, expected)).toBe(true);
      expect(hmac.matches(`${text}.`, expected)).toBe(false);
    }
    expect(takesText(hmac.mac) && takesText(hmac.matches)).toBe(true);
    expect(takesText((bytes: Uint8Array) => bytes)).toBe(false);
  });

  it("refuses a tag that differs in one bit or in length", () => {
    const hmac = hmacSha256(randomBytes(32));
    const message = new TextEncoder().encode('"@method": GET');
    const tag = hmac.mac(message);
    const flipped = Uint8Array.from(tag);
    flipped[31] = (flipped[31] as number) ^ 1;
    expect(hmac.matches(message, flipped)).toBe(false);
    expect(hmac.matches(message, tag.subarray(0, 31))).toBe(false);
    expect(hmac.matches(message, new Uint8Array([...tag, 0]))).toBe(false);
    expect(hmac.matches(message, new Uint8Array(0))).toBe(false);
  });

  it("returns a tag the caller owns and keeps no state from a long message", () => {
    const hmac = hmacSha256(randomBytes(32));
    const first = hmac.mac(new Uint8Array([1]));
    const copy = Uint8Array.from(first);
    hmac.mac(randomBytes(4000));
    hmac.mac(new Uint8Array([2]));
    expect(first).toEqual(copy);
    expect(hmac.mac(new Uint8Array([1]))).toEqual(copy);
    // Its own bytes, not a view into a buffer shared with anything else.
    expect(first.buffer.byteLength).toBe(32);
  });

  it("is not changed by a later change to the caller's secret", () => {
    const secret = randomBytes(32);
    const hmac = hmacSha256(secret);
    const before = hmac.mac(new Uint8Array([7]));
    secret.fill(0);
    expect(hmac.mac(new Uint8Array([7]))).toEqual(before);
  });

  it("MACs any other ArrayBuffer view as its bytes, as createHmac does, and refuses the rest", () => {
    const key = randomBytes(32);
    const hmac = hmacSha256(key);
    const bytes = randomBytes(40);
    const expected = createHmac("sha256", key).update(bytes).digest();
    const dataView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const words = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    // Untyped callers: a DataView once MACed as no bytes at all, one tag for every message.
    const untyped = hmac as unknown as {
      mac(message: unknown): Uint8Array;
      matches(message: unknown, tag: Uint8Array): boolean;
    };
    expect(Buffer.from(untyped.mac(dataView)).equals(expected)).toBe(true);
    expect(Buffer.from(untyped.mac(words)).equals(expected)).toBe(true);
    const other = new DataView(randomBytes(40).buffer);
    expect(untyped.matches(other, untyped.mac(dataView))).toBe(false);
    for (const wrong of [bytes.buffer, 7, {}, [1, 2, 3], null]) {
      expect(() => untyped.mac(wrong)).toThrow(TypeError);
    }
  });
});
