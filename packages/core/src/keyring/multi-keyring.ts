import { timingSafeEqual } from "node:crypto";
import { ValidationError } from "../errors.ts";
import { redactDataKey } from "../internal/redacted.ts";
import {
  DATA_KEY_LENGTH,
  type DecryptDataKeyRequest,
  type EncryptDataKeyRequest,
  type EncryptDataKeyResult,
  type EncryptedDataKey,
  isDataKey,
  type Keyring,
  requestDataKey,
} from "./keyring.ts";

export interface MultiKeyringOptions {
  /** Makes the data key on encrypt; absent = the request must bring one (nested use). */
  readonly generator?: Keyring;
  /** Each wraps a further copy of the generator's key; all are tried on decrypt. */
  readonly children?: readonly Keyring[];
}

/**
 * Combines keyrings: the generator makes the data key, every child wraps a copy, so the message
 * decrypts with any one of them (e.g. a KMS key for services and a raw RSA key for escrow).
 */
export class MultiKeyring implements Keyring {
  readonly identity: string;
  readonly generator: Keyring | undefined;
  readonly children: readonly Keyring[];

  /** @throws ValidationException when there is neither a generator nor a child. */
  constructor(options: MultiKeyringOptions) {
    this.generator = options.generator;
    this.children = [...(options.children ?? [])];
    if (this.generator === undefined && this.children.length === 0) {
      throw new ValidationError('"generator" or "children" is required');
    }
    // JSON, not a joined list: identities are free text, and "a,b" alone must not read as "a"
    // then "b", nor a generator as a first child; a shared DataKeyCache keys entries by it.
    this.identity = `multi:${JSON.stringify([
      this.generator?.identity ?? null,
      this.children.map((k) => k.identity),
    ])}`;
  }

  /**
   * @throws ValidationException without a generator and without a data key in the request, for
   *   a data key (the request's or the generator's) that is not 32 bytes, or a child that
   *   wrapped another key than the one it was given; a child's error as thrown. On any failure
   *   a data key the generator made here is zeroed.
   */
  async encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult> {
    let dataKey = requestDataKey(request);
    let generated: Uint8Array | undefined;
    const encryptedDataKeys: EncryptedDataKey[] = [];
    try {
      if (this.generator !== undefined) {
        const result = await this.generator.encryptDataKey(request);
        const key: unknown = result?.dataKey;
        if (!isDataKey(key)) {
          if (key instanceof Uint8Array) key.fill(0);
          throw new ValidationError(
            `the MultiKeyring's generator must return a ${DATA_KEY_LENGTH}-byte data key`,
          );
        }
        generated = key;
        dataKey = key;
        encryptedDataKeys.push(...result.encryptedDataKeys);
      }
      if (dataKey === undefined) {
        throw new ValidationError('MultiKeyring needs a "generator" to make a data key');
      }
      for (const child of this.children) {
        const wrapped = await child.encryptDataKey({ ...request, dataKey });
        const key: unknown = wrapped?.dataKey;
        if (key !== dataKey) {
          // A child that ignored the key it was given wrapped one of its own: its copies would
          // never decrypt the message, which surfaces only when they are needed (escrow).
          const same = isDataKey(key) && timingSafeEqual(key, dataKey);
          // The child's own copy, unless it is a view of the key itself.
          if (key instanceof Uint8Array && key.buffer !== dataKey.buffer) key.fill(0);
          if (!same) {
            throw new ValidationError(
              "a MultiKeyring child returned another data key than the one it was given to wrap",
            );
          }
        }
        encryptedDataKeys.push(...wrapped.encryptedDataKeys);
      }
    } catch (error) {
      generated?.fill(0);
      throw error;
    }
    return redactDataKey<EncryptDataKeyResult>({ dataKey, encryptedDataKeys });
  }

  /**
   * The first data key a keyring (generator first, then children in order) unwraps. A keyring
   * that throws (say, its KMS is unreachable) must not hide one that works, so the others are
   * still tried; when none unwraps, the first thrown error is re-thrown, so that an outage is
   * not reported as an invalid message.
   */
  async decryptDataKey(request: DecryptDataKeyRequest): Promise<Uint8Array | undefined> {
    const all = this.generator === undefined ? this.children : [this.generator, ...this.children];
    let failure: { readonly error: unknown } | undefined;
    for (const keyring of all) {
      try {
        const key: unknown = await keyring.decryptDataKey(request);
        if (isDataKey(key)) return key;
        // Not a data key (a custom keyring's bug): zeroed, and the next keyring may still open.
        if (key instanceof Uint8Array) key.fill(0);
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
    return undefined;
  }
}
