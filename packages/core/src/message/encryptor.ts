/**
 * Incremental message encryption: feed plaintext in any chunking, get message bytes out. The
 * one-shot API and both stream adapters drive this class; only `create` is asynchronous (the
 * keyring call), the frame loop is synchronous.
 */
import { createCipheriv, type KeyObject, type Sign } from "node:crypto";
import { dataKeyCacheKey } from "../caching/data-key-cache.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { assertInteger, assertObject } from "../internal/assert.ts";
import { DATA_KEY_LENGTH, type EncryptDataKeyResult } from "../keyring/keyring.ts";
import {
  DEFAULT_FRAME_LENGTH,
  DEFAULT_SUITE,
  deriveMessageKey,
  encodeHeaderBody,
  FINAL_FRAME_MARKER,
  headerTag,
  IV_LENGTH,
  KIND_FINAL,
  KIND_REGULAR,
  MAX_FRAME_LENGTH,
  MAX_SEQUENCE,
  MESSAGE_ID_LENGTH,
  newFrameAad,
  PUBLIC_KEY_CONTEXT_KEY,
  RESERVED_CONTEXT_PREFIX,
  type SuiteInfo,
  setFrameAad,
  setFrameIv,
  suiteByName,
  TAG_LENGTH,
} from "./format.ts";
import type { EncryptStreamOptions } from "./options.ts";
import { generateSigningKey, newSigner, signatureFooter } from "./signature.ts";

export class MessageEncryptor {
  readonly frameLength: number;
  readonly #key: KeyObject;
  readonly #iv = Buffer.alloc(IV_LENGTH);
  readonly #aad: Buffer;
  #pending: Buffer | undefined;
  #pendingLength = 0;
  #seq = 1;
  #header: Buffer | undefined;
  #signer: Sign | undefined;
  readonly #signingKey: KeyObject | undefined;
  readonly #declaredLength: number | undefined;
  #plaintextLength = 0;
  #finished = false;

  private constructor(
    header: Buffer,
    key: KeyObject,
    messageId: Uint8Array,
    frameLength: number,
    signing: { signer: Sign; key: KeyObject } | undefined,
    declaredLength: number | undefined,
  ) {
    this.#header = header;
    this.#key = key;
    this.#aad = newFrameAad(messageId);
    this.frameLength = frameLength;
    this.#signer = signing?.signer;
    this.#signingKey = signing?.key;
    this.#declaredLength = declaredLength;
    this.#signer?.update(header);
  }

  /**
   * Validates the options, obtains a data key (from the cache or the keyring) and builds the
   * header.
   * @throws ValidationException for bad options or keyring output; keyring (KMS) errors as thrown.
   */
  static async create(options: EncryptStreamOptions): Promise<MessageEncryptor> {
    assertObject("options", options);
    const keyring = options.keyring;
    if (typeof keyring?.encryptDataKey !== "function") {
      throw new ValidationError('"keyring" expected a Keyring');
    }
    const suite = suiteByName(options.suite ?? DEFAULT_SUITE);
    const frameLength = assertInteger(
      "frameLength",
      options.frameLength ?? DEFAULT_FRAME_LENGTH,
      1,
      MAX_FRAME_LENGTH,
    );
    const declared =
      options.plaintextLength === undefined
        ? undefined
        : assertInteger("plaintextLength", options.plaintextLength, 0, Number.MAX_SAFE_INTEGER);
    const context: Record<string, string> = { ...(options.encryptionContext ?? {}) };
    for (const key of Object.keys(context)) {
      if (key.startsWith(RESERVED_CONTEXT_PREFIX)) {
        throw new ValidationError(
          `"encryptionContext" key "${key}" uses the reserved prefix "${RESERVED_CONTEXT_PREFIX}"`,
        );
      }
    }
    let signing: { signer: Sign; key: KeyObject } | undefined;
    if (suite.signature !== undefined) {
      const pair = generateSigningKey(suite.signature);
      context[PUBLIC_KEY_CONTEXT_KEY] = pair.publicKey;
      signing = { signer: newSigner(suite.signature), key: pair.privateKey };
    }
    const contextBytes = encodeEncryptionContext(context);
    const materials = await dataKeyFor(options, suite, context, contextBytes, declared);
    const messageId = randomBytes(MESSAGE_ID_LENGTH);
    const { key, commitment } = deriveMessageKey(materials.dataKey, messageId, suite);
    materials.dataKey.fill(0);
    const body = encodeHeaderBody({
      suite,
      messageId,
      encryptionContextBytes: contextBytes,
      encryptedDataKeys: materials.encryptedDataKeys,
      frameLength,
      commitment,
    });
    const header = Buffer.concat([body, headerTag(key, body)]);
    return new MessageEncryptor(header, key, messageId, frameLength, signing, declared);
  }

  /**
   * Encrypts a chunk; returns the message bytes now complete (the header first, then whole
   * frames). A frame is held back until more plaintext arrives, as it may be the final one.
   * @throws ValidationException after `final()`, or beyond a declared plaintextLength.
   */
  update(chunk: Uint8Array): Uint8Array[] {
    if (this.#finished) throw new ValidationError("the message is already finished");
    this.#plaintextLength += chunk.length;
    if (this.#declaredLength !== undefined && this.#plaintextLength > this.#declaredLength) {
      throw new ValidationError(
        `the plaintext is longer than the declared "plaintextLength" (${this.#declaredLength})`,
      );
    }
    const out = this.#takeHeader();
    const frame = this.frameLength;
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#pendingLength === frame) {
        this.#seal(KIND_REGULAR, this.#pending!, out);
        this.#pendingLength = 0;
      }
      // Whole frames that are surely not the last go straight from the caller's chunk.
      if (this.#pendingLength === 0 && chunk.length - offset > frame) {
        this.#seal(KIND_REGULAR, chunk.subarray(offset, offset + frame), out);
        offset += frame;
        continue;
      }
      const n = Math.min(frame - this.#pendingLength, chunk.length - offset);
      // Allocated on first need: one-shot messages never buffer.
      this.#pending ??= Buffer.allocUnsafeSlow(frame);
      this.#pending.set(chunk.subarray(offset, offset + n), this.#pendingLength);
      this.#pendingLength += n;
      offset += n;
    }
    return out;
  }

  /**
   * One-shot: encrypts all of `plaintext` as the whole message (header, frames, final frame,
   * signature) without copying it into the frame buffer.
   * @throws ValidationException as `update` and `final`.
   */
  sealAll(plaintext: Uint8Array): Uint8Array[] {
    if (this.#finished || this.#plaintextLength !== 0) {
      throw new ValidationError("sealAll must be the only call on a MessageEncryptor");
    }
    const frame = this.frameLength;
    const regular = plaintext.length === 0 ? 0 : Math.ceil(plaintext.length / frame) - 1;
    if (this.#declaredLength !== undefined && plaintext.length !== this.#declaredLength) {
      throw new ValidationError(
        `the plaintext length differs from the declared "plaintextLength" (${this.#declaredLength})`,
      );
    }
    this.#plaintextLength = plaintext.length;
    const out = this.#takeHeader();
    for (let i = 0; i < regular; i++) {
      this.#seal(KIND_REGULAR, plaintext.subarray(i * frame, (i + 1) * frame), out);
    }
    for (const part of this.#finish(plaintext.subarray(regular * frame))) out.push(part);
    return out;
  }

  /**
   * Seals the final frame (and the signature, for signing suites).
   * @throws ValidationException when called twice, or short of a declared plaintextLength.
   */
  final(): Uint8Array[] {
    if (this.#finished) throw new ValidationError("the message is already finished");
    if (this.#declaredLength !== undefined && this.#plaintextLength !== this.#declaredLength) {
      throw new ValidationError(
        `the plaintext is shorter than the declared "plaintextLength" (${this.#declaredLength})`,
      );
    }
    const out = this.#finish(this.#pending?.subarray(0, this.#pendingLength) ?? new Uint8Array(0));
    this.#pending?.fill(0);
    return out;
  }

  #finish(last: Uint8Array): Uint8Array[] {
    this.#finished = true;
    const out = this.#takeHeader();
    this.#seal(KIND_FINAL, last, out);
    if (this.#signer !== undefined) out.push(signatureFooter(this.#signer, this.#signingKey!));
    return out;
  }

  #takeHeader(): Uint8Array[] {
    const header = this.#header;
    if (header === undefined) return [];
    this.#header = undefined;
    return [header];
  }

  #seal(kind: number, plaintext: Uint8Array, out: Uint8Array[]): void {
    const seq = this.#seq;
    if (seq > MAX_SEQUENCE) {
      throw new ValidationError(`a message holds at most ${MAX_SEQUENCE} frames`);
    }
    this.#seq = seq + 1;
    setFrameIv(this.#iv, seq);
    setFrameAad(this.#aad, kind, seq, plaintext.length);
    const cipher = createCipheriv("aes-256-gcm", this.#key, this.#iv, {
      authTagLength: TAG_LENGTH,
    });
    cipher.setAAD(this.#aad);
    const ciphertext = cipher.update(plaintext);
    cipher.final();
    const tag = cipher.getAuthTag();
    let prefix: Buffer;
    if (kind === KIND_REGULAR) {
      prefix = Buffer.allocUnsafe(4);
      prefix.writeUInt32BE(seq, 0);
    } else {
      prefix = Buffer.allocUnsafe(12);
      prefix.writeUInt32BE(FINAL_FRAME_MARKER, 0);
      prefix.writeUInt32BE(seq, 4);
      prefix.writeUInt32BE(plaintext.length, 8);
    }
    if (this.#signer !== undefined) {
      this.#signer.update(prefix);
      this.#signer.update(ciphertext);
      this.#signer.update(tag);
    }
    out.push(prefix, ciphertext, tag);
  }
}

async function dataKeyFor(
  options: EncryptStreamOptions,
  suite: SuiteInfo,
  context: Record<string, string>,
  contextBytes: Uint8Array,
  plaintextLength: number | undefined,
): Promise<EncryptDataKeyResult> {
  const cache = options.dataKeyCache;
  // Signing suites put a fresh public key in the context, so a cached key could never match.
  const cacheable =
    cache !== undefined && suite.signature === undefined && plaintextLength !== undefined;
  let cacheKey: string | undefined;
  const usage = { messages: 1, bytes: plaintextLength ?? 0 };
  if (cacheable) {
    cacheKey = dataKeyCacheKey({
      purpose: "encrypt",
      keyringIdentity: options.keyring.identity,
      encryptionContext: contextBytes,
      suite: suite.id,
    });
    const hit = cache.take(cacheKey, usage);
    if (hit !== undefined) return hit;
  }
  const result = await options.keyring.encryptDataKey({
    encryptionContext: context,
    suiteId: suite.id,
  });
  if (!(result?.dataKey instanceof Uint8Array) || result.dataKey.length !== DATA_KEY_LENGTH) {
    throw new ValidationError(`the keyring must return a ${DATA_KEY_LENGTH}-byte data key`);
  }
  if (!Array.isArray(result.encryptedDataKeys) || result.encryptedDataKeys.length === 0) {
    throw new ValidationError("the keyring must return at least one encrypted data key");
  }
  if (cacheable && cacheKey !== undefined) cache.put(cacheKey, result, usage);
  return result;
}
