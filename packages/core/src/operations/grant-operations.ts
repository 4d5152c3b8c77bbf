/**
 * Which grant operations a key can ever perform, and where encryption-context constraints mean
 * something, as AWS KMS's CreateGrant decides it ("Grant operations" and "Grant constraints",
 * AWS KMS Developer Guide; CreateGrant API reference). CreateGrant refuses the rest with a
 * ValidationException, so a grant never lists a permission its key cannot use.
 */
import { ValidationError } from "../errors.ts";
import { KEY_SPEC_TABLE } from "../key-specs.ts";
import type { KeySpec, KeyUsage } from "../types.ts";

/** The operations a grant can allow (AWS's GrantOperation enum). */
export const GRANT_OPERATIONS = [
  "Decrypt",
  "Encrypt",
  "GenerateDataKey",
  "GenerateDataKeyPair",
  "GenerateDataKeyPairWithoutPlaintext",
  "GenerateDataKeyWithoutPlaintext",
  "ReEncryptFrom",
  "ReEncryptTo",
  "Sign",
  "Verify",
  "GetPublicKey",
  "CreateGrant",
  "RetireGrant",
  "DescribeKey",
  "GenerateMac",
  "VerifyMac",
  "DeriveSharedSecret",
] as const;
export type GrantOperation = (typeof GRANT_OPERATIONS)[number];

/** Allowed in a grant on every key: they manage the grant or read metadata, not material. */
const ANY_KEY: readonly GrantOperation[] = ["CreateGrant", "RetireGrant", "DescribeKey"];

const SYMMETRIC_ENCRYPTION: readonly GrantOperation[] = [
  "Encrypt",
  "Decrypt",
  "GenerateDataKey",
  "GenerateDataKeyWithoutPlaintext",
  // The pair's private key is encrypted under a symmetric key, so these need one (AWS).
  "GenerateDataKeyPair",
  "GenerateDataKeyPairWithoutPlaintext",
  "ReEncryptFrom",
  "ReEncryptTo",
];
const ASYMMETRIC_ENCRYPTION: readonly GrantOperation[] = [
  "Encrypt",
  "Decrypt",
  "ReEncryptFrom",
  "ReEncryptTo",
  "GetPublicKey",
];
const SIGNING: readonly GrantOperation[] = ["Sign", "Verify", "GetPublicKey"];
const MAC: readonly GrantOperation[] = ["GenerateMac", "VerifyMac"];
const KEY_AGREEMENT: readonly GrantOperation[] = ["DeriveSharedSecret", "GetPublicKey"];

/** At most this many pairs per constraint (AWS's limit). */
export const MAX_CONSTRAINT_PAIRS = 8;
/** At most this many characters (keys and values together) per constraint (AWS's limit). */
export const MAX_CONSTRAINT_CHARACTERS = 384;

/** The grant operations a key of this spec and usage supports, AWS's order of the enum. */
export function grantOperationsFor(keySpec: KeySpec, keyUsage: KeyUsage): GrantOperation[] {
  const own = cryptographicOperations(keySpec, keyUsage);
  return GRANT_OPERATIONS.filter((op) => own.includes(op) || ANY_KEY.includes(op));
}

function cryptographicOperations(keySpec: KeySpec, keyUsage: KeyUsage): readonly GrantOperation[] {
  switch (keyUsage) {
    case "ENCRYPT_DECRYPT":
      return KEY_SPEC_TABLE[keySpec].family === "SYMMETRIC"
        ? SYMMETRIC_ENCRYPTION
        : ASYMMETRIC_ENCRYPTION;
    case "SIGN_VERIFY":
      return SIGNING;
    case "GENERATE_VERIFY_MAC":
      return MAC;
    case "KEY_AGREEMENT":
      return KEY_AGREEMENT;
  }
}

/**
 * Only symmetric encryption keys take an encryption context (AWS: "You cannot use an encryption
 * context grant constraint for cryptographic operations with asymmetric KMS keys or HMAC KMS
 * keys").
 */
function takesEncryptionContext(keySpec: KeySpec, keyUsage: KeyUsage): boolean {
  return keyUsage === "ENCRYPT_DECRYPT" && KEY_SPEC_TABLE[keySpec].family === "SYMMETRIC";
}

/**
 * Refuses operations the key can never perform, naming them, the key spec and usage, and what
 * the key does allow. Nothing secret is named: spec and usage are key metadata.
 * @throws ValidationError.
 */
export function assertGrantOperationsFitKey(
  keySpec: KeySpec,
  keyUsage: KeyUsage,
  operations: readonly string[],
): void {
  const allowed: readonly string[] = grantOperationsFor(keySpec, keyUsage);
  const refused = operations.filter((op) => !allowed.includes(op));
  if (refused.length > 0) {
    throw new ValidationError(
      `"operations" ${refused.join(", ")} ${refused.length === 1 ? "is" : "are"} not supported by a ${keySpec} key with key usage ${keyUsage}; a grant for it may allow ${allowed.join(", ")}`,
    );
  }
}

/**
 * Refuses encryption-context constraints on keys whose operations take no encryption context
 * (asymmetric and HMAC keys), whatever the grant's operations: AWS refuses them there rather
 * than storing a constraint that would never be checked.
 * @throws ValidationError.
 */
export function assertConstraintsFitKey(
  keySpec: KeySpec,
  keyUsage: KeyUsage,
  operations: readonly string[],
): void {
  if (takesEncryptionContext(keySpec, keyUsage)) return;
  const cryptographic = operations.filter((op) => !(ANY_KEY as readonly string[]).includes(op));
  const which = cryptographic.length > 0 ? ` (${cryptographic.join(", ")})` : "";
  throw new ValidationError(
    `"constraints" are not supported on a ${keySpec} key with key usage ${keyUsage}: its operations${which} take no encryption context; only symmetric encryption keys do`,
  );
}

/**
 * AWS's limits on one constraint: at most 8 pairs and 384 characters of keys and values.
 * Characters are counted as code points, so a non-BMP character counts once.
 * @throws ValidationError naming the constraint, never its values.
 */
export function assertConstraintSize(name: string, context: Readonly<Record<string, string>>) {
  const pairs = Object.entries(context);
  if (pairs.length > MAX_CONSTRAINT_PAIRS) {
    throw new ValidationError(
      `"${name}" may hold at most ${MAX_CONSTRAINT_PAIRS} pairs, got ${pairs.length}`,
    );
  }
  let characters = 0;
  for (const [key, value] of pairs) characters += codePoints(key) + codePoints(value);
  if (characters > MAX_CONSTRAINT_CHARACTERS) {
    throw new ValidationError(
      `"${name}" may hold at most ${MAX_CONSTRAINT_CHARACTERS} characters of keys and values, got ${characters}`,
    );
  }
}

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}
