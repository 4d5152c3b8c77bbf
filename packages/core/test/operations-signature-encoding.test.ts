/**
 * Verify accepts only the canonical encoding of a signature. RFC 8017 §8.2.2 step 1: an RSA
 * signature that is not exactly k octets (the modulus length) is invalid. OpenSSL enforces it for
 * PKCS #1 v1.5 RAW messages but not for PSS, and DIGEST messages are checked by recovering the
 * DigestInfo: either would otherwise read a shortened signature as the same integer.
 */
import { constants, createHash, generateKeyPairSync, privateEncrypt, sign } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { InvalidSignatureError } from "../src/index.ts";
import { type ImportingKms, importingKms } from "./asymmetric/harness.ts";

const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

describe("RSASSA_PKCS1_V1_5 verify over a DIGEST", () => {
  let harness: ImportingKms;
  let keyId: string;
  let message: Uint8Array;
  let digest: Buffer;
  let signature: Buffer;

  beforeAll(async () => {
    harness = await importingKms();
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    keyId = await harness.importKey(
      "RSA_2048",
      "SIGN_VERIFY",
      new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" })),
    );
    // About one signature in 256 starts with a zero octet: look for one.
    for (let i = 0; ; i++) {
      message = new TextEncoder().encode(`message ${i}`);
      digest = createHash("sha256").update(message).digest();
      signature = privateEncrypt(
        { key: privateKey, padding: constants.RSA_PKCS1_PADDING },
        Buffer.concat([SHA256_DIGEST_INFO, digest]),
      );
      if (signature[0] === 0) break;
    }
  });

  const verify = (sig: Uint8Array) =>
    harness.kms.verify({
      keyId,
      message: digest,
      messageType: "DIGEST",
      signature: sig,
      signingAlgorithm: "RSASSA_PKCS1_V1_5_SHA_256",
    });

  it("accepts the signature in its full modulus length", async () => {
    expect((await verify(signature)).signatureValid).toBe(true);
  });

  it("rejects the same signature without its leading zero octet", async () => {
    await expect(verify(signature.subarray(1))).rejects.toBeInstanceOf(InvalidSignatureError);
  });

  it("answers as RAW verification of the same message does", async () => {
    await expect(
      harness.kms.verify({
        keyId,
        message,
        signature: signature.subarray(1),
        signingAlgorithm: "RSASSA_PKCS1_V1_5_SHA_256",
      }),
    ).rejects.toBeInstanceOf(InvalidSignatureError);
  });
});

describe("RSASSA_PSS verify over a RAW message", () => {
  it("rejects a valid signature without its leading zero octet", async () => {
    const harness = await importingKms();
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const keyId = await harness.importKey(
      "RSA_2048",
      "SIGN_VERIFY",
      new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" })),
    );
    let message: Uint8Array;
    let signature: Buffer;
    // About one signature in 256 starts with a zero octet: look for one.
    for (let i = 0; ; i++) {
      message = new TextEncoder().encode(`message ${i}`);
      signature = sign("sha256", message, {
        key: privateKey,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: 32,
      });
      if (signature[0] === 0) break;
    }
    const verify = (sig: Uint8Array) =>
      harness.kms.verify({
        keyId,
        message,
        signature: sig,
        signingAlgorithm: "RSASSA_PSS_SHA_256",
      });
    expect((await verify(signature)).signatureValid).toBe(true);
    await expect(verify(signature.subarray(1))).rejects.toBeInstanceOf(InvalidSignatureError);
  });
});
