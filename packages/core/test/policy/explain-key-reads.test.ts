/**
 * `explain` reports a key's policy statements (index, Sid) and grant ids: what GetKeyPolicy and
 * ListGrants read. Found in review: it was authorized against the account policy only, so a
 * caller the key policy denied kms:* read them anyway, for any `as` principal; a key that did
 * not exist answered `{ allowed: false, decisions: [] }` where the calls answer NotFound; and
 * its audit event named no key.
 */
import {
  AccessDeniedError,
  type AuditEvent,
  createKms,
  type Kms,
  MemoryKeyStore,
  NotFoundError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ARN_PREFIX = "arn:aws:kms:local:000000000000";
const ADMIN = "arn:aws:iam::000000000000:user/admin";
const MALLORY = "arn:aws:iam::000000000000:user/mallory";
const AUDITOR = "arn:aws:iam::000000000000:user/auditor";
const POLICY_READER = "arn:aws:iam::000000000000:user/policy-reader";
const PARTNER = "arn:aws:iam::111122223333:role/partner";
const MISSING = "00000000-0000-0000-0000-000000000000";
const plaintext = new TextEncoder().encode("secret");

const keyPolicy = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    {
      Sid: "DenyMallory",
      Effect: "Deny",
      Principal: { AWS: MALLORY },
      Action: "kms:*",
      Resource: "*",
    },
    {
      Sid: "AdminsOnly-TenantAcme",
      Effect: "Allow",
      Principal: { AWS: ADMIN },
      Action: "kms:*",
      Resource: "*",
    },
    {
      Sid: "Auditor",
      Effect: "Allow",
      Principal: { AWS: AUDITOR },
      Action: ["kms:GetKeyPolicy", "kms:ListGrants"],
      Resource: "*",
    },
    {
      Sid: "PolicyOnly",
      Effect: "Allow",
      Principal: { AWS: POLICY_READER },
      Action: "kms:GetKeyPolicy",
      Resource: "*",
    },
  ],
});

let clock: ManualClock;
let store: MemoryKeyStore;
let kms: Kms;
let keyId: string;
let grantId: string;

beforeEach(async () => {
  clock = new ManualClock();
  store = new MemoryKeyStore();
  kms = await createKms({ clock, store });
  keyId = (await kms.createKey({ policy: keyPolicy }, { principal: ADMIN })).keyMetadata.keyId;
  ({ grantId } = await kms.createGrant(
    {
      keyId,
      granteePrincipal: PARTNER,
      operations: ["Decrypt"],
      constraints: { encryptionContextSubset: { tenant: "acme" } },
    },
    { principal: ADMIN },
  ));
});

async function outcome(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
    return "resolved";
  } catch (error) {
    return error instanceof Error ? error.constructor.name : error;
  }
}

async function lastExplainEvent(): Promise<AuditEvent> {
  const events = (await kms.audit.events()).filter((e) => e.eventName === "Explain");
  const last = events.at(-1);
  if (last === undefined) throw new Error("no Explain event");
  return last;
}

describe("explain is allowed only to a caller who may read the key's policy and grants", () => {
  test("a caller the key policy denies kms:* learns no statement or grant, for any `as`", async () => {
    const principal = { principal: MALLORY };
    // The calls that read what explain reports are denied to it:
    for (const read of [
      kms.getKeyPolicy({ keyId }, principal),
      kms.listGrants({ keyId }, principal),
    ]) {
      await expect(read).rejects.toBeInstanceOf(AccessDeniedError);
    }
    const requests = [
      { operation: "decrypt", request: { keyId }, as: { principal: ADMIN } },
      {
        operation: "decrypt",
        request: { keyId, encryptionContext: { tenant: "acme" } },
        as: { principal: PARTNER },
      },
      { operation: "encrypt", request: { keyId } },
    ];
    for (const request of requests) {
      const refused = kms.explain(request, principal);
      await expect(refused).rejects.toBeInstanceOf(AccessDeniedError);
      const message = await refused.catch((e: Error) => e.message);
      expect(message).not.toContain("AdminsOnly-TenantAcme");
      expect(message).not.toContain(grantId);
    }
  });

  test("a caller without an allowing statement (implicit deny) is refused too", async () => {
    const bob = { principal: "arn:aws:iam::000000000000:user/bob" };
    await expect(kms.explain({ operation: "encrypt", request: { keyId } }, bob)).rejects.toThrow(
      /kms:GetKeyPolicy/,
    );
  });

  test("kms:GetKeyPolicy alone is not enough: grant ids are what ListGrants reads", async () => {
    await expect(
      kms.explain({ operation: "encrypt", request: { keyId } }, { principal: POLICY_READER }),
    ).rejects.toThrow(/kms:ListGrants/);
  });

  test("a caller allowed both explains anyone's call, denials and grants included", async () => {
    const auditor = { principal: AUDITOR };
    const mallory = await kms.explain(
      { operation: "decrypt", request: { keyId }, as: { principal: MALLORY } },
      auditor,
    );
    expect(mallory).toMatchObject({
      allowed: false,
      decisions: [{ reason: "explicit-deny", sid: "DenyMallory", statementIndex: 0 }],
    });
    const partner = await kms.explain(
      {
        operation: "decrypt",
        request: { keyId, encryptionContext: { tenant: "acme" } },
        as: { principal: PARTNER },
      },
      auditor,
    );
    expect(partner).toMatchObject({
      allowed: true,
      decisions: [{ reason: "grant-allow", grantId }],
    });
  });

  test("the caller is checked, not the `as` principal", async () => {
    // Mallory may not explain even a call of its own; an admin may explain Mallory's.
    await expect(
      kms.explain(
        { operation: "encrypt", request: { keyId }, as: { principal: MALLORY } },
        { principal: MALLORY },
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const byAdmin = await kms.explain(
      { operation: "encrypt", request: { keyId }, as: { principal: MALLORY } },
      { principal: ADMIN },
    );
    expect(byAdmin.decisions[0]).toMatchObject({ reason: "explicit-deny", sid: "DenyMallory" });
  });

  test("every key the call reads is checked: ReEncrypt's destination too", async () => {
    const open = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId: open, plaintext });
    const reEncrypt = { ciphertextBlob, destinationKeyId: keyId };
    // Mallory may read the source key (default policy: the account), not the destination.
    await expect(
      kms.explain({ operation: "reEncrypt", request: reEncrypt }, { principal: MALLORY }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    const explained = await kms.explain(
      { operation: "reEncrypt", request: reEncrypt },
      { principal: ADMIN },
    );
    expect(new Set(explained.decisions.map((d) => d.resource))).toEqual(
      new Set([`${ARN_PREFIX}:key/${open}`, `${ARN_PREFIX}:key/${keyId}`]),
    );
  });

  test("with authorization off every caller may explain, as every caller may call", async () => {
    const open = await createKms({ authorization: false });
    const id = (await open.createKey({ policy: keyPolicy })).keyMetadata.keyId;
    const explained = await open.explain(
      { operation: "encrypt", request: { keyId: id } },
      { principal: MALLORY },
    );
    expect(explained.decisions).toHaveLength(1);
  });
});

describe("a key that does not exist is NotFoundError, as the calls answer", () => {
  test.each([
    ["describeKey", { keyId: MISSING }],
    ["encrypt", { keyId: MISSING, plaintext }],
    ["getKeyPolicy", { keyId: MISSING }],
  ])("%s", async (operation, request) => {
    const call = (kms as unknown as Record<string, (r: object) => Promise<unknown>>)[operation];
    expect(await outcome(call!.call(kms, request))).toBe("NotFoundError");
    for (const principal of [ADMIN, MALLORY]) {
      await expect(kms.explain({ operation, request }, { principal })).rejects.toBeInstanceOf(
        NotFoundError,
      );
    }
  });

  test("a key whose deletion is due: NotFoundError, and explain does not destroy it", async () => {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 }, { principal: ADMIN });
    clock.advanceDays(8);
    await expect(
      kms.explain({ operation: "describeKey", request: { keyId } }, { principal: ADMIN }),
    ).rejects.toBeInstanceOf(NotFoundError);
    expect(await store.getKey(keyId)).toBeDefined();
  });

  test("an RSA ciphertext is not read as a header: it names no key, missing or not", async () => {
    const rsa = (await kms.createKey({ keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" }))
      .keyMetadata.keyId;
    // A symmetric blob of a key since gone stands in for RSA output whose bytes parse as one.
    const gone = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId: gone, plaintext });
    await kms.scheduleKeyDeletion({ keyId: gone, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const explained = await kms.explain({
      operation: "decrypt",
      request: { keyId: rsa, ciphertextBlob, encryptionAlgorithm: "RSAES_OAEP_SHA_256" },
    });
    expect(explained.decisions.map((d) => d.resource)).toEqual([`${ARN_PREFIX}:key/${rsa}`]);
  });
});

describe("the key a ciphertext's header names, read as the call reads it", () => {
  test("a header naming a key that does not exist: InvalidCiphertextError, as decrypt answers", async () => {
    const gone = (await kms.createKey()).keyMetadata.keyId;
    const { ciphertextBlob } = await kms.encrypt({ keyId: gone, plaintext });
    await kms.scheduleKeyDeletion({ keyId: gone, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const calls = [
      ["decrypt", { ciphertextBlob }, () => kms.decrypt({ ciphertextBlob }, { principal: ADMIN })],
      [
        "reEncrypt",
        { ciphertextBlob, destinationKeyId: keyId },
        () => kms.reEncrypt({ ciphertextBlob, destinationKeyId: keyId }, { principal: ADMIN }),
      ],
    ] as const;
    for (const [operation, request, call] of calls) {
      expect(await outcome(call())).toBe("InvalidCiphertextError");
      expect(await outcome(kms.explain({ operation, request }, { principal: ADMIN }))).toBe(
        "InvalidCiphertextError",
      );
    }
    // Named by the key argument too, it is still the header's key the call finds missing.
    const named = { ciphertextBlob, keyId: gone };
    expect(await outcome(kms.decrypt(named, { principal: ADMIN }))).toBe("InvalidCiphertextError");
    expect(
      await outcome(kms.explain({ operation: "decrypt", request: named }, { principal: ADMIN })),
    ).toBe("InvalidCiphertextError");
    // A missing key argument with another key's header is NotFound, in both.
    const { ciphertextBlob: live } = await kms.encrypt({ keyId, plaintext }, { principal: ADMIN });
    const other = { ciphertextBlob: live, keyId: MISSING };
    expect(await outcome(kms.decrypt(other, { principal: ADMIN }))).toBe("NotFoundError");
    expect(
      await outcome(kms.explain({ operation: "decrypt", request: other }, { principal: ADMIN })),
    ).toBe("NotFoundError");
  });

  test("an algorithm other than SYMMETRIC_DEFAULT or RSA: the header names no key", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext }, { principal: ADMIN });
    for (const [operation, request] of [
      ["decrypt", { ciphertextBlob, encryptionAlgorithm: "SM2PKE" }],
      ["reEncrypt", { ciphertextBlob, sourceEncryptionAlgorithm: "SM2PKE" }],
    ] as const) {
      // The call refuses the algorithm before it reads the blob; explained, it names no key.
      expect(await outcome(kms[operation](request as never, { principal: ADMIN }))).toBe(
        "ValidationError",
      );
      expect(await outcome(kms.explain({ operation, request }, { principal: ADMIN }))).toBe(
        "ValidationError",
      );
    }
  });
});

describe("the Explain event", () => {
  test("lists the keys explained and the authorizations made to read them", async () => {
    await kms.explain({ operation: "encrypt", request: { keyId } }, { principal: ADMIN });
    const event = await lastExplainEvent();
    expect(event.errorCode).toBeUndefined();
    expect(event.resources.map((r) => r.ARN)).toEqual([`${ARN_PREFIX}:key/${keyId}`]);
    expect(event.additionalEventData?.authorization).toEqual([
      {
        action: "kms:Explain",
        decision: "policy-allow",
        statement: 0,
        sid: "Enable IAM User Permissions",
      },
      {
        action: "kms:GetKeyPolicy",
        decision: "policy-allow",
        statement: 1,
        sid: "AdminsOnly-TenantAcme",
      },
      {
        action: "kms:ListGrants",
        decision: "policy-allow",
        statement: 1,
        sid: "AdminsOnly-TenantAcme",
      },
    ]);
  });

  test("records a refused explain as denied, naming the key and the deciding statement", async () => {
    await kms
      .explain({ operation: "encrypt", request: { keyId } }, { principal: MALLORY })
      .catch(() => undefined);
    const event = await lastExplainEvent();
    expect(event.userIdentity.arn).toBe(MALLORY);
    expect(event.errorCode).toBe("AccessDeniedException");
    expect(event.resources.map((r) => r.ARN)).toEqual([`${ARN_PREFIX}:key/${keyId}`]);
    expect(event.additionalEventData?.authorization).toContainEqual({
      action: "kms:GetKeyPolicy",
      decision: "explicit-deny",
      statement: 0,
      sid: "DenyMallory",
    });
  });
});
