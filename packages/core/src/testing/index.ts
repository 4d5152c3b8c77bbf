/** Test helpers published at `@kms/core/testing`. */
export { describeKeyStoreConformance } from "./key-store-conformance.ts";
export { ManualClock } from "./manual-clock.ts";
