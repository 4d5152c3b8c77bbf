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
