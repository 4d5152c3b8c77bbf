import type { EncryptionContext } from "@kms/core";

/**
 * A ciphertext (or blind index) on its way to the database. Encrypted columns accept only
 * these in queries and writes: their value transformer unwraps a Sealed value and rejects
 * anything else, so plaintext that bypassed the subscriber (a listener-less query builder, a
 * find with a plain value) fails loudly instead of being stored or compared as plaintext.
 */
export class Sealed {
  readonly stored: string | Uint8Array;

  constructor(stored: string | Uint8Array, binding?: SealedBinding) {
    this.stored = stored;
    if (binding !== undefined) (this as SealedFields)[SEALED_BINDING] = binding;
  }
}

// The query guards that check a write's values are installed by the first copy of @kms/typeorm
// loaded against a TypeORM (see query-guards.ts), and must read the bindings of every copy's
// Sealed values: a `Symbol.for` key, and a record of plain data and one function.
const SEALED_BINDING: unique symbol = Symbol.for("@kms/typeorm.sealedBinding");

interface SealedFields {
  [SEALED_BINDING]?: SealedBinding;
}

/** What a column sealed by the subscriber is bound to, so a write can check what it stores. */
export interface SealedColumn {
  readonly model: string;
  /** The encrypted property's path (`email`, `address.street`). */
  readonly path: string;
  /** The row properties the value is bound to (`fromRow`, then `rowIdentity`). */
  readonly keys: readonly string[];
  /**
   * The text `value` of the row property `key` is bound as (the column's stored form).
   * @throws ValidationException for a value its column refuses.
   */
  readonly formOf: (key: string, value: string | number | bigint) => string;
}

/** The context a value was sealed under, for a value bound to row properties. */
export interface SealedBinding {
  readonly column: SealedColumn;
  /** The context it was sealed under: `keys` each map to the text bound. */
  readonly context: EncryptionContext;
  /** The stored row the write updates (save() of a loaded row); undefined for other writes. */
  readonly stored: Readonly<Record<string, unknown>> | undefined;
}

/** The binding of a Sealed value of any loaded copy of @kms/typeorm; undefined for others. */
export function sealedBindingOf(value: unknown): SealedBinding | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  return (value as SealedFields)[SEALED_BINDING];
}
