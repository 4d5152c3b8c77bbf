import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type EncryptionContext,
  FieldEncryptionEngine,
  isKmsError,
  type Kms,
  NotFoundError,
} from "@kms/core";
import { fieldEncryption, PrismaDataKeyStore } from "@kms/prisma";
import type { PrismaClient } from "./generated/sqlite/client.ts";

const schema = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "..", "prisma", "schema.prisma"),
  "utf8",
);

/** One KMS key per clinic, so deleting a clinic's key crypto-shreds that clinic only. */
export function tenantKeyAlias(tenantId: string): string {
  return `alias/demo-clinic/${tenantId}`;
}

/** Creates the clinic's KMS key on first use. */
export async function ensureTenantKey(kms: Kms, tenantId: string): Promise<string> {
  const aliasName = tenantKeyAlias(tenantId);
  try {
    return (await kms.describeKey({ keyId: aliasName })).keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof NotFoundError)) throw error;
    const { keyMetadata } = await kms.createKey({ description: `patient records of ${tenantId}` });
    await kms.createAlias({ aliasName, targetKeyId: keyMetadata.keyId });
    return keyMetadata.keyId;
  }
}

/**
 * The only client the application uses: the base client extended with field encryption. The
 * engine is kept so that the app can drop cached data keys after a key deletion.
 */
export function recordsClient(base: PrismaClient, kms: Kms) {
  const engine = new FieldEncryptionEngine({
    kms,
    keyId: (context: EncryptionContext) => tenantKeyAlias(context.tenantId ?? "unknown"),
    dataKeyStore: new PrismaDataKeyStore(base.kmsDataKey),
  });
  const db = base.$extends(fieldEncryption({ kms, keyId: "unused", schema, engine }));
  return { db, engine };
}

export type RecordsDb = ReturnType<typeof recordsClient>["db"];
