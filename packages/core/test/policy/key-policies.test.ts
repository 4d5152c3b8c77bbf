// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
import {
  AccessDeniedError,
  createKms,
  DisabledError,
  DryRunOperationError,
  type Kms,
  MalformedPolicyDocumentError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
const LOCAL_USER = "arn:aws:iam::000000000000:user/carol";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const MALLORY = "arn:aws:iam::111122223333:user/mallory";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("secret");

function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}
const ADMIN = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: ROOT },
  Action: "kms:*",
  Resource: "*",
};

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("default key policy", () => {
  test("getKeyPolicy returns AWS's default policy: the account root gets kms:*", async () => {
    const { policy: text, policyName } = await kms.getKeyPolicy({ keyId });
    expect(policyName).toBe("default");
    const doc = JSON.parse(text);
    expect(doc.Statement[0]).toMatchObject({
      Effect: "Allow",
      Principal: { AWS: ROOT },
      Action: "kms:*",
      Resource: "*",
    });
    expect(await kms.listKeyPolicies({ keyId })).toEqual({
      policyNames: ["default"],
      truncated: false,
    });
  });

  test("every principal of the account is allowed; another account's principal is not", async () => {
    await expect(kms.encrypt({ keyId, plaintext }, as(LOCAL_USER))).resolves.toBeDefined();
    await expect(kms.encrypt({ keyId, plaintext }, as("billing-service"))).resolves.toBeDefined();
    const denied = kms.encrypt({ keyId, plaintext }, as(ALICE));
    await expect(denied).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(denied).rejects.toThrow(/no statement of the key policy and no grant allows it/);
  });

  test("the default principal is configurable", async () => {
    const other = await createKms({ principal: ALICE });
    await expect(other.createKey()).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("an unknown policy name is rejected", async () => {
    await expect(kms.getKeyPolicy({ keyId, policyName: "other" })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });
});

describe("putKeyPolicy", () => {
  test("a stored policy takes effect and round-trips", async () => {
    const text = policy(ADMIN, {
      Sid: "Alice",
      Effect: "Allow",
      Principal: { AWS: ALICE },
      Action: ["kms:Encrypt", "kms:Decrypt"],
      Resource: "*",
    });
    await kms.putKeyPolicy({ keyId, policy: text });
    expect((await kms.getKeyPolicy({ keyId })).policy).toBe(text);
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext }, as(ALICE));
    await expect(kms.decrypt({ ciphertextBlob }, as(ALICE))).resolves.toMatchObject({ plaintext });
    await expect(kms.describeKey({ keyId }, as(ALICE))).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("lockout safety check: a policy that locks the caller out is refused", async () => {
    const lockout = policy({
      Effect: "Allow",
      Principal: { AWS: ALICE },
      Action: "kms:*",
      Resource: "*",
    });
    const refused = kms.putKeyPolicy({ keyId, policy: lockout });
    await expect(refused).rejects.toBeInstanceOf(MalformedPolicyDocumentError);
    await expect(refused).rejects.toThrow(/bypassPolicyLockoutSafetyCheck/);
    // Nothing changed.
    await expect(kms.describeKey({ keyId })).resolves.toBeDefined();
    await kms.putKeyPolicy({ keyId, policy: lockout, bypassPolicyLockoutSafetyCheck: true });
    await expect(kms.describeKey({ keyId })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
  });

  test("lockout safety check applies to createKey too", async () => {
    const lockout = policy({
      Effect: "Allow",
      Principal: { AWS: ALICE },
      Action: "kms:*",
      Resource: "*",
    });
    await expect(kms.createKey({ policy: lockout })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
    const { keyMetadata } = await kms.createKey({
      policy: lockout,
      bypassPolicyLockoutSafetyCheck: true,
    });
    await expect(kms.describeKey({ keyId: keyMetadata.keyId })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("a malformed policy names the bad element", async () => {
    const bad = policy(ADMIN, {
      Effect: "Allow",
      Principal: "*",
      Action: "kms:*",
      Resource: "*",
      Condition: { StringEqualz: { a: "b" } },
    });
    await expect(kms.putKeyPolicy({ keyId, policy: bad })).rejects.toThrow(
      "$.Statement[1].Condition.StringEqualz",
    );
    await expect(kms.createKey({ policy: "{}" })).rejects.toThrow("$.Statement is required");
  });

  test("a policy repeating a JSON key is refused, not read as its last occurrence", async () => {
    // Reads as a Deny for Alice; JSON.parse alone would make it an Allow.
    const repeated = `{"Version":"2012-10-17","Statement":[${JSON.stringify(ADMIN)},{"Effect":"Deny","Principal":{"AWS":"${ALICE}"},"Action":"kms:Encrypt","Resource":"*","Effect":"Allow"}]}`;
    await expect(kms.putKeyPolicy({ keyId, policy: repeated })).rejects.toThrow(
      MalformedPolicyDocumentError,
    );
    await expect(kms.createKey({ policy: repeated })).rejects.toThrow(
      "$.Statement[1].Effect is repeated",
    );
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("only a caller allowed kms:PutKeyPolicy may change the policy", async () => {
    await expect(
      kms.putKeyPolicy({ keyId, policy: policy(ADMIN) }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("explicit deny", () => {
  test("an explicit Deny beats every Allow: policy statements, wildcards and grants", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(
        ADMIN,
        { Sid: "AllowAll", Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*" },
        {
          Sid: "AllowAlice",
          Effect: "Allow",
          Principal: { AWS: ALICE },
          Action: "kms:Encrypt",
          Resource: "*",
        },
        {
          Sid: "DenyAlice",
          Effect: "Deny",
          Principal: { AWS: ALICE },
          Action: "kms:Encrypt",
          Resource: "*",
        },
      ),
    });
    await kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["Encrypt"] });
    const denied = kms.encrypt({ keyId, plaintext }, as(ALICE));
    await expect(denied).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(denied).rejects.toThrow(/explicitly denied by statement 3 \("DenyAlice"\)/);
    // The deny is specific: other principals and actions still pass.
    await expect(kms.encrypt({ keyId, plaintext }, as(MALLORY))).resolves.toBeDefined();
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
  });

  test("a Deny for the account root's principals beats the default admin Allow", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Effect: "Deny",
        Principal: { AWS: LOCAL_USER },
        Action: "kms:Decrypt",
        Resource: "*",
      }),
    });
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext }, as(LOCAL_USER));
    await expect(kms.decrypt({ ciphertextBlob }, as(LOCAL_USER))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("AccessDenied is answered before key-state errors, as in AWS", async () => {
    await kms.disableKey({ keyId });
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.encrypt({ keyId, plaintext })).rejects.toBeInstanceOf(DisabledError);
  });
});

describe("encryption-context conditions", () => {
  beforeEach(async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Effect: "Allow",
        Principal: { AWS: ALICE },
        Action: ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*"],
        Resource: "*",
        Condition: { StringEquals: { "kms:EncryptionContext:tenant": "alice" } },
      }),
    });
  });

  test("encrypt", async () => {
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "alice" } }, as(ALICE)),
    ).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "bob" } }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("decrypt", async () => {
    const mine = await kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "alice" } });
    const theirs = await kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "bob" } });
    await expect(
      kms.decrypt(
        { ciphertextBlob: mine.ciphertextBlob, encryptionContext: { tenant: "alice" } },
        as(ALICE),
      ),
    ).resolves.toMatchObject({ plaintext });
    await expect(
      kms.decrypt(
        { ciphertextBlob: theirs.ciphertextBlob, encryptionContext: { tenant: "bob" } },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("generateDataKey", async () => {
    await expect(
      kms.generateDataKey(
        { keyId, keySpec: "AES_256", encryptionContext: { tenant: "alice" } },
        as(ALICE),
      ),
    ).resolves.toBeDefined();
    await expect(
      kms.generateDataKey(
        { keyId, keySpec: "AES_256", encryptionContext: { tenant: "eve" } },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("reEncrypt checks ReEncryptFrom with the source context and ReEncryptTo with the destination's", async () => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext,
      encryptionContext: { tenant: "alice" },
    });
    await expect(
      kms.reEncrypt(
        {
          ciphertextBlob,
          sourceEncryptionContext: { tenant: "alice" },
          destinationKeyId: keyId,
          destinationEncryptionContext: { tenant: "alice" },
        },
        as(ALICE),
      ),
    ).resolves.toBeDefined();
    await expect(
      kms.reEncrypt(
        {
          ciphertextBlob,
          sourceEncryptionContext: { tenant: "alice" },
          destinationKeyId: keyId,
          destinationEncryptionContext: { tenant: "bob" },
        },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("request tag conditions", () => {
  test("a tag key repeated in one request is judged by the value that is stored, the last", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Sid: "OwnTagOnly",
        Effect: "Deny",
        Principal: "*",
        Action: "kms:TagResource",
        Resource: "*",
        Condition: { StringNotEquals: { "aws:RequestTag/owner": "${aws:username}" } },
      }),
    });
    const decoyFirst = [
      { tagKey: "owner", tagValue: "carol" },
      { tagKey: "owner", tagValue: "mallory" },
    ];
    await expect(
      kms.tagResource({ keyId, tags: decoyFirst }, as(LOCAL_USER)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([]);
    await kms.tagResource({ keyId, tags: [...decoyFirst].reverse() }, as(LOCAL_USER));
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([
      { tagKey: "owner", tagValue: "carol" },
    ]);
  });
});

describe("policy variables", () => {
  test("one statement gives every user only the tenant named after them", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Sid: "OwnTenant",
        Effect: "Allow",
        Principal: { AWS: "arn:aws:iam::111122223333:root" },
        Action: ["kms:Encrypt", "kms:Decrypt"],
        Resource: "*",
        Condition: { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      }),
    });
    const forAlice = { keyId, plaintext, encryptionContext: { tenant: "alice" } };
    const { ciphertextBlob } = await kms.encrypt(forAlice, as(ALICE));
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "alice" } }, as(ALICE)),
    ).resolves.toMatchObject({ plaintext });
    const stolen = kms.decrypt(
      { ciphertextBlob, encryptionContext: { tenant: "alice" } },
      as(MALLORY),
    );
    await expect(stolen).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(stolen).rejects.toThrow(/no statement of the key policy and no grant allows it/);
    await expect(
      kms.encrypt({ ...forAlice, encryptionContext: { tenant: "mallory" } }, as(MALLORY)),
    ).resolves.toBeDefined();
  });

  test("a malformed variable is refused by putKeyPolicy", async () => {
    await expect(
      kms.putKeyPolicy({
        keyId,
        policy: policy(ADMIN, {
          Effect: "Allow",
          Principal: { AWS: ALICE },
          Action: "kms:Decrypt",
          Resource: "*",
          Condition: { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username" } },
        }),
      }),
    ).rejects.toThrow(/Statement\[1\]\.Condition\.StringEquals.*no closing brace/);
  });
});

describe("dryRun and explain", () => {
  test("dryRun answers DryRunOperation when the call would succeed, AccessDenied when not", async () => {
    await expect(kms.encrypt({ keyId, plaintext, dryRun: true })).rejects.toBeInstanceOf(
      DryRunOperationError,
    );
    await expect(kms.encrypt({ keyId, plaintext, dryRun: true }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(
      kms.generateDataKey({ keyId, keySpec: "AES_256", dryRun: true }),
    ).rejects.toBeInstanceOf(DryRunOperationError);
    await kms.disableKey({ keyId });
    await expect(kms.encrypt({ keyId, plaintext, dryRun: true })).rejects.toBeInstanceOf(
      DisabledError,
    );
  });

  test("explain names the deciding statement or grant", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Sid: "NoDecrypt",
        Effect: "Deny",
        Principal: "*",
        Action: "kms:Decrypt",
        Resource: "*",
      }),
    });
    const allowed = await kms.explain({ operation: "encrypt", request: { keyId } });
    expect(allowed.allowed).toBe(true);
    expect(allowed.decisions[0]).toMatchObject({
      action: "kms:Encrypt",
      reason: "policy-allow",
      sid: "Admin",
    });
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    const denied = await kms.explain({ operation: "decrypt", request: { ciphertextBlob } });
    expect(denied).toMatchObject({
      allowed: false,
      decisions: [{ reason: "explicit-deny", sid: "NoDecrypt", statementIndex: 1 }],
    });
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    const byGrant = await kms.explain({ operation: "encrypt", request: { keyId }, as: as(ALICE) });
    expect(byGrant.decisions[0]).toMatchObject({ reason: "grant-allow", grantId });
    const none = await kms.explain({ operation: "describeKey", request: { keyId }, as: as(ALICE) });
    expect(none.decisions[0]).toMatchObject({ allowed: false, reason: "implicit-deny" });
    await expect(kms.explain({ operation: "nope", request: {} })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });
});

describe("calls without a key", () => {
  test("the account policy decides createKey, listKeys and generateRandom", async () => {
    const k = await createKms({
      accountPolicy: policy(
        { Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
        { Effect: "Deny", Principal: { AWS: LOCAL_USER }, Action: "kms:CreateKey", Resource: "*" },
      ),
    });
    await expect(k.createKey({}, as(LOCAL_USER))).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(k.listKeys({}, as(LOCAL_USER))).resolves.toBeDefined();
    await expect(k.generateRandom({ numberOfBytes: 8 }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("a malformed account policy is refused at createKms", async () => {
    await expect(createKms({ accountPolicy: "nope" })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
  });

  test("an invalid principal is a ValidationError", async () => {
    await expect(kms.listKeys({}, { principal: "" })).rejects.toBeInstanceOf(ValidationError);
  });
});
