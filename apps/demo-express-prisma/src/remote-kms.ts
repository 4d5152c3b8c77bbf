import {
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  type KeyMetadata,
  KMSClient,
  ScheduleKeyDeletionCommand,
} from "@aws-sdk/client-kms";
import { awsKms, toKmsError } from "@kms/aws";
import { KmsInternalError } from "@kms/core";
import type { DemoKms, KeyAdmin } from "./kms.ts";

/**
 * The region `kms serve` signs for when AWS_REGION is not set: core's default identity. A
 * request signed for another region is refused (`InvalidSignatureException`).
 */
export const DEFAULT_SERVER_REGION = "local";

/** KMS_ENDPOINT is set, but the remote KMS cannot be used as configured. */
export class KmsEndpointError extends Error {
  override readonly name = "KmsEndpointError";
}

/** One SDK call, with the SDK's errors turned into core's, as `awsKms` does for the data plane. */
async function send<T>(operation: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toKmsError(error, operation);
  }
}

function keyIdOf(operation: string, metadata: KeyMetadata | undefined): string {
  if (typeof metadata?.KeyId !== "string") {
    throw new KmsInternalError(`AWS KMS ${operation} answered without KeyMetadata.KeyId`);
  }
  return metadata.KeyId;
}

/**
 * The demo's key management through the AWS SDK, so it works against `kms serve`, @kms/server
 * or AWS KMS alike. @kms/aws covers the data plane only; its `toKmsError` gives these calls
 * the same errors, which the key provisioning in records.ts tells apart.
 */
class SdkKeyAdmin implements KeyAdmin {
  readonly #client: KMSClient;

  constructor(client: KMSClient) {
    this.#client = client;
  }

  async describeKey(request: { keyId: string }): Promise<{ keyMetadata: { keyId: string } }> {
    const { KeyMetadata } = await send("DescribeKey", () =>
      this.#client.send(new DescribeKeyCommand({ KeyId: request.keyId })),
    );
    return { keyMetadata: { keyId: keyIdOf("DescribeKey", KeyMetadata) } };
  }

  async createKey(request: { description: string }): Promise<{ keyMetadata: { keyId: string } }> {
    const { KeyMetadata } = await send("CreateKey", () =>
      this.#client.send(new CreateKeyCommand({ Description: request.description })),
    );
    return { keyMetadata: { keyId: keyIdOf("CreateKey", KeyMetadata) } };
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
  }): Promise<void> {
    await send("ScheduleKeyDeletion", () =>
      this.#client.send(
        new ScheduleKeyDeletionCommand({
          KeyId: request.keyId,
          PendingWindowInDays: request.pendingWindowInDays,
        }),
      ),
    );
  }
}

/**
 * The KMS server at `endpoint` (`kms serve`, @kms/server, or AWS KMS itself), through one
 * `KMSClient`: the data plane with `awsKms`, key management with the SDK's commands. The
 * region is AWS_REGION, else the one `kms serve` uses; the SDK reads the access key from
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY itself.
 * @throws KmsEndpointError when the endpoint is not an http(s) URL or the access key is not set.
 */
export function remoteKms(endpoint: string): DemoKms {
  const protocol = URL.parse(endpoint)?.protocol;
  if (protocol !== "http:" && protocol !== "https:") {
    throw new KmsEndpointError(
      "KMS_ENDPOINT must be an http:// or https:// URL, such as http://127.0.0.1:4599",
    );
  }
  // Without them the SDK's default chain goes on to probe the EC2 metadata address, which
  // fails only after a timeout, and then at the first request rather than here.
  if (!process.env.AWS_ACCESS_KEY_ID || !process.env.AWS_SECRET_ACCESS_KEY) {
    throw new KmsEndpointError(
      "KMS_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an access key of the server's credentials file",
    );
  }
  const region = process.env.AWS_REGION || DEFAULT_SERVER_REGION;
  const client = new KMSClient({ endpoint, region });
  return {
    crypto: awsKms(client),
    keys: new SdkKeyAdmin(client),
    description: `KMS server at ${endpoint} (region ${region}), as ${process.env.AWS_ACCESS_KEY_ID}`,
    async close() {
      client.destroy();
    },
  };
}
