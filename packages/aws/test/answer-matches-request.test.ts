/**
 * An answer must be for the call that was sent: the key the request named (by key id or key ARN)
 * and the algorithm it named. An endpoint that answers for another key or with another algorithm
 * — faulty, or hostile and on the path — fails the call with KmsInternalError instead of having
 * its signature, MAC or ciphertext handed on as the requested key's.
 */
import { KmsInternalError } from "@kms/core";
import { describe, expect, it } from "vitest";
import { type AwsKms, awsKms } from "../src/index.ts";
import { b64, StubEndpoint } from "./stub-endpoint.ts";

const KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab";
const KEY_ARN = `arn:aws:kms:eu-west-1:111122223333:key/${KEY_ID}`;
const OTHER_ARN = "arn:aws:kms:eu-west-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab";
const BYTES = new Uint8Array(32).fill(0x5c);
const message = new Uint8Array([1, 2, 3]);

function answering(body: Record<string, unknown>): AwsKms {
  const stub = new StubEndpoint();
  stub.answer = () => ({ status: 200, body });
  return awsKms(stub.client());
}

type Call = (kms: AwsKms, keyId: string) => Promise<unknown>;

/** Each operation naming a key, and an answer for KEY_ARN that is otherwise correct. */
const OPERATIONS: Record<string, [Call, Record<string, unknown>]> = {
  Encrypt: [
    (kms, keyId) => kms.encrypt({ keyId, plaintext: BYTES }),
    { CiphertextBlob: b64(BYTES), KeyId: KEY_ARN, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" },
  ],
  Decrypt: [
    (kms, keyId) => kms.decrypt({ keyId, ciphertextBlob: BYTES }),
    { Plaintext: b64(BYTES), KeyId: KEY_ARN, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" },
  ],
  GenerateDataKey: [
    (kms, keyId) => kms.generateDataKey({ keyId, keySpec: "AES_256" }),
    { CiphertextBlob: b64(BYTES), Plaintext: b64(BYTES), KeyId: KEY_ARN },
  ],
  GenerateDataKeyWithoutPlaintext: [
    (kms, keyId) => kms.generateDataKeyWithoutPlaintext({ keyId, keySpec: "AES_256" }),
    { CiphertextBlob: b64(BYTES), KeyId: KEY_ARN },
  ],
  Sign: [
    (kms, keyId) => kms.sign({ keyId, message, signingAlgorithm: "ECDSA_SHA_256" }),
    { KeyId: KEY_ARN, Signature: b64(BYTES), SigningAlgorithm: "ECDSA_SHA_256" },
  ],
  Verify: [
    (kms, keyId) =>
      kms.verify({ keyId, message, signature: BYTES, signingAlgorithm: "ECDSA_SHA_256" }),
    { KeyId: KEY_ARN, SignatureValid: true, SigningAlgorithm: "ECDSA_SHA_256" },
  ],
  GenerateMac: [
    (kms, keyId) => kms.generateMac({ keyId, message, macAlgorithm: "HMAC_SHA_256" }),
    { KeyId: KEY_ARN, Mac: b64(BYTES), MacAlgorithm: "HMAC_SHA_256" },
  ],
  VerifyMac: [
    (kms, keyId) => kms.verifyMac({ keyId, message, mac: BYTES, macAlgorithm: "HMAC_SHA_256" }),
    { KeyId: KEY_ARN, MacValid: true, MacAlgorithm: "HMAC_SHA_256" },
  ],
  GetPublicKey: [
    (kms, keyId) => kms.getPublicKey({ keyId }),
    {
      KeyId: KEY_ARN,
      PublicKey: b64(BYTES),
      KeySpec: "ECC_NIST_P256",
      KeyUsage: "SIGN_VERIFY",
      SigningAlgorithms: ["ECDSA_SHA_256"],
    },
  ],
};
const NAMES = Object.keys(OPERATIONS);
const operation = (name: string): [Call, Record<string, unknown>] =>
  OPERATIONS[name] as [Call, Record<string, unknown>];

describe("the key an answer names", () => {
  it.each(NAMES)("%s: accepted for the key id, the key ARN and an alias", async (name) => {
    const [call, ok] = operation(name);
    for (const keyId of [
      KEY_ID,
      KEY_ARN,
      "alias/app",
      "arn:aws:kms:eu-west-1:111122223333:alias/app",
    ]) {
      await expect(call(answering(ok), keyId)).resolves.toMatchObject({ keyId: KEY_ARN });
    }
  });

  it.each(NAMES)(
    "%s: another key than the key id or ARN asked for → KmsInternalError",
    async (name) => {
      const [call, ok] = operation(name);
      for (const keyId of [KEY_ID, KEY_ARN]) {
        const error = await call(answering({ ...ok, KeyId: OTHER_ARN }), keyId).catch(
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(KmsInternalError);
        expect((error as Error).message).toBe(
          `AWS KMS ${name} response member "KeyId" names another key than the request's "keyId"`,
        );
      }
    },
  );

  it("a key id that only ends like the one asked for is another key", async () => {
    const [call, ok] = operation("Sign");
    const body = { ...ok, KeyId: `arn:aws:kms:eu-west-1:111122223333:key/x${KEY_ID}` };
    await expect(call(answering(body), KEY_ID)).rejects.toBeInstanceOf(KmsInternalError);
  });

  it("a decrypt that names no key accepts whichever key AWS found", async () => {
    const [, ok] = operation("Decrypt");
    const kms = answering({ ...ok, KeyId: OTHER_ARN });
    await expect(kms.decrypt({ ciphertextBlob: BYTES })).resolves.toMatchObject({
      keyId: OTHER_ARN,
    });
  });
});

describe("the algorithm an answer names", () => {
  it.each([
    ["Encrypt", "EncryptionAlgorithm", "RSAES_OAEP_SHA_256"],
    ["Decrypt", "EncryptionAlgorithm", "RSAES_OAEP_SHA_1"],
    ["Sign", "SigningAlgorithm", "ECDSA_SHA_384"],
    ["Verify", "SigningAlgorithm", "RSASSA_PSS_SHA_256"],
    ["GenerateMac", "MacAlgorithm", "HMAC_SHA_224"],
    ["VerifyMac", "MacAlgorithm", "HMAC_SHA_512"],
  ])("%s answering %s %s for another → KmsInternalError", async (name, member, other) => {
    const [call, ok] = operation(name);
    const error = await call(answering({ ...ok, [member]: other }), KEY_ID).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toBe(
      `AWS KMS ${name} response member "${member}" is not the algorithm the request named`,
    );
  });

  it("an explicit algorithm is compared as given", async () => {
    const kms = answering({
      CiphertextBlob: b64(BYTES),
      KeyId: KEY_ARN,
      EncryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    await expect(
      kms.encrypt({ keyId: KEY_ID, plaintext: BYTES, encryptionAlgorithm: "RSAES_OAEP_SHA_256" }),
    ).resolves.toMatchObject({ encryptionAlgorithm: "RSAES_OAEP_SHA_256" });
    await expect(
      kms.encrypt({ keyId: KEY_ID, plaintext: BYTES, encryptionAlgorithm: "RSAES_OAEP_SHA_1" }),
    ).rejects.toBeInstanceOf(KmsInternalError);
  });

  it("a decrypt's plaintext is zeroed when the algorithm is refused", async () => {
    const stub = new StubEndpoint();
    stub.answer = () => ({
      status: 200,
      body: { Plaintext: b64(BYTES), KeyId: KEY_ARN, EncryptionAlgorithm: "RSAES_OAEP_SHA_1" },
    });
    const client = stub.client();
    const outputs: Record<string, unknown>[] = [];
    client.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        outputs.push(result.output as unknown as Record<string, unknown>);
        return result;
      },
      { step: "initialize", name: "outputs" },
    );
    await expect(awsKms(client).decrypt({ ciphertextBlob: BYTES })).rejects.toBeInstanceOf(
      KmsInternalError,
    );
    const plaintext = outputs[0]?.Plaintext as Uint8Array;
    expect(plaintext.length).toBe(32);
    expect(plaintext.every((byte) => byte === 0)).toBe(true);
  });
});
