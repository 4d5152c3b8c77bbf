/**
 * Web Streams adapters (`TransformStream<Uint8Array, Uint8Array>`), for fetch bodies, Deno,
 * Bun and edge runtimes that speak WHATWG streams. Same engine and guarantees as the Node ones.
 */
import { MessageDecryptor } from "./decryptor.ts";
import { MessageEncryptor } from "./encryptor.ts";
import type { DecryptStreamOptions, EncryptStreamOptions } from "./options.ts";

/**
 * Encrypts a plaintext byte stream into a message. Aborted, cancelled or failed before its end,
 * it zeroes the plaintext it held back for the next frame.
 * @throws ValidationException (as a stream error) for bad options; keyring errors likewise.
 */
export function encryptTransformStream(
  options: EncryptStreamOptions,
): TransformStream<Uint8Array, Uint8Array> {
  let encryptor: Promise<MessageEncryptor> | undefined;
  const ready = (): Promise<MessageEncryptor> => {
    encryptor ??= MessageEncryptor.create(options);
    return encryptor;
  };
  const abort = (): void => {
    encryptor?.then(
      (e) => e.abort(),
      () => {},
    );
  };
  return new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      try {
        for (const part of (await ready()).update(chunk)) controller.enqueue(part);
      } catch (error) {
        abort();
        throw error;
      }
    },
    async flush(controller) {
      try {
        for (const part of (await ready()).final()) controller.enqueue(part);
      } catch (error) {
        abort();
        throw error;
      }
    },
    cancel: abort,
  });
}

/**
 * Decrypts a message byte stream. Frames are enqueued only after their tag verifies; with a
 * signing suite, the signature is verified at the end (docs/FORMAT.md §5.6). Cancelled or
 * aborted before its end, it decrypts nothing more.
 * @throws InvalidCiphertextException / AccessDeniedException as stream errors.
 */
export function decryptTransformStream(
  options: DecryptStreamOptions,
): TransformStream<Uint8Array, Uint8Array> {
  const decryptor = new MessageDecryptor(options);
  return new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      const parts = decryptor.updateSync(chunk) ?? (await decryptor.update(chunk));
      for (const part of parts) controller.enqueue(part);
    },
    flush() {
      decryptor.final();
    },
    // Cancelled or aborted while the keyring is busy: decrypt nothing more (nobody would read it).
    cancel() {
      decryptor.abort();
    },
  });
}
