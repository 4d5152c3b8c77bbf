// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
/**
 * Policy evaluation and grants, found in adversarial review against AWS KMS's documented
 * semantics: a Deny's NotPrincipal exempts only whom it names, policies that could never mean
 * what they say are refused when put, a grantee's CreateGrant grants are each a possible
 * parent, and tags are authorized as they are stored.
 */
import {
  AccessDeniedError,
  createKms,
  type Kms,
  MalformedPolicyDocumentError,
  parsePolicy,
  type Tag,
  TagError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";
import { parsePolicyCached } from "../../src/policy/policy-document.ts";

const ROOT = "arn:aws:iam::000000000000:root";
const OTHER_ROOT = "arn:aws:iam::111122223333:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const MALLORY = "arn:aws:iam::111122223333:user/mallory";
const BOB = "arn:aws:iam::444455556666:user/bob";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("review");

const policy = (...statements: Record<string, unknown>[]): string =>
  JSON.stringify({ Version: "2012-10-17", Statement: statements });
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

describe("a Deny with NotPrincipal", () => {
  test("AWS's pattern (the user and its account root) exempts the user, not the whole account", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(
        ADMIN,
        {
          Sid: "Account",
          Effect: "Allow",
          Principal: { AWS: OTHER_ROOT },
          Action: "kms:*",
          Resource: "*",
        },
        {
          Sid: "OnlyAlice",
          Effect: "Deny",
          NotPrincipal: { AWS: [ALICE, OTHER_ROOT, ROOT] },
          Action: "kms:Encrypt",
          Resource: "*",
        },
      ),
    });
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).resolves.toBeDefined();
    const denied = kms.encrypt({ keyId, plaintext }, as(MALLORY));
    await expect(denied).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(denied).rejects.toThrow(/explicitly denied by statement 2 \("OnlyAlice"\)/);
  });

  test("naming the Kms's own account root does not exempt plain-named principals", async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(ADMIN, {
        Effect: "Deny",
        NotPrincipal: { AWS: ROOT },
        Action: "kms:Decrypt",
        Resource: "*",
      }),
    });
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
    await expect(kms.decrypt({ ciphertextBlob })).resolves.toBeDefined();
    await expect(kms.decrypt({ ciphertextBlob }, as("billing-service"))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });
});

describe("policies refused when put, since they could not mean what they say", () => {
  const refused: [string, Record<string, unknown>, string][] = [
    [
      "NotPrincipal with Allow (AWS: not supported)",
      { Effect: "Allow", NotPrincipal: { AWS: ALICE }, Action: "kms:Decrypt", Resource: "*" },
      `$.Statement[1].NotPrincipal may only be used with "Effect": "Deny"`,
    ],
    [
      "a wildcard inside a principal ARN",
      {
        Effect: "Deny",
        Principal: { AWS: "arn:aws:iam::111122223333:user/*" },
        Action: "kms:*",
        Resource: "*",
      },
      `$.Statement[1].Principal.AWS "arn:aws:iam::111122223333:user/*" is not a principal`,
    ],
    [
      "a ? inside a listed principal",
      {
        Effect: "Deny",
        Principal: { AWS: [ALICE, "arn:aws:iam::11112222333?:root"] },
        Action: "kms:*",
        Resource: "*",
      },
      `$.Statement[1].Principal.AWS[1]`,
    ],
    [
      "a Service wildcard (only {AWS: *} means everyone)",
      { Effect: "Deny", Principal: { Service: "*" }, Action: "kms:*", Resource: "*" },
      `$.Statement[1].Principal.Service "*" is not a principal`,
    ],
    [
      "a NotPrincipal wildcard inside an ARN",
      {
        Effect: "Deny",
        NotPrincipal: { AWS: "arn:aws:iam::*:root" },
        Action: "kms:*",
        Resource: "*",
      },
      `$.Statement[1].NotPrincipal.AWS`,
    ],
    [
      "an ArnLike value that is not an ARN",
      {
        Effect: "Deny",
        Principal: "*",
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: { ArnLike: { "aws:PrincipalArn": "alice" } },
      },
      `$.Statement[1].Condition.ArnLike["aws:PrincipalArn"] value "alice" is not an ARN`,
    ],
    [
      "an ArnNotEquals value with five parts",
      {
        Effect: "Deny",
        Principal: "*",
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: {
          ArnNotEquals: {
            "aws:PrincipalArn": ["arn:aws:iam::111122223333:user/alice", "arn:aws:iam::*"],
          },
        },
      },
      `value "arn:aws:iam::*" is not an ARN`,
    ],
    [
      "an empty Resource",
      { Effect: "Deny", Principal: "*", Action: "kms:Decrypt", Resource: "" },
      `$.Statement[1].Resource must not be empty`,
    ],
    [
      "an empty NotResource entry",
      {
        Effect: "Deny",
        Principal: "*",
        Action: "kms:Decrypt",
        NotResource: ["arn:aws:kms:*:*:key/x", ""],
      },
      `$.Statement[1].NotResource[1] must not be empty`,
    ],
  ];

  test.each(refused)("%s", async (_name, statement, message) => {
    const text = policy(ADMIN, statement);
    expect(() => parsePolicy(text)).toThrow(MalformedPolicyDocumentError);
    expect(() => parsePolicy(text)).toThrow(message);
    await expect(kms.putKeyPolicy({ keyId, policy: text })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
    await expect(kms.createKey({ policy: text })).rejects.toBeInstanceOf(
      MalformedPolicyDocumentError,
    );
    // Stored by an earlier release: still parsed, so that the key stays usable and replaceable.
    expect(parsePolicyCached(text).statements).toHaveLength(2);
  });

  test.each<[string, Record<string, unknown>]>([
    ["Principal *", { Principal: "*" }],
    ["AWS *", { Principal: { AWS: "*" } }],
    ["AWS * among others", { Principal: { AWS: [ALICE, "*"] } }],
    ["a bare account id", { Principal: { AWS: "111122223333" } }],
    ["a plain name", { Principal: { AWS: "billing-service" } }],
    ["NotPrincipal with Deny", { NotPrincipal: { AWS: [ALICE, OTHER_ROOT] } }],
  ])("accepted principals: %s", (_name, principal) => {
    expect(() =>
      parsePolicy(
        policy(ADMIN, { Effect: "Deny", ...principal, Action: "kms:Decrypt", Resource: "*" }),
      ),
    ).not.toThrow();
  });

  test.each([
    "*",
    "arn:aws:iam::111122223333:user/*",
    "arn:*:iam::*:role/ops-?",
    "arn:aws:iam::${aws:PrincipalAccount}:root",
    "${aws:PrincipalArn}",
  ])("accepted Arn values: %s", (value) => {
    expect(() =>
      parsePolicy(
        policy(ADMIN, {
          Effect: "Deny",
          Principal: "*",
          Action: "kms:Decrypt",
          Resource: "*",
          Condition: { ArnNotLike: { "aws:PrincipalArn": value } },
        }),
      ),
    ).not.toThrow();
  });
});

describe("CreateGrant through a grant", () => {
  test("any of the grantee's CreateGrant grants may be the parent, not only the first", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["CreateGrant", "Decrypt"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["CreateGrant", "Encrypt"],
    });
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt"] }, as(ALICE)),
    ).resolves.toBeDefined();
    await expect(
      kms.createGrant(
        {
          keyId,
          granteePrincipal: BOB,
          operations: ["Decrypt"],
          constraints: { encryptionContextEquals: { tenant: "a" } },
        },
        as(ALICE),
      ),
    ).resolves.toBeDefined();
    await expect(kms.encrypt({ keyId, plaintext }, as(BOB))).resolves.toBeDefined();
  });

  test("grants are not pooled: every operation and the constraint come from one parent", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["CreateGrant", "Decrypt"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["CreateGrant", "Encrypt"],
    });
    const pooled = kms.createGrant(
      { keyId, granteePrincipal: BOB, operations: ["Encrypt", "Decrypt"] },
      as(ALICE),
    );
    await expect(pooled).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(pooled).rejects.toThrow(/does not allow/);
    // Decrypt without the Decrypt parent's constraint: the Encrypt parent has no Decrypt.
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Decrypt"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    // Another principal's CreateGrant grant is no parent of Alice's.
    await kms.createGrant({
      keyId,
      granteePrincipal: MALLORY,
      operations: ["CreateGrant", "Decrypt"],
    });
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Decrypt"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.listGrants({ keyId })).grants.map((g) => g.granteePrincipal)).not.toContain(
      BOB,
    );
  });
});

describe("tags are authorized as they are stored", () => {
  /** A tag whose value reads "dev" the first time and "prod" after. */
  class FlippingTag {
    #reads = 0;
    get tagKey(): string {
      return "env";
    }
    get tagValue(): string {
      return this.#reads++ === 0 ? "dev" : "prod";
    }
  }
  const flipping = () => new FlippingTag() as unknown as Tag;
  const DENY_PROD = {
    Sid: "NoProd",
    Effect: "Deny",
    Principal: "*",
    Action: ["kms:TagResource", "kms:CreateKey"],
    Resource: "*",
    Condition: { StringEquals: { "aws:RequestTag/env": "prod" } },
  };

  test("TagResource refuses a class-instance tag: a getter cannot pass one value and store another", async () => {
    await kms.putKeyPolicy({ keyId, policy: policy(ADMIN, DENY_PROD) });
    const call = kms.tagResource({ keyId, tags: [flipping()] });
    await expect(call).rejects.toBeInstanceOf(TagError);
    await expect(call).rejects.toThrow(`"tags[0]" must be a plain object`);
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([]);
    // The plain tag is judged as written.
    await expect(
      kms.tagResource({ keyId, tags: [{ tagKey: "env", tagValue: "prod" }] }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("CreateKey refuses a class-instance tag under the account policy's Deny", async () => {
    const guarded = await createKms({
      clock: new ManualClock(),
      accountPolicy: policy(ADMIN, DENY_PROD),
    });
    await expect(guarded.createKey({ tags: [flipping()] })).rejects.toBeInstanceOf(TagError);
    expect((await guarded.listKeys()).keys).toEqual([]);
  });

  test("a plain tag with a getter is read once, so the stored value is the authorized one", async () => {
    await kms.putKeyPolicy({ keyId, policy: policy(ADMIN, DENY_PROD) });
    let reads = 0;
    const tag = {
      tagKey: "env",
      get tagValue() {
        return reads++ === 0 ? "dev" : "prod";
      },
    };
    await kms.tagResource({ keyId, tags: [tag] });
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([
      { tagKey: "env", tagValue: "dev" },
    ]);
    expect(reads).toBe(1);
  });

  test.each<[string, unknown]>([
    ["null", null],
    ["a string", "env=prod"],
    ["a number key", { tagKey: 5, tagValue: "prod" }],
    ["a missing value", { tagKey: "env" }],
  ])(
    "a tag that is %s fails as a TagError while a policy reads the request's tags",
    async (_n, tag) => {
      await kms.putKeyPolicy({
        keyId,
        policy: policy(ADMIN, DENY_PROD, {
          Effect: "Deny",
          Principal: "*",
          Action: "kms:TagResource",
          Resource: "*",
          Condition: { "ForAnyValue:StringEquals": { "aws:TagKeys": "secret" } },
        }),
      });
      await expect(kms.tagResource({ keyId, tags: [tag as Tag] })).rejects.toBeInstanceOf(TagError);
    },
  );
});
