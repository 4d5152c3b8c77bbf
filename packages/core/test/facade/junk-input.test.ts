import { createKms, Kms, KmsError, KmsInternalError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

/**
 * Whatever a caller passes, the facade answers with a client-fault KmsError: never a TypeError
 * from deep inside, never KMSInternalException (which would blame the service for bad input).
 */

let kms: Kms;
let keyId: string;
let ciphertextBlob: Uint8Array;
let grantId: string;
let grantToken: string;
/** A marker each listing issued: a marker is valid only for the listing that made it. */
let markers: Record<string, string> = {};
const ROOT = "arn:aws:iam::000000000000:root";
const POLICY = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" }],
});

// A fresh KMS per test: a junk value that happens to be valid must not change the next test.
beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
  ({ ciphertextBlob } = await kms.encrypt({ keyId, plaintext: new Uint8Array([1, 2, 3]) }));
  await kms.createAlias({ aliasName: "alias/junk", targetKeyId: keyId });
  ({ grantId, grantToken } = await kms.createGrant({
    keyId,
    granteePrincipal: "arn:aws:iam::000000000000:user/grantee",
    retiringPrincipal: ROOT,
    operations: ["Encrypt"],
  }));
  // A second item of each kind, so every listing pages at limit 1 and issues a marker.
  await kms.createKey();
  await kms.createAlias({ aliasName: "alias/junk-2", targetKeyId: keyId });
  await kms.rotateKeyOnDemand({ keyId });
  await kms.rotateKeyOnDemand({ keyId });
  await kms.tagResource({
    keyId,
    tags: [
      { tagKey: "t1", tagValue: "1" },
      { tagKey: "t2", tagValue: "2" },
    ],
  });
  await kms.createGrant({
    keyId,
    granteePrincipal: "arn:aws:iam::000000000000:user/grantee",
    retiringPrincipal: ROOT,
    operations: ["Decrypt"],
  });
  const next = (page: { nextMarker?: string }): string => page.nextMarker!;
  markers = {
    listKeys: next(await kms.listKeys({ limit: 1 })),
    listAliases: next(await kms.listAliases({ keyId, limit: 1 })),
    listKeyRotations: next(await kms.listKeyRotations({ keyId, limit: 1 })),
    listResourceTags: next(await kms.listResourceTags({ keyId, limit: 1 })),
    listGrants: next(await kms.listGrants({ keyId, limit: 1 })),
    listRetirableGrants: next(await kms.listRetirableGrants({ retiringPrincipal: ROOT, limit: 1 })),
  };
});

/** Values that are not a request object at all. */
const NOT_OBJECTS: readonly [string, unknown][] = [
  ["null", null],
  ["undefined", undefined],
  ["a number", 42],
  ["NaN", Number.NaN],
  ["a string", "keyId"],
  ["a boolean", true],
  ["a Uint8Array", new Uint8Array(4)],
  ["an array", [1, 2]],
  ["a function", () => 1],
  ["a symbol", Symbol("x")],
  ["a bigint", 10n],
];

/** Values of the wrong type for a field. */
const WRONG_VALUES: readonly [string, unknown][] = [
  ["null", null],
  ["a negative number", -7],
  ["a fraction", 0.5],
  ["NaN", Number.NaN],
  ["Infinity", Number.POSITIVE_INFINITY],
  ["an object", { a: 1 }],
  ["an array", ["x"]],
  ["a Uint8Array", new Uint8Array(2)],
  ["a boolean", false],
  ["a Date", new Date(0)],
  ["a Map", new Map([["a", "b"]])],
  ["a bigint", 3n],
  ["a symbol", Symbol("y")],
  ["an empty string", ""],
  ["an overlong string", "x".repeat(200_000)],
];

type Method = (request: unknown) => Promise<unknown>;
const method = (name: string): Method => {
  const fn = (kms as unknown as Record<string, Method>)[name]!;
  return (request) => fn.call(kms, request);
};

/** Valid requests per method; fields are then replaced one at a time by junk. */
const VALID: Record<string, () => Record<string, unknown>> = {
  createKey: () => ({
    description: "d",
    keySpec: "SYMMETRIC_DEFAULT",
    keyUsage: "ENCRYPT_DECRYPT",
    customerMasterKeySpec: "SYMMETRIC_DEFAULT",
    origin: "AWS_KMS",
    multiRegion: false,
    tags: [{ tagKey: "a", tagValue: "b" }],
    policy: POLICY,
  }),
  describeKey: () => ({ keyId }),
  listKeys: () => ({ limit: 10, marker: markers.listKeys! }),
  updateKeyDescription: () => ({ keyId, description: "d" }),
  enableKey: () => ({ keyId }),
  disableKey: () => ({ keyId }),
  scheduleKeyDeletion: () => ({ keyId, pendingWindowInDays: 7 }),
  cancelKeyDeletion: () => ({ keyId }),
  createAlias: () => ({ aliasName: "alias/new-one", targetKeyId: keyId }),
  updateAlias: () => ({ aliasName: "alias/junk", targetKeyId: keyId }),
  deleteAlias: () => ({ aliasName: "alias/junk" }),
  listAliases: () => ({ keyId, limit: 10, marker: markers.listAliases! }),
  enableKeyRotation: () => ({ keyId, rotationPeriodInDays: 100 }),
  disableKeyRotation: () => ({ keyId }),
  getKeyRotationStatus: () => ({ keyId }),
  rotateKeyOnDemand: () => ({ keyId }),
  listKeyRotations: () => ({ keyId, limit: 10, marker: markers.listKeyRotations! }),
  encrypt: () => ({
    keyId,
    plaintext: new Uint8Array([1]),
    encryptionContext: { a: "b" },
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
  }),
  decrypt: () => ({
    ciphertextBlob,
    keyId,
    encryptionContext: {},
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
  }),
  reEncrypt: () => ({
    ciphertextBlob,
    sourceKeyId: keyId,
    destinationKeyId: keyId,
    sourceEncryptionContext: {},
    destinationEncryptionContext: { a: "b" },
    sourceEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
    destinationEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
  }),
  generateDataKey: () => ({ keyId, numberOfBytes: 16, encryptionContext: { a: "b" } }),
  generateDataKeyWithoutPlaintext: () => ({ keyId, keySpec: "AES_256", encryptionContext: {} }),
  generateRandom: () => ({ numberOfBytes: 16 }),
  tagResource: () => ({ keyId, tags: [{ tagKey: "a", tagValue: "b" }] }),
  untagResource: () => ({ keyId, tagKeys: ["a"] }),
  listResourceTags: () => ({ keyId, limit: 10, marker: markers.listResourceTags! }),
  putKeyPolicy: () => ({
    keyId,
    policyName: "default",
    policy: POLICY,
    bypassPolicyLockoutSafetyCheck: false,
  }),
  getKeyPolicy: () => ({ keyId, policyName: "default" }),
  // One policy always fits a page: this listing issues no marker, so none is valid.
  listKeyPolicies: () => ({ keyId, limit: 10 }),
  createGrant: () => ({
    keyId,
    granteePrincipal: "arn:aws:iam::000000000000:user/bob",
    retiringPrincipal: ROOT,
    operations: ["Encrypt"],
    constraints: { encryptionContextSubset: { a: "b" } },
    name: "n",
  }),
  listGrants: () => ({ keyId, limit: 10, marker: markers.listGrants! }),
  listRetirableGrants: () => ({
    retiringPrincipal: ROOT,
    limit: 10,
    marker: markers.listRetirableGrants!,
  }),
  retireGrant: () => ({ grantToken }),
  revokeGrant: () => ({ keyId, grantId }),
  explain: () => ({ operation: "encrypt", request: { keyId } }),
  getKeyLastUsage: () => ({ keyId }),
};

/** Methods whose request may be omitted: an undefined request is a valid call for them. */
const OPTIONAL_REQUEST = new Set(["createKey", "listKeys", "listAliases"]);

/**
 * Junk in a field where the field's value is still acceptable (e.g. an empty-string description)
 * is filtered out below by checking the call's outcome rather than expecting a rejection.
 */
async function outcome(call: () => Promise<unknown>): Promise<unknown> {
  try {
    await call();
    return "resolved";
  } catch (error) {
    return error;
  }
}

function expectClientError(error: unknown): void {
  if (error === "resolved") throw new Error("expected a rejection, the call resolved");
  if (!(error instanceof KmsError)) {
    throw new Error(`expected a KmsError, got ${String(error)}`, { cause: error });
  }
  expect(error).not.toBeInstanceOf(KmsInternalError);
  expect(error.clientFault).toBe(true);
}

/**
 * Operations that need an asymmetric or HMAC key for a valid request; the suite for those key
 * types owns their field-by-field junk. They still get the non-object junk below.
 */
const OTHER_KEY_TYPES = new Set([
  "sign",
  "verify",
  "getPublicKey",
  "generateMac",
  "verifyMac",
  "generateDataKeyPair",
  "generateDataKeyPairWithoutPlaintext",
  "deriveSharedSecret",
]);

/** Every public request-taking method of Kms, found on its prototype. */
const PUBLIC_METHODS = Object.getOwnPropertyNames(Kms.prototype).filter(
  (name) =>
    name !== "constructor" &&
    typeof Object.getOwnPropertyDescriptor(Kms.prototype, name)?.value === "function" &&
    !["close", "toJSON", "runMaintenance"].includes(name),
);

describe("every public method rejects non-object requests with a client KmsError", () => {
  test("the table covers every public method of Kms", () => {
    expect(PUBLIC_METHODS.length).toBeGreaterThan(20);
    expect(PUBLIC_METHODS.filter((name) => !(name in VALID) && !OTHER_KEY_TYPES.has(name))).toEqual(
      [],
    );
  });

  const cases = PUBLIC_METHODS.flatMap((name) =>
    NOT_OBJECTS.filter(([label]) => !(label === "undefined" && OPTIONAL_REQUEST.has(name))).map(
      ([label, value]) => ({ name, label, value }),
    ),
  );
  test.each(cases)("$name($label)", async ({ name, value }) => {
    expectClientError(await outcome(() => method(name)(value)));
  });
});

describe("every field rejects values of the wrong type with a client KmsError", () => {
  /** Junk that a field legitimately accepts (string fields take any string within limits). */
  const accepted = (name: string, field: string, label: string): boolean =>
    (field === "description" && label === "an empty string") ||
    (field === "tagKeys" && label === "an array") ||
    (field === "multiRegion" && label === "a boolean") ||
    (field === "plaintext" && label === "a Uint8Array") ||
    (field === "bypassPolicyLockoutSafetyCheck" && label === "a boolean") ||
    // createKey reads these optional fields with `??`, so null means "use the default",
    // as a JSON null does in the AWS protocol.
    (name === "createKey" &&
      label === "null" &&
      ["keyUsage", "origin", "tags", "customerMasterKeySpec"].includes(field));

  const cases = Object.entries(VALID).flatMap(([name, valid]) =>
    Object.keys(valid()).flatMap((field) =>
      WRONG_VALUES.filter(([label]) => !accepted(name, field, label)).map(([label, value]) => ({
        name,
        field,
        label,
        value,
      })),
    ),
  );

  test.each(cases)("$name with $field = $label", async ({ name, field, value }) => {
    const request = { ...VALID[name]!(), [field]: value };
    expectClientError(await outcome(() => method(name)(request)));
  });

  test.each([
    ["encrypt", "encryptionContext"],
    ["decrypt", "encryptionContext"],
    ["reEncrypt", "sourceEncryptionContext"],
    ["reEncrypt", "destinationEncryptionContext"],
    ["generateDataKey", "encryptionContext"],
  ])("%s with a %s holding a non-string value", async (name, field) => {
    for (const value of [1, null, undefined, {}, [], new Uint8Array(1)]) {
      const request = { ...VALID[name]!(), [field]: { a: value } };
      expectClientError(await outcome(() => method(name)(request)));
    }
  });

  test.each([
    ["tagResource", { tags: [5] }],
    ["tagResource", { tags: [{ tagKey: 5, tagValue: "x" }] }],
    ["tagResource", { tags: "a=b" }],
    ["createKey", { tags: [{}] }],
    ["createKey", { tags: {} }],
    ["untagResource", { tagKeys: [null] }],
  ])("%s with malformed tags %o", async (name, patch) => {
    const request = { ...VALID[name]!(), ...patch };
    expectClientError(await outcome(() => method(name)(request)));
  });

  test.each(Object.keys(VALID))(
    "the valid %s request used above succeeds (so each rejection is due to the junk)",
    async (name) => {
      if (name === "cancelKeyDeletion") await kms.scheduleKeyDeletion({ keyId });
      expect(await outcome(() => method(name)(VALID[name]!()))).toBe("resolved");
    },
  );
});
