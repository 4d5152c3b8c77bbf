/**
 * Errors as the SDK surfaces them (its exception class, our code and message), the principal
 * each call runs as, and what error bodies never carry.
 */
import {
  AlreadyExistsException,
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  DisabledException,
  DisableKeyCommand,
  DryRunOperationException,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateMacCommand,
  GenerateRandomCommand,
  IncorrectKeyException,
  InvalidAliasNameException,
  InvalidCiphertextException,
  InvalidGrantTokenException,
  InvalidKeyUsageException,
  InvalidMarkerException,
  KMSClient,
  KMSInternalException,
  KMSInvalidMacException,
  KMSInvalidSignatureException,
  KMSInvalidStateException,
  KMSServiceException,
  ListKeysCommand,
  MalformedPolicyDocumentException,
  NotFoundException,
  PutKeyPolicyCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  TagException,
  TagResourceCommand,
  UnsupportedOperationException,
  VerifyCommand,
  VerifyMacCommand,
} from "@aws-sdk/client-kms";
import { type Kms, KmsInternalError, ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, BOB, type Harness, REGION, startHarness } from "./support/harness.ts";

let h: Harness;
let alice: KMSClient;
let bob: KMSClient;
let symmetric: string;
let ciphertext: Uint8Array;
const SECRET_PLAINTEXT = "the launch codes are 0000";

beforeAll(async () => {
  h = await startHarness();
  alice = h.client(ALICE);
  bob = h.client(BOB);
  symmetric = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
  ciphertext = (
    await alice.send(
      new EncryptCommand({
        KeyId: symmetric,
        Plaintext: Buffer.from(SECRET_PLAINTEXT),
        EncryptionContext: { Tenant: "a" },
      }),
    )
  ).CiphertextBlob!;
});
afterAll(async () => {
  await h.close();
});

async function failure(promise: Promise<unknown>): Promise<KMSServiceException> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "the call was expected to fail").toBeInstanceOf(KMSServiceException);
  return error as KMSServiceException;
}

/** The SDK built `type` from our response, with our code and our message. */
function expectSurfaced(
  error: KMSServiceException,
  type: abstract new (...args: never[]) => Error,
  code: string,
): void {
  expect(error).toBeInstanceOf(type);
  expect(error.name).toBe(code);
  expect(error.$fault).toBe("client");
  expect(error.$metadata.httpStatusCode).toBe(400);
  const sent = h.responses.find((r) => r.headers["x-amzn-RequestId"] === error.$metadata.requestId);
  expect(sent, "a recorded response with the SDK's request id").toBeDefined();
  expect(JSON.parse(sent!.body)).toEqual({ __type: code, message: error.message });
}

describe("KMS errors through the SDK", () => {
  it("NotFoundException", async () => {
    const e = await failure(
      alice.send(new DescribeKeyCommand({ KeyId: "1234abcd-12ab-34cd-56ef-1234567890ab" })),
    );
    expectSurfaced(e, NotFoundException, "NotFoundException");
  });

  it("DisabledException and KMSInvalidStateException", async () => {
    const keyId = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await alice.send(new DisableKeyCommand({ KeyId: keyId }));
    const disabled = await failure(
      alice.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x") })),
    );
    expectSurfaced(disabled, DisabledException, "DisabledException");
    const other = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    await alice.send(new ScheduleKeyDeletionCommand({ KeyId: other, PendingWindowInDays: 7 }));
    const pending = await failure(
      alice.send(new EncryptCommand({ KeyId: other, Plaintext: Buffer.from("x") })),
    );
    expectSurfaced(pending, KMSInvalidStateException, "KMSInvalidStateException");
  });

  it("InvalidCiphertextException for a wrong context or a tampered blob", async () => {
    const wrong = await failure(
      alice.send(
        new DecryptCommand({ CiphertextBlob: ciphertext, EncryptionContext: { tenant: "a" } }),
      ),
    );
    expectSurfaced(wrong, InvalidCiphertextException, "InvalidCiphertextException");
    const tampered = Uint8Array.from(ciphertext);
    tampered[tampered.length - 1]! ^= 1;
    const bad = await failure(
      alice.send(
        new DecryptCommand({ CiphertextBlob: tampered, EncryptionContext: { Tenant: "a" } }),
      ),
    );
    expectSurfaced(bad, InvalidCiphertextException, "InvalidCiphertextException");
  });

  it("IncorrectKeyException", async () => {
    const other = (await alice.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const e = await failure(
      alice.send(
        new DecryptCommand({
          CiphertextBlob: ciphertext,
          EncryptionContext: { Tenant: "a" },
          KeyId: other,
        }),
      ),
    );
    expectSurfaced(e, IncorrectKeyException, "IncorrectKeyException");
  });

  it("KMSInvalidSignatureException and KMSInvalidMacException", async () => {
    const ecc = (
      await alice.send(new CreateKeyCommand({ KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY" }))
    ).KeyMetadata!.KeyId!;
    const { Signature } = await alice.send(
      new SignCommand({ KeyId: ecc, Message: Buffer.from("m"), SigningAlgorithm: "ECDSA_SHA_256" }),
    );
    const sig = await failure(
      alice.send(
        new VerifyCommand({
          KeyId: ecc,
          Message: Buffer.from("n"),
          Signature: Signature!,
          SigningAlgorithm: "ECDSA_SHA_256",
        }),
      ),
    );
    expectSurfaced(sig, KMSInvalidSignatureException, "KMSInvalidSignatureException");
    const hmac = (
      await alice.send(
        new CreateKeyCommand({ KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC" }),
      )
    ).KeyMetadata!.KeyId!;
    const mac = await failure(
      alice.send(
        new VerifyMacCommand({
          KeyId: hmac,
          Message: Buffer.from("m"),
          Mac: new Uint8Array(32),
          MacAlgorithm: "HMAC_SHA_256",
        }),
      ),
    );
    expectSurfaced(mac, KMSInvalidMacException, "KMSInvalidMacException");
    const usage = await failure(
      alice.send(
        new GenerateMacCommand({
          KeyId: symmetric,
          Message: Buffer.from("m"),
          MacAlgorithm: "HMAC_SHA_256",
        }),
      ),
    );
    expectSurfaced(usage, InvalidKeyUsageException, "InvalidKeyUsageException");
  });

  it("ValidationException, which the SDK has no class for", async () => {
    const e = await failure(alice.send(new GenerateRandomCommand({ NumberOfBytes: 0 })));
    expectSurfaced(e, KMSServiceException, "ValidationException");
    expect(e.message).toContain("numberOfBytes");
  });

  it("the other modeled exceptions", async () => {
    await alice.send(new CreateAliasCommand({ AliasName: "alias/taken", TargetKeyId: symmetric }));
    expectSurfaced(
      await failure(
        alice.send(new CreateAliasCommand({ AliasName: "alias/taken", TargetKeyId: symmetric })),
      ),
      AlreadyExistsException,
      "AlreadyExistsException",
    );
    expectSurfaced(
      await failure(
        alice.send(
          new CreateAliasCommand({ AliasName: "alias/aws/reserved", TargetKeyId: symmetric }),
        ),
      ),
      InvalidAliasNameException,
      "InvalidAliasNameException",
    );
    expectSurfaced(
      await failure(alice.send(new ListKeysCommand({ Marker: "not-a-marker" }))),
      InvalidMarkerException,
      "InvalidMarkerException",
    );
    expectSurfaced(
      await failure(alice.send(new PutKeyPolicyCommand({ KeyId: symmetric, Policy: "{not json" }))),
      MalformedPolicyDocumentException,
      "MalformedPolicyDocumentException",
    );
    expectSurfaced(
      await failure(
        alice.send(
          new TagResourceCommand({ KeyId: symmetric, Tags: [{ TagKey: "aws:x", TagValue: "y" }] }),
        ),
      ),
      TagException,
      "TagException",
    );
    expectSurfaced(
      await failure(
        alice.send(
          new EncryptCommand({
            KeyId: symmetric,
            Plaintext: Buffer.from("x"),
            GrantTokens: ["not-a-token"],
          }),
        ),
      ),
      InvalidGrantTokenException,
      "InvalidGrantTokenException",
    );
    expectSurfaced(
      await failure(
        alice.send(
          new EncryptCommand({ KeyId: symmetric, Plaintext: Buffer.from("x"), DryRun: true }),
        ),
      ),
      DryRunOperationException,
      "DryRunOperationException",
    );
    expectSurfaced(
      await failure(
        alice.send(new CreateKeyCommand({ CustomKeyStoreId: "cks-1234567890abcdef0" })),
      ),
      UnsupportedOperationException,
      "UnsupportedOperationException",
    );
  });

  it("runs DryRun on Sign as a dry run: refused with DryRunOperationException, no signature", async () => {
    const ecc = (
      await alice.send(new CreateKeyCommand({ KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY" }))
    ).KeyMetadata!.KeyId!;
    const e = await failure(
      alice.send(
        new SignCommand({
          KeyId: ecc,
          Message: Buffer.from("m"),
          SigningAlgorithm: "ECDSA_SHA_256",
          DryRun: true,
        }),
      ),
    );
    expectSurfaced(e, DryRunOperationException, "DryRunOperationException");
  });
});

describe("principals", () => {
  it("runs each call as the principal of the access key that signed it", async () => {
    const policy = JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "root",
          Effect: "Allow",
          Principal: { AWS: "arn:aws:iam::111122223333:root" },
          Action: "kms:*",
          Resource: "*",
        },
        {
          Sid: "no-bob",
          Effect: "Deny",
          Principal: { AWS: BOB.principal },
          Action: "kms:*",
          Resource: "*",
        },
      ],
    });
    const keyId = (await alice.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!.KeyId!;
    const ok = await alice.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: "AES_256" }));
    const denied = await failure(
      bob.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: "AES_256" })),
    );
    // AWS KMS answers AccessDeniedException, which the SDK has no class for.
    expectSurfaced(denied, KMSServiceException, "AccessDeniedException");
    expect(denied.message).toContain(BOB.principal);

    const events = await h.kms.audit.events();
    const allowed = events.find((e) => e.requestID === ok.$metadata.requestId)!;
    expect(allowed.eventName).toBe("GenerateDataKey");
    expect(allowed.userIdentity.arn).toBe(ALICE.principal);
    // Which of a principal's keys signed the call, as CloudTrail records it.
    expect(allowed.userIdentity.accessKeyId).toBe(ALICE.accessKeyId);
    expect(allowed.sourceIPAddress).toBe("127.0.0.1");
    expect(allowed.errorCode).toBeUndefined();
    const refused = events.find((e) => e.requestID === denied.$metadata.requestId)!;
    expect(refused.userIdentity.arn).toBe(BOB.principal);
    expect(refused.userIdentity.accessKeyId).toBe(BOB.accessKeyId);
    expect(refused.errorCode).toBe("AccessDeniedException");
    expect(refused.sourceIPAddress).toBe("127.0.0.1");
  });

  it("lets a grant made for BOB's principal be used only by BOB's key", async () => {
    const policy = JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "alice",
          Effect: "Allow",
          Principal: { AWS: ALICE.principal },
          Action: "kms:*",
          Resource: "*",
        },
      ],
    });
    const keyId = (await alice.send(new CreateKeyCommand({ Policy: policy }))).KeyMetadata!.KeyId!;
    await alice.send(
      new CreateGrantCommand({
        KeyId: keyId,
        GranteePrincipal: BOB.principal,
        Operations: ["Encrypt"],
      }),
    );
    await bob.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x") }));
    const stranger = new KMSClient({
      endpoint: h.endpoint,
      region: REGION,
      credentials: { accessKeyId: BOB.accessKeyId, secretAccessKey: ALICE.secretAccessKey },
      maxAttempts: 1,
    });
    const e = await failure(
      stranger.send(new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x") })),
    );
    expect(e.name).toBe("InvalidSignatureException");
    stranger.destroy();
  });
});

describe("internal failures", () => {
  it("answer 500 KMSInternalException without their detail", async () => {
    const real = h.kms;
    const failing = {
      identity: real.identity,
      encrypt: () => Promise.reject(new Error("connection to postgres://kms:hunter2@db failed")),
      describeKey: () =>
        Promise.reject(new KmsInternalError("store sqlite:/var/lib/kms.db is corrupt")),
    } as unknown as Kms;
    const broken = await startHarness({ kms: failing });
    try {
      const client = broken.client();
      for (const command of [
        new EncryptCommand({ KeyId: "k", Plaintext: Buffer.from("x") }),
        new DescribeKeyCommand({ KeyId: "k" }),
      ]) {
        const e = await (client.send(command as EncryptCommand) as Promise<unknown>).catch(
          (x: unknown) => x,
        );
        expect(e).toBeInstanceOf(KMSInternalException);
        const err = e as KMSInternalException;
        expect(err.$metadata.httpStatusCode).toBe(500);
        expect(err.$fault).toBe("server");
        expect(err.message).not.toMatch(/hunter2|postgres|sqlite|corrupt/);
        expect(err.message).toContain(err.$metadata.requestId!);
      }
    } finally {
      // The fake Kms has no close(); only the server goes.
      await broken.close().catch(() => undefined);
    }
  });
});

describe("what error bodies never carry", () => {
  it("holds no secret, plaintext, data key or private key", () => {
    const secrets = [
      ALICE.secretAccessKey,
      BOB.secretAccessKey,
      Buffer.from(SECRET_PLAINTEXT).toString("base64"),
      SECRET_PLAINTEXT,
    ];
    for (const r of h.responses) {
      if (r.status !== 200) continue;
      const body = JSON.parse(r.body) as Record<string, unknown>;
      for (const member of ["Plaintext", "PrivateKeyPlaintext", "SharedSecret"]) {
        if (typeof body[member] === "string") secrets.push(body[member] as string);
      }
    }
    const errors = h.responses.filter((r) => r.status >= 400);
    expect(errors.length).toBeGreaterThan(15);
    expect(secrets.length).toBeGreaterThan(4);
    for (const r of errors) {
      expect(Object.keys(JSON.parse(r.body)).sort()).toEqual(["__type", "message"]);
      for (const secret of secrets) expect(r.body).not.toContain(secret);
    }
  });
});

describe("a credentials lookup function", () => {
  it("a rotated secret takes effect at once: the old one is refused, the new one works", async () => {
    // Derived signing keys are cached per secret and day; a rotation must not be masked by them.
    let secret: string = ALICE.secretAccessKey;
    const served = await startHarness({
      credentials: (accessKeyId: string) =>
        accessKeyId === ALICE.accessKeyId
          ? { secretAccessKey: secret, principal: ALICE.principal }
          : undefined,
    });
    try {
      const old = served.client(ALICE);
      const random = () => new GenerateRandomCommand({ NumberOfBytes: 2 });
      expect((await old.send(random())).Plaintext).toHaveLength(2);
      secret = `${ALICE.secretAccessKey}-rotated`;
      expect((await failure(old.send(random()))).name).toBe("InvalidSignatureException");
      const rotated = served.client({ accessKeyId: ALICE.accessKeyId, secretAccessKey: secret });
      expect((await rotated.send(random())).Plaintext).toHaveLength(2);
      secret = ALICE.secretAccessKey;
      expect((await failure(rotated.send(random()))).name).toBe("InvalidSignatureException");
      expect((await old.send(random())).Plaintext).toHaveLength(2);
    } finally {
      await served.close();
    }
  });

  it("resolves keys at call time, and its failures are the server's (500), not the client's", async () => {
    let revoked = false;
    const lookup = async (accessKeyId: string) => {
      if (accessKeyId === "AKIABROKEN") return { secretAccessKey: "", principal: "x" };
      if (accessKeyId === "AKIATHROWS") throw new Error("directory unreachable");
      // A KmsError with a client fault is still the lookup's failure, not the caller's.
      if (accessKeyId === "AKIAREFUSED") {
        throw new ValidationError("directory ldap://dir.internal refused the bind");
      }
      if (accessKeyId === ALICE.accessKeyId && !revoked) {
        return { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal };
      }
      return undefined;
    };
    const served = await startHarness({ credentials: lookup });
    try {
      const client = served.client(ALICE);
      expect(
        (await client.send(new GenerateRandomCommand({ NumberOfBytes: 2 }))).Plaintext,
      ).toHaveLength(2);
      revoked = true;
      expect(
        (await failure(client.send(new GenerateRandomCommand({ NumberOfBytes: 2 })))).name,
      ).toBe("UnrecognizedClientException");
      for (const accessKeyId of ["AKIABROKEN", "AKIATHROWS", "AKIAREFUSED"]) {
        const e = await failure(
          served
            .client({ accessKeyId, secretAccessKey: "s" })
            .send(new GenerateRandomCommand({ NumberOfBytes: 2 })),
        );
        expect(e).toBeInstanceOf(KMSInternalException);
        expect(e.$metadata.httpStatusCode).toBe(500);
        expect(e.message).not.toContain("directory");
      }
    } finally {
      await served.close();
    }
  });

  it("a principal core would refuse is the lookup's failure (500), not the client's ValidationException", async () => {
    const served = await startHarness({
      credentials: () => ({ secretAccessKey: ALICE.secretAccessKey, principal: "p".repeat(2049) }),
    });
    try {
      const e = await failure(
        served.client(ALICE).send(new GenerateRandomCommand({ NumberOfBytes: 2 })),
      );
      expect(e).toBeInstanceOf(KMSInternalException);
      expect(e.$metadata.httpStatusCode).toBe(500);
    } finally {
      await served.close();
    }
  });
});
