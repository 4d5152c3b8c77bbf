import { ValidationError } from "../errors.ts";
import type {
  DecryptDataKeyRequest,
  EncryptDataKeyRequest,
  EncryptDataKeyResult,
  EncryptedDataKey,
  Keyring,
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

  /** @throws ValidationException without a generator and without a data key in the request. */
  async encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult> {
    let dataKey = request.dataKey;
    const encryptedDataKeys: EncryptedDataKey[] = [];
    if (this.generator !== undefined) {
      const generated = await this.generator.encryptDataKey(request);
      dataKey = generated.dataKey;
      encryptedDataKeys.push(...generated.encryptedDataKeys);
    }
    if (dataKey === undefined) {
      throw new ValidationError('MultiKeyring needs a "generator" to make a data key');
    }
    for (const child of this.children) {
      const wrapped = await child.encryptDataKey({ ...request, dataKey });
      encryptedDataKeys.push(...wrapped.encryptedDataKeys);
    }
    return { dataKey, encryptedDataKeys };
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
        const key = await keyring.decryptDataKey(request);
        if (key !== undefined) return key;
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
    return undefined;
  }
}
