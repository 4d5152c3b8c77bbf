import type { TenantDirectory } from "@kms/demo-shared";
import { ProblemDetailsException } from "@kms/nestjs";
import { type CanActivate, type ExecutionContext, Inject, Injectable } from "@nestjs/common";
import type { DemoConfig } from "./config.ts";
import { DEMO_CONFIG } from "./tokens.ts";

/** Who a request authenticated as: its clinic's token, standing for the clinic's staff. */
export interface ClinicUser {
  readonly id: string;
  readonly tenantId: string;
}

interface AuthRequest {
  readonly headersDistinct?: Readonly<Record<string, string[] | undefined>>;
  user?: object;
}

interface AuthResponse {
  setHeader(name: string, value: string): unknown;
}

/**
 * The clinic of a request `DemoAuthGuard` let through.
 * @throws Error when the guard did not run on this route (a wiring mistake, not a client's).
 */
export function authenticatedClinic(req: object): string {
  const user = (req as AuthRequest).user as Partial<ClinicUser> | undefined;
  if (typeof user?.tenantId !== "string") {
    throw new Error("DemoAuthGuard did not run on this route");
  }
  return user.tenantId;
}

/**
 * The demo's authentication: `Authorization: Bearer <token>`, one token per clinic (DEMO_TENANTS,
 * else the published demo tokens), becomes `req.user = { id, tenantId }`. Anything else is
 * answered 401 problem+json before the handler, the KMS context or any KMS call: a request
 * cannot choose its clinic, and a clinic outside the list never gets a KMS key. The context
 * setup in app.module.ts reads `req.user.tenantId` and nothing else. Replace it with your
 * Passport/JWT guard; anything that sets `req.user.tenantId` from a verified identity works.
 */
@Injectable()
export class DemoAuthGuard implements CanActivate {
  readonly #tenants: TenantDirectory;

  constructor(@Inject(DEMO_CONFIG) config: DemoConfig) {
    this.#tenants = config.tenants;
  }

  canActivate(execution: ExecutionContext): boolean {
    if (execution.getType() !== "http") return false;
    const http = execution.switchToHttp();
    const req = http.getRequest<AuthRequest>();
    const tenantId = this.#tenants.authenticate(req.headersDistinct?.authorization);
    if (tenantId === undefined) {
      http.getResponse<AuthResponse>().setHeader("www-authenticate", 'Bearer realm="clinics"');
      throw new ProblemDetailsException({
        type: "https://kms.dev/problems/demo/unauthenticated",
        title: "Unauthenticated",
        status: 401,
        detail: "send Authorization: Bearer <your clinic's token>",
      });
    }
    const user: ClinicUser = { id: `${tenantId}/bearer-token`, tenantId };
    req.user = user;
    return true;
  }
}
