/**
 * Two Kms instances on one store changing one alias (found in adversarial review). Alias writes
 * are a compare-and-set on the seal of the very record the call was authorized on:
 * - without it, an update based on an older read landed over a newer one with a lower seal
 *   counter, so the instance that had written the newer record refused the alias from then on
 *   as "rolled back";
 * - deleteAlias deleted whatever was stored, so an instance authorized on the key the alias
 *   pointed to when it read it deleted an alias another instance had since moved to a key the
 *   caller had no rights on;
 * - updateAlias authorized on its own read, but the sealed store read the alias again and
 *   compared against that second read: a move landing between the two was overwritten.
 * A write that loses the compare-and-set is retried by the facade from a fresh read, authorized
 * again, as key updates are.
 */
import {
  AccessDeniedError,
  createKms,
  type KeyStore,
  KeyStoreConflictError,
  type Kms,
  KmsInternalError,
  MemoryAuditSink,
  MemoryKeyStore,
} from "@kms/core";
import { beforeEach, describe, expect, it } from "vitest";

const ROOT_KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x91 + i);
const ACCOUNT_ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const asAlice = { principal: ALICE };

/** A key policy that lets Alice manage aliases of the key; other keys keep the default policy. */
const ALICE_MAY_MANAGE_ALIASES = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Effect: "Allow", Principal: { AWS: ACCOUNT_ROOT }, Action: "kms:*", Resource: "*" },
    {
      Effect: "Allow",
      Principal: { AWS: ALICE },
      Action: ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
      Resource: "*",
    },
  ],
});

type AliasWrite = "updateAlias" | "deleteAlias";

/**
 * `shared` as a second instance sees it: can hold the nth call of a method at a gate (so another
 * instance can act in between), and logs the outcome of every alias write that reaches `shared`.
 */
function interleaved(shared: KeyStore) {
  const writes: string[] = [];
  let held:
    | { method: keyof KeyStore; remaining: number; reached: () => void; open: Promise<void> }
    | undefined;
  const pass = async <T>(method: keyof KeyStore, run: () => Promise<T>): Promise<T> => {
    if (held?.method === method && --held.remaining === 0) {
      const gate = held;
      held = undefined;
      gate.reached();
      await gate.open;
    }
    return run();
  };
  const write = async (method: AliasWrite, run: () => Promise<void>): Promise<void> => {
    try {
      await pass(method, run);
      writes.push(`${method}: ok`);
    } catch (error) {
      writes.push(`${method}: ${(error as Error).constructor.name}`);
      throw error;
    }
  };
  const store: KeyStore = {
    description: shared.description,
    getKey: (id) => pass("getKey", () => shared.getKey(id)),
    listKeys: (o) => shared.listKeys(o),
    createKey: (k) => shared.createKey(k),
    updateKey: (k) => pass("updateKey", () => shared.updateKey(k)),
    deleteKey: (id, r) => shared.deleteKey(id, r),
    getAlias: (n) => pass("getAlias", () => shared.getAlias(n)),
    listAliases: (o) => shared.listAliases(o),
    createAlias: (a) => shared.createAlias(a),
    updateAlias: (...args) => write("updateAlias", () => shared.updateAlias(...args)),
    deleteAlias: (...args) => write("deleteAlias", () => shared.deleteAlias(...args)),
    getSetting: (n) => shared.getSetting(n),
    putSettingIfAbsent: (n, v) => shared.putSettingIfAbsent(n, v),
    close: () => shared.close(),
  };
  /** Holds the `nth` call of `method` from now on until `release()`. */
  const hold = (method: keyof KeyStore, nth = 1) => {
    let reached: () => void = () => {};
    let release: () => void = () => {};
    const atGate = new Promise<void>((r) => {
      reached = r;
    });
    const open = new Promise<void>((r) => {
      release = r;
    });
    held = { method, remaining: nth, reached, open };
    return { atGate, release };
  };
  return { store, writes, hold };
}

/** Settles `promise` into its rejection reason, or undefined when it fulfilled. */
const reason = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

let shared: MemoryKeyStore;
let b: Kms;
let a: Kms;
let gated: ReturnType<typeof interleaved>;
let mine: string;
let mineToo: string;
let theirs: string;

beforeEach(async () => {
  shared = new MemoryKeyStore();
  b = await createKms({ store: shared, rootKey: Uint8Array.from(ROOT_KEY), audit: false });
  mine = (await b.createKey({ policy: ALICE_MAY_MANAGE_ALIASES })).keyMetadata.keyId;
  mineToo = (await b.createKey({ policy: ALICE_MAY_MANAGE_ALIASES })).keyMetadata.keyId;
  theirs = (await b.createKey()).keyMetadata.keyId;
  gated = interleaved(shared);
  a = await createKms({ store: gated.store, rootKey: Uint8Array.from(ROOT_KEY), audit: false });
});

const targetOf = async (kms: Kms, aliasName: string): Promise<string> =>
  (await kms.describeKey({ keyId: aliasName })).keyMetadata.keyId;

describe("deleteAlias on two instances", () => {
  it("does not delete an alias moved meanwhile to a key the caller has no rights on", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    // A reads the alias on `mine`, where Alice may delete it, and its delete waits.
    const gate = gated.hold("deleteAlias");
    const late = reason(a.deleteAlias({ aliasName: "alias/app" }, asAlice));
    await gate.atGate;
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: theirs });
    gate.release();

    // The delete based on the old record lost; the retry, authorized on `theirs`, is refused.
    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gated.writes).toStrictEqual(["deleteAlias: KeyStoreConflictError"]);
    expect(await targetOf(b, "alias/app")).toBe(theirs);
    expect(await targetOf(a, "alias/app")).toBe(theirs);
  });

  it("deletes the moved alias when the caller may delete it where it points now", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    const gate = gated.hold("deleteAlias");
    const late = reason(a.deleteAlias({ aliasName: "alias/app" }, asAlice));
    await gate.atGate;
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mineToo });
    gate.release();

    expect(await late).toBeUndefined();
    expect(gated.writes).toStrictEqual(["deleteAlias: KeyStoreConflictError", "deleteAlias: ok"]);
    expect((await b.listAliases()).aliases).toStrictEqual([]);
  });
});

describe("updateAlias on two instances", () => {
  it("does not move an alias moved between the authorized read and the write", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    // A's first read of the alias is the one authorized (on `mine`); hold the next, which the
    // sealed store makes to learn the fields it seals.
    const gate = gated.hold("getAlias", 2);
    const late = reason(a.updateAlias({ aliasName: "alias/app", targetKeyId: mineToo }, asAlice));
    await gate.atGate;
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: theirs });
    gate.release();

    // Alice may not take the alias away from `theirs`: the write on B's record never happens.
    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gated.writes).toStrictEqual([]);
    expect(await targetOf(b, "alias/app")).toBe(theirs);
    expect(await targetOf(a, "alias/app")).toBe(theirs);
  });

  it("refuses a late write; the retry, authorized again, lands after the newer record", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    const other = (await b.createKey({ policy: ALICE_MAY_MANAGE_ALIASES })).keyMetadata.keyId;
    const gate = gated.hold("updateAlias");
    const late = reason(a.updateAlias({ aliasName: "alias/app", targetKeyId: other }, asAlice));
    await gate.atGate;
    // B moves the alias twice, back to where A read it: only the seal tells the records apart.
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mineToo });
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mine });
    gate.release();

    expect(await late).toBeUndefined();
    expect(gated.writes).toStrictEqual(["updateAlias: KeyStoreConflictError", "updateAlias: ok"]);
    // Both instances read the result: no record with a lower seal counter replaced B's.
    expect(await targetOf(b, "alias/app")).toBe(other);
    expect(await targetOf(a, "alias/app")).toBe(other);
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mine });
    expect(await targetOf(a, "alias/app")).toBe(mine);
  });

  it("does not overwrite an alias deleted and created again under the write", async () => {
    await b.createAlias({ aliasName: "alias/y", targetKeyId: mine });
    const gate = gated.hold("updateAlias");
    const late = reason(a.updateAlias({ aliasName: "alias/y", targetKeyId: mineToo }, asAlice));
    await gate.atGate;
    await b.deleteAlias({ aliasName: "alias/y" });
    await new Promise((r) => setTimeout(r, 2));
    await b.createAlias({ aliasName: "alias/y", targetKeyId: theirs });
    gate.release();

    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gated.writes).toStrictEqual(["updateAlias: KeyStoreConflictError"]);
    // The re-created alias is intact (a write sealed over the old creation time would have been
    // refused on every later read).
    expect(await targetOf(b, "alias/y")).toBe(theirs);
  });
});

describe("an alias that keeps changing", () => {
  it("fails with KmsInternalError after bounded attempts and changes nothing", async () => {
    await b.createAlias({ aliasName: "alias/busy", targetKeyId: mine });
    const conflicting: KeyStore = {
      ...gated.store,
      updateAlias: async () => {
        throw new KeyStoreConflictError("alias/busy changed concurrently");
      },
      deleteAlias: async () => {
        throw new KeyStoreConflictError("alias/busy changed concurrently");
      },
    };
    const c = await createKms({
      store: conflicting,
      rootKey: Uint8Array.from(ROOT_KEY),
      audit: false,
    });
    for (const call of [
      c.updateAlias({ aliasName: "alias/busy", targetKeyId: mineToo }),
      c.deleteAlias({ aliasName: "alias/busy" }),
    ]) {
      const error = await reason(call);
      expect(error).toBeInstanceOf(KmsInternalError);
      expect((error as Error).message).toMatch(/alias\/busy is being changed too often/);
      expect((error as Error).cause).toBeInstanceOf(KeyStoreConflictError);
    }
    expect(await targetOf(b, "alias/busy")).toBe(mine);
  });
});

describe("a retry is authorized on the key as it is now", () => {
  // Found in review: each call remembers its authorization decisions per action and key, so the
  // retry after a lost compare-and-set reused the decision made on the first read of the key,
  // even when the key it read again carried another policy. The write then landed after a
  // policy change that, in the order the writes took effect, refused it.
  const DEFAULT_POLICY = JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Effect: "Allow", Principal: { AWS: ACCOUNT_ROOT }, Action: "kms:*", Resource: "*" },
    ],
  });

  it("deleteAlias: the key's policy changed and the alias was written meanwhile", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    const gate = gated.hold("deleteAlias");
    const late = reason(a.deleteAlias({ aliasName: "alias/app" }, asAlice));
    await gate.atGate;
    // Alice loses her rights on `mine`; the alias is written again where it was.
    await b.putKeyPolicy({ keyId: mine, policy: DEFAULT_POLICY });
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mine });
    gate.release();

    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gated.writes).toStrictEqual(["deleteAlias: KeyStoreConflictError"]);
    expect(await targetOf(b, "alias/app")).toBe(mine);
  });

  it("updateAlias: the new target's policy changed and the alias was written meanwhile", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    const gate = gated.hold("updateAlias");
    const late = reason(a.updateAlias({ aliasName: "alias/app", targetKeyId: mineToo }, asAlice));
    await gate.atGate;
    await b.putKeyPolicy({ keyId: mineToo, policy: DEFAULT_POLICY });
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mine });
    gate.release();

    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gated.writes).toStrictEqual(["updateAlias: KeyStoreConflictError"]);
    expect(await targetOf(b, "alias/app")).toBe(mine);
  });

  it("a key update: the key's policy changed under the write", async () => {
    const policy = JSON.parse(ALICE_MAY_MANAGE_ALIASES) as { Statement: { Action: unknown }[] };
    policy.Statement[1]!.Action = "kms:UpdateKeyDescription";
    const keyId = (await b.createKey({ policy: JSON.stringify(policy) })).keyMetadata.keyId;
    const gate = gated.hold("updateKey");
    const late = reason(a.updateKeyDescription({ keyId, description: "Alice's" }, asAlice));
    await gate.atGate;
    await b.putKeyPolicy({ keyId, policy: DEFAULT_POLICY });
    gate.release();

    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect((await b.describeKey({ keyId })).keyMetadata.description).toBe("");
  });

  it("one audit event per call, with the refusal and the decisions of both reads", async () => {
    const sink = new MemoryAuditSink();
    const audited = await createKms({
      store: gated.store,
      rootKey: Uint8Array.from(ROOT_KEY),
      audit: sink,
    });
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    const gate = gated.hold("deleteAlias");
    const late = reason(audited.deleteAlias({ aliasName: "alias/app" }, asAlice));
    await gate.atGate;
    await b.putKeyPolicy({ keyId: mine, policy: DEFAULT_POLICY });
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: mine });
    gate.release();
    expect(await late).toBeInstanceOf(AccessDeniedError);

    const events = sink.events.filter((e) => e.eventName === "DeleteAlias");
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(event?.errorCode).toBe("AccessDeniedException");
    expect(event?.additionalEventData?.authorization).toStrictEqual([
      { action: "kms:DeleteAlias", decision: "policy-allow", statement: 1 },
      { action: "kms:DeleteAlias", decision: "implicit-deny" },
    ]);
  });
});
