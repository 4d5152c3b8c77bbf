import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  AlreadyExistsError,
  type EncryptionContext,
  FieldEncryptionEngine,
  isKmsError,
  type KmsLike,
  NotFoundError,
  ValidationError,
} from "@kms/core";
import { fieldEncryption, PrismaDataKeyStore } from "@kms/prisma";
import type { PrismaClient } from "./generated/sqlite/client.ts";
import type { KeyAdmin, KeyCallOptions } from "./kms.ts";

const schema = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "..", "prisma", "schema.prisma"),
  "utf8",
);

/** One KMS key per clinic, so deleting a clinic's key crypto-shreds that clinic only. */
export function tenantKeyAlias(tenantId: string): string {
  return `alias/demo-clinic/${tenantId}`;
}

/**
 * The KMS key for a value, from its encryption context: its clinic's. No fallback key: a
 * context without `tenantId` is refused rather than encrypted under some shared key (a clinic
 * may well be called "unknown").
 * @throws ValidationException when the context has no tenantId.
 */
export function clinicKeyId(context: EncryptionContext): string {
  const { tenantId } = context;
  if (tenantId === undefined || tenantId === "") {
    throw new ValidationError(`"tenantId" expected in the encryption context`);
  }
  return tenantKeyAlias(tenantId);
}

/** First-use key creation in flight, per KMS and clinic: concurrent first requests share it. */
const creating = new WeakMap<KeyAdmin, Map<string, Promise<string>>>();

/**
 * Creates the clinic's KMS key on first use. Concurrent first requests of one clinic used to
 * race: each created a key, all but one failed to claim the alias (a 500 for the client) and
 * left an orphan key behind. `options` go with each KMS call: those of the request that started
 * a creation, for the requests that join it.
 */
export function ensureTenantKey(
  kms: KeyAdmin,
  tenantId: string,
  options?: KeyCallOptions,
): Promise<string> {
  let inFlight = creating.get(kms);
  if (inFlight === undefined) {
    inFlight = new Map();
    creating.set(kms, inFlight);
  }
  const pending = inFlight.get(tenantId);
  if (pending !== undefined) return pending;
  const created = describeOrCreate(kms, tenantId, options).finally(() => inFlight.delete(tenantId));
  inFlight.set(tenantId, created);
  return created;
}

async function describeOrCreate(
  kms: KeyAdmin,
  tenantId: string,
  options: KeyCallOptions | undefined,
): Promise<string> {
  const aliasName = tenantKeyAlias(tenantId);
  try {
    return (await kms.describeKey({ keyId: aliasName }, options)).keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof NotFoundError)) throw error;
  }
  const { keyMetadata } = await kms.createKey(
    { description: `patient records of ${tenantId}` },
    options,
  );
  try {
    await kms.createAlias({ aliasName, targetKeyId: keyMetadata.keyId }, options);
    return keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof AlreadyExistsError)) throw error;
    // Another process sharing the key store claimed the alias first: use its key, and retire
    // ours, which encrypted nothing.
    await kms.scheduleKeyDeletion({ keyId: keyMetadata.keyId, pendingWindowInDays: 7 }, options);
    return (await kms.describeKey({ keyId: aliasName }, options)).keyMetadata.keyId;
  }
}

/**
 * Crypto-shreds a clinic: its key is scheduled for deletion, so none of its records decrypts
 * any more. By key id: AWS KMS's ScheduleKeyDeletion takes no alias.
 */
export async function scheduleTenantKeyDeletion(kms: KeyAdmin, tenantId: string): Promise<void> {
  const { keyMetadata } = await kms.describeKey({ keyId: tenantKeyAlias(tenantId) });
  await kms.scheduleKeyDeletion({ keyId: keyMetadata.keyId, pendingWindowInDays: 7 });
}

/**
 * The only client the application uses: the base client extended with field encryption. The
 * engine is kept so that the app can drop cached data keys after a key deletion.
 */
export function recordsClient(base: PrismaClient, kms: KmsLike) {
  const engine = new FieldEncryptionEngine({
    kms,
    keyId: clinicKeyId,
    dataKeyStore: new PrismaDataKeyStore(base.kmsDataKey),
  });
  // With `engine` given, the extension encrypts through it; kms and keyId are the engine's.
  const db = base.$extends(fieldEncryption({ kms, keyId: clinicKeyId, schema, engine }));
  return { db, engine };
}

export type RecordsDb = ReturnType<typeof recordsClient>["db"];
