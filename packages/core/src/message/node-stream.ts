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
 * authenticated MessageInfo.
 *
 * Destroyed before its end (by the caller, a pipeline, or a decryption error), it decrypts
 * nothing more, zeroes every byte of plaintext it pushed that the consumer has not read yet
 * (whole chunks still buffered, and the unread rest of a chunk read in part), and `read()`
 * returns null from then on. Chunks the consumer received are not touched. Limits: README,
 * "Plaintext left in a stream's buffer".
 * @throws ValidationException for bad options; InvalidCiphertextException /
 *   AccessDeniedException as stream errors.
 */
export function createDecryptStream(options: DecryptStreamOptions): Transform {
  return new DecryptStream(options);
}

class DecryptStream extends Transform {
  readonly #decryptor: MessageDecryptor;
  /**
   * Chunks pushed that may still be in the readable buffer, oldest first. The buffer is a FIFO
   * of what was pushed, so its last `readableLength` bytes are the unread ones (a public,
   * stable count, unlike the buffer itself); the chunks before them were read and are dropped
   * from this list as soon as that shows.
   */
  readonly #pushed: Buffer[] = [];
  #pushedBytes = 0;

  constructor(options: DecryptStreamOptions) {
    super();
    this.#decryptor = new MessageDecryptor(options, (info) => this.emit("header", info));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
    let parts: Uint8Array[] | undefined;
    try {
      parts = this.#decryptor.updateSync(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    if (parts !== undefined) {
      this.#pushAll(parts);
      callback();
      return;
    }
    this.#decryptor.update(chunk).then(
      (ready) => {
        this.#pushAll(ready);
        callback();
      },
      (error: unknown) => callback(error as Error),
    );
  }

  override _flush(callback: TransformCallback) {
    try {
      this.#decryptor.final();
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  /** Nothing is read from a destroyed stream: what it had buffered is zeroed. */
  override read(size?: number): Buffer | string | null {
    if (this.destroyed) return null;
    const chunk = super.read(size) as Buffer | string | null;
    // Not kept alive for the consumer's whole read of the stream.
    this.#forgetRead();
    return chunk;
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
    // Destroyed while the keyring is busy: the frames behind the header are never decrypted.
    // A no-op after a normal end.
    this.#decryptor.abort();
    this.#zeroUnread();
    callback(error);
  }

  #pushAll(parts: readonly Uint8Array[]): void {
    for (const part of parts) {
      const bytes = Buffer.from(part.buffer, part.byteOffset, part.byteLength);
      if (this.destroyed) {
        // Decrypted before the stream was destroyed, delivered after: push would drop it.
        bytes.fill(0);
        continue;
      }
      this.#forgetRead();
      this.push(bytes);
      if (this.readableEncoding !== null) {
        // setEncoding: push decoded the bytes into a string (which no one can wipe); nothing
        // refers to the bytes any more.
        bytes.fill(0);
      } else {
        this.#pushed.push(bytes);
        this.#pushedBytes += bytes.length;
      }
    }
  }

  #forgetRead(): void {
    let read = this.#pushedBytes - this.readableLength;
    let count = 0;
    while (count < this.#pushed.length && this.#pushed[count]!.length <= read) {
      read -= this.#pushed[count]!.length;
      this.#pushedBytes -= this.#pushed[count]!.length;
      count += 1;
    }
    this.#pushed.splice(0, count);
  }

  #zeroUnread(): void {
    let unread = this.readableEncoding === null ? this.readableLength : 0;
    for (let i = this.#pushed.length - 1; i >= 0 && unread > 0; i--) {
      const chunk = this.#pushed[i]!;
      const n = Math.min(unread, chunk.length);
      chunk.fill(0, chunk.length - n);
      unread -= n;
    }
    this.#pushed.length = 0;
    this.#pushedBytes = 0;
  }
}
