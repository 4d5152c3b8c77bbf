/**
 * The whole remote path with nothing stubbed: the adapters' KmsLike is awsKms over a real
 * KMSClient, which signs with SigV4 and talks HTTP to @kms/server, which runs the calls on an
 * in-process Kms as the access key's principal. What the wire carries is AWS's own protocol.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { KMSClient } from "@aws-sdk/client-kms";
import {
  AccessDeniedError,
  AlreadyExistsError,
  createKms,
  DisabledError,
  decryptMessage,
  encryptMessage,
  type FieldBinding,
  FieldEncryptionEngine,
  InvalidCiphertextError,
  InvalidMacError,
  isKmsError,
  type Kms,
  KmsInternalError,
  KmsKeyring,
  type KmsLike,
  MemoryDataKeyStore,
  NotFoundError,
} from "@kms/core";
import {
  createKmsSigner,
  createKmsVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { createKmsRequestHandler, createKmsServer } from "@kms/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AwsKms, awsKms } from "../src/index.ts";

const APP = "arn:aws:iam::000000000000:role/app";
const AUDITOR = "arn:aws:iam::000000000000:role/auditor";
const SECRETS = {
  AKIAAPP0000000000001: "app-secret-0123456789abcdefghij",
  AKIAAUDITOR000000001: "auditor-secret-0123456789abcdefgh",
};

let kms: Kms;
let server: http.Server;
let endpoint: string;

function remote(accessKeyId: keyof typeof SECRETS): AwsKms {
  return awsKms(
    new KMSClient({
      endpoint,
      region: kms.identity.region,
      credentials: { accessKeyId, secretAccessKey: SECRETS[accessKeyId] },
      maxAttempts: 1,
    }),
  );
}

beforeAll(async () => {
  kms = await createKms();
  server = createKmsServer({
    kms,
    credentials: {
      AKIAAPP0000000000001: { secretAccessKey: SECRETS.AKIAAPP0000000000001, principal: APP },
      AKIAAUDITOR000000001: {
        secretAccessKey: SECRETS.AKIAAUDITOR000000001,
        principal: AUDITOR,
      },
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await kms.close();
});

/** A key whose policy lets the auditor do nothing but DescribeKey: explicit deny wins. */
async function appOnlyKey(options: Parameters<Kms["createKey"]>[0] = {}): Promise<string> {
  const { keyMetadata } = await kms.createKey(options);
  await kms.putKeyPolicy({
    keyId: keyMetadata.keyId,
    policy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Effect: "Allow",
          Principal: { AWS: "arn:aws:iam::000000000000:root" },
          Action: "kms:*",
          Resource: "*",
        },
        {
          Effect: "Deny",
          Principal: { AWS: AUDITOR },
          NotAction: "kms:DescribeKey",
          Resource: "*",
        },
      ],
    }),
  });
  return keyMetadata.keyId;
}

describe("FieldEncryptionEngine over the wire", () => {
  const binding: FieldBinding = { model: "Patient", field: "ssn", context: { TenantId: "acme" } };
  const spec = { type: "string" } as const;

  it("writes and reads back through a cold engine; another tenant's context is refused", async () => {
    const keyId = await appOnlyKey();
    const dataKeyStore = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({
      kms: remote("AKIAAPP0000000000001"),
      keyId,
      dataKeyStore,
    });
    const stored = await writer.encrypt(binding, spec, "078-05-1120");

    const reader = new FieldEncryptionEngine({
      kms: remote("AKIAAPP0000000000001"),
      keyId,
      dataKeyStore,
    });
    expect(await reader.decrypt(binding, spec, stored)).toBe("078-05-1120");
    await expect(
      reader.decrypt({ ...binding, context: { TenantId: "ACME" } }, spec, stored),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);

    // The audit trail of the server's KMS names the verified caller of each data-key call.
    const events = await kms.audit.events();
    const dataKeyCalls = events.filter(
      (e) => e.eventName === "GenerateDataKey" || e.eventName === "Decrypt",
    );
    expect(dataKeyCalls.length).toBeGreaterThanOrEqual(2);
    expect(new Set(dataKeyCalls.map((e) => e.userIdentity.arn))).toEqual(new Set([APP]));
  });

  it("a principal the key policy denies gets AccessDeniedError, a KmsError like any other", async () => {
    const keyId = await appOnlyKey();
    const dataKeyStore = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({
      kms: remote("AKIAAPP0000000000001"),
      keyId,
      dataKeyStore,
    });
    const stored = await writer.encrypt(binding, spec, "078-05-1120");

    const auditor = new FieldEncryptionEngine({
      kms: remote("AKIAAUDITOR000000001"),
      keyId,
      dataKeyStore,
    });
    const denied = await auditor.decrypt(binding, spec, stored).catch((error: unknown) => error);
    expect(denied).toBeInstanceOf(AccessDeniedError);
    expect(isKmsError(denied) && denied.code).toBe("AccessDeniedException");
    await expect(auditor.encrypt(binding, spec, "x")).rejects.toBeInstanceOf(AccessDeniedError);
  });

  it("a disabled key, and an unknown one, fail with their own errors", async () => {
    const keyId = await appOnlyKey();
    await kms.disableKey({ keyId });
    const engine = new FieldEncryptionEngine({
      kms: remote("AKIAAPP0000000000001"),
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
    });
    await expect(engine.encrypt(binding, spec, "x")).rejects.toBeInstanceOf(DisabledError);
    const unknown = new FieldEncryptionEngine({
      kms: remote("AKIAAPP0000000000001"),
      keyId: "alias/nowhere",
      dataKeyStore: new MemoryDataKeyStore(),
    });
    await expect(unknown.encrypt(binding, spec, "x")).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("the message format and HTTP signatures over the wire", () => {
  it("a KmsKeyring message under two keys opens with either", async () => {
    const first = await appOnlyKey();
    const second = await appOnlyKey();
    const plaintext = new TextEncoder().encode("nightly export");
    const message = await encryptMessage(plaintext, {
      keyring: new KmsKeyring({ kms: remote("AKIAAPP0000000000001"), keyIds: [first, second] }),
      encryptionContext: { Purpose: "export" },
    });
    await kms.disableKey({ keyId: first });
    const opened = await decryptMessage(message, {
      keyring: new KmsKeyring({ kms: remote("AKIAAPP0000000000001"), keyIds: [first, second] }),
    });
    expect(new TextDecoder().decode(opened.plaintext)).toBe("nightly export");
    await kms.disableKey({ keyId: second });
    await expect(
      decryptMessage(message, {
        keyring: new KmsKeyring({ kms: remote("AKIAAPP0000000000001"), keyIds: [first, second] }),
      }),
    ).rejects.toThrow();
  });

  it("an HMAC-signed request verifies through the server; a forged MAC does not", async () => {
    const keyId = await appOnlyKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" });
    const api = remote("AKIAAPP0000000000001");
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
    const verifier = createKmsVerifier({ kms: api, keyId, algorithm: "hmac-sha256" });
    const policy = {
      keyLookup: (id: string) => (id === "hooks" ? verifier : undefined),
      contentDigest: "required" as const,
    };
    const received = {
      ...request,
      headers: { ...request.headers, ...added },
      body: new TextEncoder().encode(request.body),
    };
    expect((await verifyMessage(received, policy)).ok).toBe(true);

    const forged = { ...received, body: new TextEncoder().encode('{"id":8}') };
    expect(await verifyMessage(forged, policy)).toMatchObject({
      ok: false,
      check: "content-digest",
    });
    await expect(
      api.verifyMac({
        keyId,
        macAlgorithm: "HMAC_SHA_256",
        message: new Uint8Array([1]),
        mac: new Uint8Array(32),
      }),
    ).rejects.toBeInstanceOf(InvalidMacError);
  });
});

describe("key management over the wire", () => {
  it("creates, names, describes, shreds and restores a key; answers in core's errors", async () => {
    const app = remote("AKIAAPP0000000000001");
    const { keyMetadata } = await app.createKey({ description: "clinic a" });
    expect(keyMetadata).toMatchObject({
      keyState: "Enabled",
      enabled: true,
      description: "clinic a",
    });
    expect(keyMetadata.arn).toMatch(new RegExp(`:key/${keyMetadata.keyId}$`));

    const aliasName = `alias/over-the-wire-${keyMetadata.keyId.slice(0, 8)}`;
    await app.createAlias({ aliasName, targetKeyId: keyMetadata.keyId });
    expect((await app.describeKey({ keyId: aliasName })).keyMetadata.keyId).toBe(keyMetadata.keyId);
    await expect(
      app.createAlias({ aliasName, targetKeyId: keyMetadata.keyId }),
    ).rejects.toBeInstanceOf(AlreadyExistsError);

    const scheduled = await app.scheduleKeyDeletion({
      keyId: keyMetadata.keyId,
      pendingWindowInDays: 7,
    });
    expect(scheduled).toMatchObject({ keyId: keyMetadata.arn, keyState: "PendingDeletion" });
    expect(scheduled.deletionDate).toBeInstanceOf(Date);
    const pending = (await app.describeKey({ keyId: keyMetadata.keyId })).keyMetadata;
    expect(pending).toMatchObject({ keyState: "PendingDeletion", enabled: false });
    expect(pending.deletionDate?.getTime()).toBe(scheduled.deletionDate?.getTime());

    await app.cancelKeyDeletion({ keyId: keyMetadata.keyId });
    expect((await kms.describeKey({ keyId: keyMetadata.keyId })).keyMetadata.keyState).toBe(
      "Disabled",
    );
    await app.enableKey({ keyId: keyMetadata.keyId });
    expect((await app.describeKey({ keyId: keyMetadata.keyId })).keyMetadata.keyState).toBe(
      "Enabled",
    );
    await expect(app.describeKey({ keyId: "alias/none" })).rejects.toBeInstanceOf(NotFoundError);
  });

  it("a principal the key policy denies gets AccessDeniedError, and nothing changes", async () => {
    const keyId = await appOnlyKey();
    const auditor = remote("AKIAAUDITOR000000001");
    await expect(
      auditor.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.describeKey({ keyId })).keyMetadata.keyState).toBe("Enabled");
  });
});

describe("key management answers that are not AWS KMS's", () => {
  const answering = (output: object) =>
    awsKms({ send: async () => output } as unknown as KMSClient);

  it("a DescribeKey without KeyMetadata or its members is KmsInternalError", async () => {
    for (const output of [{}, { KeyMetadata: { KeyId: "k", Arn: "a", Enabled: true } }]) {
      await expect(answering(output).describeKey({ keyId: "k" })).rejects.toBeInstanceOf(
        KmsInternalError,
      );
    }
  });

  it("a ScheduleKeyDeletion without KeyId or KeyState is KmsInternalError", async () => {
    for (const output of [{ KeyState: "PendingDeletion" }, { KeyId: "k" }]) {
      await expect(answering(output).scheduleKeyDeletion({ keyId: "k" })).rejects.toBeInstanceOf(
        KmsInternalError,
      );
    }
  });

  it("a multi-Region primary with replicas: scheduled, with no deletionDate (AWS sends none)", async () => {
    const scheduled = await answering({
      KeyId: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1",
      KeyState: "PendingReplicaDeletion",
      PendingWindowInDays: 7,
    }).scheduleKeyDeletion({ keyId: "mrk-1" });
    expect(scheduled).toEqual({
      keyId: "arn:aws:kms:eu-west-1:111122223333:key/mrk-1",
      keyState: "PendingReplicaDeletion",
    });
  });

  it("a DeletionDate that is not a date is KmsInternalError", async () => {
    await expect(
      answering({
        KeyId: "k",
        KeyState: "PendingDeletion",
        DeletionDate: "soon",
      }).scheduleKeyDeletion({ keyId: "k" }),
    ).rejects.toBeInstanceOf(KmsInternalError);
  });
});

/**
 * Each KmsLike operation, called once on the in-process Kms and once through awsKms and the
 * server (the same Kms, the same principal): the remote answer must have exactly the members of
 * the local one, with the same values wherever they are not random bytes. A member the wrapper
 * forgets to read from the AWS answer (as KeyMaterialId once was in GenerateDataKey) fails here.
 */
describe("every KmsLike operation answers what the in-process Kms answers", () => {
  type Case = (kms: KmsLike) => Promise<object>;
  const message = new TextEncoder().encode("compare me");
  const as = { principal: APP };
  let keys: Record<"symmetric" | "rsaEncrypt" | "rsaSign" | "p256" | "ecdh" | "hmac", string>;
  let sealed: { symmetric: Uint8Array; rsa: Uint8Array; dataKey: Uint8Array };
  let signature: Uint8Array;
  let mac: Uint8Array;

  beforeAll(async () => {
    keys = {
      symmetric: await appOnlyKey(),
      rsaEncrypt: await appOnlyKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }),
      rsaSign: await appOnlyKey({ keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" }),
      p256: await appOnlyKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }),
      ecdh: await appOnlyKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }),
      hmac: await appOnlyKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }),
    };
    // A rotation, so that key material ids name one version among several.
    await kms.rotateKeyOnDemand({ keyId: keys.symmetric });
    sealed = {
      symmetric: (await kms.encrypt({ keyId: keys.symmetric, plaintext: message }, as))
        .ciphertextBlob,
      rsa: (
        await kms.encrypt(
          {
            keyId: keys.rsaEncrypt,
            plaintext: message,
            encryptionAlgorithm: "RSAES_OAEP_SHA_256",
          },
          as,
        )
      ).ciphertextBlob,
      dataKey: (
        await kms.generateDataKeyWithoutPlaintext({ keyId: keys.symmetric, keySpec: "AES_256" }, as)
      ).ciphertextBlob,
    };
    signature = (
      await kms.sign({ keyId: keys.p256, message, signingAlgorithm: "ECDSA_SHA_256" }, as)
    ).signature;
    mac = (await kms.generateMac({ keyId: keys.hmac, message, macAlgorithm: "HMAC_SHA_256" }, as))
      .mac;
  });

  // Typed by KmsLike's own keys: an operation added to it fails the build here until it has cases.
  const CASES: { readonly [M in keyof KmsLike]: Readonly<Record<string, Case>> } = {
    encrypt: {
      symmetric: (k) => k.encrypt({ keyId: keys.symmetric, plaintext: message }, as),
      "RSA-OAEP": (k) =>
        k.encrypt(
          { keyId: keys.rsaEncrypt, plaintext: message, encryptionAlgorithm: "RSAES_OAEP_SHA_256" },
          as,
        ),
    },
    decrypt: {
      symmetric: (k) => k.decrypt({ ciphertextBlob: sealed.symmetric }, as),
      "a data key": (k) => k.decrypt({ ciphertextBlob: sealed.dataKey }, as),
      "RSA-OAEP": (k) =>
        k.decrypt(
          {
            ciphertextBlob: sealed.rsa,
            keyId: keys.rsaEncrypt,
            encryptionAlgorithm: "RSAES_OAEP_SHA_256",
          },
          as,
        ),
    },
    generateDataKey: {
      AES_256: (k) => k.generateDataKey({ keyId: keys.symmetric, keySpec: "AES_256" }, as),
      "64 bytes": (k) => k.generateDataKey({ keyId: keys.symmetric, numberOfBytes: 64 }, as),
    },
    generateDataKeyWithoutPlaintext: {
      AES_256: (k) =>
        k.generateDataKeyWithoutPlaintext({ keyId: keys.symmetric, keySpec: "AES_256" }, as),
    },
    sign: {
      ECDSA: (k) => k.sign({ keyId: keys.p256, message, signingAlgorithm: "ECDSA_SHA_256" }, as),
      "RSA-PSS": (k) =>
        k.sign({ keyId: keys.rsaSign, message, signingAlgorithm: "RSASSA_PSS_SHA_256" }, as),
    },
    verify: {
      ECDSA: (k) =>
        k.verify({ keyId: keys.p256, message, signature, signingAlgorithm: "ECDSA_SHA_256" }, as),
    },
    generateMac: {
      HMAC_SHA_256: (k) =>
        k.generateMac({ keyId: keys.hmac, message, macAlgorithm: "HMAC_SHA_256" }, as),
    },
    verifyMac: {
      HMAC_SHA_256: (k) =>
        k.verifyMac({ keyId: keys.hmac, message, mac, macAlgorithm: "HMAC_SHA_256" }, as),
    },
    getPublicKey: {
      "an RSA encryption key": (k) => k.getPublicKey({ keyId: keys.rsaEncrypt }, as),
      "an RSA signing key": (k) => k.getPublicKey({ keyId: keys.rsaSign }, as),
      "a key agreement key": (k) => k.getPublicKey({ keyId: keys.ecdh }, as),
    },
  };

  /** Random bytes (ciphertexts, data keys, signatures) differ between two calls; the rest not. */
  const RANDOM = new Set(["ciphertextBlob", "plaintext", "signature"]);
  const comparable = (answer: object) =>
    Object.fromEntries(
      Object.entries(answer).filter(([member, value]) => {
        return !(value instanceof Uint8Array && RANDOM.has(member));
      }),
    );

  const cases = Object.entries(CASES).flatMap(([operation, byName]) =>
    Object.entries(byName).map(([name, call]) => [operation, name, call] as const),
  );

  it.each(cases)("%s (%s)", async (_operation, _name, call) => {
    const local = await call(kms);
    const remoteAnswer = await call(remote("AKIAAPP0000000000001"));
    expect(Object.keys(remoteAnswer).sort()).toEqual(Object.keys(local).sort());
    expect(comparable(remoteAnswer)).toEqual(comparable(local));
  });

  it("the key-management calls answer their members as the in-process Kms has them", async () => {
    const app = remote("AKIAAPP0000000000001");
    const created = (await app.createKey({ description: "compare" })).keyMetadata;
    const local = (await kms.describeKey({ keyId: created.keyId })).keyMetadata;
    const described = (await app.describeKey({ keyId: created.keyId })).keyMetadata;
    for (const answer of [created, described]) {
      const expected = Object.fromEntries(
        Object.keys(answer).map((m) => [m, local[m as keyof typeof local]]),
      );
      expect(answer).toEqual(expected);
    }
    const scheduled = await app.scheduleKeyDeletion({
      keyId: created.keyId,
      pendingWindowInDays: 7,
    });
    const pending = (await kms.describeKey({ keyId: created.keyId })).keyMetadata;
    expect(scheduled).toEqual({
      keyId: pending.arn,
      keyState: pending.keyState,
      deletionDate: pending.deletionDate,
    });
    expect((await app.describeKey({ keyId: created.keyId })).keyMetadata).toEqual({
      keyId: pending.keyId,
      arn: pending.arn,
      keyState: pending.keyState,
      enabled: pending.enabled,
      description: pending.description,
      deletionDate: pending.deletionDate,
    });
  });
});

describe("refusals that are no fault of the end caller", () => {
  it.each([
    ["a wrong secret", "AKIAAPP0000000000001", "not-the-secret", "InvalidSignatureException"],
    ["an unknown access key", "AKIAUNKNOWN000000001", "whatever", "UnrecognizedClientException"],
  ])("%s is KmsInternalError naming %s", async (_what, accessKeyId, secretAccessKey, code) => {
    const client = new KMSClient({
      endpoint,
      region: kms.identity.region,
      credentials: { accessKeyId, secretAccessKey },
      maxAttempts: 1,
    });
    const refused = await awsKms(client)
      .encrypt({ keyId: await appOnlyKey(), plaintext: new Uint8Array([1]) })
      .catch((error: unknown) => error);
    client.destroy();
    expect(refused).toBeInstanceOf(KmsInternalError);
    expect((refused as Error).message).toContain(`AWS KMS Encrypt failed with ${code}`);
  });

  it("the server's refusal of plain HTTP off loopback is KmsInternalError, not AccessDeniedError", async () => {
    const handler = createKmsRequestHandler({
      kms,
      credentials: {
        AKIAAPP0000000000001: { secretAccessKey: SECRETS.AKIAAPP0000000000001, principal: APP },
      },
    });
    // As node would report a connection that arrived on a network interface.
    const offLoopback = http.createServer((req, res) => {
      Object.defineProperty(req.socket, "localAddress", { value: "10.0.0.5" });
      handler(req, res);
    });
    await new Promise<void>((resolve) => offLoopback.listen(0, "127.0.0.1", resolve));
    try {
      const client = new KMSClient({
        endpoint: `http://127.0.0.1:${(offLoopback.address() as AddressInfo).port}`,
        region: kms.identity.region,
        credentials: {
          accessKeyId: "AKIAAPP0000000000001",
          secretAccessKey: SECRETS.AKIAAPP0000000000001,
        },
        maxAttempts: 1,
      });
      const keyId = await appOnlyKey();
      const refused = await awsKms(client)
        .encrypt({ keyId, plaintext: new Uint8Array([1]) })
        .catch((error: unknown) => error);
      client.destroy();
      expect(refused).toBeInstanceOf(KmsInternalError);
      expect(refused).not.toBeInstanceOf(AccessDeniedError);
      expect(isKmsError(refused) && refused.clientFault).toBe(false);
      expect((refused as Error).message).toMatch(
        /^AWS KMS Encrypt failed with InsecureTransportException: plain HTTP is served on loopback/,
      );
      expect((refused as Error).cause).toMatchObject({
        name: "InsecureTransportException",
        $metadata: { httpStatusCode: 403 },
      });
    } finally {
      offLoopback.closeAllConnections();
      await new Promise((resolve) => offLoopback.close(resolve));
    }
  });
});
