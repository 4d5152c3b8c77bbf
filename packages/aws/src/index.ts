export { toKmsError } from "./aws-errors.ts";
export { type AwsKeyMetadata, AwsKms, type AwsKmsOptions, awsKms } from "./aws-kms.ts";
