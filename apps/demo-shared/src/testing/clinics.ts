import { TenantDirectory } from "../tenant-directory.ts";

/** The clinics the demos' tests serve, with their bearer tokens. */
export const CLINIC_TOKENS: Readonly<Record<string, string>> = {
  "clinic-a": "test-token-clinic-a-0123456789abcdef",
  "clinic-b": "test-token-clinic-b-0123456789abcdef",
  "clinic-c": "test-token-clinic-c-0123456789abcdef",
};

export const TENANTS = new TenantDirectory(CLINIC_TOKENS);

/** The Authorization header of a clinic of {@link CLINIC_TOKENS}. */
export function bearer(tenant: string): string {
  const token = CLINIC_TOKENS[tenant];
  if (token === undefined) throw new Error(`no test token for ${tenant}`);
  return `Bearer ${token}`;
}
