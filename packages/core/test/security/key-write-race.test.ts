/**
 * Key writes are authorized on the record they write (found in review). A key write reads the
 * key, authorizes the call on it and writes by compare-and-set; when another instance changes
 * the key in between, the write loses and is retried on a fresh read. Authorization that an
 * operation makes beyond the key policy and grants was made once, on the first read:
 * - RetireGrant (its retiring principal, its grantee, or the key policy; an explicit Deny wins)
 *   retired the grant after a policy change that refused it;
 * - CreateGrant's delegation rule (a grant may only hand on what it has) was checked against
 *   the parent grants of the first read, so a retry allowed by another parent handed on
 *   operations that parent does not have.
 * Here instance A's store holds A's first key write until instance B has changed the key.
 */
import {
  AccessDeniedError,
  createKms,
  type KeyStore,
  type Kms,
  MemoryAuditSink,
  MemoryKeyStore,
} from "@kms/core";
import { beforeEach, describe, expect, it } from "vitest";

const ROOT_KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x37 + i);
const ACCOUNT_ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const BOB = "arn:aws:iam::111122223333:user/bob";
const CAROL = "arn:aws:iam::111122223333:user/carol";
const as = (principal: string) => ({ principal });

const ROOT_ONLY = {
  Effect: "Allow",
  Principal: { AWS: ACCOUNT_ROOT },
  Action: "kms:*",
  Resource: "*",
} as const;
const policy = (...statements: object[]): string =>
  JSON.stringify({ Version: "2012-10-17", Statement: [ROOT_ONLY, ...statements] });
const DEFAULT_POLICY = policy();
const ALICE_MAY_RETIRE = policy({
  Effect: "Allow",
  Principal: { AWS: ALICE },
  Action: "kms:RetireGrant",
  Resource: "*",
});
const ALICE_MAY_NOT_RETIRE = policy({
  Effect: "Deny",
  Principal: { AWS: ALICE },
  Action: "kms:RetireGrant",
  Resource: "*",
});
const BOB_MAY_CREATE_GRANTS = policy({
  Effect: "Allow",
  Principal: { AWS: BOB },
  Action: "kms:CreateGrant",
  Resource: "*",
});

/** `shared` as instance A sees it: its first key write waits at a gate until released. */
function gatedStore(shared: KeyStore) {
  const keyWrites: string[] = [];
  let gate: { reached: () => void; open: Promise<void> } | undefined;
  const store: KeyStore = {
    description: shared.description,
    getKey: (id) => shared.getKey(id),
    listKeys: (o) => shared.listKeys(o),
    createKey: (k) => shared.createKey(k),
    updateKey: async (k) => {
      const held = gate;
      gate = undefined;
      if (held !== undefined) {
        held.reached();
        await held.open;
      }
      try {
        await shared.updateKey(k);
        keyWrites.push("ok");
      } catch (error) {
        keyWrites.push((error as Error).constructor.name);
        throw error;
      }
    },
    deleteKey: (id, r) => shared.deleteKey(id, r),
    getAlias: (n) => shared.getAlias(n),
    listAliases: (o) => shared.listAliases(o),
    createAlias: (a) => shared.createAlias(a),
    updateAlias: (...args) => shared.updateAlias(...args),
    deleteAlias: (...args) => shared.deleteAlias(...args),
    getSetting: (n) => shared.getSetting(n),
    putSettingIfAbsent: (n, v) => shared.putSettingIfAbsent(n, v),
    close: () => shared.close(),
  };
  /** Holds A's next key write; `competing` runs on B while it waits, then the write goes on. */
  const interleave = async <T>(write: Promise<T>, competing: () => Promise<void>) => {
    const settled = write.then(
      () => undefined,
      (error: unknown) => error,
    );
    await reached;
    await competing();
    release();
    return settled;
  };
  let reached: Promise<void> = Promise.resolve();
  let release: () => void = () => {};
  const hold = () => {
    let onReached: () => void = () => {};
    reached = new Promise<void>((r) => {
      onReached = r;
    });
    const open = new Promise<void>((r) => {
      release = r;
    });
    gate = { reached: onReached, open };
  };
  return { store, keyWrites, hold, interleave };
}

let shared: MemoryKeyStore;
let b: Kms;
let a: Kms;
let sink: MemoryAuditSink;
let gated: ReturnType<typeof gatedStore>;

beforeEach(async () => {
  shared = new MemoryKeyStore();
  b = await createKms({ store: shared, rootKey: Uint8Array.from(ROOT_KEY), audit: false });
  gated = gatedStore(shared);
  sink = new MemoryAuditSink();
  a = await createKms({ store: gated.store, rootKey: Uint8Array.from(ROOT_KEY), audit: sink });
});

/** The key's grants as grantee and operations, in a stable order (grant ids are random). */
const grantsOf = async (keyId: string) =>
  (await b.listGrants({ keyId })).grants
    .map((g) => ({ grantee: g.granteePrincipal, operations: [...g.operations].sort() }))
    .sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));

describe("RetireGrant re-authorized on the record it writes", () => {
  it("allowed by the key policy, which was replaced before the write", async () => {
    const keyId = (await b.createKey({ policy: ALICE_MAY_RETIRE })).keyMetadata.keyId;
    const { grantId } = await b.createGrant({
      keyId,
      granteePrincipal: CAROL,
      operations: ["Decrypt"],
    });
    gated.hold();
    const error = await gated.interleave(a.retireGrant({ keyId, grantId }, as(ALICE)), () =>
      b.putKeyPolicy({ keyId, policy: DEFAULT_POLICY }),
    );

    expect(error).toBeInstanceOf(AccessDeniedError);
    expect(gated.keyWrites).toStrictEqual(["KeyStoreConflictError"]);
    expect(await grantsOf(keyId)).toStrictEqual([{ grantee: CAROL, operations: ["Decrypt"] }]);
    // Audited as the refusal it is, as an up-front denial would be.
    const events = sink.events.filter((e) => e.eventName === "RetireGrant");
    expect(events.map((e) => e.errorCode)).toStrictEqual(["AccessDeniedException"]);
  });

  it("the retiring principal, explicitly denied by a policy put before the write", async () => {
    const keyId = (await b.createKey()).keyMetadata.keyId;
    const { grantId } = await b.createGrant({
      keyId,
      granteePrincipal: CAROL,
      retiringPrincipal: ALICE,
      operations: ["Decrypt"],
    });
    gated.hold();
    const error = await gated.interleave(a.retireGrant({ keyId, grantId }, as(ALICE)), () =>
      b.putKeyPolicy({ keyId, policy: ALICE_MAY_NOT_RETIRE }),
    );

    expect(error).toBeInstanceOf(AccessDeniedError);
    expect(await grantsOf(keyId)).toStrictEqual([{ grantee: CAROL, operations: ["Decrypt"] }]);
  });

  it("retires when the record written still allows it", async () => {
    const keyId = (await b.createKey({ policy: ALICE_MAY_RETIRE })).keyMetadata.keyId;
    const { grantId } = await b.createGrant({
      keyId,
      granteePrincipal: CAROL,
      operations: ["Decrypt"],
    });
    gated.hold();
    const error = await gated.interleave(a.retireGrant({ keyId, grantId }, as(ALICE)), () =>
      b.updateKeyDescription({ keyId, description: "changed meanwhile" }),
    );

    expect(error).toBeUndefined();
    expect(gated.keyWrites).toStrictEqual(["KeyStoreConflictError", "ok"]);
    expect(await grantsOf(keyId)).toStrictEqual([]);
  });
});

describe("CreateGrant re-authorized on the record it writes", () => {
  it("relying on a grant revoked before the write", async () => {
    const keyId = (await b.createKey()).keyMetadata.keyId;
    const parent = await b.createGrant({
      keyId,
      granteePrincipal: BOB,
      operations: ["CreateGrant", "Decrypt"],
    });
    gated.hold();
    const error = await gated.interleave(
      a.createGrant({ keyId, granteePrincipal: CAROL, operations: ["Decrypt"] }, as(BOB)),
      () => b.revokeGrant({ keyId, grantId: parent.grantId }),
    );

    expect(error).toBeInstanceOf(AccessDeniedError);
    expect(await grantsOf(keyId)).toStrictEqual([]);
  });

  it("whose parent grant was revoked, another parent allowing CreateGrant but not the operation", async () => {
    const keyId = (await b.createKey()).keyMetadata.keyId;
    const parent = await b.createGrant({
      keyId,
      granteePrincipal: BOB,
      operations: ["CreateGrant", "Decrypt"],
    });
    await b.createGrant({ keyId, granteePrincipal: BOB, operations: ["CreateGrant", "Encrypt"] });
    gated.hold();
    const error = await gated.interleave(
      a.createGrant({ keyId, granteePrincipal: CAROL, operations: ["Decrypt"] }, as(BOB)),
      () => b.revokeGrant({ keyId, grantId: parent.grantId }),
    );

    // Carol would hold Decrypt from a caller who, when the grant was written, had no Decrypt.
    expect(error).toBeInstanceOf(AccessDeniedError);
    expect((error as Error).message).toMatch(/does not allow Decrypt/);
    expect(await grantsOf(keyId)).toStrictEqual([
      { grantee: BOB, operations: ["CreateGrant", "Encrypt"] },
    ]);
    const events = sink.events.filter((e) => e.eventName === "CreateGrant");
    expect(events.map((e) => e.errorCode)).toStrictEqual(["AccessDeniedException"]);
  });

  it("judges delegation by the decision made on the record written, not the first one", async () => {
    const keyId = (await b.createKey()).keyMetadata.keyId;
    const parent = await b.createGrant({
      keyId,
      granteePrincipal: BOB,
      operations: ["CreateGrant", "Decrypt"],
    });
    gated.hold();
    const error = await gated.interleave(
      a.createGrant({ keyId, granteePrincipal: CAROL, operations: ["Decrypt"] }, as(BOB)),
      async () => {
        // Bob now creates grants by the key policy: no parent grant bounds what he hands on.
        await b.revokeGrant({ keyId, grantId: parent.grantId });
        await b.createGrant({
          keyId,
          granteePrincipal: BOB,
          operations: ["CreateGrant", "Encrypt"],
        });
        await b.putKeyPolicy({ keyId, policy: BOB_MAY_CREATE_GRANTS });
      },
    );

    expect(error).toBeUndefined();
    expect(await grantsOf(keyId)).toStrictEqual([
      { grantee: BOB, operations: ["CreateGrant", "Encrypt"] },
      { grantee: CAROL, operations: ["Decrypt"] },
    ]);
  });
});

describe("other key writes after the policy was replaced", () => {
  const ALICE_MAY_MANAGE = policy({
    Effect: "Allow",
    Principal: { AWS: ALICE },
    Action: ["kms:EnableKeyRotation", "kms:TagResource", "kms:ScheduleKeyDeletion"],
    Resource: "*",
  });
  const writes: readonly [string, (kms: Kms, keyId: string) => Promise<unknown>][] = [
    ["enableKeyRotation", (kms, keyId) => kms.enableKeyRotation({ keyId }, as(ALICE))],
    [
      "tagResource",
      (kms, keyId) =>
        kms.tagResource({ keyId, tags: [{ tagKey: "team", tagValue: "x" }] }, as(ALICE)),
    ],
    ["scheduleKeyDeletion", (kms, keyId) => kms.scheduleKeyDeletion({ keyId }, as(ALICE))],
  ];
  for (const [name, write] of writes) {
    it(`${name} is refused and the key left as it was`, async () => {
      const keyId = (await b.createKey({ policy: ALICE_MAY_MANAGE })).keyMetadata.keyId;
      const before = await b.describeKey({ keyId });
      gated.hold();
      const error = await gated.interleave(write(a, keyId), () =>
        b.putKeyPolicy({ keyId, policy: DEFAULT_POLICY }),
      );

      expect(error).toBeInstanceOf(AccessDeniedError);
      expect(gated.keyWrites).toStrictEqual(["KeyStoreConflictError"]);
      expect(await b.describeKey({ keyId })).toStrictEqual(before);
      expect((await b.listResourceTags({ keyId })).tags).toStrictEqual([]);
      expect((await b.getKeyRotationStatus({ keyId })).keyRotationEnabled).toBe(false);
    });
  }
});
