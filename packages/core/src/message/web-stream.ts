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
 *
 * Plaintext is handed over only to a read that is waiting for it, so none sits in the
 * stream's queue, where a cancel would drop it unzeroed: the readable side has a high-water
 * mark of 0 (a written chunk is transformed only once a read is pending), and the frames one
 * written chunk completes leave as one chunk, joined (the pending read takes one chunk; a second
 * would be queued). Exception: README, "Plaintext left in a stream's buffer".
 * @throws ValidationException for bad options; InvalidCiphertextException /
 *   AccessDeniedException as stream errors.
 */
export function decryptTransformStream(
  options: DecryptStreamOptions,
): TransformStream<Uint8Array, Uint8Array> {
  const decryptor = new MessageDecryptor(options);
  let cancelled = false;
  return new TransformStream<Uint8Array, Uint8Array>(
    {
      async transform(chunk, controller) {
        const parts = decryptor.updateSync(chunk) ?? (await decryptor.update(chunk));
        const plaintext = joinParts(parts);
        if (plaintext === undefined) return;
        if (cancelled) {
          // Decrypted before the cancel, delivered after: nobody will read it.
          plaintext.fill(0);
          return;
        }
        controller.enqueue(plaintext);
      },
      flush() {
        decryptor.final();
      },
      // Cancelled or aborted while the keyring is busy: decrypt nothing more (nobody would read it).
      cancel() {
        cancelled = true;
        decryptor.abort();
      },
    },
    undefined,
    // The default, stated because the guarantee above rests on it.
    { highWaterMark: 0 },
  );
}

/** One chunk of the parts' bytes; the parts are zeroed when copied. */
function joinParts(parts: readonly Uint8Array[]): Uint8Array | undefined {
  if (parts.length <= 1) return parts[0];
  let length = 0;
  for (const part of parts) length += part.length;
  const joined = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
    part.fill(0);
  }
  return joined;
}
