/**
 * Two policy-language edges (docs/POLICY.md, "Condition operators"):
 * - an empty multi-valued request key (kms:EncryptionContextKeys for `encryptionContext: {}`)
 *   is absent to …IfExists operators, as it is to Null: a Deny that holds when the context is
 *   omitted holds for `{}` too;
 * - a numeric condition literal must be decimal: what Number() reads besides ("0x1E", " 3e1 ")
 *   is refused when a policy is put.
 */
import { AccessDeniedError, createKms, type Kms, MalformedPolicyDocumentError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const APP = "arn:aws:iam::000000000000:user/app";
const plaintext = new TextEncoder().encode("ifexists");

type Statement = Record<string, unknown>;
const ADMIN: Statement = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: "arn:aws:iam::000000000000:root" },
  Action: "kms:*",
  Resource: "*",
};

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

function policyOf(...statements: Statement[]): string {
  return JSON.stringify({ Version: "2012-10-17", Statement: [ADMIN, ...statements] });
}

async function setPolicy(...statements: Statement[]): Promise<void> {
  await kms.putKeyPolicy({ keyId, policyName: "default", policy: policyOf(...statements) });
}

const denyEncryptWhen = (condition: Record<string, unknown>): Statement => ({
  Sid: "DenyEncrypt",
  Effect: "Deny",
  Principal: "*",
  Action: "kms:Encrypt",
  Resource: "*",
  Condition: condition,
});

/** `undefined` omits encryptionContext from the request altogether. */
async function encryptWith(
  encryptionContext: Record<string, string> | undefined,
): Promise<"allowed" | "denied"> {
  try {
    await kms.encrypt(
      { keyId, plaintext, ...(encryptionContext === undefined ? {} : { encryptionContext }) },
      { principal: APP },
    );
    return "allowed";
  } catch (error) {
    if (error instanceof AccessDeniedError) return "denied";
    throw error;
  }
}

describe("an empty kms:EncryptionContextKeys under …IfExists", () => {
  test("a Deny StringLikeIfExists holds for {} as for an omitted context", async () => {
    await setPolicy(
      denyEncryptWhen({ StringLikeIfExists: { "kms:EncryptionContextKeys": "legacy*" } }),
    );
    expect(await encryptWith(undefined)).toBe("denied");
    expect(await encryptWith({})).toBe("denied");
    expect(await encryptWith({ legacyTenant: "a" })).toBe("denied");
    expect(await encryptWith({ tenant: "a" })).toBe("allowed");
    const { decisions } = await kms.explain({
      operation: "encrypt",
      request: { keyId, plaintext, encryptionContext: {} },
      as: { principal: APP },
    });
    expect(decisions).toEqual([
      expect.objectContaining({ allowed: false, reason: "explicit-deny", sid: "DenyEncrypt" }),
    ]);
  });

  test("a Deny ForAnyValue:StringEqualsIfExists holds for {} as for an omitted context", async () => {
    await setPolicy(
      denyEncryptWhen({
        "ForAnyValue:StringEqualsIfExists": { "kms:EncryptionContextKeys": "debug" },
      }),
    );
    expect(await encryptWith(undefined)).toBe("denied");
    expect(await encryptWith({})).toBe("denied");
    expect(await encryptWith({ tenant: "a", debug: "1" })).toBe("denied");
    expect(await encryptWith({ tenant: "a" })).toBe("allowed");
  });

  test("an Allow StringEqualsIfExists serves {} as it serves an omitted context", async () => {
    const app = "arn:aws:iam::111122223333:user/app";
    await setPolicy({
      Effect: "Allow",
      Principal: { AWS: app },
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { StringEqualsIfExists: { "kms:EncryptionContextKeys": "tenant" } },
    });
    const as = { principal: app };
    await expect(kms.encrypt({ keyId, plaintext }, as)).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: {} }, as),
    ).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "a" } }, as),
    ).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { other: "a" } }, as),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("without IfExists, {} and an omitted context still have no key to match", async () => {
    await setPolicy(denyEncryptWhen({ StringLike: { "kms:EncryptionContextKeys": "legacy*" } }));
    expect(await encryptWith(undefined)).toBe("allowed");
    expect(await encryptWith({})).toBe("allowed");
    expect(await encryptWith({ legacyTenant: "a" })).toBe("denied");
    await setPolicy(
      denyEncryptWhen({ "ForAnyValue:StringEquals": { "kms:EncryptionContextKeys": "debug" } }),
    );
    expect(await encryptWith({})).toBe("allowed");
    expect(await encryptWith({ debug: "1" })).toBe("denied");
  });

  test("Null reads {} as absent, as …IfExists does", async () => {
    await setPolicy(denyEncryptWhen({ Null: { "kms:EncryptionContextKeys": "true" } }));
    expect(await encryptWith(undefined)).toBe("denied");
    expect(await encryptWith({})).toBe("denied");
    expect(await encryptWith({ tenant: "a" })).toBe("allowed");
  });
});

describe("numeric condition literals", () => {
  const allowEncryptWhen = (value: unknown): Statement => ({
    Sid: "Small",
    Effect: "Allow",
    Principal: { AWS: "arn:aws:iam::111122223333:user/app" },
    Action: "kms:Encrypt",
    Resource: "*",
    Condition: { NumericLessThan: { "kms:EncryptionContext:size": value } },
  });

  async function encryptSize(size: string): Promise<"allowed" | "denied"> {
    try {
      await kms.encrypt(
        { keyId, plaintext, encryptionContext: { size } },
        { principal: "arn:aws:iam::111122223333:user/app" },
      );
      return "allowed";
    } catch (error) {
      if (error instanceof AccessDeniedError) return "denied";
      throw error;
    }
  }

  test.each(["0x1E", "0b11", "0o36", " 3e1 ", "3e1", "30.", ".5", "+30"])(
    "%j is refused, and the key keeps its policy",
    async (literal) => {
      const before = (await kms.getKeyPolicy({ keyId })).policy;
      const put = kms.putKeyPolicy({
        keyId,
        policyName: "default",
        policy: policyOf(allowEncryptWhen(literal)),
      });
      await expect(put).rejects.toBeInstanceOf(MalformedPolicyDocumentError);
      await expect(put).rejects.toThrow(
        `$.Statement[1].Condition.NumericLessThan["kms:EncryptionContext:size"] value "${literal}" is not a decimal number`,
      );
      expect((await kms.getKeyPolicy({ keyId })).policy).toBe(before);
    },
  );

  test("a bad literal in a list is refused as alone", async () => {
    await expect(
      kms.putKeyPolicy({
        keyId,
        policyName: "default",
        policy: policyOf(allowEncryptWhen(["30", "0x1E"])),
      }),
    ).rejects.toThrow(/value "0x1E" is not a decimal number/);
  });

  test("applies to every numeric operator, with set qualifiers and IfExists", async () => {
    for (const operator of [
      "NumericEquals",
      "NumericNotEquals",
      "NumericGreaterThanEquals",
      "ForAnyValue:NumericLessThanIfExists",
    ]) {
      await expect(
        kms.putKeyPolicy({
          keyId,
          policyName: "default",
          policy: policyOf({
            Effect: "Deny",
            Principal: "*",
            Action: "kms:Encrypt",
            Resource: "*",
            Condition: { [operator]: { "aws:EpochTime": "0x1E" } },
          }),
        }),
        operator,
      ).rejects.toBeInstanceOf(MalformedPolicyDocumentError);
    }
  });

  test('"30" is accepted and compares as 30', async () => {
    await setPolicy(allowEncryptWhen("30"));
    expect(await encryptSize("29")).toBe("allowed");
    expect(await encryptSize("30")).toBe("denied");
  });

  test('"-1.5" is accepted and compares as -1.5', async () => {
    await setPolicy(allowEncryptWhen("-1.5"));
    expect(await encryptSize("-2")).toBe("allowed");
    expect(await encryptSize("-1.5")).toBe("denied");
    expect(await encryptSize("-1")).toBe("denied");
  });

  test("JSON numbers are decimal already and accepted", async () => {
    await setPolicy(allowEncryptWhen(30));
    expect(await encryptSize("29")).toBe("allowed");
    await setPolicy(allowEncryptWhen([-1.5, "007"]));
    expect(await encryptSize("-2")).toBe("allowed");
    expect(await encryptSize("6")).toBe("allowed");
    expect(await encryptSize("7")).toBe("denied");
  });

  test("non-numeric operators are not held to the rule", async () => {
    await setPolicy({
      Effect: "Allow",
      Principal: { AWS: "arn:aws:iam::111122223333:user/app" },
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { StringEquals: { "kms:EncryptionContext:size": "0x1E" } },
    });
    expect(await encryptSize("0x1E")).toBe("allowed");
    expect(await encryptSize("30")).toBe("denied");
  });
});
