import {
  AccessDeniedError,
  createKms,
  DryRunOperationError,
  GRANT_OPERATIONS,
  type GrantConstraints,
  type GrantOperation,
  InvalidGrantTokenError,
  InvalidKeyUsageError,
  type KeySpec,
  type KeyUsage,
  type Kms,
  MemoryKeyStore,
  NotFoundError,
  parseStoredGrants,
  type StoredGrant,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import fc from "fast-check";
import { beforeAll, beforeEach, describe, expect, test } from "vitest";

const ALICE = "arn:aws:iam::111122223333:user/alice";
const BOB = "arn:aws:iam::111122223333:user/bob";
const RETIRER = "arn:aws:iam::444455556666:role/retirer";
const as = (principal: string) => ({ principal });
const plaintext = new TextEncoder().encode("grant me");

let kms: Kms;
let keyId: string;

beforeEach(async () => {
  kms = await createKms({ clock: new ManualClock() });
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

describe("createGrant", () => {
  test("a grant lets its grantee perform exactly its operations", async () => {
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    const { grantId, grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "DescribeKey"],
    });
    expect(grantId).toMatch(/^[0-9a-f]{64}$/);
    expect(grantToken.length).toBeGreaterThan(0);
    const { ciphertextBlob } = await kms.encrypt(
      { keyId, plaintext, grantTokens: [grantToken] },
      as(ALICE),
    );
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
    await expect(kms.decrypt({ ciphertextBlob }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.encrypt({ keyId, plaintext }, as(BOB))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("the same name and fields return the same grant id; different fields a new one", async () => {
    const request = {
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt" as const],
      name: "app",
    };
    const a = await kms.createGrant(request);
    const b = await kms.createGrant(request);
    expect(b.grantId).toBe(a.grantId);
    const c = await kms.createGrant({ ...request, operations: ["Decrypt"] });
    expect(c.grantId).not.toBe(a.grantId);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(2);
  });

  test("rejects operations a grant cannot allow and empty lists", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["PutKeyPolicy" as never] }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: [] }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("dryRun checks without creating", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["Encrypt"], dryRun: true }),
    ).rejects.toBeInstanceOf(DryRunOperationError);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("a grantee with CreateGrant can only hand on operations it has", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "CreateGrant"],
    });
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Encrypt"] }, as(ALICE)),
    ).resolves.toBeDefined();
    await expect(
      kms.createGrant({ keyId, granteePrincipal: BOB, operations: ["Decrypt"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("delegated grants keep their parent's constraints", () => {
  type Constraints = Parameters<Kms["createGrant"]>[0]["constraints"];
  const delegate = async (parent: Constraints, child: Constraints) => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "CreateGrant"],
      ...(parent ? { constraints: parent } : {}),
    });
    return kms.createGrant(
      {
        keyId,
        granteePrincipal: BOB,
        operations: ["Encrypt"],
        ...(child ? { constraints: child } : {}),
      },
      as(ALICE),
    );
  };
  const subset = (pairs: Record<string, string>) => ({ encryptionContextSubset: pairs });
  const equals = (pairs: Record<string, string>) => ({ encryptionContextEquals: pairs });

  test.each<[string, Constraints, Constraints, boolean]>([
    ["the same subset", subset({ tenant: "a" }), subset({ tenant: "a" }), true],
    [
      "the same subset in another key order",
      subset({ t: "a", r: "eu" }),
      subset({ r: "eu", t: "a" }),
      true,
    ],
    [
      "a narrower subset (more pairs)",
      subset({ tenant: "a" }),
      subset({ tenant: "a", row: "7" }),
      true,
    ],
    [
      "one exact context inside the subset",
      subset({ tenant: "a" }),
      equals({ tenant: "a", row: "7" }),
      true,
    ],
    ["keys compare case-insensitively", subset({ tenant: "a" }), subset({ TENANT: "a" }), true],
    ["the same exact context", equals({ tenant: "a" }), equals({ tenant: "a" }), true],
    ["an unconstrained parent allows anything", undefined, subset({ tenant: "a" }), true],
    ["no constraints under a constrained parent", subset({ tenant: "a" }), undefined, false],
    [
      "a wider subset (fewer pairs)",
      subset({ tenant: "a", row: "7" }),
      subset({ tenant: "a" }),
      false,
    ],
    ["another value", subset({ tenant: "a" }), subset({ tenant: "b" }), false],
    ["values compare exactly", subset({ tenant: "a" }), subset({ tenant: "A" }), false],
    ["a subset under an exact parent", equals({ tenant: "a" }), subset({ tenant: "a" }), false],
    ["another exact context", equals({ tenant: "a" }), equals({ tenant: "a", row: "7" }), false],
    [
      "an exact context outside the subset",
      subset({ tenant: "a" }),
      equals({ tenant: "b" }),
      false,
    ],
  ])("%s", async (_name, parent, child, allowed) => {
    const created = delegate(parent, child);
    if (allowed) await expect(created).resolves.toMatchObject({ grantId: expect.any(String) });
    else await expect(created).rejects.toThrow(/does not keep/);
  });

  test("the delegated grant's narrower constraint is what its grantee gets", async () => {
    await delegate(subset({ tenant: "a" }), subset({ tenant: "a", row: "7" }));
    const enc = (encryptionContext: Record<string, string>) =>
      kms.encrypt({ keyId, plaintext, encryptionContext }, as(BOB));
    await expect(enc({ tenant: "a", row: "7" })).resolves.toBeDefined();
    await expect(enc({ tenant: "a", row: "8" })).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("grant constraints", () => {
  test("EncryptionContextEquals needs exactly that context (keys case-insensitive, values exact)", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    const enc = (encryptionContext?: Record<string, string>) =>
      kms.encrypt(
        { keyId, plaintext, ...(encryptionContext ? { encryptionContext } : {}) },
        as(ALICE),
      );
    await expect(enc({ tenant: "a" })).resolves.toBeDefined();
    await expect(enc({ TENANT: "a" })).resolves.toBeDefined();
    await expect(enc({ tenant: "A" })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(enc({ tenant: "a", extra: "x" })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(enc()).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("EncryptionContextSubset needs at least those pairs", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "Decrypt", "GenerateDataKey"],
      constraints: { encryptionContextSubset: { tenant: "a" } },
    });
    const { ciphertextBlob } = await kms.encrypt(
      { keyId, plaintext, encryptionContext: { tenant: "a", row: "7" } },
      as(ALICE),
    );
    await expect(
      kms.decrypt({ ciphertextBlob, encryptionContext: { tenant: "a", row: "7" } }, as(ALICE)),
    ).resolves.toMatchObject({ plaintext });
    await expect(
      kms.generateDataKey(
        { keyId, keySpec: "AES_256", encryptionContext: { tenant: "b" } },
        as(ALICE),
      ),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  test("constraints do not apply to operations without an encryption context", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["DescribeKey"],
      constraints: { encryptionContextEquals: { tenant: "a" } },
    });
    await expect(kms.describeKey({ keyId }, as(ALICE))).resolves.toBeDefined();
  });
});

describe("retire and revoke", () => {
  test("after retireGrant (by its retiring principal, with the token) the grantee is denied", async () => {
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      retiringPrincipal: RETIRER,
      operations: ["Encrypt"],
    });
    await kms.encrypt({ keyId, plaintext }, as(ALICE));
    expect((await kms.listRetirableGrants({ retiringPrincipal: RETIRER })).grants).toHaveLength(1);
    await expect(kms.retireGrant({ grantToken }, as(BOB))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await kms.retireGrant({ grantToken }, as(RETIRER));
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    expect((await kms.listRetirableGrants({ retiringPrincipal: RETIRER })).grants).toHaveLength(0);
    await expect(kms.retireGrant({ grantToken }, as(RETIRER))).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  test("a grantee whose grant includes RetireGrant may retire it by key and grant id", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "RetireGrant"],
    });
    await kms.retireGrant({ keyId, grantId }, as(ALICE));
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
  });

  test("after revokeGrant the grantee is denied; revoking needs kms:RevokeGrant", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    await expect(kms.revokeGrant({ keyId, grantId }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.revokeGrant({ keyId, grantId, dryRun: true })).rejects.toBeInstanceOf(
      DryRunOperationError,
    );
    await kms.encrypt({ keyId, plaintext }, as(ALICE));
    await kms.revokeGrant({ keyId, grantId });
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    await expect(kms.revokeGrant({ keyId, grantId })).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe("listing and tokens", () => {
  test("listGrants pages and filters", async () => {
    for (let i = 0; i < 5; i++) {
      await kms.createGrant({
        keyId,
        granteePrincipal: i % 2 ? ALICE : BOB,
        operations: ["Encrypt"],
      });
    }
    const first = await kms.listGrants({ keyId, limit: 2 });
    expect(first.grants).toHaveLength(2);
    expect(first.truncated).toBe(true);
    const rest = await kms.listGrants({ keyId, limit: 10, marker: first.nextMarker! });
    expect(rest.grants).toHaveLength(3);
    expect((await kms.listGrants({ keyId, granteePrincipal: ALICE })).grants).toHaveLength(2);
    expect(first.grants[0]).toMatchObject({
      operations: ["Encrypt"],
      keyId: expect.stringContaining(keyId),
    });
  });

  test("at most 10 well-formed grant tokens are accepted by operations that take them", async () => {
    const { grantToken } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
    });
    await expect(
      kms.encrypt({ keyId, plaintext, grantTokens: Array(10).fill(grantToken) }),
    ).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, grantTokens: Array(11).fill(grantToken) }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(kms.describeKey({ keyId, grantTokens: ["not-a-token"] })).rejects.toBeInstanceOf(
      InvalidGrantTokenError,
    );
  });

  test("grants survive in the key record: a second Kms on the same store sees them", async () => {
    const { MemoryKeyStore } = await import("@kms/core");
    const store = new MemoryKeyStore();
    const rootKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const a = await createKms({ store, rootKey });
    const id = (await a.createKey()).keyMetadata.keyId;
    await a.createGrant({ keyId: id, granteePrincipal: ALICE, operations: ["Encrypt"] });
    const b = await createKms({ store, rootKey });
    await expect(b.encrypt({ keyId: id, plaintext }, as(ALICE))).resolves.toBeDefined();
  });
});

// ---------------------------------------------------------------------------------------------
// CreateGrant validation against the key (AWS: "Grant operations", "Grant constraints")
// ---------------------------------------------------------------------------------------------

/**
 * The reference, written out from AWS's docs rather than taken from the code: the grant
 * operations each kind of key supports. DescribeKey, CreateGrant and RetireGrant: any key.
 */
const ANY_KEY: readonly GrantOperation[] = ["CreateGrant", "RetireGrant", "DescribeKey"];
const SUPPORTED: Record<
  "symmetric" | "asymmetric-encryption" | "signing" | "hmac" | "key-agreement",
  readonly GrantOperation[]
> = {
  symmetric: [
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
  ],
  "asymmetric-encryption": ["Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey"],
  signing: ["Sign", "Verify", "GetPublicKey"],
  hmac: ["GenerateMac", "VerifyMac"],
  "key-agreement": ["DeriveSharedSecret", "GetPublicKey"],
};
type KeyKind = keyof typeof SUPPORTED;

/** Every keySpec × keyUsage pair CreateKey accepts. */
const KEY_TYPES: readonly (readonly [KeySpec, KeyUsage, KeyKind])[] = [
  ["SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "symmetric"],
  ["HMAC_224", "GENERATE_VERIFY_MAC", "hmac"],
  ["HMAC_256", "GENERATE_VERIFY_MAC", "hmac"],
  ["HMAC_384", "GENERATE_VERIFY_MAC", "hmac"],
  ["HMAC_512", "GENERATE_VERIFY_MAC", "hmac"],
  ["RSA_2048", "ENCRYPT_DECRYPT", "asymmetric-encryption"],
  ["RSA_2048", "SIGN_VERIFY", "signing"],
  ["RSA_3072", "ENCRYPT_DECRYPT", "asymmetric-encryption"],
  ["RSA_3072", "SIGN_VERIFY", "signing"],
  ["RSA_4096", "ENCRYPT_DECRYPT", "asymmetric-encryption"],
  ["RSA_4096", "SIGN_VERIFY", "signing"],
  ["ECC_NIST_P256", "SIGN_VERIFY", "signing"],
  ["ECC_NIST_P256", "KEY_AGREEMENT", "key-agreement"],
  ["ECC_NIST_P384", "SIGN_VERIFY", "signing"],
  ["ECC_NIST_P384", "KEY_AGREEMENT", "key-agreement"],
  ["ECC_NIST_P521", "SIGN_VERIFY", "signing"],
  ["ECC_NIST_P521", "KEY_AGREEMENT", "key-agreement"],
  ["ECC_SECG_P256K1", "SIGN_VERIFY", "signing"],
  ["ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "signing"],
  ["ML_DSA_44", "SIGN_VERIFY", "signing"],
  ["ML_DSA_65", "SIGN_VERIFY", "signing"],
  ["ML_DSA_87", "SIGN_VERIFY", "signing"],
];

const supports = (kind: KeyKind, op: GrantOperation): boolean =>
  ANY_KEY.includes(op) || SUPPORTED[kind].includes(op);

/** CreateGrant alone is refused on every key, so it is tried together with DescribeKey. */
const withPartner = (op: GrantOperation): GrantOperation[] =>
  op === "CreateGrant" ? ["CreateGrant", "DescribeKey"] : [op];

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("createGrant refuses operations the key does not support (ValidationException)", () => {
  // One Kms and one key per type for the whole table: RSA_4096 key generation is slow.
  let shared: Kms;
  const keys = new Map<string, string>();
  const keyOf = async (spec: KeySpec, usage: KeyUsage): Promise<string> => {
    const id = `${spec}/${usage}`;
    let keyId = keys.get(id);
    if (keyId === undefined) {
      keyId = (await shared.createKey({ keySpec: spec, keyUsage: usage })).keyMetadata.keyId;
      keys.set(id, keyId);
    }
    return keyId;
  };
  beforeAll(async () => {
    shared = await createKms({ clock: new ManualClock() });
  });

  describe.each(KEY_TYPES)("%s %s", (spec, usage, kind) => {
    test.each([...GRANT_OPERATIONS])("%s", async (op) => {
      const id = await keyOf(spec, usage);
      const created = shared.createGrant({
        keyId: id,
        granteePrincipal: ALICE,
        operations: withPartner(op),
      });
      if (supports(kind, op)) {
        await expect(created).resolves.toMatchObject({ grantId: expect.any(String) });
      } else {
        const error = await created.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as ValidationError).code).toBe("ValidationException");
        expect((error as Error).message).toMatch(
          new RegExp(
            `^"operations" ${op} is not supported by a ${spec} key with key usage ${usage}; `,
          ),
        );
      }
    });
  });

  test("a grant mixing supported and unsupported operations is refused whole, naming only the unsupported", async () => {
    const id = await keyOf("ECC_NIST_P256", "SIGN_VERIFY");
    const before = (await shared.listGrants({ keyId: id, limit: 100 })).grants.length;
    const refused = shared.createGrant({
      keyId: id,
      granteePrincipal: BOB,
      operations: ["Sign", "Encrypt", "Verify", "GenerateMac"],
    });
    await expect(refused).rejects.toThrow(
      /^"operations" Encrypt, GenerateMac are not supported by a ECC_NIST_P256 key with key usage SIGN_VERIFY; a grant for it may allow Sign, Verify, GetPublicKey, CreateGrant, RetireGrant, DescribeKey$/,
    );
    expect((await shared.listGrants({ keyId: id, limit: 100 })).grants).toHaveLength(before);
  });

  test("property: a grant is created exactly when every operation is supported and it is not CreateGrant alone", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(
          ...KEY_TYPES.filter(([spec]) => spec !== "RSA_3072" && spec !== "RSA_4096"),
        ),
        fc.subarray([...GRANT_OPERATIONS], { minLength: 1 }),
        async ([spec, usage, kind], operations) => {
          const id = await keyOf(spec, usage);
          const before = (await shared.listGrants({ keyId: id, limit: 100 })).grants.length;
          const valid =
            operations.every((op) => supports(kind, op)) &&
            !(operations.length === 1 && operations[0] === "CreateGrant");
          const outcome = await shared
            .createGrant({ keyId: id, granteePrincipal: BOB, operations })
            .then(
              () => "created",
              (e: unknown) => (e instanceof ValidationError ? "refused" : e),
            );
          expect(outcome).toBe(valid ? "created" : "refused");
          const after = (await shared.listGrants({ keyId: id, limit: 100 })).grants.length;
          expect(after).toBe(valid ? before + 1 : before);
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe("createGrant: which operations, and who learns what", () => {
  test("CreateGrant alone is refused (AWS: grants must not contain only CreateGrant)", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["CreateGrant"] }),
    ).rejects.toThrow(/^"operations" must hold an operation besides CreateGrant$/);
    await expect(
      kms.createGrant({
        keyId,
        granteePrincipal: ALICE,
        operations: ["CreateGrant", "CreateGrant"],
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["CreateGrant", "Decrypt"] }),
    ).resolves.toBeDefined();
  });

  test("dryRun reports the invalid operation, not DryRunOperation", async () => {
    await expect(
      kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["Sign"], dryRun: true }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  test("a caller without kms:CreateGrant is denied before the key's spec is checked", async () => {
    const refused = kms.createGrant(
      { keyId, granteePrincipal: BOB, operations: ["Sign"] },
      as(ALICE),
    );
    await expect(refused).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(refused).rejects.not.toThrow(/SYMMETRIC_DEFAULT/);
  });

  test("a grantee with CreateGrant cannot hand on an operation the key does not support", async () => {
    const sign = (await kms.createKey({ keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" }))
      .keyMetadata.keyId;
    await kms.createGrant({
      keyId: sign,
      granteePrincipal: ALICE,
      operations: ["Sign", "CreateGrant"],
    });
    await expect(
      kms.createGrant({ keyId: sign, granteePrincipal: BOB, operations: ["Sign"] }, as(ALICE)),
    ).resolves.toBeDefined();
    await expect(
      kms.createGrant({ keyId: sign, granteePrincipal: BOB, operations: ["Encrypt"] }, as(ALICE)),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

describe("createGrant constraints", () => {
  const tenant = { encryptionContextSubset: { tenant: "a" } };

  // RSA_3072 and RSA_4096 behave as RSA_2048 here and are slow to generate.
  test.each(
    KEY_TYPES.filter(
      ([spec, , kind]) => kind !== "symmetric" && spec !== "RSA_3072" && spec !== "RSA_4096",
    ),
  )("refused on a %s %s key, even with DescribeKey alone", async (spec, usage, kind) => {
    const id = (await kms.createKey({ keySpec: spec, keyUsage: usage })).keyMetadata.keyId;
    for (const operations of [[...SUPPORTED[kind]], ["DescribeKey" as const]]) {
      const refused = kms.createGrant({
        keyId: id,
        granteePrincipal: ALICE,
        operations,
        constraints: { encryptionContextEquals: { tenant: "secret-tenant" } },
      });
      await expect(refused).rejects.toBeInstanceOf(ValidationError);
      await expect(refused).rejects.toThrow(
        new RegExp(
          `^"constraints" are not supported on a ${spec} key with key usage ${usage}: its operations${
            operations[0] === "DescribeKey"
              ? ""
              : ` \\(${escapeRegExp(SUPPORTED[kind].join(", "))}\\)`
          } take no encryption context`,
        ),
      );
      // The message names the rule, never the constraint's values.
      await expect(refused).rejects.not.toThrow(/secret-tenant/);
    }
    // Without constraints the same grant is fine.
    await expect(
      kms.createGrant({ keyId: id, granteePrincipal: ALICE, operations: ["DescribeKey"] }),
    ).resolves.toBeDefined();
    expect((await kms.listGrants({ keyId: id })).grants).toHaveLength(1);
  });

  test("accepted on a symmetric key with every operation, including DescribeKey, RetireGrant and CreateGrant", async () => {
    await expect(
      kms.createGrant({
        keyId,
        granteePrincipal: ALICE,
        operations: [...SUPPORTED.symmetric, ...ANY_KEY],
        constraints: tenant,
      }),
    ).resolves.toBeDefined();
  });

  test("Equals and Subset together are refused (AWS: more than one constraint), even an empty one", async () => {
    // The GrantConstraints type refuses both at once; untyped callers reach the runtime check.
    for (const constraints of [
      { encryptionContextEquals: { tenant: "a" }, encryptionContextSubset: { tenant: "a" } },
      { encryptionContextEquals: {}, encryptionContextSubset: { tenant: "a" } },
    ] as unknown as GrantConstraints[]) {
      await expect(
        kms.createGrant({ keyId, granteePrincipal: ALICE, operations: ["Encrypt"], constraints }),
      ).rejects.toThrow(
        /^"constraints" may hold encryptionContextEquals or encryptionContextSubset, not both$/,
      );
    }
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("a constraints object without a constraint is refused rather than granting without one", async () => {
    for (const constraints of [{}, { encryptionContextSubset: undefined }]) {
      await expect(
        kms.createGrant({
          keyId,
          granteePrincipal: ALICE,
          operations: ["Encrypt"],
          constraints: constraints as never,
        }),
      ).rejects.toThrow(
        /^"constraints" must hold encryptionContextEquals or encryptionContextSubset/,
      );
    }
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("the GrantConstraints type admits exactly one constraint (checked by tsc)", () => {
    const one: GrantConstraints[] = [
      { encryptionContextEquals: { tenant: "a" } },
      { encryptionContextSubset: { tenant: "a" } },
    ];
    // @ts-expect-error both constraints at once
    const both: GrantConstraints = { encryptionContextEquals: {}, encryptionContextSubset: {} };
    // @ts-expect-error neither constraint
    const neither: GrantConstraints = {};
    // @ts-expect-error an explicitly undefined constraint is not a constraint
    const undefinedOne: GrantConstraints = { encryptionContextSubset: undefined };
    expect([...one, both, neither, undefinedOne]).toHaveLength(5);
  });

  test("an empty Equals admits only calls without an encryption context", async () => {
    await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt"],
      constraints: { encryptionContextEquals: {} },
    });
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).resolves.toBeDefined();
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "a" } }, as(ALICE)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
  });

  const pairs = (n: number, valueLength = 1) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v".repeat(valueLength)]));

  test.each<[string, unknown, RegExp]>([
    ["a number value", { tenant: 7 }, /value for key "tenant" must be a string/],
    ["a null value", { tenant: null }, /value for key "tenant" must be a string/],
    ["an empty key", { "": "secret-value" }, /keys must not be empty/],
    ["a lone surrogate in a key", { "t\uD800": "a" }, /well-formed Unicode/],
    ["a lone surrogate in a value", { tenant: "secret\uDC00" }, /well-formed Unicode/],
    ["an array", ["tenant"], /expected an object, got/],
    ["a Map", new Map([["tenant", "a"]]), /must be a plain object/],
    ["9 pairs", pairs(9), /may hold at most 8 pairs, got 9/],
    [
      "385 characters",
      { tenant: "x".repeat(379) },
      /at most 384 characters of keys and values, got 385/,
    ],
  ])("refuses a constraint with %s, naming the argument", async (_name, context, message) => {
    for (const which of ["encryptionContextEquals", "encryptionContextSubset"] as const) {
      const refused = kms.createGrant({
        keyId,
        granteePrincipal: ALICE,
        operations: ["Encrypt"],
        constraints: { [which]: context } as never,
      });
      await expect(refused).rejects.toBeInstanceOf(ValidationError);
      await expect(refused).rejects.toThrow(message);
      await expect(refused).rejects.toThrow(new RegExp(`"constraints\\.${which}`));
      await expect(refused).rejects.not.toThrow(/secret/);
    }
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(0);
  });

  test("AWS's limits themselves are accepted: 8 pairs, 384 characters (a non-BMP character counts once)", async () => {
    for (const context of [pairs(8), { tenant: "x".repeat(378) }, { t: "😀".repeat(383) }]) {
      await expect(
        kms.createGrant({
          keyId,
          granteePrincipal: ALICE,
          operations: ["Encrypt"],
          constraints: { encryptionContextSubset: context },
        }),
      ).resolves.toBeDefined();
    }
  });
});

describe("grants stored before these checks still load and keep their meaning", () => {
  const LEGACY_ID = (n: number) => String(n).repeat(64).slice(0, 64);
  const legacy = (n: number, fields: Partial<StoredGrant>): StoredGrant => ({
    grantId: LEGACY_ID(n),
    granteePrincipal: ALICE,
    issuingPrincipal: "",
    operations: ["Sign"],
    createdAt: 0,
    ...fields,
  });

  /**
   * Writes grants into a key record as a release before these checks (and before record seals)
   * stored them, then opens the store the way such an upgrade does: `unsealedRecords: "seal"`.
   */
  async function storeWith(
    spec: KeySpec,
    usage: KeyUsage,
    grants: readonly StoredGrant[],
  ): Promise<{ kms: Kms; keyId: string }> {
    const store = new MemoryKeyStore();
    const rootKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const writer = await createKms({ store, rootKey });
    const id = (await writer.createKey({ keySpec: spec, keyUsage: usage })).keyMetadata.keyId;
    const { seal: _seal, ...record } = (await store.getKey(id))!;
    await store.updateKey({ ...record, grants, revision: record.revision + 1 });
    return { kms: await createKms({ store, rootKey, unsealedRecords: "seal" }), keyId: id };
  }

  test("the stored-JSON check accepts them (it checks shape, not the key's operations)", () => {
    const grants = [
      legacy(1, {}),
      legacy(2, {
        constraints: { encryptionContextEquals: { a: "1" }, encryptionContextSubset: { b: "2" } },
      }),
    ];
    expect(parseStoredGrants("k", JSON.stringify(grants))).toEqual(grants);
  });

  test("an unsupported operation stays listed, retirable and revocable, and authorizes nothing usable", async () => {
    const { kms: k, keyId: id } = await storeWith("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", [
      legacy(1, { operations: ["Sign", "Encrypt"], retiringPrincipal: RETIRER }),
      legacy(2, { operations: ["GenerateMac"] }),
    ]);
    const listed = await k.listGrants({ keyId: id });
    expect(listed.grants.map((g) => g.operations)).toEqual([["Sign", "Encrypt"], ["GenerateMac"]]);
    // Its supported operation works as before; the other fails as the operation itself does.
    await expect(k.encrypt({ keyId: id, plaintext }, as(ALICE))).resolves.toBeDefined();
    await expect(
      k.sign({ keyId: id, message: plaintext, signingAlgorithm: "ECDSA_SHA_256" }, as(ALICE)),
    ).rejects.toBeInstanceOf(InvalidKeyUsageError);
    // Recreating it is refused now; the stored one is untouched.
    await expect(
      k.createGrant({ keyId: id, granteePrincipal: ALICE, operations: ["Sign", "Encrypt"] }),
    ).rejects.toBeInstanceOf(ValidationError);
    await k.retireGrant({ keyId: id, grantId: LEGACY_ID(1) }, as(RETIRER));
    await k.revokeGrant({ keyId: id, grantId: LEGACY_ID(2) });
    expect((await k.listGrants({ keyId: id })).grants).toHaveLength(0);
  });

  test("a constraint on an asymmetric key is not applied, as AWS treats operations without a context", async () => {
    const { kms: k, keyId: id } = await storeWith("ECC_NIST_P256", "SIGN_VERIFY", [
      legacy(1, { operations: ["Sign"], constraints: { encryptionContextEquals: { t: "a" } } }),
    ]);
    await expect(
      k.sign({ keyId: id, message: plaintext, signingAlgorithm: "ECDSA_SHA_256" }, as(ALICE)),
    ).resolves.toBeDefined();
    expect((await k.listGrants({ keyId: id })).grants[0]?.constraints).toEqual({
      encryptionContextEquals: { t: "a" },
    });
  });

  test("a grant holding both constraints admits only contexts that satisfy both", async () => {
    const { kms: k, keyId: id } = await storeWith("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", [
      legacy(1, {
        operations: ["Encrypt"],
        constraints: {
          encryptionContextEquals: { tenant: "a", row: "7" },
          encryptionContextSubset: { tenant: "a" },
        },
      }),
    ]);
    const enc = (encryptionContext: Record<string, string>) =>
      k.encrypt({ keyId: id, plaintext, encryptionContext }, as(ALICE));
    await expect(enc({ tenant: "a", row: "7" })).resolves.toBeDefined();
    await expect(enc({ tenant: "a" })).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(enc({ tenant: "b", row: "7" })).rejects.toBeInstanceOf(AccessDeniedError);
  });
});

describe("retireGrant and an explicit Deny", () => {
  const denyRetire = (principal: string) =>
    JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "Admin",
          Effect: "Allow",
          Principal: { AWS: "arn:aws:iam::000000000000:root" },
          Action: "kms:*",
          Resource: "*",
        },
        {
          Sid: "NoRetiring",
          Effect: "Deny",
          Principal: { AWS: principal },
          Action: "kms:RetireGrant",
          Resource: "*",
        },
      ],
    });

  test("a key-policy Deny of kms:RetireGrant stops the grant's own retiring principal", async () => {
    const { grantToken, grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      retiringPrincipal: RETIRER,
      operations: ["Encrypt"],
    });
    await kms.putKeyPolicy({ keyId, policy: denyRetire(RETIRER) });
    const refused = kms.retireGrant({ grantToken }, as(RETIRER));
    await expect(refused).rejects.toBeInstanceOf(AccessDeniedError);
    await expect(refused).rejects.toThrow(/explicitly denied by statement \d+ \("NoRetiring"\)/);
    await expect(
      kms.retireGrant({ keyId, grantId, dryRun: true }, as(RETIRER)),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await kms.listGrants({ keyId })).grants).toHaveLength(1);
    await expect(kms.encrypt({ keyId, plaintext }, as(ALICE))).resolves.toBeDefined();
  });

  test("and the grantee whose grant includes RetireGrant", async () => {
    const { grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      operations: ["Encrypt", "RetireGrant"],
    });
    await kms.putKeyPolicy({ keyId, policy: denyRetire(ALICE) });
    await expect(kms.retireGrant({ keyId, grantId }, as(ALICE))).rejects.toBeInstanceOf(
      AccessDeniedError,
    );
    // A Deny naming someone else changes nothing for her.
    await kms.putKeyPolicy({ keyId, policy: denyRetire(BOB) });
    await expect(kms.retireGrant({ keyId, grantId }, as(ALICE))).resolves.toBeUndefined();
  });

  test("kms.explain answers retireGrant as retireGrant decides it, by grant id or token", async () => {
    const { grantToken, grantId } = await kms.createGrant({
      keyId,
      granteePrincipal: ALICE,
      retiringPrincipal: RETIRER,
      operations: ["Encrypt"],
    });
    const explain = (principal: string, request: object) =>
      kms.explain({ operation: "retireGrant", request, as: as(principal) });
    const actual = (principal: string) =>
      kms.retireGrant({ keyId, grantId, dryRun: true }, as(principal)).then(
        () => true,
        (e: unknown) => !(e instanceof AccessDeniedError),
      );
    for (const request of [{ keyId, grantId }, { grantToken }]) {
      const byRetirer = await explain(RETIRER, request);
      expect(byRetirer.allowed).toBe(true);
      expect(byRetirer.decisions[0]).toMatchObject({ reason: "grant-allow", grantId });
      // The grantee without RetireGrant in the grant, and a stranger, may not.
      expect((await explain(ALICE, request)).allowed).toBe(false);
      expect((await explain(BOB, request)).allowed).toBe(false);
    }
    for (const principal of [RETIRER, ALICE, BOB]) {
      expect((await explain(principal, { keyId, grantId })).allowed).toBe(await actual(principal));
    }
    // RetireGrant in Bob's own grant lets him retire that grant, not Alice's.
    const { grantId: bobsGrant } = await kms.createGrant({
      keyId,
      granteePrincipal: BOB,
      operations: ["Encrypt", "RetireGrant"],
    });
    expect((await explain(BOB, { keyId, grantId })).allowed).toBe(false);
    expect(await actual(BOB)).toBe(false);
    expect((await explain(BOB, { keyId, grantId: bobsGrant })).decisions[0]).toMatchObject({
      allowed: true,
      reason: "grant-allow",
      grantId: bobsGrant,
    });
    // An explicit Deny wins over the retiring principal, in explain as in the call.
    await kms.putKeyPolicy({ keyId, policy: denyRetire(RETIRER) });
    const denied = await explain(RETIRER, { grantToken });
    expect(denied.allowed).toBe(false);
    expect(denied.decisions[0]?.reason).toBe("explicit-deny");
    expect(await actual(RETIRER)).toBe(false);
  });
});
