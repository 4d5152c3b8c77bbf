/**
 * The consumers of KmsLike, unchanged, through awsKms: the field encryption engine, the
 * KmsKeyring with the message format, and @kms/http-signatures' KMS signer and verifier. Each
 * test also checks that its KMS calls crossed the AWS wire format.
 */
import {
  createKms,
  decryptMessage,
  encryptMessage,
  type FieldBinding,
  FieldEncryptionEngine,
  type FieldSpec,
  InvalidCiphertextError,
  type Kms,
  KmsKeyring,
  MemoryDataKeyStore,
} from "@kms/core";
import {
  createKmsPublicKeyVerifier,
  createKmsSigner,
  createKmsVerifier,
  type KmsSignatureApi,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { awsKms } from "../src/index.ts";
import { StubEndpoint } from "./stub-endpoint.ts";

let core: Kms;
let stub: StubEndpoint;

beforeAll(async () => {
  core = await createKms();
  stub = new StubEndpoint(core);
});
afterAll(() => core.close());

describe("FieldEncryptionEngine", () => {
  it("encrypts through one engine and decrypts through another with a cold cache", async () => {
    const keyId = (await core.createKey()).keyMetadata.keyId;
    const dataKeyStore = new MemoryDataKeyStore();
    const binding: FieldBinding = {
      model: "User",
      field: "ssn",
      context: { TenantId: "acme" },
    };
    const spec: FieldSpec = { type: "string" };
    const writer = new FieldEncryptionEngine({ kms: awsKms(stub.client()), dataKeyStore, keyId });
    const stored = await writer.encrypt(binding, spec, "078-05-1120");
    expect(stub.operations()).toContain("GenerateDataKey");
    expect(
      stub.calls.find((c) => c.operation === "GenerateDataKey")?.body.EncryptionContext,
    ).toEqual(expect.objectContaining({ TenantId: "acme" }));

    const before = stub.calls.length;
    const reader = new FieldEncryptionEngine({ kms: awsKms(stub.client()), dataKeyStore, keyId });
    expect(await reader.decrypt(binding, spec, stored)).toBe("078-05-1120");
    expect(stub.calls.slice(before).map((c) => c.operation)).toEqual(["Decrypt"]);

    // Another tenant's context does not open the value, whatever the path through AWS.
    const other = new FieldEncryptionEngine({ kms: awsKms(stub.client()), dataKeyStore, keyId });
    await expect(
      other.decrypt({ ...binding, context: { TenantId: "evil" } }, spec, stored),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });
});

describe("KmsKeyring", () => {
  it("encryptMessage / decryptMessage round trip, decrypted by a fresh keyring", async () => {
    const keyId = (await core.createKey()).keyMetadata.keyId;
    const plaintext = new TextEncoder().encode("quarterly numbers");
    const encryptionContext = { Department: "finance" };
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms: awsKms(stub.client()), keyIds: [keyId] }),
      encryptionContext,
    });
    expect(stub.last.operation).toBe("GenerateDataKey");

    const keyring = new KmsKeyring({ kms: awsKms(stub.client()), keyIds: [keyId] });
    const opened = await decryptMessage(message, { keyring });
    expect(stub.last.operation).toBe("Decrypt");
    // The keyring pins the decrypt to the ARN that AWS returned when the key was generated.
    expect(stub.last.body.KeyId).toMatch(new RegExp(`:key/${keyId}$`));
    expect(new TextDecoder().decode(opened.plaintext)).toBe("quarterly numbers");
    expect(opened.encryptionContext).toMatchObject(encryptionContext);
  });
});

describe("@kms/http-signatures", () => {
  it("createKmsSigner + createKmsVerifier with an HMAC key", async () => {
    const keyId = (await core.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const api: KmsSignatureApi = awsKms(stub.client());
    const request = {
      method: "POST",
      url: "https://billing.internal/hooks/paid",
      headers: { "content-type": "application/json" },
      body: '{"id":7}',
    };
    const added = await signRequest(request, {
      signer: createKmsSigner({
        kms: api,
        keyId,
        algorithm: "hmac-sha256",
        publishedKeyId: "hooks",
      }),
    });
    expect(stub.last.operation).toBe("GenerateMac");

    const verifier = createKmsVerifier({ kms: api, keyId, algorithm: "hmac-sha256" });
    const policy = {
      keyLookup: (id: string) => (id === "hooks" ? verifier : undefined),
      contentDigest: "required" as const,
    };
    const body = new TextEncoder().encode(request.body);
    const received = { ...request, headers: { ...request.headers, ...added }, body };
    const ok = await verifyMessage(received, policy);
    expect(ok.ok).toBe(true);
    expect(stub.last.operation).toBe("VerifyMac");

    // A forged MAC reaches AWS, comes back as KMSInvalidMacException, and is a failed check.
    const forged = added.signature!.replace(/:([A-Za-z0-9+/])/, (_, c: string) =>
      c === "A" ? ":B" : ":A",
    );
    const bad = await verifyMessage(
      { ...received, headers: { ...received.headers, signature: forged } },
      policy,
    );
    expect(bad.ok).toBe(false);
    expect(stub.last.operation).toBe("VerifyMac");
  });

  it("an ECDSA P-256 key: signed through AWS Sign, verified locally from GetPublicKey", async () => {
    const keyId = (await core.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata.keyId;
    const api: KmsSignatureApi = awsKms(stub.client());
    const base = new TextEncoder().encode('"@method": POST');
    const signature = await createKmsSigner({
      kms: api,
      keyId,
      algorithm: "ecdsa-p256-sha256",
    }).sign(base);
    expect(signature.length).toBe(64); // DER from AWS, converted to r||s
    const local = await createKmsPublicKeyVerifier({
      kms: api,
      keyId,
      algorithm: "ecdsa-p256-sha256",
    });
    expect(stub.last.operation).toBe("GetPublicKey");
    expect(await local.verify(base, signature)).toBe(true);
  });
});
