export { faultSummary } from "./fault-summary.ts";
export { PATIENT_ID } from "./patient-id.ts";
export {
  CLINIC,
  DEMO_TENANT_TOKENS,
  TenantConfigError,
  TenantDirectory,
} from "./tenant-directory.ts";
