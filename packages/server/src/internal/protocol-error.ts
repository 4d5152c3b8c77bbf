/**
 * Failures the server raises itself, before or around the Kms call: protocol, authentication
 * and transport errors. Each carries the error code that the AWS SDK turns into its exception's
 * `name`, and the HTTP status AWS uses for it: AWS's codes, but for InsecureTransportException.
 */
export type ProtocolErrorCode =
  | "IncompleteSignatureException"
  | "InsecureTransportException"
  | "InvalidSignatureException"
  | "KMSInternalException"
  | "MissingAuthenticationTokenException"
  | "RequestEntityTooLargeException"
  | "SerializationException"
  | "UnknownOperationException"
  | "UnrecognizedClientException"
  | "UnsupportedOperationException";

const STATUS: Readonly<Record<ProtocolErrorCode, number>> = {
  IncompleteSignatureException: 400,
  // The server's own code: AWS KMS has none, as its endpoints do not speak plain HTTP at all.
  // Not AccessDeniedException, which clients read as the caller lacking a permission (core's
  // AccessDeniedError, a client fault) while the fix is the deployment's; 403, because no change
  // to the request makes it succeed.
  InsecureTransportException: 403,
  InvalidSignatureException: 400,
  KMSInternalException: 500,
  MissingAuthenticationTokenException: 400,
  RequestEntityTooLargeException: 413,
  SerializationException: 400,
  UnknownOperationException: 400,
  UnrecognizedClientException: 400,
  UnsupportedOperationException: 400,
};

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  readonly status: number;

  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.code = code;
    this.status = STATUS[code];
  }

  override get name(): string {
    return "ProtocolError";
  }
}

/** AWS's own wording for the authentication failures, so that tooling matching on it works. */
export const MESSAGES = {
  missingToken: "Missing Authentication Token",
  badSignature:
    "The request signature we calculated does not match the signature you provided. Check your " +
    "AWS Secret Access Key and signing method. Consult the service documentation for details.",
  unknownKey: "The security token included in the request is invalid.",
} as const;
