import { NotFoundError, ValidationError } from "./errors.ts";
import { isUuid } from "./internal/uuid.ts";

/**
 * Where this KMS says it lives. Key ARNs take the AWS form
 * `arn:<partition>:kms:<region>:<account>:key/<key-id>` (default partition `aws`, region
 * `local`, account `000000000000`), so tools that parse AWS ARNs (the AWS Encryption SDK
 * takes the region from them) accept ours.
 */
export interface KmsIdentity {
  readonly partition: string;
  readonly region: string;
  readonly account: string;
}

export const DEFAULT_IDENTITY: KmsIdentity = {
  partition: "aws",
  region: "local",
  account: "000000000000",
};

export function keyArn(identity: KmsIdentity, keyId: string): string {
  return `arn:${identity.partition}:kms:${identity.region}:${identity.account}:key/${keyId}`;
}

export function aliasArn(identity: KmsIdentity, aliasName: string): string {
  return `arn:${identity.partition}:kms:${identity.region}:${identity.account}:${aliasName}`;
}

export type KeyReference =
  | { readonly kind: "key"; readonly keyId: string }
  | { readonly kind: "alias"; readonly aliasName: string };

/**
 * Parses a key id, key ARN, alias name or alias ARN.
 * @throws ValidationError when the argument is not a string of 1–2048 characters,
 *   NotFoundError when it names nothing this KMS could hold (another account or region).
 */
export function parseKeyReference(
  identity: KmsIdentity,
  input: unknown,
  argument = "keyId",
): KeyReference {
  if (typeof input !== "string" || input.length === 0 || input.length > 2048) {
    throw new ValidationError(`"${argument}" must be a key id, key ARN, alias name or alias ARN`);
  }
  if (input.startsWith("alias/")) return { kind: "alias", aliasName: input };
  if (input.startsWith("arn:")) {
    const parts = input.split(":");
    const resource = parts.slice(5).join(":");
    if (
      parts.length < 6 ||
      parts[1] !== identity.partition ||
      parts[2] !== "kms" ||
      parts[3] !== identity.region ||
      parts[4] !== identity.account
    ) {
      throw new NotFoundError(`"${argument}" ${input} is not a key ARN or alias ARN of this KMS`);
    }
    if (resource.startsWith("alias/")) return { kind: "alias", aliasName: resource };
    if (resource.startsWith("key/") && isUuid(resource.slice(4))) {
      return { kind: "key", keyId: resource.slice(4) };
    }
    throw new NotFoundError(`"${argument}" ${input} does not name a key or alias`);
  }
  if (isUuid(input)) return { kind: "key", keyId: input };
  throw new NotFoundError(`"${argument}" ${input} is not a valid key id, ARN or alias`);
}
