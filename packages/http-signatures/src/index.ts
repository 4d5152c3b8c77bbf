export {
  createHmacSigner,
  createHmacVerifier,
  createPrivateKeySigner,
  createPublicKeyVerifier,
  isSignatureAlgorithm,
  type MessageSigner,
  type MessageVerifier,
  type PrivateKeyInput,
  type PublicKeyInput,
  SIGNATURE_ALGORITHMS,
  type SignatureAlgorithm,
} from "./algorithms.ts";
export {
  type ContentDigestResult,
  computeContentDigest,
  DIGEST_ALGORITHMS,
  type DigestAlgorithm,
  verifyContentDigest,
} from "./content-digest.ts";
export { describeKmsFault, kmsErrorProblem } from "./kms-error-problem.ts";
export {
  createKmsPublicKeyVerifier,
  createKmsSigner,
  createKmsVerifier,
  type KmsKeyOptions,
  type KmsSignatureApi,
  type KmsSigningAlgorithmName,
} from "./kms-signer.ts";
export {
  fieldLines,
  type HeaderSource,
  type HttpMessage,
  isRequestMessage,
  type RequestMessage,
  type ResponseMessage,
} from "./message.ts";
export {
  DEFAULT_MAX_BUFFERED_BYTES,
  type NodeRequestLike,
  nodeRequestMessage,
  type ResponseBinding,
  type ResponseSigningOptions,
  signNodeResponse,
} from "./node-message.ts";
export { MemoryNonceStore, type MemoryNonceStoreOptions, type NonceStore } from "./nonce-store.ts";
export { type PlatformIncoming, type PlatformTarget, platformRequest } from "./platform-request.ts";
export {
  PROBLEM_CONTENT_TYPE,
  PROBLEM_TYPE_BASE,
  type ProblemDetails,
  responseSigningProblem,
  signatureProblem,
} from "./problem.ts";
export {
  type RequestLike,
  type SignatureFields,
  type SignOptions,
  type SignRequestOptions,
  serializeSignatureParams,
  signMessage,
  signRequest,
} from "./sign.ts";
export {
  type ComponentSource,
  type ComponentSpec,
  componentIdentifier,
  componentValues,
  createSignatureBase,
  DERIVED_COMPONENTS,
  KNOWN_STRUCTURED_FIELDS,
  type SignatureBaseOptions,
  type SignatureParameters,
  signatureParamsList,
} from "./signature-base.ts";
export {
  type CrossOriginRedirectRule,
  createSignedFetch,
  type SignedFetchOptions,
} from "./signed-fetch.ts";
export {
  type BareItem,
  Decimal,
  type Dictionary,
  type DictionaryParseOptions,
  type InnerList,
  type Item,
  isInnerList,
  item,
  type List,
  type Member,
  type Parameters,
  parseDictionary,
  parseItem,
  parseList,
  parseStructuredField,
  type StructuredFieldType,
  serializeBareItem,
  serializeDictionary,
  serializeInnerList,
  serializeItem,
  serializeList,
  serializeParameters,
  serializeStructuredField,
  Token,
} from "./structured-fields.ts";
export {
  coversField,
  type KeyLookupContext,
  MAX_NONCE_LENGTH,
  VERIFICATION_CHECKS,
  type VerificationCheck,
  type VerificationPolicy,
  type VerificationResult,
  verifyMessage,
  verifyMessageEagerly,
} from "./verify.ts";
