/**
 * Every operation the server serves, driven by the real KMSClient of @aws-sdk/client-kms over
 * HTTP: what a user of the SDK sees, members and types included.
 */
import {
  constants,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  verify as verifyLocally,
} from "node:crypto";
import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DeleteAliasCommand,
  DeriveSharedSecretCommand,
  DescribeKeyCommand,
  DisableKeyCommand,
  DisableKeyRotationCommand,
  EnableKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GenerateDataKeyPairCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  GenerateMacCommand,
  GenerateRandomCommand,
  GetKeyPolicyCommand,
  GetKeyRotationStatusCommand,
  GetPublicKeyCommand,
  type KMSClient,
  ListAliasesCommand,
  ListGrantsCommand,
  ListKeyPoliciesCommand,
  ListKeyRotationsCommand,
  ListKeysCommand,
  ListResourceTagsCommand,
  ListRetirableGrantsCommand,
  PutKeyPolicyCommand,
  paginateListKeys,
  ReEncryptCommand,
  RetireGrantCommand,
  RevokeGrantCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateAliasCommand,
  UpdateKeyDescriptionCommand,
  VerifyCommand,
  VerifyMacCommand,
} from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ALICE, BOB, type Harness, startHarness } from "./support/harness.ts";

let h: Harness;
let alice: KMSClient;
let bob: KMSClient;
beforeAll(async () => {
  h = await startHarness();
  alice = h.client(ALICE);
  bob = h.client(BOB);
});
afterAll(async () => {
  await h.close();
});

async function symmetricKey(description = "test"): Promise<string> {
  const { KeyMetadata } = await alice.send(new CreateKeyCommand({ Description: description }));
  return KeyMetadata!.KeyId!;
}

/** Context keys that differ only in case are different keys (AWS: case-sensitive). */
const MIXED_CONTEXT = { Tenant: "acme", tenant: "other", TENANT: "third", "Order-ID": "42" };

describe("keys", () => {
  it("creates and describes a key with every metadata member typed as the SDK expects", async () => {
    const created = await alice.send(
      new CreateKeyCommand({
        Description: "orders",
        Tags: [
          { TagKey: "Env", TagValue: "prod" },
          { TagKey: "env", TagValue: "lower" },
        ],
      }),
    );
    const md = created.KeyMetadata!;
    expect(md.AWSAccountId).toBe("111122223333");
    expect(md.Arn).toBe(`arn:aws:kms:eu-test-1:111122223333:key/${md.KeyId}`);
    expect(md.CreationDate).toBeInstanceOf(Date);
    expect(Math.abs(md.CreationDate!.getTime() - Date.now())).toBeLessThan(60_000);
    expect(md).toMatchObject({
      Enabled: true,
      Description: "orders",
      KeyUsage: "ENCRYPT_DECRYPT",
      KeyState: "Enabled",
      Origin: "AWS_KMS",
      KeyManager: "CUSTOMER",
      KeySpec: "SYMMETRIC_DEFAULT",
      CustomerMasterKeySpec: "SYMMETRIC_DEFAULT",
      EncryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
      MultiRegion: false,
    });
    expect(md.CurrentKeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    const described = await alice.send(new DescribeKeyCommand({ KeyId: md.Arn! }));
    expect(described.KeyMetadata).toEqual(md);
    const tags = await alice.send(new ListResourceTagsCommand({ KeyId: md.KeyId! }));
    expect(tags.Tags).toEqual([
      { TagKey: "Env", TagValue: "prod" },
      { TagKey: "env", TagValue: "lower" },
    ]);
  });

  it("lists keys page by page with Limit and Marker", async () => {
    for (let i = 0; i < 3; i++) await symmetricKey(`page-${i}`);
    const first = await alice.send(new ListKeysCommand({ Limit: 2 }));
    expect(first.Keys).toHaveLength(2);
    expect(first.Truncated).toBe(true);
    expect(first.NextMarker).toBeTypeOf("string");
    const second = await alice.send(new ListKeysCommand({ Limit: 2, Marker: first.NextMarker! }));
    expect(second.Keys![0]!.KeyId).not.toBe(first.Keys![0]!.KeyId);
    // The SDK's own paginator follows NextMarker to the end.
    const all: string[] = [];
    for await (const page of paginateListKeys({ client: alice, pageSize: 2 }, {})) {
      for (const k of page.Keys ?? []) all.push(k.KeyId!);
    }
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBeGreaterThanOrEqual(4);
    expect(first.Keys![0]!.KeyArn).toContain(first.Keys![0]!.KeyId!);
  });

  it("updates the description, disables and enables", async () => {
    const keyId = await symmetricKey();
    await alice.send(new UpdateKeyDescriptionCommand({ KeyId: keyId, Description: "renamed" }));
    await alice.send(new DisableKeyCommand({ KeyId: keyId }));
    let md = (await alice.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
    expect(md).toMatchObject({ Description: "renamed", Enabled: false, KeyState: "Disabled" });
    await alice.send(new EnableKeyCommand({ KeyId: keyId }));
    md = (await alice.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
    expect(md.KeyState).toBe("Enabled");
  });

  it("schedules and cancels deletion", async () => {
    const keyId = await symmetricKey();
    const scheduled = await alice.send(
      new ScheduleKeyDeletionCommand({ KeyId: keyId, PendingWindowInDays: 7 }),
    );
    expect(scheduled.KeyState).toBe("PendingDeletion");
    expect(scheduled.PendingWindowInDays).toBe(7);
    expect(scheduled.DeletionDate).toBeInstanceOf(Date);
    const days = (scheduled.DeletionDate!.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(6.9);
    expect(days).toBeLessThan(7.1);
    const md = (await alice.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!;
    expect(md.DeletionDate?.getTime()).toBe(scheduled.DeletionDate!.getTime());
    const cancelled = await alice.send(new CancelKeyDeletionCommand({ KeyId: keyId }));
    expect(cancelled.KeyId).toContain(keyId);
    expect((await alice.send(new DescribeKeyCommand({ KeyId: keyId }))).KeyMetadata!.KeyState).toBe(
      "Disabled",
    );
  });
});

describe("aliases", () => {
  it("creates, lists, repoints and deletes an alias", async () => {
    const a = await symmetricKey();
    const b = await symmetricKey();
    await alice.send(new CreateAliasCommand({ AliasName: "alias/Orders", TargetKeyId: a }));
    await alice.send(new CreateAliasCommand({ AliasName: "alias/orders-2", TargetKeyId: a }));
    const byAlias = await alice.send(new DescribeKeyCommand({ KeyId: "alias/Orders" }));
    expect(byAlias.KeyMetadata!.KeyId).toBe(a);
    const listed = await alice.send(new ListAliasesCommand({ KeyId: a }));
    expect(listed.Aliases!.map((x) => x.AliasName)).toEqual(["alias/Orders", "alias/orders-2"]);
    const entry = listed.Aliases![0]!;
    expect(entry.AliasArn).toBe("arn:aws:kms:eu-test-1:111122223333:alias/Orders");
    expect(entry.TargetKeyId).toBe(a);
    expect(entry.CreationDate).toBeInstanceOf(Date);
    expect(entry.LastUpdatedDate).toBeInstanceOf(Date);
    const page = await alice.send(new ListAliasesCommand({ KeyId: a, Limit: 1 }));
    expect(page.Aliases).toHaveLength(1);
    expect(page.Truncated).toBe(true);
    const rest = await alice.send(
      new ListAliasesCommand({ KeyId: a, Limit: 1, Marker: page.NextMarker! }),
    );
    expect(rest.Aliases!.map((x) => x.AliasName)).toEqual(["alias/orders-2"]);
    await alice.send(new UpdateAliasCommand({ AliasName: "alias/Orders", TargetKeyId: b }));
    expect(
      (await alice.send(new DescribeKeyCommand({ KeyId: "alias/Orders" }))).KeyMetadata!.KeyId,
    ).toBe(b);
    await alice.send(new DeleteAliasCommand({ AliasName: "alias/Orders" }));
    const after = await alice.send(new ListAliasesCommand({ KeyId: b }));
    expect(after.Aliases).toEqual([]);
  });

  it("is refused where AWS takes a key id or key ARN only: NotFoundException, nothing changed", async () => {
    const keyId = await symmetricKey();
    await alice.send(new CreateAliasCommand({ AliasName: "alias/managed", TargetKeyId: keyId }));
    const policy = (await alice.send(new GetKeyPolicyCommand({ KeyId: keyId }))).Policy!;
    for (const alias of ["alias/managed", "arn:aws:kms:eu-test-1:111122223333:alias/managed"]) {
      const calls: (() => Promise<unknown>)[] = [
        () => alice.send(new PutKeyPolicyCommand({ KeyId: alias, Policy: policy })),
        () =>
          alice.send(
            new TagResourceCommand({ KeyId: alias, Tags: [{ TagKey: "t", TagValue: "v" }] }),
          ),
        () =>
          alice.send(
            new CreateGrantCommand({
              KeyId: alias,
              GranteePrincipal: BOB.principal,
              Operations: ["Decrypt"],
            }),
          ),
        () => alice.send(new EnableKeyRotationCommand({ KeyId: alias })),
        () => alice.send(new UpdateKeyDescriptionCommand({ KeyId: alias, Description: "changed" })),
        () => alice.send(new GetKeyRotationStatusCommand({ KeyId: alias })),
        () => alice.send(new ListGrantsCommand({ KeyId: alias })),
      ];
      for (const call of calls) {
        await expect(call()).rejects.toMatchObject({
          name: "NotFoundException",
          message: expect.stringMatching(/takes a key id or key ARN, not an alias$/),
        });
      }
    }
    expect((await alice.send(new ListGrantsCommand({ KeyId: keyId }))).Grants).toEqual([]);
    expect((await alice.send(new ListResourceTagsCommand({ KeyId: keyId }))).Tags).toEqual([]);
    const md = (await alice.send(new DescribeKeyCommand({ KeyId: "alias/managed" }))).KeyMetadata!;
    expect(md.Description).toBe("test");
    expect(
      (await alice.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled,
    ).toBe(false);
  });
});

describe("symmetric encryption", () => {
  it("encrypts and decrypts with a mixed-case encryption context, kept key for key", async () => {
    const keyId = await symmetricKey();
    const plaintext = Buffer.from("card 4111 1111 1111 1111");
    const enc = await alice.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: MIXED_CONTEXT }),
    );
    expect(enc.KeyId).toBe(`arn:aws:kms:eu-test-1:111122223333:key/${keyId}`);
    expect(enc.EncryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    const dec = await alice.send(
      new DecryptCommand({
        CiphertextBlob: enc.CiphertextBlob!,
        EncryptionContext: { ...MIXED_CONTEXT },
      }),
    );
    expect(Buffer.from(dec.Plaintext!)).toEqual(plaintext);
    expect(dec.KeyId).toBe(enc.KeyId);
    expect(dec.EncryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    expect(dec.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);

    // The context core received is the one sent, keys untouched.
    const events = await h.kms.audit.events();
    const encrypted = events.filter((e) => e.eventName === "Encrypt").at(-1)!;
    expect(encrypted.requestParameters?.encryptionContext).toEqual(MIXED_CONTEXT);
  });

  it("refuses to decrypt with a context that differs only in the case of a key or a value", async () => {
    const keyId = await symmetricKey();
    const enc = await alice.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: Buffer.from("x"),
        EncryptionContext: { Tenant: "acme" },
      }),
    );
    for (const context of [{ tenant: "acme" }, { TENANT: "acme" }, { Tenant: "Acme" }, {}]) {
      await expect(
        alice.send(
          new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob!, EncryptionContext: context }),
        ),
      ).rejects.toMatchObject({ name: "InvalidCiphertextException" });
    }
    const ok = await alice.send(
      new DecryptCommand({
        CiphertextBlob: enc.CiphertextBlob!,
        EncryptionContext: { Tenant: "acme" },
      }),
    );
    expect(Buffer.from(ok.Plaintext!).toString()).toBe("x");
  });

  it("keeps unusual context keys as data (__proto__, constructor, empty-looking)", async () => {
    const keyId = await symmetricKey();
    const context = JSON.parse(
      '{"__proto__":"p","constructor":"c","hasOwnProperty":"h"}',
    ) as Record<string, string>;
    const enc = await alice.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("x"), EncryptionContext: context }),
    );
    const dec = await alice.send(
      new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob!, EncryptionContext: context }),
    );
    expect(Buffer.from(dec.Plaintext!).toString()).toBe("x");
    await expect(
      alice.send(
        new DecryptCommand({
          CiphertextBlob: enc.CiphertextBlob!,
          EncryptionContext: { constructor: "c", hasOwnProperty: "h" },
        }),
      ),
    ).rejects.toMatchObject({ name: "InvalidCiphertextException" });
  });

  it("re-encrypts under another key and context without returning the plaintext", async () => {
    const source = await symmetricKey();
    const destination = await symmetricKey();
    const enc = await alice.send(
      new EncryptCommand({
        KeyId: source,
        Plaintext: Buffer.from("moved"),
        EncryptionContext: { A: "1" },
      }),
    );
    const re = await alice.send(
      new ReEncryptCommand({
        CiphertextBlob: enc.CiphertextBlob!,
        SourceEncryptionContext: { A: "1" },
        DestinationKeyId: destination,
        DestinationEncryptionContext: { a: "1" },
      }),
    );
    expect(re.SourceKeyId).toContain(source);
    expect(re.KeyId).toContain(destination);
    expect(re.SourceEncryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    expect(re.DestinationEncryptionAlgorithm).toBe("SYMMETRIC_DEFAULT");
    expect(re).not.toHaveProperty("Plaintext");
    const dec = await alice.send(
      new DecryptCommand({ CiphertextBlob: re.CiphertextBlob!, EncryptionContext: { a: "1" } }),
    );
    expect(Buffer.from(dec.Plaintext!).toString()).toBe("moved");
    await expect(
      alice.send(
        new DecryptCommand({ CiphertextBlob: re.CiphertextBlob!, EncryptionContext: { A: "1" } }),
      ),
    ).rejects.toMatchObject({ name: "InvalidCiphertextException" });
  });

  it("generates data keys with and without plaintext", async () => {
    const keyId = await symmetricKey();
    const dk = await alice.send(
      new GenerateDataKeyCommand({
        KeyId: keyId,
        KeySpec: "AES_256",
        EncryptionContext: MIXED_CONTEXT,
      }),
    );
    expect(dk.Plaintext).toHaveLength(32);
    expect(dk.KeyId).toContain(keyId);
    const opened = await alice.send(
      new DecryptCommand({ CiphertextBlob: dk.CiphertextBlob!, EncryptionContext: MIXED_CONTEXT }),
    );
    expect(Buffer.from(opened.Plaintext!)).toEqual(Buffer.from(dk.Plaintext!));
    const blind = await alice.send(
      new GenerateDataKeyWithoutPlaintextCommand({ KeyId: keyId, NumberOfBytes: 16 }),
    );
    expect(blind).not.toHaveProperty("Plaintext");
    const blindOpened = await alice.send(
      new DecryptCommand({ CiphertextBlob: blind.CiphertextBlob! }),
    );
    expect(blindOpened.Plaintext).toHaveLength(16);
  });

  it("generates random bytes", async () => {
    const a = await alice.send(new GenerateRandomCommand({ NumberOfBytes: 32 }));
    const b = await alice.send(new GenerateRandomCommand({ NumberOfBytes: 32 }));
    expect(a.Plaintext).toHaveLength(32);
    expect(Buffer.from(a.Plaintext!)).not.toEqual(Buffer.from(b.Plaintext!));
  });
});

describe("asymmetric keys", () => {
  it.each([
    ["ECC_NIST_P256", "ECDSA_SHA_256", "sha256", {}],
    [
      "RSA_2048",
      "RSASSA_PSS_SHA_256",
      "sha256",
      { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
    ],
    ["RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", "sha256", { padding: constants.RSA_PKCS1_PADDING }],
  ] as const)(
    "signs with %s / %s; the signature verifies locally and through Verify",
    async (keySpec, algorithm, hash, opts) => {
      const { KeyMetadata } = await alice.send(
        new CreateKeyCommand({ KeySpec: keySpec, KeyUsage: "SIGN_VERIFY" }),
      );
      const keyId = KeyMetadata!.KeyId!;
      expect(KeyMetadata!.SigningAlgorithms).toContain(algorithm);
      const message = Buffer.from("pay 100 to bob");
      const signed = await alice.send(
        new SignCommand({ KeyId: keyId, Message: message, SigningAlgorithm: algorithm }),
      );
      expect(signed.SigningAlgorithm).toBe(algorithm);
      const pub = await alice.send(new GetPublicKeyCommand({ KeyId: keyId }));
      expect(pub).toMatchObject({
        KeySpec: keySpec,
        KeyUsage: "SIGN_VERIFY",
        CustomerMasterKeySpec: keySpec,
      });
      expect(pub.SigningAlgorithms).toContain(algorithm);
      const publicKey = createPublicKey({
        key: Buffer.from(pub.PublicKey!),
        format: "der",
        type: "spki",
      });
      expect(
        verifyLocally(hash, message, { key: publicKey, ...opts }, Buffer.from(signed.Signature!)),
      ).toBe(true);
      const ok = await alice.send(
        new VerifyCommand({
          KeyId: keyId,
          Message: message,
          Signature: signed.Signature!,
          SigningAlgorithm: algorithm,
        }),
      );
      expect(ok.SignatureValid).toBe(true);
      await expect(
        alice.send(
          new VerifyCommand({
            KeyId: keyId,
            Message: Buffer.from("pay 900 to bob"),
            Signature: signed.Signature!,
            SigningAlgorithm: algorithm,
          }),
        ),
      ).rejects.toMatchObject({ name: "KMSInvalidSignatureException" });
      // A digest signed as DIGEST verifies like the message it digests.
      if (algorithm !== "RSASSA_PSS_SHA_256") {
        const digest = createHash(hash).update(message).digest();
        const viaDigest = await alice.send(
          new SignCommand({
            KeyId: keyId,
            Message: digest,
            MessageType: "DIGEST",
            SigningAlgorithm: algorithm,
          }),
        );
        expect(
          verifyLocally(
            hash,
            message,
            { key: publicKey, ...opts },
            Buffer.from(viaDigest.Signature!),
          ),
        ).toBe(true);
      }
    },
  );

  it("computes and verifies MACs", async () => {
    const { KeyMetadata } = await alice.send(
      new CreateKeyCommand({ KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC" }),
    );
    const keyId = KeyMetadata!.KeyId!;
    expect(KeyMetadata!.MacAlgorithms).toEqual(["HMAC_SHA_256"]);
    const message = Buffer.from("webhook body");
    const mac = await alice.send(
      new GenerateMacCommand({ KeyId: keyId, Message: message, MacAlgorithm: "HMAC_SHA_256" }),
    );
    expect(mac.Mac).toHaveLength(32);
    expect(mac.MacAlgorithm).toBe("HMAC_SHA_256");
    const ok = await alice.send(
      new VerifyMacCommand({
        KeyId: keyId,
        Message: message,
        Mac: mac.Mac!,
        MacAlgorithm: "HMAC_SHA_256",
      }),
    );
    expect(ok.MacValid).toBe(true);
    const bad = Buffer.from(mac.Mac!);
    bad[0]! ^= 1;
    await expect(
      alice.send(
        new VerifyMacCommand({
          KeyId: keyId,
          Message: message,
          Mac: bad,
          MacAlgorithm: "HMAC_SHA_256",
        }),
      ),
    ).rejects.toMatchObject({ name: "KMSInvalidMacException" });
  });

  it("generates data key pairs whose private key decrypts under the context", async () => {
    const keyId = await symmetricKey();
    const pair = await alice.send(
      new GenerateDataKeyPairCommand({
        KeyId: keyId,
        KeyPairSpec: "ECC_NIST_P256",
        EncryptionContext: MIXED_CONTEXT,
      }),
    );
    expect(pair.KeyPairSpec).toBe("ECC_NIST_P256");
    const privateKey = createPrivateKey({
      key: Buffer.from(pair.PrivateKeyPlaintext!),
      format: "der",
      type: "pkcs8",
    });
    expect(createPublicKey(privateKey).export({ format: "der", type: "spki" })).toEqual(
      Buffer.from(pair.PublicKey!),
    );
    const opened = await alice.send(
      new DecryptCommand({
        CiphertextBlob: pair.PrivateKeyCiphertextBlob!,
        EncryptionContext: MIXED_CONTEXT,
      }),
    );
    expect(Buffer.from(opened.Plaintext!)).toEqual(Buffer.from(pair.PrivateKeyPlaintext!));
    const blind = await alice.send(
      new GenerateDataKeyPairWithoutPlaintextCommand({ KeyId: keyId, KeyPairSpec: "RSA_2048" }),
    );
    expect(blind).not.toHaveProperty("PrivateKeyPlaintext");
    expect(
      createPublicKey({ key: Buffer.from(blind.PublicKey!), format: "der", type: "spki" })
        .asymmetricKeyType,
    ).toBe("rsa");
  });

  it("derives the same shared secret as the peer", async () => {
    const { KeyMetadata } = await alice.send(
      new CreateKeyCommand({ KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT" }),
    );
    const keyId = KeyMetadata!.KeyId!;
    expect(KeyMetadata!.KeyAgreementAlgorithms).toEqual(["ECDH"]);
    const peer = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const derived = await alice.send(
      new DeriveSharedSecretCommand({
        KeyId: keyId,
        KeyAgreementAlgorithm: "ECDH",
        PublicKey: peer.publicKey.export({ format: "der", type: "spki" }),
      }),
    );
    expect(derived.KeyAgreementAlgorithm).toBe("ECDH");
    expect(derived.KeyOrigin).toBe("AWS_KMS");
    const kmsPublic = await alice.send(new GetPublicKeyCommand({ KeyId: keyId }));
    expect(kmsPublic.KeyAgreementAlgorithms).toEqual(["ECDH"]);
    const local = diffieHellman({
      privateKey: peer.privateKey,
      publicKey: createPublicKey({
        key: Buffer.from(kmsPublic.PublicKey!),
        format: "der",
        type: "spki",
      }),
    });
    expect(Buffer.from(derived.SharedSecret!)).toEqual(local);
  });
});

describe("tags and policies", () => {
  it("tags, lists page by page and untags", async () => {
    const keyId = await symmetricKey();
    await alice.send(
      new TagResourceCommand({
        KeyId: keyId,
        Tags: [
          { TagKey: "Team", TagValue: "payments" },
          { TagKey: "team", TagValue: "other" },
        ],
      }),
    );
    const first = await alice.send(new ListResourceTagsCommand({ KeyId: keyId, Limit: 1 }));
    expect(first.Tags).toHaveLength(1);
    expect(first.Truncated).toBe(true);
    const second = await alice.send(
      new ListResourceTagsCommand({ KeyId: keyId, Limit: 1, Marker: first.NextMarker! }),
    );
    expect([...first.Tags!, ...second.Tags!].map((t) => t.TagKey).sort()).toEqual(["Team", "team"]);
    await alice.send(new UntagResourceCommand({ KeyId: keyId, TagKeys: ["team"] }));
    const left = await alice.send(new ListResourceTagsCommand({ KeyId: keyId }));
    expect(left.Tags).toEqual([{ TagKey: "Team", TagValue: "payments" }]);
    expect(left.Truncated).toBe(false);
  });

  it("puts, gets and lists the key policy", async () => {
    const keyId = await symmetricKey();
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
          Action: "kms:Decrypt",
          Resource: "*",
        },
      ],
    });
    await alice.send(
      new PutKeyPolicyCommand({ KeyId: keyId, PolicyName: "default", Policy: policy }),
    );
    const got = await alice.send(new GetKeyPolicyCommand({ KeyId: keyId, PolicyName: "default" }));
    expect(JSON.parse(got.Policy!)).toEqual(JSON.parse(policy));
    expect(got.PolicyName).toBe("default");
    const listed = await alice.send(new ListKeyPoliciesCommand({ KeyId: keyId }));
    expect(listed.PolicyNames).toEqual(["default"]);
    expect(listed.Truncated).toBe(false);
  });
});

describe("grants", () => {
  /** A key only ALICE may use through its policy: BOB needs a grant. */
  async function aliceOnlyKey(): Promise<string> {
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
    const { KeyMetadata } = await alice.send(new CreateKeyCommand({ Policy: policy }));
    return KeyMetadata!.KeyId!;
  }

  it("gives BOB constrained use of a key until the grant is retired", async () => {
    const keyId = await aliceOnlyKey();
    await expect(
      bob.send(
        new EncryptCommand({
          KeyId: keyId,
          Plaintext: Buffer.from("x"),
          EncryptionContext: { Tenant: "acme" },
        }),
      ),
    ).rejects.toMatchObject({ name: "AccessDeniedException" });

    const grant = await alice.send(
      new CreateGrantCommand({
        KeyId: keyId,
        GranteePrincipal: BOB.principal,
        RetiringPrincipal: ALICE.principal,
        Operations: ["Encrypt", "Decrypt"],
        Constraints: { EncryptionContextEquals: { Tenant: "acme" } },
        Name: "bob-acme",
      }),
    );
    expect(grant.GrantId).toBeTypeOf("string");
    expect(grant.GrantToken).toBeTypeOf("string");

    const enc = await bob.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: Buffer.from("x"),
        EncryptionContext: { Tenant: "acme" },
        GrantTokens: [grant.GrantToken!],
      }),
    );
    expect(enc.CiphertextBlob!.length).toBeGreaterThan(0);
    // AWS: in a grant constraint the key is not case-sensitive, the value is.
    await bob.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: Buffer.from("x"),
        EncryptionContext: { tenant: "acme" },
      }),
    );
    for (const context of [{ Tenant: "Acme" }, { Tenant: "acme", extra: "1" }, {}]) {
      await expect(
        bob.send(
          new EncryptCommand({
            KeyId: keyId,
            Plaintext: Buffer.from("x"),
            EncryptionContext: context,
          }),
        ),
      ).rejects.toMatchObject({ name: "AccessDeniedException" });
    }

    const listed = await alice.send(new ListGrantsCommand({ KeyId: keyId }));
    expect(listed.Grants).toHaveLength(1);
    const entry = listed.Grants![0]!;
    expect(entry).toMatchObject({
      GrantId: grant.GrantId,
      Name: "bob-acme",
      GranteePrincipal: BOB.principal,
      RetiringPrincipal: ALICE.principal,
      IssuingAccount: "arn:aws:iam::111122223333:root",
      Constraints: { EncryptionContextEquals: { Tenant: "acme" } },
    });
    expect([...entry.Operations!].sort()).toEqual(["Decrypt", "Encrypt"]);
    expect(entry.CreationDate).toBeInstanceOf(Date);
    expect(entry.KeyId).toContain(keyId);

    const retirable = await alice.send(
      new ListRetirableGrantsCommand({ RetiringPrincipal: ALICE.principal }),
    );
    expect(retirable.Grants!.map((g) => g.GrantId)).toContain(grant.GrantId);

    await alice.send(new RetireGrantCommand({ GrantToken: grant.GrantToken! }));
    await expect(
      bob.send(
        new EncryptCommand({
          KeyId: keyId,
          Plaintext: Buffer.from("x"),
          EncryptionContext: { Tenant: "acme" },
        }),
      ),
    ).rejects.toMatchObject({ name: "AccessDeniedException" });
  });

  it("honours EncryptionContextSubset and revocation", async () => {
    const keyId = await aliceOnlyKey();
    const grant = await alice.send(
      new CreateGrantCommand({
        KeyId: keyId,
        GranteePrincipal: BOB.principal,
        Operations: ["GenerateDataKey"],
        Constraints: { EncryptionContextSubset: { "Order-ID": "42" } },
      }),
    );
    const dk = await bob.send(
      new GenerateDataKeyCommand({
        KeyId: keyId,
        NumberOfBytes: 32,
        EncryptionContext: { "Order-ID": "42", extra: "y" },
      }),
    );
    expect(dk.Plaintext).toHaveLength(32);
    await expect(
      bob.send(
        new GenerateDataKeyCommand({
          KeyId: keyId,
          NumberOfBytes: 32,
          EncryptionContext: { "Order-ID": "43" },
        }),
      ),
    ).rejects.toMatchObject({ name: "AccessDeniedException" });
    // The constraint is stored as sent, key case included.
    const [entry] = (await alice.send(new ListGrantsCommand({ KeyId: keyId }))).Grants!;
    expect(entry!.Constraints).toEqual({ EncryptionContextSubset: { "Order-ID": "42" } });
    await alice.send(new RevokeGrantCommand({ KeyId: keyId, GrantId: grant.GrantId! }));
    await expect(
      bob.send(
        new GenerateDataKeyCommand({
          KeyId: keyId,
          NumberOfBytes: 32,
          EncryptionContext: { "Order-ID": "42" },
        }),
      ),
    ).rejects.toMatchObject({ name: "AccessDeniedException" });
  });
});

describe("rotation", () => {
  it("enables automatic rotation, rotates on demand and lists rotations", async () => {
    const keyId = await symmetricKey();
    let status = await alice.send(new GetKeyRotationStatusCommand({ KeyId: keyId }));
    expect(status.KeyRotationEnabled).toBe(false);
    await alice.send(new EnableKeyRotationCommand({ KeyId: keyId, RotationPeriodInDays: 90 }));
    status = await alice.send(new GetKeyRotationStatusCommand({ KeyId: keyId }));
    expect(status.KeyRotationEnabled).toBe(true);
    expect(status.RotationPeriodInDays).toBe(90);
    expect(status.NextRotationDate).toBeInstanceOf(Date);
    const days = (status.NextRotationDate!.getTime() - Date.now()) / 86_400_000;
    expect(Math.round(days)).toBe(90);

    const before = await alice.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from("old") }),
    );
    const rotated = await alice.send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
    expect(rotated.KeyId).toContain(keyId);
    await alice.send(new RotateKeyOnDemandCommand({ KeyId: keyId }));
    const page = await alice.send(
      new ListKeyRotationsCommand({ KeyId: keyId, Limit: 1, IncludeKeyMaterial: "ROTATIONS_ONLY" }),
    );
    expect(page.Rotations).toHaveLength(1);
    expect(page.Rotations![0]).toMatchObject({ RotationType: "ON_DEMAND" });
    expect(page.Rotations![0]!.RotationDate).toBeInstanceOf(Date);
    expect(page.Rotations![0]!.KeyMaterialId).toMatch(/^[0-9a-f]{64}$/);
    expect(page.Truncated).toBe(true);
    const rest = await alice.send(
      new ListKeyRotationsCommand({ KeyId: keyId, Marker: page.NextMarker! }),
    );
    expect(rest.Rotations).toHaveLength(1);
    expect(rest.Truncated).toBe(false);

    const old = await alice.send(new DecryptCommand({ CiphertextBlob: before.CiphertextBlob! }));
    expect(Buffer.from(old.Plaintext!).toString()).toBe("old");
    await alice.send(new DisableKeyRotationCommand({ KeyId: keyId }));
    expect(
      (await alice.send(new GetKeyRotationStatusCommand({ KeyId: keyId }))).KeyRotationEnabled,
    ).toBe(false);
  });
});
