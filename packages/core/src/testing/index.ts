/** Test helpers published at `@kms/core/testing`. */
export { describeAuditSinkConformance, type OpenedAuditSink } from "./audit-sink-conformance.ts";
export {
  describeGoldenVectors,
  type GoldenCiphertext,
  type GoldenStore,
  goldenVectorsV1,
  loadGoldenSnapshot,
} from "./golden-vectors.ts";
export { describeKeyStoreConformance, type OpenedKeyStore } from "./key-store-conformance.ts";
export { ManualClock } from "./manual-clock.ts";
