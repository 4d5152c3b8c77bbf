import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  createKms,
  isKmsError,
  type Kms,
  NotFoundError,
  RootKeyError,
  RootKeySource,
} from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";

/** The HMAC key that signs webhooks; its RFC 9421 `keyid` is {@link WEBHOOK_KEY_ID}. */
export const WEBHOOK_KEY_ALIAS = "alias/demo-webhooks";
/** The name senders publish in `keyid`: never the KMS key id itself. */
export const WEBHOOK_KEY_ID = "demo-webhooks";

/**
 * The demo's KMS: keys in `<dataDir>/kms.db`, wrapped under the root key from KMS_ROOT_KEY or,
 * for a local run, a development key file beside it (never do that in production).
 */
export async function openKms(dataDir: string): Promise<Kms> {
  mkdirSync(dataDir, { recursive: true });
  const store = SqliteKeyStore.open({ path: join(dataDir, "kms.db") });
  const rootKey =
    process.env.KMS_ROOT_KEY !== undefined
      ? RootKeySource.fromEnv("KMS_ROOT_KEY")
      : RootKeySource.devFile(join(dataDir, "root.key"));
  const kms = await createKms({ store, rootKey }).catch(async (error: unknown) => {
    await store.close();
    // Keys from a release before record seals: the demo's data is disposable, so starting over
    // beats sealing it as it is (unsealedRecords: "seal", a step for real stores).
    throw error instanceof RootKeyError && error.message.includes("unsealedRecords")
      ? new Error(`${dataDir} holds keys of an earlier release of this demo; delete it`, {
          cause: error,
        })
      : error;
  });
  await ensureKey(kms, WEBHOOK_KEY_ALIAS, () =>
    kms.createKey({
      keySpec: "HMAC_256",
      keyUsage: "GENERATE_VERIFY_MAC",
      description: "signs the demo's webhooks (RFC 9421 hmac-sha256)",
    }),
  );
  return kms;
}

/** The alias of `aliasName`'s key, created with `create` on first use. */
export async function ensureKey(
  kms: Kms,
  aliasName: string,
  create: () => Promise<{ keyMetadata: { keyId: string } }>,
): Promise<string> {
  try {
    return (await kms.describeKey({ keyId: aliasName })).keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof NotFoundError)) throw error;
    const { keyMetadata } = await create();
    await kms.createAlias({ aliasName, targetKeyId: keyMetadata.keyId });
    return keyMetadata.keyId;
  }
}
