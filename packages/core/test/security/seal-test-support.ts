import { createHmac } from "node:crypto";
import { RootKeyError } from "@kms/core";
import { expect } from "vitest";

/** The RootKeyError `action` rejects with; fails the test when it resolves or rejects otherwise. */
export async function refusal(action: Promise<unknown>): Promise<RootKeyError> {
  const error = await action.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RootKeyError);
  return error as RootKeyError;
}

/** The public id of a root key (FORMAT §4 item 1), computed independently with node:crypto. */
export function rootKeyIdOf(root: Uint8Array): string {
  return createHmac("sha256", root)
    .update("kms/root-key-id/v1")
    .digest()
    .subarray(0, 8)
    .toString("hex");
}
