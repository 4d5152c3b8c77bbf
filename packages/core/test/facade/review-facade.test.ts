import {
  AccessDeniedError,
  createKms,
  DAY_MS,
  DryRunOperationError,
  InvalidMarkerError,
  InvalidStateError,
  type Kms,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

/**
 * Findings of a review of the facade against AWS KMS: each test fails without its fix.
 */

const ROOT = "arn:aws:iam::000000000000:root";
const EVE = "arn:aws:iam::111122223333:user/eve";
const plaintext = new TextEncoder().encode("secret");

const policy = (...statements: Record<string, unknown>[]) =>
  JSON.stringify({ Version: "2012-10-17", Statement: statements });
const ADMIN = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: ROOT },
  Action: "kms:*",
  Resource: "*",
};
const allowEve = (...actions: string[]) => ({
  Sid: "Eve",
  Effect: "Allow",
  Principal: { AWS: EVE },
  Action: actions,
  Resource: "*",
});

let clock: ManualClock;
let kms: Kms;
let keyId: string;

beforeEach(async () => {
  clock = new ManualClock();
  kms = await createKms({ clock });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("dryRun on an operation that has no dry run", () => {
  test.each([
    ["scheduleKeyDeletion", () => ({ keyId, pendingWindowInDays: 7 })],
    ["disableKey", () => ({ keyId })],
    ["updateKeyDescription", () => ({ keyId, description: "changed" })],
    ["tagResource", () => ({ keyId, tags: [{ tagKey: "a", tagValue: "b" }] })],
    ["enableKeyRotation", () => ({ keyId })],
  ])("%s is refused before it changes anything, and audited", async (operation, request) => {
    const before = (await kms.describeKey({ keyId })).keyMetadata;
    const call = (kms as unknown as Record<string, (r: unknown) => Promise<unknown>>)[operation]!;
    await expect(call.call(kms, { ...request(), dryRun: true })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect((await kms.describeKey({ keyId })).keyMetadata).toEqual(before);
    expect((await kms.listResourceTags({ keyId })).tags).toEqual([]);
    expect((await kms.getKeyRotationStatus({ keyId })).keyRotationEnabled).toBe(false);
    const event = (await kms.audit.events()).findLast(
      (e) => e.eventName.toLowerCase() === operation.toLowerCase(),
    );
    expect(event?.errorCode).toBe("ValidationException");
  });

  test("createKey with dryRun creates no key", async () => {
    await expect(kms.createKey({ dryRun: true } as never)).rejects.toBeInstanceOf(ValidationError);
    expect((await kms.listKeys()).keys.map((k) => k.keyId)).toEqual([keyId]);
  });

  test("dryRun false is a normal call, and the operations AWS gives a dry run keep it", async () => {
    await kms.updateKeyDescription({ keyId, description: "d", dryRun: false } as never);
    expect((await kms.describeKey({ keyId })).keyMetadata.description).toBe("d");
    await expect(kms.encrypt({ keyId, plaintext, dryRun: true })).rejects.toBeInstanceOf(
      DryRunOperationError,
    );
    const mac = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    await expect(
      kms.generateMac({
        keyId: mac,
        message: plaintext,
        macAlgorithm: "HMAC_SHA_256",
        dryRun: true,
      } as never),
    ).rejects.toBeInstanceOf(DryRunOperationError);
  });
});

describe("reEncrypt from an RSA key", () => {
  let rsa: string;
  let destination: string;
  let ciphertextBlob: Uint8Array;
  const ALGORITHM = "RSAES_OAEP_SHA_256" as const;
  const reEncrypt = (options?: { principal: string }) =>
    kms.reEncrypt(
      {
        ciphertextBlob,
        sourceKeyId: rsa,
        sourceEncryptionAlgorithm: ALGORITHM,
        destinationKeyId: destination,
      },
      options,
    );

  beforeEach(async () => {
    rsa = (await kms.createKey({ keySpec: "RSA_2048" })).keyMetadata.keyId;
    destination = keyId;
    ({ ciphertextBlob } = await kms.encrypt({
      keyId: rsa,
      plaintext,
      encryptionAlgorithm: ALGORITHM,
    }));
    // Eve may do anything with the destination key, her own.
    await kms.putKeyPolicy({ keyId: destination, policy: policy(ADMIN, allowEve("kms:*")) });
  });

  test("kms:ReEncryptTo on the RSA source does not let its ciphertexts out", async () => {
    await kms.putKeyPolicy({ keyId: rsa, policy: policy(ADMIN, allowEve("kms:ReEncryptTo")) });
    await expect(reEncrypt({ principal: EVE })).rejects.toBeInstanceOf(AccessDeniedError);
    const last = (await kms.audit.events()).at(-1)!;
    expect(last.errorCode).toBe("AccessDeniedException");
  });

  test("kms:ReEncryptFrom on the RSA source is what it needs", async () => {
    await kms.putKeyPolicy({ keyId: rsa, policy: policy(ADMIN, allowEve("kms:ReEncryptFrom")) });
    const { ciphertextBlob: moved, sourceKeyId } = await reEncrypt({ principal: EVE });
    expect(sourceKeyId).toContain(rsa);
    const opened = await kms.decrypt({ ciphertextBlob: moved }, { principal: EVE });
    expect(opened.plaintext).toEqual(plaintext);
  });

  test("a grant of ReEncryptFrom on the RSA source suffices, ReEncryptTo does not", async () => {
    await kms.putKeyPolicy({ keyId: rsa, policy: policy(ADMIN) });
    const to = await kms.createGrant({
      keyId: rsa,
      granteePrincipal: EVE,
      operations: ["ReEncryptTo"],
    });
    await expect(reEncrypt({ principal: EVE })).rejects.toBeInstanceOf(AccessDeniedError);
    await kms.revokeGrant({ keyId: rsa, grantId: to.grantId });
    await kms.createGrant({ keyId: rsa, granteePrincipal: EVE, operations: ["ReEncryptFrom"] });
    await expect(reEncrypt({ principal: EVE })).resolves.toBeDefined();
  });

  test("explain asks the RSA source for ReEncryptFrom and the destination for ReEncryptTo", async () => {
    await kms.putKeyPolicy({ keyId: rsa, policy: policy(ADMIN, allowEve("kms:ReEncryptFrom")) });
    const explained = await kms.explain({
      operation: "reEncrypt",
      request: {
        ciphertextBlob,
        sourceKeyId: rsa,
        sourceEncryptionAlgorithm: ALGORITHM,
        destinationKeyId: destination,
      },
      as: { principal: EVE },
    });
    const byAction = explained.decisions.map((d) => [
      d.action,
      d.resource.split("/")[1],
      d.allowed,
    ]);
    expect(byAction.sort()).toEqual([
      ["kms:ReEncryptFrom", rsa, true],
      ["kms:ReEncryptTo", destination, true],
    ]);
    expect(explained.allowed).toBe(true);
    // Re-encrypting an RSA key's ciphertext to that same key asks it for both.
    const toItself = await kms.explain({
      operation: "reEncrypt",
      request: {
        ciphertextBlob,
        sourceKeyId: rsa,
        sourceEncryptionAlgorithm: ALGORITHM,
        destinationKeyId: rsa,
        destinationEncryptionAlgorithm: ALGORITHM,
      },
      as: { principal: EVE },
    });
    expect(toItself.decisions.map((d) => [d.action, d.allowed])).toEqual([
      ["kms:ReEncryptFrom", true],
      ["kms:ReEncryptTo", false],
    ]);
  });

  test("a source pending deletion still re-encrypts (AWS key-state footnote 10)", async () => {
    await kms.scheduleKeyDeletion({ keyId: rsa, pendingWindowInDays: 7 });
    await expect(reEncrypt()).resolves.toBeDefined();
    await expect(
      kms.decrypt({ keyId: rsa, ciphertextBlob, encryptionAlgorithm: ALGORITHM }),
    ).rejects.toBeInstanceOf(InvalidStateError);
  });
});

describe("updateAlias between keys of one type and usage", () => {
  test.each([
    ["HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_512", "GENERATE_VERIFY_MAC", true],
    ["ECC_NIST_P256", "SIGN_VERIFY", "ECC_NIST_EDWARDS25519", "SIGN_VERIFY", true],
    ["ECC_NIST_P256", "SIGN_VERIFY", "ECC_NIST_P384", "SIGN_VERIFY", true],
    ["ECC_NIST_P256", "SIGN_VERIFY", "ECC_NIST_P256", "KEY_AGREEMENT", false],
    ["SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "RSA_2048", "ENCRYPT_DECRYPT", false],
    ["HMAC_256", "GENERATE_VERIFY_MAC", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", false],
  ] as const)("%s/%s → %s/%s allowed: %s", async (spec1, usage1, spec2, usage2, ok) => {
    const from = (await kms.createKey({ keySpec: spec1, keyUsage: usage1 })).keyMetadata.keyId;
    const to = (await kms.createKey({ keySpec: spec2, keyUsage: usage2 })).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/moving", targetKeyId: from });
    const call = kms.updateAlias({ aliasName: "alias/moving", targetKeyId: to });
    if (ok) await call;
    else await expect(call).rejects.toBeInstanceOf(ValidationError);
    const [alias] = (await kms.listAliases()).aliases;
    expect(alias?.targetKeyId).toBe(ok ? to : from);
  });
});

describe("pagination markers belong to the listing that issued them", () => {
  let other: string;

  beforeEach(async () => {
    other = (await kms.createKey()).keyMetadata.keyId;
    for (const id of [keyId, other]) {
      await kms.createAlias({ aliasName: `alias/${id}-1`, targetKeyId: id });
      await kms.createAlias({ aliasName: `alias/${id}-2`, targetKeyId: id });
      await kms.tagResource({
        keyId: id,
        tags: [
          { tagKey: "t1", tagValue: "1" },
          { tagKey: "t2", tagValue: "2" },
        ],
      });
      await kms.rotateKeyOnDemand({ keyId: id });
      await kms.rotateKeyOnDemand({ keyId: id });
      for (const op of ["Encrypt", "Decrypt"] as const) {
        await kms.createGrant({
          keyId: id,
          granteePrincipal: EVE,
          retiringPrincipal: EVE,
          operations: [op],
        });
      }
    }
  });

  /** One page of each listing, on `keyId` where it lists per key. */
  const listings = (): Record<string, (marker?: string) => Promise<{ nextMarker?: string }>> => ({
    listKeys: (marker) => kms.listKeys({ limit: 1, ...(marker ? { marker } : {}) }),
    listAliases: (marker) => kms.listAliases({ limit: 1, ...(marker ? { marker } : {}) }),
    listAliasesOfKey: (marker) =>
      kms.listAliases({ keyId, limit: 1, ...(marker ? { marker } : {}) }),
    listGrants: (marker) => kms.listGrants({ keyId, limit: 1, ...(marker ? { marker } : {}) }),
    listRetirableGrants: (marker) =>
      kms.listRetirableGrants({ retiringPrincipal: EVE, limit: 1, ...(marker ? { marker } : {}) }),
    listResourceTags: (marker) =>
      kms.listResourceTags({ keyId, limit: 1, ...(marker ? { marker } : {}) }),
    listKeyRotations: (marker) =>
      kms.listKeyRotations({ keyId, limit: 1, ...(marker ? { marker } : {}) }),
  });

  test("each listing accepts its own marker and refuses every other listing's", async () => {
    const list = listings();
    const issued: Record<string, string> = {};
    for (const [name, page] of Object.entries(list)) issued[name] = (await page()).nextMarker!;
    for (const [name, page] of Object.entries(list)) {
      await expect(page(issued[name])).resolves.toBeDefined();
      for (const [other, marker] of Object.entries(issued)) {
        if (other !== name) {
          await expect(page(marker), `${other}'s marker in ${name}`).rejects.toBeInstanceOf(
            InvalidMarkerError,
          );
        }
      }
    }
  });

  test("a marker issued for one key is refused for another", async () => {
    const pairs: [string, (id: string, marker?: string) => Promise<{ nextMarker?: string }>][] = [
      [
        "listGrants",
        (id, marker) => kms.listGrants({ keyId: id, limit: 1, ...(marker ? { marker } : {}) }),
      ],
      [
        "listResourceTags",
        (id, marker) =>
          kms.listResourceTags({ keyId: id, limit: 1, ...(marker ? { marker } : {}) }),
      ],
      [
        "listKeyRotations",
        (id, marker) =>
          kms.listKeyRotations({ keyId: id, limit: 1, ...(marker ? { marker } : {}) }),
      ],
      [
        "listAliases",
        (id, marker) => kms.listAliases({ keyId: id, limit: 1, ...(marker ? { marker } : {}) }),
      ],
    ];
    for (const [name, page] of pairs) {
      const marker = (await page(keyId)).nextMarker!;
      await expect(page(other, marker), name).rejects.toBeInstanceOf(InvalidMarkerError);
    }
  });

  test("a marker no listing issued is refused, not read as a position", async () => {
    const forged = Buffer.from("a", "utf8").toString("base64url");
    for (const [name, page] of Object.entries(listings())) {
      await expect(page(forged), name).rejects.toBeInstanceOf(InvalidMarkerError);
    }
    await expect(kms.listKeyPolicies({ keyId, marker: forged })).rejects.toBeInstanceOf(
      InvalidMarkerError,
    );
  });

  test("paging with the markers still visits every item once", async () => {
    const all = async (
      page: (marker?: string) => Promise<Record<string, unknown>>,
      field: string,
    ) => {
      const seen: unknown[] = [];
      let marker: string | undefined;
      do {
        const result = await page(marker);
        seen.push(...(result[field] as unknown[]));
        marker = result.nextMarker as string | undefined;
      } while (marker !== undefined);
      return seen;
    };
    const list = listings() as unknown as Record<
      string,
      (m?: string) => Promise<Record<string, unknown>>
    >;
    expect(await all(list.listKeys!, "keys")).toHaveLength(2);
    expect(await all(list.listAliases!, "aliases")).toHaveLength(4);
    expect(await all(list.listAliasesOfKey!, "aliases")).toHaveLength(2);
    expect(await all(list.listGrants!, "grants")).toHaveLength(2);
    expect(await all(list.listRetirableGrants!, "grants")).toHaveLength(4);
    expect(await all(list.listResourceTags!, "tags")).toHaveLength(2);
    expect(await all(list.listKeyRotations!, "rotations")).toHaveLength(2);
  });
});

describe("a key past its deletion window", () => {
  test("is not listed by listKeys, as describeKey no longer finds it", async () => {
    const doomed = (await kms.createKey()).keyMetadata.keyId;
    await kms.scheduleKeyDeletion({ keyId: doomed, pendingWindowInDays: 7 });
    clock.advance(7 * DAY_MS - 1);
    expect((await kms.listKeys()).keys.map((k) => k.keyId)).toContain(doomed);
    clock.advance(1);
    expect((await kms.listKeys()).keys.map((k) => k.keyId)).toEqual([keyId]);
    // Gone from the store too: maintenance has nothing left to destroy.
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([]);
  });

  test("listKeys pages past destroyed keys without losing live ones", async () => {
    const ids = [keyId];
    for (let i = 0; i < 5; i++) {
      const id = (await kms.createKey()).keyMetadata.keyId;
      if (i % 2 === 0) await kms.scheduleKeyDeletion({ keyId: id, pendingWindowInDays: 7 });
      else ids.push(id);
    }
    clock.advance(8 * DAY_MS);
    const seen: string[] = [];
    let marker: string | undefined;
    do {
      const page = await kms.listKeys({ limit: 1, ...(marker ? { marker } : {}) });
      seen.push(...page.keys.map((k) => k.keyId));
      marker = page.nextMarker;
    } while (marker !== undefined);
    expect(seen.sort()).toEqual(ids.sort());
  });

  test("its grants are not retirable any more", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: EVE,
      retiringPrincipal: EVE,
      operations: ["Decrypt"],
    });
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
    expect((await kms.listRetirableGrants({ retiringPrincipal: EVE })).grants).toHaveLength(1);
    clock.advance(7 * DAY_MS);
    expect((await kms.listRetirableGrants({ retiringPrincipal: EVE })).grants).toEqual([]);
  });
});
