import type * as https from "node:https";
import type { Kms } from "@kms/core";

/** What an access key id stands for: the secret it signs with and who its calls run as. */
export interface ServerCredential {
  /**
   * The SigV4 secret access key shared with the client: at least 20 characters
   * (`MIN_SECRET_ACCESS_KEY_LENGTH`), and no other access key's. SigV4 does not sign the access
   * key id, so a request signed under one id would verify as well under another id holding the
   * same secret, and run as that id's principal.
   */
  readonly secretAccessKey: string;
  /**
   * The principal every call signed with this key runs as (`CallOptions.principal`): key
   * policies, grants and the audit trail see this name. See docs/POLICY.md for its forms.
   */
  readonly principal: string;
}

/**
 * Finds the credential of an access key id; undefined when the key id is unknown. It must never
 * return one secret for two access key ids (see `ServerCredential.secretAccessKey`): a function
 * cannot be checked for that when the server is made, as a table is.
 */
export type CredentialLookup = (
  accessKeyId: string,
) => ServerCredential | undefined | Promise<ServerCredential | undefined>;

/**
 * A request the server answered without calling the `Kms`, so that no audit event records it:
 * refused by routing, authentication, the size limit or the body's checks, or failed on the
 * server's side before or after the call. It never holds the body, the signature or a secret.
 */
export interface RefusedRequest {
  /** The response's `x-amzn-RequestId`. */
  readonly requestId: string;
  /** The error code answered (`__type`), e.g. `InvalidSignatureException`. */
  readonly code: string;
  /** The HTTP status answered. */
  readonly status: number;
  /** The message answered. */
  readonly message: string;
  /** The AWS KMS operation `X-Amz-Target` named, when it named one this server knows. */
  readonly operation?: string;
  /**
   * The access key id a well-formed `Authorization` header claimed, as the client sent it: known
   * or not, and whether or not the signature was then valid.
   */
  readonly accessKeyId?: string;
  /** The principal of the access key, when the signature was verified. */
  readonly principal?: string;
  /** The TCP peer's address. */
  readonly sourceIp?: string;
  /**
   * The failure behind a `KMSInternalException` (a credentials lookup that threw, say), which the
   * client is not told; absent when the client's request was refused.
   */
  readonly cause?: unknown;
}

export interface KmsServerOptions {
  /** The KMS the calls run on (`createKms`). */
  readonly kms: Kms;
  /**
   * Access key id → secret and principal, or a function that looks an access key id up. Each
   * access key has its own secret: a table that gives two ids the same one is refused.
   */
  readonly credentials: Readonly<Record<string, ServerCredential>> | CredentialLookup;
  /** Region a request's SigV4 credential scope must name; default `kms.identity.region`. */
  readonly region?: string;
  /**
   * Largest request body accepted, in bytes; default 262 144 (256 KiB), which holds the largest
   * request any supported operation can make. Larger bodies are refused with HTTP 413 before
   * they are read in full.
   */
  readonly maxBodyBytes?: number;
  /**
   * How far X-Amz-Date may be from the server's clock, in whole seconds from 1 to 3600; default
   * 300 (as AWS). X-Amz-Date has no finer precision, so the clock is compared to the second too.
   */
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
  /**
   * The `Host` header values a request may carry: `name`, `name:port`, `[ipv6]` or `[ipv6]:port`.
   * SigV4 signs the host, so a request captured on its way to another server that shares an
   * access key, or sent by a browser page whose name was rebound to this server's address (DNS
   * rebinding), is refused with InvalidSignatureException, from its headers alone. Compared
   * case-insensitively and without a trailing dot; a name without a port accepts every port, and
   * an entry with port 443 or 80 also accepts the name without a port, which is how clients send
   * their scheme's default port. Default: any host.
   */
  readonly allowedHosts?: readonly string[];
  /**
   * Called once for every request answered without reaching the `Kms` (which audits every call it
   * receives), after the answer is sent: failed signatures, unknown access keys, malformed bodies,
   * failures of a credentials lookup. Log or count them here; without it they leave no trace.
   * What it throws or rejects with is ignored.
   */
  readonly onRefused?: (refusal: RefusedRequest) => void | Promise<void>;
}
