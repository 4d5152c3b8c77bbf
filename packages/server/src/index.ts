export { assertAllowedHost } from "./internal/allowed-hosts.ts";
export { createKmsServer } from "./kms-server.ts";
export type {
  CredentialLookup,
  KmsServerOptions,
  RefusedRequest,
  ServerCredential,
} from "./options.ts";
export {
  createKmsRequestHandler,
  DEFAULT_CLOCK_SKEW_SECONDS,
  DEFAULT_MAX_BODY_BYTES,
  type KmsRequestHandler,
  MIN_SECRET_ACCESS_KEY_LENGTH,
} from "./request-handler.ts";
