export { toKmsError } from "./aws-errors.ts";
export { AwsKms, type AwsKmsOptions, awsKms } from "./aws-kms.ts";
