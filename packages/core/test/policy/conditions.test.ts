// biome-ignore-all lint/suspicious/noTemplateCurlyInString: IAM policy variables are written `${…}` inside plain strings.
import { describe, expect, test } from "vitest";
import type { StoredKey } from "../../src/keystore/key-store.ts";
import {
  actionOf,
  authorizationRequest,
  type CallState,
  defaultAccountPolicy,
} from "../../src/policy/authorizer.ts";
import { evaluate } from "../../src/policy/evaluate.ts";
import {
  type PolicyDocument,
  parsePolicy,
  parsePolicyCached,
} from "../../src/policy/policy-document.ts";
import { indexPrincipalTags } from "../../src/policy/principal-tags.ts";

/**
 * One row per operator and per condition key: a policy with a single Allow statement for
 * ALICE carrying the condition, evaluated for a call; `allow` is the expected decision.
 */
const IDENTITY = { partition: "aws", region: "local", account: "000000000000" };
const ALICE = "arn:aws:iam::111122223333:user/alice";
const NOW = Date.UTC(2026, 0, 1, 12);
const KEY: StoredKey = {
  keyId: "1234abcd-12ab-34cd-56ef-1234567890ab",
  revision: 1,
  createdAt: 0,
  description: "",
  keySpec: "SYMMETRIC_DEFAULT",
  keyUsage: "ENCRYPT_DECRYPT",
  origin: "AWS_KMS",
  multiRegion: false,
  keyState: "Enabled",
  rotation: { enabled: false, periodInDays: 365, onDemandRotations: 0 },
  tags: [{ tagKey: "Project", tagValue: "apollo" }],
  versions: [],
  currentVersion: 1,
};

interface Call {
  readonly operation?: string;
  readonly request?: Record<string, unknown>;
  readonly principal?: string;
  readonly sourceIp?: string;
  readonly viaService?: string;
  readonly aliases?: readonly string[];
  readonly key?: StoredKey;
}

function decide(condition: Record<string, unknown>, c: Call = {}): boolean {
  return decidePolicy(
    {
      Version: "2012-10-17",
      Statement: [
        {
          Effect: "Allow",
          Principal: { AWS: ALICE },
          Action: "kms:*",
          Resource: "*",
          Condition: condition,
        },
      ],
    },
    c,
  );
}

function decidePolicy(document: Record<string, unknown>, c: Call = {}): boolean {
  const policy = parsePolicy(JSON.stringify(document));
  const principal = c.principal ?? ALICE;
  const call: CallState = {
    operation: c.operation ?? "encrypt",
    principal,
    principalAccount: principal.split(":")[4] ?? "000000000000",
    request: c.request ?? {},
    ...(c.sourceIp !== undefined ? { sourceIp: c.sourceIp } : {}),
    ...(c.viaService !== undefined ? { viaService: c.viaService } : {}),
    requestId: "r",
    now: NOW,
    settings: {
      identity: IDENTITY,
      enabled: true,
      accountPolicy: defaultAccountPolicy(IDENTITY),
      principalTags: indexPrincipalTags({ [ALICE]: { Team: "blue" } }),
    },
    keys: new Map(),
    decisions: [],
  };
  const request = authorizationRequest(
    call,
    actionOf(call.operation),
    c.key ?? KEY,
    "single",
    c.aliases,
  );
  return evaluate(policy, [], request).allowed;
}

const ec = (context: Record<string, string>): Call => ({ request: { encryptionContext: context } });

type Row = [string, Record<string, unknown>, Call, boolean];

const ROWS: Row[] = [
  // String operators
  [
    "StringEquals hit",
    { StringEquals: { "kms:EncryptionContext:tenant": "a" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "StringEquals miss",
    { StringEquals: { "kms:EncryptionContext:tenant": "a" } },
    ec({ tenant: "b" }),
    false,
  ],
  ["StringEquals absent key", { StringEquals: { "kms:EncryptionContext:tenant": "a" } }, {}, false],
  [
    "StringEquals any of several values",
    { StringEquals: { "kms:EncryptionContext:tenant": ["x", "a"] } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "StringNotEquals hit",
    { StringNotEquals: { "kms:EncryptionContext:tenant": "b" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "StringNotEquals miss",
    { StringNotEquals: { "kms:EncryptionContext:tenant": "b" } },
    ec({ tenant: "b" }),
    false,
  ],
  [
    "StringNotEquals absent key is true",
    { StringNotEquals: { "kms:EncryptionContext:tenant": "b" } },
    {},
    true,
  ],
  [
    "StringNotEquals none of several",
    { StringNotEquals: { "kms:EncryptionContext:tenant": ["b", "a"] } },
    ec({ tenant: "a" }),
    false,
  ],
  [
    "StringEqualsIgnoreCase",
    { StringEqualsIgnoreCase: { "kms:EncryptionContext:tenant": "ACME" } },
    ec({ tenant: "acme" }),
    true,
  ],
  [
    "StringEquals is case-sensitive",
    { StringEquals: { "kms:EncryptionContext:tenant": "ACME" } },
    ec({ tenant: "acme" }),
    false,
  ],
  [
    "StringNotEqualsIgnoreCase",
    { StringNotEqualsIgnoreCase: { "kms:EncryptionContext:tenant": "ACME" } },
    ec({ tenant: "acme" }),
    false,
  ],
  [
    "StringLike *",
    { StringLike: { "kms:EncryptionContext:path": "users/*" } },
    ec({ path: "users/42/doc" }),
    true,
  ],
  [
    "StringLike ? matches one",
    { StringLike: { "kms:EncryptionContext:path": "v?" } },
    ec({ path: "v1" }),
    true,
  ],
  [
    "StringLike ? not two",
    { StringLike: { "kms:EncryptionContext:path": "v?" } },
    ec({ path: "v12" }),
    false,
  ],
  [
    "StringLike ? matches one character outside the BMP (two UTF-16 units)",
    { StringLike: { "kms:EncryptionContext:path": "v?" } },
    ec({ path: "v\u{1F510}" }),
    true,
  ],
  [
    "StringLike ?? does not match one character outside the BMP",
    { StringLike: { "kms:EncryptionContext:path": "v??" } },
    ec({ path: "v\u{1F510}" }),
    false,
  ],
  [
    "StringLike ? never matches half of a character outside the BMP",
    { StringLike: { "kms:EncryptionContext:path": "?\uDD10" } },
    ec({ path: "\u{1F510}" }),
    false,
  ],
  [
    "StringNotLike",
    { StringNotLike: { "kms:EncryptionContext:path": "admin/*" } },
    ec({ path: "admin/x" }),
    false,
  ],
  [
    "StringNotLike other",
    { StringNotLike: { "kms:EncryptionContext:path": "admin/*" } },
    ec({ path: "users/x" }),
    true,
  ],
  // Case rules
  [
    "condition key name is case-insensitive",
    { StringEquals: { "KMS:ENCRYPTIONCONTEXT:tenant": "a" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "context key part is case-insensitive (AWS: condition key names are)",
    { StringEquals: { "kms:EncryptionContext:Tenant": "a" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "context values stay case-sensitive",
    { StringEquals: { "kms:EncryptionContext:Tenant": "a" } },
    ec({ tenant: "A" }),
    false,
  ],
  [
    "Null sees a context key in another case",
    { Null: { "kms:EncryptionContext:TENANT": "false" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "IfExists sees a context key in another case",
    { StringEqualsIfExists: { "kms:EncryptionContext:Tenant": "a" } },
    ec({ tenant: "b" }),
    false,
  ],
  [
    "kms:EncryptionContextKeys stays case-sensitive",
    { "ForAnyValue:StringEquals": { "kms:EncryptionContextKeys": "Tenant" } },
    ec({ tenant: "a" }),
    false,
  ],
  // A key held in several cases: an Allow's condition must hold for every value.
  [
    "Allow: StringEquals with a case-variant duplicate holding another value",
    { StringEquals: { "kms:EncryptionContext:tenant": "a" } },
    ec({ tenant: "a", Tenant: "b" }),
    false,
  ],
  [
    "Allow: StringEquals when every case variant holds an allowed value",
    { StringEquals: { "kms:EncryptionContext:tenant": ["a", "b"] } },
    ec({ tenant: "a", TENANT: "b" }),
    true,
  ],
  [
    "Allow: StringNotEquals with a case-variant duplicate holding the excluded value",
    { StringNotEquals: { "kms:EncryptionContext:tenant": "b" } },
    ec({ tenant: "a", Tenant: "b" }),
    false,
  ],
  [
    "Allow: StringEqualsIfExists with a case-variant duplicate holding another value",
    { StringEqualsIfExists: { "kms:EncryptionContext:tenant": "a" } },
    ec({ tenant: "a", Tenant: "b" }),
    false,
  ],
  [
    "Allow: ForAnyValue on a single-valued key is tested per value too",
    { "ForAnyValue:StringEquals": { "kms:EncryptionContext:tenant": "a" } },
    ec({ Tenant: "b", tenant: "a" }),
    false,
  ],
  [
    "Allow: a variable naming a key held in several cases must match for every value",
    { StringEquals: { "aws:PrincipalTag/Team": "${kms:EncryptionContext:team}" } },
    ec({ team: "blue", Team: "red" }),
    false,
  ],
  [
    "Allow: a variable naming a key held in several cases, all values matching",
    { StringEquals: { "aws:PrincipalTag/Team": "${kms:EncryptionContext:team}" } },
    ec({ team: "blue", Team: "blue" }),
    true,
  ],
  [
    "operator names are case-sensitive (unknown → malformed) is tested elsewhere; IfExists",
    { StringEqualsIfExists: { "kms:EncryptionContext:tenant": "a" } },
    {},
    true,
  ],
  [
    "IfExists still checks a present key",
    { StringEqualsIfExists: { "kms:EncryptionContext:tenant": "a" } },
    ec({ tenant: "b" }),
    false,
  ],
  // Numeric
  ["NumericEquals", { NumericEquals: { "kms:EncryptionContext:n": "5" } }, ec({ n: "5" }), true],
  [
    "NumericEquals numeric JSON value",
    { NumericEquals: { "kms:EncryptionContext:n": 5 } },
    ec({ n: "5.0" }),
    true,
  ],
  [
    "NumericNotEquals",
    { NumericNotEquals: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "5" }),
    false,
  ],
  // A request value is a number only as IAM writes one: Number() would read each of these as 16.
  ...["0x10", "0b10000", "0o20", "1.6e1", " 16", "16.", "+16"].map(
    (n): Row => [
      `NumericEquals is false for the request value ${JSON.stringify(n)}, which is not decimal`,
      { NumericEquals: { "kms:EncryptionContext:n": "16" } },
      ec({ n }),
      false,
    ],
  ),
  [
    "NumericLessThan holds for a decimal request value",
    { NumericLessThan: { "kms:EncryptionContext:n": "100" } },
    ec({ n: "-16.5" }),
    true,
  ],
  [
    "NumericLessThan is false for a hexadecimal request value",
    { NumericLessThan: { "kms:EncryptionContext:n": "100" } },
    ec({ n: "0x10" }),
    false,
  ],
  [
    "NumericLessThan",
    { NumericLessThan: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "4" }),
    true,
  ],
  [
    "NumericLessThan equal",
    { NumericLessThan: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "5" }),
    false,
  ],
  [
    "NumericLessThanEquals",
    { NumericLessThanEquals: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "5" }),
    true,
  ],
  [
    "NumericGreaterThan",
    { NumericGreaterThan: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "6" }),
    true,
  ],
  [
    "NumericGreaterThanEquals",
    { NumericGreaterThanEquals: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "4" }),
    false,
  ],
  [
    "Numeric on a non-number value",
    { NumericEquals: { "kms:EncryptionContext:n": "5" } },
    ec({ n: "five" }),
    false,
  ],
  ["aws:EpochTime", { NumericGreaterThan: { "aws:EpochTime": 1_700_000_000 } }, {}, true],
  // Date
  [
    "DateGreaterThan aws:CurrentTime",
    { DateGreaterThan: { "aws:CurrentTime": "2025-12-31T00:00:00Z" } },
    {},
    true,
  ],
  [
    "DateLessThan aws:CurrentTime",
    { DateLessThan: { "aws:CurrentTime": "2025-12-31T00:00:00Z" } },
    {},
    false,
  ],
  ["DateEquals", { DateEquals: { "aws:CurrentTime": "2026-01-01T12:00:00Z" } }, {}, true],
  ["DateNotEquals", { DateNotEquals: { "aws:CurrentTime": "2026-01-01T12:00:00Z" } }, {}, false],
  [
    "DateLessThanEquals",
    { DateLessThanEquals: { "aws:CurrentTime": "2026-01-01T12:00:00Z" } },
    {},
    true,
  ],
  [
    "DateGreaterThanEquals epoch seconds",
    { DateGreaterThanEquals: { "aws:CurrentTime": String(NOW / 1000 + 1) } },
    {},
    false,
  ],
  // Bool and Null
  ["Bool true", { Bool: { "kms:EncryptionContext:flag": "true" } }, ec({ flag: "true" }), true],
  [
    "Bool false vs true",
    { Bool: { "kms:EncryptionContext:flag": false } },
    ec({ flag: "true" }),
    false,
  ],
  [
    "Null false requires the key",
    { Null: { "kms:EncryptionContextKeys": "false" } },
    ec({ a: "b" }),
    true,
  ],
  ["Null false without the key", { Null: { "kms:EncryptionContextKeys": "false" } }, {}, false],
  ["Null true with aws:SourceIp absent", { Null: { "aws:SourceIp": "true" } }, {}, true],
  [
    "Null true with aws:SourceIp present",
    { Null: { "aws:SourceIp": "true" } },
    { sourceIp: "10.0.0.1" },
    false,
  ],
  // ARN
  [
    "ArnLike aws:PrincipalArn",
    { ArnLike: { "aws:PrincipalArn": "arn:aws:iam::111122223333:user/a*" } },
    {},
    true,
  ],
  [
    "ArnLike other user",
    { ArnLike: { "aws:PrincipalArn": "arn:aws:iam::111122223333:user/b*" } },
    {},
    false,
  ],
  ["ArnEquals", { ArnEquals: { "aws:PrincipalArn": ALICE } }, {}, true],
  ["ArnNotEquals", { ArnNotEquals: { "aws:PrincipalArn": ALICE } }, {}, false],
  ["ArnNotLike", { ArnNotLike: { "aws:PrincipalArn": "arn:aws:iam::*:user/bob" } }, {}, true],
  [
    "ArnEqualsIfExists",
    { ArnEqualsIfExists: { "aws:PrincipalArn": "arn:aws:iam::111122223333:user/x" } },
    {},
    false,
  ],
  // IP
  [
    "IpAddress in block",
    { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } },
    { sourceIp: "10.1.2.3" },
    true,
  ],
  [
    "IpAddress outside",
    { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } },
    { sourceIp: "192.168.1.1" },
    false,
  ],
  ["IpAddress absent", { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } }, {}, false],
  [
    "NotIpAddress",
    { NotIpAddress: { "aws:SourceIp": "10.0.0.0/8" } },
    { sourceIp: "192.168.1.1" },
    true,
  ],
  [
    "IpAddress IPv6",
    { IpAddress: { "aws:SourceIp": "2001:db8::/32" } },
    { sourceIp: "2001:db8::1" },
    true,
  ],
  // Set operators
  [
    "ForAllValues subset",
    { "ForAllValues:StringEquals": { "kms:EncryptionContextKeys": ["tenant", "purpose"] } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "ForAllValues extra key",
    { "ForAllValues:StringEquals": { "kms:EncryptionContextKeys": ["tenant"] } },
    ec({ tenant: "a", x: "y" }),
    false,
  ],
  [
    "ForAllValues with no context is vacuously true",
    { "ForAllValues:StringEquals": { "kms:EncryptionContextKeys": ["tenant"] } },
    {},
    true,
  ],
  [
    "ForAnyValue hit",
    { "ForAnyValue:StringEquals": { "kms:EncryptionContextKeys": "tenant" } },
    ec({ tenant: "a", x: "y" }),
    true,
  ],
  [
    "ForAnyValue miss",
    { "ForAnyValue:StringEquals": { "kms:EncryptionContextKeys": "tenant" } },
    ec({ x: "y" }),
    false,
  ],
  [
    "ForAnyValue absent",
    { "ForAnyValue:StringEquals": { "kms:EncryptionContextKeys": "tenant" } },
    {},
    false,
  ],
  [
    "ForAnyValue:StringLike",
    { "ForAnyValue:StringLike": { "kms:EncryptionContextKeys": "ten*" } },
    ec({ tenant: "a" }),
    true,
  ],
  [
    "ForAllValues:StringNotEquals",
    { "ForAllValues:StringNotEquals": { "kms:EncryptionContextKeys": "secret" } },
    ec({ a: "1", secret: "2" }),
    false,
  ],
  [
    "ForAnyValue:StringNotEquals",
    { "ForAnyValue:StringNotEquals": { "kms:EncryptionContextKeys": "secret" } },
    ec({ a: "1", secret: "2" }),
    true,
  ],
  // kms: keys
  ["kms:CallerAccount", { StringEquals: { "kms:CallerAccount": "111122223333" } }, {}, true],
  ["kms:CallerAccount other", { StringEquals: { "kms:CallerAccount": "999999999999" } }, {}, false],
  [
    "kms:ViaService",
    { StringEquals: { "kms:ViaService": "s3.local.amazonaws.com" } },
    { viaService: "s3.local.amazonaws.com" },
    true,
  ],
  [
    "kms:ViaService absent",
    { StringEquals: { "kms:ViaService": "s3.local.amazonaws.com" } },
    {},
    false,
  ],
  [
    "kms:RequestAlias",
    { StringEquals: { "kms:RequestAlias": "alias/app" } },
    { request: { keyId: "alias/app" } },
    true,
  ],
  [
    "kms:RequestAlias from alias ARN",
    { StringEquals: { "kms:RequestAlias": "alias/app" } },
    { request: { keyId: "arn:aws:kms:local:000000000000:alias/app" } },
    true,
  ],
  [
    "kms:RequestAlias with a key id",
    { StringEquals: { "kms:RequestAlias": "alias/app" } },
    { request: { keyId: KEY.keyId } },
    false,
  ],
  [
    "kms:ResourceAliases",
    { "ForAnyValue:StringEquals": { "kms:ResourceAliases": "alias/app" } },
    { aliases: ["alias/app", "alias/b"] },
    true,
  ],
  [
    "kms:ResourceAliases miss",
    { "ForAnyValue:StringEquals": { "kms:ResourceAliases": "alias/none" } },
    { aliases: ["alias/app"] },
    false,
  ],
  ["kms:KeySpec", { StringEquals: { "kms:KeySpec": "SYMMETRIC_DEFAULT" } }, {}, true],
  ["kms:KeySpec other", { StringEquals: { "kms:KeySpec": "RSA_2048" } }, {}, false],
  ["kms:KeyUsage", { StringEquals: { "kms:KeyUsage": "ENCRYPT_DECRYPT" } }, {}, true],
  ["kms:KeyUsage other", { StringEquals: { "kms:KeyUsage": "SIGN_VERIFY" } }, {}, false],
  ["kms:KeyOrigin", { StringEquals: { "kms:KeyOrigin": "AWS_KMS" } }, {}, true],
  ["kms:KeyOrigin other", { StringEquals: { "kms:KeyOrigin": "EXTERNAL" } }, {}, false],
  [
    "kms:EncryptionAlgorithm defaulted",
    { StringEquals: { "kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT" } },
    {},
    true,
  ],
  [
    "kms:EncryptionAlgorithm other",
    { StringEquals: { "kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256" } },
    {},
    false,
  ],
  [
    "kms:SigningAlgorithm",
    { StringEquals: { "kms:SigningAlgorithm": "ECDSA_SHA_256" } },
    { operation: "sign", request: { signingAlgorithm: "ECDSA_SHA_256" } },
    true,
  ],
  [
    "kms:SigningAlgorithm other",
    { StringEquals: { "kms:SigningAlgorithm": "ECDSA_SHA_256" } },
    { operation: "sign", request: { signingAlgorithm: "RSASSA_PSS_SHA_256" } },
    false,
  ],
  [
    "kms:MacAlgorithm",
    { StringEquals: { "kms:MacAlgorithm": "HMAC_SHA_256" } },
    { operation: "generateMac", request: { macAlgorithm: "HMAC_SHA_256" } },
    true,
  ],
  [
    "kms:MacAlgorithm other",
    { StringEquals: { "kms:MacAlgorithm": "HMAC_SHA_256" } },
    { operation: "generateMac", request: { macAlgorithm: "HMAC_SHA_512" } },
    false,
  ],
  [
    "kms:GrantOperations subset",
    { "ForAllValues:StringEquals": { "kms:GrantOperations": ["Encrypt", "Decrypt"] } },
    { operation: "createGrant", request: { operations: ["Encrypt"] } },
    true,
  ],
  [
    "kms:GrantOperations beyond",
    { "ForAllValues:StringEquals": { "kms:GrantOperations": ["Encrypt", "Decrypt"] } },
    { operation: "createGrant", request: { operations: ["Encrypt", "CreateGrant"] } },
    false,
  ],
  [
    "kms:GrantIsForAWSResource via a service",
    { Bool: { "kms:GrantIsForAWSResource": true } },
    { operation: "createGrant", viaService: "ebs.amazonaws.com" },
    true,
  ],
  [
    "kms:GrantIsForAWSResource direct",
    { Bool: { "kms:GrantIsForAWSResource": true } },
    { operation: "createGrant" },
    false,
  ],
  [
    "kms:GrantConstraintType",
    { StringEquals: { "kms:GrantConstraintType": "EncryptionContextEquals" } },
    { operation: "createGrant", request: { constraints: { encryptionContextEquals: { a: "b" } } } },
    true,
  ],
  [
    "kms:GrantConstraintType other",
    { StringEquals: { "kms:GrantConstraintType": "EncryptionContextEquals" } },
    { operation: "createGrant", request: { constraints: { encryptionContextSubset: { a: "b" } } } },
    false,
  ],
  [
    "kms:BypassPolicyLockoutSafetyCheck",
    { Bool: { "kms:BypassPolicyLockoutSafetyCheck": "true" } },
    { operation: "putKeyPolicy", request: { bypassPolicyLockoutSafetyCheck: true } },
    true,
  ],
  [
    "kms:BypassPolicyLockoutSafetyCheck false",
    { Bool: { "kms:BypassPolicyLockoutSafetyCheck": "true" } },
    { operation: "putKeyPolicy", request: { bypassPolicyLockoutSafetyCheck: false } },
    false,
  ],
  // aws: keys
  ["aws:PrincipalTag", { StringEquals: { "aws:PrincipalTag/Team": "blue" } }, {}, true],
  [
    "aws:PrincipalTag key is case-insensitive",
    { StringEquals: { "aws:PrincipalTag/team": "blue" } },
    {},
    true,
  ],
  ["aws:PrincipalTag other value", { StringEquals: { "aws:PrincipalTag/Team": "red" } }, {}, false],
  [
    "aws:PrincipalTag untagged principal",
    { StringEquals: { "aws:PrincipalTag/Team": "blue" } },
    { principal: "arn:aws:iam::111122223333:user/bob" },
    false,
  ],
  ["aws:ResourceTag", { StringEquals: { "aws:ResourceTag/Project": "apollo" } }, {}, true],
  ["aws:ResourceTag other", { StringEquals: { "aws:ResourceTag/Project": "gemini" } }, {}, false],
  [
    "aws:SourceIp",
    { IpAddress: { "aws:SourceIp": "203.0.113.7/32" } },
    { sourceIp: "203.0.113.7" },
    true,
  ],
  ["aws:CurrentTime", { DateLessThan: { "aws:CurrentTime": "2027-01-01T00:00:00Z" } }, {}, true],
  // Several conditions: all must hold
  [
    "two operators both hold",
    {
      StringEquals: { "kms:EncryptionContext:a": "1" },
      IpAddress: { "aws:SourceIp": "10.0.0.0/8" },
    },
    { request: { encryptionContext: { a: "1" } }, sourceIp: "10.0.0.1" },
    true,
  ],
  [
    "two operators, one fails",
    {
      StringEquals: { "kms:EncryptionContext:a": "1" },
      IpAddress: { "aws:SourceIp": "10.0.0.0/8" },
    },
    { request: { encryptionContext: { a: "1" } }, sourceIp: "11.0.0.1" },
    false,
  ],
  ["unknown condition key is absent", { StringEquals: { "kms:NoSuchKey": "x" } }, {}, false],
];

describe("condition operators and keys", () => {
  test.each(ROWS)("%s", (_name, condition, call, allow) => {
    expect(decide(condition, call)).toBe(allow);
  });

  test("every operator of the issue appears in the table", () => {
    const used = new Set(ROWS.flatMap(([, c]) => Object.keys(c)));
    const text = [...used].join(" ");
    for (const op of [
      "StringEquals",
      "StringNotEquals",
      "StringEqualsIgnoreCase",
      "StringNotEqualsIgnoreCase",
      "StringLike",
      "StringNotLike",
      "NumericEquals",
      "NumericNotEquals",
      "NumericLessThan",
      "NumericLessThanEquals",
      "NumericGreaterThan",
      "NumericGreaterThanEquals",
      "DateEquals",
      "DateNotEquals",
      "DateLessThan",
      "DateLessThanEquals",
      "DateGreaterThan",
      "DateGreaterThanEquals",
      "Bool",
      "Null",
      "ArnLike",
      "ArnEquals",
      "ArnNotEquals",
      "ArnNotLike",
      "ForAllValues:",
      "ForAnyValue:",
      "IfExists",
    ]) {
      expect(text).toContain(op);
    }
  });

  test("every condition key of the issue appears in the table", () => {
    const keys = ROWS.flatMap(([, c]) =>
      Object.values(c).flatMap((block) => Object.keys(block as object)),
    )
      .join(" ")
      .toLowerCase();
    for (const key of [
      "kms:encryptioncontext:",
      "kms:encryptioncontextkeys",
      "kms:calleraccount",
      "kms:viaservice",
      "kms:requestalias",
      "kms:resourcealiases",
      "kms:keyspec",
      "kms:keyusage",
      "kms:keyorigin",
      "kms:signingalgorithm",
      "kms:encryptionalgorithm",
      "kms:macalgorithm",
      "kms:grantoperations",
      "kms:grantisforawsresource",
      "kms:grantconstrainttype",
      "kms:bypasspolicylockoutsafetycheck",
      "aws:principaltag/",
      "aws:resourcetag/",
      "aws:currenttime",
      "aws:sourceip",
    ]) {
      expect(keys).toContain(key);
    }
  });
});

describe("kms:EncryptionContext:<key> with the key in several cases", () => {
  /** Everything is allowed, but for what the Deny's condition catches. */
  const denyWhen = (statement: Record<string, unknown>) => ({
    Version: "2012-10-17",
    Statement: [
      { Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*" },
      { Effect: "Deny", Principal: "*", Action: "kms:*", Resource: "*", ...statement },
    ],
  });
  const allowWhen = (statement: Record<string, unknown>) => ({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*", ...statement }],
  });
  const restricted = {
    Condition: { StringEquals: { "kms:EncryptionContext:Stage": "Restricted" } },
  };

  test("a Deny on Stage catches a context spelling it stage", () => {
    expect(decidePolicy(denyWhen(restricted), ec({ stage: "Restricted" }))).toBe(false);
    expect(decidePolicy(denyWhen(restricted), ec({ STAGE: "Restricted" }))).toBe(false);
    expect(decidePolicy(denyWhen(restricted), ec({ stage: "restricted" }))).toBe(true);
  });

  test.each([
    ["the denied value second", { stage: "x", Stage: "Restricted" }],
    ["the denied value first", { Stage: "Restricted", stage: "x" }],
    ["three spellings", { stage: "x", sTaGe: "Restricted", STAGE: "y" }],
  ])("a Deny holds when any spelling holds a value it catches: %s", (_name, context) => {
    expect(decidePolicy(denyWhen(restricted), ec(context))).toBe(false);
  });

  test.each<[string, Record<string, unknown>, Record<string, string>, boolean]>([
    [
      "StringNotEquals catches the spelling that is not Public",
      { StringNotEquals: { "kms:EncryptionContext:stage": "Public" } },
      { stage: "Public", Stage: "Secret" },
      false,
    ],
    [
      "StringNotEquals lets through a context whose every spelling is Public",
      { StringNotEquals: { "kms:EncryptionContext:stage": "Public" } },
      { stage: "Public", Stage: "Public" },
      true,
    ],
    [
      "StringNotLike catches the spelling that does not match",
      { StringNotLike: { "kms:EncryptionContext:stage": "pub*" } },
      { stage: "public", STAGE: "secret" },
      false,
    ],
    [
      "StringEqualsIfExists catches the spelling holding the value",
      { StringEqualsIfExists: { "kms:EncryptionContext:stage": "Restricted" } },
      { stage: "x", Stage: "Restricted" },
      false,
    ],
    [
      "StringNotEqualsIfExists catches the spelling that is not Public",
      { StringNotEqualsIfExists: { "kms:EncryptionContext:stage": "Public" } },
      { stage: "Public", Stage: "Secret" },
      false,
    ],
    [
      "Null (deny without a stage) sees the key in another case",
      { Null: { "kms:EncryptionContext:stage": "true" } },
      { Stage: "x" },
      true,
    ],
    [
      "a variable naming the key: any spelling that differs from the principal's team",
      { StringNotEquals: { "aws:PrincipalTag/Team": "${kms:EncryptionContext:team}" } },
      { team: "blue", Team: "red" },
      false,
    ],
  ])("Deny: %s", (_name, condition, context, allow) => {
    expect(decidePolicy(denyWhen({ Condition: condition }), ec(context))).toBe(allow);
  });

  test("a Resource variable is read every way: a Deny on any, an Allow on all", () => {
    const resource = `arn:aws:kms:local:000000000000:key/\${kms:EncryptionContext:k}`;
    const context = ec({ k: "other", K: KEY.keyId });
    expect(decidePolicy(denyWhen({ Resource: resource }), context)).toBe(false);
    expect(decidePolicy(allowWhen({ Resource: resource }), context)).toBe(false);
    const allowOutside = {
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Principal: "*", Action: "kms:*", NotResource: resource }],
    };
    expect(decidePolicy(allowOutside, context)).toBe(false);
    expect(decidePolicy(allowOutside, ec({ k: "a", K: "b" }))).toBe(true);
  });

  test("past 256 readings an Allow fails and a Deny holds, without testing each", () => {
    // 2^9 spellings of a nine-letter key; 300 of them.
    const context: Record<string, string> = {};
    for (let i = 0; i < 300; i++) {
      const name = [..."abcdefghi"].map((c, bit) => ((i >> bit) & 1 ? c.toUpperCase() : c));
      context[name.join("")] = "v";
    }
    const condition = { Condition: { StringLike: { "kms:EncryptionContext:abcdefghi": "*" } } };
    expect(decidePolicy(allowWhen(condition), ec(context))).toBe(false);
    expect(decidePolicy(denyWhen(condition), ec(context))).toBe(false);
    // Within the bound every reading is tested: all match `*`, so the Allow holds.
    const few = Object.fromEntries(Object.entries(context).slice(0, 256));
    expect(decidePolicy(allowWhen(condition), ec(few))).toBe(true);
  });
});

describe("principals, actions and resources", () => {
  const allowed = (policy: PolicyDocument, principal: string, action = "kms:Encrypt") => {
    const call: CallState = {
      operation: "encrypt",
      principal,
      principalAccount: principal.split(":")[4] || "000000000000",
      request: {},
      requestId: "r",
      now: NOW,
      settings: {
        identity: IDENTITY,
        enabled: true,
        accountPolicy: defaultAccountPolicy(IDENTITY),
        principalTags: new Map(),
      },
      keys: new Map(),
      decisions: [],
    };
    return evaluate(policy, [], authorizationRequest(call, action, KEY, "single")).allowed;
  };
  const document = (...statements: Record<string, unknown>[]) =>
    JSON.stringify({ Version: "2012-10-17", Statement: statements });
  const run = (statement: Record<string, unknown>, principal: string, action = "kms:Encrypt") =>
    allowed(parsePolicy(document(statement)), principal, action);
  const base = { Effect: "Allow", Resource: "*", Action: "kms:*" };

  test.each([
    ["Principal *", { ...base, Principal: "*" }, ALICE, true],
    ["Principal AWS *", { ...base, Principal: { AWS: "*" } }, ALICE, true],
    [
      "account root covers the account's principals",
      { ...base, Principal: { AWS: "arn:aws:iam::111122223333:root" } },
      ALICE,
      true,
    ],
    ["bare account id", { ...base, Principal: { AWS: "111122223333" } }, ALICE, true],
    [
      "another account's root",
      { ...base, Principal: { AWS: "arn:aws:iam::444455556666:root" } },
      ALICE,
      false,
    ],
    ["exact principal", { ...base, Principal: { AWS: [ALICE] } }, ALICE, true],
    ["service principal", { ...base, Principal: { Service: "billing" } }, "billing", true],
  ])("%s", (_n, statement, principal, allow) => {
    expect(run(statement, principal as string)).toBe(allow);
  });

  // NotPrincipal is for Deny only (AWS); under an Allow for everyone, a Deny for everyone but…
  const denyAllBut = (notPrincipal: Record<string, unknown>, principal: string): boolean =>
    allowed(
      parsePolicy(
        document(
          { ...base, Principal: "*" },
          { ...base, Effect: "Deny", NotPrincipal: notPrincipal },
        ),
      ),
      principal,
    );
  const ALICE_ROOT = "arn:aws:iam::111122223333:root";

  test.each([
    ["NotPrincipal exempts the principal it names", { AWS: ALICE }, ALICE, true],
    ["NotPrincipal denies the others", { AWS: "arn:aws:iam::1:user/x" }, ALICE, false],
    [
      "AWS's pattern (the user and its account) exempts the user",
      { AWS: [ALICE, ALICE_ROOT] },
      ALICE,
      true,
    ],
    [
      "…and not the other principals of that account",
      { AWS: [ALICE, ALICE_ROOT] },
      "arn:aws:iam::111122223333:user/mallory",
      false,
    ],
    ["an account root alone does not exempt its users", { AWS: ALICE_ROOT }, ALICE, false],
    ["…only the root itself", { AWS: ALICE_ROOT }, ALICE_ROOT, true],
    ["a bare account id exempts the root", { AWS: "111122223333" }, ALICE_ROOT, true],
    ["…and not its users", { AWS: "111122223333" }, ALICE, false],
    ["NotPrincipal * exempts everyone", { AWS: "*" }, ALICE, true],
  ])("%s", (_n, notPrincipal, principal, allow) => {
    expect(denyAllBut(notPrincipal, principal)).toBe(allow);
  });

  test("a stored Allow with NotPrincipal (refused since) still excludes the account it names", () => {
    // In doubt an Allow does not apply: the account's users stay excluded, as before.
    const stored = parsePolicyCached(document({ ...base, NotPrincipal: { AWS: ALICE_ROOT } }));
    expect(allowed(stored, ALICE)).toBe(false);
    expect(allowed(stored, "arn:aws:iam::444455556666:user/x")).toBe(true);
  });

  test.each([
    ["kms:*", "kms:Encrypt", true],
    ["kms:Encrypt", "kms:Encrypt", true],
    ["KMS:ENCRYPT (actions are case-insensitive)", "kms:Encrypt", true],
    ["kms:Generate*", "kms:GenerateDataKey", true],
    ["kms:Generate*", "kms:Encrypt", false],
    ["kms:?ncrypt", "kms:Encrypt", true],
    ["*", "kms:Decrypt", true],
  ])("Action %s on %s", (pattern, action, allow) => {
    const actionPattern = pattern.split(" ")[0]!;
    expect(run({ ...base, Action: actionPattern, Principal: "*" }, ALICE, action)).toBe(allow);
  });

  test("NotAction allows everything but the listed actions", () => {
    const s = { Effect: "Allow", Resource: "*", Principal: "*", NotAction: "kms:Decrypt" };
    expect(run(s, ALICE, "kms:Encrypt")).toBe(true);
    expect(run(s, ALICE, "kms:Decrypt")).toBe(false);
  });

  test("Resource must match the key ARN; NotResource excludes it", () => {
    const arn = `arn:aws:kms:local:000000000000:key/${KEY.keyId}`;
    expect(run({ ...base, Principal: "*", Resource: arn }, ALICE)).toBe(true);
    expect(
      run({ ...base, Principal: "*", Resource: "arn:aws:kms:local:000000000000:key/other" }, ALICE),
    ).toBe(false);
    expect(run({ Effect: "Allow", Principal: "*", Action: "kms:*", NotResource: arn }, ALICE)).toBe(
      false,
    );
  });
});

describe("policy variables", () => {
  const KEY_ARN = `arn:aws:kms:local:000000000000:key/${KEY.keyId}`;
  const tenant = (value: string, principal = ALICE): Call => ({
    principal,
    request: { encryptionContext: { tenant: value } },
  });
  const allowWhen = (condition: Record<string, unknown>, version = "2012-10-17") => ({
    Version: version,
    Statement: [
      { Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*", Condition: condition },
    ],
  });

  test.each<[string, Record<string, unknown>, Call, boolean]>([
    [
      "${aws:username} is the IAM user's name",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      tenant("alice"),
      true,
    ],
    [
      "another user's tenant does not match",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      tenant("bob"),
      false,
    ],
    [
      "a user with a path: the name after the last slash",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      tenant("carol", "arn:aws:iam::111122223333:user/team/carol"),
      true,
    ],
    [
      "text around the variable",
      { StringEquals: { "kms:EncryptionContext:tenant": "t-${aws:username}-prod" } },
      tenant("t-alice-prod"),
      true,
    ],
    [
      "a principal tag as the variable",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:PrincipalTag/Team}" } },
      tenant("blue"),
      true,
    ],
    [
      "no value and no default: a positive operator is false",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      tenant("billing", "billing-service"),
      false,
    ],
    [
      "no value: the default is used",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username, 'shared'}" } },
      tenant("shared", "billing-service"),
      true,
    ],
    [
      "a default with an escaped quote",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username, 'o''brien'}" } },
      tenant("o'brien", "billing-service"),
      true,
    ],
    [
      "the default is not used when the key has a value",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username, 'shared'}" } },
      tenant("shared"),
      false,
    ],
    [
      "a substituted value is literal in StringLike: a `*` user name is not a wildcard",
      { StringLike: { "kms:EncryptionContext:tenant": "${kms:EncryptionContext:owner}" } },
      { request: { encryptionContext: { tenant: "anything", owner: "*" } } },
      false,
    ],
    [
      "the same value matches itself literally",
      { StringLike: { "kms:EncryptionContext:tenant": "${kms:EncryptionContext:owner}" } },
      { request: { encryptionContext: { tenant: "*", owner: "*" } } },
      true,
    ],
    [
      "wildcards written in the policy still work around a variable",
      { StringLike: { "kms:EncryptionContext:tenant": "${aws:username}/*" } },
      tenant("alice/reports"),
      true,
    ],
    [
      "${*} is a literal asterisk in StringLike",
      { StringLike: { "kms:EncryptionContext:tenant": "a${*}" } },
      tenant("abc"),
      false,
    ],
    [
      "${*} matches an asterisk",
      { StringLike: { "kms:EncryptionContext:tenant": "a${*}" } },
      tenant("a*"),
      true,
    ],
    [
      "${$} is a dollar sign",
      { StringEquals: { "kms:EncryptionContext:tenant": "${$}{x}" } },
      tenant("${x}"),
      true,
    ],
    [
      "a multi-valued key has no value",
      { StringEquals: { "kms:EncryptionContext:tenant": "${kms:EncryptionContextKeys}" } },
      { request: { encryptionContext: { tenant: "tenant", region: "eu" } } },
      false,
    ],
    [
      "a key with one value resolves",
      { StringEquals: { "kms:EncryptionContext:tenant": "${kms:EncryptionContextKeys}" } },
      tenant("tenant"),
      true,
    ],
    [
      "in a 2008-10-17 policy ${…} is plain text",
      { StringEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
      tenant("${aws:username}"),
      true,
    ],
  ])("%s", (name, condition, call, allow) => {
    const version = name.includes("2008-10-17") ? "2008-10-17" : "2012-10-17";
    expect(decidePolicy(allowWhen(condition, version), call)).toBe(allow);
  });

  test("a Deny with StringNotEquals applies when the variable has no value", () => {
    const document = {
      Version: "2012-10-17",
      Statement: [
        { Effect: "Allow", Principal: "*", Action: "kms:*", Resource: "*" },
        {
          Effect: "Deny",
          Principal: "*",
          Action: "kms:*",
          Resource: "*",
          Condition: { StringNotEquals: { "kms:EncryptionContext:tenant": "${aws:username}" } },
        },
      ],
    };
    expect(decidePolicy(document, tenant("alice"))).toBe(true);
    expect(decidePolicy(document, tenant("bob"))).toBe(false);
    // No user name (not an IAM user): nothing equals a missing value, so the Deny holds.
    expect(decidePolicy(document, tenant("billing", "billing-service"))).toBe(false);
  });

  test("Resource with a variable", () => {
    const resource = (pattern: string, tags: Record<string, string>) =>
      decidePolicy(
        {
          Version: "2012-10-17",
          Statement: [{ Effect: "Allow", Principal: "*", Action: "kms:*", Resource: pattern }],
        },
        { request: { encryptionContext: tags } },
      );
    const prefix = "arn:aws:kms:local:000000000000:key/";
    expect(resource(`${prefix}\${kms:EncryptionContext:k}`, { k: KEY.keyId })).toBe(true);
    expect(resource(`${prefix}\${kms:EncryptionContext:k}`, { k: "other" })).toBe(false);
    // A substituted `*` is literal, so it cannot widen the statement to every key.
    expect(resource(`${prefix}\${kms:EncryptionContext:k}`, { k: "*" })).toBe(false);
    expect(resource(`${prefix}\${kms:EncryptionContext:k}`, {})).toBe(false);
    expect(resource(KEY_ARN, {})).toBe(true);
  });

  test.each([
    ["${aws:username", /no closing brace/],
    ["${}", /is empty/],
    ["${ }", /is empty/],
    ["${aws:username, shared}", /must be quoted/],
    ["${aws:username, 'shared}", /is not closed/],
    ["${aws:username, 'a' x}", /no closing brace/],
    ["${aws user}", /not a condition key name/],
  ])("malformed variable %s is rejected", (value, message) => {
    expect(() =>
      parsePolicy(
        JSON.stringify(allowWhen({ StringEquals: { "kms:EncryptionContext:tenant": value } })),
      ),
    ).toThrow(message);
  });

  test("variables only with String and Arn operators", () => {
    expect(() =>
      parsePolicy(
        JSON.stringify(
          allowWhen({ NumericEquals: { "kms:RotationPeriodInDays": "${aws:EpochTime}" } }),
        ),
      ),
    ).toThrow(/only with String and Arn condition operators/);
  });
});
