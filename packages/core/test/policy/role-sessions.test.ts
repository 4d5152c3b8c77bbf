// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
/**
 * Role sessions: AWS applies a role named in a key policy's Principal, in a grant's grantee or
 * retiring principal, and in aws:PrincipalArn to every assumed-role session of that role, and
 * gives a session its role's tags as aws:PrincipalTag (docs/POLICY.md, "Roles and their
 * sessions"). A Deny naming the role, or reading its tags, must hold for its sessions.
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

describe("aws:PrincipalTag for a session", () => {
  const LOOKALIKE = `arn:aws:sts::${ACCOUNT}:assumed-role/Admin`;
  const PATH_ROLE = `arn:aws:iam::${ACCOUNT}:role/team/Admin`;

  async function withTags(principalTags: Record<string, Record<string, string>>): Promise<void> {
    kms = await createKms({ clock: new ManualClock(), principalTags });
    keyId = (await kms.createKey()).keyMetadata.keyId;
  }

  /** Allows kms:Encrypt to anyone whose tag `key` is `value`: the condition alone decides. */
  const allowWhenTag = (key: string, value: string): Statement => ({
    Sid: "AllowByTag",
    Effect: "Allow",
    Principal: "*",
    Action: "kms:Encrypt",
    Resource: "*",
    Condition: { StringEquals: { [`aws:PrincipalTag/${key}`]: value } },
  });
  const EVERYONE: Statement = {
    Sid: "Everyone",
    Effect: "Allow",
    Principal: "*",
    Action: "kms:Encrypt",
    Resource: "*",
  };
  const denyContractors = (key = "team"): Statement => ({
    Sid: "DenyContractors",
    Effect: "Deny",
    Principal: "*",
    Action: "kms:Encrypt",
    Resource: "*",
    Condition: { StringEquals: { [`aws:PrincipalTag/${key}`]: "contractors" } },
  });

  test("an Allow on the role's tag serves its sessions, not another role's", async () => {
    await withTags({ [ROLE]: { team: "blue" } });
    await setPolicy(allowWhenTag("team", "blue"));
    expect(await encryptAs(ROLE)).toBe("allowed");
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("allowed");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      allowed: true,
      reason: "policy-allow",
      sid: "AllowByTag",
    });
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    // Another account's role of the same name is another role, with tags of its own.
    expect(await encryptAs(OTHER_ACCOUNT_SESSION)).toBe("denied");
  });

  test("a Deny on the role's tag holds for its sessions over any Allow", async () => {
    await withTags({ [ROLE]: { team: "contractors" } });
    await setPolicy(EVERYONE, denyContractors());
    expect(await encryptAs(SESSION)).toBe("denied");
    expect(await explainEncrypt(SESSION)).toMatchObject({
      allowed: false,
      reason: "explicit-deny",
      sid: "DenyContractors",
    });
    const denied = (await kms.audit.events()).filter(
      (e) => e.eventName === "Encrypt" && e.userIdentity.arn === SESSION,
    );
    expect(denied.at(-1)?.additionalEventData?.authorization).toEqual([
      { action: "kms:Encrypt", decision: "explicit-deny", statement: 2, sid: "DenyContractors" },
    ]);
    expect(await encryptAs(OTHER_SESSION)).toBe("allowed");
  });

  test("a Deny unless the role's tag holds lets its sessions through, and no one else", async () => {
    await withTags({ [ROLE]: { clearance: "high" } });
    await setPolicy(EVERYONE, {
      Sid: "DenyUnlessCleared",
      Effect: "Deny",
      Principal: "*",
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { StringNotEquals: { "aws:PrincipalTag/clearance": "high" } },
    });
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    expect(await encryptAs(LOOKALIKE)).toBe("denied");
  });

  test("the session's own tag overrides the role's, key by key", async () => {
    await withTags({
      [ROLE]: { team: "contractors", clearance: "high" },
      [SESSION]: { team: "blue" },
    });
    await setPolicy(denyContractors(), allowWhenTag("clearance", "high"));
    // team from the session, clearance still from the role.
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("denied");
    expect(await explainEncrypt(SESSION_2)).toMatchObject({ sid: "DenyContractors" });
    // The role itself never reads a session's tags.
    expect(await encryptAs(ROLE)).toBe("denied");
  });

  test("a session tag whose key differs from the role's only in case overrides it", async () => {
    await withTags({ [ROLE]: { Team: "contractors" }, [SESSION]: { team: "blue" } });
    for (const written of ["team", "Team", "TEAM"]) {
      await setPolicy(EVERYONE, denyContractors(written));
      expect(await encryptAs(SESSION), written).toBe("allowed");
      expect(await encryptAs(SESSION_2), written).toBe("denied");
    }
  });

  test("a session tag with an empty value still overrides the role's", async () => {
    await withTags({ [ROLE]: { team: "contractors" }, [SESSION]: { team: "" } });
    await setPolicy(EVERYONE, denyContractors());
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(SESSION_2)).toBe("denied");
  });

  test("${aws:PrincipalTag/team} resolves for a session from its role's tags", async () => {
    await withTags({ [ROLE]: { team: "blue" }, [SESSION_2]: { team: "red" } });
    await setPolicy({
      Effect: "Allow",
      Principal: "*",
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { StringEquals: { "kms:EncryptionContext:team": "${aws:PrincipalTag/team}" } },
    });
    const encryptIn = async (principal: string, team: string) =>
      kms.encrypt({ keyId, plaintext, encryptionContext: { team } }, as(principal));
    await expect(encryptIn(SESSION, "blue")).resolves.toMatchObject({ keyId: expect.any(String) });
    await expect(encryptIn(SESSION, "red")).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(encryptIn(SESSION_2, "red")).resolves.toMatchObject({
      keyId: expect.any(String),
    });
    await expect(encryptIn(SESSION_2, "blue")).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(encryptIn(OTHER_SESSION, "blue")).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("a principal that only looks like a session gets no role tags", async () => {
    await withTags({ [ROLE]: { team: "blue" } });
    await setPolicy(allowWhenTag("team", "blue"));
    expect(await encryptAs(LOOKALIKE)).toBe("denied");
    expect(await encryptAs(`${LOOKALIKE}/`)).toBe("denied");
    expect(await encryptAs(`arn:aws:iam::${ACCOUNT}:user/Admin/s1`)).toBe("denied");
    expect(await encryptAs(SESSION)).toBe("allowed");
  });

  test("a role with a path lends its tags to no session, whose ARN lacks the path", async () => {
    await withTags({ [PATH_ROLE]: { team: "blue" } });
    await setPolicy(allowWhenTag("team", "blue"));
    expect(await encryptAs(PATH_ROLE)).toBe("allowed");
    expect(await encryptAs(SESSION)).toBe("denied");
  });
});

describe("aws:PrincipalTag with an empty value", () => {
  // AWS: a tag without a value has the empty string as its value; Null is false for a key that
  // exists, whatever its value. The role's empty tag reaches its sessions the same way.
  beforeEach(async () => {
    kms = await createKms({ clock: new ManualClock(), principalTags: { [ROLE]: { team: "" } } });
    keyId = (await kms.createKey()).keyMetadata.keyId;
  });

  test("is present for Null, and a Deny on untagged principals spares it", async () => {
    await setPolicy(
      { Effect: "Allow", Principal: "*", Action: "kms:Encrypt", Resource: "*" },
      {
        Effect: "Deny",
        Principal: "*",
        Action: "kms:Encrypt",
        Resource: "*",
        Condition: { Null: { "aws:PrincipalTag/team": "true" } },
      },
    );
    expect(await encryptAs(ROLE)).toBe("allowed");
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
  });

  test('matches StringEquals "" and a variable resolves to it, not to its default', async () => {
    await setPolicy(
      {
        Effect: "Allow",
        Principal: "*",
        Action: "kms:Encrypt",
        Resource: "*",
        Condition: { StringEquals: { "aws:PrincipalTag/team": "" } },
      },
      {
        Effect: "Allow",
        Principal: "*",
        Action: "kms:Decrypt",
        Resource: "*",
        Condition: {
          StringEquals: { "kms:EncryptionContext:team": "${aws:PrincipalTag/team, 'none'}" },
        },
      },
    );
    expect(await encryptAs(SESSION)).toBe("allowed");
    expect(await encryptAs(OTHER_SESSION)).toBe("denied");
    const blob = async (team: string) =>
      (await kms.encrypt({ keyId, plaintext, encryptionContext: { team } })).ciphertextBlob;
    const decryptAs = (principal: string, team: string, ciphertextBlob: Uint8Array) =>
      kms.decrypt({ ciphertextBlob, encryptionContext: { team } }, as(principal));
    const empty = await blob("");
    const none = await blob("none");
    await expect(decryptAs(SESSION, "", empty)).resolves.toMatchObject({
      keyId: expect.any(String),
    });
    await expect(decryptAs(SESSION, "none", none)).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(decryptAs(OTHER_SESSION, "none", none)).resolves.toMatchObject({
      keyId: expect.any(String),
    });
  });
});
