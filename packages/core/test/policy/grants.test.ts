import {
  AccessDeniedError,
  createKms,
  DryRunOperationError,
  InvalidGrantTokenError,
  type Kms,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ALICE = "arn:aws:iam::111122223333:user/alice";
const BOB = "arn:aws:iam::111122223333:user/bob";
const RETIRER = "arn:aws:iam::444455556666:role/retirer";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("grant me");

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("createGrant", () => {
  test("a grant lets its grantee perform exactly its operations", async () => {
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    const { grantId, grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "DescribeKey"],
    });
    expect(grantId).toMatch(/^[0-9a-f]{64}$/);
    expect(grantToken.length).toBeGreaterThan(0);
    const { ciphertextBlob } = await kms.encrypt(
      { keyId, plaintext, grantTokens: [grantToken] },
      as(ALICE),
    );
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
    await expect(kms.decrypt({ ciphertextBlob }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.encrypt({ keyId, plaintext }, as(BOB))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("the same name and fields return the same grant id; different fields a new one", async () => {
    const request = {
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt" as const],
      name: "app",
    };
    const a = await kms.createGrant(request);
    const b = await kms.createGrant(request);
    expect(b.grantId).toBe(a.grantId);
    const c = await kms.createGrant({ ...request, operations: ["Decrypt"] });
    expect(c.grantId).not.toBe(a.grantId);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(2);
  });

  test("rejects operations a grant cannot allow and empty lists", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["PutKeyPolicy" as never] }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: [] }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("dryRun checks without creating", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["Encrypt"], dryRun: true }),
    ).rejects.toBeInstanceOf(DryRunOperationError);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("a grantee with CreateGrant can only hand on operations it has", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "CreateGrant"],
    });
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt"] }, as(ALICE)),
    ).resolves.toBeDefined();
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Decrypt"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("delegated grants keep their parent's constraints", () => {
  type Constraints = Parameters<Kms["createGrant"]>[0]["constraints"];
  const delegate = async (parent: Constraints, child: Constraints) => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "CreateGrant"],
      ...(parent ? { constraints: parent } : {}),
    });
    return kms.createGrant(
      {
        keyId,
        granteePrincipal: BOB,
        operations: ["Encrypt"],
        ...(child ? { constraints: child } : {}),
      },
      as(ALICE),
    );
  };
  const subset = (pairs: Record<string, string>) => ({ encryptionContextSubset: pairs });
  const equals = (pairs: Record<string, string>) => ({ encryptionContextEquals: pairs });

  test.each<[string, Constraints, Constraints, boolean]>([
    ["the same subset", subset({ tenant: "a" }), subset({ tenant: "a" }), true],
    [
      "the same subset in another key order",
      subset({ t: "a", r: "eu" }),
      subset({ r: "eu", t: "a" }),
      true,
    ],
    [
      "a narrower subset (more pairs)",
      subset({ tenant: "a" }),
      subset({ tenant: "a", row: "7" }),
      true,
    ],
    [
      "one exact context inside the subset",
      subset({ tenant: "a" }),
      equals({ tenant: "a", row: "7" }),
      true,
    ],
    ["keys compare case-insensitively", subset({ tenant: "a" }), subset({ TENANT: "a" }), true],
    ["the same exact context", equals({ tenant: "a" }), equals({ tenant: "a" }), true],
    ["an unconstrained parent allows anything", undefined, subset({ tenant: "a" }), true],
    ["no constraints under a constrained parent", subset({ tenant: "a" }), undefined, false],
    [
      "a wider subset (fewer pairs)",
      subset({ tenant: "a", row: "7" }),
      subset({ tenant: "a" }),
      false,
    ],
    ["another value", subset({ tenant: "a" }), subset({ tenant: "b" }), false],
    ["values compare exactly", subset({ tenant: "a" }), subset({ tenant: "A" }), false],
    ["a subset under an exact parent", equals({ tenant: "a" }), subset({ tenant: "a" }), false],
    ["another exact context", equals({ tenant: "a" }), equals({ tenant: "a", row: "7" }), false],
    [
      "an exact context outside the subset",
      subset({ tenant: "a" }),
      equals({ tenant: "b" }),
      false,
    ],
  ])("%s", async (_name, parent, child, allowed) => {
    const created = delegate(parent, child);
    if (allowed) await expect(created).resolves.toMatchObject({ grantId: expect.any(String) });
    else await expect(created).rejects.toThrow(/does not keep/);
  });

  test("the delegated grant's narrower constraint is what its grantee gets", async () => {
    await delegate(subset({ tenant: "a" }), subset({ tenant: "a", row: "7" }));
    const enc = (encryptionContext: Record<string, string>) =>
      kms.encrypt({ keyId, plaintext, encryptionContext }, as(BOB));
    await expect(enc({ tenant: "a", row: "7" })).resolves.toBeDefined();
    await expect(enc({ tenant: "a", row: "8" })).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("grant constraints", () => {
  test("EncryptionContextEquals needs exactly that context (keys case-insensitive, values exact)", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    const enc = (encryptionContext?: Record<string, string>) =>
      kms.encrypt(
        { keyId, plaintext, ...(encryptionContext ? { encryptionContext } : {}) },
        as(ALICE),
      );
    await expect(enc({ tenant: "a" })).resolves.toBeDefined();
    await expect(enc({ TENANT: "a" })).resolves.toBeDefined();
    await expect(enc({ tenant: "A" })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(enc({ tenant: "a", extra: "x" })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(enc()).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("EncryptionContextSubset needs at least those pairs", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "Decrypt", "GenerateDataKey"],
      constraints: { encryptionContextSubset: { tenant: "a" } },
    });
    const { ciphertextBlob } = await kms.encrypt(
      { keyId, plaintext, encryptionContext: { tenant: "a", row: "7" } },
      as(ALICE),
    );
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "a", row: "7" } }, as(ALICE)),
    ).resolves.toMatchObject({ plaintext });
    await expect(
      kms.generateDataKey(
        { keyId, keySpec: "AES_256", encryptionContext: { tenant: "b" } },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("constraints do not apply to operations without an encryption context", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["DescribeKey"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
  });
});

describe("retire and revoke", () => {
  test("after retireGrant (by its retiring principal, with the token) the grantee is denied", async () => {
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      retiringPrincipal: RETIRER,
      operations: ["Encrypt"],
    });
    await kms.encrypt({ keyId, plaintext }, as(ALICE));
    expect((await kms.listRetirableGrants({ retiringPrincipal: RETIRER })).grants).toHaveLength(1);
    await expect(kms.retireGrant({ grantToken }, as(BOB))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await kms.retireGrant({ grantToken }, as(RETIRER));
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    expect((await kms.listRetirableGrants({ retiringPrincipal: RETIRER })).grants).toHaveLength(0);
    await expect(kms.retireGrant({ grantToken }, as(RETIRER))).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test("a grantee whose grant includes RetireGrant may retire it by key and grant id", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "RetireGrant"],
    });
    await kms.retireGrant({ keyId, grantId }, as(ALICE));
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("after revokeGrant the grantee is denied; revoking needs kms:RevokeGrant", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    await expect(kms.revokeGrant({ keyId, grantId }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.revokeGrant({ keyId, grantId, dryRun: true })).rejects.toBeInstanceOf(
      DryRunOperationError,
    );
    await kms.encrypt({ keyId, plaintext }, as(ALICE));
    await kms.revokeGrant({ keyId, grantId });
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.revokeGrant({ keyId, grantId })).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("listing and tokens", () => {
  test("listGrants pages and filters", async () => {
    for (let i = 0; i < 5; i++) {
      await kms.createGrant({
        keyId,
        granteePrincipal: i % 2 ? ALICE : BOB,
        operations: ["Encrypt"],
      });
    }
    const first = await kms.listGrants({ keyId, limit: 2 });
    expect(first.grants).toHaveLength(2);
    expect(first.truncated).toBe(true);
    const rest = await kms.listGrants({ keyId, limit: 10, marker: first.nextMarker! });
    expect(rest.grants).toHaveLength(3);
    expect((await kms.listGrants({ keyId, granteePrincipal: ALICE })).grants).toHaveLength(2);
    expect(first.grants[0]).toMatchObject({
      operations: ["Encrypt"],
      keyId: expect.stringContaining(keyId),
    });
  });

  test("at most 10 well-formed grant tokens are accepted by operations that take them", async () => {
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    await expect(
      kms.encrypt({ keyId, plaintext, grantTokens: Array(10).fill(grantToken) }),
    ).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, grantTokens: Array(11).fill(grantToken) }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(kms.describeKey({ keyId, grantTokens: ["not-a-token"] })).rejects.toBeInstanceOf(
      InvalidGrantTokenError,
    );
  });

  test("grants survive in the key record: a second Kms on the same store sees them", async () => {
    const { MemoryKeyStore } = await import("@kms/core");
    const store = new MemoryKeyStore();
    const rootKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const a = await createKms({ store, rootKey });
    const id = (await a.createKey()).keyMetadata.keyId;
    await a.createGrant({ keyId: id, granteePrincipal: ALICE, operations: ["Encrypt"] });
    const b = await createKms({ store, rootKey });
    await expect(b.encrypt({ keyId: id, plaintext }, as(ALICE))).resolves.toBeDefined();
  });
});
