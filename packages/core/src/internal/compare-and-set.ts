/**
 * The one retry loop behind every compare-and-set write to a key store (key updates, alias
 * updates and deletions, record sealing, root-key re-wrapping). Stores answer a write based on
 * a record that changed since it was read with KeyStoreConflictError; the writer then reads
 * again, re-checks whatever it decided on the old record, and writes again.
 */
import { KeyStoreConflictError } from "../errors.ts";

/** Attempts at one compare-and-set write before giving up. */
export const MAX_WRITE_ATTEMPTS = 32;

export interface RetryOnConflictOptions {
  /**
   * The error to throw once every attempt lost the race, given the last conflict (to keep as
   * its `cause`). Callers choose it: a Kms operation answers KmsInternalError, store upkeep
   * (sealing, re-wrapping) a KeyStoreConflictError the operator can run again on.
   */
  readonly exhausted: (conflict: KeyStoreConflictError) => Error;
  /** @defaultValue {@link MAX_WRITE_ATTEMPTS} */
  readonly attempts?: number;
}

/**
 * Runs `attempt` until it returns. Each attempt must read the record itself, decide on what it
 * read, and write by compare-and-set on that record: a KeyStoreConflictError from it means
 * another writer changed the record in between, and the next attempt starts over from a fresh
 * read. Any other error ends the loop at once. `attempt` receives its index (0 first).
 * @throws whatever `attempt` throws other than KeyStoreConflictError; what `exhausted` returns
 *   after `attempts` conflicts in a row.
 */
export async function retryOnConflict<T>(
  attempt: (index: number) => Promise<T>,
  options: RetryOnConflictOptions,
): Promise<T> {
  const attempts = options.attempts ?? MAX_WRITE_ATTEMPTS;
  let conflict: KeyStoreConflictError | undefined;
  for (let index = 0; index < attempts; index++) {
    try {
      return await attempt(index);
    } catch (error) {
      if (!(error instanceof KeyStoreConflictError)) throw error;
      conflict = error;
    }
  }
  throw options.exhausted(
    conflict ?? new KeyStoreConflictError("no compare-and-set attempt was made"),
  );
}
