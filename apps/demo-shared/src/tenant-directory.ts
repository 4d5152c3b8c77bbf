import { createHash, timingSafeEqual } from "node:crypto";

/** A clinic id is also a KMS alias suffix: keep it to what an alias name accepts. */
export const CLINIC = /^[a-z0-9][a-z0-9-]{0,39}$/;
/** An RFC 6750 bearer token, long enough not to be guessed. */
const TOKEN = /^[A-Za-z0-9._~+/-]{16,256}=*$/;
const BEARER = /^Bearer +(\S+)$/i;

/**
 * The tokens accepted when DEMO_TENANTS is not set. They are published (README, start
 * banner), so they only identify a clinic on this machine: the API listens on 127.0.0.1 only.
 */
export const DEMO_TENANT_TOKENS: Readonly<Record<string, string>> = {
  "clinic-a": "demo-token-clinic-a-7f3c9e21b84d",
  "clinic-b": "demo-token-clinic-b-2a6d58c0f91e",
};

/** DEMO_TENANTS (or a tenant table given in code) is not usable; the message says why. */
export class TenantConfigError extends Error {
  override readonly name = "TenantConfigError";
}

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();

/**
 * The clinics this demo serves, each with its bearer token. A request names its clinic by
 * presenting that clinic's token and in no other way, so no request can pick a clinic it
 * holds no token for, and no KMS key is ever created for a clinic outside this list. Only
 * SHA-256 digests of the tokens are kept.
 */
export class TenantDirectory {
  readonly #entries: readonly { readonly tenant: string; readonly digest: Buffer }[];
  /** The clinics, in the order given. */
  readonly tenants: readonly string[];

  /**
   * @throws TenantConfigError when a clinic id is not 1–40 characters of a-z, 0-9 and - (not
   *   starting with -), a token is not an RFC 6750 token of at least 16 characters, or two
   *   clinics share a token. The message names the clinic, never the token.
   */
  constructor(tokens: Readonly<Record<string, string>>) {
    const entries: { tenant: string; digest: Buffer }[] = [];
    for (const [tenant, token] of Object.entries(tokens)) {
      if (!CLINIC.test(tenant)) {
        throw new TenantConfigError(
          `clinic ${JSON.stringify(tenant.slice(0, 40))}: 1–40 characters of a-z, 0-9 and -, not starting with -`,
        );
      }
      if (!TOKEN.test(token)) {
        throw new TenantConfigError(
          `the token of ${tenant}: 16–256 characters of A-Z, a-z, 0-9 and . _ ~ + / - (an RFC 6750 bearer token)`,
        );
      }
      const digest = sha256(token);
      const twin = entries.find((entry) => entry.digest.equals(digest));
      if (twin !== undefined) {
        throw new TenantConfigError(`${twin.tenant} and ${tenant} have the same token`);
      }
      entries.push({ tenant, digest });
    }
    if (entries.length === 0) throw new TenantConfigError("at least one clinic is needed");
    this.#entries = entries;
    this.tenants = entries.map((entry) => entry.tenant);
  }

  /**
   * DEMO_TENANTS (`clinic-a=<token>,clinic-b=<token>`), else the published demo tokens.
   * @throws TenantConfigError as the constructor does, or when an entry is not `<clinic>=<token>`
   *   or a clinic is listed twice.
   */
  static fromEnv(value: string | undefined): TenantDirectory {
    if (value === undefined || value.trim() === "") return new TenantDirectory(DEMO_TENANT_TOKENS);
    const tokens: Record<string, string> = {};
    for (const [index, entry] of value.split(",").entries()) {
      const equals = entry.indexOf("=");
      if (equals < 1) {
        throw new TenantConfigError(
          `DEMO_TENANTS: entry ${index + 1} is not <clinic>=<token> (entries separated by commas)`,
        );
      }
      const tenant = entry.slice(0, equals).trim();
      if (Object.hasOwn(tokens, tenant)) {
        throw new TenantConfigError(`DEMO_TENANTS: ${tenant} is listed twice`);
      }
      tokens[tenant] = entry.slice(equals + 1).trim();
    }
    try {
      return new TenantDirectory(tokens);
    } catch (error) {
      if (!(error instanceof TenantConfigError)) throw error;
      throw new TenantConfigError(`DEMO_TENANTS: ${error.message}`);
    }
  }

  /**
   * The clinic whose token the request's Authorization header carries (`Bearer <token>`), or
   * undefined: no header, two of them, another scheme, or a token of no clinic. Every clinic's
   * digest is compared, in constant time, whichever matches: the time taken says nothing about
   * how much of a token was right or which clinic it belongs to.
   * @param authorization every Authorization field of the request (Node's `headersDistinct`).
   */
  authenticate(authorization: readonly string[] | undefined): string | undefined {
    if (authorization === undefined || authorization.length !== 1) return undefined;
    const token = BEARER.exec(authorization[0] ?? "")?.[1];
    if (token === undefined) return undefined;
    const digest = sha256(token);
    let tenant: string | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(entry.digest, digest) && tenant === undefined) tenant = entry.tenant;
    }
    return tenant;
  }
}
