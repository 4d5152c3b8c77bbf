import {
  CancelKeyDeletionCommand,
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  EnableKeyCommand,
  type KeyMetadata,
  KMSClient,
  ScheduleKeyDeletionCommand,
} from "@aws-sdk/client-kms";
import { awsKms, toKmsError } from "@kms/aws";
import { KmsInternalError } from "@kms/core";
import type { DemoKeyMetadata, DemoKms, KeyAdmin } from "./kms.ts";

/**
 * The region `kms serve` signs for when AWS_REGION is not set: core's default identity. A
 * request signed for another region is refused (`InvalidSignatureException`).
 */
export const DEFAULT_SERVER_REGION = "local";

/** KMS_ENDPOINT is set, but the remote KMS cannot be used as configured. */
export class KmsEndpointError extends Error {
  override readonly name = "KmsEndpointError";
}

/** The KMS server the demo talks to instead of its in-process KMS. */
export interface RemoteKmsConfig {
  /** `http://` or `https://` URL of the server (`kms serve`, @kms/server or AWS KMS). */
  readonly endpoint: string;
  readonly region: string;
  /** An access key of the server's credentials file; requests are SigV4-signed with it. */
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/**
 * KMS_ENDPOINT with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (default
 * {@link DEFAULT_SERVER_REGION}); undefined when KMS_ENDPOINT is unset or empty.
 * @throws KmsEndpointError when the endpoint is not an http(s) URL or the access key is not set.
 */
export function remoteKmsConfigFromEnv(env: NodeJS.ProcessEnv): RemoteKmsConfig | undefined {
  const endpoint = env.KMS_ENDPOINT;
  if (endpoint === undefined || endpoint === "") return undefined;
  const protocol = URL.parse(endpoint)?.protocol;
  if (protocol !== "http:" && protocol !== "https:") {
    throw new KmsEndpointError(
      "KMS_ENDPOINT must be an http:// or https:// URL, such as http://127.0.0.1:4599",
    );
  }
  const { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey } = env;
  // Without them the SDK's default chain goes on to probe the EC2 metadata address, which
  // fails only after a timeout, and then at the first request rather than here.
  if (!accessKeyId || !secretAccessKey) {
    throw new KmsEndpointError(
      "KMS_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an access key of the server's credentials file",
    );
  }
  return {
    endpoint,
    region: env.AWS_REGION || DEFAULT_SERVER_REGION,
    accessKeyId,
    secretAccessKey,
  };
}

/** One SDK call, with the SDK's errors turned into core's, as `awsKms` does for the data plane. */
async function send<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toKmsError(error, operation);
  }
}

function metadataOf(operation: string, metadata: KeyMetadata | undefined): DemoKeyMetadata {
  const { KeyId: keyId, Arn: arn, KeyState: keyState } = metadata ?? {};
  if (typeof keyId !== "string" || typeof arn !== "string" || typeof keyState !== "string") {
    throw new KmsInternalError(
      `AWS KMS ${operation} answered without KeyMetadata.KeyId, Arn or KeyState`,
    );
  }
  return { keyId, arn, keyState };
}

/**
 * The demo's key management through the AWS SDK, so it works against `kms serve`, @kms/server
 * or AWS KMS alike. @kms/aws covers the data plane only; its `toKmsError` gives these calls
 * the same errors as the in-process KMS, which ensureKey and the API's problem+json rely on.
 */
class SdkKeyAdmin implements KeyAdmin {
  readonly #client: KMSClient;

  constructor(client: KMSClient) {
    this.#client = client;
  }

  async describeKey(request: { keyId: string }): Promise<{ keyMetadata: DemoKeyMetadata }> {
    const { KeyMetadata } = await send("DescribeKey", () =>
      this.#client.send(new DescribeKeyCommand({ KeyId: request.keyId })),
    );
    return { keyMetadata: metadataOf("DescribeKey", KeyMetadata) };
  }

  async createKey(request: {
    description: string;
    keySpec?: "HMAC_256";
    keyUsage?: "GENERATE_VERIFY_MAC";
  }): Promise<{ keyMetadata: DemoKeyMetadata }> {
    const { KeyMetadata } = await send("CreateKey", () =>
      this.#client.send(
        new CreateKeyCommand({
          Description: request.description,
          KeySpec: request.keySpec,
          KeyUsage: request.keyUsage,
        }),
      ),
    );
    return { keyMetadata: metadataOf("CreateKey", KeyMetadata) };
  }

  async createAlias(request: { aliasName: string; targetKeyId: string }): Promise<void> {
    await send("CreateAlias", () =>
      this.#client.send(
        new CreateAliasCommand({ AliasName: request.aliasName, TargetKeyId: request.targetKeyId }),
      ),
    );
  }

  async scheduleKeyDeletion(request: {
    keyId: string;
    pendingWindowInDays: number;
  }): Promise<{ keyState: string; deletionDate: Date }> {
    const { KeyState, DeletionDate } = await send("ScheduleKeyDeletion", () =>
      this.#client.send(
        new ScheduleKeyDeletionCommand({
          KeyId: request.keyId,
          PendingWindowInDays: request.pendingWindowInDays,
        }),
      ),
    );
    if (typeof KeyState !== "string" || !(DeletionDate instanceof Date)) {
      throw new KmsInternalError(
        "AWS KMS ScheduleKeyDeletion answered without KeyState or DeletionDate",
      );
    }
    return { keyState: KeyState, deletionDate: DeletionDate };
  }

  async cancelKeyDeletion(request: { keyId: string }): Promise<void> {
    await send("CancelKeyDeletion", () =>
      this.#client.send(new CancelKeyDeletionCommand({ KeyId: request.keyId })),
    );
  }

  async enableKey(request: { keyId: string }): Promise<void> {
    await send("EnableKey", () =>
      this.#client.send(new EnableKeyCommand({ KeyId: request.keyId })),
    );
  }
}

/** Which server, region and access key, in words: never the secret. */
export function remoteKmsDescription(config: RemoteKmsConfig): string {
  return `KMS server at ${config.endpoint} (region ${config.region}), as ${config.accessKeyId}`;
}

/**
 * The KMS server of `config` (`kms serve`, @kms/server, or AWS KMS itself), through one
 * `KMSClient` signing with the configured access key: the data plane with `awsKms`, key
 * management with the SDK's commands. No key store is opened and nothing is written locally.
 */
export function remoteKms(config: RemoteKmsConfig): DemoKms {
  const { endpoint, region, accessKeyId, secretAccessKey } = config;
  const client = new KMSClient({ endpoint, region, credentials: { accessKeyId, secretAccessKey } });
  return {
    crypto: awsKms(client),
    keys: new SdkKeyAdmin(client),
    description: remoteKmsDescription(config),
    async close() {
      client.destroy();
    },
  };
}
