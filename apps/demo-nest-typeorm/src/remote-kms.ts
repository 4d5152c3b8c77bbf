import { KMSClient } from "@aws-sdk/client-kms";
import { awsKms } from "@kms/aws";
import type { DemoKms } from "./kms.ts";

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

/** Which server, region and access key, in words: never the secret. */
export function remoteKmsDescription(config: RemoteKmsConfig): string {
  return `KMS server at ${config.endpoint} (region ${config.region}), as ${config.accessKeyId}`;
}

/**
 * The KMS server of `config` (`kms serve`, @kms/server, or AWS KMS itself), through one
 * `KMSClient` signing with the configured access key: `awsKms` serves both the data plane and
 * the key management the demo does, with core's errors, which ensureKey and the API's
 * problem+json rely on. No key store is opened and nothing is written locally.
 */
export function remoteKms(config: RemoteKmsConfig): DemoKms {
  const { endpoint, region, accessKeyId, secretAccessKey } = config;
  const client = new KMSClient({ endpoint, region, credentials: { accessKeyId, secretAccessKey } });
  const kms = awsKms(client);
  return {
    crypto: kms,
    keys: kms,
    description: remoteKmsDescription(config),
    async close() {
      client.destroy();
    },
  };
}
