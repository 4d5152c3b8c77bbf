import type * as https from "node:https";
import type { Kms } from "@kms/core";

/** What an access key id stands for: the secret it signs with and who its calls run as. */
export interface ServerCredential {
  /** The SigV4 secret access key shared with the client. */
  readonly secretAccessKey: string;
  /**
   * The principal every call signed with this key runs as (`CallOptions.principal`): key
   * policies, grants and the audit trail see this name. See docs/POLICY.md for its forms.
   */
  readonly principal: string;
}

/** Finds the credential of an access key id; undefined when the key id is unknown. */
export type CredentialLookup = (
  accessKeyId: string,
) => ServerCredential | undefined | Promise<ServerCredential | undefined>;

export interface KmsServerOptions {
  /** The KMS the calls run on (`createKms`). */
  readonly kms: Kms;
  /** Access key id → secret and principal, or a function that looks an access key id up. */
  readonly credentials: Readonly<Record<string, ServerCredential>> | CredentialLookup;
  /** Region a request's SigV4 credential scope must name; default `kms.identity.region`. */
  readonly region?: string;
  /**
   * Largest request body accepted, in bytes; default 262 144 (256 KiB), which holds the largest
   * request any supported operation can make. Larger bodies are refused with HTTP 413 before
   * they are read in full.
   */
  readonly maxBodyBytes?: number;
  /** How far X-Amz-Date may be from the server's clock, in seconds; default 300 (as AWS). */
  readonly clockSkewSeconds?: number;
  /** The server's clock in milliseconds since the epoch; default `Date.now`. */
  readonly now?: () => number;
  /** `createKmsServer` only: serve HTTPS with these options (key, cert, …). */
  readonly tls?: https.ServerOptions;
  /**
   * Accept plain HTTP on non-loopback addresses. Responses carry plaintext data and data keys,
   * so without TLS the server refuses to listen on, and the handler refuses requests arriving
   * at, any address but loopback or a unix socket unless this is true.
   */
  readonly insecureHttp?: boolean;
}
