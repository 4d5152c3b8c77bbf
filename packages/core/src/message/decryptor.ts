/**
 * Incremental message decryption (docs/FORMAT.md §5.6). Plaintext of a frame is returned only
 * after that frame's tag verifies; every structural or authentication failure is the same
 * generic InvalidCiphertextError, and the decryptor refuses further input after one.
 */
import { createDecipheriv, type KeyObject, timingSafeEqual, type Verify } from "node:crypto";
import { dataKeyCacheKey } from "../caching/data-key-cache.ts";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
import { assertBytes, assertObject } from "../internal/assert.ts";
import { isDataKey, keyringFailure, withEncodedContext } from "../keyring/keyring.ts";
import { ByteQueue } from "./byte-queue.ts";
import { DecryptRules } from "./decrypt-policy.ts";
import {
  deriveMessageKey,
  FINAL_FRAME_MARKER,
  HeaderParser,
  headerTag,
  IV_LENGTH,
  invalidMessage,
  KIND_FINAL,
  KIND_REGULAR,
  type MessageHeader,
  newFrameAad,
  PUBLIC_KEY_CONTEXT_KEY,
  RESERVED_CONTEXT_PREFIX,
  setFrameAad,
  setFrameIv,
  TAG_LENGTH,
} from "./format.ts";
import {
  assertDataKeyCache,
  assertOnHeader,
  type DecryptStreamOptions,
  type MessageInfo,
} from "./options.ts";
import { releaseBuffer } from "./release-buffer.ts";
import { importVerifyingKey, MAX_SIGNATURE_LENGTH, newVerifier } from "./signature.ts";

type State = "header" | "body" | "signature" | "done" | "failed";

export class MessageDecryptor {
  readonly #options: DecryptStreamOptions;
  readonly #rules: DecryptRules;
  readonly #parser: HeaderParser;
  #state: State = "header";
  /** Header bytes received so far: the first `#headerFill` bytes of a buffer grown by doubling. */
  #headerBytes: Uint8Array = new Uint8Array(0);
  #headerFill = 0;
  /** How many bytes the header holds at least, as of the last parse. */
  #headerNeeded = 0;
  readonly #queue = new ByteQueue();
  /**
   * What the header said, once it authenticated. The parsed header itself is not kept: its
   * fields are views into the caller's first chunk, which would stay in memory for the stream's
   * life.
   */
  #info: MessageInfo | undefined;
  #key: KeyObject | undefined;
  readonly #iv = Buffer.alloc(IV_LENGTH);
  #aad: Buffer | undefined;
  #seq = 1;
  #verifier: Verify | undefined;
  #verifyingKey: KeyObject | undefined;
  /** The stream's hook, then the caller's (read once, as validated). */
  readonly #onHeader: readonly ((info: MessageInfo) => void)[];

  /**
   * @param onHeader called once the header authenticated, before `options.onHeader` (a
   *   stream's own hook, which must not replace the caller's unchecked).
   * @throws ValidationException for bad options.
   */
  constructor(options: DecryptStreamOptions, onHeader?: (info: MessageInfo) => void) {
    assertObject("options", options);
    if (typeof options.keyring?.decryptDataKey !== "function") {
      throw new ValidationError('"keyring" expected a Keyring');
    }
    assertDataKeyCache(options.dataKeyCache);
    const callerOnHeader = options.onHeader;
    assertOnHeader(callerOnHeader);
    this.#onHeader = [onHeader, callerOnHeader].filter((hook) => hook !== undefined);
    // Validated like an encryption context: a Map or class instance has no own pairs and would
    // be compared as the empty context, accepting any message that carries none.
    encodeEncryptionContext(options.encryptionContext);
    this.#options = options;
    const rules = new DecryptRules(options.policy);
    this.#rules = rules;
    const expected =
      options.encryptionContext === undefined
        ? undefined
        : new Map(Object.entries(options.encryptionContext));
    this.#parser = new HeaderParser({
      maxEncryptedDataKeys: rules.maxEncryptedDataKeys,
      suite: (suite) => rules.suite(suite),
      context: (context) => {
        // A wrong expected context is an invalid message (as KMS Decrypt), checked before the
        // policy's required pairs; both before any copy of the data key is buffered.
        if (expected !== undefined && !sameContext(expected, context)) throw invalidMessage();
        rules.context(context);
      },
      frameLength: (frameLength) => rules.frameLength(frameLength),
    });
  }

  /** The authenticated header, once parsed. */
  get info(): MessageInfo | undefined {
    return this.#key === undefined ? undefined : this.#info;
  }

  /** Keeps what the header said (not the header: see `#info`) and moves on to the frames. */
  #accept(header: MessageHeader): void {
    this.#info = {
      suite: header.suite.name,
      // The parser's own copy, not a view of the caller's bytes.
      messageId: header.messageId,
      encryptionContext: header.encryptionContext,
      frameLength: header.frameLength,
      encryptedDataKeys: header.encryptedDataKeys.map((e) => ({
        providerId: e.providerId,
        providerInfo: e.providerInfo,
      })),
    };
    this.#state = "body";
  }

  /**
   * Consumes message bytes and returns the plaintext of every frame that completed and verified.
   * @throws InvalidCiphertextException for any malformed or unauthentic input;
   *   AccessDeniedException for a decrypt-policy violation; ValidationException for a chunk that
   *   is not a Uint8Array.
   */
  async update(chunk: Uint8Array): Promise<Uint8Array[]> {
    assertBytes("chunk", chunk, 0, Number.MAX_SAFE_INTEGER);
    if (this.#state === "failed") throw invalidMessage();
    try {
      if (this.#state === "header") {
        await this.#readHeader(chunk);
        // Still reading the header, or aborted while the keyring was busy (the await may have
        // changed the state, which the compiler's narrowing does not see).
        if ((this.#state as State) !== "body") return [];
      } else {
        this.#queue.push(chunk);
      }
      return this.#readFrames();
    } catch (error) {
      this.#fail();
      throw error;
    }
  }

  /**
   * One-shot: decrypts a complete message held in memory, without the stream machinery (no
   * queue, no per-frame output parts). The frame structure is checked first, so the plaintext
   * buffer is allocated once at its exact size; it is zeroed if any later check fails.
   * @throws InvalidCiphertextException for any malformed, truncated or unauthentic message;
   *   AccessDeniedException for a decrypt-policy violation; ValidationException when this
   *   decryptor was already used.
   */
  async decryptWhole(message: Uint8Array): Promise<Uint8Array> {
    if (this.#state !== "header") throw new ValidationError("decryptWhole must be the only call");
    try {
      const parsed = this.#parser.parse(message);
      if (parsed.header === undefined) throw invalidMessage();
      await this.#openHeader(parsed.header);
      this.#accept(parsed.header);
      this.#announce();
      const plaintext = this.#openAll(message, parsed.length);
      this.#state = "done";
      return plaintext;
    } catch (error) {
      this.#fail();
      throw error;
    }
  }

  #openAll(message: Uint8Array, start: number): Uint8Array {
    const frameLength = this.#info!.frameLength;
    const view = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    // Pass 1: walk the framing (sequence numbers, final-frame length, exact end).
    let at = start;
    let regular = 0;
    let last: number;
    for (;;) {
      if (at + 4 > view.length) throw invalidMessage();
      const marker = view.readUInt32BE(at);
      if (marker === FINAL_FRAME_MARKER) {
        if (at + 12 > view.length) throw invalidMessage();
        const seq = view.readUInt32BE(at + 4);
        last = view.readUInt32BE(at + 8);
        if (seq !== regular + 1 || last > frameLength || (last === 0 && seq !== 1)) {
          throw invalidMessage();
        }
        at += 12 + last + TAG_LENGTH;
        if (at > view.length) throw invalidMessage();
        break;
      }
      if (marker !== regular + 1) throw invalidMessage();
      at += 4 + frameLength + TAG_LENGTH;
      regular += 1;
    }
    const bodyEnd = at;
    if (this.#verifier === undefined) {
      if (bodyEnd !== view.length) throw invalidMessage();
    } else {
      if (bodyEnd + 2 > view.length) throw invalidMessage();
      const length = view.readUInt16BE(bodyEnd);
      if (length === 0 || length > MAX_SIGNATURE_LENGTH || bodyEnd + 2 + length !== view.length) {
        throw invalidMessage();
      }
      this.#verifier.update(view.subarray(start, bodyEnd));
      const ok = this.#verifier.verify(
        { key: this.#verifyingKey!, dsaEncoding: "der" },
        view.subarray(bodyEnd + 2),
      );
      if (!ok) throw invalidMessage();
    }
    // Pass 2: open the frames in order.
    const key = this.#key!;
    const iv = this.#iv;
    const aad = this.#aad!;
    at = start;
    if (regular === 0) {
      // One frame: node's output buffer is the result, no copy.
      return this.#openFrame(key, iv, aad, KIND_FINAL, 1, view, at + 12, last);
    }
    const out = Buffer.allocUnsafeSlow(regular * frameLength + last);
    try {
      for (let seq = 1; seq <= regular + 1; seq++) {
        const final = seq === regular + 1;
        const headerSize = final ? 12 : 4;
        const length = final ? last : frameLength;
        const plaintext = this.#openFrame(
          key,
          iv,
          aad,
          final ? KIND_FINAL : KIND_REGULAR,
          seq,
          view,
          at + headerSize,
          length,
        );
        out.set(plaintext, (seq - 1) * frameLength);
        // Wiped, then freed at once: the next frame's output reuses the memory (release-buffer.ts).
        plaintext.fill(0);
        releaseBuffer(plaintext);
        at += headerSize + length + TAG_LENGTH;
      }
    } catch (error) {
      // Frames that verified before a later failure must not outlive the call.
      out.fill(0);
      throw error;
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }

  /** Decrypts and verifies the frame whose ciphertext starts at `at`; its tag follows it. */
  #openFrame(
    key: KeyObject,
    iv: Buffer,
    aad: Buffer,
    kind: number,
    seq: number,
    bytes: Buffer,
    at: number,
    length: number,
  ): Uint8Array {
    setFrameIv(iv, seq);
    setFrameAad(aad, kind, seq, length);
    const decipher = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_LENGTH });
    decipher.setAAD(aad);
    decipher.setAuthTag(bytes.subarray(at + length, at + length + TAG_LENGTH));
    const plaintext = decipher.update(bytes.subarray(at, at + length));
    try {
      decipher.final();
    } catch (cause) {
      plaintext.fill(0);
      throw invalidMessage(cause);
    }
    return plaintext;
  }

  /**
   * Synchronous variant for callers that already passed the header (the frame loop).
   * @throws InvalidCiphertextException, ValidationException as `update`.
   */
  updateSync(chunk: Uint8Array): Uint8Array[] | undefined {
    assertBytes("chunk", chunk, 0, Number.MAX_SAFE_INTEGER);
    if (this.#state === "header" || this.#state === "failed") return undefined;
    try {
      this.#queue.push(chunk);
      return this.#readFrames();
    } catch (error) {
      this.#fail();
      throw error;
    }
  }

  /**
   * Confirms the message ended exactly after its final frame (and verified signature).
   * @throws InvalidCiphertextException for a truncated message.
   */
  final(): void {
    if (this.#state !== "done" || this.#queue.length !== 0) {
      this.#fail();
      throw invalidMessage();
    }
  }

  /**
   * Stops a decryption whose consumer went away (a stream destroyed or cancelled): a keyring
   * call still in flight then leads to no decryption, and later input is refused. Plaintext that
   * nobody will read is not produced, so none is left in memory unzeroed.
   */
  abort(): void {
    if (this.#state !== "done") this.#fail();
  }

  #fail(): void {
    this.#state = "failed";
    this.#key = undefined;
  }

  async #readHeader(chunk: Uint8Array): Promise<void> {
    let bytes: Uint8Array;
    if (this.#headerFill === 0) {
      bytes = chunk;
    } else {
      this.#appendHeaderBytes(chunk);
      if (this.#headerFill < this.#headerNeeded) return;
      bytes = this.#headerBytes.subarray(0, this.#headerFill);
    }
    const parsed = this.#parser.parse(bytes);
    if (parsed.header === undefined) {
      this.#headerNeeded = parsed.needed;
      // Copy: the caller may reuse its chunk buffer once we return.
      if (bytes === chunk) this.#appendHeaderBytes(chunk);
      return;
    }
    this.#headerBytes = new Uint8Array(0);
    this.#headerFill = 0;
    const header = parsed.header;
    // Like every stream consumer, the queue keeps views of input chunks until it consumes them
    // (callers must not reuse a chunk's buffer after writing it).
    this.#queue.push(bytes.subarray(parsed.length));
    await this.#openHeader(header);
    if (this.#state === "failed") {
      // Aborted while the keyring was busy.
      this.#key = undefined;
      return;
    }
    this.#accept(header);
    this.#announce();
  }

  #announce(): void {
    const info = this.info!;
    for (const hook of this.#onHeader) hook(info);
  }

  /** Appends to the header buffer, doubling its capacity, so a header in small chunks is copied O(1) times per byte. */
  #appendHeaderBytes(chunk: Uint8Array): void {
    const fill = this.#headerFill;
    if (fill + chunk.length > this.#headerBytes.length) {
      const grown = new Uint8Array(
        Math.max(fill + chunk.length, this.#headerNeeded, 2 * fill, 256),
      );
      grown.set(this.#headerBytes.subarray(0, fill));
      this.#headerBytes = grown;
    }
    this.#headerBytes.set(chunk, fill);
    this.#headerFill = fill + chunk.length;
  }

  async #openHeader(header: MessageHeader): Promise<void> {
    const options = this.#options;
    const edks = this.#rules.allowedCopies(header.encryptedDataKeys);
    const cache = options.dataKeyCache;
    const cacheKey =
      cache === undefined
        ? undefined
        : dataKeyCacheKey({
            purpose: "decrypt",
            keyringIdentity: options.keyring.identity,
            encryptionContext: header.encryptionContextBytes,
            suite: header.suite.id,
            encryptedDataKeys: edks,
          });
    let dataKey: unknown =
      cacheKey === undefined
        ? undefined
        : cache?.take(cacheKey, { messages: 0, bytes: 0 })?.dataKey;
    const fromCache = dataKey !== undefined;
    if (dataKey === undefined) {
      try {
        dataKey = await withEncodedContext(
          header.encryptionContext,
          header.encryptionContextBytes,
          () =>
            options.keyring.decryptDataKey({
              encryptedDataKeys: edks,
              encryptionContext: header.encryptionContext,
              suiteId: header.suite.id,
            }),
        );
      } catch (error) {
        throw keyringFailure(error, "decryptDataKey");
      }
    }
    if (!isDataKey(dataKey)) {
      // A custom keyring's bug, or a copy it opened without authenticating it: never a key.
      if (dataKey instanceof Uint8Array) dataKey.fill(0);
      throw invalidMessage();
    }
    const { key, commitment } = deriveMessageKey(dataKey, header.messageId, header.suite);
    // Key commitment first: a message crafted to decrypt under two data keys fails here.
    const expectedTag = headerTag(key, header.authenticated);
    if (
      !timingSafeEqual(commitment, header.commitment) ||
      !timingSafeEqual(expectedTag, header.tag)
    ) {
      dataKey.fill(0);
      throw invalidMessage();
    }
    if (!fromCache && cache !== undefined && cacheKey !== undefined) {
      // Only the key: a decryptor never reads the copies back (the cache key already binds
      // them), and the header's copies are views into the caller's message or first chunk,
      // which the entry would otherwise keep in memory for maxAgeMs.
      cache.put(cacheKey, { dataKey, encryptedDataKeys: [] }, { messages: 0, bytes: 0 });
    }
    dataKey.fill(0);
    const signature = header.suite.signature;
    if (signature !== undefined) {
      this.#verifyingKey = importVerifyingKey(
        signature,
        header.encryptionContext[PUBLIC_KEY_CONTEXT_KEY],
      );
      this.#verifier = newVerifier(signature);
      this.#verifier.update(header.authenticated);
      this.#verifier.update(header.tag);
    }
    this.#key = key;
    this.#aad = newFrameAad(header.messageId);
  }

  #readFrames(): Uint8Array[] {
    const out: Uint8Array[] = [];
    try {
      this.#readFramesInto(out);
    } catch (error) {
      // Frames that verified before the failure are never released.
      for (const part of out) part.fill(0);
      throw error;
    }
    return out;
  }

  #readFramesInto(out: Uint8Array[]): void {
    const queue = this.#queue;
    const frameLength = this.#info!.frameLength;
    while (this.#state === "body") {
      if (queue.length < 4) break;
      const marker = queue.peekUint32(0);
      if (marker === FINAL_FRAME_MARKER) {
        if (queue.length < 12) break;
        const seq = queue.peekUint32(4);
        const length = queue.peekUint32(8);
        // Canonical framing: only a one-frame message may end with an empty final frame.
        if (seq !== this.#seq || length > frameLength || (length === 0 && seq !== 1)) {
          throw invalidMessage();
        }
        if (queue.length < 12 + length + TAG_LENGTH) break;
        out.push(this.#open(KIND_FINAL, seq, queue.take(12 + length + TAG_LENGTH), 12, length));
        this.#state = this.#verifier === undefined ? "done" : "signature";
      } else {
        if (marker !== this.#seq) throw invalidMessage();
        const size = 4 + frameLength + TAG_LENGTH;
        if (queue.length < size) break;
        out.push(this.#open(KIND_REGULAR, marker, queue.take(size), 4, frameLength));
      }
    }
    if (this.#state === "signature" && queue.length >= 2) {
      const length = queue.peekUint32(0) >>> 16;
      if (length === 0 || length > MAX_SIGNATURE_LENGTH) throw invalidMessage();
      if (queue.length >= 2 + length) {
        const footer = queue.take(2 + length);
        const ok = this.#verifier!.verify(
          { key: this.#verifyingKey!, dsaEncoding: "der" },
          footer.subarray(2),
        );
        if (!ok) throw invalidMessage();
        this.#state = "done";
      }
    }
    if (this.#state === "done" && queue.length > 0) throw invalidMessage();
  }

  #open(kind: number, seq: number, frame: Uint8Array, at: number, length: number): Uint8Array {
    this.#seq = seq + 1;
    const bytes = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    const plaintext = this.#openFrame(
      this.#key!,
      this.#iv,
      this.#aad!,
      kind,
      seq,
      bytes,
      at,
      length,
    );
    this.#verifier?.update(frame);
    return plaintext;
  }
}

/** The caller's expected context must equal the stored one, ignoring the format's own keys. */
function sameContext(
  expected: ReadonlyMap<string, string>,
  stored: Readonly<Record<string, string>>,
): boolean {
  const pairs = Object.entries(stored).filter(([key]) => !key.startsWith(RESERVED_CONTEXT_PREFIX));
  if (pairs.length !== expected.size) return false;
  return pairs.every(([key, value]) => expected.get(key) === value);
}
