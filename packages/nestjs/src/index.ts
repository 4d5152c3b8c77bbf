export { EncryptionContext, KmsPrincipal } from "./encryption-context.decorator.ts";
export { KMS_CLIENT, KMS_NONCE_STORE } from "./kms.constants.ts";
export { KmsModule } from "./kms.module.ts";
export {
  KMS_MODULE_ASYNC_OPTIONS_TYPE,
  KMS_MODULE_OPTIONS,
  KMS_MODULE_OPTIONS_TYPE,
} from "./kms.module-definition.ts";
export { KmsService } from "./kms.service.ts";
export { KmsContextInterceptor } from "./kms-context.interceptor.ts";
export {
  currentKmsContext,
  defaultKmsContext,
  type KmsContextOptions,
  type KmsContextRequest,
  kmsContextOf,
  type RequestKmsContext,
  requestIdOf,
  runWithKmsContext,
} from "./kms-context.ts";
export { KmsExceptionFilter, kmsErrorProblem } from "./kms-exception.filter.ts";
export type {
  KmsModuleOptions,
  ResponseSigningPolicy,
  SignatureKeyContext,
  SignaturePolicy,
} from "./kms-module.options.ts";
export { ProblemDetailsException } from "./problem-details.exception.ts";
export { ProblemDetailsFilter } from "./problem-details.filter.ts";
export {
  RequireSignature,
  SkipSignature,
  VerifySignature,
} from "./require-signature.decorator.ts";
export { Signed, SignResponse } from "./sign-response.decorator.ts";
export { SignResponseInterceptor } from "./sign-response.interceptor.ts";
export {
  type EffectiveSignaturePolicy,
  SignatureGuard,
  type VerifiedSignature,
  verifiedSignatureOf,
} from "./signature.guard.ts";
