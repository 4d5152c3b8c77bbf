import {
  assertDataKeyId,
  type DataKeyRecord,
  type DataKeyStore,
  type EncryptionContext,
  KmsInternalError,
} from "@kms/core";

/** The Prisma model delegate methods the data key table needs (the base, unextended client's). */
export interface DataKeyDelegate {
  create(args: { data: Record<string, unknown> }): Promise<unknown>;
  findUnique(args: { where: { id: string } }): Promise<Record<string, unknown> | null>;
}

/**
 * A DataKeyStore in a table of the application's own database, so that the database and the
 * KMS are all a fresh process needs to read every encrypted value back. The model needs the
 * columns of `KmsDataKey` in the README: id String @id, kmsKeyId String, wrappedKey Bytes,
 * encryptionContext String, purpose String, createdAt BigInt.
 */
export class PrismaDataKeyStore implements DataKeyStore {
  readonly #delegate: DataKeyDelegate;

  constructor(delegate: DataKeyDelegate) {
    this.#delegate = delegate;
  }

  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    assertDataKeyId(record.id);
    try {
      await this.#delegate.create({
        data: {
          id: record.id,
          kmsKeyId: record.kmsKeyId,
          wrappedKey: record.wrappedKey,
          encryptionContext: JSON.stringify(record.encryptionContext),
          purpose: record.purpose,
          createdAt: BigInt(record.createdAt),
        },
      });
      return record;
    } catch (cause) {
      // A unique violation means another process inserted this id first: theirs wins.
      const existing = await this.get(record.id);
      if (existing !== undefined) return existing;
      throw new KmsInternalError("could not store a data key", { cause });
    }
  }

  async get(id: string): Promise<DataKeyRecord | undefined> {
    const row = await this.#delegate.findUnique({ where: { id } });
    if (row === null) return undefined;
    const wrapped = row.wrappedKey as Uint8Array;
    return Object.freeze({
      id: row.id as string,
      kmsKeyId: row.kmsKeyId as string,
      wrappedKey: new Uint8Array(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength),
      encryptionContext: JSON.parse(row.encryptionContext as string) as EncryptionContext,
      purpose: row.purpose === "stable" ? "stable" : "randomized",
      createdAt: Number(row.createdAt),
    });
  }
}
