/**
 * kms:EncryptionContext:<key> names the context key in any case (AWS: condition key names are
 * case-insensitive); values stay case-sensitive. A context holding one key in several cases is
 * read every way: an Allow must hold for each value, a Deny for any. Through the facade, so the
 * call and explain() are checked to decide alike.
 */
import { AccessDeniedError, createKms, type EncryptionContext, type Kms } from "@kms/core";
import { beforeEach, describe, expect, test } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("secret");

const ADMIN = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: ROOT },
  Action: "kms:*",
  Resource: "*",
};

function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({ Version: "2012-10-17", Statement: [ADMIN, ...statements] });
}

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms();
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

/** The call's outcome and explain()'s, for ALICE. */
async function both(operation: "encrypt" | "createGrant", request: Record<string, unknown>) {
  const explained = await kms.explain({ operation, request, as: as(ALICE) });
  let called: "allowed" | "denied" = "allowed";
  try {
    if (operation === "encrypt") {
      await kms.encrypt({ keyId, plaintext, ...request }, as(ALICE));
    } else {
      await kms.createGrant(
        { keyId, granteePrincipal: ALICE, operations: ["Decrypt"], ...request },
        as(ALICE),
      );
    }
  } catch (error) {
    if (!(error instanceof AccessDeniedError)) throw error;
    called = "denied";
  }
  return { called, explained };
}

describe("a Deny on kms:EncryptionContext:Stage", () => {
  beforeEach(async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy(
        { Sid: "Use", Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" },
        {
          Sid: "NotRestricted",
          Effect: "Deny",
          Principal: "*",
          Action: "kms:*",
          Resource: "*",
          Condition: { StringEquals: { "kms:EncryptionContext:Stage": "Restricted" } },
        },
      ),
    });
  });

  test.each<[string, EncryptionContext]>([
    ["the key in another case", { stage: "Restricted" }],
    ["a case-variant duplicate holding another value first", { stage: "x", Stage: "Restricted" }],
    ["a case-variant duplicate holding another value last", { STAGE: "Restricted", stage: "x" }],
  ])("is not stepped around by %s; explain agrees", async (_name, encryptionContext) => {
    const { called, explained } = await both("encrypt", { keyId, encryptionContext });
    expect(called).toBe("denied");
    expect(explained).toMatchObject({
      allowed: false,
      decisions: [{ reason: "explicit-deny", sid: "NotRestricted" }],
    });
  });

  test("values stay case-sensitive: restricted is not Restricted", async () => {
    const { called, explained } = await both("encrypt", {
      keyId,
      encryptionContext: { stage: "restricted" },
    });
    expect(called).toBe("allowed");
    expect(explained).toMatchObject({ allowed: true, decisions: [{ sid: "Use" }] });
  });

  test("applies to CreateGrant's constraint context in any case", async () => {
    const { called, explained } = await both("createGrant", {
      keyId,
      constraints: { encryptionContextSubset: { stage: "Restricted" } },
    });
    expect(called).toBe("denied");
    expect(explained.decisions[0]).toMatchObject({ reason: "explicit-deny", sid: "NotRestricted" });
  });
});

describe("an Allow on kms:EncryptionContext:tenant", () => {
  beforeEach(async () => {
    await kms.putKeyPolicy({
      keyId,
      policy: policy({
        Sid: "OwnTenant",
        Effect: "Allow",
        Principal: { AWS: ALICE },
        Action: "kms:Encrypt",
        Resource: "*",
        Condition: { StringEquals: { "kms:EncryptionContext:tenant": "alice" } },
      }),
    });
  });

  test("allows the key in another case; explain agrees", async () => {
    const { called, explained } = await both("encrypt", {
      keyId,
      encryptionContext: { TENANT: "alice" },
    });
    expect(called).toBe("allowed");
    expect(explained).toMatchObject({ allowed: true, decisions: [{ sid: "OwnTenant" }] });
  });

  test("is not widened by a case-variant duplicate naming another tenant; explain agrees", async () => {
    const { called, explained } = await both("encrypt", {
      keyId,
      encryptionContext: { tenant: "alice", Tenant: "bob" },
    });
    expect(called).toBe("denied");
    expect(explained).toMatchObject({
      allowed: false,
      decisions: [{ reason: "implicit-deny" }],
    });
  });
});
