import { describe, expect, test } from "vitest";
import { DEMO_TENANT_TOKENS, TenantConfigError, TenantDirectory } from "./tenant-directory.ts";

const A = "token-of-clinic-a-0123456789";
const B = "token-of-clinic-b-0123456789";

describe("TenantDirectory", () => {
  const tenants = new TenantDirectory({ "clinic-a": A, "clinic-b": B });

  test("a request is its token's clinic, and no other", () => {
    expect(tenants.authenticate([`Bearer ${A}`])).toBe("clinic-a");
    expect(tenants.authenticate([`bearer  ${B}`])).toBe("clinic-b");
    for (const fields of [
      undefined,
      [],
      [""],
      ["Bearer"],
      [A],
      [`Basic ${A}`],
      [`Bearer ${A} `.repeat(2)],
      [`Bearer ${A}x`],
      [`Bearer ${A.slice(1)}`],
      [`Bearer ${A.toUpperCase()}`],
      ["Bearer clinic-a"],
      // Two fields, even two equal ones: refused rather than one of them picked.
      [`Bearer ${A}`, `Bearer ${B}`],
      [`Bearer ${A}`, `Bearer ${A}`],
    ]) {
      expect(tenants.authenticate(fields), JSON.stringify(fields)).toBeUndefined();
    }
  });

  test("without DEMO_TENANTS, the published demo tokens", () => {
    for (const unset of [undefined, "", "  "]) {
      const published = TenantDirectory.fromEnv(unset);
      expect(published.tenants).toEqual(["clinic-a", "clinic-b"]);
      for (const [tenant, token] of Object.entries(DEMO_TENANT_TOKENS)) {
        expect(published.authenticate([`Bearer ${token}`])).toBe(tenant);
      }
    }
  });

  test("DEMO_TENANTS lists the clinics and their tokens", () => {
    const own = TenantDirectory.fromEnv(` clinic-a=${A} , north-7=${B}`);
    expect(own.tenants).toEqual(["clinic-a", "north-7"]);
    expect(own.authenticate([`Bearer ${B}`])).toBe("north-7");
    expect(own.authenticate([`Bearer ${DEMO_TENANT_TOKENS["clinic-a"]}`])).toBeUndefined();
  });

  const refused: [string, string][] = [
    [
      `clinic-a=${A},`,
      "DEMO_TENANTS: entry 2 is not <clinic>=<token> (entries separated by commas)",
    ],
    [A, "DEMO_TENANTS: entry 1 is not <clinic>=<token> (entries separated by commas)"],
    [`=${A}`, "DEMO_TENANTS: entry 1 is not <clinic>=<token> (entries separated by commas)"],
    [
      `Clinic-A=${A}`,
      'DEMO_TENANTS: clinic "Clinic-A": 1–40 characters of a-z, 0-9 and -, not starting with -',
    ],
    [
      `-a=${A}`,
      'DEMO_TENANTS: clinic "-a": 1–40 characters of a-z, 0-9 and -, not starting with -',
    ],
    [
      `${"c".repeat(41)}=${A}`,
      `DEMO_TENANTS: clinic "${"c".repeat(40)}": 1–40 characters of a-z, 0-9 and -, not starting with -`,
    ],
    [`clinic-a=${A},clinic-a=${B}`, "DEMO_TENANTS: clinic-a is listed twice"],
    [`clinic-a=${A},clinic-b=${A}`, "DEMO_TENANTS: clinic-a and clinic-b have the same token"],
    [
      "clinic-a=short-secret",
      "DEMO_TENANTS: the token of clinic-a: 16–256 characters of A-Z, a-z, 0-9 and . _ ~ + / - (an RFC 6750 bearer token)",
    ],
    [
      `clinic-a=${A} with-space`,
      "DEMO_TENANTS: the token of clinic-a: 16–256 characters of A-Z, a-z, 0-9 and . _ ~ + / - (an RFC 6750 bearer token)",
    ],
  ];
  test.each(refused)(
    "DEMO_TENANTS %j is refused, naming the rule but never the token",
    (value, message) => {
      expect(() => TenantDirectory.fromEnv(value)).toThrow(new TenantConfigError(message));
    },
  );

  test("an empty table is refused", () => {
    expect(() => new TenantDirectory({})).toThrow(
      new TenantConfigError("at least one clinic is needed"),
    );
  });
});
