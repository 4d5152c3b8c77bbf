/**
 * What a decryptor accepts before it spends a KMS call (docs/FORMAT.md §5.7). Every violation
 * is an AccessDeniedError naming the rule: the message may be perfectly valid, the caller's
 * policy refuses it. (Authentication failures are InvalidCiphertextError instead.)
 */
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { AccessDeniedError, ValidationError } from "../errors.ts";
import { assertObject, assertOneOf } from "../internal/assert.ts";
import type { EncryptedDataKey } from "../keyring/keyring.ts";
import { KMS_PROVIDER_ID } from "../keyring/kms-keyring.ts";
import type { RawKeyName } from "../keyring/raw-aes-keyring.ts";
import type { EncryptionContext } from "../types.ts";
import {
  DEFAULT_MAX_ENCRYPTED_DATA_KEYS,
  type HeaderChecks,
  MAX_FRAME_LENGTH,
  type SuiteInfo,
} from "./format.ts";

export interface DecryptPolicy {
  /**
   * KMS key ids or ARNs whose copies may be used. Copies under other KMS keys are ignored.
   * Absent = any KMS key the keyring accepts.
   */
  readonly allowedKeyIds?: readonly string[];
  /**
   * Raw keyring keys whose copies may be used, each `{ keyNamespace, keyName }` or the string
   * "namespace/name", which is split at its first "/" (so a namespace that contains "/" can
   * only be given as an object). Absent = any raw key the keyring accepts.
   */
  readonly allowedKeyNames?: readonly (string | RawKeyName)[];
  /** Pairs the message's encryption context must contain (it may contain others too). */
  readonly requiredEncryptionContext?: EncryptionContext;
  /** Most encrypted data keys a message may carry; default 16. */
  readonly maxEncryptedDataKeys?: number;
  /**
   * Largest frame length accepted, 1 B – 16 MiB (the default and the format's limit). A stream
   * decryptor buffers one frame, so this bounds its memory per message.
   */
  readonly maxFrameLength?: number;
  /** "required": reject unsigned suites; "forbidden": reject signed ones; default "allowed". */
  readonly signature?: "required" | "forbidden" | "allowed";
}

/**
 * A validated copy of a policy, applied to each header field as soon as the parser has read it
 * (§5.6): a stream that breaks a rule is refused before the rest of its header is buffered.
 * Copied at construction, so a caller mutating its policy object later changes nothing.
 */
export class DecryptRules implements HeaderChecks {
  readonly maxEncryptedDataKeys: number;
  readonly #maxFrameLength: number;
  readonly #signature: DecryptPolicy["signature"];
  readonly #requiredContext: readonly (readonly [string, string])[];
  readonly #keyIds: readonly string[] | undefined;
  readonly #keyNames: readonly RawKeyName[] | undefined;

  /** @throws ValidationException for a limit out of range or a rule of the wrong shape. */
  constructor(policy: DecryptPolicy | undefined) {
    if (policy !== undefined) {
      // A malformed rule must refuse, never quietly not apply: a misspelt `signature` would allow
      // signed and unsigned messages alike, and `allowedKeyNames` given as one string would match
      // any name that is a substring of it (String#includes).
      assertObject("policy", policy);
      if (policy.signature !== undefined) {
        assertOneOf("policy.signature", policy.signature, ["required", "forbidden", "allowed"]);
      }
      encodeEncryptionContext(policy.requiredEncryptionContext, "policy.requiredEncryptionContext");
    }
    this.#keyIds = strings("policy.allowedKeyIds", policy?.allowedKeyIds);
    this.#keyNames = keyNames(policy?.allowedKeyNames);
    this.#signature = policy?.signature;
    this.#requiredContext = Object.entries(policy?.requiredEncryptionContext ?? {});
    const max = policy?.maxEncryptedDataKeys ?? DEFAULT_MAX_ENCRYPTED_DATA_KEYS;
    if (!Number.isInteger(max) || max < 1 || max > 0xffff) {
      throw new ValidationError('"policy.maxEncryptedDataKeys" must be an integer in 1–65535');
    }
    this.maxEncryptedDataKeys = max;
    const frames = policy?.maxFrameLength ?? MAX_FRAME_LENGTH;
    if (!Number.isInteger(frames) || frames < 1 || frames > MAX_FRAME_LENGTH) {
      throw new ValidationError(
        `"policy.maxFrameLength" must be an integer in 1–${MAX_FRAME_LENGTH}`,
      );
    }
    this.#maxFrameLength = frames;
  }

  /** @throws AccessDeniedException when the policy requires or forbids a signature. */
  suite(suite: SuiteInfo): void {
    const signed = suite.signature !== undefined;
    if (this.#signature === "required" && !signed) {
      throw new AccessDeniedError("the decrypt policy requires a signed message");
    }
    if (this.#signature === "forbidden" && signed) {
      throw new AccessDeniedError("the decrypt policy forbids signed messages");
    }
  }

  /** @throws AccessDeniedException when a required pair is missing or has another value. */
  context(context: Readonly<Record<string, string>>): void {
    for (const [key, value] of this.#requiredContext) {
      if (!Object.hasOwn(context, key) || context[key] !== value) {
        throw new AccessDeniedError(
          `the decrypt policy requires encryption context key "${key}" with a given value`,
        );
      }
    }
  }

  /** @throws AccessDeniedException for frames longer than the policy allows. */
  frameLength(frameLength: number): void {
    if (frameLength > this.#maxFrameLength) {
      throw new AccessDeniedError(
        `the message's frames are ${frameLength} bytes; the decrypt policy allows at most ${this.#maxFrameLength}`,
      );
    }
  }

  /**
   * The copies the keyring may try, of a parsed (not yet authenticated) header.
   * @throws AccessDeniedException when the key lists leave none.
   */
  allowedCopies(copies: readonly EncryptedDataKey[]): readonly EncryptedDataKey[] {
    const ids = this.#keyIds;
    const names = this.#keyNames;
    if (ids === undefined && names === undefined) return copies;
    const allowed = copies.filter((edk) =>
      edk.providerId === KMS_PROVIDER_ID
        ? ids === undefined ||
          ids.some((id) => id === edk.providerInfo || edk.providerInfo.endsWith(`:key/${id}`))
        : // The structured pair, never a joined string: "a/b" + "c" and "a" + "b/c" both join
          // to "a/b/c", and a policy allowing one must not allow the other.
          names === undefined ||
          names.some((n) => n.keyNamespace === edk.providerId && n.keyName === edk.providerInfo),
    );
    if (allowed.length === 0) {
      throw new AccessDeniedError(
        "none of the message's encrypted data keys is under a key the decrypt policy allows",
      );
    }
    return allowed;
  }
}

function strings(name: string, value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((entry) => typeof entry === "string")) {
    throw new ValidationError(`"${name}" expected an array of strings`);
  }
  return [...value];
}

const KEY_NAMES_RULE =
  '"policy.allowedKeyNames" expected an array of "namespace/name" strings or { keyNamespace, keyName } objects';

/** The raw keys a policy names, as structured pairs. */
function keyNames(value: unknown): readonly RawKeyName[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new ValidationError(KEY_NAMES_RULE);
  return value.map((entry: unknown): RawKeyName => {
    if (typeof entry === "string") {
      const slash = entry.indexOf("/");
      // Without a "/" the entry could match nothing: refuse it rather than deny every message.
      if (slash <= 0 || slash === entry.length - 1) throw new ValidationError(KEY_NAMES_RULE);
      return { keyNamespace: entry.slice(0, slash), keyName: entry.slice(slash + 1) };
    }
    if (typeof entry === "object" && entry !== null) {
      const { keyNamespace, keyName } = entry as Partial<Record<keyof RawKeyName, unknown>>;
      if (typeof keyNamespace === "string" && typeof keyName === "string") {
        return { keyNamespace, keyName };
      }
    }
    throw new ValidationError(KEY_NAMES_RULE);
  });
}
