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

/**
 * The KMS server at `endpoint` (`kms serve`, @kms/server, or AWS KMS itself), through one
 * `KMSClient`: `awsKms` serves the data plane and the demo's key management alike, with core's
 * errors, which the key provisioning in records.ts tells apart. The
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
  const kms = awsKms(client);
  return {
    crypto: kms,
    keys: kms,
    description: `KMS server at ${endpoint} (region ${region}), as ${process.env.AWS_ACCESS_KEY_ID}`,
    async close() {
      client.destroy();
    },
  };
}
