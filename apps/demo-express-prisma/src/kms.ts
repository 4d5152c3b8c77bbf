import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  type CallOptions,
  createKms,
  type Kms,
  type KmsLike,
  RootKeyError,
  RootKeySource,
} from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { StaleDemoDataError } from "./database.ts";
import { remoteKms } from "./remote-kms.ts";

/**
 * The key-management calls the demo makes, narrowed to what it reads of their answers: the
 * middleware provisions a clinic's key on first use (describe, create, name), the walkthrough
 * retires one. Core's `Kms` is one; @kms/aws's `AwsKms` (remote-kms.ts) the other.
 * Every failure is a `KmsError` (`NotFoundError`, `AlreadyExistsError`, …) either way.
 */
export interface KeyAdmin {
  describeKey(
    request: { keyId: string },
    options?: KeyCallOptions,
  ): Promise<{ keyMetadata: { keyId: string } }>;
  createKey(
    request: { description: string },
    options?: KeyCallOptions,
  ): Promise<{ keyMetadata: { keyId: string } }>;
  createAlias(
    request: { aliasName: string; targetKeyId: string },
    options?: KeyCallOptions,
  ): Promise<unknown>;
  scheduleKeyDeletion(
    request: { keyId: string; pendingWindowInDays: number },
    options?: KeyCallOptions,
  ): Promise<unknown>;
}

/**
 * The request id a call's audit event records (core's `CallOptions.requestId`). @kms/aws's
 * `AwsKms` takes no options: the AWS API has no field for it, and a KMS server's audit trail
 * has ids of its own.
 */
export type KeyCallOptions = Pick<CallOptions, "requestId">;

/** The KMS the demo talks to: in this process, or a KMS server (`kms serve`) over HTTP. */
export interface DemoKms {
  /** Data keys for @kms/prisma's field encryption. */
  readonly crypto: KmsLike;
  /** Clinic keys: created on first use, scheduled for deletion to crypto-shred a clinic. */
  readonly keys: KeyAdmin;
  /** Which KMS this is, in words, for the walkthrough. */
  readonly description: string;
  close(): Promise<void>;
}

/** A core `Kms` in this process, which is both the data plane and the key admin. */
export function inProcessKms(kms: Kms, description: string): DemoKms {
  return { crypto: kms, keys: kms, description, close: () => kms.close() };
}

/**
 * The demo's KMS: the KMS server at KMS_ENDPOINT when it is set (see remote-kms.ts), else
 * `openKms(dataDir)` in this process.
 */
export async function openDemoKms(dataDir: string): Promise<DemoKms> {
  const endpoint = process.env.KMS_ENDPOINT;
  if (endpoint !== undefined && endpoint !== "") return remoteKms(endpoint);
  return inProcessKms(await openKms(dataDir), `in-process, keys in ${join(dataDir, "kms.db")}`);
}

/**
 * The in-process KMS: keys in `<dataDir>/kms.db`, wrapped under the root key from KMS_ROOT_KEY,
 * or for a local run a development key file beside it (never do that in production).
 */
export async function openKms(dataDir: string): Promise<Kms> {
  mkdirSync(dataDir, { recursive: true });
  const store = SqliteKeyStore.open({ path: join(dataDir, "kms.db") });
  const rootKey =
    process.env.KMS_ROOT_KEY !== undefined
      ? RootKeySource.fromEnv("KMS_ROOT_KEY")
      : RootKeySource.devFile(join(dataDir, "root.key"));
  try {
    return await createKms({ store, rootKey });
  } catch (error) {
    await store.close();
    // A data dir left by a release before record seals: the demo's data is disposable, and
    // sealing it as it is (unsealedRecords: "seal") is a step for real stores, not for a demo.
    if (error instanceof RootKeyError && error.message.includes("unsealedRecords")) {
      throw new StaleDemoDataError(
        `${dataDir} was written by an earlier release of this demo; delete it to start over`,
        { cause: error },
      );
    }
    throw error;
  }
}
