/**
 * One read of the request per call: authorization, the operation and the audit event all see
 * the same values, whatever the caller's getters, Proxies or later mutations of its objects do
 * while the call awaits (the key store, here, or any other await).
 */
import {
  AccessDeniedError,
  type AuditEvent,
  createKms,
  DryRunOperationError,
  InvalidCiphertextError,
  type Kms,
  MemoryKeyStore,
  type StoredKey,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, test } from "vitest";

const ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const asAlice = { principal: ALICE };
const plaintext = new TextEncoder().encode("snapshot");

/** A memory store that runs `onRead` whenever a key is read (the call is then mid-flight). */
class ReadHookStore extends MemoryKeyStore {
  onRead: (() => void) | undefined;
  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    this.onRead?.();
    return super.getKey(keyId);
  }
}

/** A key policy: the account root keeps every right; `statements` are added for Alice. */
function policy(...statements: Record<string, unknown>[]): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "Root", Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
      ...statements.map((s) => ({ Principal: { AWS: ALICE }, Resource: "*", ...s })),
    ],
  });
}

/** A getter's answers: `values` in turn, then the last one for good; `reads` counts calls. */
function sequence<T>(values: readonly T[]): { (): T; reads: number } {
  const next = (): T => values[Math.min(next.reads++, values.length - 1)]!;
  next.reads = 0;
  return next;
}

async function settle<T>(promise: Promise<T>): Promise<T | Error> {
  return promise.then(
    (value) => value,
    (error: Error) => error,
  );
}

async function lastEvent(kms: Kms): Promise<AuditEvent> {
  const events = await kms.audit.events();
  return events[events.length - 1]!;
}

let store: ReadHookStore;
let kms: Kms;

beforeEach(async () => {
  store = new ReadHookStore();
  kms = await createKms({ store, clock: new ManualClock(), account: "000000000000" });
});

async function keyWith(text?: string): Promise<string> {
  const { keyId } = (await kms.createKey()).keyMetadata;
  if (text !== undefined) await kms.putKeyPolicy({ keyId, policy: text });
  return keyId;
}

/** Alice may encrypt only for tenant "a". */
const tenantA = policy({
  Effect: "Allow",
  Action: "kms:Encrypt",
  Condition: { StringEquals: { "kms:EncryptionContext:tenant": "a" } },
});

/** Denied, or a ciphertext that opens under tenant "a" only. */
async function expectBoundToTenantA(outcome: unknown): Promise<void> {
  if (outcome instanceof AccessDeniedError) return;
  if (outcome instanceof Error) throw outcome;
  const { ciphertextBlob } = outcome as { ciphertextBlob: Uint8Array };
  await expect(
    kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "a" } }),
  ).resolves.toBeDefined();
  await expect(
    kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "b" } }),
  ).rejects.toBeInstanceOf(InvalidCiphertextError);
}

describe("(a) the encryption context authorized is the one the ciphertext is bound to", () => {
  for (const order of [
    ["a", "b"],
    ["b", "a"],
  ]) {
    test(`a getter answering tenant ${order.join(" then ")}`, async () => {
      const keyId = await keyWith(tenantA);
      const next = sequence(order.map((tenant) => ({ tenant })));
      const request = {
        keyId,
        plaintext,
        get encryptionContext(): Record<string, string> {
          return next();
        },
      };
      await expectBoundToTenantA(await settle(kms.encrypt(request, asAlice)));
      expect(next.reads).toBe(1);
    });
  }

  test("a Proxy answering tenant b to the first read and a to later ones", async () => {
    const keyId = await keyWith(tenantA);
    const next = sequence(["b", "a"]);
    const encryptionContext = new Proxy<Record<string, string>>(
      { tenant: "b" },
      { get: (target, name) => (name === "tenant" ? next() : Reflect.get(target, name)) },
    );
    const outcome = await settle(kms.encrypt({ keyId, plaintext, encryptionContext }, asAlice));
    await expectBoundToTenantA(outcome);
    expect(outcome).toBeInstanceOf(AccessDeniedError);
  });

  for (const [given, later] of [
    ["b", "a"],
    ["a", "b"],
  ] as const) {
    test(`a context changed from tenant ${given} to ${later} while the key is read`, async () => {
      const keyId = await keyWith(tenantA);
      const encryptionContext = { tenant: given as string };
      store.onRead = () => {
        encryptionContext.tenant = later;
      };
      const outcome = await settle(kms.encrypt({ keyId, plaintext, encryptionContext }, asAlice));
      store.onRead = undefined;
      await expectBoundToTenantA(outcome);
      // The values given at the call decide, in both directions.
      if (given === "a") expect(outcome).not.toBeInstanceOf(Error);
      else expect(outcome).toBeInstanceOf(AccessDeniedError);
    });
  }
});

describe("(b) a key id that changes between reads", () => {
  // The operations authorize the key record they loaded (getKey → authorize), so the key used is
  // the key authorized even without the snapshot; the snapshot also makes it the key requested.
  for (const order of ["allowed first", "other first"]) {
    test(`the key used is the key authorized (${order})`, async () => {
      const allowed = await keyWith(policy({ Effect: "Allow", Action: "kms:Encrypt" }));
      const other = await keyWith();
      const next = sequence(order === "allowed first" ? [allowed, other] : [other, allowed]);
      const request = {
        plaintext,
        get keyId(): string {
          return next();
        },
      };
      const outcome = await settle(kms.encrypt(request, asAlice));
      const event = await lastEvent(kms);
      if (order === "allowed first") {
        expect(outcome).toMatchObject({ keyId: expect.stringContaining(allowed) });
        expect(event.resources.map((r) => r.ARN)).toEqual([expect.stringContaining(allowed)]);
      } else {
        expect(outcome).toBeInstanceOf(AccessDeniedError);
        expect(event.resources.map((r) => r.ARN)).toEqual([expect.stringContaining(other)]);
      }
      expect(event.requestParameters).toMatchObject({
        keyId: order === "allowed first" ? allowed : other,
      });
      expect(next.reads).toBe(1);
    });
  }

  test("kms:RequestAlias is read from the key reference the operation used", async () => {
    const viaAlias = await keyWith(policy({ Effect: "Allow", Action: "kms:Encrypt" }));
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: viaAlias });
    // Alice may use this key only through alias/app, which does not name it.
    const other = await keyWith(
      policy({
        Effect: "Allow",
        Action: "kms:Encrypt",
        Condition: { StringEquals: { "kms:RequestAlias": "alias/app" } },
      }),
    );
    const next = sequence([other, "alias/app"]);
    const request = {
      plaintext,
      get keyId(): string {
        return next();
      },
    };
    const outcome = await settle(kms.encrypt(request, asAlice));
    if (!(outcome instanceof AccessDeniedError)) {
      expect(outcome).toMatchObject({ keyId: expect.stringContaining(viaAlias) });
    }
    expect(outcome).toBeInstanceOf(AccessDeniedError);
  });
});

describe("(c) tags checked against aws:RequestTag are the tags stored", () => {
  const denyRed = {
    Effect: "Deny",
    Action: ["kms:CreateKey", "kms:TagResource"],
    Condition: { StringEquals: { "aws:RequestTag/team": "red" } },
  };

  /** Every tag of every key, as `key:tagKey=tagValue`. */
  async function allTags(k: Kms): Promise<string[]> {
    const out: string[] = [];
    for (const { keyId } of (await k.listKeys()).keys) {
      for (const t of (await k.listResourceTags({ keyId })).tags) {
        out.push(`${t.tagKey}=${t.tagValue}`);
      }
    }
    return out;
  }

  async function kmsDenyingRedKeys(): Promise<Kms> {
    return createKms({
      clock: new ManualClock(),
      account: "000000000000",
      accountPolicy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          { Effect: "Allow", Principal: { AWS: ROOT }, Action: "kms:*", Resource: "*" },
          { ...denyRed, Principal: "*", Resource: "*" },
        ],
      }),
    });
  }

  /** A tag whose value is "blue" on the first read and "red" on every later one. */
  function flippingTag(): { tagKey: string; readonly tagValue: string } {
    const next = sequence(["blue", "red"]);
    return {
      tagKey: "team",
      get tagValue(): string {
        return next();
      },
    };
  }

  test("createKey: a tag value getter", async () => {
    const k = await kmsDenyingRedKeys();
    await settle(k.createKey({ tags: [flippingTag()] }));
    expect(await allTags(k)).not.toContain("team=red");
  });

  test("createKey: the tags array changed after the call, before awaiting it", async () => {
    const k = await kmsDenyingRedKeys();
    const tags = [{ tagKey: "team", tagValue: "blue" }];
    const pending = settle(k.createKey({ tags }));
    tags[0]!.tagValue = "red";
    tags.push({ tagKey: "team", tagValue: "red" });
    await pending;
    expect((await lastEvent(k)).requestParameters).toEqual({
      tags: [{ tagKey: "team", tagValue: "blue" }],
    });
    expect(await allTags(k)).not.toContain("team=red");
  });

  test("tagResource: a tag value getter", async () => {
    const keyId = await keyWith(policy({ Effect: "Allow", Action: "kms:TagResource" }, denyRed));
    await settle(kms.tagResource({ keyId, tags: [flippingTag()] }, asAlice));
    expect(await allTags(kms)).not.toContain("team=red");
  });

  test("tagResource: the tags array changed after the call, before awaiting it", async () => {
    const keyId = await keyWith(policy({ Effect: "Allow", Action: "kms:TagResource" }, denyRed));
    const tags = [{ tagKey: "team", tagValue: "blue" }];
    const pending = settle(kms.tagResource({ keyId, tags }, asAlice));
    tags[0]!.tagValue = "red";
    tags.push({ tagKey: "team", tagValue: "red" });
    expect(await pending).toBeUndefined();
    expect(await allTags(kms)).toEqual(["team=blue"]);
  });

  test("untagResource: the tag keys array changed after the call, before awaiting it", async () => {
    const keyId = await keyWith(
      policy(
        { Effect: "Allow", Action: "kms:UntagResource" },
        {
          Effect: "Deny",
          Action: "kms:UntagResource",
          Condition: { "ForAnyValue:StringEquals": { "aws:TagKeys": "team" } },
        },
      ),
    );
    await kms.tagResource({
      keyId,
      tags: [
        { tagKey: "team", tagValue: "blue" },
        { tagKey: "note", tagValue: "x" },
      ],
    });
    const tagKeys = ["team"];
    const pending = settle(kms.untagResource({ keyId, tagKeys }, asAlice));
    tagKeys[0] = "note";
    expect(await pending).toBeInstanceOf(AccessDeniedError);
    expect(await allTags(kms)).toEqual(["note=x", "team=blue"]);
  });
});

describe("(d) a request that cannot be read is a ValidationError, and audited", () => {
  const unreadable: [string, (keyId: string) => unknown][] = [
    [
      "a throwing getter",
      (keyId) => ({
        keyId,
        get plaintext(): Uint8Array {
          throw new Error("boom");
        },
      }),
    ],
    [
      "a throwing getter in the encryption context",
      (keyId) => ({
        keyId,
        plaintext,
        encryptionContext: {
          get tenant(): string {
            throw new Error("boom");
          },
        },
      }),
    ],
    [
      "a Proxy whose ownKeys trap throws",
      (keyId) =>
        new Proxy(
          { keyId, plaintext },
          {
            ownKeys: () => {
              throw new Error("boom");
            },
          },
        ),
    ],
    [
      "a Proxy whose getPrototypeOf trap throws",
      (keyId) => ({
        keyId,
        plaintext,
        encryptionContext: new Proxy(
          { tenant: "a" },
          {
            getPrototypeOf: () => {
              throw new Error("boom");
            },
          },
        ),
      }),
    ],
  ];

  for (const [name, make] of unreadable) {
    test(name, async () => {
      const keyId = await keyWith();
      const outcome = await settle(kms.encrypt(make(keyId) as never));
      expect(outcome).toBeInstanceOf(ValidationError);
      expect((outcome as Error).message).toBe(
        `"request" could not be read: a property getter or Proxy threw`,
      );
      expect(await lastEvent(kms)).toMatchObject({
        eventName: "Encrypt",
        errorCode: "ValidationException",
        errorMessage: (outcome as Error).message,
        requestParameters: null,
      });
      expect((await kms.audit.verify()).ok).toBe(true);
    });
  }

  test("dryRun is read once: an operation without a dry run cannot run and then answer one", async () => {
    const keyId = await keyWith();
    const next = sequence([undefined, undefined, true]);
    const request = {
      keyId,
      get dryRun(): boolean | undefined {
        return next();
      },
    };
    const outcome = await settle(kms.scheduleKeyDeletion(request));
    const { keyState } = (await kms.describeKey({ keyId })).keyMetadata;
    if (outcome instanceof DryRunOperationError) expect(keyState).toBe("Enabled");
    expect(outcome).not.toBeInstanceOf(Error);
    expect(keyState).toBe("PendingDeletion");
  });
});

describe("(e) the audit event records the request as the call read it", () => {
  test("an encryption context changed after the call", async () => {
    const keyId = await keyWith();
    const encryptionContext = { tenant: "a" };
    const pending = kms.encrypt({ keyId, plaintext, encryptionContext });
    encryptionContext.tenant = "b";
    const { ciphertextBlob } = await pending;
    expect((await lastEvent(kms)).requestParameters).toEqual({
      keyId,
      encryptionContext: { tenant: "a" },
    });
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "a" } }),
    ).resolves.toBeDefined();
  });

  test("a getter: the value read once, not a later answer", async () => {
    const keyId = await keyWith();
    const next = sequence(["first", "second"]);
    const request = {
      keyId,
      plaintext,
      get encryptionContext(): Record<string, string> {
        return { purpose: next() };
      },
    };
    const { ciphertextBlob } = await kms.encrypt(request);
    expect((await lastEvent(kms)).requestParameters).toEqual({
      keyId,
      encryptionContext: { purpose: "first" },
    });
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { purpose: "first" } }),
    ).resolves.toBeDefined();
  });

  test('a context key "__proto__" (from JSON) and a null-prototype context are kept', async () => {
    const keyId = await keyWith();
    const fromJson = JSON.parse('{"__proto__":"x","tenant":"a"}') as Record<string, string>;
    const bare = Object.assign(Object.create(null) as Record<string, string>, { tenant: "a" });
    for (const encryptionContext of [fromJson, bare]) {
      const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, encryptionContext });
      expect((await lastEvent(kms)).requestParameters).toEqual({
        keyId,
        encryptionContext: { ...encryptionContext },
      });
      await expect(kms.decrypt({ ciphertextBlob, encryptionContext })).resolves.toBeDefined();
    }
  });
});

describe("(f) over-deep and oversized requests fail cleanly", () => {
  function nested(levels: number): Record<string, unknown> {
    let value: Record<string, unknown> = {};
    for (let i = 0; i < levels; i++) value = { inner: value };
    return value;
  }
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;

  const cases: [string, (keyId: string) => Record<string, unknown>, RegExp][] = [
    ["nested 20 levels deep", (keyId) => ({ keyId, plaintext, extra: nested(20) }), /deeper/],
    ["cyclic", (keyId) => ({ keyId, plaintext, extra: cyclic }), /deeper/],
    [
      "an array of 20 000 tags",
      (keyId) => ({
        keyId,
        tags: Array.from({ length: 20000 }, (_, i) => ({ tagKey: `k${i}`, tagValue: "" })),
      }),
      /more than 10000/,
    ],
    [
      "an array claiming 2^32 - 1 elements",
      (keyId) => {
        const tags: unknown[] = [];
        tags.length = 2 ** 32 - 1;
        return { keyId, tags };
      },
      /more than 10000/,
    ],
  ];

  for (const [name, make, message] of cases) {
    test(name, async () => {
      const keyId = await keyWith();
      const outcome = await settle(kms.tagResource(make(keyId) as never));
      expect(outcome).toBeInstanceOf(ValidationError);
      expect((outcome as Error).message).toMatch(message);
      expect(await lastEvent(kms)).toMatchObject({
        eventName: "TagResource",
        errorCode: "ValidationException",
      });
      expect((await kms.listResourceTags({ keyId })).tags).toEqual([]);
    });
  }

  test("a large request within the bounds still works", async () => {
    const keyId = await keyWith();
    const encryptionContext = Object.fromEntries(
      Array.from({ length: 600 }, (_, i) => [`k${String(i).padStart(3, "0")}`, ""]),
    );
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, encryptionContext });
    await expect(kms.decrypt({ ciphertextBlob, encryptionContext })).resolves.toBeDefined();
  });
});

describe("the ciphertext a call started with is the one it parses", () => {
  for (const operation of ["decrypt", "reEncrypt"] as const) {
    test(`${operation}: bytes overwritten while the call awaits change nothing`, async () => {
      const source = await keyWith();
      const destination = await keyWith();
      const { ciphertextBlob } = await kms.encrypt({ keyId: source, plaintext });
      const given = new Uint8Array(ciphertextBlob);
      // The header's key id and the body, overwritten once the call reads its first key.
      store.onRead = () => given.fill(0);
      const call =
        operation === "decrypt"
          ? kms.decrypt({ ciphertextBlob: given })
          : kms.reEncrypt({ ciphertextBlob: given, destinationKeyId: destination });
      const outcome = await call;
      store.onRead = undefined;
      expect(given.every((byte) => byte === 0)).toBe(true);
      const opened =
        "plaintext" in outcome
          ? outcome
          : await kms.decrypt({ ciphertextBlob: outcome.ciphertextBlob });
      expect(opened.plaintext).toEqual(plaintext);
      const event = await lastEvent(kms);
      expect(event.errorCode).toBeUndefined();
    });
  }
});

describe("call options are read once too", () => {
  test("a throwing options getter is an audited ValidationError naming no principal", async () => {
    const keyId = await keyWith();
    const options = {
      get principal(): string {
        throw new Error("boom");
      },
    };
    await expect(kms.encrypt({ keyId, plaintext }, options)).rejects.toBeInstanceOf(
      ValidationError,
    );
    const event = await lastEvent(kms);
    expect(event.eventName).toBe("Encrypt");
    expect(event.errorCode).toBe("ValidationException");
    expect(event.userIdentity.arn).not.toBe(ROOT);
  });

  test("a sourceIp getter answering a string, then an object, records the string", async () => {
    const keyId = await keyWith();
    const next = sequence<unknown>(["203.0.113.7", { toString: () => "forged" }]);
    const options = {
      get sourceIp(): string {
        return next() as string;
      },
    };
    await kms.encrypt({ keyId, plaintext }, options);
    expect(next.reads).toBe(1);
    expect((await lastEvent(kms)).sourceIPAddress).toBe("203.0.113.7");
  });
});
