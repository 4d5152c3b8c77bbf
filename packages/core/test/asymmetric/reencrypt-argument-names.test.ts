/**
 * ReEncrypt with an RSA side encrypts and decrypts through encrypt's and decrypt's paths, but a
 * refusal must name the ReEncrypt request member the caller set (found in review: an RSA
 * destination's context was reported as "encryptionContext", a member ReEncrypt does not have).
 */
import { beforeAll, describe, expect, test } from "vitest";
import { createKms, type Kms, type ReEncryptRequest, ValidationError } from "../../src/index.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

let kms: Kms;
let symmetricKey: string;
let rsaKey: string;
let symmetricBlob: Uint8Array;
let rsaBlob: Uint8Array;

beforeAll(async () => {
  kms = await createKms({ audit: false });
  symmetricKey = (await kms.createKey()).keyMetadata.keyId;
  rsaKey = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" })).keyMetadata
    .keyId;
  symmetricBlob = (await kms.encrypt({ keyId: symmetricKey, plaintext: text("x") })).ciphertextBlob;
  rsaBlob = (
    await kms.encrypt({
      keyId: rsaKey,
      plaintext: text("x"),
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    })
  ).ciphertextBlob;
});

async function refusal(request: () => ReEncryptRequest): Promise<string> {
  const error = await kms.reEncrypt(request()).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ValidationError);
  return (error as ValidationError).message;
}

const toRsa = (): ReEncryptRequest => ({
  ciphertextBlob: symmetricBlob,
  destinationKeyId: rsaKey,
  destinationEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
});
const fromRsa = (): ReEncryptRequest => ({
  ciphertextBlob: rsaBlob,
  sourceKeyId: rsaKey,
  sourceEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
  destinationKeyId: symmetricKey,
});

describe("reEncrypt with an RSA side names the member the caller set", () => {
  test.each([
    [
      "an RSA destination's context",
      () => ({ ...toRsa(), destinationEncryptionContext: { tenant: "a" } }),
      "destinationEncryptionContext",
    ],
    [
      "an RSA destination's malformed context",
      () => ({ ...toRsa(), destinationEncryptionContext: new Map() as never }),
      "destinationEncryptionContext",
    ],
    [
      "an RSA source's context",
      () => ({ ...fromRsa(), sourceEncryptionContext: { tenant: "a" } }),
      "sourceEncryptionContext",
    ],
    [
      "an RSA source without its key",
      () => ({ ...fromRsa(), sourceKeyId: undefined as never }),
      "sourceKeyId",
    ],
    [
      "an RSA source's malformed key id",
      () => ({ ...fromRsa(), sourceKeyId: 42 as never }),
      "sourceKeyId",
    ],
    [
      "a symmetric destination's malformed context, from an RSA source",
      () => ({ ...fromRsa(), destinationEncryptionContext: { tenant: 1 } as never }),
      "destinationEncryptionContext",
    ],
    [
      "a symmetric destination's unknown algorithm, from an RSA source",
      () => ({ ...fromRsa(), destinationEncryptionAlgorithm: "NOPE" as never }),
      "destinationEncryptionAlgorithm",
    ],
    [
      "a malformed destination key id, to an RSA key",
      () => ({ ...toRsa(), destinationKeyId: 42 as never }),
      "destinationKeyId",
    ],
    [
      "a malformed destination key id, from an RSA source",
      () => ({ ...fromRsa(), destinationKeyId: 42 as never }),
      "destinationKeyId",
    ],
  ])("%s", async (_name, request, member) => {
    const message = await refusal(request);
    expect(message).toContain(`"${member}"`);
    // Never a member of encrypt's or decrypt's request that ReEncrypt does not have.
    expect(message).not.toMatch(/"(encryptionContext|encryptionAlgorithm|keyId)"/);
  });
});
