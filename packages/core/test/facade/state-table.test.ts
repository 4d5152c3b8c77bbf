import {
  createKms,
  DisabledError,
  InvalidStateError,
  KEY_STATE_TABLE,
  type KeyStateOperation,
  type KeyStateOutcome,
  type Kms,
  type KmsError,
  UnsupportedOperationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, test } from "vitest";

type ReachableState = "Enabled" | "Disabled" | "PendingDeletion";
const STATES: readonly ReachableState[] = ["Enabled", "Disabled", "PendingDeletion"];

/** A KMS with the key under test (`keyId`) in `state` plus an Enabled helper key. */
interface Fixture {
  readonly kms: Kms;
  /** The key in the state under test. */
  readonly keyId: string;
  /** An Enabled key that is not under test. */
  readonly otherKeyId: string;
  /** Made under `keyId` while it was Enabled. */
  readonly ciphertext: Uint8Array;
  /** Made under `otherKeyId`. */
  readonly otherCiphertext: Uint8Array;
  /** Points to `keyId`. */
  readonly aliasName: string;
  /** Points to `otherKeyId`. */
  readonly otherAliasName: string;
  /** A grant on `keyId`, made while it was Enabled. */
  readonly grantId: string;
  readonly grantToken: string;
}

async function fixture(state: ReachableState): Promise<Fixture> {
  const kms = await createKms({ clock: new ManualClock() });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const otherKeyId = (await kms.createKey()).keyMetadata.keyId;
  const plaintext = new TextEncoder().encode("state table");
  const { ciphertextBlob: ciphertext } = await kms.encrypt({ keyId, plaintext });
  const { ciphertextBlob: otherCiphertext } = await kms.encrypt({ keyId: otherKeyId, plaintext });
  await kms.createAlias({ aliasName: "alias/under-test", targetKeyId: keyId });
  await kms.createAlias({ aliasName: "alias/other", targetKeyId: otherKeyId });
  const grant = await kms.createGrant({
    keyId,
    granteePrincipal: GRANTEE,
    operations: ["Encrypt"],
  });
  if (state === "Disabled") await kms.disableKey({ keyId });
  if (state === "PendingDeletion") await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
  const { keyMetadata } = await kms.describeKey({ keyId });
  expect(keyMetadata.keyState).toBe(state);
  return {
    kms,
    keyId,
    otherKeyId,
    ciphertext,
    otherCiphertext,
    aliasName: "alias/under-test",
    otherAliasName: "alias/other",
    ...grant,
  };
}

const GRANTEE = "arn:aws:iam::000000000000:user/grantee";
const DEFAULT_POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    {
      Effect: "Allow",
      Principal: { AWS: "arn:aws:iam::000000000000:root" },
      Action: "kms:*",
      Resource: "*",
    },
  ],
});

/**
 * How to call each operation so that only the state of `keyId` can make it fail. reEncrypt has
 * a row for the source key (the table's reEncryptSource row, AWS footnote [10]) and one for the
 * destination key (the reEncrypt row).
 */
const INVOKERS: Record<string, (f: Fixture) => Promise<unknown>> = {
  cancelKeyDeletion: (f) => f.kms.cancelKeyDeletion({ keyId: f.keyId }),
  createAlias: (f) => f.kms.createAlias({ aliasName: "alias/new", targetKeyId: f.keyId }),
  decrypt: (f) => f.kms.decrypt({ ciphertextBlob: f.ciphertext }),
  deleteAlias: (f) => f.kms.deleteAlias({ aliasName: f.aliasName }),
  describeKey: (f) => f.kms.describeKey({ keyId: f.keyId }),
  disableKey: (f) => f.kms.disableKey({ keyId: f.keyId }),
  disableKeyRotation: (f) => f.kms.disableKeyRotation({ keyId: f.keyId }),
  enableKey: (f) => f.kms.enableKey({ keyId: f.keyId }),
  enableKeyRotation: (f) => f.kms.enableKeyRotation({ keyId: f.keyId }),
  encrypt: (f) => f.kms.encrypt({ keyId: f.keyId, plaintext: new Uint8Array([1, 2, 3]) }),
  generateDataKey: (f) => f.kms.generateDataKey({ keyId: f.keyId, keySpec: "AES_256" }),
  generateDataKeyWithoutPlaintext: (f) =>
    f.kms.generateDataKeyWithoutPlaintext({ keyId: f.keyId, numberOfBytes: 16 }),
  getKeyRotationStatus: (f) => f.kms.getKeyRotationStatus({ keyId: f.keyId }),
  listAliases: (f) => f.kms.listAliases({ keyId: f.keyId }),
  listKeyRotations: (f) => f.kms.listKeyRotations({ keyId: f.keyId }),
  listResourceTags: (f) => f.kms.listResourceTags({ keyId: f.keyId }),
  "reEncrypt (source)": (f) =>
    f.kms.reEncrypt({ ciphertextBlob: f.ciphertext, destinationKeyId: f.otherKeyId }),
  "reEncrypt (destination)": (f) =>
    f.kms.reEncrypt({ ciphertextBlob: f.otherCiphertext, destinationKeyId: f.keyId }),
  rotateKeyOnDemand: (f) => f.kms.rotateKeyOnDemand({ keyId: f.keyId }),
  scheduleKeyDeletion: (f) => f.kms.scheduleKeyDeletion({ keyId: f.keyId }),
  tagResource: (f) =>
    f.kms.tagResource({ keyId: f.keyId, tags: [{ tagKey: "team", tagValue: "x" }] }),
  untagResource: (f) => f.kms.untagResource({ keyId: f.keyId, tagKeys: ["team"] }),
  updateAlias: (f) => f.kms.updateAlias({ aliasName: f.otherAliasName, targetKeyId: f.keyId }),
  updateKeyDescription: (f) => f.kms.updateKeyDescription({ keyId: f.keyId, description: "d" }),
  createGrant: (f) =>
    f.kms.createGrant({ keyId: f.keyId, granteePrincipal: GRANTEE, operations: ["Decrypt"] }),
  getKeyLastUsage: (f) => f.kms.getKeyLastUsage({ keyId: f.keyId }),
  getKeyPolicy: (f) => f.kms.getKeyPolicy({ keyId: f.keyId }),
  listGrants: (f) => f.kms.listGrants({ keyId: f.keyId }),
  listKeyPolicies: (f) => f.kms.listKeyPolicies({ keyId: f.keyId }),
  listRetirableGrants: (f) => f.kms.listRetirableGrants({ retiringPrincipal: GRANTEE }),
  putKeyPolicy: (f) => f.kms.putKeyPolicy({ keyId: f.keyId, policy: DEFAULT_POLICY }),
  retireGrant: (f) => f.kms.retireGrant({ grantToken: f.grantToken }),
  revokeGrant: (f) => f.kms.revokeGrant({ keyId: f.keyId, grantId: f.grantId }),
};

/**
 * Operations that need an asymmetric or HMAC key; their cells belong to the suite for those key
 * types, since on a symmetric key they fail on key usage, not on state.
 */
const OTHER_KEY_TYPES: ReadonlySet<string> = new Set([
  "sign",
  "verify",
  "getPublicKey",
  "generateMac",
  "verifyMac",
  "generateDataKeyPair",
  "generateDataKeyPairWithoutPlaintext",
  "deriveSharedSecret",
]);

function tableOperation(invoker: string): KeyStateOperation {
  if (invoker === "reEncrypt (source)") return "reEncryptSource";
  return invoker.split(" ")[0] as KeyStateOperation;
}

const ERROR_CLASSES: Record<Exclude<KeyStateOutcome, "ok">, new (m: string) => KmsError> = {
  DisabledException: DisabledError,
  KMSInvalidStateException: InvalidStateError,
  UnsupportedOperationException: UnsupportedOperationError,
};

const cells = Object.keys(INVOKERS).flatMap((invoker) =>
  STATES.map((state) => ({
    invoker,
    state,
    outcome: KEY_STATE_TABLE[tableOperation(invoker)][state],
  })),
);

describe("key state table", () => {
  test("every table operation the facade implements has an invoker here", async () => {
    const kms = await createKms({ clock: new ManualClock() });
    const implemented = (Object.keys(KEY_STATE_TABLE) as KeyStateOperation[]).filter(
      (op) => typeof (kms as unknown as Record<string, unknown>)[op] === "function",
    );
    const covered = new Set(Object.keys(INVOKERS).map(tableOperation));
    expect(implemented.filter((op) => !covered.has(op) && !OTHER_KEY_TYPES.has(op))).toEqual([]);
    expect(cells.length).toBe(Object.keys(INVOKERS).length * STATES.length);
  });

  test.each(cells)("$invoker on a $state key → $outcome", async ({ invoker, state, outcome }) => {
    const f = await fixture(state);
    const call = INVOKERS[invoker]!(f);
    if (outcome === "ok") {
      await expect(call).resolves.not.toBeInstanceOf(Error);
      return;
    }
    const error = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ERROR_CLASSES[outcome]);
    expect((error as KmsError).code).toBe(outcome);
    // The message names the key so that operators can tell which key blocked the call.
    expect((error as KmsError).message).toContain(f.keyId);
  });

  test("a failed state check changes nothing: the key keeps its state", async () => {
    const f = await fixture("PendingDeletion");
    await expect(f.kms.enableKey({ keyId: f.keyId })).rejects.toBeInstanceOf(InvalidStateError);
    const { keyMetadata } = await f.kms.describeKey({ keyId: f.keyId });
    expect(keyMetadata.keyState).toBe("PendingDeletion");
  });
});
