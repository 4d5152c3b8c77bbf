/**
 * Model-based property test of the in-process Kms: random sequences of key-lifecycle, alias,
 * grant, policy, tag and cryptographic calls by random principals, each checked against a small
 * reference model of AWS KMS semantics as this package documents them (README "Key states" and
 * "Errors", docs/POLICY.md, src/key-state-table.ts's AWS sources).
 *
 * The model predicts, for every call, the set of outcomes it accepts: "ok" or AWS exception
 * names. A set has more than one member only where the documentation fixes no order between
 * two failures that both apply (a disabled key of the wrong usage: state or usage error first?),
 * so the model states only what the docs say. Check order where the docs do say it: validation,
 * then the key (NotFound), then authorization (AccessDenied, before any state error), then state.
 *
 * After every step, besides the outcome: decrypted bytes are the sealed ones, under the sealing
 * key and context only; a Disabled or PendingDeletion key performed no cryptography; a
 * successful call was not explicitly denied; no retired or revoked grant authorized it; the
 * audit trail holds exactly one new event for the call, naming its operation, principal and
 * outcome, and verifies. Each run ends by decrypting every ciphertext it made (so ciphertexts
 * made before rotations, and under keys since destroyed, are all tried again).
 *
 * Seeded: KMS_PROPERTY_SEED replays another run; fast-check reports seed and path on failure.
 */
import {
  type CreateKeyRequest,
  createKms,
  DAY_MS,
  type EncryptionContext,
  type GrantOperation,
  isKmsError,
  type Kms,
  verifyAuditLog,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import fc from "fast-check";
import { describe, expect, test } from "vitest";

const SEED = Number(process.env.KMS_PROPERTY_SEED ?? 20_261_204) >>> 0;
const RUNS = 150;
/** Steps between full verifications of the audit trail (each step checks its own event). */
const VERIFY_EVERY = 8;
// Shrinking replays the failing sequence many times.
const PROPERTY_TIMEOUT = 120_000;

const ACCOUNT = "000000000000";
const ROOT = `arn:aws:iam::${ACCOUNT}:root`;
const CAROL = `arn:aws:iam::${ACCOUNT}:user/carol`; // own account: the default policy allows her
const ALICE = "arn:aws:iam::111122223333:user/alice"; // another account: only policy or grants
const BOB = "arn:aws:iam::111122223333:user/bob";
const PRINCIPALS = [ROOT, CAROL, ALICE, BOB] as const;
type Principal = (typeof PRINCIPALS)[number];
const OWN_ACCOUNT: ReadonlySet<string> = new Set([ROOT, CAROL]);

const ALIASES = ["alias/app", "alias/db", "alias/x"] as const;
const MISSING_KEY_ID = "00000000-0000-4000-8000-000000000000";
const keyArnOf = (keyId: string) => `arn:aws:kms:local:${ACCOUNT}:key/${keyId}`;

const CONTEXTS: readonly EncryptionContext[] = [
  {},
  { tenant: "a" },
  { tenant: "b" },
  { tenant: "a", purpose: "x" },
  { tenant: "blocked" },
];

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

type Kind = "symmetric" | "hmac" | "ecc-sign" | "rsa-encrypt" | "rsa-sign";
const KINDS: Record<Kind, CreateKeyRequest> = {
  symmetric: { keySpec: "SYMMETRIC_DEFAULT", keyUsage: "ENCRYPT_DECRYPT" },
  hmac: { keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" },
  "ecc-sign": { keySpec: "ECC_NIST_P256", keyUsage: "SIGN_VERIFY" },
  "rsa-encrypt": { keySpec: "RSA_2048", keyUsage: "ENCRYPT_DECRYPT" },
  "rsa-sign": { keySpec: "RSA_2048", keyUsage: "SIGN_VERIFY" },
};
const SIGNING_ALGORITHM = {
  "ecc-sign": "ECDSA_SHA_256",
  "rsa-sign": "RSASSA_PKCS1_V1_5_SHA_256",
} as const;

/** Grant operations AWS allows on each key type (CreateGrant: others are a ValidationException). */
const GRANT_OPS: Record<Kind, readonly GrantOperation[]> = {
  symmetric: [
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "RetireGrant",
  ],
  hmac: ["GenerateMac", "VerifyMac", "DescribeKey", "RetireGrant"],
  "ecc-sign": ["Sign", "Verify", "GetPublicKey", "DescribeKey", "RetireGrant"],
  "rsa-sign": ["Sign", "Verify", "GetPublicKey", "DescribeKey", "RetireGrant"],
  "rsa-encrypt": [
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GetPublicKey",
    "DescribeKey",
    "RetireGrant",
  ],
};

type State = "Enabled" | "Disabled" | "PendingDeletion" | "Destroyed";
type Code = string; // "ok" or an AWS exception name
type Row = Readonly<Record<Exclude<State, "Destroyed">, Code>>;

/** AWS's key state table, the rows this test needs (README "Key states"). */
const CRYPTO: Row = {
  Enabled: "ok",
  Disabled: "DisabledException",
  PendingDeletion: "KMSInvalidStateException",
};
const MANAGE: Row = { Enabled: "ok", Disabled: "ok", PendingDeletion: "KMSInvalidStateException" };
const ALWAYS: Row = { Enabled: "ok", Disabled: "ok", PendingDeletion: "ok" };
const CANCEL: Row = {
  Enabled: "KMSInvalidStateException",
  Disabled: "KMSInvalidStateException",
  PendingDeletion: "ok",
};
/** ReEncrypt's source key: pending deletion still decrypts (AWS footnote [10]). */
const REENCRYPT_SOURCE: Row = {
  Enabled: "ok",
  Disabled: "DisabledException",
  PendingDeletion: "ok",
};

type PolicyName = "default" | "denyCarol" | "aliceCrypto" | "aliceAllButDecrypt" | "denyBlocked";
const POLICY_NAMES: readonly PolicyName[] = [
  "default",
  "denyCarol",
  "aliceCrypto",
  "aliceAllButDecrypt",
  "denyBlocked",
];
const ADMIN = {
  Sid: "Admin",
  Effect: "Allow",
  Principal: { AWS: ROOT },
  Action: "kms:*",
  Resource: "*",
};
const ALICE_CRYPTO_ACTIONS = [
  "kms:Encrypt",
  "kms:Decrypt",
  "kms:ReEncrypt*",
  "kms:GenerateDataKey*",
  "kms:Sign",
  "kms:Verify",
  "kms:GenerateMac",
  "kms:VerifyMac",
  "kms:GetPublicKey",
  "kms:DescribeKey",
];
const POLICIES: Record<PolicyName, string> = {
  default: JSON.stringify({ Version: "2012-10-17", Statement: [ADMIN] }),
  denyCarol: JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      ADMIN,
      {
        Sid: "DenyCarol",
        Effect: "Deny",
        Principal: { AWS: CAROL },
        Action: "kms:*",
        Resource: "*",
      },
    ],
  }),
  aliceCrypto: JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      ADMIN,
      { Effect: "Allow", Principal: { AWS: ALICE }, Action: ALICE_CRYPTO_ACTIONS, Resource: "*" },
    ],
  }),
  aliceAllButDecrypt: JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      ADMIN,
      { Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:*", Resource: "*" },
      { Effect: "Deny", Principal: { AWS: ALICE }, Action: "kms:Decrypt", Resource: "*" },
    ],
  }),
  denyBlocked: JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      ADMIN,
      {
        Effect: "Deny",
        Principal: "*",
        Action: ["kms:Encrypt", "kms:GenerateDataKey"],
        Resource: "*",
        Condition: { StringEquals: { "kms:EncryptionContext:tenant": "blocked" } },
      },
    ],
  }),
};

/** What a key policy alone says about `action` for `principal` (docs/POLICY.md "Evaluation"). */
function policyDecision(
  policy: PolicyName,
  principal: string,
  action: string,
  context: EncryptionContext | undefined,
): "deny" | "allow" | "none" {
  const own = OWN_ACCOUNT.has(principal); // an account root stands for its whole account
  switch (policy) {
    case "default":
      return own ? "allow" : "none";
    case "denyCarol":
      return principal === CAROL ? "deny" : own ? "allow" : "none";
    case "aliceCrypto":
      if (own) return "allow";
      return principal === ALICE && aliceCryptoAllows(action) ? "allow" : "none";
    case "aliceAllButDecrypt":
      if (principal === ALICE && action === "kms:Decrypt") return "deny";
      return own || principal === ALICE ? "allow" : "none";
    case "denyBlocked":
      if (
        (action === "kms:Encrypt" || action === "kms:GenerateDataKey") &&
        context?.tenant === "blocked"
      ) {
        return "deny";
      }
      return own ? "allow" : "none";
  }
}

function aliceCryptoAllows(action: string): boolean {
  return ALICE_CRYPTO_ACTIONS.some((a) =>
    a.endsWith("*") ? action.startsWith(a.slice(0, -1)) : a === action,
  );
}

interface ModelGrant {
  readonly grantId: string;
  readonly grantToken: string;
  readonly keyId: string;
  readonly grantee: string;
  readonly retiring: string | undefined;
  readonly operations: readonly string[];
  readonly equals: EncryptionContext | undefined;
  readonly subset: EncryptionContext | undefined;
  live: boolean;
}

interface ModelKey {
  readonly keyId: string;
  readonly kind: Kind;
  state: State;
  deletionAt: number | undefined;
  policy: PolicyName;
  onDemandRotations: number;
  rotations: number;
}

interface Sealed {
  readonly blob: Uint8Array;
  readonly keyId: string;
  readonly context: EncryptionContext;
  readonly plaintext: Uint8Array;
  readonly rsa: boolean;
  /** The key's rotation count when sealed: decrypting after a later rotation is the point. */
  readonly rotationsAtSeal: number;
}

interface Tagged {
  readonly keyId: string;
  readonly message: Uint8Array;
  readonly value: Uint8Array;
}

const sameContext = (a: EncryptionContext, b: EncryptionContext) =>
  JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

/** Grant constraints: keys case-insensitive, values exact (all keys here are lower case). */
function constraintsHold(grant: ModelGrant, context: EncryptionContext | undefined): boolean {
  const actual = context ?? {};
  if (grant.equals !== undefined && !sameContext(grant.equals, actual)) return false;
  if (grant.subset !== undefined) {
    return Object.entries(grant.subset).every(([k, v]) => actual[k] === v);
  }
  return true;
}

const EC_ACTIONS = new Set([
  "kms:Encrypt",
  "kms:Decrypt",
  "kms:ReEncryptFrom",
  "kms:ReEncryptTo",
  "kms:GenerateDataKey",
  "kms:GenerateDataKeyWithoutPlaintext",
]);

class Model {
  readonly keys: ModelKey[] = [];
  readonly aliases = new Map<string, string>();
  readonly grants: ModelGrant[] = [];
  readonly sealed: Sealed[] = [];
  readonly macs: Tagged[] = [];
  readonly signatures: Tagged[] = [];

  key(keyId: string): ModelKey | undefined {
    return this.keys.find((k) => k.keyId === keyId);
  }

  /** Explicit Deny first; then a policy Allow or a live grant whose constraints hold. */
  authorized(
    key: ModelKey,
    principal: string,
    action: string,
    context: EncryptionContext | undefined,
  ): boolean {
    const decision = policyDecision(key.policy, principal, action, context);
    if (decision !== "none") return decision === "allow";
    const operation = action.slice("kms:".length);
    const takesContext = EC_ACTIONS.has(action) && key.kind === "symmetric";
    return this.grants.some(
      (g) =>
        g.live &&
        g.keyId === key.keyId &&
        g.grantee === principal &&
        g.operations.includes(operation) &&
        (!takesContext || constraintsHold(g, context)),
    );
  }

  /** The clock moved: keys past their deletion window are gone, with their aliases. */
  expire(now: number): void {
    for (const key of this.keys) {
      if (
        key.state === "PendingDeletion" &&
        key.deletionAt !== undefined &&
        now >= key.deletionAt
      ) {
        key.state = "Destroyed";
        key.deletionAt = undefined;
        for (const [name, target] of this.aliases) {
          if (target !== key.keyId) continue;
          this.aliases.delete(name);
          cover("alias gone with its key");
        }
      }
    }
  }
}

/**
 * The usual checks on one key, in the documented order: exists, authorized, then state and
 * usage (no documented order between those two, so either is accepted). Undefined = passes.
 */
function keyChecks(
  model: Model,
  key: ModelKey | undefined,
  check: {
    readonly principal: string;
    readonly action: string;
    readonly context?: EncryptionContext | undefined;
    readonly row: Row;
    readonly usable?: boolean;
    readonly usageError?: Code;
  },
): Code[] | undefined {
  if (key === undefined || key.state === "Destroyed") return ["NotFoundException"];
  if (!model.authorized(key, check.principal, check.action, check.context)) {
    return ["AccessDeniedException"];
  }
  const stage: Code[] = [];
  const state = check.row[key.state];
  if (state !== "ok") stage.push(state);
  if (check.usable === false) stage.push(check.usageError ?? "InvalidKeyUsageException");
  return stage.length > 0 ? stage : undefined;
}

/** A call that would succeed answers DryRunOperationException under dryRun, changing nothing. */
function dryRunOutcome(dryRun: boolean, failure: Code[] | undefined): Code[] {
  if (failure !== undefined) return failure;
  return dryRun ? ["DryRunOperationException"] : ["ok"];
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

type Form = "id" | "arn" | "alias" | "aliasArn" | "missing";
interface Ref {
  readonly i: number;
  readonly form: Form;
  /** Pick among the keys an operation can use (so that sequences reach success often). */
  readonly fit: boolean;
}

/**
 * The operations that manage a key (EnableKey, DisableKey, ScheduleKeyDeletion,
 * CancelKeyDeletion, EnableKeyRotation, RotateKeyOnDemand, PutKeyPolicy, TagResource,
 * CreateGrant…) take a key id or key ARN only, as in AWS: an alias (name or ARN) is
 * NotFoundException, whatever it points to.
 */
const byAlias = (ref: Ref): boolean => ref.form === "alias" || ref.form === "aliasArn";

type Command =
  | { readonly t: "createKey"; readonly p: Principal; readonly kind: Kind }
  | { readonly t: "setEnabled"; readonly p: Principal; readonly k: Ref; readonly enable: boolean }
  | {
      readonly t: "scheduleDeletion";
      readonly p: Principal;
      readonly k: Ref;
      readonly days: number;
    }
  | { readonly t: "cancelDeletion"; readonly p: Principal; readonly k: Ref }
  | { readonly t: "advance"; readonly hours: number }
  | { readonly t: "maintenance" }
  | { readonly t: "rotate"; readonly p: Principal; readonly k: Ref; readonly auto: boolean }
  | {
      readonly t: "alias";
      readonly p: Principal;
      readonly action: "create" | "update" | "delete";
      readonly name: number;
      readonly k: Ref;
    }
  | {
      readonly t: "createGrant";
      readonly p: Principal;
      readonly k: Ref;
      readonly grantee: Principal;
      readonly retiring: Principal | undefined;
      readonly ops: number;
      readonly constraint: 0 | 1 | 2;
      readonly ctx: number;
      readonly dryRun: boolean;
    }
  | {
      readonly t: "retireGrant";
      readonly p: Principal;
      readonly g: number;
      readonly byToken: boolean;
      readonly dryRun: boolean;
    }
  | {
      readonly t: "revokeGrant";
      readonly p: Principal;
      readonly g: number;
      readonly dryRun: boolean;
    }
  | { readonly t: "putPolicy"; readonly p: Principal; readonly k: Ref; readonly policy: PolicyName }
  | { readonly t: "tag"; readonly p: Principal; readonly k: Ref; readonly reserved: boolean }
  | { readonly t: "describe"; readonly p: Principal; readonly k: Ref }
  | { readonly t: "listAliases"; readonly p: Principal }
  | {
      readonly t: "encrypt";
      readonly p: Principal;
      readonly k: Ref;
      readonly ctx: number;
      readonly rsa: boolean;
      readonly tokens: 0 | 1 | 2;
      readonly dryRun: boolean;
    }
  | { readonly t: "generateDataKey"; readonly p: Principal; readonly k: Ref; readonly ctx: number }
  | {
      readonly t: "decrypt";
      readonly p: Principal;
      readonly c: number;
      readonly wrongContext: number;
      readonly hint: Ref | undefined;
    }
  | {
      readonly t: "reEncrypt";
      readonly p: Principal;
      readonly c: number;
      readonly wrongContext: number;
      readonly k: Ref;
      readonly ctx: number;
    }
  | { readonly t: "transplant"; readonly p: Principal; readonly c: number; readonly k: Ref }
  | { readonly t: "generateMac"; readonly p: Principal; readonly k: Ref }
  | {
      readonly t: "verifyMac";
      readonly p: Principal;
      readonly m: number;
      readonly mode: "same" | "tampered" | "otherKey";
      readonly k: Ref;
    }
  | { readonly t: "sign"; readonly p: Principal; readonly k: Ref }
  | {
      readonly t: "verify";
      readonly p: Principal;
      readonly s: number;
      readonly mode: "same" | "tampered" | "otherKey";
      readonly k: Ref;
    }
  | { readonly t: "getPublicKey"; readonly p: Principal; readonly k: Ref };

const principalArb: fc.Arbitrary<Principal> = fc.oneof(
  { arbitrary: fc.constant(ROOT), weight: 8 },
  { arbitrary: fc.constant(CAROL), weight: 2 },
  { arbitrary: fc.constant(ALICE), weight: 3 },
  { arbitrary: fc.constant(BOB), weight: 1 },
);
const refArb: fc.Arbitrary<Ref> = fc.record({
  i: fc.nat(15),
  fit: fc.oneof(
    { arbitrary: fc.constant(true), weight: 3 },
    { arbitrary: fc.constant(false), weight: 1 },
  ),
  form: fc.oneof(
    { arbitrary: fc.constant<Form>("id"), weight: 6 },
    { arbitrary: fc.constant<Form>("arn"), weight: 2 },
    { arbitrary: fc.constant<Form>("alias"), weight: 2 },
    { arbitrary: fc.constant<Form>("aliasArn"), weight: 1 },
    { arbitrary: fc.constant<Form>("missing"), weight: 1 },
  ),
});
const kindArb: fc.Arbitrary<Kind> = fc.oneof(
  { arbitrary: fc.constant<Kind>("symmetric"), weight: 5 },
  { arbitrary: fc.constant<Kind>("hmac"), weight: 2 },
  { arbitrary: fc.constant<Kind>("ecc-sign"), weight: 2 },
  { arbitrary: fc.constant<Kind>("rsa-encrypt"), weight: 1 },
  { arbitrary: fc.constant<Kind>("rsa-sign"), weight: 1 },
);
const ctxArb = fc.nat(CONTEXTS.length - 1);
/** dryRun (docs/POLICY.md): every check, then DryRunOperationException instead of success. */
const dryRunArb = fc.oneof(
  { arbitrary: fc.constant(false), weight: 9 },
  { arbitrary: fc.constant(true), weight: 1 },
);
const tamperArb = fc.constantFrom("same" as const, "tampered" as const, "otherKey" as const);

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    arbitrary: fc.record({ t: fc.constant("createKey" as const), p: principalArb, kind: kindArb }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("setEnabled" as const),
      p: principalArb,
      k: refArb,
      enable: fc.boolean(),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("scheduleDeletion" as const),
      p: principalArb,
      k: refArb,
      days: fc.oneof(
        { arbitrary: fc.integer({ min: 7, max: 30 }), weight: 9 },
        { arbitrary: fc.constantFrom(6, 31), weight: 1 },
      ),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({ t: fc.constant("cancelDeletion" as const), p: principalArb, k: refArb }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      hours: fc.integer({ min: 1, max: 40 * 24 }),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ t: fc.constant("maintenance" as const) }), weight: 1 },
  {
    arbitrary: fc.record({
      t: fc.constant("rotate" as const),
      p: principalArb,
      k: refArb,
      auto: fc.boolean(),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("alias" as const),
      p: principalArb,
      action: fc.oneof(
        { arbitrary: fc.constant("create" as const), weight: 3 },
        { arbitrary: fc.constant("update" as const), weight: 2 },
        { arbitrary: fc.constant("delete" as const), weight: 1 },
      ),
      // ALIASES.length stands for a name under the reserved alias/aws/ prefix
      name: fc.oneof(
        { arbitrary: fc.nat(ALIASES.length - 1), weight: 12 },
        { arbitrary: fc.constant(ALIASES.length), weight: 1 },
      ),
      k: refArb,
    }),
    weight: 6,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("createGrant" as const),
      p: principalArb,
      k: refArb,
      grantee: principalArb,
      retiring: fc.option(principalArb, { nil: undefined }),
      ops: fc.nat(255),
      constraint: fc.constantFrom(0 as const, 1 as const, 2 as const),
      ctx: ctxArb,
      dryRun: dryRunArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("retireGrant" as const),
      p: principalArb,
      g: fc.nat(),
      byToken: fc.boolean(),
      dryRun: dryRunArb,
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("revokeGrant" as const),
      p: principalArb,
      g: fc.nat(),
      dryRun: dryRunArb,
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("putPolicy" as const),
      p: principalArb,
      k: refArb,
      policy: fc.constantFrom(...POLICY_NAMES),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("tag" as const),
      p: principalArb,
      k: refArb,
      reserved: fc.boolean(),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ t: fc.constant("describe" as const), p: principalArb, k: refArb }),
    weight: 1,
  },
  { arbitrary: fc.record({ t: fc.constant("listAliases" as const), p: principalArb }), weight: 2 },
  {
    arbitrary: fc.record({
      t: fc.constant("encrypt" as const),
      p: principalArb,
      k: refArb,
      ctx: ctxArb,
      rsa: fc.boolean(),
      tokens: fc.oneof(
        { arbitrary: fc.constant(0 as const), weight: 5 },
        { arbitrary: fc.constant(1 as const), weight: 4 },
        { arbitrary: fc.constant(2 as const), weight: 1 },
      ),
      dryRun: dryRunArb,
    }),
    weight: 6,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("generateDataKey" as const),
      p: principalArb,
      k: refArb,
      ctx: ctxArb,
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("decrypt" as const),
      p: principalArb,
      c: fc.nat(),
      wrongContext: fc.oneof(
        { arbitrary: fc.constant(0), weight: 3 },
        { arbitrary: fc.integer({ min: 1, max: CONTEXTS.length - 1 }), weight: 1 },
      ),
      hint: fc.option(refArb, { nil: undefined }),
    }),
    weight: 6,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("reEncrypt" as const),
      p: principalArb,
      c: fc.nat(),
      wrongContext: fc.oneof(
        { arbitrary: fc.constant(0), weight: 3 },
        { arbitrary: fc.integer({ min: 1, max: CONTEXTS.length - 1 }), weight: 1 },
      ),
      k: refArb,
      ctx: ctxArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("transplant" as const),
      p: principalArb,
      c: fc.nat(),
      k: refArb,
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ t: fc.constant("generateMac" as const), p: principalArb, k: refArb }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("verifyMac" as const),
      p: principalArb,
      m: fc.nat(),
      mode: tamperArb,
      k: refArb,
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({ t: fc.constant("sign" as const), p: principalArb, k: refArb }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      t: fc.constant("verify" as const),
      p: principalArb,
      s: fc.nat(),
      mode: tamperArb,
      k: refArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ t: fc.constant("getPublicKey" as const), p: principalArb, k: refArb }),
    weight: 1,
  },
);

// ---------------------------------------------------------------------------------------------
// Runner: one Kms and one model per command sequence
// ---------------------------------------------------------------------------------------------

type Outcome<T> = { readonly code: "ok"; readonly value: T } | { readonly code: Code };

/** Which expectations were reached across all runs (a model that never says "ok" tests little). */
const coverage = new Map<string, number>();
const cover = (what: string) => coverage.set(what, (coverage.get(what) ?? 0) + 1);

const uuidBytes = (keyId: string) => Uint8Array.from(Buffer.from(keyId.replaceAll("-", ""), "hex"));

class Run {
  readonly model = new Model();
  readonly log: string[] = [];
  calls = 0;
  /** DeleteKey and RotateKey events: work the KMS did on its own inside the calls made. */
  internalEvents = 0;
  /** Keys a DeleteKey event named: a key is destroyed, and so recorded, once. */
  readonly recordedDestroyed = new Set<string>();
  step = 0;
  auditHead: { sequence: number; hash: string } | undefined;
  plaintextCounter = 0;

  readonly kms: Kms;
  readonly clock: ManualClock;

  constructor(kms: Kms, clock: ManualClock) {
    this.kms = kms;
    this.clock = clock;
  }

  /** Argument for a key reference, and the model's key it names (undefined: no such key). */
  resolve(ref: Ref, fits?: (key: ModelKey) => boolean): { arg: string; key: ModelKey | undefined } {
    const all = this.model.keys;
    const fitting = fits === undefined || !ref.fit ? all : all.filter(fits);
    const keys = fitting.length > 0 ? fitting : all;
    if (ref.form === "missing" || keys.length === 0) return { arg: MISSING_KEY_ID, key: undefined };
    if (ref.form === "alias" || ref.form === "aliasArn") {
      const name = ALIASES[ref.i % ALIASES.length]!;
      const target = this.model.aliases.get(name);
      const arg = ref.form === "alias" ? name : `arn:aws:kms:local:${ACCOUNT}:${name}`;
      return { arg, key: target === undefined ? undefined : this.model.key(target) };
    }
    const key = keys[ref.i % keys.length]!;
    return { arg: ref.form === "arn" ? keyArnOf(key.keyId) : key.keyId, key };
  }

  freshPlaintext(): Uint8Array {
    this.plaintextCounter++;
    return new TextEncoder().encode(`plaintext #${this.plaintextCounter} of step ${this.step}`);
  }

  /**
   * Performs one Kms call and checks what every call must satisfy: its outcome is one the model
   * accepts, and the trail gained exactly one event for it that names the operation, the
   * principal and the outcome, decided by no dead grant, and verifies. Before it, the trail may
   * hold what the KMS did on its own during the call: a DeleteKey event per key it destroyed
   * (one the model has past its deletion window), a RotateKey event per automatic rotation.
   */
  async call<T>(
    operation: string,
    principal: string,
    expected: readonly Code[],
    perform: () => Promise<T>,
  ): Promise<Outcome<T>> {
    const deadGrants = new Set(this.model.grants.filter((g) => !g.live).map((g) => g.grantId));
    let outcome: Outcome<T>;
    try {
      outcome = { code: "ok", value: await perform() };
    } catch (error) {
      if (!isKmsError(error)) throw error;
      outcome = { code: error.code };
      if (!expected.includes(error.code)) this.log.push(`  ${error.message}`);
    }
    this.calls++;
    const label = `step ${this.step} ${operation} as ${principal}\n${this.log.join("\n")}`;
    expect(expected, label).toContain(outcome.code);
    cover(`${operation}: ${outcome.code}`);

    // Only the events after the last one checked: re-reading the whole trail every step would
    // make a run quadratic. The links checked here chain into one verified trail; the full
    // kms.audit.verify() runs every VERIFY_EVERY steps and at the end of every run.
    const events = await this.kms.audit.events(
      this.auditHead === undefined ? {} : { after: this.auditHead.sequence },
    );
    const event = events.at(-1)!;
    const internal = events.slice(0, -1);
    expect(events.length, `${label}\none audit event per call`).toBeGreaterThanOrEqual(1);
    for (const done of internal) {
      expect(["DeleteKey", "RotateKey"], `${label}\none audit event per call`).toContain(
        done.eventName,
      );
      // The KMS's own work: CloudTrail names no principal for a service event.
      expect(done.userIdentity, label).toStrictEqual({
        accountId: ACCOUNT,
        invokedBy: "AWS Internal",
      });
      expect(done.errorCode, label).toBeUndefined();
      expect(done.requestID, `${label}\nthe request id of the call it happened in`).toBe(
        event.requestID,
      );
      expect(done.resources, label).toHaveLength(1);
      const keyId = done.resources[0]!.ARN.split("/").at(-1)!;
      const key = this.model.key(keyId);
      if (done.eventName === "DeleteKey") {
        expect(key?.state, `${label}\ndestroyed before its deletion date`).toBe("Destroyed");
        expect(this.recordedDestroyed.has(keyId), `${label}\ndestroyed twice`).toBe(false);
        this.recordedDestroyed.add(keyId);
        cover("DeleteKey recorded");
      } else {
        expect(key?.kind, `${label}\nrotated automatically`).toBe("symmetric");
        cover("RotateKey recorded");
      }
    }
    this.internalEvents += internal.length;
    expect(event.eventName, label).toBe(operation.charAt(0).toUpperCase() + operation.slice(1));
    expect(event.userIdentity.arn, label).toBe(principal);
    expect(event.errorCode, label).toBe(outcome.code === "ok" ? undefined : outcome.code);
    const decisions = (event.additionalEventData?.authorization ?? []) as readonly {
      decision: string;
      grantId?: string;
    }[];
    for (const d of decisions) {
      if (d.grantId !== undefined) {
        expect(deadGrants.has(d.grantId), `${label}\na retired or revoked grant authorized`).toBe(
          false,
        );
      }
    }
    const link = verifyAuditLog(events, {
      ...(this.auditHead === undefined
        ? {}
        : { from: { sequence: this.auditHead.sequence + 1, prevHash: this.auditHead.hash } }),
      expectedHead: { sequence: event.sequence, hash: event.hash },
    });
    expect(link, label).toMatchObject({ ok: true });
    expect(await this.kms.audit.head(), label).toEqual({
      sequence: event.sequence,
      hash: event.hash,
    });
    this.auditHead = { sequence: event.sequence, hash: event.hash };
    if (this.calls % VERIFY_EVERY === 0) await this.verifyTrail(label);
    return outcome;
  }

  /**
   * The whole trail verifies against its head and holds one event per call made, and one per
   * destruction or automatic rotation.
   */
  async verifyTrail(label: string): Promise<void> {
    const verification = await this.kms.audit.verify();
    expect(verification, label).toMatchObject({
      ok: true,
      count: this.calls + this.internalEvents,
    });
  }

  /** Invariants of every successful call that used keys, beyond the model's outcome. */
  assertMayUse(
    key: ModelKey,
    principal: string,
    action: string,
    context: EncryptionContext | undefined,
    states: readonly State[] = ["Enabled"],
  ): void {
    const label = `step ${this.step} ${action} on ${key.keyId} as ${principal}`;
    expect(states, `${label}: a ${key.state} key performed cryptography`).toContain(key.state);
    expect(
      policyDecision(key.policy, principal, action, context),
      `${label}: succeeded against an explicit Deny`,
    ).not.toBe("deny");
  }

  async run(command: Command): Promise<void> {
    this.step++;
    this.log.push(`${this.step}: ${JSON.stringify(command)}`);
    const m = this.model;
    switch (command.t) {
      case "createKey": {
        const expected = OWN_ACCOUNT.has(command.p) ? ["ok"] : ["AccessDeniedException"];
        const r = await this.call("createKey", command.p, expected, () =>
          this.kms.createKey(KINDS[command.kind], { principal: command.p }),
        );
        if (r.code === "ok" && "value" in r) {
          m.keys.push({
            keyId: r.value.keyMetadata.keyId,
            kind: command.kind,
            state: "Enabled",
            deletionAt: undefined,
            policy: "default",
            onDemandRotations: 0,
            rotations: 0,
          });
        }
        return;
      }
      case "setEnabled": {
        const { arg, key } = this.resolve(command.k);
        const action = command.enable ? "kms:EnableKey" : "kms:DisableKey";
        const expected = byAlias(command.k)
          ? ["NotFoundException"]
          : (keyChecks(m, key, { principal: command.p, action, row: MANAGE }) ?? ["ok"]);
        const operation = command.enable ? "enableKey" : "disableKey";
        const r = await this.call(operation, command.p, expected, () =>
          this.kms[operation]({ keyId: arg }, { principal: command.p }),
        );
        if (r.code === "ok") key!.state = command.enable ? "Enabled" : "Disabled";
        return;
      }
      case "scheduleDeletion": {
        // Mostly keys with aliases: their aliases must go when the key does.
        const { arg, key } = this.resolve(command.k, (k) =>
          [...m.aliases.values()].includes(k.keyId),
        );
        const expected =
          command.days < 7 || command.days > 30
            ? ["ValidationException"]
            : byAlias(command.k)
              ? ["NotFoundException"]
              : (keyChecks(m, key, {
                  principal: command.p,
                  action: "kms:ScheduleKeyDeletion",
                  row: MANAGE,
                }) ?? ["ok"]);
        const r = await this.call("scheduleKeyDeletion", command.p, expected, () =>
          this.kms.scheduleKeyDeletion(
            { keyId: arg, pendingWindowInDays: command.days },
            { principal: command.p },
          ),
        );
        if (r.code === "ok" && "value" in r) {
          key!.state = "PendingDeletion";
          key!.deletionAt = this.clock.now() + command.days * DAY_MS;
          expect(r.value.deletionDate.getTime()).toBe(key!.deletionAt);
        }
        return;
      }
      case "cancelDeletion": {
        const { arg, key } = this.resolve(command.k);
        const expected = byAlias(command.k)
          ? ["NotFoundException"]
          : (keyChecks(m, key, {
              principal: command.p,
              action: "kms:CancelKeyDeletion",
              row: CANCEL,
            }) ?? ["ok"]);
        const r = await this.call("cancelKeyDeletion", command.p, expected, () =>
          this.kms.cancelKeyDeletion({ keyId: arg }, { principal: command.p }),
        );
        if (r.code === "ok") {
          key!.state = "Disabled"; // AWS: a cancelled deletion leaves the key Disabled
          key!.deletionAt = undefined;
        }
        return;
      }
      case "advance": {
        this.clock.advance(command.hours * 3_600_000);
        m.expire(this.clock.now());
        return;
      }
      case "maintenance": {
        await this.call("runMaintenance", ROOT, ["ok"], () => this.kms.runMaintenance());
        return;
      }
      case "rotate": {
        const { arg, key } = this.resolve(command.k);
        const action = command.auto ? "kms:EnableKeyRotation" : "kms:RotateKeyOnDemand";
        let expected = byAlias(command.k)
          ? ["NotFoundException"]
          : keyChecks(m, key, {
              principal: command.p,
              action,
              row: CRYPTO,
              usable: key?.kind === "symmetric",
              usageError: "UnsupportedOperationException",
            });
        if (expected === undefined && !command.auto && key!.onDemandRotations >= 25) {
          expected = ["LimitExceededException"];
        }
        const operation = command.auto ? "enableKeyRotation" : "rotateKeyOnDemand";
        const r = await this.call<unknown>(operation, command.p, expected ?? ["ok"], () =>
          command.auto
            ? this.kms.enableKeyRotation(
                { keyId: arg, rotationPeriodInDays: 90 },
                { principal: command.p },
              )
            : this.kms.rotateKeyOnDemand({ keyId: arg }, { principal: command.p }),
        );
        if (r.code === "ok" && !command.auto) {
          key!.onDemandRotations++;
          key!.rotations++;
        }
        if (r.code === "ok" && command.auto) {
          // Automatic rotation happens on use after 90 days; count it as possibly rotated.
          key!.rotations++;
        }
        return;
      }
      case "alias":
        return this.alias(command);
      case "createGrant":
        return this.createGrant(command);
      case "retireGrant":
      case "revokeGrant":
        return this.endGrant(command);
      case "putPolicy": {
        const { arg, key } = this.resolve(command.k, ({ kind }) => kind === "symmetric");
        let expected = byAlias(command.k)
          ? ["NotFoundException"]
          : keyChecks(m, key, {
              principal: command.p,
              action: "kms:PutKeyPolicy",
              row: ALWAYS,
            });
        // Lockout safety check: the new policy must still let the caller change it.
        if (
          expected === undefined &&
          policyDecision(command.policy, command.p, "kms:PutKeyPolicy", undefined) !== "allow"
        ) {
          expected = ["MalformedPolicyDocumentException"];
        }
        const r = await this.call("putKeyPolicy", command.p, expected ?? ["ok"], () =>
          this.kms.putKeyPolicy(
            { keyId: arg, policy: POLICIES[command.policy] },
            { principal: command.p },
          ),
        );
        if (r.code === "ok") key!.policy = command.policy;
        return;
      }
      case "tag": {
        const { arg, key } = this.resolve(command.k);
        const keyOutcome = keyChecks(m, key, {
          principal: command.p,
          action: "kms:TagResource",
          row: MANAGE,
        });
        // A reserved tag key is a TagException; the docs fix no order against the key checks.
        // An alias is refused before the key is read, so before its tags are.
        const expected = byAlias(command.k)
          ? ["NotFoundException"]
          : command.reserved
            ? [...(keyOutcome ?? []), "TagException"]
            : (keyOutcome ?? ["ok"]);
        await this.call("tagResource", command.p, expected, () =>
          this.kms.tagResource(
            {
              keyId: arg,
              tags: [{ tagKey: command.reserved ? "aws:owner" : "owner", tagValue: "t" }],
            },
            { principal: command.p },
          ),
        );
        return;
      }
      case "describe": {
        const { arg, key } = this.resolve(command.k);
        const expected = keyChecks(m, key, {
          principal: command.p,
          action: "kms:DescribeKey",
          row: ALWAYS,
        }) ?? ["ok"];
        const r = await this.call("describeKey", command.p, expected, () =>
          this.kms.describeKey({ keyId: arg }, { principal: command.p }),
        );
        if (r.code === "ok" && "value" in r) {
          expect(r.value.keyMetadata.keyState, `step ${this.step}`).toBe(key!.state);
        }
        return;
      }
      case "listAliases": {
        // An account-level call: the default account policy allows the account's principals.
        const expected = OWN_ACCOUNT.has(command.p) ? ["ok"] : ["AccessDeniedException"];
        const r = await this.call("listAliases", command.p, expected, () =>
          this.kms.listAliases({}, { principal: command.p }),
        );
        if (r.code === "ok" && "value" in r) {
          const listed = r.value.aliases.map((a) => `${a.aliasName} → ${a.targetKeyId}`);
          const modelled = [...m.aliases].sort().map(([name, keyId]) => `${name} → ${keyId}`);
          expect(listed, `step ${this.step}: aliases\n${this.log.join("\n")}`).toEqual(modelled);
        }
        return;
      }
      case "encrypt":
        return this.encrypt(command);
      case "generateDataKey":
        return this.generateDataKey(command);
      case "decrypt":
        return this.decrypt(command);
      case "reEncrypt":
        return this.reEncrypt(command);
      case "transplant":
        return this.transplant(command);
      case "generateMac":
        return this.generateMac(command);
      case "verifyMac":
        return this.verifyMac(command);
      case "sign":
        return this.sign(command);
      case "verify":
        return this.verify(command);
      case "getPublicKey": {
        const { arg, key } = this.resolve(
          command.k,
          ({ kind }) => kind !== "symmetric" && kind !== "hmac",
        );
        const expected = keyChecks(m, key, {
          principal: command.p,
          action: "kms:GetPublicKey",
          row: CRYPTO,
          usable: key?.kind !== "symmetric" && key?.kind !== "hmac",
          usageError: "UnsupportedOperationException",
        }) ?? ["ok"];
        const r = await this.call("getPublicKey", command.p, expected, () =>
          this.kms.getPublicKey({ keyId: arg }, { principal: command.p }),
        );
        if (r.code === "ok") this.assertMayUse(key!, command.p, "kms:GetPublicKey", undefined);
        return;
      }
    }
  }

  async alias(command: Extract<Command, { t: "alias" }>): Promise<void> {
    const m = this.model;
    const aliasName = ALIASES[command.name] ?? "alias/aws/reserved";
    const reserved = ALIASES[command.name] === undefined;
    const currentId = m.aliases.get(aliasName);
    const current = currentId === undefined ? undefined : m.key(currentId);
    // Alias targets are named by key id or ARN (an alias cannot point to an alias).
    const form: Form =
      command.k.form === "alias" || command.k.form === "aliasArn" ? "id" : command.k.form;
    const target = this.resolve({ ...command.k, form }, (k) => k.state !== "Destroyed");
    const principal = command.p;
    let expected: Code[] | undefined;
    if (command.action === "create") {
      expected = reserved
        ? ["InvalidAliasNameException"]
        : keyChecks(m, target.key, { principal, action: "kms:CreateAlias", row: MANAGE });
      if (!reserved && currentId !== undefined) {
        // Taken name: AlreadyExists, in no documented order against the target's state.
        if (expected === undefined) expected = ["AlreadyExistsException"];
        else if (expected.includes("KMSInvalidStateException"))
          expected.push("AlreadyExistsException");
      }
    } else if (reserved) {
      expected = ["InvalidAliasNameException"];
    } else if (currentId === undefined) {
      expected = ["NotFoundException"];
    } else if (
      current !== undefined &&
      !m.authorized(current, principal, actionOf(command.action), undefined)
    ) {
      // Alias changes are authorized on the key the alias points to now (docs/POLICY.md).
      expected = ["AccessDeniedException"];
    } else if (command.action === "update") {
      expected = keyChecks(m, target.key, {
        principal,
        action: "kms:UpdateAlias",
        row: MANAGE,
        // AWS: an alias moves only to a key of the same type and usage.
        usable: current === undefined || current.kind === target.key?.kind,
        usageError: "ValidationException",
      });
    }
    const operation = `${command.action}Alias` as const;
    const r = await this.call(operation, principal, expected ?? ["ok"], () =>
      command.action === "delete"
        ? this.kms.deleteAlias({ aliasName }, { principal })
        : this.kms[operation === "createAlias" ? "createAlias" : "updateAlias"](
            { aliasName, targetKeyId: target.arg },
            { principal },
          ),
    );
    if (r.code !== "ok") return;
    if (command.action === "delete") m.aliases.delete(aliasName);
    else m.aliases.set(aliasName, target.key!.keyId);
  }

  async createGrant(command: Extract<Command, { t: "createGrant" }>): Promise<void> {
    const m = this.model;
    const { arg, key } = this.resolve(command.k);
    const allowed = GRANT_OPS[key?.kind ?? "symmetric"];
    const operations = allowed.filter((_, i) => (command.ops >> i) & 1);
    if (operations.length === 0) operations.push(allowed[command.ops % allowed.length]!);
    // Encryption-context constraints exist only for symmetric encryption keys (AWS).
    const context = CONTEXTS[command.ctx]!;
    const symmetric = key?.kind === "symmetric";
    const constraints =
      !symmetric || command.constraint === 0
        ? undefined
        : command.constraint === 1
          ? { encryptionContextEquals: context }
          : { encryptionContextSubset: context };
    const expected = dryRunOutcome(
      command.dryRun,
      byAlias(command.k)
        ? ["NotFoundException"]
        : keyChecks(m, key, { principal: command.p, action: "kms:CreateGrant", row: CRYPTO }),
    );
    const token = m.grants.at(-1)?.grantToken;
    const r = await this.call("createGrant", command.p, expected, () =>
      this.kms.createGrant(
        {
          keyId: arg,
          granteePrincipal: command.grantee,
          ...(command.retiring !== undefined ? { retiringPrincipal: command.retiring } : {}),
          operations,
          ...(constraints !== undefined ? { constraints } : {}),
          ...(token !== undefined ? { grantTokens: [token] } : {}),
          ...(command.dryRun ? { dryRun: true } : {}),
        },
        { principal: command.p },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      m.grants.push({
        grantId: r.value.grantId,
        grantToken: r.value.grantToken,
        keyId: key!.keyId,
        grantee: command.grantee,
        retiring: command.retiring,
        operations,
        equals: constraints?.encryptionContextEquals,
        subset: constraints?.encryptionContextSubset,
        live: true,
      });
    }
  }

  async endGrant(command: Extract<Command, { t: "retireGrant" | "revokeGrant" }>): Promise<void> {
    const m = this.model;
    if (m.grants.length === 0) return;
    const grant = m.grants[command.g % m.grants.length]!;
    const key = m.key(grant.keyId)!;
    const principal = command.p;
    let expected: Code[];
    if (key.state === "Destroyed") expected = ["NotFoundException"];
    else if (command.t === "revokeGrant") {
      expected = keyChecks(m, key, { principal, action: "kms:RevokeGrant", row: ALWAYS }) ?? [];
    } else expected = [];
    if (expected.length === 0 && !grant.live) {
      // A grant retired or revoked before: gone (the docs name no single exception).
      expected = ["NotFoundException", "InvalidGrantIdException"];
    }
    if (expected.length === 0 && command.t === "retireGrant") {
      // An explicit Deny of kms:RetireGrant wins even over the grant's own retiring principal.
      const decision = policyDecision(key.policy, principal, "kms:RetireGrant", undefined);
      const mayRetire =
        decision !== "deny" &&
        (grant.retiring === principal ||
          (grant.grantee === principal && grant.operations.includes("RetireGrant")) ||
          decision === "allow");
      if (!mayRetire) expected = ["AccessDeniedException"];
    }
    expected = dryRunOutcome(command.dryRun, expected.length === 0 ? undefined : expected);
    const dryRun = command.dryRun ? { dryRun: true } : {};
    const r = await this.call(command.t, principal, expected, () =>
      command.t === "revokeGrant"
        ? this.kms.revokeGrant(
            { keyId: key.keyId, grantId: grant.grantId, ...dryRun },
            { principal },
          )
        : this.kms.retireGrant(
            command.byToken
              ? { grantToken: grant.grantToken, ...dryRun }
              : { keyId: key.keyId, grantId: grant.grantId, ...dryRun },
            { principal },
          ),
    );
    if (r.code === "ok") grant.live = false;
  }

  grantTokens(mode: 0 | 1 | 2): { grantTokens?: string[] } {
    if (mode === 0) return {};
    if (mode === 2) return { grantTokens: ["bm90LWEtdG9rZW4"] }; // base64url "not-a-token"
    const token = this.model.grants.at(-1)?.grantToken;
    return token === undefined ? {} : { grantTokens: [token] };
  }

  async encrypt(command: Extract<Command, { t: "encrypt" }>): Promise<void> {
    const m = this.model;
    const { arg, key } = this.resolve(command.k, ({ kind }) =>
      command.rsa ? kind === "rsa-encrypt" : kind === "symmetric",
    );
    const context = command.rsa ? undefined : CONTEXTS[command.ctx]!;
    const tokens = this.grantTokens(command.tokens);
    const expected =
      tokens.grantTokens?.[0]?.startsWith("bm90") === true
        ? ["InvalidGrantTokenException"]
        : dryRunOutcome(
            command.dryRun,
            keyChecks(m, key, {
              principal: command.p,
              action: "kms:Encrypt",
              context,
              row: CRYPTO,
              usable: key?.kind === (command.rsa ? "rsa-encrypt" : "symmetric"),
            }),
          );
    const plaintext = this.freshPlaintext();
    const r = await this.call("encrypt", command.p, expected, () =>
      this.kms.encrypt(
        {
          keyId: arg,
          plaintext,
          ...(context !== undefined ? { encryptionContext: context } : {}),
          ...(command.rsa ? { encryptionAlgorithm: "RSAES_OAEP_SHA_256" as const } : {}),
          ...tokens,
          ...(command.dryRun ? { dryRun: true } : {}),
        },
        { principal: command.p },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(key!, command.p, "kms:Encrypt", context);
      expect(r.value.keyId).toBe(keyArnOf(key!.keyId));
      m.sealed.push({
        blob: r.value.ciphertextBlob,
        keyId: key!.keyId,
        context: context ?? {},
        plaintext,
        rsa: command.rsa,
        rotationsAtSeal: key!.rotations,
      });
    }
  }

  async generateDataKey(command: Extract<Command, { t: "generateDataKey" }>): Promise<void> {
    const m = this.model;
    const { arg, key } = this.resolve(command.k, ({ kind }) => kind === "symmetric");
    const context = CONTEXTS[command.ctx]!;
    const expected = keyChecks(m, key, {
      principal: command.p,
      action: "kms:GenerateDataKey",
      context,
      row: CRYPTO,
      usable: key?.kind === "symmetric",
    }) ?? ["ok"];
    const r = await this.call("generateDataKey", command.p, expected, () =>
      this.kms.generateDataKey(
        { keyId: arg, keySpec: "AES_256", encryptionContext: context },
        { principal: command.p },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(key!, command.p, "kms:GenerateDataKey", context);
      m.sealed.push({
        blob: r.value.ciphertextBlob,
        keyId: key!.keyId,
        context,
        plaintext: r.value.plaintext.slice(),
        rsa: false,
        rotationsAtSeal: key!.rotations,
      });
    }
  }

  /** Another context than the sealed one (0: the sealed one). */
  otherContext(sealed: Sealed, shift: number): EncryptionContext {
    if (shift === 0) return sealed.context;
    const at = CONTEXTS.findIndex((c) => sameContext(c, sealed.context));
    return CONTEXTS[(at + shift) % CONTEXTS.length]!;
  }

  async decrypt(command: Extract<Command, { t: "decrypt" }>): Promise<void> {
    const m = this.model;
    if (m.sealed.length === 0) return;
    const sealed = m.sealed[command.c % m.sealed.length]!;
    await this.decryptSealed(sealed, command.p, command.wrongContext, command.hint);
  }

  async decryptSealed(
    sealed: Sealed,
    principal: string,
    wrongContext: number,
    hintRef: Ref | undefined,
  ): Promise<void> {
    const m = this.model;
    const source = m.key(sealed.keyId)!;
    // RSA ciphertexts name no key: the caller must, and they bind no context.
    const hint = sealed.rsa
      ? { arg: source.keyId, key: source }
      : hintRef === undefined
        ? undefined
        : this.resolve(hintRef);
    const context = sealed.rsa ? undefined : this.otherContext(sealed, wrongContext);
    let expected: Code[] | undefined;
    if (hint !== undefined && hint.key?.keyId !== source.keyId) {
      if (hint.key === undefined || hint.key.state === "Destroyed")
        expected = ["NotFoundException"];
      else if (!m.authorized(hint.key, principal, "kms:Decrypt", context)) {
        // A key the caller may not use is AccessDenied or IncorrectKey: the docs fix neither.
        expected = ["AccessDeniedException", "IncorrectKeyException"];
      } else expected = ["IncorrectKeyException"];
    } else if (source.state === "Destroyed") {
      // README: a destroyed key's ciphertexts fail with InvalidCiphertextException; naming the
      // destroyed key may also be NotFound.
      expected =
        hint === undefined
          ? ["InvalidCiphertextException"]
          : ["InvalidCiphertextException", "NotFoundException"];
    } else {
      expected = keyChecks(m, source, { principal, action: "kms:Decrypt", context, row: CRYPTO });
      if (
        expected === undefined &&
        context !== undefined &&
        !sameContext(context, sealed.context)
      ) {
        expected = ["InvalidCiphertextException"];
      }
    }
    const r = await this.call("decrypt", principal, expected ?? ["ok"], () =>
      this.kms.decrypt(
        {
          ciphertextBlob: sealed.blob,
          ...(context !== undefined ? { encryptionContext: context } : {}),
          ...(hint !== undefined ? { keyId: hint.arg } : {}),
          ...(sealed.rsa ? { encryptionAlgorithm: "RSAES_OAEP_SHA_256" as const } : {}),
        },
        { principal },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(source, principal, "kms:Decrypt", context);
      const label = `step ${this.step}: decrypted under the wrong key or context, or to other bytes`;
      expect(r.value.keyId, label).toBe(keyArnOf(source.keyId));
      expect(sameContext(context ?? {}, sealed.context), label).toBe(true);
      expect(Buffer.from(r.value.plaintext).equals(Buffer.from(sealed.plaintext)), label).toBe(
        true,
      );
      if (source.rotations > sealed.rotationsAtSeal) cover("decrypt after rotation");
    }
  }

  async reEncrypt(command: Extract<Command, { t: "reEncrypt" }>): Promise<void> {
    const m = this.model;
    const symmetric = m.sealed.filter((s) => !s.rsa);
    if (symmetric.length === 0) return;
    const sealed = symmetric[command.c % symmetric.length]!;
    const source = m.key(sealed.keyId)!;
    const sourceContext = this.otherContext(sealed, command.wrongContext);
    const { arg, key: destination } = this.resolve(command.k, ({ kind }) => kind === "symmetric");
    const destinationContext = CONTEXTS[command.ctx]!;
    const principal = command.p;
    const destinationSide = keyChecks(m, destination, {
      principal,
      action: "kms:ReEncryptTo",
      context: destinationContext,
      row: CRYPTO,
      usable: destination?.kind === "symmetric",
    });
    let sourceSide: Code[] | undefined;
    if (source.state === "Destroyed") sourceSide = ["InvalidCiphertextException"];
    else {
      sourceSide = keyChecks(m, source, {
        principal,
        action: "kms:ReEncryptFrom",
        context: sourceContext,
        row: REENCRYPT_SOURCE,
      });
      if (sourceSide === undefined && !sameContext(sourceContext, sealed.context)) {
        sourceSide = ["InvalidCiphertextException"];
      }
    }
    // When both sides fail, the docs fix no order between them.
    const expected =
      destinationSide === undefined && sourceSide === undefined
        ? ["ok"]
        : [...(destinationSide ?? []), ...(sourceSide ?? [])];
    const r = await this.call("reEncrypt", principal, expected, () =>
      this.kms.reEncrypt(
        {
          ciphertextBlob: sealed.blob,
          sourceEncryptionContext: sourceContext,
          destinationKeyId: arg,
          destinationEncryptionContext: destinationContext,
        },
        { principal },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(destination!, principal, "kms:ReEncryptTo", destinationContext);
      this.assertMayUse(source, principal, "kms:ReEncryptFrom", sourceContext, [
        "Enabled",
        "PendingDeletion",
      ]);
      expect(r.value.sourceKeyId).toBe(keyArnOf(source.keyId));
      m.sealed.push({
        blob: r.value.ciphertextBlob,
        keyId: destination!.keyId,
        context: destinationContext,
        plaintext: sealed.plaintext,
        rsa: false,
        rotationsAtSeal: destination!.rotations,
      });
    }
  }

  /** A symmetric ciphertext whose header names another key never decrypts. */
  async transplant(command: Extract<Command, { t: "transplant" }>): Promise<void> {
    const m = this.model;
    const symmetric = m.sealed.filter((s) => !s.rsa);
    if (symmetric.length === 0) return;
    const sealed = symmetric[command.c % symmetric.length]!;
    const other = this.resolve({ ...command.k, form: "id" }).key;
    if (other === undefined || other.keyId === sealed.keyId) return;
    const blob = sealed.blob.slice();
    blob.set(uuidBytes(other.keyId), 2); // docs/FORMAT.md §3.1: key id at offset 2
    let expected: Code[];
    if (other.state === "Destroyed") expected = ["InvalidCiphertextException"];
    else {
      expected = keyChecks(m, other, {
        principal: command.p,
        action: "kms:Decrypt",
        context: sealed.context,
        row: CRYPTO,
        usable: other.kind === "symmetric",
      }) ?? ["InvalidCiphertextException"];
      // A usage error is as good as a failed tag for a blob that is garbage to this key.
      if (expected.includes("InvalidKeyUsageException"))
        expected.push("InvalidCiphertextException");
    }
    await this.call("decrypt", command.p, expected, () =>
      this.kms.decrypt(
        { ciphertextBlob: blob, encryptionContext: sealed.context },
        { principal: command.p },
      ),
    );
  }

  async generateMac(command: Extract<Command, { t: "generateMac" }>): Promise<void> {
    const m = this.model;
    const { arg, key } = this.resolve(command.k, ({ kind }) => kind === "hmac");
    const expected = keyChecks(m, key, {
      principal: command.p,
      action: "kms:GenerateMac",
      row: CRYPTO,
      usable: key?.kind === "hmac",
    }) ?? ["ok"];
    const message = this.freshPlaintext();
    const r = await this.call("generateMac", command.p, expected, () =>
      this.kms.generateMac(
        { keyId: arg, message, macAlgorithm: "HMAC_SHA_256" },
        { principal: command.p },
      ),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(key!, command.p, "kms:GenerateMac", undefined);
      m.macs.push({ keyId: key!.keyId, message, value: r.value.mac });
    }
  }

  async verifyMac(command: Extract<Command, { t: "verifyMac" }>): Promise<void> {
    const m = this.model;
    if (m.macs.length === 0) return;
    const tagged = m.macs[command.m % m.macs.length]!;
    const own = m.key(tagged.keyId)!;
    const target =
      command.mode === "otherKey"
        ? this.resolve(command.k, ({ kind }) => kind === "hmac")
        : { arg: own.keyId, key: own };
    const mac = tagged.value.slice();
    if (command.mode === "tampered") mac[0] = mac[0]! ^ 1;
    const valid = command.mode === "same" || (command.mode === "otherKey" && target.key === own);
    const expected = keyChecks(m, target.key, {
      principal: command.p,
      action: "kms:VerifyMac",
      row: CRYPTO,
      usable: target.key?.kind === "hmac",
    }) ?? [valid ? "ok" : "KMSInvalidMacException"];
    const r = await this.call("verifyMac", command.p, expected, () =>
      this.kms.verifyMac(
        { keyId: target.arg, message: tagged.message, mac, macAlgorithm: "HMAC_SHA_256" },
        { principal: command.p },
      ),
    );
    if (r.code === "ok") this.assertMayUse(target.key!, command.p, "kms:VerifyMac", undefined);
  }

  async sign(command: Extract<Command, { t: "sign" }>): Promise<void> {
    const m = this.model;
    const { arg, key } = this.resolve(
      command.k,
      ({ kind }) => kind === "ecc-sign" || kind === "rsa-sign",
    );
    const algorithm =
      key?.kind === "rsa-sign" ? SIGNING_ALGORITHM["rsa-sign"] : SIGNING_ALGORITHM["ecc-sign"];
    const expected = keyChecks(m, key, {
      principal: command.p,
      action: "kms:Sign",
      row: CRYPTO,
      usable: key?.kind === "ecc-sign" || key?.kind === "rsa-sign",
    }) ?? ["ok"];
    const message = this.freshPlaintext();
    const r = await this.call("sign", command.p, expected, () =>
      this.kms.sign({ keyId: arg, message, signingAlgorithm: algorithm }, { principal: command.p }),
    );
    if (r.code === "ok" && "value" in r) {
      this.assertMayUse(key!, command.p, "kms:Sign", undefined);
      m.signatures.push({ keyId: key!.keyId, message, value: r.value.signature });
    }
  }

  async verify(command: Extract<Command, { t: "verify" }>): Promise<void> {
    const m = this.model;
    if (m.signatures.length === 0) return;
    const signed = m.signatures[command.s % m.signatures.length]!;
    const own = m.key(signed.keyId)!;
    const target =
      command.mode === "otherKey"
        ? this.resolve(command.k, ({ kind }) => kind === own.kind)
        : { arg: own.keyId, key: own };
    const algorithm = SIGNING_ALGORITHM[own.kind as "ecc-sign" | "rsa-sign"];
    const signature = signed.value.slice();
    if (command.mode === "tampered") {
      const at = signature.length - 1; // last byte: the signature value, never DER framing
      signature[at] = signature[at]! ^ 1;
    }
    const valid = command.mode === "same" || (command.mode === "otherKey" && target.key === own);
    const expected = keyChecks(m, target.key, {
      principal: command.p,
      action: "kms:Verify",
      row: CRYPTO,
      usable: target.key?.kind === own.kind,
    }) ?? [valid ? "ok" : "KMSInvalidSignatureException"];
    const r = await this.call("verify", command.p, expected, () =>
      this.kms.verify(
        { keyId: target.arg, message: signed.message, signature, signingAlgorithm: algorithm },
        { principal: command.p },
      ),
    );
    if (r.code === "ok") this.assertMayUse(target.key!, command.p, "kms:Verify", undefined);
  }

  /** Every ciphertext the run made, decrypted once more by the account root; then the aliases. */
  async sweep(): Promise<void> {
    this.step++;
    this.log.push(`${this.step}: sweep`);
    for (const sealed of [...this.model.sealed]) {
      await this.decryptSealed(sealed, ROOT, 0, undefined);
    }
    await this.run({ t: "listAliases", p: ROOT });
  }
}

function actionOf(action: "create" | "update" | "delete"): string {
  return `kms:${action.charAt(0).toUpperCase()}${action.slice(1)}Alias`;
}

/** Runs a fixed sequence through the same model and checks (regressions found by the property). */
async function replay(commands: readonly Command[]): Promise<void> {
  const clock = new ManualClock();
  const kms = await createKms({ clock });
  const run = new Run(kms, clock);
  for (const command of commands) await run.run(command);
  await run.sweep();
  await run.verifyTrail("end of replay");
  await kms.close();
}

const first: Ref = { i: 0, form: "id", fit: false };
const second: Ref = { i: 1, form: "id", fit: false };

describe("Kms against a reference model of AWS KMS semantics", () => {
  test("a key past its deletion window takes its aliases with it", async () => {
    await replay([
      { t: "createKey", p: ROOT, kind: "symmetric" },
      { t: "createKey", p: ROOT, kind: "symmetric" },
      { t: "alias", p: ROOT, action: "create", name: 0, k: first },
      { t: "alias", p: ROOT, action: "create", name: 1, k: first },
      { t: "alias", p: ROOT, action: "create", name: 2, k: first },
      { t: "scheduleDeletion", p: ROOT, k: first, days: 7 },
      { t: "advance", hours: 7 * 24 },
      { t: "listAliases", p: ROOT },
      { t: "alias", p: ROOT, action: "create", name: 0, k: second },
      { t: "alias", p: ROOT, action: "update", name: 1, k: second },
      { t: "alias", p: ROOT, action: "delete", name: 2, k: second },
      { t: "listAliases", p: ROOT },
    ]);
  });

  test(
    "random call sequences by random principals",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(commandArb, { minLength: 20, maxLength: 60, size: "max" }),
          async (commands) => {
            const clock = new ManualClock();
            const kms = await createKms({ clock });
            const run = new Run(kms, clock);
            // Keys up front, so that early commands have something to act on.
            await run.run({ t: "createKey", p: ROOT, kind: "symmetric" });
            await run.run({ t: "createKey", p: ROOT, kind: "hmac" });
            await run.run({ t: "createKey", p: ROOT, kind: "ecc-sign" });
            for (const command of commands) await run.run(command);
            await run.sweep();
            await run.verifyTrail("end of run");
            await kms.close();
          },
        ),
        { numRuns: RUNS, seed: SEED, endOnFailure: false },
      );
      if (process.env.KMS_PROPERTY_COVERAGE)
        console.log(
          [...coverage]
            .sort()
            .map(([k, n]) => `${k}: ${n}`)
            .join("\n"),
        );
      // The model must have said "ok" and failures for the operations it is about.
      for (const what of [
        "encrypt: ok",
        "encrypt: AccessDeniedException",
        "encrypt: DisabledException",
        "encrypt: KMSInvalidStateException",
        "encrypt: NotFoundException",
        "decrypt: ok",
        "decrypt: InvalidCiphertextException",
        "decrypt: IncorrectKeyException",
        "decrypt: AccessDeniedException",
        "decrypt after rotation",
        "reEncrypt: ok",
        "generateDataKey: ok",
        "generateMac: ok",
        "verifyMac: ok",
        "verifyMac: KMSInvalidMacException",
        "sign: ok",
        "verify: ok",
        "verify: KMSInvalidSignatureException",
        "getPublicKey: ok",
        "createGrant: ok",
        "retireGrant: ok",
        "revokeGrant: ok",
        "putKeyPolicy: ok",
        "putKeyPolicy: MalformedPolicyDocumentException",
        "cancelKeyDeletion: ok",
        "rotateKeyOnDemand: ok",
        "createAlias: ok",
        "updateAlias: ok",
        "deleteAlias: ok",
      ]) {
        expect(coverage.get(what) ?? 0, `never reached: ${what}`).toBeGreaterThan(0);
      }
    },
    PROPERTY_TIMEOUT,
  );
});
