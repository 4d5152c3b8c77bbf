/**
 * Condition keys AWS KMS evaluates that a policy could name and get "absent" for: an absent key
 * makes ForAllValues true and a positive operator false, so a policy written for AWS would
 * allow more than its author meant (ForAllValues on aws:TagKeys) or deny less (a Deny on
 * kms:MessageType or kms:ReEncryptOnSameKey). Also the date forms of Date* operators.
 */
import { AccessDeniedError, createKms, type Kms, MalformedPolicyDocumentError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, onTestFinished, test } from "vitest";
import { parseConditionOperator } from "../src/policy/conditions.ts";
import { parsePolicy, parsePolicyCached } from "../src/policy/policy-document.ts";

const ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("policy");

/** A key policy: the account root keeps every right; `statements` are added for Alice. */
function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "Root", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
      ...statements.map((s) => ({ Principal: { AWS: ALICE }, Resource: "*", ...s })),
    ],
  });
}

let kms: Kms;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock(), account: "000000000000" });
});

async function keyWith(text: string, spec: Record<string, unknown> = {}): Promise<string> {
  const { keyId } = (await kms.createKey(spec)).keyMetadata;
  await kms.putKeyPolicy({ keyId, policy: text });
  return keyId;
}

describe("aws:TagKeys", () => {
  const onlyTeamTags = policy({
    Effect: "Allow",
    Action: ["kms:TagResource", "kms:UntagResource"],
    Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": ["Team"] } },
  });

  test("ForAllValues limits the tag keys TagResource may set", async () => {
    const keyId = await keyWith(onlyTeamTags);
    await kms.tagResource({ keyId, tags: [{ tagKey: "Team", tagValue: "blue" }] }, as(ALICE));
    await expect(
      kms.tagResource(
        {
          keyId,
          tags: [
            { tagKey: "Team", tagValue: "blue" },
            { tagKey: "Owner", tagValue: "alice" },
          ],
        },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([
      { tagKey: "Team", tagValue: "blue" },
    ]);
  });

  test("and the tag keys UntagResource may remove", async () => {
    const keyId = await keyWith(onlyTeamTags);
    await kms.tagResource({ keyId, tags: [{ tagKey: "Owner", tagValue: "root" }] });
    await expect(
      kms.untagResource({ keyId, tagKeys: ["Owner"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await kms.untagResource({ keyId, tagKeys: ["Team"] }, as(ALICE));
  });

  test("a Deny on a tag key applies to CreateKey's tags", async () => {
    const k = await createKms({
      clock: new ManualClock(),
      account: "000000000000",
      accountPolicy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
          {
            Effect: "Deny",
            Principal: "*",
            Action: "kms:CreateKey",
            Resource: "*",
            Condition: { "ForAnyValue:StringEquals": { "aws:TagKeys": "Reserved" } },
          },
        ],
      }),
    });
    await expect(
      k.createKey({ tags: [{ tagKey: "Reserved", tagValue: "x" }] }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(k.createKey({ tags: [{ tagKey: "Team", tagValue: "x" }] })).resolves.toBeDefined();
  });
});

describe("kms:MessageType", () => {
  const noDigests = policy(
    { Effect: "Allow", Action: ["kms:Sign", "kms:Verify"] },
    {
      Effect: "Deny",
      Action: "kms:Sign",
      Condition: { StringEquals: { "kms:MessageType": "DIGEST" } },
    },
  );

  test("a Deny of DIGEST stops signing a digest; RAW, given or by default, is allowed", async () => {
    const keyId = await keyWith(noDigests, { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" });
    const sign = (messageType?: "RAW" | "DIGEST") =>
      kms.sign(
        {
          keyId,
          message: messageType === "DIGEST" ? new Uint8Array(32) : plaintext,
          signingAlgorithm: "ECDSA_SHA_256",
          ...(messageType !== undefined ? { messageType } : {}),
        },
        as(ALICE),
      );
    await expect(sign("DIGEST")).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(sign("RAW")).resolves.toBeDefined();
    await expect(sign()).resolves.toBeDefined();
  });

  test("an Allow for RAW covers a request that leaves it to the default", async () => {
    const keyId = await keyWith(
      policy({
        Effect: "Allow",
        Action: "kms:Sign",
        Condition: { StringEquals: { "kms:MessageType": "RAW" } },
      }),
      { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" },
    );
    await expect(
      kms.sign({ keyId, message: plaintext, signingAlgorithm: "ECDSA_SHA_256" }, as(ALICE)),
    ).resolves.toBeDefined();
  });
});

describe("kms:ReEncryptOnSameKey", () => {
  test("a Deny of re-encrypting to another key applies; to the same key it does not", async () => {
    const text = policy(
      { Effect: "Allow", Action: ["kms:Encrypt", "kms:ReEncrypt*"] },
      {
        Effect: "Deny",
        Action: "kms:ReEncrypt*",
        Condition: { Bool: { "kms:ReEncryptOnSameKey": false } },
      },
    );
    const source = await keyWith(text);
    const other = await keyWith(text);
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext }, as(ALICE));
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: other }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: source }, as(ALICE)),
    ).resolves.toBeDefined();
  });

  test("an Allow for the same key only does not extend to another key", async () => {
    const text = policy(
      { Effect: "Allow", Action: "kms:Encrypt" },
      {
        Effect: "Allow",
        Action: "kms:ReEncrypt*",
        Condition: { Bool: { "kms:ReEncryptOnSameKey": true } },
      },
    );
    const source = await keyWith(text);
    const other = await keyWith(text);
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext }, as(ALICE));
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: other }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: source }, as(ALICE)),
    ).resolves.toBeDefined();
  });
});

describe("kms:ReEncryptOnSameKey with an alias on the other side", () => {
  const denySameKey = policy(
    { Effect: "Allow", Action: ["kms:Encrypt", "kms:ReEncrypt*"] },
    {
      Effect: "Deny",
      Action: "kms:ReEncryptFrom",
      Condition: { Bool: { "kms:ReEncryptOnSameKey": true } },
    },
  );

  test("an alias naming the source key is the same key: a Deny for true applies, explain agrees", async () => {
    const source = await keyWith(denySameKey);
    await kms.createAlias({ aliasName: "alias/same", targetKeyId: source });
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext }, as(ALICE));
    for (const destinationKeyId of [source, "alias/same"]) {
      await expect(
        kms.reEncrypt({ ciphertextBlob, destinationKeyId }, as(ALICE)),
      ).rejects.toBeInstanceOf(AccessDeniedError);
      const explained = await kms.explain({
        operation: "reEncrypt",
        request: { ciphertextBlob, destinationKeyId },
        as: as(ALICE),
      });
      expect(explained.allowed).toBe(false);
    }
  });

  test("an alias naming another key is another key: the Deny for true does not apply", async () => {
    const source = await keyWith(denySameKey);
    const other = await keyWith(denySameKey);
    await kms.createAlias({ aliasName: "alias/other", targetKeyId: other });
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext }, as(ALICE));
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: "alias/other" }, as(ALICE)),
    ).resolves.toBeDefined();
  });

  test("a Deny of another key does not refuse an alias naming the same key", async () => {
    const source = await keyWith(
      policy(
        { Effect: "Allow", Action: ["kms:Encrypt", "kms:ReEncrypt*"] },
        {
          Effect: "Deny",
          Action: "kms:ReEncrypt*",
          Condition: { Bool: { "kms:ReEncryptOnSameKey": false } },
        },
      ),
    );
    await kms.createAlias({ aliasName: "alias/self", targetKeyId: source });
    const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext }, as(ALICE));
    await expect(
      kms.reEncrypt({ ciphertextBlob, destinationKeyId: "alias/self" }, as(ALICE)),
    ).resolves.toBeDefined();
  });
});

describe("tag keys held in several cases (tag keys are case-sensitive, condition keys not)", () => {
  const restricted = { tagKey: "Stage", tagValue: "Restricted" };
  const open = { tagKey: "stage", tagValue: "open" };

  test("a Deny on aws:RequestTag sees every spelling, whichever comes last", async () => {
    const keyId = await keyWith(
      policy(
        { Effect: "Allow", Action: "kms:TagResource" },
        {
          Effect: "Deny",
          Action: "kms:TagResource",
          Condition: { StringEquals: { "aws:RequestTag/Stage": "Restricted" } },
        },
      ),
    );
    for (const tags of [
      [restricted, open],
      [open, restricted],
    ]) {
      await expect(kms.tagResource({ keyId, tags }, as(ALICE))).rejects.toBeInstanceOf(
        AccessDeniedError,
      );
    }
    await expect(kms.tagResource({ keyId, tags: [open] }, as(ALICE))).resolves.toBeUndefined();
  });

  test("a Deny on aws:ResourceTag sees every spelling; an Allow needs every one; explain agrees", async () => {
    const denied = await keyWith(
      policy(
        { Effect: "Allow", Action: "kms:Encrypt" },
        {
          Effect: "Deny",
          Action: "kms:Encrypt",
          Condition: { StringEquals: { "aws:ResourceTag/Stage": "Restricted" } },
        },
      ),
      { tags: [restricted, open] },
    );
    const allowedIfOpen = await keyWith(
      policy({
        Effect: "Allow",
        Action: "kms:Encrypt",
        Condition: { StringEquals: { "aws:ResourceTag/stage": "open" } },
      }),
      { tags: [restricted, open] },
    );
    for (const keyId of [denied, allowedIfOpen]) {
      await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
        AccessDeniedError,
      );
      const explained = await kms.explain({
        operation: "encrypt",
        request: { keyId, plaintext },
        as: as(ALICE),
      });
      expect(explained.allowed).toBe(false);
    }
    await kms.untagResource({ keyId: allowedIfOpen, tagKeys: ["Stage"] });
    await expect(
      kms.encrypt({ keyId: allowedIfOpen, plaintext }, as(ALICE)),
    ).resolves.toBeDefined();
  });
});

describe("CreateGrant: kms:EncryptionContext and kms:EncryptionContextKeys are the constraint's", () => {
  const tenantGrants = policy({
    Effect: "Allow",
    Action: "kms:CreateGrant",
    Condition: {
      StringEqualsIfExists: { "kms:EncryptionContext:tenant": "alice" },
      "ForAllValues:StringEquals": { "kms:EncryptionContextKeys": ["tenant"] },
      StringEquals: {
        "kms:GrantConstraintType": ["EncryptionContextEquals", "EncryptionContextSubset"],
      },
    },
  });
  const grant = (keyId: string, constraints: Record<string, Record<string, string>>) =>
    kms.createGrant(
      { keyId, granteePrincipal: ALICE, operations: ["Decrypt"], constraints } as never,
      as(ALICE),
    );

  test("a grant for the caller's own tenant is allowed", async () => {
    const keyId = await keyWith(tenantGrants);
    await expect(
      grant(keyId, { encryptionContextEquals: { tenant: "alice" } }),
    ).resolves.toBeDefined();
    await expect(
      grant(keyId, { encryptionContextSubset: { tenant: "alice" } }),
    ).resolves.toBeDefined();
  });

  test("a grant for another tenant, or with other context keys, is denied", async () => {
    const keyId = await keyWith(tenantGrants);
    await expect(
      grant(keyId, { encryptionContextEquals: { tenant: "bob" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      grant(keyId, { encryptionContextSubset: { tenant: "bob" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      grant(keyId, { encryptionContextSubset: { project: "x" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("a Deny on a constraint pair applies to CreateGrant", async () => {
    const keyId = await keyWith(
      policy(
        { Effect: "Allow", Action: "kms:CreateGrant" },
        {
          Effect: "Deny",
          Action: "kms:CreateGrant",
          Condition: { StringEquals: { "kms:EncryptionContext:tier": "restricted" } },
        },
      ),
    );
    await expect(
      grant(keyId, { encryptionContextSubset: { tier: "restricted" } }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      grant(keyId, { encryptionContextSubset: { tier: "open" } }),
    ).resolves.toBeDefined();
  });
});

describe("Date operators", () => {
  const dateEquals = parseConditionOperator("DateEquals")!;
  const midnight = "2026-01-01T00:00:00.000Z";

  test("a time without an offset is UTC, whatever the process's time zone", () => {
    // Date.parse reads "2026-01-01T00:00:00" in local time: run in a zone that is not UTC.
    const zone = process.env.TZ;
    process.env.TZ = "America/New_York";
    onTestFinished(() => {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    });
    expect(new Date(Date.UTC(2026, 0, 1)).getHours()).not.toBe(0);
    for (const value of [
      "2026-01-01T00:00:00",
      "2026-01-01T00:00",
      "2026-01-01",
      "2026-01-01 00:00:00",
      "2026-01-01T00:00:00Z",
      "2026-01-01T01:00:00+01:00",
      "2026-01-01T01:00:00+0100",
      "1767225600",
    ]) {
      expect(dateEquals.validate([value]), value).toBeUndefined();
      expect(dateEquals.evaluate([midnight], [value]), value).toBe(true);
    }
  });

  test("dates that do not exist and trailing junk are refused, not rolled over or ignored", () => {
    for (const value of ["2026-02-30", "2026-13-01", "2026-01-01 junk", "2026-01-01T25:00:00Z"]) {
      expect(dateEquals.validate([value]), value).toMatch(/is not an ISO-8601 date/);
    }
    expect(() =>
      parsePolicy(
        policy({
          Effect: "Allow",
          Action: "kms:Encrypt",
          Condition: { DateLessThan: { "aws:CurrentTime": "2026-02-30" } },
        }),
      ),
    ).toThrow(MalformedPolicyDocumentError);
  });

  test("a key policy's DateLessThan without an offset ends at UTC midnight", async () => {
    const clock = new ManualClock(Date.UTC(2025, 11, 31, 23, 30));
    const k = await createKms({ clock, account: "000000000000" });
    const { keyId } = (await k.createKey()).keyMetadata;
    await k.putKeyPolicy({
      keyId,
      policy: policy({
        Effect: "Allow",
        Action: "kms:Encrypt",
        Condition: { DateLessThan: { "aws:CurrentTime": "2026-01-01T00:00:00" } },
      }),
    });
    await expect(k.encrypt({ keyId, plaintext }, as(ALICE))).resolves.toBeDefined();
    clock.advance(60 * 60 * 1000);
    await expect(k.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });
});

describe("ForAllValues with a single-valued key (AWS: OverlyPermissiveCondition)", () => {
  const forAll = (key: string) =>
    policy({
      Effect: "Allow",
      Action: "kms:Decrypt",
      Condition: { "ForAllValues:StringEquals": { [key]: "alice" } },
    });

  test("is refused in a new policy, naming the path", () => {
    for (const key of [
      "kms:EncryptionContext:tenant",
      "KMS:encryptioncontext:Tenant",
      "aws:RequestTag/team",
    ]) {
      expect(() => parsePolicy(forAll(key))).toThrow(
        `$.Statement[1].Condition["ForAllValues:StringEquals"]`,
      );
    }
    // Multi-valued keys keep their set operators.
    expect(() => parsePolicy(forAll("kms:EncryptionContextKeys"))).not.toThrow();
    expect(() =>
      parsePolicy(
        policy({
          Effect: "Allow",
          Action: "kms:Decrypt",
          Condition: { "ForAnyValue:StringEquals": { "kms:EncryptionContext:tenant": "alice" } },
        }),
      ),
    ).not.toThrow();
  });

  test("a stored policy holding one still parses, so that it can be replaced", () => {
    expect(parsePolicyCached(forAll("kms:EncryptionContext:tenant")).statements).toHaveLength(2);
  });
});

describe("kms:ResourceAliases", () => {
  // A key holds at most 50 aliases (LimitExceededError past that), and the authorizer reads
  // every page of them, so the alias sorted last is seen however many sort before it.
  test("a Deny on an alias sees it behind every other alias the key can hold", async () => {
    const keyId = await keyWith(
      policy(
        { Effect: "Allow", Action: "kms:Encrypt" },
        {
          Effect: "Deny",
          Action: "kms:Encrypt",
          Condition: {
            "ForAnyValue:StringEquals": { "kms:ResourceAliases": "alias/zz-restricted" },
          },
        },
      ),
    );
    await kms.encrypt({ keyId, plaintext }, as(ALICE));
    await kms.createAlias({ aliasName: "alias/zz-restricted", targetKeyId: keyId });
    for (let i = 0; i < 49; i++) {
      await kms.createAlias({
        aliasName: `alias/a-${String(i).padStart(3, "0")}`,
        targetKeyId: keyId,
      });
    }
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    const explained = await kms.explain({
      operation: "encrypt",
      request: { keyId, plaintext },
      as: as(ALICE),
    });
    expect(explained.allowed).toBe(false);
    expect(explained.decisions[0]?.reason).toBe("explicit-deny");
  });
});

describe("CreateKey: key properties when the request leaves them to their defaults", () => {
  /** A Kms whose account policy lets the root do everything but what `deny` conditions. */
  const kmsDenying = (condition: Record<string, unknown>) =>
    createKms({
      clock: new ManualClock(),
      account: "000000000000",
      accountPolicy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
          {
            Effect: "Deny",
            Principal: "*",
            Action: "kms:CreateKey",
            Resource: "*",
            Condition: condition,
          },
        ],
      }),
    });

  test("a Deny of SYMMETRIC_DEFAULT stops a createKey that omits keySpec", async () => {
    const k = await kmsDenying({ StringEquals: { "kms:KeySpec": "SYMMETRIC_DEFAULT" } });
    await expect(k.createKey()).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(k.createKey({ keySpec: "SYMMETRIC_DEFAULT" })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(
      k.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }),
    ).resolves.toBeDefined();
  });

  test("a field given as null is evaluated as createKey applies it: the default", async () => {
    // createKey makes a SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT, AWS_KMS key of nulls: a Deny on those
    // values must stop it, as for an omitted field.
    for (const [condition, request] of [
      [{ StringEquals: { "kms:KeySpec": "SYMMETRIC_DEFAULT" } }, { keySpec: null }],
      [{ StringEquals: { "kms:KeyUsage": "ENCRYPT_DECRYPT" } }, { keyUsage: null }],
      [{ StringEquals: { "kms:KeyOrigin": "AWS_KMS" } }, { origin: null }],
    ] as const) {
      await expect((await createKms()).createKey(request as never)).resolves.toBeDefined();
      const k = await kmsDenying(condition);
      await expect(k.createKey(request as never), JSON.stringify(condition)).rejects.toBeInstanceOf(
        AccessDeniedError,
      );
    }
  });

  test("kms:KeySpec is the spec named by customerMasterKeySpec too", async () => {
    const k = await kmsDenying({ StringLike: { "kms:KeySpec": "RSA_*" } });
    await expect(
      k.createKey({ customerMasterKeySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const deprecatedName = await kmsDenying({
      StringLike: { "kms:CustomerMasterKeySpec": "RSA_*" },
    });
    await expect(
      deprecatedName.createKey({ keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("usage, origin and multi-Region default as createKey applies them", async () => {
    for (const condition of [
      { StringEquals: { "kms:KeyUsage": "ENCRYPT_DECRYPT" } },
      { StringEquals: { "kms:CustomerMasterKeyUsage": "ENCRYPT_DECRYPT" } },
      { StringEquals: { "kms:KeyOrigin": "AWS_KMS" } },
      { Bool: { "kms:MultiRegion": "false" } },
    ]) {
      const k = await kmsDenying(condition);
      await expect(k.createKey(), JSON.stringify(condition)).rejects.toBeInstanceOf(
        AccessDeniedError,
      );
    }
    const k = await kmsDenying({ Bool: { "kms:MultiRegion": "false" } });
    await expect(k.createKey({ multiRegion: true })).resolves.toBeDefined();
  });
});
