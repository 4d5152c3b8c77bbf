/**
 * `explain` of createGrant applies the delegation rule only to a request the call would take as
 * far as the rule: one it refuses for whoever asks (malformed arguments, operations the key
 * cannot hold, the key's state) is explained on its authorization alone (docs/POLICY.md,
 * "dryRun and explain"). Each case asks explain, then makes the real call.
 */
import {
  AccessDeniedError,
  type CreateGrantRequest,
  createKms,
  DisabledError,
  type Kms,
  type KmsError,
  ValidationError,
} from "@kms/core";
import { beforeEach, describe, expect, test } from "vitest";

// Another account's principal: acts on the key through its grant alone.
const BOB = "arn:aws:iam::111122223333:user/bob";
const CAROL = "arn:aws:iam::111122223333:user/carol";

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms();
  keyId = (await kms.createKey()).keyMetadata.keyId;
  await kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt", "CreateGrant"] });
});

async function explainAndCall(request: Record<string, unknown>) {
  const explained = await kms.explain({
    operation: "createGrant",
    request,
    as: { principal: BOB },
  });
  const called = await kms
    // Junk requests on purpose: the call must refuse them at run time.
    .createGrant(request as unknown as CreateGrantRequest, { principal: BOB })
    .then(
      () => undefined,
      (error: unknown) => error as KmsError,
    );
  return { explained, called };
}

describe("explain of createGrant, for requests the call refuses before the delegation rule", () => {
  test.each([
    ["an operation the key cannot hold", { operations: ["Decrypt", "Sign"] }, ValidationError],
    [
      "an operation that is no grant operation",
      { operations: ["Decrypt", "Nope"] },
      ValidationError,
    ],
    ["a malformed name", { operations: ["Decrypt"], name: "a b" }, ValidationError],
    [
      "two constraints",
      {
        operations: ["Decrypt"],
        constraints: { encryptionContextEquals: {}, encryptionContextSubset: {} },
      },
      ValidationError,
    ],
  ] as const)("%s: explained on its authorization", async (_name, fields, refusal) => {
    const { explained, called } = await explainAndCall({
      keyId,
      granteePrincipal: CAROL,
      ...fields,
    });
    expect(called).toBeInstanceOf(refusal);
    expect(explained.allowed).toBe(true);
    expect(explained.decisions[0]).toMatchObject({ reason: "grant-allow" });
  });

  test("a disabled key: explained on its authorization; once enabled, refused as the call refuses", async () => {
    const request = { keyId, granteePrincipal: CAROL, operations: ["Decrypt"] };
    await kms.disableKey({ keyId });
    const disabled = await explainAndCall(request);
    expect(disabled.called).toBeInstanceOf(DisabledError);
    expect(disabled.explained.allowed).toBe(true);

    await kms.enableKey({ keyId });
    const enabled = await explainAndCall(request);
    expect(enabled.called).toBeInstanceOf(AccessDeniedError);
    expect(enabled.explained.allowed).toBe(false);
    expect(enabled.explained.decisions[0]).toMatchObject({
      reason: "implicit-deny",
      message: enabled.called?.message,
    });
  });

  test("a role session is held to its role's CreateGrant grant, in explain as in the call", async () => {
    const role = "arn:aws:iam::111122223333:role/app";
    const session = "arn:aws:sts::111122223333:assumed-role/app/s1";
    await kms.createGrant({
      keyId,
      granteePrincipal: role,
      operations: ["Encrypt", "CreateGrant"],
    });
    for (const [operations, allowed] of [
      [["Encrypt"], true],
      [["Decrypt"], false],
    ] as const) {
      const request = { keyId, granteePrincipal: CAROL, operations };
      const explained = await kms.explain({
        operation: "createGrant",
        request,
        as: { principal: session },
      });
      const called = await kms.createGrant(request, { principal: session }).then(
        () => true,
        () => false,
      );
      expect(called).toBe(allowed);
      expect(explained.allowed).toBe(allowed);
    }
  });
});
