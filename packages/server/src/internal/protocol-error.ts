/**
 * Failures the server raises itself, before or around the Kms call: protocol, authentication
 * and transport errors. Each carries the AWS error code that the AWS SDK turns into its
 * exception's `name`, and the HTTP status AWS uses for it.
 */
export type ProtocolErrorCode =
  | "AccessDeniedException"
  | "IncompleteSignatureException"
  | "InvalidSignatureException"
  | "KMSInternalException"
  | "MissingAuthenticationTokenException"
  | "RequestEntityTooLargeException"
  | "SerializationException"
  | "UnknownOperationException"
  | "UnrecognizedClientException"
  | "UnsupportedOperationException";

const STATUS: Readonly<Record<ProtocolErrorCode, number>> = {
  AccessDeniedException: 400,
  IncompleteSignatureException: 400,
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
