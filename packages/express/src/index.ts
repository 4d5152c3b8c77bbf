export {
  currentKmsContext,
  type DefaultKmsContextOptions,
  defaultKmsContext,
  type KmsContextOptions,
  kmsContext,
  kmsContextOf,
  type RequestKmsContext,
  routePattern,
} from "./kms-context.ts";
export {
  type KmsErrorHandlerOptions,
  kmsErrorHandler,
  kmsErrorProblem,
} from "./kms-error-handler.ts";
export { PROBLEM_TYPE_BASE, type ProblemDetails, sendProblem } from "./problem.ts";
export { captureRawBody, rawBodyOf, readRawBody } from "./raw-body.ts";
export { type RequestIdOptions, requestIdOf } from "./request-id.ts";
export { requestMessage } from "./request-message.ts";
export { type SignResponseOptions, signResponse } from "./sign-response.ts";
export {
  type VerifiedSignature,
  type VerifySignatureOptions,
  verifiedSignatureOf,
  verifySignature,
} from "./verify-signature.ts";
