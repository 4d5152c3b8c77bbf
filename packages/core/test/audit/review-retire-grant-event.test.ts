/**
 * RetireGrant events, found in review: a retirement by grant token was recorded with empty
 * requestParameters (the token is secret and dropped) and no decision, so the trail could not
 * tell which grant was retired nor why the caller was allowed. The event now carries the grant
 * id (additionalEventData.grantId, as AWS records it) and the decision like every other event.
 */
import { AccessDeniedError, createKms, type Kms } from "@kms/core";
import { beforeEach, describe, expect, it } from "vitest";

const ACCOUNT_ROOT = "arn:aws:iam::000000000000:root";
const BOB = "arn:aws:iam::111122223333:user/bob";
const EVE = "arn:aws:iam::111122223333:user/eve";

async function lastEvent(kms: Kms) {
  const event = (await kms.audit.events()).at(-1)!;
  expect(event.eventName).toBe("RetireGrant");
  return event;
}

describe("a RetireGrant event", () => {
  let kms: Kms;
  let keyId: string;

  beforeEach(async () => {
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
  });

  const grantFor = (retiringPrincipal?: string) =>
    kms.createGrant({
      keyId,
      granteePrincipal: BOB,
      ...(retiringPrincipal !== undefined ? { retiringPrincipal } : {}),
      operations: ["Decrypt"],
    });

  it("by grant token records the grant id and the retiring principal's decision, not the token", async () => {
    const { grantId, grantToken } = await grantFor(BOB);
    await kms.retireGrant({ grantToken }, { principal: BOB });
    const event = await lastEvent(kms);
    expect(event.errorCode).toBeUndefined();
    expect(event.additionalEventData?.grantId).toBe(grantId);
    expect(event.additionalEventData?.authorization).toEqual([
      { action: "kms:RetireGrant", decision: "grant-allow", grantId },
    ]);
    expect(JSON.stringify(event)).not.toContain(grantToken);
  });

  it("by key and grant id records the key policy's decision", async () => {
    const { grantId } = await grantFor();
    await kms.retireGrant({ keyId, grantId }, { principal: ACCOUNT_ROOT });
    const event = await lastEvent(kms);
    expect(event.additionalEventData?.grantId).toBe(grantId);
    expect(event.additionalEventData?.authorization).toEqual([
      {
        action: "kms:RetireGrant",
        decision: "policy-allow",
        statement: 0,
        sid: "Enable IAM User Permissions",
      },
    ]);
  });

  it("of a refused retirement records the refusal", async () => {
    const { grantId, grantToken } = await grantFor(BOB);
    await expect(kms.retireGrant({ grantToken }, { principal: EVE })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    const event = await lastEvent(kms);
    expect(event.errorCode).toBe("AccessDeniedException");
    expect(event.additionalEventData?.grantId).toBe(grantId);
    expect(event.additionalEventData?.authorization).toEqual([
      { action: "kms:RetireGrant", decision: "implicit-deny" },
    ]);
  });

  it("of a retirement the key policy denies records the denying statement", async () => {
    const { grantToken } = await grantFor(BOB);
    await kms.putKeyPolicy({
      keyId,
      policy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: ACCOUNT_ROOT }, Action: "kms:*", Resource: "*" },
          {
            Sid: "NoRetire",
            Effect: "Deny",
            Principal: { AWS: BOB },
            Action: "kms:RetireGrant",
            Resource: "*",
          },
        ],
      }),
    });
    await expect(kms.retireGrant({ grantToken }, { principal: BOB })).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    expect((await lastEvent(kms)).additionalEventData?.authorization).toEqual([
      { action: "kms:RetireGrant", decision: "explicit-deny", statement: 1, sid: "NoRetire" },
    ]);
  });

  it("records no grant id a forged token carries that is not one", async () => {
    const forged = Buffer.from(JSON.stringify({ v: 1, k: keyId, g: "not-a-grant-id" })).toString(
      "base64url",
    );
    await expect(kms.retireGrant({ grantToken: forged })).rejects.toThrow();
    expect((await lastEvent(kms)).additionalEventData?.grantId).toBeUndefined();
  });
});
