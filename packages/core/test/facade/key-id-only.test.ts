/**
 * Which operations take an alias, as in AWS KMS's API reference: its KeyId text says "key ID,
 * key ARN, alias name, or alias ARN" for the cryptographic operations, DescribeKey and
 * GetPublicKey, and "key ID or key ARN" for every operation that reads or changes a key's
 * settings (state, description, rotation, policy, tags, grants, last usage). Those answer an
 * alias with NotFoundException ("Invalid keyId"): an alias re-pointed between a caller's look-up
 * and its call would make the call act on another key — disable it, widen its policy, grant it
 * away, destroy it.
 */
import {
  AccessDeniedError,
  createKms,
  type Kms,
  MemoryKeyStore,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test, vi } from "vitest";
import { KEY_ARGUMENTS } from "../../src/operations/key-arguments.ts";

const ARN_PREFIX = "arn:aws:kms:local:000000000000";
const BOB = "arn:aws:iam::000000000000:user/bob";

let kms: Kms;
let keyId: string;
let grantId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey({ description: "original" })).keyMetadata.keyId;
  await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
  await kms.tagResource({ keyId, tags: [{ tagKey: "team", tagValue: "ops" }] });
  ({ grantId } = await kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt"] }));
});

/** The default policy with one more statement: still lets the account root change it. */
async function widenedPolicy(): Promise<string> {
  const document = JSON.parse((await kms.getKeyPolicy({ keyId })).policy) as {
    Statement: object[];
  };
  document.Statement.push({
    Sid: "bob",
    Effect: "Allow",
    Principal: { AWS: BOB },
    Action: "kms:*",
    Resource: "*",
  });
  return JSON.stringify(document);
}

/**
 * Every key-id-only operation, called on `ref`. `prepare` puts the key in the state the call
 * needs (cancelKeyDeletion needs a pending deletion).
 */
const KEY_ID_ONLY: Record<
  string,
  { readonly prepare?: () => Promise<unknown>; readonly call: (ref: string) => Promise<unknown> }
> = {
  updateKeyDescription: {
    call: (ref) => kms.updateKeyDescription({ keyId: ref, description: "x" }),
  },
  enableKey: {
    prepare: () => kms.disableKey({ keyId }),
    call: (ref) => kms.enableKey({ keyId: ref }),
  },
  disableKey: { call: (ref) => kms.disableKey({ keyId: ref }) },
  scheduleKeyDeletion: {
    call: (ref) => kms.scheduleKeyDeletion({ keyId: ref, pendingWindowInDays: 7 }),
  },
  cancelKeyDeletion: {
    prepare: () => kms.scheduleKeyDeletion({ keyId }),
    call: (ref) => kms.cancelKeyDeletion({ keyId: ref }),
  },
  enableKeyRotation: {
    call: (ref) => kms.enableKeyRotation({ keyId: ref, rotationPeriodInDays: 90 }),
  },
  disableKeyRotation: {
    prepare: () => kms.enableKeyRotation({ keyId }),
    call: (ref) => kms.disableKeyRotation({ keyId: ref }),
  },
  getKeyRotationStatus: { call: (ref) => kms.getKeyRotationStatus({ keyId: ref }) },
  rotateKeyOnDemand: { call: (ref) => kms.rotateKeyOnDemand({ keyId: ref }) },
  listKeyRotations: { call: (ref) => kms.listKeyRotations({ keyId: ref }) },
  putKeyPolicy: {
    call: async (ref) => kms.putKeyPolicy({ keyId: ref, policy: await widenedPolicy() }),
  },
  getKeyPolicy: { call: (ref) => kms.getKeyPolicy({ keyId: ref }) },
  listKeyPolicies: { call: (ref) => kms.listKeyPolicies({ keyId: ref }) },
  tagResource: {
    call: (ref) => kms.tagResource({ keyId: ref, tags: [{ tagKey: "t", tagValue: "v" }] }),
  },
  untagResource: { call: (ref) => kms.untagResource({ keyId: ref, tagKeys: ["team"] }) },
  listResourceTags: { call: (ref) => kms.listResourceTags({ keyId: ref }) },
  createGrant: {
    call: (ref) => kms.createGrant({ keyId: ref, granteePrincipal: BOB, operations: ["Decrypt"] }),
  },
  listGrants: { call: (ref) => kms.listGrants({ keyId: ref }) },
  revokeGrant: { call: (ref) => kms.revokeGrant({ keyId: ref, grantId }) },
  retireGrant: { call: (ref) => kms.retireGrant({ keyId: ref, grantId }) },
  getKeyLastUsage: { call: (ref) => kms.getKeyLastUsage({ keyId: ref }) },
};

/** Everything about the key that any of the operations above could change. */
async function keySnapshot(): Promise<unknown> {
  const { keyMetadata } = await kms.describeKey({ keyId });
  return {
    description: keyMetadata.description,
    keyState: keyMetadata.keyState,
    currentKeyMaterialId: keyMetadata.currentKeyMaterialId,
    rotation: await kms.getKeyRotationStatus({ keyId }),
    policy: (await kms.getKeyPolicy({ keyId })).policy,
    tags: (await kms.listResourceTags({ keyId })).tags,
    grants: (await kms.listGrants({ keyId })).grants.map((g) => g.grantId),
  };
}

const ALIASES = {
  "alias name": "alias/app",
  "alias ARN": `${ARN_PREFIX}:alias/app`,
  "alias name of no alias": "alias/none",
} as const;

describe.each(Object.entries(KEY_ID_ONLY))("%s", (operation, { prepare, call }) => {
  test.each(Object.entries(ALIASES))(
    "refuses the %s with NotFoundError, before touching the key",
    async (_form, alias) => {
      await prepare?.();
      const unchanged = await keySnapshot();
      const refused = call(alias);
      await expect(refused).rejects.toBeInstanceOf(NotFoundError);
      await expect(refused).rejects.toThrow(
        `Invalid keyId ${alias}: ${operation} takes a key id or key ARN, not an alias`,
      );
      expect(await keySnapshot()).toEqual(unchanged);
    },
  );

  test.each([
    ["key id", () => keyId],
    ["key ARN", () => `${ARN_PREFIX}:key/${keyId}`],
  ])("takes the %s", async (_form, ref) => {
    await prepare?.();
    await call(ref());
  });
});

test("an alias re-pointed after the caller looked it up cannot turn a call on another key", async () => {
  const other = (await kms.createKey()).keyMetadata.keyId;
  const policy = (await kms.getKeyPolicy({ keyId: other })).policy;
  await kms.updateAlias({ aliasName: "alias/app", targetKeyId: other });
  await expect(
    kms.putKeyPolicy({ keyId: "alias/app", policy: await widenedPolicy() }),
  ).rejects.toBeInstanceOf(NotFoundError);
  await expect(
    kms.createGrant({ keyId: "alias/app", granteePrincipal: BOB, operations: ["Decrypt"] }),
  ).rejects.toBeInstanceOf(NotFoundError);
  await expect(kms.scheduleKeyDeletion({ keyId: "alias/app" })).rejects.toBeInstanceOf(
    NotFoundError,
  );
  expect((await kms.getKeyPolicy({ keyId: other })).policy).toBe(policy);
  expect((await kms.listGrants({ keyId: other })).grants).toEqual([]);
  expect((await kms.describeKey({ keyId: other })).keyMetadata.keyState).toBe("Enabled");
});

test("the request's other arguments are checked before the key reference, as before", async () => {
  await expect(
    kms.scheduleKeyDeletion({ keyId: "alias/app", pendingWindowInDays: 3 }),
  ).rejects.toBeInstanceOf(ValidationError);
  await expect(
    kms.enableKeyRotation({ keyId: "alias/app", rotationPeriodInDays: 1 }),
  ).rejects.toBeInstanceOf(ValidationError);
  await expect(
    kms.updateKeyDescription({ keyId: "alias/app", description: 7 as unknown as string }),
  ).rejects.toBeInstanceOf(ValidationError);
});

test("an alias as the target of createAlias, updateAlias or the keyId of listAliases is a ValidationError, as AWS answers CreateAlias's", async () => {
  for (const alias of Object.values(ALIASES)) {
    await expect(kms.createAlias({ aliasName: "alias/new", targetKeyId: alias })).rejects.toThrow(
      /"targetKeyId" must be a key id or key ARN, not an alias/,
    );
    await expect(kms.updateAlias({ aliasName: "alias/app", targetKeyId: alias })).rejects.toThrow(
      /"targetKeyId" must be a key id or key ARN, not an alias/,
    );
    await expect(kms.listAliases({ keyId: alias })).rejects.toThrow(
      /"keyId" must be a key id or key ARN, not an alias/,
    );
    await expect(kms.listAliases({ keyId: alias })).rejects.toBeInstanceOf(ValidationError);
  }
  await kms.createAlias({ aliasName: "alias/new", targetKeyId: `${ARN_PREFIX}:key/${keyId}` });
  expect((await kms.listAliases({ keyId })).aliases.map((a) => a.aliasName)).toEqual([
    "alias/app",
    "alias/new",
  ]);
});

describe("the operations AWS lets name a key by alias still take one", () => {
  const text = (s: string): Uint8Array => new TextEncoder().encode(s);
  const message = text("m");

  /** A new key of that spec and usage under `alias/<name>`; the alias named as `form` asks. */
  async function aliased(
    name: string,
    form: "alias name" | "alias ARN",
    keySpec: "ECC_NIST_P256" | "HMAC_256",
    keyUsage: "SIGN_VERIFY" | "GENERATE_VERIFY_MAC" | "KEY_AGREEMENT",
  ): Promise<{ id: string; alias: string }> {
    const id = (await kms.createKey({ keySpec, keyUsage })).keyMetadata.keyId;
    await kms.createAlias({ aliasName: `alias/${name}`, targetKeyId: id });
    return { id, alias: form === "alias name" ? `alias/${name}` : `${ARN_PREFIX}:alias/${name}` };
  }

  test.each(["alias name", "alias ARN"] as const)("%s", async (form) => {
    const alias = ALIASES[form];
    expect((await kms.describeKey({ keyId: alias })).keyMetadata.keyId).toBe(keyId);
    const { ciphertextBlob } = await kms.encrypt({ keyId: alias, plaintext: text("p") });
    expect((await kms.decrypt({ ciphertextBlob, keyId: alias })).keyId).toContain(keyId);
    const moved = await kms.reEncrypt({
      ciphertextBlob,
      sourceKeyId: alias,
      destinationKeyId: alias,
    });
    expect([moved.sourceKeyId, moved.keyId]).toEqual([
      `${ARN_PREFIX}:key/${keyId}`,
      `${ARN_PREFIX}:key/${keyId}`,
    ]);
    expect((await kms.generateDataKey({ keyId: alias, numberOfBytes: 16 })).keyId).toContain(keyId);
    expect(
      (await kms.generateDataKeyWithoutPlaintext({ keyId: alias, numberOfBytes: 16 })).keyId,
    ).toContain(keyId);
    expect(
      (await kms.generateDataKeyPair({ keyId: alias, keyPairSpec: "ECC_NIST_P256" })).keyId,
    ).toContain(keyId);
    const pair = await kms.generateDataKeyPairWithoutPlaintext({
      keyId: alias,
      keyPairSpec: "ECC_NIST_P256",
    });
    expect(pair.keyId).toContain(keyId);

    const signing = await aliased("sign", form, "ECC_NIST_P256", "SIGN_VERIFY");
    const algorithm = { signingAlgorithm: "ECDSA_SHA_256" } as const;
    const { signature } = await kms.sign({ keyId: signing.alias, message, ...algorithm });
    const verified = await kms.verify({ keyId: signing.alias, message, signature, ...algorithm });
    expect(verified.keyId).toContain(signing.id);
    expect((await kms.getPublicKey({ keyId: signing.alias })).keyId).toContain(signing.id);

    const hmac = await aliased("mac", form, "HMAC_256", "GENERATE_VERIFY_MAC");
    const macAlgorithm = "HMAC_SHA_256" as const;
    const { mac } = await kms.generateMac({ keyId: hmac.alias, message, macAlgorithm });
    const checked = await kms.verifyMac({ keyId: hmac.alias, message, mac, macAlgorithm });
    expect(checked.keyId).toContain(hmac.id);

    const agreeing = await aliased("agree", form, "ECC_NIST_P256", "KEY_AGREEMENT");
    const peer = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "KEY_AGREEMENT" }))
      .keyMetadata.keyId;
    const { publicKey } = await kms.getPublicKey({ keyId: peer });
    const shared = await kms.deriveSharedSecret({
      keyId: agreeing.alias,
      keyAgreementAlgorithm: "ECDH",
      publicKey,
    });
    expect(shared.keyId).toContain(agreeing.id);
  });
});

/** How a call settled: the class and message of its rejection, or "resolved". */
async function outcome(settling: Promise<unknown>): Promise<unknown> {
  try {
    await settling;
    return "resolved";
  } catch (error) {
    return error instanceof Error ? [error.constructor.name, error.message] : error;
  }
}

/** Calls operation `name` of `kms` with `request`, as explain is told to. */
function callByName(name: string, request: object, options?: object): Promise<unknown> {
  const operation = (kms as unknown as Record<string, (r: object, o?: object) => Promise<unknown>>)[
    name
  ];
  if (operation === undefined) throw new Error(`no operation ${name}`);
  return operation.call(kms, request, options);
}

describe("explain names a key as the operation it explains does", () => {
  test("the operations refused here are those the shared table says take a key id or key ARN only", () => {
    const table = Object.entries(KEY_ARGUMENTS);
    const keyOnly = table.filter(([, args]) => Object.values(args).includes("keyOnly"));
    expect(keyOnly.map(([operation]) => operation).sort()).toEqual(Object.keys(KEY_ID_ONLY).sort());
    const aliasTargets = table.flatMap(([operation, args]) =>
      Object.entries(args)
        .filter(([, naming]) => naming === "aliasTarget")
        .map(([argument]) => `${operation}.${argument}`),
    );
    expect(aliasTargets.sort()).toEqual([
      "createAlias.targetKeyId",
      "listAliases.keyId",
      "updateAlias.targetKeyId",
    ]);
  });

  describe.each(Object.keys(KEY_ID_ONLY))("%s", (operation) => {
    test.each(Object.entries(ALIASES))(
      "refuses the %s as the call does, and explains the key id",
      async (_form, alias) => {
        const { prepare, call } = KEY_ID_ONLY[operation]!;
        await prepare?.();
        const called = await outcome(call(alias));
        expect(called).toEqual([
          "NotFoundError",
          `Invalid keyId ${alias}: ${operation} takes a key id or key ARN, not an alias`,
        ]);
        expect(
          await outcome(kms.explain({ operation, request: { keyId: alias, grantId } })),
        ).toEqual(called);
        const explained = await kms.explain({ operation, request: { keyId, grantId } });
        expect(explained.decisions.map((d) => d.resource)).toEqual([`${ARN_PREFIX}:key/${keyId}`]);
      },
    );
  });

  test.each(Object.entries(ALIASES))(
    "refuses the %s as an alias target or listAliases' keyId as the calls do",
    async (_form, alias) => {
      const requests: [string, object][] = [
        ["createAlias", { aliasName: "alias/new", targetKeyId: alias }],
        ["updateAlias", { aliasName: "alias/app", targetKeyId: alias }],
        ["updateAlias", { aliasName: "alias/missing", targetKeyId: alias }],
        ["listAliases", { keyId: alias }],
      ];
      for (const [operation, request] of requests) {
        const called = await outcome(callByName(operation, request));
        expect(called).toEqual([
          "ValidationError",
          expect.stringMatching(/must be a key id or key ARN, not an alias/),
        ]);
        expect(await outcome(kms.explain({ operation, request }))).toEqual(called);
      }
    },
  );

  test("a retireGrant by grant token reads no keyId, in the call or in explain", async () => {
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: BOB,
      retiringPrincipal: BOB,
      operations: ["Decrypt"],
    });
    const request = { grantToken, keyId: "alias/app" };
    const explained = await kms.explain({
      operation: "retireGrant",
      request,
      as: { principal: BOB },
    });
    expect(explained.allowed).toBe(true);
    await kms.retireGrant(request, { principal: BOB });
  });

  test("the operations that take an alias are explained on the key it points to", async () => {
    for (const operation of ["describeKey", "encrypt", "generateDataKey"]) {
      const explained = await kms.explain({ operation, request: { keyId: "alias/app" } });
      expect(explained.decisions.map((d) => d.resource)).toEqual([`${ARN_PREFIX}:key/${keyId}`]);
    }
    await expect(
      kms.explain({ operation: "encrypt", request: { keyId: "alias/none" } }),
    ).rejects.toThrow("alias alias/none does not exist");
  });
});

describe("explain of updateAlias and deleteAlias covers the key the alias points to now", () => {
  async function denyBobOnAliasKey(): Promise<void> {
    const document = JSON.parse((await kms.getKeyPolicy({ keyId })).policy) as {
      Statement: object[];
    };
    document.Statement.push({
      Sid: "no-bob",
      Effect: "Deny",
      Principal: { AWS: BOB },
      Action: ["kms:UpdateAlias", "kms:DeleteAlias"],
      Resource: "*",
    });
    await kms.putKeyPolicy({ keyId, policy: JSON.stringify(document) });
  }

  test("a caller denied on the current key is explained as denied, as the calls deny it", async () => {
    await denyBobOnAliasKey();
    const other = (await kms.createKey()).keyMetadata.keyId;
    const requests: [string, object][] = [
      ["updateAlias", { aliasName: "alias/app", targetKeyId: other }],
      ["deleteAlias", { aliasName: "alias/app" }],
    ];
    for (const [operation, request] of requests) {
      expect(await outcome(callByName(operation, request, { principal: BOB }))).toEqual([
        "AccessDeniedError",
        expect.any(String),
      ]);
      const explained = await kms.explain({ operation, request, as: { principal: BOB } });
      expect(explained.allowed).toBe(false);
      const denied = explained.decisions.find((d) => !d.allowed);
      expect(denied).toMatchObject({
        resource: `${ARN_PREFIX}:key/${keyId}`,
        reason: "explicit-deny",
        sid: "no-bob",
      });
      expect((await kms.explain({ operation, request })).allowed).toBe(true);
    }
    const moved = await kms.explain({
      operation: "updateAlias",
      request: { aliasName: "alias/app", targetKeyId: other },
    });
    expect(moved.decisions.map((d) => d.resource).sort()).toEqual(
      [`${ARN_PREFIX}:key/${keyId}`, `${ARN_PREFIX}:key/${other}`].sort(),
    );
  });

  test("an alias that does not exist or a malformed name is refused as the calls refuse it", async () => {
    const requests: [string, object][] = [
      ["updateAlias", { aliasName: "alias/missing", targetKeyId: keyId }],
      ["deleteAlias", { aliasName: "alias/missing" }],
      ["deleteAlias", { aliasName: "app" }],
      ["deleteAlias", { aliasName: "alias/aws/s3" }],
    ];
    for (const [operation, request] of requests) {
      const called = await outcome(callByName(operation, request));
      expect(called).not.toBe("resolved");
      expect(await outcome(kms.explain({ operation, request }))).toEqual(called);
    }
  });
});

describe("createAlias and updateAlias refuse an alias target before reading the store", () => {
  test("updateAlias of an alias that does not exist: ValidationError, not NotFoundError", async () => {
    for (const target of Object.values(ALIASES)) {
      const refused = kms.updateAlias({ aliasName: "alias/missing", targetKeyId: target });
      await expect(refused).rejects.toBeInstanceOf(ValidationError);
      await expect(refused).rejects.toThrow(/"targetKeyId" must be a key id or key ARN/);
    }
    // Any malformed target, not only an alias: its form is checked before the alias is looked up.
    await expect(
      kms.updateAlias({ aliasName: "alias/missing", targetKeyId: 7 as unknown as string }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("updateAlias of an alias whose key the caller may not use: ValidationError, not AccessDeniedError", async () => {
    const document = JSON.parse((await kms.getKeyPolicy({ keyId })).policy) as {
      Statement: object[];
    };
    document.Statement.push({
      Sid: "no-bob",
      Effect: "Deny",
      Principal: { AWS: BOB },
      Action: "kms:UpdateAlias",
      Resource: "*",
    });
    await kms.putKeyPolicy({ keyId, policy: JSON.stringify(document) });
    const other = (await kms.createKey()).keyMetadata.keyId;
    await expect(
      kms.updateAlias({ aliasName: "alias/app", targetKeyId: other }, { principal: BOB }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(
      kms.updateAlias({ aliasName: "alias/app", targetKeyId: "alias/app" }, { principal: BOB }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("neither reads an alias or a key, so an expired key is not destroyed by a refused call", async () => {
    const clock = new ManualClock();
    const store = new MemoryKeyStore();
    const local = await createKms({ clock, store });
    const expiring = (await local.createKey()).keyMetadata.keyId;
    await local.createAlias({ aliasName: "alias/expiring", targetKeyId: expiring });
    await local.scheduleKeyDeletion({ keyId: expiring, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const getAlias = vi.spyOn(store, "getAlias");
    const getKey = vi.spyOn(store, "getKey");
    for (const aliasName of ["alias/expiring", "alias/missing"]) {
      await expect(
        local.createAlias({ aliasName, targetKeyId: "alias/expiring" }),
      ).rejects.toBeInstanceOf(ValidationError);
      await expect(
        local.updateAlias({ aliasName, targetKeyId: "alias/expiring" }),
      ).rejects.toBeInstanceOf(ValidationError);
    }
    expect(getAlias).not.toHaveBeenCalled();
    expect(getKey).not.toHaveBeenCalled();
    getKey.mockRestore();
    expect((await store.getKey(expiring))?.keyState).toBe("PendingDeletion");
  });
});
