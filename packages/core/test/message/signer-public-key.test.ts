/**
 * The signer's public key in a signed message's context (docs/FORMAT.md §5.8) has one spelling:
 * standard padded base64 of the SEC 1 compressed point on the suite's curve. The reader refuses
 * every other text, so one signer key is never shown to a caller under two different texts.
 */
import { createSign, createVerify, ECDH } from "node:crypto";
import { describe, expect, it } from "vitest";
import { InvalidCiphertextError } from "../../src/index.ts";
import { SUITES } from "../../src/message/format.ts";
import { generateSigningKey, importVerifyingKey } from "../../src/message/signature.ts";

const SPECS = SUITES.flatMap((suite) =>
  suite.signature === undefined ? [] : [[suite.signature.curve, suite.signature] as const],
);
const OPENSSL_CURVE = { "P-384": "secp384r1", "P-256": "prime256v1" } as const;
const FIELD_PRIME = {
  "P-384": 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
  "P-256": 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
} as const;
const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const base64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

/** Whether OpenSSL finds a point with this x (and y of the given parity) on the curve. */
function decompresses(curve: keyof typeof OPENSSL_CURVE, compressed: Uint8Array): boolean {
  try {
    ECDH.convertKey(compressed, OPENSSL_CURVE[curve], undefined, undefined, "uncompressed");
    return true;
  } catch {
    return false;
  }
}

function xBytes(x: bigint, size: number): Uint8Array {
  return new Uint8Array(Buffer.from(x.toString(16).padStart(2 * size, "0"), "hex"));
}

describe.each(SPECS)("the signer's public key on %s (FORMAT §5.8)", (curve, spec) => {
  const size = curve === "P-384" ? 48 : 32;
  const otherCurve = SPECS.find(([name]) => name !== curve)![1];

  // A key whose text holds "+" or "/", so its base64url spelling differs.
  let key = generateSigningKey(spec);
  while (!/[+/]/.test(key.publicKey)) key = generateSigningKey(spec);
  const compressed = new Uint8Array(Buffer.from(key.publicKey, "base64"));
  const uncompressed = new Uint8Array(
    ECDH.convertKey(
      compressed,
      OPENSSL_CURVE[curve],
      undefined,
      undefined,
      "uncompressed",
    ) as Buffer,
  );
  const firstX = (parity: 2 | 3, valid: boolean): Uint8Array => {
    for (let x = 1n; ; x++) {
      const point = Uint8Array.from([parity, ...xBytes(x, size)]);
      if (decompresses(curve, point) === valid) return point;
    }
  };

  it("accepts the canonical text and yields the signer's key", () => {
    const verifying = importVerifyingKey(spec, key.publicKey);
    const signature = createSign(spec.hash).update("message").sign(key.privateKey);
    expect(createVerify(spec.hash).update("message").verify(verifying, signature)).toBe(true);
  });

  it("is written canonically by every generated key", () => {
    for (let i = 0; i < 64; i++) {
      const { publicKey } = generateSigningKey(spec);
      const bytes = Buffer.from(publicKey, "base64");
      expect(bytes.toString("base64")).toBe(publicKey);
      expect(bytes.length).toBe(size + 1);
      expect([2, 3]).toContain(bytes[0]);
      expect(() => importVerifyingKey(spec, publicKey)).not.toThrow();
    }
  });

  const text = key.publicKey;
  const junk: [string, string | undefined][] = [
    ["no key", undefined],
    ["the empty text", ""],
    ["base64url", Buffer.from(compressed).toString("base64url")],
    ["a stray character after it", `${text}!`],
    ["a stray character inside it", `${text.slice(0, 10)}*${text.slice(10)}`],
    ["a leading space", ` ${text}`],
    ["a trailing line break", `${text}\n`],
    ["extra padding", `${text}=`],
    ["an uncompressed point", base64(uncompressed)],
    [
      "a hybrid point",
      base64(Uint8Array.from([6 | (uncompressed.at(-1)! & 1), ...uncompressed.subarray(1)])),
    ],
    [
      "a hybrid point with the wrong parity",
      base64(Uint8Array.from([7 - (uncompressed.at(-1)! & 1), ...uncompressed.subarray(1)])),
    ],
    ["the x coordinate alone", base64(compressed.subarray(1))],
    ["x behind prefix 04", base64(Uint8Array.from([4, ...compressed.subarray(1)]))],
    ["x behind prefix 00", base64(Uint8Array.from([0, ...compressed.subarray(1)]))],
    ["one byte short", base64(compressed.subarray(0, -1))],
    ["one byte over", base64(Uint8Array.from([...compressed, 0]))],
    ["the point at infinity", base64(Uint8Array.of(0))],
    ["a point on the other curve", generateSigningKey(otherCurve).publicKey],
    ["an x with no point on the curve", base64(firstX(2, false))],
    [
      "an x at or above the field prime",
      base64(
        (() => {
          const small = firstX(2, true);
          const x = BigInt(`0x${Buffer.from(small.subarray(1)).toString("hex")}`);
          return Uint8Array.from([2, ...xBytes(x + FIELD_PRIME[curve], size)]);
        })(),
      ),
    ],
  ];
  if (text.endsWith("=")) {
    junk.push(["no padding", text.replace(/=+$/, "")]);
    // Before "==" the last character carries 4 bits that the canonical text sets to 0.
    const last = BASE64_ALPHABET[BASE64_ALPHABET.indexOf(text.at(-3)!) | 1]!;
    junk.push(["non-zero padding bits", `${text.slice(0, -3)}${last}==`]);
  }

  it.each(junk)("refuses %s as an invalid message", (_name, encoded) => {
    expect(encoded).not.toBe(text);
    expect(() => importVerifyingKey(spec, encoded)).toThrow(InvalidCiphertextError);
  });
});
