/**
 * Role sessions: AWS applies a role named in a key policy's Principal, in a grant's grantee or
 * retiring principal, and in aws:PrincipalArn to every assumed-role session of that role
 * (docs/POLICY.md, "Roles and their sessions"). A Deny naming the role must hold for its sessions.
 */
import { AccessDeniedError, createKms, type Kms } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ACCOUNT = "111122223333";
const ADMIN_ROOT = "arn:aws:iam::000000000000:root";
const ROLE = `arn:aws:iam::${ACCOUNT}:role/Admin`;
const SESSION = `arn:aws:sts::${ACCOUNT}:assumed-role/Admin/s1`;
const SESSION_2 = `arn:aws:sts::${ACCOUNT}:assumed-role/Admin/s2`;
const OTHER_SESSION = `arn:aws:sts::${ACCOUNT}:assumed-role/Other/s1`;
const OTHER_ACCOUNT_SESSION = "arn:aws:sts::444455556666:assumed-role/Admin/s1";
const plaintext = new TextEncoder().encode("role session");
const as = (principal: string) => ({ principal });

type Statement = Record<string, unknown>;
const ADMIN: Statement = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: ADMIN_ROOT },
  Action: "kms:*",
  Resource: "*",
};
const WHOLE_ACCOUNT: Statement = {
  Sid: "Account",
  Effect: "Allow",
  Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` },
  Action: "kms:*",
  Resource: "*",
};

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

async function setPolicy(...statements: Statement[]): Promise<void> {
  await kms.putKeyPolicy({
    keyId,
    policyName: "default",
    policy: JSON.stringify({ Version: "2012-10-17", Statement: [ADMIN, ...statements] }),
  });
}

async function encryptAs(principal: string): Promise<"allowed" | "denied"> {
  try {
    await kms.encrypt({ keyId, plaintext }, as(principal));
    return "allowed";
  } catch (error) {
    if (error instanceof AccessDeniedError) return "denied";
    throw error;
  }
}

async function explainEncrypt(principal: string) {
  const { decisions } = await kms.explain({
    operation: "encrypt",
    request: { keyId },
    as: as(principal),
  });
  expect(decisions).toHaveLength(1);
  return decisions[0]!;
}

describe("a key policy statement naming a role", () => {
  test("a Deny covers every session of the role, and explain names the statement", async () => {
    await setPolicy(WHOLE_ACCOUNT, {
      Sid: "DenyAdmin",
      Effect: "Deny",
      Principal: { AWS: ROLE },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    expect(await encryptAs(ROLE)).toBe("denied");
    expect(await encryptAs(SESSION)).toBe("denied");
    expect(await encryptAs(SESSION_2)).toBe("denied");
    expect(await encryptAs(OTHER_SESSION)).toBe("allowed");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      allowed: false,
      reason: "explicit-deny",
      statementIndex: 2,
      sid: "DenyAdmin",
    });
    const denied = (await kms.audit.events()).filter(
      (e) => e.eventName === "Encrypt" && e.userIdentity.arn === SESSION,
    );
    expect(denied.at(-1)?.additionalEventData?.authorization).toEqual([
      { action: "kms:Encrypt", decision: "explicit-deny", statement: 2, sid: "DenyAdmin" },
    ]);
  });

  test("an Allow covers the role's sessions, not another role's or another account's", async () => {
    await setPolicy({
      Sid: "AllowAdmin",
      Effect: "Allow",
      Principal: { AWS: ROLE },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      allowed: true,
      reason: "policy-allow",
      sid: "AllowAdmin",
    });
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    expect(await encryptAs(OTHER_ACCOUNT_SESSION)).toBe("denied");
  });

  test("a statement naming a session ARN matches that session only", async () => {
    await setPolicy({
      Effect: "Allow",
      Principal: { AWS: SESSION },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("denied");
    expect(await encryptAs(ROLE)).toBe("denied");
  });

  test("a Deny's NotPrincipal exempts a session only when it names the session itself", async () => {
    const denyAllBut = (...exempt: string[]): Statement => ({
      Sid: "DenyAllBut",
      Effect: "Deny",
      NotPrincipal: { AWS: exempt },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    await setPolicy(WHOLE_ACCOUNT, denyAllBut(ROLE, ADMIN_ROOT));
    expect(await encryptAs(ROLE)).toBe("allowed");
    expect(await encryptAs(SESSION)).toBe("denied");
    await setPolicy(WHOLE_ACCOUNT, denyAllBut(ROLE, SESSION, ADMIN_ROOT));
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("denied");
  });

  test("a role whose name holds + = , . @ _ - covers its sessions", async () => {
    const name = "Ops+Admin=1,x.y@z_w-v";
    await setPolicy(
      {
        Effect: "Deny",
        Principal: { AWS: `arn:aws:iam::${ACCOUNT}:role/${name}` },
        Action: "kms:Encrypt",
        Resource: "*",
      },
      WHOLE_ACCOUNT,
    );
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/${name}/s1`)).toBe("denied");
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/${name}/a.b@c=d`)).toBe("denied");
    // The whole segment is the role's name: no prefix of it names another role.
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/Ops/s1`)).toBe("allowed");
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/Ops+Admin=1/s1`)).toBe("allowed");
  });

  test("serves no principal with an empty role or session name", async () => {
    await setPolicy({
      Effect: "Allow",
      Principal: { AWS: ROLE },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/Admin/`)).toBe("denied");
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/Admin`)).toBe("denied");
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role//s1`)).toBe("denied");
    expect(await encryptAs(`arn:aws:sts::${ACCOUNT}:assumed-role/Admin/x`)).toBe("allowed");
  });

  test("a role path is not recovered from a session ARN, which lacks it", async () => {
    await setPolicy({
      Effect: "Allow",
      Principal: { AWS: `arn:aws:iam::${ACCOUNT}:role/team/Admin` },
      Action: "kms:Encrypt",
      Resource: "*",
    });
    expect(await encryptAs(`arn:aws:iam::${ACCOUNT}:role/team/Admin`)).toBe("allowed");
    expect(await encryptAs(SESSION)).toBe("denied");
  });
});

describe("aws:PrincipalArn", () => {
  test("is the role's ARN for a session: a Deny on the role holds for it", async () => {
    await setPolicy(WHOLE_ACCOUNT, {
      Sid: "DenyAdminArn",
      Effect: "Deny",
      Principal: "*",
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { ArnEquals: { "aws:PrincipalArn": ROLE } },
    });
    expect(await encryptAs(SESSION)).toBe("denied");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      reason: "explicit-deny",
      sid: "DenyAdminArn",
    });
    expect(await encryptAs(OTHER_SESSION)).toBe("allowed");
  });

  test("an Allow on the role's ARN serves its sessions; the session ARN is not the value", async () => {
    await setPolicy(
      {
        Sid: "ByRoleArn",
        Effect: "Allow",
        Principal: "*",
        Action: "kms:Encrypt",
        Resource: "*",
        Condition: { ArnLike: { "aws:PrincipalArn": `arn:aws:iam::${ACCOUNT}:role/Admin` } },
      },
      {
        Sid: "BySessionArn",
        Effect: "Allow",
        Principal: "*",
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: { ArnLike: { "aws:PrincipalArn": `arn:aws:sts::${ACCOUNT}:assumed-role/*` } },
      },
    );
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext }, as(SESSION));
    await expect(kms.decrypt({ ciphertextBlob }, as(SESSION))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("is the principal itself for anyone but a session", async () => {
    const alice = `arn:aws:iam::${ACCOUNT}:user/alice`;
    await setPolicy({
      Effect: "Allow",
      Principal: "*",
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { ArnEquals: { "aws:PrincipalArn": [alice, ROLE] } },
    });
    expect(await encryptAs(alice)).toBe("allowed");
    expect(await encryptAs(ROLE)).toBe("allowed");
    expect(await encryptAs(`arn:aws:iam::${ACCOUNT}:user/bob`)).toBe("denied");
  });
});

describe("a grant to a role", () => {
  // The KMS's account is 000000000000: the default policy allows ACCOUNT nothing, so only
  // grants decide below.
  test("serves the role's sessions, and explain names the grant", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ROLE,
      operations: ["Encrypt"],
    });
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    expect(await encryptAs(OTHER_ACCOUNT_SESSION)).toBe("denied");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      allowed: true,
      reason: "grant-allow",
      grantId,
    });
  });

  test("is denied to its sessions by a key policy Deny naming the role", async () => {
    await setPolicy({
      Effect: "Deny",
      Principal: { AWS: ROLE },
      Action: "kms:*",
      Resource: "*",
    });
    await kms.createGrant({ keyId, granteePrincipal: ROLE, operations: ["Encrypt"] });
    expect(await encryptAs(SESSION)).toBe("denied");
    expect(await explainEncrypt(SESSION)).toMatchObject({ reason: "explicit-deny" });
  });

  test("decides by the first grant in stored order when the session holds one of its own too", async () => {
    const first = await kms.createGrant({ keyId, granteePrincipal: ROLE, operations: ["Encrypt"] });
    const second = await kms.createGrant({
      keyId,
      granteePrincipal: SESSION,
      operations: ["Encrypt"],
    });
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await explainEncrypt(SESSION)).toMatchObject({ grantId: first.grantId });
    const events = (await kms.audit.events()).filter(
      (e) => e.eventName === "Encrypt" && e.userIdentity.arn === SESSION,
    );
    expect(events.at(-1)?.additionalEventData?.authorization).toEqual([
      { action: "kms:Encrypt", decision: "grant-allow", grantId: first.grantId },
    ]);
    await kms.revokeGrant({ keyId, grantId: first.grantId });
    expect(await explainEncrypt(SESSION)).toMatchObject({ grantId: second.grantId });
  });

  test("lets a session hand on only what the role's grant holds", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ROLE,
      operations: ["CreateGrant", "Encrypt"],
      constraints: { encryptionContextSubset: { tenant: "a" } },
    });
    await expect(
      kms.createGrant(
        {
          keyId,
          granteePrincipal: OTHER_SESSION,
          operations: ["Encrypt"],
          constraints: { encryptionContextSubset: { tenant: "a" } },
        },
        as(SESSION),
      ),
    ).resolves.toMatchObject({ grantId: expect.any(String) });
    await expect(
      kms.createGrant(
        {
          keyId,
          granteePrincipal: OTHER_SESSION,
          operations: ["Decrypt"],
          constraints: { encryptionContextSubset: { tenant: "a" } },
        },
        as(SESSION),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      kms.createGrant(
        { keyId, granteePrincipal: OTHER_SESSION, operations: ["Encrypt"] },
        as(SESSION),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("retiring a grant from a session", () => {
  test("is allowed when the grant's retiring principal is the session's role", async () => {
    const { grantId, grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: `arn:aws:iam::${ACCOUNT}:user/worker`,
      retiringPrincipal: ROLE,
      operations: ["Encrypt"],
    });
    const { decisions } = await kms.explain({
      operation: "retireGrant",
      request: { grantToken },
      as: as(SESSION),
    });
    expect(decisions).toEqual([
      expect.objectContaining({ allowed: true, reason: "grant-allow", grantId }),
    ]);
    await expect(kms.retireGrant({ grantToken }, as(OTHER_SESSION))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.retireGrant({ grantToken }, as(SESSION))).resolves.toBeUndefined();
    expect((await kms.listGrants({ keyId })).grants).toEqual([]);
  });

  test("is allowed when the grantee is the session's role and the grant includes RetireGrant", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ROLE,
      operations: ["Encrypt", "RetireGrant"],
    });
    await expect(kms.retireGrant({ keyId, grantId }, as(OTHER_SESSION))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.retireGrant({ keyId, grantId }, as(SESSION))).resolves.toBeUndefined();
  });

  test("is refused when the key policy denies the role kms:RetireGrant", async () => {
    await setPolicy({
      Effect: "Deny",
      Principal: { AWS: ROLE },
      Action: "kms:RetireGrant",
      Resource: "*",
    });
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: `arn:aws:iam::${ACCOUNT}:user/worker`,
      retiringPrincipal: SESSION,
      operations: ["Encrypt"],
    });
    await expect(kms.retireGrant({ grantToken }, as(SESSION))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });
});
