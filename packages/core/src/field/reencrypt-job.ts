import { ValidationError } from "../errors.ts";
import type { EncryptionContext } from "../types.ts";
import type {
  FieldEncryptionEngine,
  FieldSpec,
  StoredValueInfo,
} from "./field-encryption-engine.ts";
import { type FieldValue, parseLegacyValue } from "./value-codec.ts";

/** A stored value as the job sees it: the text or bytes form, or null (not encrypted). */
export type StoredFieldValue = string | Uint8Array | null;

export interface ReencryptRow {
  /** Position of the row in cursor order (usually its primary key). */
  readonly cursor: string | number | bigint;
  /** The row's context values (tenant, …), as the adapter binds them. */
  readonly context: EncryptionContext;
  /** The part of `context` that chooses the data keys (`FieldBinding.keyContext`); default all. */
  readonly keyContext?: EncryptionContext;
  readonly values: Readonly<Record<string, StoredFieldValue>>;
}

/** The adapter side of a re-encryption job: paging and conditional writes. */
export interface ReencryptSource {
  /** Up to `limit` rows strictly after `cursor` (all rows from the start when undefined). */
  fetchBatch(
    cursor: string | number | bigint | undefined,
    limit: number,
  ): Promise<readonly ReencryptRow[]>;
  /**
   * Writes `next` only if the row's stored values still equal `row.values` (compare-and-set,
   * so a concurrent application write wins); returns whether the row was updated.
   * `plaintexts` lets the adapter recompute blind indexes.
   */
  compareAndSet(
    row: ReencryptRow,
    next: Readonly<Record<string, StoredFieldValue>>,
    plaintexts: Readonly<Record<string, FieldValue>>,
  ): Promise<boolean>;
}

export interface ReencryptCheckpoint {
  readonly cursor: string | number | bigint | undefined;
  readonly scanned: number;
  readonly reencrypted: number;
  /** Rows changed by someone else between read and write; the next run picks them up. */
  readonly conflicts: number;
}

export interface ReencryptOptions {
  readonly engine: FieldEncryptionEngine;
  readonly source: ReencryptSource;
  readonly model: string;
  /** The encrypted fields of the model and how they are stored. */
  readonly fields: Readonly<Record<string, FieldSpec & { readonly storage: "text" | "bytes" }>>;
  /**
   * Which values to rewrite. Default: legacy plaintext, values whose data key is wrapped
   * under another KMS key than the one the context now selects (`info.kmsKeyId`: the ARN the KMS
   * unwrapped the data key under, `engine.inspect(stored, binding)`), and deterministic values
   * whose stable data key is not the current one. Values in a mode other than their field's
   * are rewritten whatever this returns. A randomized value it selects is rewritten under
   * another data key: the job retires the value's data key in the engine first
   * (`engine.retireDataKeys`), so selecting by `dataKeyId` or `createdAt` rotates data keys.
   * A deterministic value under the current stable key comes out the same and is left as it is.
   */
  readonly shouldReencrypt?: (
    info: StoredValueInfo,
    current: { readonly kmsKeyId: string; readonly stableDataKeyId: string },
  ) => boolean;
  /** Rows per batch (default 100). */
  readonly batchSize?: number;
  /** Resume from a checkpoint a previous run reported. */
  readonly resumeFrom?: ReencryptCheckpoint;
  /** Called after each batch with a checkpoint to persist. */
  readonly onProgress?: (checkpoint: ReencryptCheckpoint) => void | Promise<void>;
  readonly signal?: AbortSignal;
}

function defaultPolicy(
  info: StoredValueInfo,
  current: { readonly kmsKeyId: string; readonly stableDataKeyId: string },
): boolean {
  if (info.legacy) return true;
  if (info.mode === "deterministic") return info.dataKeyId !== current.stableDataKeyId;
  return info.kmsKeyId !== current.kmsKeyId;
}

/**
 * Re-encrypts a model's values in batches by cursor: legacy plaintext, values under an old
 * KMS key, or whatever `shouldReencrypt` selects (values under a given data key, for one).
 * Each row is written with a compare-and-set, so the job is safe while the application keeps
 * writing, and the checkpoint it reports after each batch lets an interrupted run resume. Runs with legacy plaintext reads need an engine
 * created with `legacyPlaintext: true`. Values under an old KMS key are read only when the job's
 * engine lists that key in `previousKeyIds` (an engine unwraps data keys under `keyId` and those
 * only, FORMAT §6.2); so must the application's engine, for its reads and for equality lookups of
 * the rows not yet moved (and, for legacy rows, have `legacyPlaintext`), until the job has
 * finished (FORMAT §6.7).
 * @throws ValidationException on bad options or a legacy value that is no text form of its
 *   field's type (FORMAT §6.7); InvalidCiphertextException when a stored value is neither
 *   ciphertext nor (with legacy reads) plaintext, or its data key is wrapped under a KMS key
 *   the engine is not configured with; KMS errors from the engine.
 */
export async function reencryptFields(options: ReencryptOptions): Promise<ReencryptCheckpoint> {
  const batchSize = options.batchSize ?? 100;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    throw new ValidationError(`"batchSize" must be an integer 1–10000, got ${batchSize}`);
  }
  const policy = options.shouldReencrypt ?? defaultPolicy;
  // A data key retired once stays retired in the engine: each is retired at its first value.
  const retired = new Set<string>();
  const { engine, source, model, fields } = options;
  // The stable data key of a context is needed only to compare deterministic values against
  // it; for any other model its id (derived, for the policy) is enough. Loading it anyway would
  // cost a KMS GenerateDataKey and a data-key row per context that nothing ever uses. Blind
  // indexes recomputed by the source load their key themselves, when a row is rewritten.
  const loadStableKey = Object.values(fields).some((spec) => spec.mode === "deterministic");
  let state: ReencryptCheckpoint = options.resumeFrom ?? {
    cursor: undefined,
    scanned: 0,
    reencrypted: 0,
    conflicts: 0,
  };
  for (;;) {
    options.signal?.throwIfAborted();
    const rows = await source.fetchBatch(state.cursor, batchSize);
    if (rows.length === 0) break;
    let { reencrypted, conflicts } = state;
    for (const row of rows) {
      // Resolved at the row's first value: a row of nulls needs no data key, and looking one up
      // would make (and store) a data key for a context that may have nothing to encrypt.
      let current: { readonly kmsKeyId: string; readonly stableDataKeyId: string } | undefined;
      const next: Record<string, StoredFieldValue> = {};
      const plaintexts: Record<string, FieldValue> = {};
      let changed = false;
      for (const [field, spec] of Object.entries(fields)) {
        const stored = row.values[field];
        if (stored === null || stored === undefined) continue;
        current ??= await engine.currentKeys(row.keyContext ?? row.context, { loadStableKey });
        const binding = {
          model,
          field,
          context: row.context,
          ...(row.keyContext === undefined ? {} : { keyContext: row.keyContext }),
        };
        // With the binding: the KMS key the policy compares is the one the KMS unwrapped the
        // value's data key under, not the data-key row's column (which the decrypt below would
        // not check). The unwrapped key is the engine's then, so the decrypt costs no KMS call.
        const info = await engine.inspect(stored, binding);
        const plain = info.legacy
          ? parseLegacyValue(field, spec.type, stored)
          : typeof stored === "string"
            ? await engine.decryptText(binding, spec, stored)
            : await engine.decrypt(binding, spec, stored);
        plaintexts[field] = plain;
        // A field whose mode changed is rewritten whatever the policy says: a randomized value
        // in a deterministic field is never found by equality lookups, and a deterministic one
        // in a randomized field keeps leaking equality.
        const modeChanged = !info.legacy && info.mode !== (spec.mode ?? "randomized");
        if (!modeChanged) {
          if (!policy(info, current)) {
            next[field] = stored;
            continue;
          }
          // The engine may be writing with this very key (it made it): rewritten under it, the
          // value would be reported moved while it stays under the key the policy wants gone.
          if (!info.legacy && info.mode === "randomized" && !retired.has(info.dataKeyId)) {
            engine.retireDataKeys([info.dataKeyId]);
            retired.add(info.dataKeyId);
          }
        }
        const rewritten =
          spec.storage === "text"
            ? await engine.encryptText(binding, spec, plain)
            : await engine.encrypt(binding, spec, plain);
        // A deterministic value sealed again under its own stable key is the same value: a
        // write of it would count as a rotation that moved nothing.
        if (!sameStored(rewritten, stored)) changed = true;
        next[field] = rewritten;
      }
      if (!changed) continue;
      if (await source.compareAndSet(row, next, plaintexts)) reencrypted += 1;
      else conflicts += 1;
    }
    const last = rows[rows.length - 1] as ReencryptRow;
    state = { cursor: last.cursor, scanned: state.scanned + rows.length, reencrypted, conflicts };
    await options.onProgress?.(state);
    if (rows.length < batchSize) break;
  }
  return state;
}

function sameStored(a: StoredFieldValue, b: StoredFieldValue): boolean {
  if (typeof a === "string" || typeof b === "string" || a === null || b === null) return a === b;
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}
