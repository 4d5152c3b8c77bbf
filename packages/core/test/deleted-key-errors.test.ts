/**
 * What decrypt, reEncrypt (its source side) and explain answer for a ciphertext whose KMS key is
 * disabled, pending deletion, past its deletion window, destroyed or never existed, or whose
 * key argument names another key than its header: for a principal the key policy allows and for
 * one it denies.
 *
 * AWS KMS, for comparison (key-state table, API reference; users' and maintainers' reports such
 * as aws/aws-encryption-sdk-javascript#1005): a disabled key → DisabledException; pending
 * deletion → KMSInvalidStateException for Decrypt, success for ReEncrypt's source (footnote
 * [10]); a caller the key denies → AccessDeniedException before any state error. A ciphertext
 * whose key was deleted or never existed → AccessDeniedException ("The ciphertext refers to a
 * customer master key that does not exist, does not exist in this region, or you are not allowed
 * to access"), not NotFoundException. This library answers InvalidCiphertextException there on
 * purpose, as for any header it cannot open (docs/FORMAT.md §3.5): pinned below for both
 * principals, as the field engine's dead-row detection relies on it.
 *
 * Found in review: explain of a decrypt whose keyId names another key than the ciphertext's
 * header explained both keys, and answered InvalidCiphertext when the header's key was gone,
 * where the call reads the named key alone and answers IncorrectKeyException (AccessDenied to a
 * caller denied that key); ReEncrypt asked a sourceKeyId naming another key for
 * kms:ReEncryptTo rather than kms:ReEncryptFrom, so the right permission drew AccessDenied.
 */
import { createKms, type ExplainResult, type Kms, MemoryKeyStore } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, test } from "vitest";

const ADMIN = "arn:aws:iam::000000000000:user/admin";
const MALLORY = "arn:aws:iam::000000000000:user/mallory";
/** Allowed kms:ReEncryptFrom on `other` and kms:ReEncryptTo on `dest`, nothing else. */
const MOVER = "arn:aws:iam::000000000000:user/mover";
const NEVER_EXISTED = "42424242-4242-4242-4242-424242424242";
const plaintext = new TextEncoder().encode("secret");

function policy(...statements: readonly (readonly [string | readonly string[], string])[]) {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Effect: "Allow", Principal: { AWS: ADMIN }, Action: "kms:*", Resource: "*" },
      ...statements.map(([principal, action]) => ({
        Effect: "Allow",
        Principal: { AWS: principal },
        Action: action,
        Resource: "*",
      })),
    ],
  });
}

type State = "disabled" | "pendingDeletion" | "deletionDue" | "destroyed" | "neverExisted";
const STATES: readonly State[] = [
  "disabled",
  "pendingDeletion",
  "deletionDue",
  "destroyed",
  "neverExisted",
];

interface Setup {
  readonly kms: Kms;
  /** The key the ciphertext's header names (gone in the last three states). */
  readonly keyId: string;
  /** Another live key, which MALLORY is denied too. */
  readonly other: string;
  /** A live destination every principal may re-encrypt to. */
  readonly dest: string;
  readonly ciphertextBlob: Uint8Array;
}

async function setup(state: State | "enabled"): Promise<Setup> {
  const clock = new ManualClock();
  const kms = await createKms({ clock, store: new MemoryKeyStore(), principal: ADMIN });
  const create = async (p: string) => (await kms.createKey({ policy: p })).keyMetadata.keyId;
  const keyId = await create(policy());
  const other = await create(policy([MOVER, "kms:ReEncryptFrom"]));
  const dest = await create(policy([[MALLORY, MOVER], "kms:ReEncryptTo"]));
  let { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
  if (state === "disabled") await kms.disableKey({ keyId });
  if (state === "pendingDeletion" || state === "deletionDue" || state === "destroyed") {
    await kms.scheduleKeyDeletion({ keyId, pendingWindowInDays: 7 });
  }
  if (state === "deletionDue" || state === "destroyed") clock.advanceDays(8);
  if (state === "destroyed") {
    expect((await kms.runMaintenance()).deletedKeyIds).toEqual([keyId]);
  }
  if (state === "neverExisted") {
    // The header names a key id this KMS never had (FORMAT §3.1: key id at bytes 2–17).
    ciphertextBlob = new Uint8Array(ciphertextBlob);
    ciphertextBlob.set(new Uint8Array(16).fill(0x42), 2);
  }
  return {
    kms,
    keyId: state === "neverExisted" ? NEVER_EXISTED : keyId,
    other,
    dest,
    ciphertextBlob,
  };
}

/** The error's class name, or for explain the decisions as `action key:allowed`. */
async function outcome(call: Promise<unknown>, keys?: Record<string, string>): Promise<string> {
  try {
    const result = await call;
    if (keys === undefined || typeof result !== "object" || result === null) return "ok";
    const { decisions } = result as ExplainResult;
    const name = (arn: string) =>
      Object.entries(keys).find(([, id]) => arn.endsWith(`:key/${id}`))?.[0] ?? arn;
    return decisions.map((d) => `${d.action} ${name(d.resource)}:${d.allowed}`).join(", ");
  } catch (error) {
    return (error as Error).constructor.name;
  }
}

const GONE = "InvalidCiphertextError";

/** [state, principal, decrypt, reEncrypt source] as the calls answer. */
const CALLS: readonly (readonly [State, string, string, string])[] = [
  ["disabled", ADMIN, "DisabledError", "DisabledError"],
  ["disabled", MALLORY, "AccessDeniedError", "AccessDeniedError"],
  ["pendingDeletion", ADMIN, "InvalidStateError", "ok"],
  ["pendingDeletion", MALLORY, "AccessDeniedError", "AccessDeniedError"],
  ["deletionDue", ADMIN, GONE, GONE],
  ["deletionDue", MALLORY, GONE, GONE],
  ["destroyed", ADMIN, GONE, GONE],
  ["destroyed", MALLORY, GONE, GONE],
  ["neverExisted", ADMIN, GONE, GONE],
  ["neverExisted", MALLORY, GONE, GONE],
];

describe("a ciphertext whose key is not usable: the header's key, no key argument", () => {
  test.each(CALLS)("%s, %s: decrypt %s, reEncrypt %s", async (state, principal, dec, reEnc) => {
    const s = await setup(state);
    const options = { principal };
    expect(await outcome(s.kms.decrypt({ ciphertextBlob: s.ciphertextBlob }, options))).toBe(dec);
    const fresh = await setup(state);
    expect(
      await outcome(
        fresh.kms.reEncrypt(
          { ciphertextBlob: fresh.ciphertextBlob, destinationKeyId: fresh.dest },
          options,
        ),
      ),
    ).toBe(reEnc);
  });

  test.each(CALLS)("%s, %s: explained as the calls answer", async (state, principal) => {
    const s = await setup(state);
    const keys = { key: s.keyId, dest: s.dest };
    const allowed = principal === ADMIN;
    const gone = state === "deletionDue" || state === "destroyed" || state === "neverExisted";
    const explain = (operation: "decrypt" | "reEncrypt", request: object) =>
      outcome(s.kms.explain({ operation, request, as: { principal } }), keys);
    // Explain reports authorization, not state: a key that exists is explained in any state.
    expect(await explain("decrypt", { ciphertextBlob: s.ciphertextBlob })).toBe(
      gone ? GONE : `kms:Decrypt key:${allowed}`,
    );
    expect(
      await explain("reEncrypt", { ciphertextBlob: s.ciphertextBlob, destinationKeyId: s.dest }),
    ).toBe(gone ? GONE : `kms:ReEncryptTo dest:true, kms:ReEncryptFrom key:${allowed}`);
    // Named by its own key argument too, the key is the header's: the same answers.
    expect(await explain("decrypt", { ciphertextBlob: s.ciphertextBlob, keyId: s.keyId })).toBe(
      gone ? GONE : `kms:Decrypt key:${allowed}`,
    );
  });

  test("a denied principal learns nothing of a key's state: AccessDenied in every state", async () => {
    for (const operation of ["decrypt", "reEncrypt"] as const) {
      const seen = new Set<string>();
      for (const state of ["enabled", "disabled", "pendingDeletion"] as const) {
        const s = await setup(state);
        const request = { ciphertextBlob: s.ciphertextBlob, destinationKeyId: s.dest };
        seen.add(await outcome(s.kms[operation](request, { principal: MALLORY })));
      }
      expect([...seen]).toEqual(["AccessDeniedError"]);
    }
  });

  test("a gone key reads as a tampered blob, to either principal", async () => {
    for (const principal of [ADMIN, MALLORY]) {
      const s = await setup("enabled");
      const tampered = new Uint8Array(s.ciphertextBlob);
      tampered[tampered.length - 1]! ^= 1;
      expect(await outcome(s.kms.decrypt({ ciphertextBlob: tampered }, { principal }))).toBe(
        principal === ADMIN ? GONE : "AccessDeniedError",
      );
      for (const state of ["destroyed", "neverExisted"] as const) {
        const gone = await setup(state);
        expect(
          await outcome(gone.kms.decrypt({ ciphertextBlob: gone.ciphertextBlob }, { principal })),
        ).toBe(GONE);
      }
    }
  });
});

describe("a key argument naming another key than the ciphertext's header", () => {
  /** [header key state, principal] */
  const cases = (["enabled", ...STATES] as const).flatMap((state) =>
    [ADMIN, MALLORY].map((principal) => [state, principal] as const),
  );

  test.each(cases)(
    "header key %s, %s: decrypt and explain answer alike",
    async (state, principal) => {
      const s = await setup(state);
      const keys = { other: s.other, key: s.keyId, dest: s.dest };
      const request = { ciphertextBlob: s.ciphertextBlob, keyId: s.other };
      const answer = principal === ADMIN ? "IncorrectKeyError" : "AccessDeniedError";
      // The named key alone is read and authorized; the header's key, in whatever state, is not.
      expect(
        await outcome(s.kms.explain({ operation: "decrypt", request, as: { principal } }), keys),
      ).toBe(principal === ADMIN ? answer : "kms:Decrypt other:false");
      expect(await outcome(s.kms.decrypt(request, { principal }))).toBe(answer);
    },
  );

  test.each(cases)(
    "header key %s, %s: reEncrypt and explain answer alike",
    async (state, principal) => {
      const s = await setup(state);
      const keys = { other: s.other, key: s.keyId, dest: s.dest };
      const request = {
        ciphertextBlob: s.ciphertextBlob,
        sourceKeyId: s.other,
        destinationKeyId: s.dest,
      };
      const answer = principal === ADMIN ? "IncorrectKeyError" : "AccessDeniedError";
      expect(
        await outcome(s.kms.explain({ operation: "reEncrypt", request, as: { principal } }), keys),
      ).toBe(
        principal === ADMIN ? answer : "kms:ReEncryptFrom other:false, kms:ReEncryptTo dest:true",
      );
      expect(await outcome(s.kms.reEncrypt(request, { principal }))).toBe(answer);
    },
  );

  test("reEncrypt asks a sourceKeyId's key for kms:ReEncryptFrom, as explain reports it", async () => {
    const s = await setup("enabled");
    const request = {
      ciphertextBlob: s.ciphertextBlob,
      sourceKeyId: s.other,
      destinationKeyId: s.dest,
    };
    // MOVER may re-encrypt from `other` but not to it: the mismatch, not a denial.
    expect(await outcome(s.kms.reEncrypt(request, { principal: MOVER }))).toBe("IncorrectKeyError");
    expect(
      await outcome(s.kms.explain({ operation: "reEncrypt", request, as: { principal: MOVER } })),
    ).toBe("IncorrectKeyError");
    // The reEncrypt event records what it was decided on: ReEncryptTo on the destination,
    // ReEncryptFrom on the named source.
    const events = await s.kms.audit.events();
    const reEncrypted = events.findLast((e) => e.eventName === "ReEncrypt");
    expect(reEncrypted?.errorCode).toBe("IncorrectKeyException");
    const decided = (reEncrypted?.additionalEventData?.authorization ?? []) as { action: string }[];
    expect(decided.map((d) => d.action)).toEqual(["kms:ReEncryptTo", "kms:ReEncryptFrom"]);
    // Named as its own destination too, it needs both.
    const both = { ...request, destinationKeyId: s.other };
    const keys = { other: s.other };
    expect(
      await outcome(
        s.kms.explain({ operation: "reEncrypt", request: both, as: { principal: MOVER } }),
        keys,
      ),
    ).toBe("kms:ReEncryptFrom other:true, kms:ReEncryptTo other:false");
    expect(await outcome(s.kms.reEncrypt(both, { principal: MOVER }))).toBe("AccessDeniedError");
  });

  test("an alias naming the other key is resolved first, as the call resolves it", async () => {
    const s = await setup("destroyed");
    await s.kms.createAlias({ aliasName: "alias/other", targetKeyId: s.other });
    const request = { ciphertextBlob: s.ciphertextBlob, keyId: "alias/other" };
    expect(await outcome(s.kms.decrypt(request))).toBe("IncorrectKeyError");
    expect(await outcome(s.kms.explain({ operation: "decrypt", request }))).toBe(
      "IncorrectKeyError",
    );
  });

  test("a key argument naming a key that does not exist: NotFound, in both", async () => {
    const s = await setup("destroyed");
    const request = { ciphertextBlob: s.ciphertextBlob, keyId: NEVER_EXISTED };
    expect(await outcome(s.kms.decrypt(request))).toBe("NotFoundError");
    expect(await outcome(s.kms.explain({ operation: "decrypt", request }))).toBe("NotFoundError");
  });

  test("the explain caller still needs to read the named key, and only that one", async () => {
    const s = await setup("destroyed");
    const request = { ciphertextBlob: s.ciphertextBlob, keyId: s.other };
    // MALLORY may not read `other`'s policy: refused before anything is said of the mismatch.
    expect(
      await outcome(s.kms.explain({ operation: "decrypt", request }, { principal: MALLORY })),
    ).toBe("AccessDeniedError");
  });
});

describe("reEncrypt's sourceKeyId naming the header's own key", () => {
  test.each([
    ["destroyed", GONE],
    ["neverExisted", GONE],
    ["disabled", "DisabledError"],
  ] as const)(
    "%s: the call answers %s; explain reads the header's key as the call does",
    async (state, answer) => {
      const s = await setup(state);
      const request = {
        ciphertextBlob: s.ciphertextBlob,
        sourceKeyId: s.keyId,
        destinationKeyId: s.dest,
      };
      const keys = { key: s.keyId, dest: s.dest };
      expect(await outcome(s.kms.reEncrypt(request))).toBe(answer);
      expect(await outcome(s.kms.explain({ operation: "reEncrypt", request }), keys)).toBe(
        answer === GONE ? GONE : "kms:ReEncryptFrom key:true, kms:ReEncryptTo dest:true",
      );
    },
  );

  test("a missing destination is found missing first, as reEncrypt reads it first", async () => {
    const s = await setup("destroyed");
    const request = {
      ciphertextBlob: s.ciphertextBlob,
      sourceKeyId: s.keyId,
      destinationKeyId: NEVER_EXISTED,
    };
    expect(await outcome(s.kms.reEncrypt(request))).toBe("NotFoundError");
    expect(await outcome(s.kms.explain({ operation: "reEncrypt", request }))).toBe("NotFoundError");
  });
});
