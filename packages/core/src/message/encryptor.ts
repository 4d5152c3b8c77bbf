/**
 * Message encryption. `MessageEncryptor` is incremental (feed plaintext in any chunking, get
 * message bytes out) and drives both stream adapters; `sealMessage` is the one-shot path, which
 * writes the whole message into one buffer. Both share `planMessage` (options, data key, key
 * schedule) and produce identical bytes for the same inputs; only the keyring call is
 * asynchronous, the frame loops are synchronous.
 */
import { createCipheriv, type KeyObject } from "node:crypto";
import { dataKeyCacheKey } from "../caching/data-key-cache.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
import { randomBytes } from "../hsm/random.ts";
import { assertBytes, assertInteger, assertObject } from "../internal/assert.ts";
import { publicBuffer } from "../internal/public-bytes.ts";
import { isWellFormed } from "../internal/unicode.ts";
import {
  DATA_KEY_LENGTH,
  type EncryptDataKeyResult,
  type EncryptedDataKey,
  isDataKey,
  keyringFailure,
  withEncodedContext,
} from "../keyring/keyring.ts";
import {
  DEFAULT_FRAME_LENGTH,
  DEFAULT_MESSAGE_FRAME_LENGTH,
  DEFAULT_SUITE,
  deriveMessageKey,
  encodeHeader,
  FINAL_FRAME_MARKER,
  FRAME_AAD_LENGTH,
  type HeaderFields,
  headerBodyLength,
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
  writeHeaderBody,
  writeHeaderTag,
} from "./format.ts";
import {
  assertDataKeyCache,
  type EncryptMessageOptions,
  type EncryptStreamOptions,
} from "./options.ts";
import { releaseBuffer } from "./release-buffer.ts";
import {
  generateSigningKey,
  type MessageSigning,
  newSigner,
  signatureFooter,
} from "./signature.ts";

export class MessageEncryptor {
  readonly frameLength: number;
  readonly #key: KeyObject;
  readonly #iv = Buffer.alloc(IV_LENGTH);
  readonly #aad: Buffer;
  #pending: Buffer | undefined;
  #pendingLength = 0;
  #seq = 1;
  #header: Buffer | undefined;
  readonly #signing: MessageSigning | undefined;
  readonly #declaredLength: number | undefined;
  #plaintextLength = 0;
  #finished = false;

  private constructor(
    header: Buffer,
    key: KeyObject,
    messageId: Uint8Array,
    frameLength: number,
    signing: MessageSigning | undefined,
    declaredLength: number | undefined,
  ) {
    this.#header = header;
    this.#key = key;
    this.#aad = newFrameAad(messageId);
    this.frameLength = frameLength;
    this.#signing = signing;
    this.#declaredLength = declaredLength;
    this.#signing?.signer.update(header);
  }

  /**
   * Validates the options, obtains a data key (from the cache or the keyring) and builds the
   * header.
   * @throws ValidationException for bad options or keyring output; keyring (KMS) errors as thrown.
   */
  static async create(options: EncryptStreamOptions): Promise<MessageEncryptor> {
    const declared =
      options?.plaintextLength === undefined
        ? undefined
        : assertInteger("plaintextLength", options.plaintextLength, 0, Number.MAX_SAFE_INTEGER);
    const plan = await planMessage(options, declared, DEFAULT_FRAME_LENGTH);
    const header = encodeHeader(plan.fields, plan.key);
    const fields = plan.fields;
    return new MessageEncryptor(
      header,
      plan.key,
      fields.messageId,
      fields.frameLength,
      plan.signing,
      declared,
    );
  }

  /**
   * Encrypts a chunk; returns the message bytes now complete (the header first, then whole
   * frames). A frame is held back until more plaintext arrives, as it may be the final one.
   * @throws ValidationException for a chunk that is not a Uint8Array, after `final()`, or beyond a
   *   declared plaintextLength.
   */
  update(chunk: Uint8Array): Uint8Array[] {
    // Web streams pass whatever was written: an ArrayBuffer has no length, and would otherwise
    // be encrypted as nothing at all.
    assertBytes("chunk", chunk, 0, Number.MAX_SAFE_INTEGER);
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

  /**
   * Ends the message without finishing it (a stream destroyed, cancelled or failed): the
   * plaintext held back for the next frame is zeroed, and later calls are refused.
   */
  abort(): void {
    this.#finished = true;
    this.#pending?.fill(0);
    this.#pendingLength = 0;
  }

  #finish(last: Uint8Array): Uint8Array[] {
    this.#finished = true;
    const out = this.#takeHeader();
    this.#seal(KIND_FINAL, last, out);
    if (this.#signing !== undefined) out.push(signatureFooter(this.#signing));
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
      prefix = publicBuffer(4);
      prefix.writeUInt32BE(seq, 0);
    } else {
      prefix = publicBuffer(12);
      prefix.writeUInt32BE(FINAL_FRAME_MARKER, 0);
      prefix.writeUInt32BE(seq, 4);
      prefix.writeUInt32BE(plaintext.length, 8);
    }
    const signer = this.#signing?.signer;
    if (signer !== undefined) {
      signer.update(prefix);
      signer.update(ciphertext);
      signer.update(tag);
    }
    out.push(prefix, ciphertext, tag);
  }
}

async function dataKeyFor(
  options: EncryptMessageOptions,
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
  let result: EncryptDataKeyResult;
  try {
    result = await withEncodedContext(context, contextBytes, () =>
      options.keyring.encryptDataKey({ encryptionContext: context, suiteId: suite.id }),
    );
  } catch (error) {
    throw keyringFailure(error, "encryptDataKey");
  }
  const dataKey: unknown = result?.dataKey;
  if (!isDataKey(dataKey)) {
    if (dataKey instanceof Uint8Array) dataKey.fill(0);
    throw new ValidationError(`the keyring must return a ${DATA_KEY_LENGTH}-byte data key`);
  }
  const problem = encryptedDataKeysProblem(result.encryptedDataKeys);
  if (problem !== undefined) {
    dataKey.fill(0);
    throw new ValidationError(`the keyring must return ${problem}`);
  }
  if (cacheable && cacheKey !== undefined) cache.put(cacheKey, result, usage);
  return result;
}

/**
 * What is wrong with a keyring's copies, if anything. Checked here, not as the header is
 * written, so that a custom keyring's bad output is a ValidationError naming the rule (not a
 * TypeError from deep in the encoder), the data key it came with is zeroed, and copies that
 * could never fit a header are never cached.
 */
function encryptedDataKeysProblem(copies: unknown): string | undefined {
  if (!Array.isArray(copies) || copies.length === 0 || copies.length > 0xffff) {
    return "1–65535 encrypted data keys";
  }
  for (const copy of copies as unknown[]) {
    const edk = copy as Partial<Record<keyof EncryptedDataKey, unknown>> | null;
    if (
      typeof edk !== "object" ||
      edk === null ||
      typeof edk.providerId !== "string" ||
      typeof edk.providerInfo !== "string" ||
      !(edk.ciphertext instanceof Uint8Array)
    ) {
      return "encrypted data keys of { providerId: string, providerInfo: string, ciphertext: Uint8Array }";
    }
    // Written as UTF-8, a lone surrogate would read back as U+FFFD: another key's name.
    if (!isWellFormed(edk.providerId) || !isWellFormed(edk.providerInfo)) {
      return "provider ids and infos of well-formed Unicode (no lone surrogates)";
    }
    // The header's u16 length fields (§5.2). Checked before the result is cached: a cached
    // entry that can never be written would fail every message that draws it until it expires.
    if (
      Buffer.byteLength(edk.providerId, "utf8") > 0xffff ||
      Buffer.byteLength(edk.providerInfo, "utf8") > 0xffff ||
      edk.ciphertext.length > 0xffff
    ) {
      return "encrypted data key fields of at most 65535 bytes each";
    }
  }
  return undefined;
}

/** Everything a message needs before its first byte: header fields, message key, signer. */
interface MessagePlan {
  readonly fields: HeaderFields;
  readonly key: KeyObject;
  readonly signing: MessageSigning | undefined;
}

/**
 * Validates the options, obtains a data key (from the cache or the keyring) and derives the
 * message key and commitment. Shared by the one-shot and the streaming encryptor.
 * @throws ValidationException for bad options or keyring output; keyring (KMS) errors as thrown.
 */
async function planMessage(
  options: EncryptMessageOptions,
  declared: number | undefined,
  defaultFrameLength: number,
): Promise<MessagePlan> {
  assertObject("options", options);
  const keyring = options.keyring;
  if (typeof keyring?.encryptDataKey !== "function") {
    throw new ValidationError('"keyring" expected a Keyring');
  }
  assertDataKeyCache(options.dataKeyCache);
  const suite =
    options.suite === undefined || options.suite === DEFAULT_SUITE
      ? DEFAULT_SUITE_INFO
      : suiteByName(options.suite);
  const frameLength =
    options.frameLength === undefined
      ? defaultFrameLength
      : assertInteger("frameLength", options.frameLength, 1, MAX_FRAME_LENGTH);
  const context = contextCopy(options.encryptionContext);
  for (const key in context) {
    if (key.startsWith(RESERVED_CONTEXT_PREFIX)) {
      throw new ValidationError(
        `"encryptionContext" key "${key}" uses the reserved prefix "${RESERVED_CONTEXT_PREFIX}"`,
      );
    }
  }
  let signing: MessageSigning | undefined;
  if (suite.signature !== undefined) {
    const pair = generateSigningKey(suite.signature);
    context[PUBLIC_KEY_CONTEXT_KEY] = pair.publicKey;
    signing = { signer: newSigner(suite.signature), key: pair.privateKey, spec: suite.signature };
  }
  const contextBytes = encodeEncryptionContext(context);
  const materials = await dataKeyFor(options, suite, context, contextBytes, declared);
  const messageId = randomBytes(MESSAGE_ID_LENGTH);
  const { key, commitment } = deriveMessageKey(materials.dataKey, messageId, suite);
  materials.dataKey.fill(0);
  const fields: HeaderFields = {
    suite,
    messageId,
    encryptionContextBytes: contextBytes,
    encryptedDataKeys: materials.encryptedDataKeys,
    frameLength,
    commitment,
  };
  return { fields, key, signing };
}

const DEFAULT_SUITE_INFO = suiteByName(DEFAULT_SUITE);

/**
 * A copy of the caller's context, to which a signing suite adds its public key. Checked before
 * copying, as `encodeEncryptionContext` checks: a spread makes `{}` of a Map or class instance
 * (a message bound to no context at all) and index keys of a string or array.
 * @throws ValidationException for anything but a plain (or null-prototype) object.
 */
function contextCopy(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  const proto: unknown =
    typeof value === "object" && value !== null ? Object.getPrototypeOf(value) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError('"encryptionContext" expected an object of string pairs');
  }
  return { ...(value as Record<string, string>) };
}

// Scratch IV and AAD for the one-shot path: it fills and consumes them synchronously (no await
// between patching and use), so one pair serves every message. Neither holds a secret.
const SCRATCH_IV = Buffer.alloc(IV_LENGTH);
const SCRATCH_AAD = Buffer.alloc(FRAME_AAD_LENGTH);

/**
 * One-shot encryption: the whole message (header, frames, signature) written into a single
 * buffer sized up front (every byte is written, so it need not be zero-filled). The plaintext is
 * read in place; each frame's ciphertext is copied once, straight after it is produced
 * (node:crypto cannot encrypt into a caller's buffer), and node's buffer is then freed at once,
 * so the next frame or message reuses its memory while it is still mapped and cached.
 * @throws ValidationException for bad options or keyring output; keyring (KMS) errors as thrown.
 */
export async function sealMessage(
  plaintext: Uint8Array,
  options: EncryptMessageOptions,
): Promise<Uint8Array> {
  const total = plaintext.length;
  const plan = await planMessage(options, total, DEFAULT_MESSAGE_FRAME_LENGTH);
  // The header now commits to `total` (and a cached data key was charged for it): a view whose
  // buffer was resized or transferred during the await would seal fewer bytes than were passed.
  if (plaintext.length !== total) {
    throw new ValidationError(
      `"plaintext" changed length (${total} to ${plaintext.length}) while the data key was obtained`,
    );
  }
  const { fields, key } = plan;
  const frame = fields.frameLength;
  const regular = total === 0 ? 0 : Math.ceil(total / frame) - 1;
  if (regular + 1 > MAX_SEQUENCE) {
    throw new ValidationError(`a message holds at most ${MAX_SEQUENCE} frames`);
  }
  const last = total - regular * frame;
  const bodyLength = headerBodyLength(fields);
  const size =
    bodyLength + TAG_LENGTH + regular * (4 + frame + TAG_LENGTH) + 12 + last + TAG_LENGTH;
  const out = publicBuffer(size);
  writeHeaderBody(out, fields);
  writeHeaderTag(key, out, bodyLength);
  let at = bodyLength + TAG_LENGTH;
  const iv = SCRATCH_IV;
  const aad = SCRATCH_AAD;
  aad.set(fields.messageId, 0);
  for (let seq = 1; seq <= regular + 1; seq++) {
    const final = seq === regular + 1;
    const length = final ? last : frame;
    if (final) {
      out.writeUInt32BE(FINAL_FRAME_MARKER, at);
      out.writeUInt32BE(seq, at + 4);
      at = out.writeUInt32BE(length, at + 8);
    } else {
      at = out.writeUInt32BE(seq, at);
    }
    setFrameIv(iv, seq);
    setFrameAad(aad, final ? KIND_FINAL : KIND_REGULAR, seq, length);
    const cipher = createCipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_LENGTH });
    cipher.setAAD(aad);
    const start = (seq - 1) * frame;
    const ciphertext = cipher.update(plaintext.subarray(start, start + length));
    out.set(ciphertext, at);
    releaseBuffer(ciphertext);
    cipher.final();
    out.set(cipher.getAuthTag(), at + length);
    at += length + TAG_LENGTH;
  }
  const view = new Uint8Array(out.buffer, out.byteOffset, size);
  if (plan.signing === undefined) return view;
  plan.signing.signer.update(view);
  const footer = signatureFooter(plan.signing);
  const signed = new Uint8Array(size + footer.length);
  signed.set(view, 0);
  signed.set(footer, size);
  return signed;
}
