/**
 * One-shot envelope encryption for payloads held in memory (docs/FORMAT.md §5). For payloads
 * that do not fit comfortably in memory use the stream adapters, which share this engine.
 */
import { assertBytes } from "../internal/assert.ts";
import { redactPlaintext } from "../internal/redacted.ts";
import { MessageDecryptor } from "./decryptor.ts";
import { sealMessage } from "./encryptor.ts";
import type { DecryptMessageOptions, EncryptMessageOptions, MessageInfo } from "./options.ts";

/**
 * Encrypts `plaintext` into a self-describing message: header (suite, message id, encryption
 * context, encrypted data keys, key commitment), AES-256-GCM frames, optional signature.
 * @throws ValidationException for bad options or context; errors from the keyring (e.g.
 *   NotFoundException, DisabledException from KMS) as thrown.
 */
export async function encryptMessage(
  plaintext: Uint8Array,
  options: EncryptMessageOptions,
): Promise<Uint8Array> {
  assertBytes("plaintext", plaintext, 0, Number.MAX_SAFE_INTEGER);
  return sealMessage(plaintext, options);
}

export interface DecryptedMessage extends MessageInfo {
  /** Prints as `[redacted: N bytes]` when the whole result is inspected (console.log…). */
  readonly plaintext: Uint8Array;
}

/**
 * Decrypts a whole message. Nothing is returned unless every frame, the header and (for signing
 * suites) the signature verify.
 * @throws InvalidCiphertextException for any tampered, truncated, reordered or foreign message,
 *   a wrong expected context, or when the keyring can unwrap no data key;
 *   AccessDeniedException when the decrypt policy refuses the message; ValidationException for
 *   bad options.
 */
export async function decryptMessage(
  message: Uint8Array,
  options: DecryptMessageOptions,
): Promise<DecryptedMessage> {
  assertBytes("message", message, 0, Number.MAX_SAFE_INTEGER);
  const decryptor = new MessageDecryptor(options);
  const plaintext = await decryptor.decryptWhole(message);
  return redactPlaintext<DecryptedMessage>({ ...decryptor.info!, plaintext });
}
