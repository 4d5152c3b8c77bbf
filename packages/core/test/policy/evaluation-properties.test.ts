// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
/**
 * Property-based tests of key-policy and grant authorization through the public facade.
 *
 * Every scenario gets a fresh key of one shared Kms: the key is created under the default
 * policy, so the account root can still add grants and make a ciphertext for decrypt, and only
 * then is the scenario's policy put, with the lockout check bypassed because the policy under
 * test may well lock the root out. There is no IAM layer in @kms/core (docs/POLICY.md), so
 * "other sources of Allow" here are key-policy statements and grants.
 */
import {
  AccessDeniedError,
  createKms,
  type EncryptionContext,
  type GrantConstraints,
  type GrantOperation,
  type Kms,
  MalformedPolicyDocumentError,
  ValidationError,
} from "@kms/core";
import fc from "fast-check";
import { beforeAll, describe, expect, test } from "vitest";

const ACCOUNT = "000000000000"; // the Kms's own account (DEFAULT_IDENTITY)
const OTHER = "111122223333";
const ALICE = `arn:aws:iam::${OTHER}:user/alice`;
const BOB = `arn:aws:iam::${OTHER}:user/bob`;
const CAROL = `arn:aws:iam::${ACCOUNT}:user/carol`;
const SERVICE = "billing-service"; // a plain name: a principal of the Kms's own account
const OPS = "arn:aws:iam::444455556666:role/ops";
const RETIRER = "arn:aws:iam::444455556666:role/retirer";
const PRINCIPALS = [ALICE, BOB, CAROL, SERVICE, OPS] as const;
const OTHER_ACCOUNT_USERS = { AWS: `arn:aws:iam::${OTHER}:root` } as const;
const plaintext = new TextEncoder().encode("property");
const as = (principal: string) => ({ principal });

// Shrinking replays a failing scenario many times; the default 5 s would cut the report off.
const PROPERTY_TIMEOUT = 60_000;

type PrincipalSpec = "*" | { readonly AWS: string | readonly string[] };
type ConditionBlock = Readonly<
  Record<string, Readonly<Record<string, string | readonly string[]>>>
>;

interface Statement {
  readonly Effect: "Allow" | "Deny";
  readonly Principal?: PrincipalSpec;
  readonly NotPrincipal?: PrincipalSpec;
  readonly Action?: string | readonly string[];
  readonly NotAction?: string | readonly string[];
  readonly Resource?: string;
  readonly NotResource?: string;
  readonly Condition?: ConditionBlock;
}

type Operation = "encrypt" | "decrypt" | "generateDataKey" | "describeKey";

interface Request {
  readonly principal: string;
  readonly operation: Operation;
  readonly context: EncryptionContext | undefined;
}

interface GrantSpec {
  readonly grantee: string;
  readonly operations: readonly GrantOperation[];
  readonly constraints: GrantConstraints | undefined;
}

type Outcome = { readonly allowed: true } | { readonly allowed: false; readonly message: string };

/** Stands for the scenario key's ARN, which exists only once the key is created. */
const THIS_KEY = "<this key>";
const OTHER_KEY = `arn:aws:kms:local:${ACCOUNT}:key/00000000-0000-0000-0000-000000000000`;

/**
 * Matches no request of these tests; keeps a policy valid (non-empty) when a property removes
 * every other statement.
 */
const FILLER: Statement = {
  Effect: "Allow",
  Principal: { AWS: "arn:aws:iam::999999999999:user/nobody" },
  Action: "kms:Sign",
  Resource: "*",
};

/** The account root's kms:*, i.e. every principal of the Kms's own account (docs/POLICY.md). */
const ROOT_ADMIN: Statement = {
  Effect: "Allow",
  Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` },
  Action: "kms:*",
  Resource: "*",
};

function policyText(
  statements: readonly Statement[],
  keyArn: string | undefined,
  version = "2012-10-17",
): string {
  const text = JSON.stringify({ Version: version, Statement: statements });
  return keyArn === undefined
    ? text
    : text.replaceAll(JSON.stringify(THIS_KEY), JSON.stringify(keyArn));
}

/** Reference for the principal's account, as docs/POLICY.md defines it. */
function accountOf(principal: string): string {
  const field = principal.split(":")[4];
  return principal.startsWith("arn:") && field !== undefined && /^\d{12}$/.test(field)
    ? field
    : ACCOUNT;
}

/** Reference for aws:username: the IAM user's name after its path; absent for others. */
function userName(principal: string): string | undefined {
  return /^arn:[^:]+:iam::\d{12}:user\/(?:.*\/)?([^/]+)$/.exec(principal)?.[1];
}

/** Object.fromEntries defines own properties, so a "__proto__" key stays a key (as JSON.parse). */
function contextOf(pairs: readonly (readonly [string, string])[]): EncryptionContext {
  return Object.fromEntries(pairs);
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return `non-error ${String(error)}`;
  const cause =
    error.cause instanceof Error
      ? `; cause: ${error.cause.constructor.name}: ${error.cause.message}`
      : "";
  return `${error.constructor.name}: ${error.message}${cause}`;
}

/** Any failure other than AccessDenied is itself a property violation (property 5). */
async function attempt(call: () => Promise<unknown>): Promise<Outcome> {
  try {
    await call();
    return { allowed: true };
  } catch (error) {
    if (error instanceof AccessDeniedError) return { allowed: false, message: error.message };
    throw new Error(`authorization failed with ${describeError(error)}`);
  }
}

let kms: Kms;

beforeAll(async () => {
  kms = await createKms();
});

interface PreparedKey {
  readonly keyId: string;
  readonly arn: string;
  readonly blob: Uint8Array | undefined;
}

/** A fresh key with the grants, and a ciphertext when the request decrypts (made as root). */
async function prepareKey(
  grants: readonly GrantSpec[],
  request: Request | undefined,
): Promise<PreparedKey> {
  const { keyMetadata } = await kms.createKey();
  const keyId = keyMetadata.keyId;
  for (const g of grants) {
    await kms.createGrant({
      keyId,
      granteePrincipal: g.grantee,
      operations: g.operations,
      ...(g.constraints !== undefined ? { constraints: g.constraints } : {}),
    });
  }
  const blob =
    request?.operation === "decrypt"
      ? (await kms.encrypt({ keyId, plaintext, ...contextArgument(request.context) }))
          .ciphertextBlob
      : undefined;
  return { keyId, arn: keyMetadata.arn, blob };
}

function contextArgument(context: EncryptionContext | undefined) {
  return context === undefined ? {} : { encryptionContext: context };
}

function perform(key: PreparedKey, request: Request, sourceIp?: string): Promise<unknown> {
  const options = { principal: request.principal, ...(sourceIp !== undefined ? { sourceIp } : {}) };
  const context = contextArgument(request.context);
  switch (request.operation) {
    case "encrypt":
      return kms.encrypt({ keyId: key.keyId, plaintext, ...context }, options);
    case "decrypt":
      return kms.decrypt({ ciphertextBlob: key.blob ?? new Uint8Array(), ...context }, options);
    case "generateDataKey":
      return kms.generateDataKey({ keyId: key.keyId, keySpec: "AES_256", ...context }, options);
    case "describeKey":
      return kms.describeKey({ keyId: key.keyId }, options);
  }
}

async function run(
  statements: readonly Statement[],
  grants: readonly GrantSpec[],
  request: Request,
): Promise<Outcome> {
  const key = await prepareKey(grants, request);
  await kms.putKeyPolicy({
    keyId: key.keyId,
    policy: policyText(statements, key.arn),
    bypassPolicyLockoutSafetyCheck: true,
  });
  return attempt(() => perform(key, request));
}

// ---------------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------------

const OPERATIONS: readonly Operation[] = ["encrypt", "decrypt", "generateDataKey", "describeKey"];

const GRANT_OPERATION_OF: Readonly<Record<Operation, GrantOperation>> = {
  encrypt: "Encrypt",
  decrypt: "Decrypt",
  generateDataKey: "GenerateDataKey",
  describeKey: "DescribeKey",
};

/** Action patterns that match the operation's action (exact, case-folded, wildcards). */
const MATCHING_ACTIONS: Readonly<Record<Operation, readonly string[]>> = {
  encrypt: [
    "kms:*",
    "*",
    "kms:Encrypt",
    "KMS:ENCRYPT",
    "kms:Encrypt*",
    "kms:?ncrypt",
    "kms:*crypt",
  ],
  decrypt: ["kms:*", "*", "kms:Decrypt", "kms:decrypt", "kms:De*", "kms:*crypt", "kms:?ecrypt"],
  generateDataKey: [
    "kms:*",
    "*",
    "kms:GenerateDataKey",
    "kms:GenerateDataKey*",
    "kms:Generate*",
    "kms:generatedatakey",
  ],
  describeKey: ["kms:*", "*", "kms:DescribeKey", "kms:Describe*", "kms:describe???"],
};

/** Patterns that match none of the four operations: for NotAction and for statements that miss. */
const OTHER_ACTIONS = ["kms:PutKeyPolicy", "kms:Sign", "kms:Re*", "kms:Schedule*", "kms:?ign"];

const ALL_ACTIONS = [...new Set([...Object.values(MATCHING_ACTIONS).flat(), ...OTHER_ACTIONS])];

/**
 * Encryption-context keys named in conditions. `constructor`, `toString` and `__proto__` are
 * names every JS object inherits: a request's context has them only if it sets them.
 */
const CONTEXT_KEYS = ["tenant", "Tenant", "region", "constructor", "toString", "__proto__"];
const REQUEST_CONTEXT_KEYS = ["tenant", "Tenant", "region", "constructor"];
const TENANTS = ["alice", "bob", "ALICE", "*", "a?c", ""];

const requestContextArb: fc.Arbitrary<EncryptionContext | undefined> = fc.option(
  fc
    .uniqueArray(fc.tuple(fc.constantFrom(...REQUEST_CONTEXT_KEYS), fc.constantFrom(...TENANTS)), {
      maxLength: 3,
      selector: ([k]) => k,
    })
    .map(contextOf),
  { nil: undefined },
);

const requestArb: fc.Arbitrary<Request> = fc
  .record({
    principal: fc.constantFrom(...PRINCIPALS),
    operation: fc.constantFrom(...OPERATIONS),
    context: requestContextArb,
  })
  // DescribeKey takes no context; keeping one would mislead the "satisfied condition" reference.
  .map((r) => (r.operation === "describeKey" ? { ...r, context: undefined } : r));

const principalSpecArb: fc.Arbitrary<PrincipalSpec> = fc.oneof(
  fc.constant("*" as const),
  fc
    .constantFrom(
      ...PRINCIPALS,
      `arn:aws:iam::${ACCOUNT}:root`,
      `arn:aws:iam::${OTHER}:root`,
      OTHER,
      ACCOUNT,
    )
    .map((p) => ({ AWS: p })),
  fc.subarray([...PRINCIPALS], { minLength: 1, maxLength: 3 }).map((list) => ({ AWS: list })),
);

const conditionArb: fc.Arbitrary<ConditionBlock> = fc.oneof(
  fc
    .record({
      op: fc.constantFrom(
        "StringEquals",
        "StringNotEquals",
        "StringLike",
        "StringNotLike",
        "StringEqualsIgnoreCase",
        "StringEqualsIfExists",
        "StringNotEqualsIfExists",
      ),
      key: fc.constantFrom(...CONTEXT_KEYS),
      value: fc.constantFrom(...TENANTS, "${aws:username}", "a*"),
    })
    .map(({ op, key, value }) => ({ [op]: { [`kms:EncryptionContext:${key}`]: value } })),
  fc
    .record({
      op: fc.constantFrom("StringEquals", "StringLike", "StringNotEquals"),
      value: fc.constantFrom("alice", "bob", "carol", "*", "${kms:EncryptionContext:tenant}"),
    })
    .map(({ op, value }) => ({ [op]: { "aws:username": value } })),
  fc
    .record({ key: fc.constantFrom(...CONTEXT_KEYS), absent: fc.boolean() })
    .map(({ key, absent }) => ({ Null: { [`kms:EncryptionContext:${key}`]: String(absent) } })),
  fc.constantFrom<ConditionBlock>(
    { StringEquals: { "kms:CallerAccount": OTHER } },
    { StringEquals: { "kms:CallerAccount": ACCOUNT } },
    { ArnLike: { "aws:PrincipalArn": `arn:aws:iam::${OTHER}:*` } },
    { "ForAllValues:StringEquals": { "kms:EncryptionContextKeys": ["tenant", "region"] } },
    { "ForAnyValue:StringLike": { "kms:EncryptionContextKeys": "T*" } },
  ),
);

const actionListArb = fc.subarray(ALL_ACTIONS, { minLength: 1, maxLength: 3 });

const statementArb: fc.Arbitrary<Statement> = fc
  .record({
    effect: fc.constantFrom<"Allow" | "Deny">("Allow", "Deny"),
    principal: fc.oneof(
      { weight: 4, arbitrary: principalSpecArb.map((p) => ({ Principal: p })) },
      { weight: 1, arbitrary: principalSpecArb.map((p) => ({ NotPrincipal: p })) },
    ),
    action: fc.oneof(
      { weight: 4, arbitrary: actionListArb.map((a) => ({ Action: a })) },
      { weight: 1, arbitrary: actionListArb.map((a) => ({ NotAction: a })) },
    ),
    resource: fc.constantFrom<Pick<Statement, "Resource" | "NotResource">>(
      { Resource: "*" },
      { Resource: THIS_KEY },
      { Resource: `arn:aws:kms:*:${ACCOUNT}:key/*` },
      { Resource: OTHER_KEY },
      { NotResource: OTHER_KEY },
      { NotResource: THIS_KEY },
    ),
    condition: fc.option(conditionArb, { nil: undefined }),
  })
  .map(({ effect, principal, action, resource, condition }) => ({
    Effect: effect,
    // AWS (and parsePolicy) take NotPrincipal with Deny only.
    ...(effect === "Allow" && "NotPrincipal" in principal
      ? { Principal: principal.NotPrincipal }
      : principal),
    ...action,
    ...resource,
    ...(condition !== undefined ? { Condition: condition } : {}),
  }));

const GRANT_OPERATIONS: readonly GrantOperation[] = [
  "Encrypt",
  "Decrypt",
  "GenerateDataKey",
  "DescribeKey",
];

const constraintPairsArb = fc.uniqueArray(
  fc.tuple(fc.constantFrom("tenant", "Tenant", "region"), fc.constantFrom(...TENANTS)),
  { maxLength: 2, selector: ([k]) => k.toLowerCase() },
);

const constraintsArb: fc.Arbitrary<GrantConstraints | undefined> = fc.option(
  fc.oneof(
    constraintPairsArb.map((p) => ({ encryptionContextEquals: contextOf(p) })),
    constraintPairsArb.map((p) => ({ encryptionContextSubset: contextOf(p) })),
  ),
  { nil: undefined },
);

const grantArb = (grantees: readonly string[]): fc.Arbitrary<GrantSpec> =>
  fc.record({
    grantee: fc.constantFrom(...grantees),
    operations: fc.subarray([...GRANT_OPERATIONS], { minLength: 1 }),
    constraints: constraintsArb,
  });

function insertAt<T>(list: readonly T[], at: number, item: T): T[] {
  const out = [...list];
  out.splice(at % (list.length + 1), 0, item);
  return out;
}

// ---------------------------------------------------------------------------------------------
// 1. Explicit deny wins
// ---------------------------------------------------------------------------------------------

/** Conditions that hold for `r`, by the documented semantics (the reference, not the code). */
function satisfiedConditions(r: Request): ConditionBlock[] {
  const context = r.context ?? {};
  const account = accountOf(r.principal);
  const out: ConditionBlock[] = [
    { StringEquals: { "kms:CallerAccount": account } },
    { StringEquals: { "aws:PrincipalAccount": account } },
    // ForAllValues is true for an absent or empty key, and `*` matches every present one.
    { "ForAllValues:StringLike": { "kms:EncryptionContextKeys": "*" } },
    // A negated operator is true when the key is absent.
    { StringNotEquals: { "kms:EncryptionContext:tenant": "never-a-tenant" } },
  ];
  // The context key part matches in any case; a key held in several cases (`tenant`, `Tenant`)
  // has several values, and a Deny's condition holds when it holds for any of them.
  const valuesOf = (key: string) =>
    Object.entries(context)
      .filter(([k]) => k.toLowerCase() === key.toLowerCase())
      .map(([, v]) => v);
  for (const key of CONTEXT_KEYS) {
    const name = `kms:EncryptionContext:${key}`;
    const values = valuesOf(key);
    if (values.length === 0) {
      out.push({ Null: { [name]: "true" } }, { StringEqualsIfExists: { [name]: "x" } });
      continue;
    }
    out.push({ Null: { [name]: "false" } });
    for (const value of values) {
      out.push(
        { StringEquals: { [name]: value } },
        // Any string matches itself as a glob: `*` and `?` both match themselves.
        { StringLike: { [name]: value } },
        { StringEqualsIgnoreCase: { [name]: value.toUpperCase() } },
        { StringNotEquals: { [name]: `not ${value}` } },
      );
    }
  }
  const user = userName(r.principal);
  if (user === undefined) {
    out.push({ Null: { "aws:username": "true" } });
  } else {
    out.push({ StringEquals: { "aws:username": user } });
    if (valuesOf("tenant").includes(user)) {
      out.push({ StringLike: { "kms:EncryptionContext:tenant": "${aws:username}" } });
    }
  }
  if (r.principal.startsWith("arn:")) out.push({ ArnLike: { "aws:PrincipalArn": r.principal } });
  return out;
}

function mergeConditions(blocks: readonly ConditionBlock[]): ConditionBlock {
  const out: Record<string, Record<string, string | readonly string[]>> = {};
  for (const block of blocks) {
    for (const [op, keys] of Object.entries(block)) out[op] = { ...out[op], ...keys };
  }
  return out;
}

/** A Deny statement that matches `r` by construction: principal, action, resource, condition. */
function matchingDenyArb(r: Request): fc.Arbitrary<Statement> {
  const account = accountOf(r.principal);
  const others = PRINCIPALS.filter((p) => p !== r.principal);
  const principal = fc.oneof(
    fc.constant({ Principal: "*" as const }),
    fc.constant({ Principal: { AWS: r.principal } }),
    // An account root stands for every principal of its account (docs/POLICY.md).
    fc
      .constantFrom(`arn:aws:iam::${account}:root`, account)
      .map((root) => ({ Principal: { AWS: root } })),
    fc.constantFrom(...others).map((o) => ({ Principal: { AWS: [o, r.principal] } })),
    fc.subarray(others, { minLength: 1 }).map((list) => ({ NotPrincipal: { AWS: list } })),
  );
  const matching = MATCHING_ACTIONS[r.operation];
  const action = fc.oneof(
    fc.constantFrom(...matching).map((a) => ({ Action: a })),
    fc
      .tuple(fc.constantFrom(...OTHER_ACTIONS), fc.constantFrom(...matching))
      .map(([o, a]) => ({ Action: [o, a] })),
    fc.subarray(OTHER_ACTIONS, { minLength: 1 }).map((list) => ({ NotAction: list })),
  );
  const resource = fc.constantFrom<Pick<Statement, "Resource" | "NotResource">>(
    { Resource: "*" },
    { Resource: THIS_KEY },
    { Resource: `arn:aws:kms:*:${ACCOUNT}:key/*` },
    { NotResource: OTHER_KEY },
  );
  const condition = fc.option(
    fc.subarray(satisfiedConditions(r), { minLength: 1, maxLength: 2 }).map(mergeConditions),
    { nil: undefined },
  );
  return fc
    .record({ principal, action, resource, condition })
    .map(({ principal: p, action: a, resource: res, condition: c }) => ({
      Effect: "Deny" as const,
      ...p,
      ...a,
      ...res,
      ...(c !== undefined ? { Condition: c } : {}),
    }));
}

const ALLOW_EVERYTHING: Statement = {
  Effect: "Allow",
  Principal: "*",
  Action: "kms:*",
  Resource: "*",
};

describe("explicit deny wins", () => {
  const scenarioArb = requestArb.chain((request) =>
    fc.record({
      request: fc.constant(request),
      statements: fc.array(statementArb, { maxLength: 5 }),
      deny: matchingDenyArb(request),
      at: fc.nat(),
      grants: fc.array(grantArb([request.principal, ...PRINCIPALS]), { maxLength: 2 }),
      // Guarantees an Allow from both sources, so the Deny really has something to beat.
      allowEverything: fc.boolean(),
    }),
  );

  test(
    "a Deny statement matching the request denies it, whatever statements and grants allow it",
    async () => {
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          const statements = insertAt(
            s.allowEverything ? [ALLOW_EVERYTHING, ...s.statements] : s.statements,
            s.at,
            s.deny,
          );
          const grants: GrantSpec[] = s.allowEverything
            ? [
                ...s.grants,
                {
                  grantee: s.request.principal,
                  operations: [GRANT_OPERATION_OF[s.request.operation]],
                  constraints: undefined,
                },
              ]
            : [...s.grants];
          const outcome = await run(statements, grants, s.request);
          expect(outcome).toMatchObject({ allowed: false });
          if (!outcome.allowed) expect(outcome.message).toMatch(/explicitly denied by statement/);
        }),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  test(
    "the account policy: a matching Deny denies calls without a key",
    async () => {
      const accountRequestArb = fc.record({
        principal: fc.constantFrom(...PRINCIPALS),
        operation: fc.constantFrom("generateRandom", "listKeys", "createKey"),
      });
      const scenarioArb = accountRequestArb.chain((r) =>
        fc.record({
          request: fc.constant(r),
          statements: fc.array(statementArb, { maxLength: 4 }),
          at: fc.nat(),
          deny: fc.constantFrom<Pick<Statement, "Principal" | "NotPrincipal">>(
            { Principal: "*" },
            { Principal: { AWS: r.principal } },
            { Principal: { AWS: `arn:aws:iam::${accountOf(r.principal)}:root` } },
          ),
          action: fc.constantFrom(
            "kms:*",
            `kms:${r.operation.charAt(0).toUpperCase()}${r.operation.slice(1)}`,
            `kms:${r.operation.slice(0, 4)}*`,
          ),
        }),
      );
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          const deny: Statement = { Effect: "Deny", ...s.deny, Action: s.action, Resource: "*" };
          const statements = insertAt([ALLOW_EVERYTHING, ...s.statements], s.at, deny);
          const local = await createKms({
            // Account-level calls have the resource `*`: that is what "this key" is for them.
            accountPolicy: policyText(statements, "*"),
            audit: false,
          });
          const options = as(s.request.principal);
          const outcome = await attempt(() => {
            switch (s.request.operation) {
              case "generateRandom":
                return local.generateRandom({ numberOfBytes: 8 }, options);
              case "listKeys":
                return local.listKeys({}, options);
              case "createKey":
                return local.createKey({}, options);
            }
          });
          expect(outcome).toMatchObject({ allowed: false });
        }),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// 2. Monotonicity
// ---------------------------------------------------------------------------------------------

describe("monotonicity", () => {
  const scenarioArb = requestArb.chain((request) =>
    fc.record({
      request: fc.constant(request),
      statements: fc.array(statementArb, { minLength: 1, maxLength: 6 }),
      remove: fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
      grants: fc.array(grantArb([request.principal, ...PRINCIPALS]), { maxLength: 2 }),
      extraAllow: statementArb.map(
        ({ NotPrincipal, ...st }): Statement => ({
          ...st,
          ...(NotPrincipal !== undefined ? { Principal: NotPrincipal } : {}),
          Effect: "Allow",
        }),
      ),
      extraDeny: statementArb.map((st) => ({ ...st, Effect: "Deny" as const })),
      extraGrant: grantArb([request.principal]),
      at: fc.nat(),
    }),
  );

  test(
    "fewer Allows or grants never allow more; more Allows or grants never allow less; a Deny never allows more",
    async () => {
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          const base = [FILLER, ...s.statements];
          const withoutSomeAllows = base.filter(
            (st, i) => i === 0 || st.Effect === "Deny" || !s.remove[i - 1],
          );
          const onlyDenies = base.filter((st, i) => i === 0 || st.Effect === "Deny");
          const othersGrants = s.grants.filter((g) => g.grantee !== s.request.principal);

          const before = await run(base, s.grants, s.request);
          const fewerAllows = await run(withoutSomeAllows, s.grants, s.request);
          const fewerGrants = await run(base, s.grants.slice(1), s.request);
          const moreAllows = await run(insertAt(base, s.at, s.extraAllow), s.grants, s.request);
          const moreGrants = await run(base, [...s.grants, s.extraGrant], s.request);
          const moreDenies = await run(insertAt(base, s.at, s.extraDeny), s.grants, s.request);
          const nothingAllows = await run(onlyDenies, othersGrants, s.request);

          const implies = (a: Outcome, b: Outcome) => !a.allowed || b.allowed;
          expect({
            fewerAllowsAllowOnlyWhatWasAllowed: implies(fewerAllows, before),
            fewerGrantsAllowOnlyWhatWasAllowed: implies(fewerGrants, before),
            moreAllowsKeepWhatWasAllowed: implies(before, moreAllows),
            moreGrantsKeepWhatWasAllowed: implies(before, moreGrants),
            aDenyAllowsOnlyWhatWasAllowed: implies(moreDenies, before),
            withoutAnyAllowSourceNothingIsAllowed: !nothingAllows.allowed,
          }).toEqual({
            fewerAllowsAllowOnlyWhatWasAllowed: true,
            fewerGrantsAllowOnlyWhatWasAllowed: true,
            moreAllowsKeepWhatWasAllowed: true,
            moreGrantsKeepWhatWasAllowed: true,
            aDenyAllowsOnlyWhatWasAllowed: true,
            withoutAnyAllowSourceNothingIsAllowed: true,
          });
        }),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// 2b. A context key in another case neither widens an Allow nor steps around a Deny
// ---------------------------------------------------------------------------------------------

describe("case-variant context keys", () => {
  /** Another spelling of `key` than any the context has, if one exists. */
  const respell = (key: string, context: EncryptionContext): string | undefined =>
    [key.toUpperCase(), key.toLowerCase(), key.charAt(0).toUpperCase() + key.slice(1)].find(
      (k) => !Object.hasOwn(context, k),
    );
  // kms:EncryptionContextKeys is exact, as AWS: a policy on it may well allow more keys.
  const readsKeyList = (st: Statement) =>
    JSON.stringify(st.Condition ?? {}).includes("EncryptionContextKeys");
  const scenarioArb = requestArb
    .filter((r) => r.operation !== "describeKey" && Object.keys(r.context ?? {}).length > 0)
    .chain((request) =>
      fc.record({
        request: fc.constant(request),
        statements: fc.array(
          statementArb.filter((st) => !readsKeyList(st)),
          { minLength: 1, maxLength: 5 },
        ),
        // Not EncryptionContextSubset grants: any added pair may complete a subset, by design.
        grants: fc.array(
          grantArb([request.principal, ...PRINCIPALS]).filter(
            (g) => g.constraints?.encryptionContextSubset === undefined,
          ),
          { maxLength: 2 },
        ),
        pick: fc.nat(),
        at: fc.nat(),
        value: fc.constantFrom(...TENANTS),
      }),
    )
    .filter((s) => {
      const keys = Object.keys(s.request.context ?? {});
      return respell(keys[s.pick % keys.length]!, s.request.context ?? {}) !== undefined;
    });

  test(
    "adding a pair whose key differs only in case from another never allows more",
    async () => {
      await fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          const context = s.request.context ?? {};
          const keys = Object.keys(context);
          const variant = respell(keys[s.pick % keys.length]!, context)!;
          const widened: Request = {
            ...s.request,
            // Anywhere: which spelling comes first must not matter.
            context: contextOf(insertAt(Object.entries(context), s.at, [variant, s.value])),
          };
          const before = await run([FILLER, ...s.statements], s.grants, s.request);
          const after = await run([FILLER, ...s.statements], s.grants, widened);
          expect({ variant, allowedWithVariant: after.allowed }).toEqual({
            variant,
            allowedWithVariant: after.allowed && before.allowed,
          });
        }),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// 3. Policy variables substitute literally
// ---------------------------------------------------------------------------------------------

interface VariableForm {
  readonly name: string;
  readonly version: "2012-10-17" | "2008-10-17";
  readonly statements: readonly Statement[];
  readonly allows: (user: string, tenant: string) => boolean;
}

const encryptFor = (condition: ConditionBlock): Statement => ({
  Effect: "Allow",
  Principal: OTHER_ACCOUNT_USERS,
  Action: "kms:Encrypt",
  Resource: "*",
  Condition: condition,
});
const sameText = (user: string, tenant: string) => user === tenant;

const VARIABLE_FORMS: readonly VariableForm[] = [
  {
    name: "StringLike tenant = ${aws:username}",
    version: "2012-10-17",
    statements: [encryptFor({ StringLike: { "kms:EncryptionContext:tenant": "${aws:username}" } })],
    allows: sameText,
  },
  {
    name: "StringEquals tenant = ${aws:username}",
    version: "2012-10-17",
    statements: [
      encryptFor({ StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } }),
    ],
    allows: sameText,
  },
  {
    name: "StringLike aws:username = ${kms:EncryptionContext:tenant}",
    version: "2012-10-17",
    statements: [encryptFor({ StringLike: { "aws:username": "${kms:EncryptionContext:tenant}" } })],
    allows: sameText,
  },
  {
    name: "ArnLike aws:PrincipalArn = …:user/${kms:EncryptionContext:tenant}",
    version: "2012-10-17",
    statements: [
      encryptFor({
        ArnLike: {
          "aws:PrincipalArn": `arn:aws:iam::${OTHER}:user/\${kms:EncryptionContext:tenant}`,
        },
      }),
    ],
    allows: sameText,
  },
  {
    name: "Deny StringNotLike tenant = ${aws:username} under an Allow",
    version: "2012-10-17",
    statements: [
      { Effect: "Allow", Principal: OTHER_ACCOUNT_USERS, Action: "kms:Encrypt", Resource: "*" },
      {
        Effect: "Deny",
        Principal: OTHER_ACCOUNT_USERS,
        Action: "kms:Encrypt",
        Resource: "*",
        Condition: { StringNotLike: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      },
    ],
    allows: sameText,
  },
  {
    name: "2008-10-17: ${aws:username} is plain text",
    version: "2008-10-17",
    statements: [encryptFor({ StringLike: { "kms:EncryptionContext:tenant": "${aws:username}" } })],
    allows: (_user, tenant) => tenant === "${aws:username}",
  },
];

/** Pieces of user names and tenants: glob metacharacters, variable syntax, the glob escape. */
const META_UNITS = [
  "*",
  "?",
  "$",
  "{",
  "}",
  "${",
  "a",
  "B",
  ":",
  "'",
  ",",
  " ",
  "\\",
  "\u{E000}", // the private-use code point the evaluator uses to escape substituted text
  "é",
  "\u{1F600}",
];
const SPECIAL_TEXTS = ["*", "?", "**", "${aws:username}", "${*}", "$", "\u{E000}*", "alice"];
const metaTextArb = fc.oneof(
  fc.string({ unit: fc.constantFrom(...META_UNITS), minLength: 1, maxLength: 6 }),
  fc.constantFrom(...SPECIAL_TEXTS),
);

describe("policy variables substitute literally", () => {
  const keys = new Map<string, string>();

  beforeAll(async () => {
    for (const form of VARIABLE_FORMS) {
      const { keyMetadata } = await kms.createKey({
        policy: policyText([ROOT_ADMIN, ...form.statements], undefined, form.version),
      });
      keys.set(form.name, keyMetadata.keyId);
    }
  });

  const caseArb = fc.uniqueArray(metaTextArb, { minLength: 1, maxLength: 3 }).chain((users) =>
    fc.record({
      users: fc.constant(users),
      tenant: fc.oneof(fc.constantFrom(...users), metaTextArb, fc.constant("")),
    }),
  );

  test(
    "a variable allows exactly the user whose name is the tenant, metacharacters included",
    async () => {
      await fc.assert(
        fc.asyncProperty(caseArb, async ({ users, tenant }) => {
          for (const form of VARIABLE_FORMS) {
            const keyId = keys.get(form.name)!;
            for (const user of users) {
              const outcome = await attempt(() =>
                kms.encrypt(
                  { keyId, plaintext, encryptionContext: { tenant } },
                  as(`arn:aws:iam::${OTHER}:user/${user}`),
                ),
              );
              expect({ form: form.name, user, tenant, allowed: outcome.allowed }).toEqual({
                form: form.name,
                user,
                tenant,
                allowed: form.allows(user, tenant),
              });
            }
          }
        }),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  test(
    "a Resource variable matches only the key its value spells, never as a wildcard",
    async () => {
      const { keyMetadata } = await kms.createKey();
      const keyId = keyMetadata.keyId;
      await kms.putKeyPolicy({
        keyId,
        policy: policyText(
          [
            ROOT_ADMIN,
            {
              Effect: "Allow",
              Principal: OTHER_ACCOUNT_USERS,
              Action: "kms:Encrypt",
              Resource: `arn:aws:kms:local:${ACCOUNT}:key/\${aws:username}`,
            },
          ],
          keyMetadata.arn,
        ),
      });
      // Names derived from the key id at run time: the id itself and wildcard spellings of it.
      const userArb = fc.oneof(
        metaTextArb,
        fc.constantFrom(
          keyId,
          `${keyId.slice(0, -1)}?`,
          `${keyId.slice(0, 8)}*`,
          `*${keyId.slice(-4)}`,
          keyId.toUpperCase(),
        ),
      );
      await fc.assert(
        fc.asyncProperty(userArb, async (user) => {
          const outcome = await attempt(() =>
            kms.encrypt({ keyId, plaintext }, as(`arn:aws:iam::${OTHER}:user/${user}`)),
          );
          expect({ user, allowed: outcome.allowed }).toEqual({ user, allowed: user === keyId });
        }),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// 4. Grant constraints
// ---------------------------------------------------------------------------------------------

type Pairs = readonly (readonly [string, string])[];

interface ConstraintSpec {
  readonly equals: Pairs | undefined;
  readonly subset: Pairs | undefined;
}

/** Reference: every required pair is in `actual`, keys compared case-insensitively, values exactly. */
function covers(required: Pairs, actual: Pairs): boolean {
  return required.every(([k, v]) =>
    actual.some(([ak, av]) => ak.toLowerCase() === k.toLowerCase() && av === v),
  );
}

/** Reference for AWS's grant constraints: Subset needs its pairs; Equals needs exactly its pairs. */
function admits(c: ConstraintSpec | undefined, context: Pairs): boolean {
  if (c === undefined) return true;
  if (c.equals !== undefined && !(covers(c.equals, context) && covers(context, c.equals))) {
    return false;
  }
  return c.subset === undefined || covers(c.subset, context);
}

function toConstraints(c: ConstraintSpec | undefined): GrantConstraints | undefined {
  if (c === undefined) return undefined;
  if (c.equals !== undefined) return { encryptionContextEquals: contextOf(c.equals) };
  if (c.subset !== undefined) return { encryptionContextSubset: contextOf(c.subset) };
  throw new Error("a constraint spec holds one constraint");
}

const GRANT_KEYS = ["tenant", "Tenant", "TENANT", "region", "constructor", "__proto__"];
const GRANT_VALUES = ["a", "A", "b", "*", ""];

interface Mutation {
  readonly kind: "same" | "insert" | "shadow" | "replace" | "drop" | "recase" | "revalue";
  readonly pair: readonly [string, string];
  readonly index: number;
}

type Removal = "revoke" | "retire-by-token" | "retire-by-grantee";

interface GrantCase {
  readonly constraints: ConstraintSpec | undefined;
  readonly removal: Removal;
}

/**
 * `caseCollisions`: whether one map may hold keys that differ only in case (`tenant`, `TENANT`).
 * Without them the reference is unambiguous and must agree exactly; with them AWS's rule leaves
 * room for interpretation, so only soundness is checked (never allowed where it must be denied).
 */
function grantScenarioArb(caseCollisions: boolean) {
  const pairsArb = fc.uniqueArray(
    fc.tuple(fc.constantFrom(...GRANT_KEYS), fc.constantFrom(...GRANT_VALUES)),
    { maxLength: 3, selector: ([k]) => (caseCollisions ? k : k.toLowerCase()) },
  );
  // One constraint per grant: createGrant refuses Equals and Subset together, as AWS does
  // (grants.test.ts covers the refusal and how such a grant stored earlier is still evaluated).
  const constraintArb: fc.Arbitrary<ConstraintSpec | undefined> = fc.oneof(
    pairsArb.map((p) => ({ equals: p, subset: undefined })),
    pairsArb.map((p) => ({ equals: undefined, subset: p })),
    fc.constant(undefined),
  );
  const grantCaseArb: fc.Arbitrary<GrantCase> = fc.record({
    constraints: constraintArb,
    removal: fc.constantFrom<Removal>("revoke", "retire-by-token", "retire-by-grantee"),
  });
  const dedupe = (pairs: Pairs): Pairs => {
    const seen = new Set<string>();
    return pairs.filter(([k]) => {
      const id = caseCollisions ? k : k.toLowerCase();
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
  };
  // Contexts near a constraint (itself, one pair inserted, shadowed by its key in another case,
  // replaced, dropped, re-cased or re-valued) hit the boundary far more often than random ones.
  const mutationArb: fc.Arbitrary<Mutation> = fc.record({
    kind: fc.constantFrom<Mutation["kind"]>(
      "same",
      "insert",
      "shadow",
      "replace",
      "drop",
      "recase",
      "revalue",
    ),
    pair: fc.tuple(fc.constantFrom(...GRANT_KEYS), fc.constantFrom(...GRANT_VALUES)),
    index: fc.nat(),
  });
  const near = (base: Pairs, m: Mutation): Pairs => {
    const i = base.length === 0 ? 0 : m.index % base.length;
    const at = base[i];
    switch (m.kind) {
      case "same":
        return base;
      case "insert":
        // Anywhere, not only at the end: with case-colliding keys the order of pairs matters to
        // an implementation that folds keys into a map.
        return dedupe(insertAt(base, m.index, m.pair));
      case "shadow": {
        // The same key in another case, with another value: two pairs one map would fold.
        if (at === undefined) return base;
        const other = at[0] === at[0].toUpperCase() ? at[0].toLowerCase() : at[0].toUpperCase();
        return dedupe(insertAt(base, m.index, [other, m.pair[1]] as const));
      }
      case "replace":
        return dedupe(base.map((p, j) => (j === i ? m.pair : p)));
      case "drop":
        return base.filter((_, j) => j !== i);
      case "recase":
        return at === undefined
          ? base
          : dedupe(
              base.map((p, j): readonly [string, string] =>
                j === i ? [p[0].toUpperCase(), p[1]] : p,
              ),
            );
      case "revalue":
        return at === undefined
          ? base
          : base.map((p, j): readonly [string, string] => (j === i ? [p[0], m.pair[1]] : p));
    }
  };
  return fc.array(grantCaseArb, { minLength: 1, maxLength: 3 }).chain((grants) => {
    const bases = grants.flatMap((g) => [g.constraints?.equals ?? [], g.constraints?.subset ?? []]);
    const contextArb: fc.Arbitrary<Pairs | undefined> = fc.oneof(
      fc.tuple(fc.constantFrom(...bases), mutationArb).map(([b, m]) => near(b, m)),
      pairsArb,
      fc.constant(undefined),
    );
    return fc.record({
      grants: fc.constant(grants),
      contexts: fc.array(contextArb, { minLength: 4, maxLength: 6 }),
      order: fc.shuffledSubarray(
        grants.map((_, i) => i),
        { minLength: grants.length, maxLength: grants.length },
      ),
    });
  });
}

async function checkGrantScenario(
  s: {
    readonly grants: readonly GrantCase[];
    readonly contexts: readonly (Pairs | undefined)[];
    readonly order: readonly number[];
  },
  exact: boolean,
): Promise<void> {
  // The default policy admits only the Kms's own account: ALICE gets nothing but the grants.
  const { keyMetadata } = await kms.createKey();
  const keyId = keyMetadata.keyId;
  const created: { readonly grantId: string; readonly grantToken: string }[] = [];
  for (const g of s.grants) {
    const constraints = toConstraints(g.constraints);
    created.push(
      await kms.createGrant({
        keyId,
        granteePrincipal: ALICE,
        retiringPrincipal: RETIRER,
        operations: [
          "Encrypt",
          "GenerateDataKey",
          ...(g.removal === "retire-by-grantee" ? (["RetireGrant"] as const) : []),
        ],
        ...(constraints !== undefined ? { constraints } : {}),
      }),
    );
  }
  const live = new Set(s.grants.map((_, i) => i));
  const check = async () => {
    for (const [n, context] of s.contexts.entries()) {
      const request = { keyId, ...contextArgument(context && contextOf(context)) };
      const outcome = await attempt(() =>
        n % 2 === 0
          ? kms.encrypt({ ...request, plaintext }, as(ALICE))
          : kms.generateDataKey({ ...request, keySpec: "AES_256" }, as(ALICE)),
      );
      const expected = [...live].some((i) => admits(s.grants[i]!.constraints, context ?? []));
      const seen = { live: [...live], context, allowed: outcome.allowed };
      if (exact || outcome.allowed) expect(seen).toEqual({ ...seen, allowed: expected });
    }
  };
  await check();
  for (const i of s.order) {
    const g = s.grants[i]!;
    const { grantId, grantToken } = created[i]!;
    if (g.removal === "revoke") await kms.revokeGrant({ keyId, grantId });
    else if (g.removal === "retire-by-token") await kms.retireGrant({ grantToken }, as(RETIRER));
    else await kms.retireGrant({ keyId, grantId }, as(ALICE));
    live.delete(i);
    await check();
  }
}

describe("grant constraints", () => {
  test(
    "a grant admits exactly the contexts its constraints admit; a retired or revoked one nothing",
    async () => {
      await fc.assert(
        fc.asyncProperty(grantScenarioArb(false), (s) => checkGrantScenario(s, true)),
        { numRuns: 200 },
      );
    },
    PROPERTY_TIMEOUT,
  );

  test(
    "with keys that differ only in case, a grant never admits a context the reference refuses",
    async () => {
      await fc.assert(
        fc.asyncProperty(grantScenarioArb(true), (s) => checkGrantScenario(s, false)),
        { numRuns: 300 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// 5. Failure types
// ---------------------------------------------------------------------------------------------

const BASE_OPERATORS = [
  "StringEquals",
  "StringNotEquals",
  "StringEqualsIgnoreCase",
  "StringNotEqualsIgnoreCase",
  "StringLike",
  "StringNotLike",
  "NumericEquals",
  "NumericLessThan",
  "NumericGreaterThanEquals",
  "DateEquals",
  "DateLessThan",
  "Bool",
  "Null",
  "ArnEquals",
  "ArnLike",
  "ArnNotLike",
  "IpAddress",
  "NotIpAddress",
];

/** Names every JS object inherits: a lookup by such a name must not find the prototype's. */
const PROTOTYPE_NAMES = [
  "constructor",
  "toString",
  "__proto__",
  "valueOf",
  "hasOwnProperty",
  "__defineGetter__",
];

const fuzzOperatorArb = fc
  .tuple(
    fc.constantFrom("", "ForAllValues:", "ForAnyValue:"),
    fc.constantFrom(...BASE_OPERATORS),
    fc.constantFrom("", "IfExists"),
  )
  .map(([set, op, suffix]) => `${set}${op}${suffix}`);

const fuzzContextKeyArb = fc.oneof(
  fc.constantFrom(...CONTEXT_KEYS, ...PROTOTYPE_NAMES),
  fc.string({ minLength: 1, maxLength: 8 }),
);

const fuzzConditionKeyArb = fc.oneof(
  fc.constantFrom(
    "aws:username",
    "aws:PrincipalArn",
    "kms:CallerAccount",
    "kms:EncryptionContextKeys",
    "aws:SourceIp",
    "aws:CurrentTime",
    "aws:EpochTime",
    "kms:ViaService",
    "kms:RequestAlias",
    "kms:ResourceAliases",
    "aws:PrincipalTag/constructor",
    "aws:ResourceTag/team",
    "kms:EncryptionAlgorithm",
    "kms:GrantOperations",
  ),
  fuzzContextKeyArb.map((k) => `kms:EncryptionContext:${k}`),
  fc.string({ minLength: 1, maxLength: 12 }),
);

const fuzzValueArb = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.constantFrom(
    "*",
    "?",
    "true",
    "false",
    "10.0.0.0/8",
    "::1",
    "2026-01-01T00:00:00Z",
    "1700000000",
    "42",
    "${aws:username}",
    "${kms:EncryptionContext:tenant, 'x'}",
    "${*}",
    "${aws:PrincipalTag/team}",
  ),
  fuzzContextKeyArb.map((k) => `\${kms:EncryptionContext:${k}}`),
);

const fuzzConditionArb: fc.Arbitrary<ConditionBlock> = fc
  .array(
    fc.tuple(
      fuzzOperatorArb,
      fc.array(
        fc.tuple(
          fuzzConditionKeyArb,
          fc.oneof(fuzzValueArb, fc.array(fuzzValueArb, { minLength: 1, maxLength: 3 })),
        ),
        { minLength: 1, maxLength: 2 },
      ),
    ),
    { minLength: 1, maxLength: 2 },
  )
  .map((ops) => Object.fromEntries(ops.map(([op, kv]) => [op, Object.fromEntries(kv)])));

const fuzzStatementArb: fc.Arbitrary<Statement> = fc
  .record({
    effect: fc.constantFrom<"Allow" | "Deny">("Allow", "Deny"),
    principal: fc.oneof(
      fc.constant("*" as const),
      fc
        .oneof(fc.constantFrom(...PRINCIPALS), fc.string({ minLength: 1, maxLength: 10 }))
        .map((p) => ({ AWS: p })),
    ),
    action: fc.constantFrom(...ALL_ACTIONS),
    resource: fc.constantFrom("*", THIS_KEY),
    condition: fuzzConditionArb,
  })
  .map(({ effect, principal, action, resource, condition }) => ({
    Effect: effect,
    Principal: principal,
    Action: action,
    Resource: resource,
    Condition: condition,
  }));

const fuzzRequestArb: fc.Arbitrary<Request> = fc.record({
  principal: fc.oneof(
    fc.constantFrom(...PRINCIPALS),
    fc.string({ minLength: 1, maxLength: 8 }).map((n) => `arn:aws:iam::${OTHER}:user/${n}`),
    fc.string({ minLength: 1, maxLength: 12 }),
  ),
  operation: fc.constantFrom(...OPERATIONS),
  context: fc.option(
    fc
      .uniqueArray(fc.tuple(fuzzContextKeyArb, fc.string({ maxLength: 8 })), {
        maxLength: 3,
        selector: ([k]) => k,
      })
      .map(contextOf),
    { nil: undefined },
  ),
});

describe("failure types", () => {
  test(
    "putKeyPolicy fails only as malformed; a call fails only with AccessDenied",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fuzzStatementArb, { minLength: 1, maxLength: 3 }),
          fuzzRequestArb,
          fc.option(fc.constantFrom("10.1.2.3", "::1", "not-an-ip"), { nil: undefined }),
          async (statements, request, sourceIp) => {
            const key = await prepareKey([], request);
            try {
              await kms.putKeyPolicy({
                keyId: key.keyId,
                policy: policyText(statements, key.arn),
                bypassPolicyLockoutSafetyCheck: true,
              });
            } catch (error) {
              if (
                !(error instanceof MalformedPolicyDocumentError) &&
                !(error instanceof ValidationError)
              ) {
                throw new Error(`putKeyPolicy failed with ${describeError(error)}`);
              }
            }
            await attempt(() => perform(key, request, sourceIp));
          },
        ),
        { numRuns: 500 },
      );
    },
    PROPERTY_TIMEOUT,
  );
});

// ---------------------------------------------------------------------------------------------
// Regressions: the smallest counterexamples the properties above found
// ---------------------------------------------------------------------------------------------

describe("regressions", () => {
  const aliceEncrypts = (context: EncryptionContext): Request => ({
    principal: ALICE,
    operation: "encrypt",
    context,
  });

  test("a Deny for a missing context key named `constructor` applies (Null is true)", async () => {
    const deny: Statement = {
      Effect: "Deny",
      Principal: "*",
      Action: "kms:Encrypt",
      Resource: "*",
      Condition: { Null: { "kms:EncryptionContext:constructor": "true" } },
    };
    const outcome = await run([ALLOW_EVERYTHING, deny], [], aliceEncrypts({ tenant: "a" }));
    expect(outcome).toMatchObject({ allowed: false });
  });

  test("an Allow on a missing context key named `toString` does not match", async () => {
    const allow = encryptFor({ StringLike: { "kms:EncryptionContext:toString": "*" } });
    const outcome = await run([allow], [], aliceEncrypts({ tenant: "a" }));
    expect(outcome).toMatchObject({ allowed: false });
  });

  test("a variable naming a missing `toString` context key has no value", async () => {
    const allow = encryptFor({
      StringEquals: { "kms:EncryptionContext:tenant": "${kms:EncryptionContext:toString}" },
    });
    const outcome = await run(
      [allow],
      [],
      aliceEncrypts({ tenant: "function toString() { [native code] }" }),
    );
    expect(outcome).toMatchObject({ allowed: false });
  });

  test.each<[string, ConditionBlock]>([
    [
      "an IgnoreCase operator",
      { StringEqualsIgnoreCase: { "kms:EncryptionContext:toString": "a" } },
    ],
    [
      "a glob variable",
      { StringLike: { "kms:EncryptionContext:tenant": "${kms:EncryptionContext:constructor}" } },
    ],
  ])("%s on a missing prototype-named context key denies instead of crashing", async (_, c) => {
    // `run` turns anything but AccessDenied (here KMSInternalException caused by a TypeError)
    // into a failure.
    const outcome = await run([encryptFor(c)], [], aliceEncrypts({ tenant: "a" }));
    expect(outcome).toMatchObject({ allowed: false });
  });

  const grantedEncrypt = async (constraints: GrantConstraints, context: EncryptionContext) =>
    run(
      [FILLER],
      [{ grantee: ALICE, operations: ["Encrypt"], constraints }],
      aliceEncrypts(context),
    );

  test("EncryptionContextEquals does not admit a second pair whose key differs only in case", async () => {
    const outcome = await grantedEncrypt(
      { encryptionContextEquals: { tenant: "b" } },
      { tenant: "a", TENANT: "b" },
    );
    expect(outcome).toMatchObject({ allowed: false });
  });

  test("EncryptionContextEquals with case-colliding keys does not admit an extra pair", async () => {
    const outcome = await grantedEncrypt(
      { encryptionContextEquals: { tenant: "a", TENANT: "a" } },
      { tenant: "a", region: "x" },
    );
    expect(outcome).toMatchObject({ allowed: false });
  });
});
