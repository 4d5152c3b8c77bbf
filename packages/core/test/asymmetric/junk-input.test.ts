/** Junk in every argument of the new operations: always a typed KmsError, never a TypeError. */
import { beforeAll, describe, expect, it } from "vitest";
import { createKms, type Kms, KmsError, KmsInternalError } from "../../src/index.ts";

let kms: Kms;
const ids: Record<string, string> = {};
beforeAll(async () => {
  kms = await createKms();
  ids.sign = (
    await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" })
  ).keyMetadata.keyId;
  ids.mac = (
    await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
  ).keyMetadata.keyId;
  ids.agree = (
    await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" })
  ).keyMetadata.keyId;
  ids.rsa = (
    await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" })
  ).keyMetadata.keyId;
  ids.sym = (await kms.createKey()).keyMetadata.keyId;
});

const JUNK: readonly unknown[] = [
  undefined,
  null,
  0,
  -1,
  Number.NaN,
  "",
  "x".repeat(5000),
  [],
  {},
  new Uint8Array(0),
  new Uint8Array(10_000),
  () => 1,
  Symbol("s"),
];

type Call = (junk: unknown) => Promise<unknown>;
const calls: Record<string, Call[]> = {
  sign: [
    (j) => kms.sign(j as never),
    (j) => kms.sign({ keyId: ids.sign!, message: j as never, signingAlgorithm: "ECDSA_SHA_256" }),
    (j) => kms.sign({ keyId: ids.sign!, message: new Uint8Array(1), signingAlgorithm: j as never }),
    (j) =>
      kms.sign({
        keyId: ids.sign!,
        message: new Uint8Array(1),
        messageType: j as never,
        signingAlgorithm: "ECDSA_SHA_256",
      }),
    (j) =>
      kms.sign({
        keyId: j as never,
        message: new Uint8Array(1),
        signingAlgorithm: "ECDSA_SHA_256",
      }),
  ],
  verify: [
    (j) =>
      kms.verify({
        keyId: ids.sign!,
        message: new Uint8Array(1),
        signingAlgorithm: "ECDSA_SHA_256",
        signature: j as never,
      }),
  ],
  getPublicKey: [
    (j) => kms.getPublicKey(j as never),
    (j) => kms.getPublicKey({ keyId: j as never }),
  ],
  generateMac: [
    (j) => kms.generateMac({ keyId: ids.mac!, message: j as never, macAlgorithm: "HMAC_SHA_256" }),
    (j) =>
      kms.generateMac({ keyId: ids.mac!, message: new Uint8Array(1), macAlgorithm: j as never }),
  ],
  verifyMac: [
    (j) =>
      kms.verifyMac({
        keyId: ids.mac!,
        message: new Uint8Array(1),
        macAlgorithm: "HMAC_SHA_256",
        mac: j as never,
      }),
  ],
  encrypt: [
    (j) =>
      kms.encrypt({
        keyId: ids.rsa!,
        plaintext: j as never,
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
    (j) =>
      kms.encrypt({
        keyId: ids.rsa!,
        plaintext: new Uint8Array(1),
        encryptionAlgorithm: j as never,
      }),
  ],
  decrypt: [
    (j) =>
      kms.decrypt({
        keyId: ids.rsa!,
        ciphertextBlob: j as never,
        encryptionAlgorithm: "RSAES_OAEP_SHA_256",
      }),
  ],
  generateDataKeyPair: [
    (j) => kms.generateDataKeyPair(j as never),
    (j) => kms.generateDataKeyPair({ keyId: ids.sym!, keyPairSpec: j as never }),
    (j) =>
      kms.generateDataKeyPairWithoutPlaintext({
        keyId: ids.sym!,
        keyPairSpec: "ECC_NIST_P256",
        encryptionContext: j as never,
      }),
  ],
  deriveSharedSecret: [
    (j) =>
      kms.deriveSharedSecret({
        keyId: ids.agree!,
        keyAgreementAlgorithm: "ECDH",
        publicKey: j as never,
      }),
    (j) =>
      kms.deriveSharedSecret({
        keyId: ids.agree!,
        keyAgreementAlgorithm: j as never,
        publicKey: new Uint8Array(91),
      }),
  ],
};

describe.each(Object.entries(calls))("%s", (_name, list) => {
  it("answers junk with a client KmsError", async () => {
    let refused = 0;
    for (const call of list) {
      for (const junk of JUNK) {
        const outcome = await call(junk).then(
          () => undefined,
          (e: unknown) => e,
        );
        // Some junk is valid (an empty context, undefined messageType); everything else must be
        // a typed client error, never an internal one.
        if (outcome === undefined) continue;
        refused++;
        expect(outcome).toBeInstanceOf(KmsError);
        expect(outcome).not.toBeInstanceOf(KmsInternalError);
      }
    }
    expect(refused).toBeGreaterThan(list.length * (JUNK.length - 3));
  });
});
