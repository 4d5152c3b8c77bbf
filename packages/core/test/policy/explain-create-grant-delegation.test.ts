/**
 * `explain` of createGrant and CreateGrant's delegation rule (found in review): a grantee using a
 * grant that includes CreateGrant may hand on only the operations and constraints it holds, but
 * explain evaluated kms:CreateGrant alone and said "allowed" for grants the call refuses. Each
 * case here asks explain, then makes the real call, and expects the two to agree.
 */
import {
  AccessDeniedError,
  createKms,
  type GrantConstraints,
  type GrantOperation,
  type Kms,
  ValidationError,
} from "@kms/core";
import { beforeEach, describe, expect, test } from "vitest";

// Another account's principals: the default key policy allows only the key's own account, so
// these act on the key through their grants alone.
const ALICE = "arn:aws:iam::111122223333:user/alice";
const BOB = "arn:aws:iam::111122223333:user/bob";
const CAROL = "arn:aws:iam::111122223333:user/carol";

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms();
  keyId = (await kms.createKey()).keyMetadata.keyId;
  // Alice's parents: one with Encrypt under a tenant constraint, one with Decrypt unconstrained.
  await kms.createGrant({
    keyId,
    granteePrincipal: ALICE,
    operations: ["Encrypt", "CreateGrant"],
    constraints: { encryptionContextSubset: { tenant: "a" } },
  });
  await kms.createGrant({
    keyId,
    granteePrincipal: ALICE,
    operations: ["Decrypt", "GenerateDataKey", "CreateGrant"],
  });
  // Bob's only parent: Encrypt and CreateGrant, unconstrained.
  await kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt", "CreateGrant"] });
});

interface Case {
  readonly by: string;
  readonly operations: readonly GrantOperation[];
  readonly constraints?: GrantConstraints;
  readonly allowed: boolean;
}

const subset = (pairs: Record<string, string>): GrantConstraints => ({
  encryptionContextSubset: pairs,
});
const equals = (pairs: Record<string, string>): GrantConstraints => ({
  encryptionContextEquals: pairs,
});

const CASES: readonly [string, Case][] = [
  ["an operation the parent holds", { by: BOB, operations: ["Encrypt"], allowed: true }],
  ["an operation no parent holds", { by: BOB, operations: ["Decrypt"], allowed: false }],
  ["one held and one not", { by: BOB, operations: ["Encrypt", "Decrypt"], allowed: false }],
  ["CreateGrant handed on", { by: BOB, operations: ["Encrypt", "CreateGrant"], allowed: true }],
  [
    "a narrower constraint than the unconstrained parent",
    { by: BOB, operations: ["Encrypt"], constraints: subset({ x: "1" }), allowed: true },
  ],
  [
    "operations split across two parents (grants are not pooled)",
    { by: ALICE, operations: ["Encrypt", "Decrypt"], allowed: false },
  ],
  [
    "the second parent's operations",
    { by: ALICE, operations: ["Decrypt", "GenerateDataKey"], allowed: true },
  ],
  [
    "the constrained parent's operation, kept as narrow",
    { by: ALICE, operations: ["Encrypt"], constraints: subset({ tenant: "a" }), allowed: true },
  ],
  [
    "the constrained parent's operation, narrowed further",
    {
      by: ALICE,
      operations: ["Encrypt"],
      constraints: equals({ tenant: "a", row: "7" }),
      allowed: true,
    },
  ],
  [
    "the constrained parent's operation without its constraint",
    { by: ALICE, operations: ["Encrypt"], allowed: false },
  ],
  [
    "the constrained parent's operation under another tenant",
    { by: ALICE, operations: ["Encrypt"], constraints: subset({ tenant: "b" }), allowed: false },
  ],
  // Neither grantee holds a grant at all: refused by authorization, as before.
  ["no grant at all", { by: CAROL, operations: ["Encrypt"], allowed: false }],
];

describe("explain of createGrant applies the delegation rule, as the call does", () => {
  test.each(CASES)("%s", async (_name, c) => {
    const request = {
      keyId,
      granteePrincipal: CAROL,
      operations: c.operations,
      ...(c.constraints !== undefined ? { constraints: c.constraints } : {}),
    };
    const grantsBefore = (await kms.listGrants({ keyId })).grants.length;
    const explained = await kms.explain({
      operation: "createGrant",
      request,
      as: { principal: c.by },
    });
    // Explain changed nothing.
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(grantsBefore);

    const called = await kms.createGrant(request, { principal: c.by }).then(
      () => true,
      (error: unknown) => {
        expect(error).toBeInstanceOf(AccessDeniedError);
        return false;
      },
    );
    expect(called).toBe(c.allowed);
    expect(explained.allowed).toBe(called);
    expect(explained.decisions).toHaveLength(1);
    expect(explained.decisions[0]).toMatchObject({ action: "kms:CreateGrant", allowed: called });
  });

  test("a refused delegation is reported with the call's reason", async () => {
    const request = { keyId, granteePrincipal: CAROL, operations: ["Decrypt"] as const };
    const explained = await kms.explain({
      operation: "createGrant",
      request,
      as: { principal: BOB },
    });
    const denial = await kms.createGrant(request, { principal: BOB }).then(
      () => undefined,
      (error: unknown) => error as Error,
    );
    expect(denial).toBeInstanceOf(AccessDeniedError);
    expect(explained.decisions[0]).toMatchObject({
      allowed: false,
      reason: "implicit-deny",
      message: denial?.message,
    });
    expect(explained.decisions[0]!.message).toMatch(/does not allow Decrypt/);
  });

  test("a principal the key policy allows is not bound by the rule, in explain as in the call", async () => {
    const request = { keyId, granteePrincipal: CAROL, operations: ["Sign", "Decrypt"] as const };
    // Sign does not fit a symmetric key: the call refuses it as invalid, not as unauthorized;
    // explain reports authorization.
    const explained = await kms.explain({ operation: "createGrant", request });
    expect(explained.allowed).toBe(true);
    expect(explained.decisions[0]).toMatchObject({ reason: "policy-allow" });
    await expect(kms.createGrant(request)).rejects.toBeInstanceOf(ValidationError);
    const ok = { ...request, operations: ["Decrypt", "ReEncryptFrom"] as const };
    expect((await kms.explain({ operation: "createGrant", request: ok })).allowed).toBe(true);
    await expect(kms.createGrant(ok)).resolves.toBeDefined();
  });
});
