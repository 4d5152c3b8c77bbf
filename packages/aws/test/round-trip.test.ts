/**
 * Every KmsLike method through a real KMSClient, its real JSON 1.1 serializer and deserializer,
 * and a stub transport answering from an in-process @kms/core Kms. Where core's answer is
 * deterministic, the answer through AWS's wire format must equal core's own, member for member.
 */
import { createHash, createPublicKey, verify as nodeVerify } from "node:crypto";
import {
  createKms,
  DryRunOperationError,
  InvalidCiphertextError,
  InvalidMacError,
  InvalidSignatureError,
  isKmsError,
  type KeySpec,
  type KeyUsage,
  type Kms,
  type KmsLike,
  UnsupportedOperationError,
} from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AwsKms, awsKms } from "../src/index.ts";
import { b64, StubEndpoint } from "./stub-endpoint.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

let core: Kms;
let stub: StubEndpoint;
let kms: AwsKms;
const keys = {} as Record<"symmetric" | "p256" | "rsaSign" | "rsaEncrypt" | "hmac", string>;
/** Core checks grant tokens, so the tests pass real ones. */
const grantToken = async (keyId: string, operation: "Decrypt" | "GetPublicKey"): Promise<string> =>
  (
    await core.createGrant({
      keyId,
      granteePrincipal: "arn:aws:iam::111122223333:role/reader",
      operations: [operation],
    })
  ).grantToken;

beforeAll(async () => {
  core = await createKms();
  const create = async (keySpec: KeySpec, keyUsage: KeyUsage) =>
    (await core.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
  keys.symmetric = await create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
  keys.p256 = await create("ECC_NIST_P256", "SIGN_VERIFY");
  keys.rsaSign = await create("RSA_2048", "SIGN_VERIFY");
  keys.rsaEncrypt = await create("RSA_2048", "ENCRYPT_DECRYPT");
  keys.hmac = await create("HMAC_256", "GENERATE_VERIFY_MAC");
  stub = new StubEndpoint(core);
  kms = awsKms(stub.client());
});
afterAll(() => core.close());

it("is a KmsLike", () => {
  const like: KmsLike = kms;
  expect(like).toBeInstanceOf(AwsKms);
});

describe("symmetric encrypt and decrypt", () => {
  // Keys in mixed case, with separators: AWS treats context keys as case-sensitive user data.
  const encryptionContext = { TenantId: "t-1", tableName: "Users", "X-Request": "a b", path: "/x" };

  it("sends a signed JSON 1.1 request with the context keys verbatim", async () => {
    const plaintext = bytes("card 4111");
    const encrypted = await kms.encrypt({ keyId: keys.symmetric, plaintext, encryptionContext });
    const call = stub.last;
    expect(call.operation).toBe("Encrypt");
    expect(call.headers["x-amz-target"]).toBe("TrentService.Encrypt");
    expect(call.headers["content-type"]).toBe("application/x-amz-json-1.1");
    expect(call.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDSTUBEXAMPLE\//);
    expect(call.body).toEqual({
      KeyId: keys.symmetric,
      Plaintext: b64(plaintext),
      EncryptionContext: encryptionContext,
    });
    expect(Object.keys(call.body.EncryptionContext as object)).toEqual(
      Object.keys(encryptionContext),
    );

    expect(Object.keys(encrypted).sort()).toEqual([
      "ciphertextBlob",
      "encryptionAlgorithm",
      "keyId",
    ]);
    expect(encrypted.keyId).toMatch(/^arn:aws:kms:.*:key\//);
    expect(encrypted.encryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");

    const request = { ciphertextBlob: encrypted.ciphertextBlob, encryptionContext };
    const decrypted = await kms.decrypt(request);
    expect(stub.last.body.EncryptionContext).toEqual(encryptionContext);
    expect(decrypted).toStrictEqual(await core.decrypt(request));
    expect(decrypted.plaintext).toEqual(plaintext);
    expect(decrypted.keyMaterialId).toEqual(expect.any(String));
  });

  it("a context differing only in a key's case does not decrypt", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId: keys.symmetric,
      plaintext: bytes("x"),
      encryptionContext,
    });
    const { TenantId, ...rest } = encryptionContext;
    const error = await kms
      .decrypt({ ciphertextBlob, encryptionContext: { ...rest, tenantId: TenantId } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidCiphertextError);
  });

  it("returns blobs that own their bytes (not views of the SDK's pooled buffer)", async () => {
    const encrypted = await kms.encrypt({ keyId: keys.symmetric, plaintext: bytes("x") });
    const { plaintext } = await kms.decrypt({ ciphertextBlob: encrypted.ciphertextBlob });
    for (const blob of [encrypted.ciphertextBlob, plaintext]) {
      expect(blob.constructor).toBe(Uint8Array);
      expect(blob.byteOffset).toBe(0);
      expect(blob.buffer.byteLength).toBe(blob.length);
    }
  });

  it("passes keyId, algorithm, grant tokens and dryRun through", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId: keys.symmetric, plaintext: bytes("x") });
    const tokens = [
      await grantToken(keys.symmetric, "Decrypt"),
      await grantToken(keys.symmetric, "Decrypt"),
    ];
    await kms.decrypt({
      ciphertextBlob,
      keyId: keys.symmetric,
      encryptionAlgorithm: "SYMMETRIC_DEFAULT",
      grantTokens: tokens,
    });
    expect(stub.last.body).toEqual({
      CiphertextBlob: b64(ciphertextBlob),
      KeyId: keys.symmetric,
      EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      GrantTokens: tokens,
    });
    const dryRun = await kms
      .encrypt({ keyId: keys.symmetric, plaintext: bytes("x"), dryRun: true })
      .catch((e: unknown) => e);
    expect(stub.last.body.DryRun).toBe(true);
    expect(dryRun).toBeInstanceOf(DryRunOperationError);
  });

  it("passes dryRun through for sign, verify, generateMac and verifyMac", async () => {
    const message = bytes("dry run");
    const sign = { keyId: keys.p256, message, signingAlgorithm: "ECDSA_SHA_256" } as const;
    const { signature } = await kms.sign(sign);
    const mac = { keyId: keys.hmac, message, macAlgorithm: "HMAC_SHA_256" } as const;
    const { mac: tag } = await kms.generateMac(mac);
    const calls = [
      () => kms.sign({ ...sign, dryRun: true }),
      () => kms.verify({ ...sign, signature, dryRun: true }),
      () => kms.generateMac({ ...mac, dryRun: true }),
      () => kms.verifyMac({ ...mac, mac: tag, dryRun: true }),
    ];
    for (const call of calls) {
      // Without DryRun on the wire, AWS would sign or compute the MAC for real and answer it.
      await expect(call()).rejects.toBeInstanceOf(DryRunOperationError);
      expect(stub.last.body.DryRun).toBe(true);
    }
  });

  it("RSA-OAEP with an asymmetric key", async () => {
    const plaintext = bytes("wrapped secret");
    const encrypted = await kms.encrypt({
      keyId: keys.rsaEncrypt,
      plaintext,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256",
    });
    expect(encrypted.encryptionAlgorithm).toBe("RSAES_OAEP_SHA_256");
    const request = {
      ciphertextBlob: encrypted.ciphertextBlob,
      keyId: keys.rsaEncrypt,
      encryptionAlgorithm: "RSAES_OAEP_SHA_256" as const,
    };
    const decrypted = await kms.decrypt(request);
    expect(decrypted).toStrictEqual(await core.decrypt(request));
    expect(decrypted.plaintext).toEqual(plaintext);
  });
});

describe("data keys", () => {
  const encryptionContext = { Purpose: "test" };

  it.each([
    [{ keySpec: "AES_256" as const }, 32, { KeySpec: "AES_256" }],
    [{ keySpec: "AES_128" as const }, 16, { KeySpec: "AES_128" }],
    [{ numberOfBytes: 64 }, 64, { NumberOfBytes: 64 }],
  ])("generateDataKey %o", async (size, length, wire) => {
    const key = await kms.generateDataKey({ keyId: keys.symmetric, encryptionContext, ...size });
    expect(stub.last.operation).toBe("GenerateDataKey");
    expect(stub.last.body).toEqual({
      KeyId: keys.symmetric,
      EncryptionContext: encryptionContext,
      ...wire,
    });
    expect(Object.keys(key).sort()).toEqual([
      "ciphertextBlob",
      "keyId",
      "keyMaterialId",
      "plaintext",
    ]);
    expect(key.plaintext.length).toBe(length);
    expect(key.plaintext.buffer.byteLength).toBe(length);
    expect(key.keyId).toMatch(/:key\//);
    const { currentKeyMaterialId } = (await core.describeKey({ keyId: keys.symmetric }))
      .keyMetadata;
    expect(key.keyMaterialId).toBe(currentKeyMaterialId);
    const opened = await kms.decrypt({ ciphertextBlob: key.ciphertextBlob, encryptionContext });
    expect(opened.plaintext).toEqual(key.plaintext);
    expect(opened.keyMaterialId).toBe(key.keyMaterialId);
  });

  it("generateDataKeyWithoutPlaintext returns no plaintext, and the key decrypts", async () => {
    const key = await kms.generateDataKeyWithoutPlaintext({
      keyId: keys.symmetric,
      numberOfBytes: 24,
      encryptionContext,
    });
    expect(stub.last.operation).toBe("GenerateDataKeyWithoutPlaintext");
    expect(stub.last.body).toEqual({
      KeyId: keys.symmetric,
      NumberOfBytes: 24,
      EncryptionContext: encryptionContext,
    });
    expect(Object.keys(key).sort()).toEqual(["ciphertextBlob", "keyId", "keyMaterialId"]);
    const opened = await kms.decrypt({ ciphertextBlob: key.ciphertextBlob, encryptionContext });
    expect(opened.plaintext.length).toBe(24);
    expect(opened.keyMaterialId).toBe(key.keyMaterialId);
  });
});

describe("sign and verify", () => {
  const message = bytes("a message to sign");

  it("ECC_NIST_P256 / ECDSA_SHA_256: RAW and DIGEST, DER signatures, verified locally too", async () => {
    const signed = await kms.sign({ keyId: keys.p256, message, signingAlgorithm: "ECDSA_SHA_256" });
    expect(stub.last.body).toEqual({
      KeyId: keys.p256,
      Message: b64(message),
      SigningAlgorithm: "ECDSA_SHA_256",
    });
    expect(Object.keys(signed).sort()).toEqual(["keyId", "signature", "signingAlgorithm"]);
    expect(signed.signingAlgorithm).toBe("ECDSA_SHA_256");
    expect(signed.signature[0]).toBe(0x30); // DER SEQUENCE

    const request = {
      keyId: keys.p256,
      message,
      signature: signed.signature,
      signingAlgorithm: "ECDSA_SHA_256" as const,
    };
    const verified = await kms.verify(request);
    expect(verified).toStrictEqual(await core.verify(request));
    expect(verified.signatureValid).toBe(true);

    const digest = createHash("sha256").update(message).digest();
    const viaDigest = await kms.sign({
      keyId: keys.p256,
      message: new Uint8Array(digest),
      messageType: "DIGEST",
      signingAlgorithm: "ECDSA_SHA_256",
    });
    expect(stub.last.body.MessageType).toBe("DIGEST");

    const { publicKey } = await kms.getPublicKey({ keyId: keys.p256 });
    const spki = createPublicKey({ key: Buffer.from(publicKey), format: "der", type: "spki" });
    for (const signature of [signed.signature, viaDigest.signature]) {
      expect(nodeVerify("sha256", message, spki, signature)).toBe(true);
    }
  });

  it("a bad signature throws InvalidSignatureError, as AWS and core do", async () => {
    const { signature } = await kms.sign({
      keyId: keys.p256,
      message,
      signingAlgorithm: "ECDSA_SHA_256",
    });
    const error = await kms
      .verify({
        keyId: keys.p256,
        message: bytes("another"),
        signature,
        signingAlgorithm: "ECDSA_SHA_256",
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidSignatureError);
    expect(isKmsError(error) && error.code).toBe("KMSInvalidSignatureException");
  });

  it.each(["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PSS_SHA_384"] as const)(
    "RSA_2048 / %s",
    async (signingAlgorithm) => {
      const signed = await kms.sign({ keyId: keys.rsaSign, message, signingAlgorithm });
      if (signingAlgorithm === "RSASSA_PKCS1_V1_5_SHA_256") {
        // PKCS#1 v1.5 is deterministic: the answer through the wire is core's answer.
        expect(signed).toStrictEqual(
          await core.sign({ keyId: keys.rsaSign, message, signingAlgorithm }),
        );
      }
      expect(signed.signature.length).toBe(256);
      const request = {
        keyId: keys.rsaSign,
        message,
        signature: signed.signature,
        signingAlgorithm,
      };
      expect(await kms.verify(request)).toStrictEqual(await core.verify(request));
      const tampered = signed.signature.slice();
      tampered[10]! ^= 1;
      await expect(kms.verify({ ...request, signature: tampered })).rejects.toBeInstanceOf(
        InvalidSignatureError,
      );
    },
  );
});

describe("MAC", () => {
  const message = bytes("mac me");

  it("generateMac equals core's; verifyMac accepts it and rejects another", async () => {
    const request = { keyId: keys.hmac, message, macAlgorithm: "HMAC_SHA_256" as const };
    const generated = await kms.generateMac(request);
    expect(stub.last.body).toEqual({
      KeyId: keys.hmac,
      Message: b64(message),
      MacAlgorithm: "HMAC_SHA_256",
    });
    expect(generated).toStrictEqual(await core.generateMac(request));
    expect(generated.mac.length).toBe(32);

    const verified = await kms.verifyMac({ ...request, mac: generated.mac });
    expect(stub.last.body.Mac).toBe(b64(generated.mac));
    expect(verified).toStrictEqual(await core.verifyMac({ ...request, mac: generated.mac }));

    const wrong = generated.mac.slice();
    wrong[0]! ^= 1;
    const error = await kms.verifyMac({ ...request, mac: wrong }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidMacError);
    expect(isKmsError(error) && error.code).toBe("KMSInvalidMacException");
  });
});

describe("getPublicKey", () => {
  it.each(["p256", "rsaSign", "rsaEncrypt"] as const)("%s equals core's answer", async (name) => {
    const token = await grantToken(keys[name], "GetPublicKey");
    const response = await kms.getPublicKey({ keyId: keys[name], grantTokens: [token] });
    expect(stub.last.body).toEqual({ KeyId: keys[name], GrantTokens: [token] });
    expect(response).toStrictEqual(await core.getPublicKey({ keyId: keys[name] }));
  });

  it("a symmetric key has none: UnsupportedOperationError", async () => {
    await expect(kms.getPublicKey({ keyId: keys.symmetric })).rejects.toBeInstanceOf(
      UnsupportedOperationError,
    );
  });
});
