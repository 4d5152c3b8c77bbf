/**
 * Every public operation of Kms leaves exactly one audit event, refused and failed calls too:
 * a call by a principal the key policy does not allow, and a call whose request is not even an
 * object, each add one event naming the operation, the caller and the error. A method that
 * answered without going through the audited pipeline would add no event and fail here, and a
 * new method fails the first test until it is listed below with a request.
 */
import { generateKeyPairSync } from "node:crypto";
import {
  AccessDeniedError,
  type AuditEvent,
  type CallOptions,
  createKms,
  isKmsError,
  Kms,
  MemoryAuditSink,
  verifyAuditLog,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeAll, describe, expect, test } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
/** Another account: the default key policy grants it nothing. */
const MALLORY = "arn:aws:iam::999999999999:user/mallory";

/**
 * Not operations a caller makes: close ends the trail, toJSON is a rendering, runMaintenance
 * takes no request and no caller (its one event is checked below).
 */
const NOT_OPERATIONS = ["close", "toJSON", "runMaintenance"];

/** What each request needs: keys of every usage, a ciphertext, a grant. */
interface Fixture {
  readonly symmetric: string;
  readonly hmac: string;
  readonly signing: string;
  readonly agreement: string;
  readonly ciphertextBlob: Uint8Array;
  readonly grantId: string;
  readonly grantToken: string;
  readonly peerPublicKey: Uint8Array;
}

/**
 * A valid request of the owner for every public method, so that the refused call below is
 * refused for its principal and for nothing else. Listed by hand: a method added to Kms must be
 * added here (the first test compares this list with Kms.prototype).
 */
const REQUESTS = {
  createKey: () => ({ description: "d" }),
  describeKey: (f: Fixture) => ({ keyId: f.symmetric }),
  listKeys: () => ({ limit: 10 }),
  updateKeyDescription: (f: Fixture) => ({ keyId: f.symmetric, description: "d" }),
  enableKey: (f: Fixture) => ({ keyId: f.symmetric }),
  disableKey: (f: Fixture) => ({ keyId: f.symmetric }),
  scheduleKeyDeletion: (f: Fixture) => ({ keyId: f.symmetric, pendingWindowInDays: 7 }),
  cancelKeyDeletion: (f: Fixture) => ({ keyId: f.symmetric }),
  createAlias: (f: Fixture) => ({ aliasName: "alias/new-one", targetKeyId: f.symmetric }),
  updateAlias: (f: Fixture) => ({ aliasName: "alias/audited", targetKeyId: f.symmetric }),
  deleteAlias: () => ({ aliasName: "alias/audited" }),
  listAliases: (f: Fixture) => ({ keyId: f.symmetric }),
  enableKeyRotation: (f: Fixture) => ({ keyId: f.symmetric, rotationPeriodInDays: 100 }),
  disableKeyRotation: (f: Fixture) => ({ keyId: f.symmetric }),
  getKeyRotationStatus: (f: Fixture) => ({ keyId: f.symmetric }),
  rotateKeyOnDemand: (f: Fixture) => ({ keyId: f.symmetric }),
  listKeyRotations: (f: Fixture) => ({ keyId: f.symmetric }),
  encrypt: (f: Fixture) => ({ keyId: f.symmetric, plaintext: new Uint8Array([1]) }),
  decrypt: (f: Fixture) => ({ ciphertextBlob: f.ciphertextBlob }),
  reEncrypt: (f: Fixture) => ({ ciphertextBlob: f.ciphertextBlob, destinationKeyId: f.symmetric }),
  generateDataKey: (f: Fixture) => ({ keyId: f.symmetric, keySpec: "AES_256" }),
  generateDataKeyWithoutPlaintext: (f: Fixture) => ({ keyId: f.symmetric, keySpec: "AES_256" }),
  generateDataKeyPair: (f: Fixture) => ({ keyId: f.symmetric, keyPairSpec: "ECC_NIST_P256" }),
  generateDataKeyPairWithoutPlaintext: (f: Fixture) => ({
    keyId: f.symmetric,
    keyPairSpec: "ECC_NIST_P256",
  }),
  generateRandom: () => ({ numberOfBytes: 16 }),
  sign: (f: Fixture) => ({
    keyId: f.signing,
    message: new Uint8Array([1]),
    signingAlgorithm: "ECDSA_SHA_256",
  }),
  verify: (f: Fixture) => ({
    keyId: f.signing,
    message: new Uint8Array([1]),
    signature: new Uint8Array(64),
    signingAlgorithm: "ECDSA_SHA_256",
  }),
  getPublicKey: (f: Fixture) => ({ keyId: f.signing }),
  generateMac: (f: Fixture) => ({
    keyId: f.hmac,
    message: new Uint8Array([1]),
    macAlgorithm: "HMAC_SHA_256",
  }),
  verifyMac: (f: Fixture) => ({
    keyId: f.hmac,
    message: new Uint8Array([1]),
    mac: new Uint8Array(32),
    macAlgorithm: "HMAC_SHA_256",
  }),
  deriveSharedSecret: (f: Fixture) => ({
    keyId: f.agreement,
    keyAgreementAlgorithm: "ECDH",
    publicKey: f.peerPublicKey,
  }),
  tagResource: (f: Fixture) => ({ keyId: f.symmetric, tags: [{ tagKey: "a", tagValue: "b" }] }),
  untagResource: (f: Fixture) => ({ keyId: f.symmetric, tagKeys: ["a"] }),
  listResourceTags: (f: Fixture) => ({ keyId: f.symmetric }),
  putKeyPolicy: (f: Fixture) => ({
    keyId: f.symmetric,
    policyName: "default",
    policy: JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" }],
    }),
  }),
  getKeyPolicy: (f: Fixture) => ({ keyId: f.symmetric, policyName: "default" }),
  listKeyPolicies: (f: Fixture) => ({ keyId: f.symmetric }),
  createGrant: (f: Fixture) => ({
    keyId: f.symmetric,
    granteePrincipal: "arn:aws:iam::000000000000:user/bob",
    operations: ["Encrypt"],
  }),
  listGrants: (f: Fixture) => ({ keyId: f.symmetric }),
  listRetirableGrants: () => ({ retiringPrincipal: ROOT }),
  retireGrant: (f: Fixture) => ({ grantToken: f.grantToken }),
  revokeGrant: (f: Fixture) => ({ keyId: f.symmetric, grantId: f.grantId }),
  explain: (f: Fixture) => ({ operation: "encrypt", request: { keyId: f.symmetric } }),
  getKeyLastUsage: (f: Fixture) => ({ keyId: f.symmetric }),
} satisfies Record<string, (f: Fixture) => object>;

type Operation = keyof typeof REQUESTS;
const OPERATIONS = Object.keys(REQUESTS) as Operation[];

let sink: MemoryAuditSink;
let kms: Kms;
let fixture: Fixture;

beforeAll(async () => {
  // The clock never moves: no deletion window ends and no rotation falls due, so no call below
  // records a DeleteKey or RotateKey service event of its own before the call's event.
  sink = new MemoryAuditSink();
  kms = await createKms({ clock: new ManualClock(), audit: sink });
  const key = async (request: Parameters<Kms["createKey"]>[0]) =>
    (await kms.createKey(request)).keyMetadata.keyId;
  const symmetric = await key({});
  await kms.createAlias({ aliasName: "alias/audited", targetKeyId: symmetric });
  const grant = await kms.createGrant({
    keyId: symmetric,
    granteePrincipal: "arn:aws:iam::000000000000:user/bob",
    retiringPrincipal: ROOT,
    operations: ["Encrypt"],
  });
  fixture = {
    symmetric,
    hmac: await key({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }),
    signing: await key({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }),
    agreement: await key({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }),
    ciphertextBlob: (await kms.encrypt({ keyId: symmetric, plaintext: new Uint8Array([1]) }))
      .ciphertextBlob,
    grantId: grant.grantId,
    grantToken: grant.grantToken,
    peerPublicKey: new Uint8Array(
      generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
    ),
  };
});

const eventNameOf = (operation: string): string =>
  operation.charAt(0).toUpperCase() + operation.slice(1);

function invoke(operation: Operation, request: unknown, options?: CallOptions): Promise<unknown> {
  const method = (kms as unknown as Record<Operation, (r: unknown, o?: CallOptions) => unknown>)[
    operation
  ];
  return Promise.resolve().then(() => method.call(kms, request, options));
}

/**
 * Runs `call`, which must fail with a KmsError, and returns the one event it added. Throws when
 * the call succeeded or added no event or several: the counting is what catches an operation
 * that skips the trail.
 */
async function failedCallEvent(
  label: string,
  call: () => Promise<unknown>,
): Promise<{ event: AuditEvent; code: string }> {
  const before = sink.events.length;
  const error = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isKmsError(error)) throw new Error(`${label}: expected a KmsError, got ${String(error)}`);
  const added = sink.events.slice(before);
  if (added.length !== 1) {
    throw new Error(
      `${label}: expected exactly one audit event, got ${added.length}: ${added
        .map((e) => e.eventName)
        .join(", ")}`,
    );
  }
  return { event: added[0]!, code: error.code };
}

describe("every public operation is audited when refused or failed", () => {
  test("the list of operations is exactly Kms's public methods", () => {
    const onPrototype = Object.getOwnPropertyNames(Kms.prototype).filter(
      (name) =>
        name !== "constructor" &&
        typeof Object.getOwnPropertyDescriptor(Kms.prototype, name)?.value === "function" &&
        !NOT_OPERATIONS.includes(name),
    );
    expect([...OPERATIONS].sort()).toEqual(onPrototype.sort());
    expect(OPERATIONS).toHaveLength(44);
  });

  test.each(OPERATIONS)("%s by a principal the policy denies", async (operation) => {
    const request = REQUESTS[operation](fixture);
    const { event, code } = await failedCallEvent(operation, () =>
      invoke(operation, request, { principal: MALLORY }),
    );
    expect(event.eventName).toBe(eventNameOf(operation));
    expect(event.eventType).toBe("AwsApiCall");
    expect(event.userIdentity.arn).toBe(MALLORY);
    expect(event.errorCode).toBe(code);
    expect(code).toBe("AccessDeniedException");
  });

  test.each(OPERATIONS)("%s with 42 as its request", async (operation) => {
    const { event, code } = await failedCallEvent(operation, () => invoke(operation, 42));
    expect(event.eventName).toBe(eventNameOf(operation));
    expect(event.eventType).toBe("AwsApiCall");
    expect(event.userIdentity.arn).toBe(ROOT);
    expect(event.errorCode).toBe(code);
    expect(code).toBe("ValidationException");
  });

  test("runMaintenance, with nothing due, records its one event and no other", async () => {
    const before = sink.events.length;
    await kms.runMaintenance();
    expect(sink.events.slice(before).map((e) => e.eventName)).toEqual(["RunMaintenance"]);
  });

  test("the trail of all those calls verifies, one event per call and none besides", async () => {
    const events = sink.events;
    expect(verifyAuditLog(events)).toMatchObject({ ok: true, count: events.length });
    expect(await kms.audit.verify()).toMatchObject({ ok: true });
    expect(events.filter((e) => e.eventType === "AwsServiceEvent")).toEqual([]);
    for (const operation of OPERATIONS) {
      const name = eventNameOf(operation);
      // Setup made no refused call: each operation's are the two above.
      const refused = events.filter((e) => e.eventName === name && e.errorCode !== undefined);
      expect(refused, name).toHaveLength(2);
    }
  });

  // Runs last: its calls would otherwise count in the tally above.
  test("self-check: the counting refuses a refusal that left no event, or two", async () => {
    // What an operation that threw its refusal outside the audited pipeline would look like.
    const unaudited = () => Promise.reject(new AccessDeniedError("not allowed"));
    await expect(failedCallEvent("unaudited", unaudited)).rejects.toThrow(
      /unaudited: expected exactly one audit event, got 0/,
    );
    const twice = async () => {
      await invoke("describeKey", 42).catch(() => undefined);
      await invoke("describeKey", 42);
    };
    await expect(failedCallEvent("twice", twice)).rejects.toThrow(
      /twice: expected exactly one audit event, got 2/,
    );
    await expect(failedCallEvent("resolved", () => invoke("listKeys", {}))).rejects.toThrow(
      /expected a KmsError/,
    );
  });
});
