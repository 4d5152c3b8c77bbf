/**
 * Node.js stream adapters: `Transform`s that encrypt or decrypt a message of any size with
 * memory bounded by one frame plus the streams' high-water marks.
 */
import { Transform, type TransformCallback } from "node:stream";
import { MessageDecryptor } from "./decryptor.ts";
import { MessageEncryptor } from "./encryptor.ts";
import type { DecryptStreamOptions, EncryptStreamOptions } from "./options.ts";

/**
 * A Transform from plaintext to message bytes. The keyring is called on the first write (or at
 * the end, for an empty input); its errors surface as the stream's error. Destroyed before its
 * end, it zeroes the plaintext it held back for the next frame.
 * @throws ValidationException (as a stream error) for bad options.
 */
export function createEncryptStream(options: EncryptStreamOptions): Transform {
  let encryptor: Promise<MessageEncryptor> | undefined;
  const ready = (): Promise<MessageEncryptor> => {
    encryptor ??= MessageEncryptor.create(options);
    return encryptor;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      ready().then(
        (e) => {
          try {
            for (const part of e.update(chunk)) this.push(part);
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
        (error: unknown) => callback(error as Error),
      );
    },
    flush(callback: TransformCallback) {
      ready().then(
        (e) => {
          try {
            for (const part of e.final()) this.push(part);
            callback();
          } catch (error) {
            callback(error as Error);
          }
        },
        (error: unknown) => callback(error as Error),
      );
    },
    destroy(error, callback) {
      // Also runs after a normal end, when there is nothing left to zero.
      encryptor?.then(
        (e) => e.abort(),
        () => {},
      );
      callback(error);
    },
  });
}

/**
 * A Transform from message bytes to plaintext. Each frame's plaintext is pushed only after its
 * tag verifies. With a signing suite the signature is checked at the end: frames already pushed
 * are authentic (GCM) but not yet attributed to the signer until the stream ends without error
 * — see "Unauthenticated release" in docs/FORMAT.md §5.6. The `"header"` event carries the
 * authenticated MessageInfo. Destroyed before its end, it decrypts nothing more.
 * @throws InvalidCiphertextException / AccessDeniedException as stream errors.
 */
export function createDecryptStream(options: DecryptStreamOptions): Transform {
  let stream: Transform;
  const decryptor = new MessageDecryptor({
    ...options,
    onHeader: (info) => {
      stream.emit("header", info);
      options.onHeader?.(info);
    },
  });
  stream = new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      let parts: Uint8Array[] | undefined;
      try {
        parts = decryptor.updateSync(chunk);
      } catch (error) {
        callback(error as Error);
        return;
      }
      if (parts !== undefined) {
        for (const part of parts) this.push(part);
        callback();
        return;
      }
      decryptor.update(chunk).then(
        (ready) => {
          for (const part of ready) this.push(part);
          callback();
        },
        (error: unknown) => callback(error as Error),
      );
    },
    flush(callback: TransformCallback) {
      try {
        decryptor.final();
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    destroy(error, callback) {
      // Destroyed while the keyring is busy: the frames behind the header are never decrypted
      // (their plaintext would be dropped unread and unzeroed). A no-op after a normal end.
      decryptor.abort();
      callback(error);
    },
  });
  return stream;
}
