import { ValidationError } from "../errors.ts";
import type { EncryptionContext } from "../types.ts";

/**
 * A data key as stored beside the data: wrapped by the KMS under `kmsKeyId` with
 * `encryptionContext`, never in plaintext. Field values carry only `id` (16 bytes), so the
 * table is what lets a fresh process read everything back with nothing but the database and
 * the KMS (docs/FORMAT.md §6.1).
 */
export interface DataKeyRecord {
  /** 32 lowercase hex characters (16 bytes). */
  readonly id: string;
  /** The ARN the KMS reported when it generated the key. */
  readonly kmsKeyId: string;
  /** The KMS ciphertext blob of the data key. */
  readonly wrappedKey: Uint8Array;
  /** The encryption context the data key was wrapped with (the tenant values). */
  readonly encryptionContext: EncryptionContext;
  /** "randomized": rolled by the cache limits; "stable": deterministic and blind-index keys. */
  readonly purpose: "randomized" | "stable";
  /** Milliseconds since the Unix epoch. */
  readonly createdAt: number;
}

/** Where wrapped data keys live. ORM adapters implement it as a table in the same database. */
export interface DataKeyStore {
  /**
   * Inserts `record` unless a record with its id exists, and returns the record now stored
   * under that id (the existing one when another writer got there first).
   */
  insert(record: DataKeyRecord): Promise<DataKeyRecord>;
  get(id: string): Promise<DataKeyRecord | undefined>;
}

const ID = /^[0-9a-f]{32}$/;

/** @throws ValidationException when `id` is not 32 lowercase hex characters. */
export function assertDataKeyId(id: unknown): string {
  if (typeof id !== "string" || !ID.test(id)) {
    throw new ValidationError(`"id" must be 32 lowercase hex characters`);
  }
  return id;
}

/** A DataKeyStore in memory, for tests and for processes that keep nothing across restarts. */
export class MemoryDataKeyStore implements DataKeyStore {
  readonly #records = new Map<string, DataKeyRecord>();

  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    assertDataKeyId(record.id);
    const existing = this.#records.get(record.id);
    if (existing !== undefined) return existing;
    const copy: DataKeyRecord = Object.freeze({
      ...record,
      wrappedKey: record.wrappedKey.slice(),
      encryptionContext: Object.freeze({ ...record.encryptionContext }),
    });
    this.#records.set(record.id, copy);
    return copy;
  }

  async get(id: string): Promise<DataKeyRecord | undefined> {
    return this.#records.get(id);
  }

  /** Number of stored data keys (tests use it to check cache limits). */
  get size(): number {
    return this.#records.size;
  }
}
