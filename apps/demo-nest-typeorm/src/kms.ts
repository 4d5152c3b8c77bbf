import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  AlreadyExistsError,
  createKms,
  isKmsError,
  type Kms,
  type KmsLike,
  NotFoundError,
  RootKeyError,
  RootKeySource,
} from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import type { DemoConfig } from "./config.ts";
import { remoteKms, remoteKmsDescription } from "./remote-kms.ts";

/** The HMAC key that signs webhooks; its RFC 9421 `keyid` is {@link WEBHOOK_KEY_ID}. */
export const WEBHOOK_KEY_ALIAS = "alias/demo-webhooks";
/** The name senders publish in `keyid`: never the KMS key id itself. */
export const WEBHOOK_KEY_ID = "demo-webhooks";
/**
 * The HMAC key that signs administrative calls (crypto-shredding a clinic), published as
 * {@link ADMIN_KEY_ID}. Not the webhook key: whoever sends or receives webhooks holds that one,
 * and must not be able to shred a clinic with it.
 */
export const ADMIN_KEY_ALIAS = "alias/demo-admin";
export const ADMIN_KEY_ID = "demo-admin";

/** What the demo reads of a key's metadata. */
export interface DemoKeyMetadata {
  readonly keyId: string;
  readonly arn: string;
  readonly keyState: string;
}

/**
 * The key-management calls the demo makes, narrowed to what it reads of their answers: keys
 * provisioned on first use (describe, create, name), a clinic's key scheduled for deletion and
 * restored. Core's `Kms` is one; @kms/aws's `AwsKms` (remote-kms.ts) the other.
 * Every failure is a `KmsError` (`NotFoundError`, `AlreadyExistsError`, …) either way.
 */
export interface KeyAdmin {
  describeKey(request: { keyId: string }): Promise<{ keyMetadata: DemoKeyMetadata }>;
  createKey(request: {
    description: string;
    keySpec?: "HMAC_256";
    keyUsage?: "GENERATE_VERIFY_MAC";
  }): Promise<{ keyMetadata: DemoKeyMetadata }>;
  createAlias(request: { aliasName: string; targetKeyId: string }): Promise<unknown>;
  scheduleKeyDeletion(request: {
    keyId: string;
    pendingWindowInDays: number;
  }): Promise<{ keyState: string; deletionDate?: Date }>;
  cancelKeyDeletion(request: { keyId: string }): Promise<unknown>;
  enableKey(request: { keyId: string }): Promise<unknown>;
}

/** The KMS the demo talks to: in this process, or a KMS server (`kms serve`) over HTTP. */
export interface DemoKms {
  /** Data keys for @kms/typeorm and MACs for the signed webhooks: the module's `KmsService.kms`. */
  readonly crypto: KmsLike;
  /** The webhook key and the clinics' keys: created on first use, shredded and restored. */
  readonly keys: KeyAdmin;
  /** Which KMS this is, in words, for the start banner. */
  readonly description: string;
  close(): Promise<void>;
}

/**
 * The demo's KMS: the KMS server of `config.kms` when KMS_ENDPOINT set it (see remote-kms.ts),
 * else {@link openKms} in this process; either way with the webhook and admin HMAC keys
 * provisioned.
 */
export async function openDemoKms(config: DemoConfig): Promise<DemoKms> {
  const kms =
    config.kms !== undefined
      ? remoteKms(config.kms)
      : inProcessKms(await openKms(config.dataDir), kmsDescription(config));
  const hmacKey = (aliasName: string, description: string) =>
    ensureKey(kms.keys, aliasName, () =>
      kms.keys.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC", description }),
    );
  try {
    await hmacKey(WEBHOOK_KEY_ALIAS, "signs the demo's webhooks (RFC 9421 hmac-sha256)");
    await hmacKey(ADMIN_KEY_ALIAS, "signs the demo's admin calls (RFC 9421 hmac-sha256)");
  } catch (error) {
    await kms.close();
    throw error;
  }
  return kms;
}

/** Which KMS `config` names, in words, before it is opened. */
export function kmsDescription(config: DemoConfig): string {
  return config.kms !== undefined
    ? remoteKmsDescription(config.kms)
    : `in-process, keys in ${join(config.dataDir, "kms.db")}`;
}

function inProcessKms(kms: Kms, description: string): DemoKms {
  return { crypto: kms, keys: kms, description, close: () => kms.close() };
}

/**
 * The in-process KMS: keys in `<dataDir>/kms.db`, wrapped under the root key from KMS_ROOT_KEY
 * or, for a local run, a development key file beside it (never do that in production).
 */
export async function openKms(dataDir: string): Promise<Kms> {
  mkdirSync(dataDir, { recursive: true });
  const store = SqliteKeyStore.open({ path: join(dataDir, "kms.db") });
  const rootKey =
    process.env.KMS_ROOT_KEY !== undefined
      ? RootKeySource.fromEnv("KMS_ROOT_KEY")
      : RootKeySource.devFile(join(dataDir, "root.key"));
  return createKms({ store, rootKey }).catch(async (error: unknown) => {
    await store.close();
    // Keys from a release before record seals: the demo's data is disposable, so starting over
    // beats sealing it as it is (unsealedRecords: "seal", a step for real stores).
    throw error instanceof RootKeyError && error.message.includes("unsealedRecords")
      ? new Error(`${dataDir} holds keys of an earlier release of this demo; delete it`, {
          cause: error,
        })
      : error;
  });
}

/**
 * The id of `aliasName`'s key, created with `create` and named on first use. When another
 * process sharing the KMS names its own key first, that one is used and ours, which encrypted
 * nothing, is scheduled for deletion.
 */
export async function ensureKey(
  kms: KeyAdmin,
  aliasName: string,
  create: () => Promise<{ keyMetadata: { keyId: string } }>,
): Promise<string> {
  try {
    return (await kms.describeKey({ keyId: aliasName })).keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof NotFoundError)) throw error;
  }
  const { keyMetadata } = await create();
  try {
    await kms.createAlias({ aliasName, targetKeyId: keyMetadata.keyId });
    return keyMetadata.keyId;
  } catch (error) {
    if (!(isKmsError(error) && error instanceof AlreadyExistsError)) throw error;
    await kms.scheduleKeyDeletion({ keyId: keyMetadata.keyId, pendingWindowInDays: 7 });
    return (await kms.describeKey({ keyId: aliasName })).keyMetadata.keyId;
  }
}
